package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// metric is one measured figure of a workload on one target.
type metric struct {
	name         string
	unit         string
	value        float64
	higherBetter bool  // throughput-like (true) or time-like (false)
	goal         *goal // the target geofs should meet, if any (on geofs's metric)
}

// goal is a target for a geofs figure, checked on the medians.
type goal struct {
	text string                        // as printed: "< 150 ms", "≥ 0.5× ref"
	met  func(geofs, ref float64) bool // ref is 0 when there is none
}

func throughput(name, unit string, v float64) metric {
	return metric{name: name, unit: unit, value: v, higherBetter: true}
}

func duration(name string, d time.Duration) metric {
	return metric{name: name, unit: "s", value: d.Seconds()}
}

// workload is one entry of the benchmark table. Either run is called once
// per target with the target mounted (it may remount it, and must leave it
// mounted), or runPair is called once per run: it sets up its own geofs
// sites and measures its reference itself (replication.go).
type workload struct {
	name      string
	desc      string
	group     string // -only GROUP selects every workload of the group
	geofsOnly bool
	run       func(ctx context.Context, b *bench, t target) ([]metric, error)
	runPair   func(ctx context.Context, b *bench) (pairResult, error)
}

// pairResult is what a runPair workload measured in one run: geofs's
// figures and the reference's, under the same metric names. A reference
// that failed leaves refErr (geofs's figures still count).
type pairResult struct {
	geofs, ref []metric
	refErr     error
}

var workloads = append([]workload{
	{name: "seq-write", desc: "drop caches, write -size in 1 MiB blocks of random data, fsync, close", run: seqWrite},
	{name: "small-writes", desc: "drop caches, write min(-size, 256 MiB) of random data in 4 KiB writes, fsync, close", run: smallWrites},
	{name: "seq-read", desc: "cold (remount + drop caches), read the file back in 1 MiB blocks", run: seqRead},
	{name: "rand-read", desc: "cold, 4 KiB preads at random aligned offsets (fixed seed)", run: randRead},
	{name: "metadata", desc: "create / lstat / readdir (cold) / readdir, then lstat each (cold) / GNU ls -l (cold) / unlink of -files empty files in one directory", run: metadata},
	{name: "small-files", desc: "tar -x of $GOROOT/src + sync; cold tar -c of it into a pipe", run: smallFiles},
	{name: "cp", desc: "cp of the -size file within the mount, then sync (both filesystems copy with copy_file_range)", run: cpFile},
	{name: "dedup", desc: "store growth when the same random file is written again under a second name", geofsOnly: true, run: dedup},
}, replicationWorkloads...)

// workloadNames lists the workloads and then the groups, for -only.
func workloadNames() []string {
	var names, groups []string
	for _, w := range workloads {
		names = append(names, w.name)
		if w.group != "" && !slices.Contains(groups, w.group) {
			groups = append(groups, w.group)
		}
	}
	return append(names, groups...)
}

// ---------------------------------------------------------------------------
// Big file shared by seq-write, seq-read and rand-read

const bigName = "big.dat"

// bigRand generates the content of big.dat. (Each run uses fresh stores, so
// the same content in every run cannot be deduplicated against the last.)
func bigRand() *randData { return newRandData("big") }

// pregenerateBig keeps the whole content of big.dat in memory when it
// comfortably fits, so that seq-write measures the filesystem and not AES.
func (b *bench) pregenerateBig() {
	if b.cfg.size <= memAvailable()/4 {
		log.Printf("pre-generating %s of random data", fmtBytes(b.cfg.size))
		b.bigData = bigRand().pregenerate(b.cfg.size)
	} else {
		log.Printf("-size is large: generating data while writing (AES-CTR, ~5 GB/s)")
	}
}

