package fs

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/geofs/geofs/store"
)

// Detaching open states (found by review; each failed before its fix).

// A chmod of a file that readers hold is Setattr: hold the open state,
// then foldShared into it, to be committed by the last to release it. An
// open between the two, of a file whose head moved (a peer's version not
// yet told to the mount), detaches that state (holdCurrent, 297e79f), as
// FS.Applied does. foldShared still folds (the reader and the chmod hold
// it), and release commits only a state that is still the file's: the
// chmod, which returned success, is never committed, and no one shows it.
func TestChmodRacingADetachGoesToTheCurrentState(t *testing.T) {
	for _, detacher := range []string{"open", "Applied"} {
		t.Run(detacher, func(t *testing.T) {
			f, s, n, r := helloReader(t)
			held := f.hold(n.id) // Setattr(mode): hold ...
			peerContent(t, s, n.id, []byte("peer's"))
			var o *openFile
			var err error
			if detacher == "open" { // an open before the mount is told
				if o, err = f.acquire(n.id, false); err != nil {
					t.Fatal(err)
				}
			} else {
				f.Applied([]store.Change{{ID: n.id}})
			}
			// ... foldShared: the state is no longer the file's, so
			// Setattr lets it go and tries again with the current one.
			if folded, current := f.foldShared(held, attrChange{setMode: true, mode: 0o600}); folded || current {
				t.Fatalf("foldShared into a detached state: folded %v, current %v", folded, current)
			}
			if err := f.release(held); err != nil {
				t.Fatal(err)
			}
			chmodByName(t, n, 0o600)
			if err := f.release(r); err != nil { // the reader closes
				t.Fatal(err)
			}
			if o != nil {
				f.Applied([]store.Change{{ID: n.id}})
				if err := f.release(o); err != nil {
					t.Fatal(err)
				}
			}
			v, err := s.Head(n.id)
			if err != nil {
				t.Fatal(err)
			}
			if v.Mode&0o7777 != 0o600 {
				t.Errorf("chmod 600 returned success, but every holder is gone and the file's mode is %o", v.Mode&0o7777)
			}
		})
	}
}

// A release (or the periodic commit) that leaves a changed state unheld
// commits it outside f.mu and forgets it afterwards (forgetIfIdle). A
// peer's version applied in between finds the state in f.open, clean and
// without writers, and detaches it although nobody holds it: nobody
// releases it again, so f.detached never goes back to zero and every
// later open of the file is DIRECT_IO (no page cache; a shared mmap fails
// with ENODEV) until the mount is restarted.
func TestDetachingAnUnheldStateLeavesNoBypass(t *testing.T) {
	f, s, n, r := helloReader(t)
	chmod := f.hold(n.id) // a chmod while the reader holds it: folded
	if folded, _ := f.foldShared(chmod, attrChange{setMode: true, mode: 0o600}); !folded {
		t.Fatal("the chmod did not fold")
	}
	f.release(chmod)
	// The reader's release (releaseAs), step by step:
	f.mu.Lock()
	f.releaseLocked(r) // the last reference: r stays, dirty
	f.mu.Unlock()
	if err := r.commit(); err != nil { // it commits the chmod
		t.Fatal(err)
	}
	peerContent(t, s, n.id, []byte("peer's")) // a peer's version arrives
	f.Applied([]store.Change{{ID: n.id}})
	f.forgetIfIdle(r) // releaseAs ends
	for deadline := time.Now().Add(3 * time.Second); f.pagesShared(n.id); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no handle is open, yet every open of the file bypasses the page cache (f.detached never drops to 0)")
		}
	}
}

// An open in the window between a peer's version landing and FS.Applied
// detaches the readers' old state and makes a new one over the head
// (297e79f). Applied then detaches that new state too, though it serves
// the current version: the file has no state of its own any more, the
// kernel's pages of the current version are dropped again, and every new
// open is DIRECT_IO for as long as the new reader keeps its handle, not
// just while the old version's reader does.
func TestAppliedKeepsTheStateOfTheCurrentVersion(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	n, w := helloFile(t, f, s)
	f.releaseWriter(w)
	old, err := f.acquire(n.id, false) // a reader of "hello"
	if err != nil {
		t.Fatal(err)
	}
	peerContent(t, s, n.id, []byte("peer's"))
	cur, err := f.acquire(n.id, false) // opened before the mount is told
	if err != nil {
		t.Fatal(err)
	}
	if got := reviewRead(t, cur); !bytes.Equal(got, []byte("peer's")) {
		t.Fatalf("the new open reads %q", got)
	}
	f.Applied([]store.Change{{ID: n.id}})
	f.release(old) // the old version's reader closes
	if f.lookupOpen(n.id) != cur {
		t.Errorf("Applied detached the open state of the current version")
	}
	for deadline := time.Now().Add(3 * time.Second); f.pagesShared(n.id); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the old version's reader is gone, yet new opens bypass the page cache while a reader of the current version stays")
		}
	}
	f.release(cur)
}

