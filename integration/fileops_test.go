package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRandomFileOpsMatchModel is fsx's idea (xfstests' file system
// exerciser) through the real mount: one file, thousands of random
// operations — writes, reads, reads and writes through a shared mapping,
// truncation, fallocate in every mode the mount supports, O_DIRECT reads
// and writes, fsync, close and reopen — with every read and the size
// checked against a model in memory, the whole file every 32 operations,
// and again after a remount. Each operation's offsets come from a fixed seed, so a failure
// repeats; it names the operation and the ones before it.
func TestRandomFileOpsMatchModel(t *testing.T) {
	s := newSite(t)
	s.mount()
	p := s.path("fsx")
	const (
		maxLen = 1 << 20  // the file stays under this
		maxIO  = 64 << 10 // the most bytes one operation moves
		ops    = 6000
	)
	r := rand.New(rand.NewPCG(2026, 11))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { f.Close() }()
	var model []byte
	var history []string   // the last operations, for a failure's message
	var lastOff, lastN int // the range the last change touched: half the reads go there
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("after %v:\n"+format, append([]any{history}, args...)...)
	}
	// span picks an offset and a length within [0, limit).
	span := func(limit int, align int) (int, int) {
		off := r.IntN(max(limit, 1)) / align * align
		n := (1 + r.IntN(maxIO)) / align * align
		return off, max(align, min(n, limit-off))
	}
	grow := func(size int) {
		if size > len(model) {
			model = append(model, make([]byte, size-len(model))...)
		}
	}
	for i := range ops {
		op := r.IntN(12)
		switch {
		case op < 3: // write, possibly past the end
			off, n := span(maxLen, 1)
			data := make([]byte, n)
			for j := range data {
				data[j] = byte(r.Uint32())
			}
			if _, err := f.WriteAt(data, int64(off)); err != nil {
				fail("write [%d, +%d): %v", off, n, err)
			}
			grow(off + n)
			copy(model[off:], data)
			lastOff, lastN = off, n
			history = append(history, fmt.Sprintf("write %d+%d", off, n))
		case op < 5: // read, possibly past the end
			off, n := span(len(model)+8192, 1)
			if r.IntN(2) == 0 && lastN > 0 { // around the last change
				off, n = max(0, lastOff-r.IntN(4096)), min(lastN+r.IntN(8192), 2*maxIO)
			}
			got := make([]byte, n)
			m, err := f.ReadAt(got, int64(off))
			want := model[min(off, len(model)):min(off+n, len(model))]
			if (err != nil && m == n) || !bytes.Equal(got[:m], want) {
				fail("read [%d, +%d): %d bytes, %v; want %d bytes, equal %v", off, n, m, err, len(want), bytes.Equal(got[:m], want))
			}
			history = append(history, fmt.Sprintf("read %d+%d", off, n))
		case op == 5 && len(model) > 0: // write through a shared mapping, then msync
			off, n := span(len(model), 1)
			mapWrite(t, f, len(model), off, n, r, model)
			lastOff, lastN = off, n
			history = append(history, fmt.Sprintf("mapwrite %d+%d", off, n))
		case op == 6 && len(model) > 0: // read through a mapping
			off, n := span(len(model), 1)
			m, err := unix.Mmap(int(f.Fd()), 0, len(model), unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				fail("mmap: %v", err)
			}
			equal := bytes.Equal(m[off:off+n], model[off:off+n])
			unix.Munmap(m)
			if !equal {
				fail("mapread [%d, +%d) differs", off, n)
			}
			history = append(history, fmt.Sprintf("mapread %d+%d", off, n))
		case op == 7: // truncate, shorter or longer
			size, old := r.IntN(maxLen), len(model)
			if err := f.Truncate(int64(size)); err != nil {
				fail("truncate %d: %v", size, err)
			}
			grow(size)
			model = model[:size]
			lastOff = max(0, min(size, old)-4096)
			lastN = max(size, old) + 4096 - lastOff
			history = append(history, fmt.Sprintf("truncate %d", size))
		case op == 8: // fallocate, in each supported mode
			modes := []uint32{0, unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE,
				unix.FALLOC_FL_ZERO_RANGE, unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE}
			mode := modes[r.IntN(len(modes))]
			off, n := span(maxLen, 1)
			if err := unix.Fallocate(int(f.Fd()), mode, int64(off), int64(n)); err != nil {
				fail("fallocate %#x [%d, +%d): %v", mode, off, n, err)
			}
			if mode&unix.FALLOC_FL_KEEP_SIZE == 0 {
				grow(off + n)
			}
			if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 {
				clear(model[min(off, len(model)):min(off+n, len(model))])
			}
			lastOff, lastN = off, n
			history = append(history, fmt.Sprintf("fallocate %#x %d+%d", mode, off, n))
		case op == 9: // O_DIRECT write or read of whole pages
			directIO(t, p, r, &model, maxLen, span, fail)
			history = append(history, "direct")
		case op == 10:
			if err := f.Sync(); err != nil {
				fail("fsync: %v", err)
			}
			history = append(history, "fsync")
		case op == 11: // close (commits) and open again
			if err := f.Close(); err != nil {
				fail("close: %v", err)
			}
			if f, err = os.OpenFile(p, os.O_RDWR, 0); err != nil {
				fail("reopen: %v", err)
			}
			history = append(history, "reopen")
		}
		if len(history) > 8 {
			history = history[len(history)-8:]
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Size != int64(len(model)) {
			fail("op %d: size %d (%v), want %d", i, st.Size, err, len(model))
		}
		if i%32 == 31 { // the whole file: what an earlier change left wrong
			got := make([]byte, len(model)+1)
			if n, err := f.ReadAt(got, 0); n != len(model) || !bytes.Equal(got[:n], model) {
				fail("op %d: the whole file (%d bytes, %v) differs from the model (%d bytes)", i, n, err, len(model))
			}
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	wantContent(t, p, model)
	s.remount()
	wantContent(t, p, model)
	s.finish()
}

// mapWrite writes n random bytes at off through a shared mapping of f's
// first size bytes, syncs the mapping, and applies the write to model.
func mapWrite(t *testing.T, f *os.File, size, off, n int, r *rand.Rand, model []byte) {
	t.Helper()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer unix.Munmap(m)
	for j := off; j < off+n; j++ {
		m[j] = byte(r.Uint32())
	}
	copy(model[off:off+n], m[off:off+n])
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatalf("msync: %v", err)
	}
}

// directIO writes or reads whole pages at a page offset through a second,
// O_DIRECT descriptor of path, checking reads against model.
func directIO(t *testing.T, path string, r *rand.Rand, model *[]byte, maxLen int,
	span func(limit, align int) (int, int), fail func(string, ...any)) {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		fail("open O_DIRECT: %v", err)
	}
	defer unix.Close(fd)
	off, n := span(maxLen, 4096)
	// Anonymous mappings are page-aligned, as O_DIRECT wants.
	buf, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	if r.IntN(2) == 0 {
		for j := range buf {
			buf[j] = byte(r.Uint32())
		}
		if w, err := unix.Pwrite(fd, buf, int64(off)); err != nil || w != n {
			fail("direct write [%d, +%d): %d, %v", off, n, w, err)
		}
		if off+n > len(*model) {
			*model = append(*model, make([]byte, off+n-len(*model))...)
		}
		copy((*model)[off:], buf)
		return
	}
	m, err := unix.Pread(fd, buf, int64(off))
	want := (*model)[min(off, len(*model)):min(off+n, len(*model))]
	if err != nil || !bytes.Equal(buf[:m], want) {
		fail("direct read [%d, +%d): %d bytes, %v; want %d bytes", off, n, m, err, len(want))
	}
}