// writeRandomFile writes size bytes of rd's data (or pre, if not nil) to
// path in 1 MiB blocks, then fsyncs and closes it. The returned duration
// covers the writes, fsync and close.
func writeRandomFile(ctx context.Context, path string, rd *randData, size int64, pre []byte) (time.Duration, error) {
	return writeRandomFileIn(ctx, path, rd, size, pre, blockSize)
}

// writeRandomFileIn is writeRandomFile with write system calls of wsize
// bytes (a divisor of 1 MiB).
func writeRandomFileIn(ctx context.Context, path string, rd *randData, size int64, pre []byte, wsize int) (time.Duration, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, blockSize)
	start := time.Now()
	for off := int64(0); off < size; off += blockSize {
		n := min(blockSize, size-off)
		chunk := buf[:n]
		if pre != nil {
			chunk = pre[off : off+n]
		} else {
			rd.fill(off/blockSize, chunk)
		}
		for len(chunk) > 0 {
			w := chunk[:min(wsize, len(chunk))]
			if _, err := f.Write(w); err != nil {
				return 0, err
			}
			chunk = chunk[len(w):]
		}
		if err := checkCtx(ctx); err != nil {
			return 0, err
		}
	}
	written := time.Since(start)
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("close %s: %w", path, err)
	}
	d := time.Since(start)
	log.Printf("wrote %s in %v (writes %v, fsync+close %v)", filepath.Base(path),
		d.Round(time.Millisecond), written.Round(time.Millisecond), (d - written).Round(time.Millisecond))
	return d, nil
}

// ensureBigFile writes the big file (untimed) if a previous workload did not
// leave it in place, so that -only seq-read works on its own.
func ensureBigFile(ctx context.Context, b *bench, t target) (string, error) {
	path := filepath.Join(t.Mountpoint(), bigName)
	if st, err := os.Stat(path); err == nil && st.Size() == b.cfg.size {
		return path, nil
	}
	log.Printf("[%s] preparing %s (%s, untimed)", t.Label(), bigName, fmtBytes(b.cfg.size))
	_, err := writeRandomFile(ctx, path, bigRand(), b.cfg.size, b.bigData)
	return path, err
}

func mibPerSec(bytes int64, d time.Duration) float64 {
	return float64(bytes) / MiB / d.Seconds()
}

func seqWrite(ctx context.Context, b *bench, t target) ([]metric, error) {
	path := filepath.Join(t.Mountpoint(), bigName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := dropCaches(); err != nil {
		return nil, err
	}
	d, err := writeRandomFile(ctx, path, bigRand(), b.cfg.size, b.bigData)
	if err != nil {
		return nil, err
	}
	return []metric{throughput("throughput", "MiB/s", mibPerSec(b.cfg.size, d))}, nil
}

// smallWrites writes a new file in 4 KiB write system calls, the size a
// program writing through stdio or a small buffer uses: a round trip per
// call costs here what a block's worth of data costs in seq-write.
func smallWrites(ctx context.Context, b *bench, t target) ([]metric, error) {
	path := filepath.Join(t.Mountpoint(), "small-writes.dat")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := dropCaches(); err != nil {
		return nil, err
	}
	size := min(b.cfg.size, 256<<20)
	var pre []byte
	if b.bigData != nil {
		pre = b.bigData[:size]
	}
	d, err := writeRandomFileIn(ctx, path, bigRand(), size, pre, pageSize)
	if err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil {
		return nil, err
	}
	return []metric{throughput("throughput", "MiB/s", mibPerSec(size, d))}, nil
}

func seqRead(ctx context.Context, b *bench, t target) ([]metric, error) {
	path, err := ensureBigFile(ctx, b, t)
	if err != nil {
		return nil, err
	}
	if err := remountCold(ctx, t); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, blockSize)
	var total int64
	start := time.Now()
	for {
		n, err := f.Read(buf)
		total += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := checkCtx(ctx); err != nil {
			return nil, err
		}
	}
	d := time.Since(start)
	if total != b.cfg.size {
		return nil, fmt.Errorf("read %d bytes, want %d", total, b.cfg.size)
	}
	if err := verifyBlocks(f, bigRand(), b.cfg.size); err != nil {
		return nil, err
	}
	f.Close()
	if r, ok := t.(*refTarget); ok {
		if err := checkPassthroughOff(ctx, b, r, total); err != nil {
			return nil, err
		}
	}
	return []metric{throughput("throughput", "MiB/s", mibPerSec(total, d))}, nil
}

