package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/geofs/geofs/store"
)

// reviewFile creates an empty regular file /name and returns its id.
func reviewFile(t *testing.T, s *store.Store, name string) store.FileID {
	t.Helper()
	id := store.NewFileID()
	err := s.Update(store.OpCreate, func(tx *store.Tx) error {
		_, err := tx.Create(&store.Version{ID: id, Kind: store.KindFile, Mode: 0o644,
			Links: []store.Link{{Parent: store.RootID, Name: name}}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func reviewContent(t *testing.T, s *store.Store, id store.FileID) []byte {
	t.Helper()
	v, err := s.Head(id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.ReadAll(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func reviewRead(t *testing.T, of *openFile) []byte {
	t.Helper()
	b := make([]byte, of.size())
	n, err := of.read(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

// TestReviewOpenAfterLastCloseSeesStaleBase reproduces the interleaving of
// Node.Open (and setSize), which read the head with n.head() and only later
// call acquire(v), with another handle's close (flush commits, release drops
// the shared state). acquire builds a new openFile from the version it is
// given without checking that it is still the head, so the new handle reads
// the content from before the other writer's commit, and its own commit is
// built over that stale base: the other writer's data is lost.
func TestReviewOpenAfterLastCloseSeesStaleBase(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	id := reviewFile(t, s, "f")

	// Process B has the file open and has written to it.
	v0, _ := s.Head(id)
	ofB, err := f.acquire(v0.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := ofB.write([]byte("written by B"), 0); err != nil {
		t.Fatal(err)
	}

	// Process A's open: Node.Open reads the head (B's data is not committed yet)...
	vA, _ := s.Head(id)

	// ... B closes: flush commits, release forgets the open state ...
	if err := ofB.commit(); err != nil {
		t.Fatal(err)
	}
	f.release(ofB)

	// ... and A's open goes on to acquire with the version it read.
	ofA, err := f.acquire(vA.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := reviewRead(t, ofA); !bytes.Equal(got, []byte("written by B")) {
		t.Errorf("A reads %q after B's close, want %q", got, "written by B")
	}
	if err := ofA.write([]byte("A"), 12); err != nil {
		t.Fatal(err)
	}
	if err := ofA.commit(); err != nil {
		t.Fatal(err)
	}
	f.release(ofA)
	if got := reviewContent(t, s, id); !bytes.Equal(got, []byte("written by BA")) {
		t.Errorf("committed content %q, want %q (B's committed write was lost)", got, "written by BA")
	}
}

// TestReviewRestoreLostUnderDirtyOpenFile: `geofs restore` on a file that
// is open with buffered writes. FS.Changed only reloads an idle open state
// (openFile.reload returns early when dirty), so the open file keeps the
// pre-restore content as its base; its next commit (close) is built over
// that stale base and silently undoes the whole restore, not only the bytes
// the writer wrote.
func TestReviewRestoreLostUnderDirtyOpenFile(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	id := reviewFile(t, s, "f")
	v0, _ := s.Head(id)
	of, err := f.acquire(v0.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := of.write([]byte("old content"), 0); err != nil {
		t.Fatal(err)
	}
	if err := of.commit(); err != nil {
		t.Fatal(err)
	}
	_, hs, err := s.History(id)
	if err != nil {
		t.Fatal(err)
	}
	oldVersion := hs[0]
	if err := of.write([]byte("NEW CONTENT"), 0); err != nil {
		t.Fatal(err)
	}
	if err := of.commit(); err != nil {
		t.Fatal(err)
	}

	// The handle stays open and buffers an append; then the user restores.
	if err := of.write([]byte("!"), 11); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Restore(id, oldVersion); err != nil {
		t.Fatal(err)
	}
	f.Changed(id)
	if got := reviewContent(t, s, id); !bytes.Equal(got, []byte("old content")) {
		t.Fatalf("after restore: %q", got)
	}

	if err := of.commit(); err != nil { // close
		t.Fatal(err)
	}
	f.release(of)
	got := reviewContent(t, s, id)
	if bytes.HasPrefix(got, []byte("NEW CONTENT")) {
		t.Errorf("after the open file's commit the content is %q: the restore was silently undone (want %q)", got, "old content!")
	}
}

// TestReviewReaddirplusReportsStaleAttrs: OpendirHandle scans the directory
// once, entries with their records, and dirHandle.Lookup answers the
// kernel's READDIRPLUS from that scan. A file changed after opendir (or
// before a rewinddir) is then reported with its old attributes; the kernel
// takes them (the change happened before the READDIRPLUS request, so its
// attr_version check does not stop them), keeps them for the 1 h attribute
// timeout, and cuts the file to the old size in its page cache: stat and
// read see a file that is shorter than what was written and committed.
func TestReviewReaddirplusReportsStaleAttrs(t *testing.T) {
	f, _ := newTestFS(t, 1<<20)
	mnt := mountTestFS(t, f)
	name := filepath.Join(mnt, "a")
	if err := os.WriteFile(name, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := os.Open(mnt) // opendir: the scan sees "a" empty
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	data := bytes.Repeat([]byte("x"), 100)
	if err := os.WriteFile(name, data, 0o644); err != nil { // committed at close
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(name, &st); err != nil || st.Size != 100 {
		t.Fatalf("stat before readdir: size %d, %v", st.Size, err)
	}
	if _, err := d.Readdirnames(-1); err != nil { // READDIRPLUS from the opendir scan
		t.Fatal(err)
	}
	if err := syscall.Stat(name, &st); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != 100 || len(got) != 100 {
		t.Errorf("after listing the directory: stat size %d, read %d bytes; want 100 (attributes from the opendir scan)", st.Size, len(got))
	}
}

// TestReviewSetattrFoldedIntoReleasedOpenFileIsLost follows Node.Setattr on
// an open file while the last handle is released (a close racing with
// chmod). Setattr used to take the open state with lookupOpen and fold the
// change into it with nothing holding it: the change went into a state no
// longer in FS.open and was never committed. Setattr now holds a reference
// while folding, and dropping the last reference commits.
func TestReviewSetattrFoldedIntoReleasedOpenFileIsLost(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	id := reviewFile(t, s, "f")
	v, _ := s.Head(id)
	of, err := f.acquire(v.ID, false) // a process has the file open
	if err != nil {
		t.Fatal(err)
	}

	got := f.hold(id)                   // chmod: Setattr holds the open state...
	if err := of.commit(); err != nil { // ... the process closes (flush, release) ...
		t.Fatal(err)
	}
	f.release(of)
	got.setattr(attrChange{setMode: true, mode: 0o600}) // ... chmod folds its change into it
	if err := f.release(got); err != nil {              // ... and lets go: the last reference commits
		t.Fatal(err)
	}

	f.commitOld(time.Now().Add(time.Hour)) // the periodic committer (FS.Close does the same)
	nv, err := s.Head(id)
	if err != nil {
		t.Fatal(err)
	}
	if nv.Mode != 0o600 {
		t.Errorf("mode after a successful chmod and a commit of every open file: %o, want 600 (the change was folded into a released open state)", nv.Mode)
	}
}
