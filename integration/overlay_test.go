package integration

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOverlayfsUpperLayer mounts overlayfs with its upper and work
// directories on geofs, as container runtimes do with their storage.
// Overlayfs refuses an upper layer on a FUSE mount without
// RENAME_WHITEOUT, d_type and extended attributes. Deletes and renames of
// lower files leave whiteouts, a directory made again over a removed one
// is opaque, and the merged view comes back the same after geofs remounts.
func TestOverlayfsUpperLayer(t *testing.T) {
	s := newSite(t)
	s.mount()
	lower, merged := t.TempDir(), t.TempDir()
	mustWrite(t, filepath.Join(lower, "a"), []byte("lower a"))
	mustWrite(t, filepath.Join(lower, "b"), []byte("lower b"))
	mustWrite(t, filepath.Join(lower, "e"), []byte("lower e"))
	mustMkdir(t, filepath.Join(lower, "d"))
	mustWrite(t, filepath.Join(lower, "d", "x"), []byte("lower d/x"))
	upper, work := s.path("upper"), s.path("work")
	mustMkdir(t, upper)
	mustMkdir(t, work)
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	mountOverlay := func() {
		t.Helper()
		if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
			t.Fatalf("mount overlayfs with its upper layer on geofs: %v", err)
		}
	}
	mounted := false
	defer func() {
		if mounted {
			unix.Unmount(merged, unix.MNT_DETACH)
		}
	}()
	mountOverlay()
	mounted = true
	m := func(name string) string { return filepath.Join(merged, name) }

	mustWrite(t, m("c"), []byte("new c"))
	if err := os.Remove(m("b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m("a"), m("a2")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(m("d")); err != nil {
		t.Fatal(err)
	}
	mustMkdir(t, m("d"))
	f, err := os.OpenFile(m("e"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(", appended"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		wantContent(t, m("a2"), []byte("lower a"))
		wantContent(t, m("c"), []byte("new c"))
		wantContent(t, m("e"), []byte("lower e, appended"))
		wantMissing(t, m("a"))
		wantMissing(t, m("b"))
		wantMissing(t, m("d/x"))
		if names, err := os.ReadDir(m("d")); err != nil || len(names) != 0 {
			t.Errorf("%s: d lists %v (%v), want it empty", when, names, err)
		}
		wantWhiteout(t, filepath.Join(upper, "a"))
		wantWhiteout(t, filepath.Join(upper, "b"))
		buf := make([]byte, 8)
		if n, err := unix.Lgetxattr(filepath.Join(upper, "d"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
			t.Errorf("%s: upper d is not opaque (%q, %v)", when, buf[:max(n, 0)], err)
		}
		wantContent(t, filepath.Join(lower, "b"), []byte("lower b")) // the lower layer is untouched
		wantContent(t, filepath.Join(lower, "d", "x"), []byte("lower d/x"))
	}
	check("first mount")

	if err := unix.Unmount(merged, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false
	s.remount()
	mountOverlay()
	mounted = true
	check("after geofs remounted")
	if err := unix.Unmount(merged, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false
	s.finish()
}