// verifyBlocks compares the first and the last 1 MiB block of f with the
// data that was written (untimed sanity check).
func verifyBlocks(f *os.File, rd *randData, size int64) error {
	last := (size - 1) / blockSize
	for _, idx := range []int64{0, last} {
		n := min(blockSize, size-idx*blockSize)
		want, got := make([]byte, n), make([]byte, n)
		rd.fill(idx, want)
		if _, err := f.ReadAt(got, idx*blockSize); err != nil {
			return fmt.Errorf("verify block %d: %w", idx, err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("data mismatch in 1 MiB block %d of %s", idx, f.Name())
		}
	}
	return nil
}

// checkPassthroughOff remounts the reference to collect the daemon's I/O
// counters for the session that just read the file, and fails if the reads
// did not go through the daemon (i.e. the kernel used FUSE passthrough).
func checkPassthroughOff(ctx context.Context, b *bench, r *refTarget, read int64) error {
	if err := r.Unmount(ctx); err != nil {
		return err
	}
	if err := r.Mount(ctx); err != nil {
		return err
	}
	served := r.last.ReadBytes
	if !b.passthroughNoted {
		b.passthroughNoted = true
		b.notef("Passthrough check: for the cold seq-read of %s, the reference daemon served %d READ requests totalling %s (%.0f%% of the file) — reads go through the daemon, i.e. FUSE passthrough is off.",
			fmtBytes(read), r.last.Reads, fmtBytes(served), 100*float64(served)/float64(read))
	}
	if float64(served) < 0.9*float64(read) {
		return fmt.Errorf("reference daemon served only %d of %d bytes read: FUSE passthrough appears to be ON", served, read)
	}
	return nil
}

const pageSize = 4096

func randRead(ctx context.Context, b *bench, t target) ([]metric, error) {
	path, err := ensureBigFile(ctx, b, t)
	if err != nil {
		return nil, err
	}
	pages := b.cfg.size / pageSize
	if pages < 1 {
		return nil, fmt.Errorf("-size too small for 4 KiB reads")
	}
	rng := rand.New(rand.NewPCG(1, 2)) // fixed seed: same offsets on both targets
	offs := make([]int64, b.cfg.randReads)
	for i := range offs {
		offs[i] = rng.Int64N(pages) * pageSize
	}
	if err := remountCold(ctx, t); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fd := int(f.Fd())
	buf := make([]byte, pageSize)
	start := time.Now()
	for i, off := range offs {
		n, err := unix.Pread(fd, buf, off)
		if err != nil {
			return nil, fmt.Errorf("pread at %d: %w", off, err)
		}
		if n != pageSize {
			return nil, fmt.Errorf("pread at %d: short read %d", off, n)
		}
		if i%256 == 0 {
			if err := checkCtx(ctx); err != nil {
				return nil, err
			}
		}
	}
	d := time.Since(start)
	if err := verifyPages(fd, bigRand(), offs[:min(16, len(offs))]); err != nil {
		return nil, err
	}
	return []metric{throughput("4 KiB random reads", "IOPS", float64(len(offs))/d.Seconds())}, nil
}

// verifyPages compares the pages at offs with the written data (untimed).
func verifyPages(fd int, rd *randData, offs []int64) error {
	block := make([]byte, blockSize)
	got := make([]byte, pageSize)
	for _, off := range offs {
		idx := off / blockSize
		rd.fill(idx, block)
		want := block[off-idx*blockSize:][:pageSize]
		if _, err := unix.Pread(fd, got, off); err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("data mismatch in 4 KiB page at offset %d", off)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Metadata: create / stat / readdir / unlink

// timeOps runs op(i) for i in [0,n) and returns the elapsed time.
func timeOps(ctx context.Context, n int, op func(i int) error) (time.Duration, error) {
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := op(i); err != nil {
			return 0, err
		}
		if i%256 == 0 {
			if err := checkCtx(ctx); err != nil {
				return 0, err
			}
		}
	}
	return time.Since(start), nil
}

func opsPerSec(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

func metadata(ctx context.Context, b *bench, t target) ([]metric, error) {
	n := b.cfg.files
	dir := filepath.Join(t.Mountpoint(), "meta")
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	paths := make([]string, n)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("f%07d", i))
	}
	unix.Sync()

	var ms []metric
	create, err := timeOps(ctx, n, func(i int) error {
		fd, err := unix.Open(paths[i], unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", paths[i], err)
		}
		return unix.Close(fd)
	})
	if err != nil {
		return nil, err
	}
	ms = append(ms, throughput("create", "ops/s", opsPerSec(n, create)))

	var st unix.Stat_t
	stat, err := timeOps(ctx, n, func(i int) error {
		if err := unix.Lstat(paths[i], &st); err != nil {
			return fmt.Errorf("lstat %s: %w", paths[i], err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ms = append(ms, throughput("lstat (after create)", "ops/s", opsPerSec(n, stat)))

	for _, withStat := range []bool{false, true} {
		if err := remountCold(ctx, t); err != nil {
			return nil, err
		}
		d, err := listDir(ctx, dir, n, withStat)
		if err != nil {
			return nil, err
		}
		name := "readdir (cold)"
		if withStat {
			name = "readdir, then lstat each (cold)"
		}
		ms = append(ms, throughput(name, "entries/s", opsPerSec(n, d)))
	}

	// GNU ls -l stats each entry while it reads the directory, so the
	// kernel's READDIRPLUS_AUTO turns READDIRPLUS back on after the first
	// lookups: what a user typing ls -l gets.
	if err := remountCold(ctx, t); err != nil {
		return nil, err
	}
	start := time.Now()
	out, err := runCmd(ctx, 5*time.Minute, "ls", "-l", dir)
	if err != nil {
		return nil, err
	}
	ls := time.Since(start)
	// ls prints a "total" line, then n entries: n newlines, once runCmd
	// has trimmed the last.
	if lines := strings.Count(out, "\n"); lines != n {
		return nil, fmt.Errorf("ls -l %s: %d entries, want %d", dir, lines, n)
	}
	ms = append(ms, throughput("GNU ls -l (cold)", "entries/s", opsPerSec(n, ls)))

	unlink, err := timeOps(ctx, n, func(i int) error {
		if err := unix.Unlink(paths[i]); err != nil {
			return fmt.Errorf("unlink %s: %w", paths[i], err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ms = append(ms, throughput("unlink", "ops/s", opsPerSec(n, unlink)))
	return ms, os.Remove(dir)
}

// listDir lists dir with os.ReadDir (getdents) and, if withStat, lstats
// every entry like ls -l. It checks that dir holds want entries.
func listDir(ctx context.Context, dir string, want int, withStat bool) (time.Duration, error) {
	start := time.Now()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	if withStat {
		var st unix.Stat_t
		for i, e := range ents {
			if err := unix.Lstat(filepath.Join(dir, e.Name()), &st); err != nil {
				return 0, err
			}
			if i%256 == 0 {
				if err := checkCtx(ctx); err != nil {
					return 0, err
				}
			}
		}
	}
	d := time.Since(start)
	if len(ents) != want {
		return 0, fmt.Errorf("readdir %s: %d entries, want %d", dir, len(ents), want)
	}
	return d, nil
}

// ---------------------------------------------------------------------------
// Small files: tar of Go's source tree

// ensureTar creates the tar of $(go env GOROOT)/src in the bench dir once.
func (b *bench) ensureTar(ctx context.Context) error {
	if b.tarPath != "" {
		return nil
	}
	goroot, err := runCmd(ctx, time.Minute, "go", "env", "GOROOT")
	if err != nil {
		return err
	}
	path := filepath.Join(b.dir, "gosrc.tar")
	log.Printf("creating %s from %s/src", path, goroot)
	if _, err := runCmd(ctx, 10*time.Minute, "tar", "-cf", path, "-C", goroot, "src"); err != nil {
		return err
	}
	list, err := runCmd(ctx, time.Minute, "tar", "-tvf", path)
	if err != nil {
		return err
	}
	var files, bytes int64
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 2 && strings.HasPrefix(f[0], "-") {
			files++
			sz, _ := strconv.ParseInt(f[2], 10, 64)
			bytes += sz
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	b.tarPath = path
	b.notef("small-files: tar of %s/src: %d regular files, %s of file data, tar %s.",
		goroot, files, fmtBytes(bytes), fmtBytes(st.Size()))
	return nil
}

// countingWriter discards what it is given and counts it.
type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func smallFiles(ctx context.Context, b *bench, t target) ([]metric, error) {
	if err := b.ensureTar(ctx); err != nil {
		return nil, err
	}
	dest := filepath.Join(t.Mountpoint(), "gosrc")
	if err := os.RemoveAll(dest); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dest, 0o755); err != nil {
		return nil, err
	}
	// Keep the tar's input warm so that extraction measures the mount only.
	if err := warmFile(b.tarPath); err != nil {
		return nil, err
	}
	unix.Sync()

	start := time.Now()
	if _, err := runCmd(ctx, time.Hour, "tar", "-xf", b.tarPath, "-C", dest); err != nil {
		return nil, err
	}
	unix.Sync()
	extract := time.Since(start)

	if err := remountCold(ctx, t); err != nil {
		return nil, err
	}
	// Into a pipe, not /dev/null: GNU tar does not read file contents when
	// its archive is /dev/null.
	var out countingWriter
	cmd := exec.CommandContext(ctx, "tar", "-cf", "-", "-C", dest, ".")
	cmd.Stdout = &out
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start = time.Now()
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("tar -c: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	archive := time.Since(start)
	if st, err := os.Stat(b.tarPath); err == nil && out.n < st.Size()/2 {
		return nil, fmt.Errorf("tar -c produced %d bytes, expected about %d", out.n, st.Size())
	}
	return []metric{
		duration("tar -x + sync", extract),
		duration("tar -c (cold) to pipe", archive),
	}, nil
}

func warmFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// ---------------------------------------------------------------------------
// Dedup (geofs only)

type diskUsage struct{ apparent, allocated int64 }

func (u diskUsage) String() string {
	return fmt.Sprintf("%d bytes apparent, %d bytes allocated", u.apparent, u.allocated)
}

// du measures dir with du -sb (apparent size) and du -sB1 (allocated blocks).
func du(ctx context.Context, dir string) (diskUsage, error) {
	var u diskUsage
	for _, c := range []struct {
		args []string
		dst  *int64
	}{
		{[]string{"-sb", dir}, &u.apparent},
		{[]string{"-s", "-B1", dir}, &u.allocated},
	} {
		out, err := runCmd(ctx, 5*time.Minute, "du", c.args...)
		if err != nil {
			return u, err
		}
		f := strings.Fields(out)
		if len(f) == 0 {
			return u, fmt.Errorf("du %v: no output", c.args)
		}
		if *c.dst, err = strconv.ParseInt(f[0], 10, 64); err != nil {
			return u, fmt.Errorf("du %v: %w", c.args, err)
		}
	}
	return u, nil
}

// cpFile copies the big file with cp inside the mount. geofs makes the
// copy from the file's chunks; the reference passes copy_file_range on to
// the disk's file system, which copies the bytes.
func cpFile(ctx context.Context, b *bench, t target) ([]metric, error) {
	src, err := ensureBigFile(ctx, b, t)
	if err != nil {
		return nil, err
	}
	dst := filepath.Join(t.Mountpoint(), "cp-copy.dat")
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	unix.Sync()
	start := time.Now()
	if _, err := runCmd(ctx, time.Hour, "cp", src, dst); err != nil {
		return nil, err
	}
	unix.Sync()
	d := time.Since(start)
	f, err := os.Open(dst)
	if err != nil {
		return nil, err
	}
	err = verifyPages(int(f.Fd()), bigRand(), []int64{0, b.cfg.size / 2 &^ (pageSize - 1), b.cfg.size - pageSize})
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("the copy: %w", err)
	}
	if err := os.Remove(dst); err != nil {
		return nil, err
	}
	return []metric{duration("cp + sync", d)}, nil
}

func dedup(ctx context.Context, b *bench, t target) ([]metric, error) {
	size := b.cfg.dedupSize
	src := filepath.Join(t.Mountpoint(), "dedup-a.dat")
	dst := filepath.Join(t.Mountpoint(), "dedup-b.dat")
	for _, p := range []string{src, dst} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	log.Printf("[%s] writing %s of random data", t.Label(), fmtBytes(size))
	if _, err := writeRandomFile(ctx, src, newRandData("dedup"), size, nil); err != nil {
		return nil, err
	}
	unix.Sync()
	mounted, err := du(ctx, t.Store())
	if err != nil {
		return nil, err
	}
	// Baseline with the daemon stopped, so that both figures are taken in
	// the same quiescent state (flushed memtables, truncated value logs).
	if err := t.Unmount(ctx); err != nil {
		return nil, err
	}
	base, err := du(ctx, t.Store())
	if err != nil {
		return nil, err
	}
	if err := t.Mount(ctx); err != nil {
		return nil, err
	}
	// Written again, not copied: cp makes its copy from the source's
	// chunks, without writing bytes (see the cp workload).
	log.Printf("[%s] writing the same %s again as %s", t.Label(), fmtBytes(size), filepath.Base(dst))
	if _, err := writeRandomFile(ctx, dst, newRandData("dedup"), size, nil); err != nil {
		return nil, err
	}
	unix.Sync()
	if st, err := os.Stat(dst); err != nil || st.Size() != size {
		return nil, fmt.Errorf("copy %s: bad result (%v)", dst, err)
	}
	if err := t.Unmount(ctx); err != nil {
		return nil, err
	}
	after, err := du(ctx, t.Store())
	if err != nil {
		return nil, err
	}
	if err := t.Mount(ctx); err != nil {
		return nil, err
	}
	pct := func(a, b int64) float64 { return 100 * float64(a-b) / float64(size) }
	b.notef("dedup (run %d): store %s — after writing the %s file, mounted: %v; unmounted: %v; after writing it again + unmount: %v. "+
		"Growth = (after − unmounted baseline) / file size: allocated %+.2f%%, apparent %+.2f%% "+
		"(mounted-baseline figures, which include preallocation: allocated %+.2f%%, apparent %+.2f%%).",
		b.run+1, t.Store(), fmtBytes(size), mounted, base, after,
		pct(after.allocated, base.allocated), pct(after.apparent, base.apparent),
		pct(after.allocated, mounted.allocated), pct(after.apparent, mounted.apparent))
	return []metric{
		{name: "store growth for a second copy, allocated (du -sB1)", unit: "% of file", value: pct(after.allocated, base.allocated)},
		{name: "store growth for a second copy, apparent (du -sb)", unit: "% of file", value: pct(after.apparent, base.apparent)},
	}, nil
}
