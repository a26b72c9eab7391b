package store

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// names lists dir through ReadDir.
func listNames(t *testing.T, s *Store, dir FileID) []string {
	t.Helper()
	ds, err := s.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out
}

func pendingLen(s *Store) int {
	s.pend.mu.RLock()
	defer s.pend.mu.RUnlock()
	return s.pend.tree.Len()
}

func unlinkName(t *testing.T, s *Store, dir FileID, name string) {
	t.Helper()
	if err := s.Update(OpUnlink, func(tx *Tx) error { return deleteName(tx, dir, name) }); err != nil {
		t.Fatal(err)
	}
}

// deleteName deletes the file named name in dir (its only name).
func deleteName(tx *Tx, dir FileID, name string) error {
	_, err := relinkName(tx, dir, name, nil)
	return err
}

// relinkName gives the file named name in dir the names links instead
// (none: deletes it), and returns its id.
func relinkName(tx *Tx, dir FileID, name string, links []Link) (FileID, error) {
	id, _, err := tx.Lookup(dir, name)
	if err != nil {
		return id, err
	}
	v, err := tx.Head(id)
	if err != nil {
		return id, err
	}
	nv := v.Clone()
	nv.Links, nv.Deleted = links, len(links) == 0
	_, err = tx.Put(nv)
	return id, err
}

