package sync

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geofs/geofs/store"
)

// Catching up after an outage: batches the receiver cannot apply in one
// transaction, and long runs of one file's versions in one batch.

// setAll gives every file in ids the content root (n bytes), 200 files per
// Update.
func setAll(t testing.TB, s *store.Store, ids []store.FileID, root store.Hash, n uint64) {
	t.Helper()
	for i := 0; i < len(ids); i += 200 {
		err := s.Update(store.OpWrite, func(tx *store.Tx) error {
			for _, id := range ids[i:min(i+200, len(ids))] {
				old, err := tx.Head(id)
				if err != nil {
					return err
				}
				v := old.Clone()
				v.Content, v.Size, v.Alloc = root, n, n
				if _, err := tx.Put(v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// synced pushes from a to b until both are the same, then stops.
func synced(t *testing.T, a, b *store.Store) {
	t.Helper()
	ss := push(t, a, b, store.PeerLink{Direction: "send"}, store.PeerLink{Direction: "receive"})
	waitSame(t, a, b)
	ss.stop()
}

// waitAcked waits until the receiver has acknowledged all of from's log,
// failing on a push error.
func waitAcked(t *testing.T, from, to *store.Store, ss *session) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for from.Acked(to.Site()) < from.LastSeq() {
		select {
		case err := <-ss.errs:
			t.Fatalf("the push failed: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiver did not catch up in 20 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Two sites edit the same 2,000 files while apart (a sed -i over a tree).
// Every record of the catch-up is concurrent with the receiver's head and
// makes a merge record and a conflict copy in the receiver's transaction:
// more than one transaction holds, though each site committed its own
// edits in small ones. The batch used to fail with ErrTxnTooBig on every
// resend, and the link never caught up.
func TestCatchUpOfConcurrentEditsLargerThanATransaction(t *testing.T) {
	a, b := newSite(t), newSite(t)
	var ids []store.FileID
	r0 := manifestOf(t, a, []byte("base"))
	for i := 0; i < 2000; i += 200 {
		err := a.Update(store.OpCreate, func(tx *store.Tx) error {
			for j := i; j < i+200; j++ {
				id := store.NewFileID()
				ids = append(ids, id)
				name := fmt.Sprintf("%04d-%s.txt", j, strings.Repeat("n", 60))
				v := &store.Version{ID: id, Kind: store.KindFile, Links: []store.Link{{Parent: store.RootID, Name: name}},
					Mode: 0o644, Content: r0, Size: 4, Alloc: 4}
				if _, err := tx.Create(v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	synced(t, a, b)

	setAll(t, a, ids, manifestOf(t, a, []byte("edited at a")), 11)
	setAll(t, b, ids, manifestOf(t, b, []byte("edited at b")), 11)
	ss := push(t, a, b, store.PeerLink{Direction: "send"}, store.PeerLink{Direction: "receive"})
	waitAcked(t, a, b, ss)
	ents, err := b.ReadDir(store.RootID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 4000 {
		t.Errorf("the receiver lists %d files, want 4000 (2000 merged, 2000 conflict copies)", len(ents))
	}
}

// Files whose records are large (a 48 KiB extended attribute each): each
// commits on its own, but 100 of them are one batch, which the receiver
// writes with every record twice (the version and its directory entry).
func TestCatchUpOfLargeRecords(t *testing.T) {
	from, to := newSite(t), newSite(t)
	root := manifestOf(t, from, []byte("hello"))
	for i := range 100 {
		err := from.Update(store.OpWrite, func(tx *store.Tx) error {
			v := &store.Version{ID: store.NewFileID(), Kind: store.KindFile,
				Links: []store.Link{{Parent: store.RootID, Name: fmt.Sprintf("f%03d", i)}}, Mode: 0o644,
				Content: root, Size: 5, Alloc: 5,
				Xattrs: []store.Xattr{{Name: "user.blob", Value: bytes.Repeat([]byte{'x'}, 48<<10)}}}
			_, err := tx.Put(v)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	ss := push(t, from, to, store.PeerLink{Direction: "send"}, store.PeerLink{Direction: "receive"})
	waitAcked(t, from, to, ss)
	if from.NamespaceRoot() != to.NamespaceRoot() {
		t.Error("the namespaces differ after the receiver acknowledged everything")
	}
}

// One site saves one file 600 times while its link is down (an editor's
// autosave, a log closed after each append). Nothing is concurrent, but
// the receiver gets the whole run in one batch, and its head lies more
// than the merge's ancestor walk (512 versions) behind the newest: the
// receiver used to take them for concurrent, merge them, and keep its own
// head's content as a conflict copy the sender never had.
func TestLongRunOfVersionsInOneBatchIsNotAConflict(t *testing.T) {
	a, b := newSite(t), newSite(t)
	id := put(t, a, store.RootID, "log.txt", []byte("version zero"))
	synced(t, a, b)

	roots := []store.Hash{manifestOf(t, a, []byte("edit one")), manifestOf(t, a, []byte("edit two"))}
	for i := range 600 {
		setAll(t, a, []store.FileID{id}, roots[i%2], 8)
	}
	ss := push(t, a, b, store.PeerLink{Direction: "send"}, store.PeerLink{Direction: "receive"})
	waitAcked(t, a, b, ss)
	ents, err := b.ReadDir(store.RootID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name)
		}
		t.Fatalf("the receiver lists %q, the sender only log.txt", names)
	}
	if hb, ha := headOf(t, b, "/log.txt"), headOf(t, a, "/log.txt"); hb.Hash() != ha.Hash() {
		t.Fatalf("the receiver's head is %s (merging %d), the sender's %s", hb.Hash().Short(), len(hb.Merged), ha.Hash().Short())
	}
}

// A rename at one site and writes at another give the renamed, written
// file (docs/REPLICATION.md), also when the writer saved 600 versions
// meanwhile: the merge used to look for the common ancestor only 512
// versions back, found none, took every field from the winner, and lost
// the rename.
func TestRenameSurvivesManyConcurrentWrites(t *testing.T) {
	a, b := newSite(t), newSite(t)
	id := put(t, a, store.RootID, "draft.txt", []byte("version zero"))
	synced(t, a, b)

	if err := b.Update(store.OpRename, func(tx *store.Tx) error {
		v, err := tx.Head(id)
		if err != nil {
			return err
		}
		v = v.Clone()
		v.Links = []store.Link{{Parent: store.RootID, Name: "final.txt"}}
		_, err = tx.Put(v)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	roots := []store.Hash{manifestOf(t, a, []byte("edit one")), manifestOf(t, a, []byte("edit two"))}
	for i := range 600 {
		setAll(t, a, []store.FileID{id}, roots[i%2], 8)
	}
	ss := push(t, a, b, store.PeerLink{Direction: "send"}, store.PeerLink{Direction: "receive"})
	waitAcked(t, a, b, ss)
	v, err := b.Head(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Links) != 1 || v.Links[0].Name != "final.txt" || v.Content != roots[1] {
		t.Errorf("after the merge the file is %v with content %s, want final.txt with a's last content %s", v.Links, v.Content.Short(), roots[1].Short())
	}
	ents, err := b.ReadDir(store.RootID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("the receiver lists %d files, want 1 (nothing conflicts)", len(ents))
	}
}
