package integration

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A fog node in the middle of a chain: A (full) → F (metadata only) → C
// (full). C wants the chunks of what F forwards; F does not hold them, so
// it fetches them from A to serve C, and C ends up with every byte.
func TestFogNodeRelaysDataToAFullSite(t *testing.T) {
	a, f, c := newLinkedSite(t, "a"), newLinkedSite(t, "f"), newLinkedSite(t, "c")
	f.geofs("config", f.store, "cache.size", "16MiB")
	a.link(f, "")
	f.link(a, a.addr, "--direction", "receive", "--metadata-only", "all")
	f.link(c, "", "--direction", "send")
	c.link(f, f.addr, "--direction", "receive")
	a.mount()
	f.mount()
	c.mount()
	data := randomBytes(t, 6<<20)
	if err := os.WriteFile(a.path("relayed"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the file at c", hasContent(c.path("relayed"), data))
	if st := f.cacheStatus(); st.Cache.Fetches == 0 {
		t.Fatalf("f served c without fetching from a: %+v", st.Cache)
	}
	// c holds the data itself: with a and f gone, it still reads.
	a.unmount()
	f.unmount()
	c.unmount()
	c.mount()
	if got, err := os.ReadFile(c.path("relayed")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("c without its peers: %v", err)
	}
}

// fsck --repair on a site that is not running connects its links, fetches
// a good copy of a damaged chunk from a peer, and leaves the store clean.
func TestFsckRepairsFromAPeer(t *testing.T) {
	a, b := newLinkedSite(t, "a"), newLinkedSite(t, "b")
	a.link(b, b.addr)
	b.link(a, a.addr)
	a.mount()
	b.mount()
	data := randomBytes(t, 3<<20)
	if err := os.WriteFile(a.path("f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the file at b", hasContent(b.path("f"), data))
	a.unmount()
	flipPackMiddles(t, a.store)
	out, err := runGeofs("fsck", a.store)
	if err == nil || !strings.Contains(out, "/f") {
		t.Fatalf("fsck of the damaged store passed or did not name the file: %v\n%s", err, out)
	}
	out, err = runGeofs("fsck", "--repair", a.store)
	if err != nil || !strings.Contains(out, "repaired") {
		t.Fatalf("fsck --repair: %v\n%s", err, out)
	}
	a.fsck()
	a.mount()
	if got, err := os.ReadFile(a.path("f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after repair: %v", err)
	}
}

// flipPackMiddles flips bytes in the middle of every pack file of a store.
func flipPackMiddles(t *testing.T, store string) {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(store, "packs", "*.pack"))
	if len(packs) == 0 {
		t.Fatal("no packs")
	}
	for _, p := range packs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := len(b) / 2; i < len(b)/2+64 && i < len(b); i++ {
			b[i] ^= 0xff
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Two fog nodes in a row, A → F1 → F2, both metadata only: F2's read asks
// F1, which lacks the chunk too and forwards the request one hop, to A.
func TestFogForwardsAFetchOneHop(t *testing.T) {
	a, f1, f2 := newLinkedSite(t, "a"), newLinkedSite(t, "f1"), newLinkedSite(t, "f2")
	a.link(f1, "")
	f1.link(a, a.addr, "--direction", "receive", "--metadata-only", "all")
	f1.link(f2, "", "--direction", "send")
	f2.link(f1, f1.addr, "--direction", "receive", "--metadata-only", "all")
	a.mount()
	f1.mount()
	f2.mount()
	data := randomBytes(t, 3<<20)
	if err := os.WriteFile(a.path("far"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the file's metadata at f2", func() bool {
		st, err := os.Stat(f2.path("far"))
		return err == nil && st.Size() == int64(len(data))
	})
	if got, err := os.ReadFile(f2.path("far")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read at f2: %v", err)
	}
	st := f1.cacheStatus()
	forwarded := int64(0)
	for _, l := range st.Links {
		forwarded += l.FetchesForwarded
	}
	if forwarded == 0 || st.Cache.Fetches == 0 {
		t.Fatalf("f1 did not forward: %+v", st)
	}
}

// A read of remote content from a file with uncommitted writes waits for
// its fetch without holding the file: a write to the file (and its
// getattr) goes on at once while the read waits for a peer that is gone.
func TestWritesDoNotWaitForADirtyFilesFetch(t *testing.T) {
	a, f := newFog(t, "all", "64MiB")
	f.geofs("config", f.store, "fetch.timeout", "4s")
	a.mount()
	f.mount()
	data := randomBytes(t, 4<<20)
	if err := os.WriteFile(a.path("big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the file's metadata at f", func() bool {
		st, err := os.Stat(f.path("big"))
		return err == nil && st.Size() == int64(len(data))
	})
	a.unmount()
	fh, err := os.OpenFile(f.path("big"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt([]byte("x"), 0); err != nil { // buffered: the file is dirty
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		_, err := fh.ReadAt(buf, 3<<20) // remote, and no peer
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	_, err = fh.WriteAt([]byte("y"), 10)
	if took := time.Since(start); err != nil || took > 2*time.Second {
		t.Fatalf("write during the fetch: %v after %v", err, took)
	}
	if err := <-done; !errors.Is(err, syscall.EIO) {
		t.Fatalf("read with no peer: %v, want EIO", err)
	}
}