// acquire reads the head, then holdCurrent compares the state's content
// with it. A truncate(2) by name of a file only readers hold commits
// through their state (setSize: acquire, resize): when that commit lands
// between an open's two steps, the open finds the state's content newer
// than the head it read, and detaches the state, which serves the current
// version. The readers keep their handles on it, and for as long as they
// do, every open of the file is DIRECT_IO.
func TestOpenRacingATruncationKeepsTheCurrentState(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	n, w := helloFile(t, f, s)
	f.releaseWriter(w)
	r, err := f.acquire(n.id, false) // a long-lived reader
	if err != nil {
		t.Fatal(err)
	}
	tr, err := f.acquire(n.id, false) // setSize of truncate(2)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Head(n.id) // an open: acquire reads the head ...
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.resize(2, attrChange{}); err != nil { // ... the truncation commits ...
		t.Fatal(err)
	}
	f.release(tr)
	o := f.holdCurrent(n.id, false, v.Content) // ... acquire's next step
	if o == nil {
		if o, err = f.acquire(n.id, false); err != nil {
			t.Fatal(err)
		}
	}
	defer f.release(o)
	if f.lookupOpen(n.id) != r {
		t.Errorf("the open detached the readers' state, which serves the current version")
	}
	time.Sleep(200 * time.Millisecond)
	if f.pagesShared(n.id) {
		t.Errorf("every open of the file bypasses the page cache while the reader stays, though nothing serves an old version")
	}
	f.release(r)
}

// helloReader is helloFile with its writer gone and a reader's handle on
// the file's open state.
func helloReader(t *testing.T) (*FS, *store.Store, *Node, *openFile) {
	t.Helper()
	f, s := newTestFS(t, 1<<20)
	n, w := helloFile(t, f, s)
	f.releaseWriter(w)
	r, err := f.acquire(n.id, false)
	if err != nil {
		t.Fatal(err)
	}
	return f, s, n, r
}

// copyPrefix (copy_file_range, cp) commits a new version of the
// destination and set dst.root to it directly (copy.go), not through
// setRoot: the lock-free root that opens read (contentRoot) stayed the
// destination's content from before the copy. Once
// the copying writer closes, a reader of the copy still holding the state
// makes it look stale to every open: the first open detaches the state,
// which serves the current version, and new opens are DIRECT_IO for as
// long as the reader stays.
func TestOpenAfterACopyKeepsTheCopysState(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	src, w := helloFile(t, f, s) // "hello", committed
	f.releaseWriter(w)
	in, err := f.acquire(src.id, false) // cp's source handle
	if err != nil {
		t.Fatal(err)
	}
	dst := reviewFile(t, s, "g")
	out, err := f.acquire(dst, true) // cp's destination handle
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.acquire(dst, false) // a reader of the destination
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.copyPrefix(in, out, 0, 5); err != nil || n != 5 {
		t.Fatalf("copy: %d, %v", n, err)
	}
	f.release(in)
	if err := f.releaseWriter(out); err != nil { // cp closes
		t.Fatal(err)
	}
	o, err := f.acquire(dst, false) // another open of the copy
	if err != nil {
		t.Fatal(err)
	}
	defer f.release(o)
	if got := reviewRead(t, o); !bytes.Equal(got, []byte("hello")) {
		t.Fatalf("the copy reads %q", got)
	}
	if o != r {
		t.Errorf("the open detached the state of the copy, which serves the current version (contentRoot is not root after copyPrefix)")
	}
	time.Sleep(200 * time.Millisecond)
	if f.pagesShared(dst) {
		t.Errorf("every open of the copy bypasses the page cache while its reader stays, though nothing serves an old version")
	}
	f.release(r)
}

// A commit through a state only readers hold (a truncate(2) by name:
// setSize's resize) holds its lock for the whole build, which on a fog node
// may fetch for up to the fetch timeout. An open of that file, or FS.Applied
// once a peer's version moved its head, used to wait for that lock with
// f.mu held, and every open, close and stat of an open file on the mount
// waited behind it.
func TestOpenDuringACommitDoesNotStallOtherFiles(t *testing.T) {
	for _, c := range []struct {
		who   string
		moved bool // a peer's version lands first
	}{{"open", false}, {"open", true}, {"Applied", true}} {
		t.Run(fmt.Sprintf("%s/moved=%v", c.who, c.moved), func(t *testing.T) {
			f, s := newTestFS(t, 1<<20)
			a := reviewFile(t, s, "a")
			b := reviewFile(t, s, "b")
			of, err := f.acquire(a, false) // setSize's state of a
			if err != nil {
				t.Fatal(err)
			}
			if c.moved {
				peerContent(t, s, a, []byte("peer's"))
			}
			of.mu.Lock() // the truncation's commit runs
			done := make(chan error, 1)
			go func() {
				if c.who == "Applied" { // the receiver tells the mount
					f.Applied([]store.Change{{ID: a}})
					done <- nil
					return
				}
				o, err := f.acquire(a, false) // an open of a
				if err == nil {
					f.release(o)
				}
				done <- err
			}()
			time.Sleep(100 * time.Millisecond)
			looked := make(chan struct{})
			go func() { // stat of another open file, or any open or close
				f.lookupOpen(b)
				close(looked)
			}()
			select {
			case <-looked:
			case <-time.After(2 * time.Second):
				t.Error("while a commit of file a runs, a lookup of file b's open state waits")
			}
			of.mu.Unlock()
			<-looked
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			f.release(of)
		})
	}
}