// A listing merges written-behind entries with Badger's, in name order:
// new names appear, removed names disappear, whether each side of the
// change is still pending or already flushed.
func TestReadDirMergesPendingWithBadger(t *testing.T) {
	s := newTestStore(t)
	s.pend.delay = time.Hour // flushes happen when the test says
	dir := mkdir(t, s, RootID, "d")
	for _, n := range []string{"b", "d", "f"} {
		mkfile(t, s, dir, n, nil)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if pendingLen(s) != 0 {
		t.Fatalf("%d entries pending after a flush", pendingLen(s))
	}
	// Now pending: a, c, g created; d removed (flushed before), e created
	// then removed (never flushed).
	for _, n := range []string{"g", "a", "c", "e"} {
		mkfile(t, s, dir, n, nil)
	}
	unlinkName(t, s, dir, "d")
	unlinkName(t, s, dir, "e")
	if pendingLen(s) == 0 {
		t.Fatal("nothing pending: the test would not test the merge")
	}
	want := []string{"a", "b", "c", "f", "g"}
	if got := listNames(t, s, dir); !slices.Equal(got, want) {
		t.Fatalf("pending listing %v, want %v", got, want)
	}
	if _, _, err := s.Lookup(dir, "d"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of a name removed while pending: %v", err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, s, dir); !slices.Equal(got, want) {
		t.Fatalf("flushed listing %v, want %v", got, want)
	}
}

// A transaction sees its own writes over the pending set: a directory
// emptied in the same transaction has no children, one that gains a child
// has.
func TestTxSeesItsOwnWritesOverPending(t *testing.T) {
	s := newTestStore(t)
	s.pend.delay = time.Hour // flushes happen when the test says
	full := mkdir(t, s, RootID, "full")
	mkfile(t, s, full, "x", nil) // pending
	empty := mkdir(t, s, RootID, "empty")
	err := s.Update(OpUnlink, func(tx *Tx) error {
		if has, err := tx.HasChildren(full); err != nil || !has {
			return fmt.Errorf("full: has children %v, %v", has, err)
		}
		if err := deleteName(tx, full, "x"); err != nil {
			return err
		}
		if has, err := tx.HasChildren(full); err != nil || has {
			return fmt.Errorf("full after its only entry went: has children %v, %v", has, err)
		}
		if has, err := tx.HasChildren(empty); err != nil || has {
			return fmt.Errorf("empty: has children %v, %v", has, err)
		}
		c := &Version{ID: NewFileID(), Kind: KindFile, Links: []Link{{empty, "y"}}, Mode: 0o644}
		if _, err := tx.Create(c); err != nil {
			return err
		}
		if has, err := tx.HasChildren(empty); err != nil || !has {
			return fmt.Errorf("empty after a create: has children %v, %v", has, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An Update that fails after writing leaves nothing behind, in the
// pending set or in Badger.
func TestFailedUpdateLeavesNothingPending(t *testing.T) {
	s := newTestStore(t)
	s.pend.delay = time.Hour // flushes happen when the test says
	before := pendingLen(s)
	seq := s.LastSeq()
	boom := errors.New("boom")
	err := s.Update(OpCreate, func(tx *Tx) error {
		v := &Version{ID: NewFileID(), Kind: KindFile, Links: []Link{{RootID, "half"}}, Mode: 0o644}
		if _, err := tx.Create(v); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: %v", err)
	}
	if pendingLen(s) != before || s.LastSeq() != seq {
		t.Fatalf("pending %d -> %d, seq %d -> %d", before, pendingLen(s), seq, s.LastSeq())
	}
	if _, _, err := s.Lookup(RootID, "half"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the failed create is visible: %v", err)
	}
}

// Operations acknowledged before Close are in Badger after it; the txlog
// lists them (Log flushes first, so a link never sends what a crash could
// lose).
func TestPendingSurvivesCloseAndLogFlushes(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	s.pend.delay = time.Hour // Log and Close must flush
	for i := range 50 {
		mkfile(t, s, RootID, fmt.Sprintf("f%02d", i), nil)
	}
	last := s.LastSeq()
	n := 0
	if err := s.Log(1, func(e *Entry) (bool, error) { n++; return true, nil }); err != nil {
		t.Fatal(err)
	}
	if uint64(n) != last || pendingLen(s) != 0 {
		t.Fatalf("Log listed %d entries of %d, %d left pending", n, last, pendingLen(s))
	}
	mkfile(t, s, RootID, "after-log", nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestSite(t, dir)
	defer s.Close()
	if got := listNames(t, s, RootID); len(got) != 51 {
		t.Fatalf("after reopening: %d names, want 51", len(got))
	}
	if s.LastSeq() != last+1 {
		t.Fatalf("after reopening: last seq %d, want %d", s.LastSeq(), last+1)
	}
}

// A transaction larger than Badger takes fails with ErrTxnTooBig and
// leaves nothing; a long run of operations is flushed in batches that fit.
func TestPendingStaysWithinBadgersBounds(t *testing.T) {
	s := newTestStore(t)
	s.pend.delay = time.Hour // flushes happen when the test says
	err := s.Update(OpXattr, func(tx *Tx) error {
		for i := 0; ; i++ {
			if err := tx.set([]byte(fmt.Sprintf("%c%08d", pVersion, i)), make([]byte, 4096)); err != nil {
				return err
			}
		}
	})
	if !errors.Is(err, badger.ErrTxnTooBig) {
		t.Fatalf("an oversized transaction: %v", err)
	}
	if pendingLen(s) != 0 {
		t.Fatalf("%d entries of a failed transaction pending", pendingLen(s))
	}
	big := make([]byte, 64<<10)
	for i := range 100 { // 6.4 MB of xattr-sized values, more than one flush holds
		err := s.Update(OpXattr, func(tx *Tx) error {
			return tx.set([]byte(fmt.Sprintf("%c%08d", pVersion, i)), big)
		})
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		s.pend.mu.RLock()
		bytes := s.pend.bytes
		s.pend.mu.RUnlock()
		if bytes > flushBytes+len(big)+64 {
			t.Fatalf("after update %d, %d bytes pending (bound %d)", i, bytes, flushBytes)
		}
	}
}

// When writing the pending set fails, the store takes no more changes,
// and says why; what was acknowledged stays readable.
func TestFailedFlushStopsChanges(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	s.pend.delay = time.Hour // only this test flushes
	id := mkfile(t, s, RootID, "kept", nil)
	// Badger refuses the flush: its database is closed underneath.
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err == nil {
		t.Fatal("flush into a closed database succeeded")
	}
	err := s.Update(OpMkdir, func(tx *Tx) error {
		_, err := tx.Create(&Version{ID: NewFileID(), Kind: KindDir, Links: []Link{{RootID, "later"}}, Mode: 0o755})
		return err
	})
	if err == nil {
		t.Fatal("an update after a failed flush succeeded")
	}
	if v, ok := s.versions.Get(id); !ok || v.ID != id {
		t.Fatal("an acknowledged file is gone from the cache")
	}
}

// Values that go to Badger's value log count as pointers, as Badger counts
// them: a version record of 2 MiB (a file with many extended attributes),
// written as the version and again in its directory entry, still commits.
func TestLargeRecordsFitOneUpdate(t *testing.T) {
	s := newTestStore(t)
	v := &Version{ID: NewFileID(), Kind: KindFile, Links: []Link{{RootID, "x"}}, Mode: 0o644}
	for i := range 40 {
		v.Xattrs = append(v.Xattrs, Xattr{Name: fmt.Sprintf("user.a%02d", i), Value: make([]byte, 64<<10)})
	}
	if err := s.Update(OpCreate, func(tx *Tx) error { _, err := tx.Create(v); return err }); err != nil {
		t.Fatalf("a 2.5 MiB record: %v", err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := s.LookupVersion(RootID, "x")
	if err != nil || len(got.Xattrs) != 40 {
		t.Fatalf("read back: %v, %d xattrs", err, len(got.Xattrs))
	}
}

// Close refuses Updates from the moment it begins, so none is
// acknowledged and then lost.
func TestNoUpdateAfterClose(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	if err := s.closePending(); err != nil {
		t.Fatal(err)
	}
	err := s.Update(OpMkdir, func(tx *Tx) error {
		_, err := tx.Create(&Version{ID: NewFileID(), Kind: KindDir, Links: []Link{{RootID, "late"}}, Mode: 0o755})
		return err
	})
	if !errors.Is(err, badger.ErrDBClosed) {
		t.Fatalf("an Update during Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// fsck compares the heads with the namespace buckets of the same
// snapshot: Updates landing while it runs (a mounted site) are no damage,
// a bucket that disagrees with the heads is.
func TestFsckNamespaceRootUnderUpdates(t *testing.T) {
	s := newTestStore(t)
	for i := range 20 {
		mkfile(t, s, RootID, fmt.Sprintf("seed%02d", i), nil)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mkfile(t, s, RootID, fmt.Sprintf("busy%05d", i), nil)
		}
	}()
	for range 5 {
		var problems []Problem
		if _, err := s.Fsck(func(p Problem) { problems = append(problems, p) }); err != nil {
			t.Fatal(err)
		}
		if len(problems) > 0 {
			close(stop)
			<-done
			t.Fatalf("fsck under concurrent Updates: %+v", problems)
		}
	}
	close(stop)
	<-done

	// A bucket that does not match the heads is reported.
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte{pBucket, RootID[0]}, make([]byte, 32))
	}); err != nil {
		t.Fatal(err)
	}
	var problems []Problem
	if _, err := s.Fsck(func(p Problem) { problems = append(problems, p) }); err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || problems[0].Issue != "namespace root does not match the file heads" {
		t.Fatalf("fsck of a damaged bucket: %+v", problems)
	}
}

// TestPendingKeepsRewritesMadeDuringAFlush rewrites one file's head over
// and over while flushes run: a key written again after a flush took its
// batch must stay pending when that flush drops what it wrote, so every
// read sees the newest head, then and after a reopen.
func TestPendingKeepsRewritesMadeDuringAFlush(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	id := NewFileID()
	put := func(mtime int64) Hash {
		var h Hash
		err := s.Update(OpSetattr, func(tx *Tx) error {
			var err error
			h, err = tx.Put(&Version{ID: id, Kind: KindFile, Links: []Link{{RootID, "f"}}, Mode: 0o644, Mtime: mtime})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	var flushes atomic.Int64
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := s.Flush(); err != nil {
				t.Error(err)
			}
			flushes.Add(1)
		}
	}()
	// At least 3,000 updates and 10 flushes alongside them: on a loaded
	// machine the flusher may get few turns in the first 3,000.
	var last Hash
	var i int64
	for ; i < 3000 || flushes.Load() < 10 && i < 300_000; i++ {
		last = put(i + 1)
		got, err := s.viewValue(idKey(pHead, id))
		if err != nil || Hash(got) != last {
			t.Fatalf("update %d: head %x (%v), want %x", i, got, err, last)
		}
	}
	close(done)
	<-stopped
	if n := flushes.Load(); n < 10 {
		t.Fatalf("only %d flushes ran alongside %d updates", n, i)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := pendingLen(s); n != 0 {
		t.Fatalf("%d entries pending after a flush with no Update running", n)
	}
	s.Close()
	s = openTestSite(t, dir)
	defer s.Close()
	if got, err := s.viewValue(idKey(pHead, id)); err != nil || Hash(got) != last {
		t.Fatalf("after reopen: head %x (%v), want %x", got, err, last)
	}
}

// A transaction remembers the entries it read, and sees its own changes
// over them: a name it looked up and removed is gone, a name it looked up
// and found missing then created is there, and a name moved by rename is
// at its new place only. (Each case runs with the entry flushed to Badger
// and with it pending.)
func TestTransactionSeesItsOwnEntryChangesOverWhatItRead(t *testing.T) {
	for _, flushed := range []bool{true, false} {
		t.Run(fmt.Sprintf("flushed=%v", flushed), func(t *testing.T) {
			s := newTestStore(t)
			s.pend.delay = time.Hour
			dir := mkdir(t, s, RootID, "d")
			mkfile(t, s, dir, "gone", nil)
			mkfile(t, s, dir, "moved", nil)
			if flushed {
				if err := s.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			err := s.Update(OpUnlink, func(tx *Tx) error {
				if err := deleteName(tx, dir, "gone"); err != nil {
					return err
				}
				if _, _, err := tx.Lookup(dir, "gone"); !errors.Is(err, ErrNotFound) {
					return fmt.Errorf("removed name: got %v, want ErrNotFound", err)
				}
				if _, _, err := tx.Lookup(dir, "new"); !errors.Is(err, ErrNotFound) {
					return fmt.Errorf("missing name: got %v, want ErrNotFound", err)
				}
				id, err := relinkName(tx, dir, "moved", []Link{{Parent: dir, Name: "new"}})
				if err != nil {
					return err
				}
				if got, _, err := tx.Lookup(dir, "new"); err != nil || got != id {
					return fmt.Errorf("renamed-to name: got %v, %v, want %v", got, err, id)
				}
				if _, _, err := tx.Lookup(dir, "moved"); !errors.Is(err, ErrNotFound) {
					return fmt.Errorf("renamed-from name: got %v, want ErrNotFound", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := listNames(t, s, dir); !slices.Equal(got, []string{"new"}) {
				t.Fatalf("after the commit the directory holds %q, want [new]", got)
			}
		})
	}
}
