package fs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/geofs/geofs/store"
)

// A getattr that shows the mtime of the mount's own write keeps the file's
// cached pages. With the kernel's automatic invalidation it dropped them
// after nearly every write, and a page dropped while another descriptor's
// write to it was in flight was read back before the write arrived and
// kept, stale: a stress run's readers saw bytes a returned write had
// replaced (4 runs of 40).
func TestGetattrAfterAWriteKeepsCachedPages(t *testing.T) {
	f, _ := newTestFS(t, 1<<20)
	name := filepath.Join(mountTestFS(t, f), "f")
	data := bytes.Repeat([]byte("geofs"), 200_000) // 1,000,000 bytes
	w, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil { // write-through: the pages stay cached
		t.Fatal(err)
	}
	cached := func() uint64 {
		t.Helper()
		var st unix.Cachestat_t
		if err := unix.Cachestat(uint(w.Fd()), &unix.CachestatRange{}, &st, 0); err != nil {
			unavailable(t, "cachestat: %v", err)
		}
		return st.Cache
	}
	before := cached()
	if before < uint64(len(data))/4096 {
		t.Fatalf("%d pages cached after writing %d bytes", before, len(data))
	}
	if _, err := os.Stat(name); err != nil { // the write made the kernel ask again
		t.Fatal(err)
	}
	if after := cached(); after < before {
		t.Errorf("%d of %d cached pages dropped by a getattr after the mount's own write", before-after, before)
	}
}

// busyOverAPeerVersion mounts a 4 MiB file of "A"s and opens it for
// writing (w); a peer's version of all "B"s arrives; a write fills the open
// file's layer and hands it to a background commit, which waits in its
// Update until unblock is closed (done closes after). The commit will find
// the base moved and rebase.
type busyOverAPeerVersion struct {
	f             *FS
	s             *store.Store
	name          string
	id            store.FileID
	w             *os.File
	unblock, done chan struct{}
}

