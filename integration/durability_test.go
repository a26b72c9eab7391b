package integration

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// content returns deterministic pseudo-random bytes for file i.
func content(seed uint64, i, size int) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	b := make([]byte, size)
	for j := 0; j+8 <= len(b); j += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[j+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// TestWorkloadSurvivesRemount writes many files of random sizes in nested
// directories, remounts, and checks every byte by checksum.
func TestWorkloadSurvivesRemount(t *testing.T) {
	s := newSite(t)
	s.mount()
	r := rand.New(rand.NewPCG(42, 1))
	want := map[string][32]byte{}
	for i := range 400 {
		size := r.IntN(64 << 10)
		switch r.IntN(20) {
		case 0:
			size = 1<<20 + r.IntN(6<<20)
		case 1:
			size = 0
		}
		dir := fmt.Sprintf("d%d/e%d", i%7, i%3)
		if err := os.MkdirAll(s.path(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		name := filepath.Join(dir, fmt.Sprintf("f%03d", i))
		data := content(42, i, size)
		if err := os.WriteFile(s.path(name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = sha256.Sum256(data)
	}
	s.unmount()
	s.fsck()
	s.mount()
	for name, sum := range want {
		got, err := os.ReadFile(s.path(name))
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sum {
			t.Fatalf("%s: content changed across remount", name)
		}
	}
	s.unmount()
}

// TestLargeWritesSideBySide writes three large files at once in 1 MiB
// writes, so that sequential writers fill full-size arenas and hand them
// back to one another as their commits finish (the mount runs with
// GEOFS_POISON_ARENAS, see TestMain). Each writer reads back, bypassing the
// kernel's cache, a piece of what it wrote so far every 8 MiB; after a
// remount every file must match byte for byte.
func TestLargeWritesSideBySide(t *testing.T) {
	s := newSite(t)
	s.mount()
	const size, files = 120 << 20, 3
	want := make([][32]byte, files)
	var wg sync.WaitGroup
	errs := make(chan error, files)
	for i := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := content(7, i, size)
			want[i] = sha256.Sum256(data)
			errs <- writeAndProbe(s.path(fmt.Sprintf("big%d", i)), data, uint64(i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s.unmount()
	s.fsck()
	s.mount()
	for i := range files {
		got, err := os.ReadFile(s.path(fmt.Sprintf("big%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != size || sha256.Sum256(got) != want[i] {
			t.Fatalf("big%d: content changed across remount", i)
		}
	}
	s.unmount()
}

// writeAndProbe writes data to a new file at path in 1 MiB writes, reading
// 64 KiB of what is already written back through an O_DIRECT descriptor
// every 8 MiB.
func writeAndProbe(path string, data []byte, seed uint64) error {
	w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer w.Close()
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer r.Close()
	// Anonymous mappings are page-aligned, as O_DIRECT wants.
	probe, err := syscall.Mmap(-1, 0, 64<<10, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return err
	}
	defer syscall.Munmap(probe)
	rnd := rand.New(rand.NewPCG(seed, 1))
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := w.Write(data[off : off+1<<20]); err != nil {
			return err
		}
		if end := off + 1<<20; end%(8<<20) == 0 {
			at := rnd.IntN(end/4096-16) * 4096
			if _, err := r.ReadAt(probe, int64(at)); err != nil {
				return fmt.Errorf("%s: read back at %d: %w", path, at, err)
			}
			if !bytes.Equal(probe, data[at:at+len(probe)]) {
				return fmt.Errorf("%s: 64 KiB at %d read back wrong while %d bytes were written", path, at, end)
			}
		}
	}
	return w.Close()
}

// TestSIGKILLKeepsFsyncedData kills the mount process while writers run.
// After remounting, fsck is clean, every file whose fsync returned is
// intact, and every other file shows a whole committed version (empty, as
// created, complete, or what a writer dirty for 5 s had written when the
// periodic commit took it): never a torn one.
func TestSIGKILLKeepsFsyncedData(t *testing.T) {
	s := newSite(t)
	s.mount()
	const seed = 7
	var mu sync.Mutex
	synced := map[string]int{} // name -> size, fsync returned
	started := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	// Registered after the mount's cleanup, so it runs first: a test that
	// fails before the kill must not leave writers filling the bare
	// mountpoint directory once the mount is gone.
	t.Cleanup(halt)
	for w := range 4 {
		wg.Go(func() {
			for i := w * 100000; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				size := 1 + (i*7919)%(3<<20)
				name := fmt.Sprintf("w%d-%06d", w, i)
				mu.Lock()
				started[name] = size
				mu.Unlock()
				if err := writeSynced(s.path(name), content(seed, i, size)); err != nil {
					return // the mount is gone
				}
				mu.Lock()
				synced[name] = size
				mu.Unlock()
			}
		})
	}
	time.Sleep(1500 * time.Millisecond)
	pids := s.pids()
	if len(pids) != 1 {
		t.Fatalf("want one geofs process, found %v", pids)
	}
	syscall.Kill(pids[0], syscall.SIGKILL)
	halt()
	if len(synced) == 0 {
		t.Fatal("no write was fsynced before the kill: the test proved nothing")
	}
	syscall.Unmount(s.mnt, 0)
	if err := s.waitExit(); err != nil {
		t.Fatal(err)
	}
	s.fsck()
	s.mount()
	for name, size := range started {
		i := fileIndex(name)
		got, err := os.ReadFile(s.path(name))
		if errors.Is(err, os.ErrNotExist) {
			if _, ok := synced[name]; ok {
				t.Fatalf("%s was fsynced but is gone", name)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		whole := bytes.Equal(got, content(seed, i, size))
		if _, ok := synced[name]; ok && !whole {
			t.Fatalf("%s was fsynced but reads %d bytes that differ", name, len(got))
		}
		// A writer dirty for 5 s is committed as far as it got (docs/
		// INVARIANTS.md, "What a commit is"): a slow one (under the race
		// detector) may show such a version, whole FUSE writes (1 MiB)
		// of its data. Anything else would be a torn version.
		prefix := len(got)%(1<<20) == 0 && bytes.Equal(got, content(seed, i, size)[:len(got)])
		if !whole && len(got) != 0 && !prefix {
			t.Fatalf("%s shows a partial version (%d of %d bytes)", name, len(got), size)
		}
	}
	t.Logf("%d files fsynced before SIGKILL, %d started", len(synced), len(started))
	s.unmount()
	s.fsck()
}

func fileIndex(name string) int {
	var w, i int
	fmt.Sscanf(name, "w%d-%d", &w, &i)
	return i
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TestCorruptChunkGivesEIO damages a chunk on disk: reading the file fails
// with EIO and a log line names it, other files still read, and fsck
// reports the damaged path with exit status 3.
func TestCorruptChunkGivesEIO(t *testing.T) {
	s := newSite(t)
	s.mount()
	victim := content(99, 0, 2<<20) // incompressible: stored as it is
	healthy := content(99, 1, 100<<10)
	if err := os.WriteFile(s.path("victim.bin"), victim, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path("healthy.bin"), healthy, 0o644); err != nil {
		t.Fatal(err)
	}
	s.unmount()
	if n := flipInStore(t, s.store, victim[1<<20:1<<20+64]); n == 0 {
		t.Fatal("could not find the chunk's bytes in the store")
	}
	s.mount()
	_, err := os.ReadFile(s.path("victim.bin"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading a corrupt file: err = %v, want EIO", err)
	}
	if got, err := os.ReadFile(s.path("healthy.bin")); err != nil || !bytes.Equal(got, healthy) {
		t.Fatalf("undamaged file: %v", err)
	}
	s.unmount()
	logText, _ := os.ReadFile(filepath.Join(s.store, "geofs.log"))
	if !strings.Contains(string(logText), "/victim.bin") {
		t.Fatalf("no log line names /victim.bin:\n%s", logText)
	}
	out, err := runGeofs("fsck", s.store)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(out, "/victim.bin") {
		t.Fatalf("fsck of a damaged store: %v\n%s", err, out)
	}
}

// flipInStore flips one byte of every copy of needle in the store's files.
func flipInStore(t *testing.T, store string, needle []byte) int {
	t.Helper()
	n := 0
	filepath.Walk(store, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if i := bytes.Index(b, needle); i >= 0 {
			b[i+10] ^= 0xff
			n++
			return os.WriteFile(p, b, fi.Mode())
		}
		return nil
	})
	return n
}

// TestFullDiskGivesENOSPC fills a small disk: the writer gets ENOSPC, and
// the store stays consistent with everything written before intact. It
// runs on tmpfs and on ext4, where large pack appends use O_DIRECT.
func TestFullDiskGivesENOSPC(t *testing.T) {
	requireFUSE(t)
	t.Run("tmpfs", func(t *testing.T) {
		fillDisk(t, func(disk string) []string {
			return []string{"-t", "tmpfs", "-o", "size=512m", "tmpfs", disk}
		})
	})
	t.Run("ext4", func(t *testing.T) {
		fillDisk(t, func(disk string) []string {
			img := disk + ".img"
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 512<<20); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
				t.Fatalf("mkfs.ext4: %v %s", err, out)
			}
			return []string{"-o", "loop", img, disk}
		})
	})
}

// fillDisk mounts a small file system (mountArgs gives mount's arguments
// for the directory), puts a store on it and fills it through the mount.
func fillDisk(t *testing.T, mountArgs func(disk string) []string) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	os.Mkdir(disk, 0o755)
	if out, err := exec.Command("mount", mountArgs(disk)...).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() {
		if syscall.Unmount(disk, 0) != nil { // busy: let it go when released
			syscall.Unmount(disk, syscall.MNT_DETACH)
		}
	})
	s := &site{t: t, store: filepath.Join(disk, "store"), mnt: filepath.Join(dir, "mnt")}
	os.Mkdir(s.mnt, 0o755)
	s.geofs("init", s.store)
	s.mount()
	var written []string
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		name := fmt.Sprintf("f%03d", i)
		if err = writeSynced(s.path(name), content(5, i, 8<<20)); err == nil {
			written = append(written, name)
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the disk: err = %v after %d files, want ENOSPC", err, len(written))
	}
	if len(written) < 10 {
		t.Fatalf("only %d files fitted", len(written))
	}
	s.unmount()
	s.fsck()
	s.mount()
	for i, name := range written {
		got, err := os.ReadFile(s.path(name))
		if err != nil || !bytes.Equal(got, content(5, i, 8<<20)) {
			t.Fatalf("%s lost after ENOSPC: %v", name, err)
		}
	}
	s.unmount()
}
