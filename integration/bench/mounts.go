package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// target is one filesystem under test: the geofs mount or the reference.
type target interface {
	// Label is "ref" or "geofs".
	Label() string
	// Mountpoint is where the filesystem is mounted.
	Mountpoint() string
	// Store is the directory on the underlying disk holding its data.
	Store() string
	// Mount mounts the filesystem and returns once it is usable.
	Mount(ctx context.Context) error
	// Unmount unmounts it and waits until the daemon has exited. It is a
	// no-op if not mounted.
	Unmount(ctx context.Context) error
	// ForceUnmount is the last resort on abort: lazy unmount, signal the
	// daemon, don't wait long.
	ForceUnmount()
}

const (
	mountTimeout = 60 * time.Second
	exitTimeout  = 30 * time.Second
)

// ---------------------------------------------------------------------------
// /proc/self/mountinfo

// mountPoints returns all mount points listed in /proc/self/mountinfo.
func mountPoints() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 {
			mps = append(mps, unescapeMountinfo(fields[4]))
		}
	}
	return mps
}

// unescapeMountinfo decodes the \ooo octal escapes used for space, tab,
// newline and backslash.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isMounted(mnt string) bool {
	for _, mp := range mountPoints() {
		if mp == mnt {
			return true
		}
	}
	return false
}

// mountsUnder returns the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	var res []string
	for _, mp := range mountPoints() {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			res = append([]string{mp}, res...)
		}
	}
	return res
}

// unmountDir runs umount(8) on mnt, retrying while the mount is busy.
func unmountDir(ctx context.Context, mnt string) error {
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		if !isMounted(mnt) {
			return nil
		}
		_, err := runCmd(context.Background(), 30*time.Second, "umount", mnt)
		if err == nil {
			if waitFor(5*time.Second, func() bool { return !isMounted(mnt) }) {
				return nil
			}
			err = fmt.Errorf("umount %s succeeded but it is still in mountinfo", mnt)
		}
		lastErr = err
		time.Sleep(250 * time.Millisecond)
	}
	return lastErr
}

// lazyUnmount detaches mnt even if busy (MNT_DETACH).
func lazyUnmount(mnt string) {
	if isMounted(mnt) {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			log.Printf("lazy unmount %s: %v", mnt, err)
		}
	}
}

// ---------------------------------------------------------------------------
// Reference: loopref helper subprocess

// refStats mirrors loopref.Stats.
type refStats struct {
	Opens      int64 `json:"opens"`
	Reads      int64 `json:"reads"`
	ReadBytes  int64 `json:"read_bytes"`
	Writes     int64 `json:"writes"`
	WriteBytes int64 `json:"write_bytes"`
}

func (s *refStats) add(o refStats) {
	s.Opens += o.Opens
	s.Reads += o.Reads
	s.ReadBytes += o.ReadBytes
	s.Writes += o.Writes
	s.WriteBytes += o.WriteBytes
}

type refTarget struct {
	bin, backing, mnt string
	statsPath         string
	logPath           string
	defaultPerms      bool // mount with default_permissions (-ref-perm)

	cmd    *exec.Cmd
	exited chan struct{}

	// last holds the counters of the last mount session; total of all.
	last, total refStats
}

func newRefTarget(bin, root, logDir string) *refTarget {
	return &refTarget{
		bin:       bin,
		backing:   filepath.Join(root, "backing"),
		mnt:       filepath.Join(root, "mnt"),
		statsPath: filepath.Join(root, "loopref-stats.json"),
		logPath:   filepath.Join(logDir, "loopref.log"),
	}
}

func (r *refTarget) Label() string      { return "ref" }
func (r *refTarget) Mountpoint() string { return r.mnt }
func (r *refTarget) Store() string      { return r.backing }

func (r *refTarget) Mount(ctx context.Context) error {
	if r.cmd != nil {
		return errors.New("ref: already mounted")
	}
	for _, d := range []string{r.backing, r.mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	os.Remove(r.statsPath)

	args := []string{"-stats", r.statsPath}
	if r.defaultPerms {
		args = append(args, "-default-permissions")
	}
	cmd := exec.Command(r.bin, append(args, r.backing, r.mnt)...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	// Own process group: a Ctrl-C on the terminal must not kill the daemon
	// before we have unmounted. Pdeathsig: if we die, it unmounts itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", r.bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line)
	}()
	select {
	case line := <-ready:
		if line != "ready" {
			<-exited
			return fmt.Errorf("loopref did not mount %s (see %s)", r.mnt, r.logPath)
		}
	case <-time.After(mountTimeout):
		cmd.Process.Kill()
		<-exited
		lazyUnmount(r.mnt)
		return fmt.Errorf("loopref: mount %s timed out", r.mnt)
	}
	r.cmd, r.exited = cmd, exited
	if !waitFor(5*time.Second, func() bool { return isMounted(r.mnt) }) {
		return fmt.Errorf("loopref reported ready but %s is not in mountinfo", r.mnt)
	}
	return nil
}

func (r *refTarget) Unmount(ctx context.Context) error {
	if r.cmd == nil {
		return nil
	}
	if err := unmountDir(ctx, r.mnt); err != nil {
		return fmt.Errorf("ref: %w", err)
	}
	select {
	case <-r.exited:
	case <-time.After(exitTimeout):
		r.cmd.Process.Kill()
		<-r.exited
		r.cmd = nil
		return fmt.Errorf("ref: loopref did not exit within %v after unmount; killed", exitTimeout)
	}
	r.cmd = nil
	b, err := os.ReadFile(r.statsPath)
	if err != nil {
		return fmt.Errorf("ref: loopref wrote no stats: %w", err)
	}
	r.last = refStats{}
	if err := json.Unmarshal(b, &r.last); err != nil {
		return fmt.Errorf("ref: bad stats: %w", err)
	}
	r.total.add(r.last)
	return nil
}

func (r *refTarget) ForceUnmount() {
	lazyUnmount(r.mnt)
	if r.cmd != nil {
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
			r.cmd.Process.Kill()
		}
	}
}

