package integration

import (
	"bytes"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// cp copies a file with copy_file_range; the mount makes the copy out of
// the source's chunks: one version (a copy through reads and writes would
// commit every 64 MiB buffered), logged as "copy", with the same bytes.
// Holes stay holes, and a file written after a copy into it keeps the
// copy under the new bytes.
func TestCopyIsMadeFromChunks(t *testing.T) {
	s := newSite(t)
	s.mount()
	data := content(11, 0, 150<<20)
	if err := os.WriteFile(s.path("a"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", s.path("a"), s.path("b")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	mustRead(t, s.path("b"), data)
	if vs := versionsJSON(t, s.path("b")); len(vs) != 2 {
		t.Fatalf("the copy has %d versions, want 2 (created, copied): %+v", len(vs), vs)
	}
	if es := logEntries(t, s.mnt); es[len(es)-1].Op != "copy" {
		t.Fatalf("the copy was logged as %q, want copy", es[len(es)-1].Op)
	}

	// Sparse: 1 MiB of data, a 200 MiB hole, 1 MiB of data.
	sparse := make([]byte, 202<<20)
	copy(sparse, data[:1<<20])
	copy(sparse[201<<20:], data[1<<20:2<<20])
	f, err := os.Create(s.path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(sparse[:1<<20], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(sparse[201<<20:], 201<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", s.path("sparse"), s.path("sparse2")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	mustRead(t, s.path("sparse2"), sparse)
	var st syscall.Stat_t
	if err := syscall.Stat(s.path("sparse2"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 8<<20 {
		t.Fatalf("the copy of a file with 2 MiB of data allocates %d bytes", st.Blocks*512)
	}

	// In pieces, as cp copies files over 4 GiB: each piece continues the
	// copy out of chunks.
	in, err := os.Open(s.path("a"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(s.path("pieces"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	copyPieces(t, in, nil, out, 64<<20)
	// Writes through the same descriptor land over the copy.
	patch := content(12, 0, 5000)
	if _, err := out.WriteAt(patch, 70<<20+123); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3<<20)
	if _, err := out.ReadAt(got, 69<<20); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	copy(want[70<<20+123:], patch)
	if !bytes.Equal(got, want[69<<20:72<<20]) {
		t.Fatal("read back after a write over the copy: wrong bytes")
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if vs := versionsJSON(t, s.path("pieces")); len(vs) != 5 {
		t.Fatalf("copied in 3 pieces of 64 MiB and written: %d versions, want 5: %+v", len(vs), vs)
	}

	// Small pieces: the kernel copies the bytes (a version and a cut
	// chunk per piece would pile up).
	small, err := os.Create(s.path("small-pieces"))
	if err != nil {
		t.Fatal(err)
	}
	var from int64 // in's own offset is at its end by now
	copyPieces(t, in, &from, small, 1<<20)
	if err := small.Close(); err != nil {
		t.Fatal(err)
	}
	mustRead(t, s.path("small-pieces"), data)
	if vs := versionsJSON(t, s.path("small-pieces")); len(vs) > 5 {
		t.Fatalf("copied in 150 pieces: %d versions, want at most 5 (created, one per 64 MiB)", len(vs))
	}

	// Not a copy from the start: the kernel copies the bytes.
	out2, err := os.Create(s.path("shifted"))
	if err != nil {
		t.Fatal(err)
	}
	offIn := int64(4096)
	if n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out2.Fd()), nil, 1<<20, 0); err != nil || n != 1<<20 {
		t.Fatalf("copy_file_range from 4096: %d, %v", n, err)
	}
	if err := out2.Close(); err != nil {
		t.Fatal(err)
	}
	mustRead(t, s.path("shifted"), data[4096:4096+1<<20])
	if es := logEntries(t, s.mnt); es[len(es)-1].Op != "write" {
		t.Fatalf("a copy to another offset was logged as %q, want write", es[len(es)-1].Op)
	}

	// Appending to a file that holds other bytes: the kernel copies them.
	other := content(13, 0, 10<<20)
	if err := os.WriteFile(s.path("other"), other, 0o644); err != nil {
		t.Fatal(err)
	}
	out3, err := os.OpenFile(s.path("other"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	offIn, offOut := int64(10<<20), int64(10<<20)
	// The kernel's own copy may stop short (64 KiB at a time on some
	// machines), as copy_file_range is allowed to: call until done.
	for left := 20 << 20; left > 0; {
		n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out3.Fd()), &offOut, left, 0)
		if err != nil || n == 0 {
			t.Fatalf("copy_file_range onto the end of another file: %d, %v with %d bytes left", n, err, left)
		}
		left -= n
	}
	if err := out3.Close(); err != nil {
		t.Fatal(err)
	}
	appended := append(bytes.Clone(other), data[10<<20:30<<20]...)
	mustRead(t, s.path("other"), appended)
	// The same, to the source's end (a piece that may be made from chunks
	// when it continues a copy, which this is not).
	if err := os.WriteFile(s.path("other3"), other, 0o644); err != nil {
		t.Fatal(err)
	}
	out4, err := os.OpenFile(s.path("other3"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	offIn, offOut = 10<<20, 10<<20
	for {
		n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out4.Fd()), &offOut, 1<<30, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if err := out4.Close(); err != nil {
		t.Fatal(err)
	}
	mustRead(t, s.path("other3"), append(bytes.Clone(other), data[10<<20:]...))
	in.Close()

	// A source with writes still buffered: the copy has them.
	w, err := os.OpenFile(s.path("other"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(patch, 0); err != nil {
		t.Fatal(err)
	}
	// (In this process: a child's exec would close its copy of w, and the
	// flush of that close commits the writes.)
	copyFile(t, s.path("other"), s.path("other2"))
	copy(appended, patch)
	mustRead(t, s.path("other2"), appended)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	s.unmount()
	s.fsck()
	s.mount()
	mustRead(t, s.path("a"), data)
	mustRead(t, s.path("b"), data)
	mustRead(t, s.path("sparse2"), sparse)
	mustRead(t, s.path("pieces"), want)
	mustRead(t, s.path("other"), appended)
}

// On a fog node the source's chunks are mostly not stored here: the
// kernel copies the bytes, and the copy reads back after a remount (a
// copy made of chunks could not name a version to fetch them by).
func TestFogCopyReadsBackAfterRemount(t *testing.T) {
	a := newLinkedSite(t, "a")
	f := newFogSite(t, "f", "64MiB")
	a.link(f, "", "--path", "/pub")
	f.link(a, a.addr, "--direction", "receive", "--metadata-only", "all", "--path", "/pub")
	a.mount()
	f.mount()
	x := map[string][]byte{"pub/x": randomBytes(t, 4<<20)}
	putFiles(t, a, x)
	waitMetadata(t, f, x)
	if out, err := exec.Command("cp", f.path("pub/x"), f.path("pub/y")).CombinedOutput(); err != nil {
		t.Fatalf("cp at f: %v\n%s", err, out)
	}
	f.unmount()
	f.mount()
	got, err := readFresh(f.path("pub/y"))
	if err != nil || !bytes.Equal(got, x["pub/x"]) {
		t.Fatalf("the copy at f after a remount: %v, equal %v", err, bytes.Equal(got, x["pub/x"]))
	}
}

// copyFile copies src to a new file dst with copy_file_range, as cp does.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	copyPieces(t, in, nil, out, 1<<30)
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// copyPieces calls copy_file_range from in (at *offIn, or at its file
// offset when offIn is nil) to out's file offset, piece bytes at a time,
// until in's end.
func copyPieces(t *testing.T, in *os.File, offIn *int64, out *os.File, piece int) {
	t.Helper()
	for {
		n, err := unix.CopyFileRange(int(in.Fd()), offIn, int(out.Fd()), nil, piece, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

func mustRead(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes that differ from the %d expected", path, len(got), len(want))
	}
}
