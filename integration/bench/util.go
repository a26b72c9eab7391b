package main

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	MiB       = 1 << 20
	blockSize = 1 * MiB
)

// ---------------------------------------------------------------------------
// Sizes

var sizeSuffixes = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first.
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// parseSize parses "2GiB", "64MiB", "512M", "1000000" (bytes) etc.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, sf := range sizeSuffixes {
		if strings.HasSuffix(s, sf.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, sf.suffix)), sf.mult
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(n * float64(mult)), nil
}

// sizeFlag is a flag.Value holding a byte count.
type sizeFlag int64

func (f *sizeFlag) String() string { return fmtBytes(int64(*f)) }
func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	*f = sizeFlag(n)
	return err
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%dB", n)
}

// ---------------------------------------------------------------------------
// Deterministic incompressible data.
//
// Every 1 MiB block of every file is distinct (AES-CTR keystream, key derived
// from a per-file label, IV = block index): a content-addressed store must
// not be able to deduplicate anything inside a file or across files with
// different labels. Any block can be regenerated on its own, which is used to
// spot-check data read back.

type randData struct {
	block cipher.Block
}

func newRandData(label string) *randData {
	key := sha256.Sum256([]byte("geofs-bench/" + label))
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err)
	}
	return &randData{block: b}
}

// fill writes the content of 1 MiB block number idx into buf
// (len(buf) <= blockSize; a short buf gets the block's prefix).
func (r *randData) fill(idx int64, buf []byte) {
	var iv [aes.BlockSize]byte
	binary.BigEndian.PutUint64(iv[8:], uint64(idx)*(blockSize/aes.BlockSize))
	clear(buf)
	cipher.NewCTR(r.block, iv[:]).XORKeyStream(buf, buf)
}

// pregenerate returns the whole content of a file of the given size.
func (r *randData) pregenerate(size int64) []byte {
	data := make([]byte, size)
	for off := int64(0); off < size; off += blockSize {
		r.fill(off/blockSize, data[off:min(off+blockSize, size)])
	}
	return data
}

// memAvailable returns MemAvailable from /proc/meminfo in bytes (0 if unknown).
func memAvailable() int64 {
	n, _ := readMeminfo("MemAvailable:")
	return n
}

// readMeminfo returns the value of key (e.g. "MemTotal:") in /proc/meminfo, in bytes.
func readMeminfo(key string) (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == key {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("%s not in /proc/meminfo", key)
}

// ---------------------------------------------------------------------------
// Caches and syncing

// dropCaches flushes dirty data and drops the page, dentry and inode caches.
func dropCaches() error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop caches (need root): %w", err)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Processes and commands

// runCmd runs a command with a timeout, returning its trimmed stdout and an
// error that includes stderr.
func runCmd(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(stdout.String()), nil
}

// pidsMatching returns the pids of processes (other than this one) whose
// command line contains substr.
func pidsMatching(substr string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), substr) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitFor polls cond every 100ms until it is true or timeout expires.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// System information for the report header

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// fsInfo describes the filesystem and device holding dir, e.g. "ext4 on /dev/vda".
func fsInfo(dir string) string {
	out, err := runCmd(context.Background(), 10*time.Second, "findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", dir)
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(out)
	if len(f) < 2 {
		return out
	}
	return f[0] + " on " + f[1]
}

var errCanceled = errors.New("interrupted")

// checkCtx returns errCanceled if ctx is done; cheap enough for inner loops.
func checkCtx(ctx context.Context) error {
	if ctx.Err() != nil {
		return errCanceled
	}
	return nil
}