func newBusyOverAPeerVersion(t *testing.T) *busyOverAPeerVersion {
	t.Helper()
	f, s := newTestFS(t, 1<<20)
	b := &busyOverAPeerVersion{f: f, s: s, name: filepath.Join(mountTestFS(t, f), "f")}
	const size = 4 << 20
	if err := os.WriteFile(b.name, bytes.Repeat([]byte("A"), size), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	if b.id, err = s.Resolve("f"); err != nil {
		t.Fatal(err)
	}
	// The kernel sends the writer's RELEASE after close returns; one that
	// came after the Update below has taken the store would commit the
	// next writes and wait for it with the file's lock held, and the
	// writes would wait for that lock (a hang seen under load).
	for deadline := time.Now().Add(5 * time.Second); f.lookupOpen(b.id) != nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the writer's release never came")
		}
	}
	if b.w, err = os.OpenFile(b.name, os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.w.Close() })
	peerContent(t, s, b.id, bytes.Repeat([]byte("B"), size))
	started := make(chan struct{})
	b.unblock, b.done = make(chan struct{}), make(chan struct{})
	go func() { // holds Store.mu: the background commit waits in its Update
		defer close(b.done)
		s.Update(store.OpSetattr, func(tx *store.Tx) error { close(started); <-b.unblock; return nil })
	}()
	<-started
	if _, err := b.w.WriteAt(bytes.Repeat([]byte("w"), 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.w.WriteAt([]byte("w"), 1<<20); err != nil { // hands the full layer off: busy
		t.Fatal(err)
	}
	return b
}

// A peer's version arrives while a writer's background commit runs:
// FS.Changed drops the kernel's pages but cannot rebase (the commit is
// using the layers); a reader then caches pages of the old content, and
// the commit rebases later. With explicit invalidation the kernel drops
// those pages only if the commit says so.
func TestBackgroundRebaseDropsCachedPages(t *testing.T) {
	b := newBusyOverAPeerVersion(t)
	f, name, id, unblock, done := b.f, b.name, b.id, b.unblock, b.done
	of := f.lookupOpen(id)
	f.Applied([]store.Change{{ID: id}}) // Changed: busy, no rebase; pages dropped
	r, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := make([]byte, 4)
	if _, err := r.ReadAt(p, 2<<20); err != nil { // served from the old base, cached
		t.Fatal(err)
	}
	close(unblock)
	<-done
	of.waitIdle()
	d, err := os.OpenFile(name, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	q, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS) // aligned
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(q)
	if _, err := unix.Pread(int(d.Fd()), q, 2<<20); err != nil {
		t.Fatal(err)
	}
	// The commit tells the kernel once it is done (after waitIdle can
	// return), so the stale page goes soon after, not at once.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := r.ReadAt(p, 2<<20); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(p, q[:4]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the commit, the page cache holds %q at 2 MiB, the file holds %q", p, q[:4])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A background commit that rebased tells the kernel to drop the file's
// pages; the kernel waits for each page's lock. A WRITE whose last page is
// partial holds that page locked while it waits for the background commit
// (its own layer is full again). Telling the kernel before the commit was
// seen done deadlocked the two (found by review); it is told after.
func TestRebasedCommitAndAWriteWaitingForItBothFinish(t *testing.T) {
	b := newBusyOverAPeerVersion(t)
	w, unblock, done := b.w, b.unblock, b.done
	mnt := filepath.Dir(b.name)
	if _, err := w.WriteAt(bytes.Repeat([]byte("v"), 1<<20-1), 1<<20+1); err != nil { // cur full again
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() { // partial page past EOF: locked during the request; waits for busy in handOff
		_, err := w.WriteAt([]byte("tail"), 6<<20+10)
		wrote <- err
	}()
	time.Sleep(300 * time.Millisecond)
	close(unblock)
	<-done
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		// Break the deadlock: MNT_FORCE aborts the FUSE connection.
		unix.Unmount(mnt, unix.MNT_FORCE)
		t.Fatal("deadlock: the WRITE waits for the background commit, which waits in notifyContent for the WRITE's page")
	}
}

// A listing looks each entry up again, and go-fuse hands the kernel the
// node it already has for a file, dropping the new one. A version from a
// peer must still drop the kernel's pages of the file: the mount used to
// notify the last node made, which the kernel never knew (ENOENT), and
// the file read old bytes until it was forgotten (found by a stress run).
func TestPeerVersionAfterAListingDropsCachedPages(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	mnt := mountTestFS(t, f)
	name := filepath.Join(mnt, "f")
	if err := os.WriteFile(name, bytes.Repeat([]byte("A"), 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(name); err != nil || b[0] != 'A' { // cached
		t.Fatal(b[:1], err)
	}
	if _, err := os.ReadDir(mnt); err != nil { // looks f up again
		t.Fatal(err)
	}
	id, err := s.Resolve("f")
	if err != nil {
		t.Fatal(err)
	}
	peerContent(t, s, id, bytes.Repeat([]byte("B"), 64<<10))
	f.Applied([]store.Change{{ID: id}})
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 'B' {
		t.Errorf("after a peer's version the mount reads %q, the file holds %q", b[:4], "BBBB")
	}
}

// A peer's version is applied to the store (the head moves) before the
// mount hears of it (the receiver calls FS.Applied once Apply returned). A
// file opened in between used to keep the kernel's pages of the old
// version while its size was the new one's: the read was the old bytes,
// then the new (found by a fog stress run).
func TestOpenBeforeAPeerVersionIsNotifiedReadsOneVersion(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	mnt := mountTestFS(t, f)
	name := filepath.Join(mnt, "f")
	old := bytes.Repeat([]byte("A"), 7238)
	if err := os.WriteFile(name, old, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(name); err != nil || !bytes.Equal(b, old) { // pages 0-1 cached
		t.Fatal(len(b), err)
	}
	id, err := s.Resolve("f")
	if err != nil {
		t.Fatal(err)
	}
	neu := bytes.Repeat([]byte("B"), 178539)
	peerContent(t, s, id, neu)                 // applied: the head moved; the mount not told yet
	if _, err := os.ReadDir(mnt); err != nil { // READDIRPLUS: the kernel takes the new size
		t.Fatal(err)
	}
	b, err := os.ReadFile(name) // opens the new head, with the old pages kept
	if err != nil {
		t.Fatal(err)
	}
	f.Applied([]store.Change{{ID: id}})
	if !bytes.Equal(b, neu) && !bytes.Equal(b, old) {
		t.Errorf("read %d bytes, neither version: %s", len(b), describeVersions(b, map[string][]byte{"old": old, "new": neu}))
	}
}

// The same window, the symptom the stress run reported: a reader of the
// old, empty version reads while the kernel has the new size, so the
// kernel zero-fills the pages its short READ covered and keeps them; a
// reader of the new version then got zeros where its content starts.
func TestOpenBeforeAPeerVersionIsNotifiedReadsNoZeros(t *testing.T) {
	// The old reader has closed, or (the kernel sends RELEASE after close
	// returns, late under load) still holds the old version's open state.
	for _, closed := range []bool{true, false} {
		openBeforeNotifiedReadsNoZeros(t, closed)
	}
}

func openBeforeNotifiedReadsNoZeros(t *testing.T, closeOld bool) {
	f, s := newTestFS(t, 1<<20)
	mnt := mountTestFS(t, f)
	name := filepath.Join(mnt, "f")
	if err := os.WriteFile(name, nil, 0o644); err != nil { // the empty version
		t.Fatal(err)
	}
	r1, err := os.Open(name) // a reader of the empty version
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	id, err := s.Resolve("f")
	if err != nil {
		t.Fatal(err)
	}
	neu := randomBytes(4086467, 5)
	peerContent(t, s, id, neu)
	if _, err := os.ReadDir(mnt); err != nil { // the kernel takes the new size
		t.Fatal(err)
	}
	p := make([]byte, 64<<10)
	n, _ := r1.ReadAt(p, 0) // its version is empty: a short READ, pages zero-filled
	if n != 0 {
		t.Fatalf("the reader of the empty version read %d bytes", n)
	}
	if closeOld {
		r1.Close()
	}
	if _, err := os.ReadDir(mnt); err != nil { // the size again (the short read lowered it)
		t.Fatal(err)
	}
	b, err := os.ReadFile(name) // a reader of the new version
	if err != nil {
		t.Fatal(err)
	}
	f.Applied([]store.Change{{ID: id}})
	if !bytes.Equal(b, neu) && len(b) != 0 {
		t.Errorf("old reader closed %v: read %d bytes, neither version: %s", closeOld, len(b), describeVersions(b, map[string][]byte{"new": neu}))
	}
}

// describeVersions sums b up by runs of 4 KiB pages, each page named by the
// version it matches (zero-padded past that version's end), "zeros" or
// "other": e.g. "[0,8192):old [8192,178539):new".
func describeVersions(b []byte, versions map[string][]byte) string {
	label := func(off int) string {
		pg := b[off:min(off+4096, len(b))]
		for _, name := range []string{"old", "new"} {
			v := versions[name]
			var w []byte
			if off < len(v) {
				w = v[off:min(off+len(pg), len(v))]
			}
			if bytes.Equal(pg[:len(w)], w) && bytes.Count(pg[len(w):], []byte{0}) == len(pg)-len(w) && len(w) > 0 {
				return name
			}
		}
		if bytes.Count(pg, []byte{0}) == len(pg) {
			return "zeros"
		}
		return "other"
	}
	var out []string
	start, cur := 0, ""
	for off := 0; off < len(b); off += 4096 {
		if l := label(off); l != cur {
			if cur != "" {
				out = append(out, fmt.Sprintf("[%d,%d):%s", start, off, cur))
			}
			start, cur = off, l
		}
	}
	if cur != "" {
		out = append(out, fmt.Sprintf("[%d,%d):%s", start, len(b), cur))
	}
	return strings.Join(out, " ")
}

// A close whose commit finds the base moved (a peer's version applied, the
// mount not told yet) rebases and commits over the peer's content, while
// the kernel holds the old version's pages. The next open matched the
// head, kept those pages, and read the old bytes with this site's write on
// top: a content no version has (found by review).
func TestRebasedCloseBeforeAPeerVersionIsNotifiedDropsPages(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	mnt := mountTestFS(t, f)
	name := filepath.Join(mnt, "f")
	const n = 20000
	if err := os.WriteFile(name, bytes.Repeat([]byte("A"), n), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(name); err != nil || len(b) != n { // pages cached
		t.Fatal(len(b), err)
	}
	id, err := s.Resolve("f")
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	peerContent(t, s, id, bytes.Repeat([]byte("B"), n)) // applied; the mount not told yet
	if _, err := w.WriteAt([]byte("tail"), n); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil { // commits over the peer's version (rebase)
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte("B"), n), "tail"...)
	if got := reviewContent(t, s, id); !bytes.Equal(got, want) {
		t.Fatalf("committed %q..., want the peer's bytes and the write", got[:8])
	}
	b, err := os.ReadFile(name) // a new open: its state is the head's
	if err != nil {
		t.Fatal(err)
	}
	f.Applied([]store.Change{{ID: id}})
	if !bytes.Equal(b, want) {
		t.Errorf("read %d bytes: %s; the only version with the write is the peer's bytes and it",
			len(b), describeVersions(b, map[string][]byte{"old": bytes.Repeat([]byte("A"), n), "new": want}))
	}
}