// ---------------------------------------------------------------------------
// geofs: the binary under test

type geofsTarget struct {
	bin, store, mnt string
	logPath         string
	siteID          string
	mounted         bool
}

func newGeofsTarget(bin, root, logDir string) *geofsTarget {
	return &geofsTarget{
		bin:     bin,
		store:   filepath.Join(root, "store"),
		mnt:     filepath.Join(root, "mnt"),
		logPath: filepath.Join(logDir, "geofs.log"),
	}
}

func (g *geofsTarget) Label() string      { return "geofs" }
func (g *geofsTarget) Mountpoint() string { return g.mnt }
func (g *geofsTarget) Store() string      { return g.store }

// Init creates a fresh site in the store directory.
func (g *geofsTarget) Init(ctx context.Context) error {
	out, err := runCmd(ctx, mountTimeout, g.bin, "init", g.store)
	if err != nil {
		return err
	}
	lines := strings.Split(out, "\n")
	g.siteID = strings.TrimSpace(lines[len(lines)-1])
	return nil
}

func (g *geofsTarget) Mount(ctx context.Context) error {
	if g.mounted {
		return errors.New("geofs: already mounted")
	}
	if err := os.MkdirAll(g.mnt, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s: %s mount %s %s\n", time.Now().Format(time.RFC3339), g.bin, g.store, g.mnt)

	mctx, cancel := context.WithTimeout(ctx, mountTimeout)
	defer cancel()
	cmd := exec.CommandContext(mctx, g.bin, "mount", g.store, g.mnt)
	// Files, not pipes: the daemonized child may keep them open, and Wait
	// must not wait for it.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		// It may have mounted anyway; make sure we clean that up.
		g.mounted = isMounted(g.mnt)
		return fmt.Errorf("geofs mount: %w (see %s)", err, g.logPath)
	}
	g.mounted = true
	if !waitFor(15*time.Second, func() bool { return isMounted(g.mnt) }) {
		return fmt.Errorf("geofs mount returned but %s is not in mountinfo", g.mnt)
	}
	return nil
}

func (g *geofsTarget) Unmount(ctx context.Context) error {
	if !g.mounted && !isMounted(g.mnt) {
		return nil
	}
	if err := unmountDir(ctx, g.mnt); err != nil {
		return fmt.Errorf("geofs: %w", err)
	}
	g.mounted = false
	if !waitFor(exitTimeout, g.daemonGone) {
		return fmt.Errorf("geofs: daemon still running %v s after unmount (pids %v, store locked: %v)",
			exitTimeout.Seconds(), pidsMatching(g.store), g.storeLocked())
	}
	return nil
}

func (g *geofsTarget) ForceUnmount() {
	lazyUnmount(g.mnt)
	for _, pid := range pidsMatching(g.store) {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	waitFor(5*time.Second, g.daemonGone)
	g.mounted = false
}

// daemonGone reports whether no process mentions the store on its command
// line and no LOCK file in the store is flocked.
func (g *geofsTarget) daemonGone() bool {
	return len(pidsMatching(g.store)) == 0 && !g.storeLocked()
}

// storeLocked reports whether a file named LOCK (Badger's directory lock)
// within three levels of the store is flocked by someone.
func (g *geofsTarget) storeLocked() bool {
	locked := false
	filepath.WalkDir(g.store, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && strings.Count(strings.TrimPrefix(p, g.store), "/") > 3 {
			return filepath.SkipDir
		}
		if d.Name() != "LOCK" || !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			locked = true
			return filepath.SkipAll
		}
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return nil
	})
	return locked
}

// remountCold unmounts t, drops all caches, and mounts it again, so that
// neither the kernel nor the daemon has anything cached.
func remountCold(ctx context.Context, t target) error {
	if err := t.Unmount(ctx); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	return t.Mount(ctx)
}
