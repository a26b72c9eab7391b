package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
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
