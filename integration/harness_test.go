// Package integration runs the real geofs binary on real FUSE mounts.
//
// Tests here need root and /dev/fuse. With CI=true they fail rather than
// skip when FUSE is unavailable, and every test unmounts what it mounted;
// TestMain fails the run if a geofs mount is left behind.
package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var geofsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "geofs-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	geofsBin = filepath.Join(dir, "geofs")
	args := []string{"build", "-o", geofsBin}
	if os.Getenv("GEOFS_RACE") != "" {
		args = append(args, "-race") // make test-race: the mount runs with the race detector
	}
	build := exec.Command("go", append(args, "../cmd/geofs")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build geofs:", err)
		os.Exit(1)
	}
	// Recycled write buffers are poisoned, so that a use after recycling
	// shows as wrong bytes in the tests that check content.
	os.Setenv("GEOFS_POISON_ARENAS", "1")
	raceLog := filepath.Join(dir, "race")
	if os.Getenv("GEOFS_RACE") != "" {
		os.Setenv("GORACE", "log_path="+raceLog) // inherited by every geofs process
	}
	code := m.Run()
	if reports, _ := filepath.Glob(raceLog + ".*"); len(reports) > 0 {
		for _, r := range reports {
			b, _ := os.ReadFile(r)
			fmt.Fprintf(os.Stderr, "FAIL: data race in a geofs process (%s):\n%s\n", r, b)
		}
		code = 1
	}
	os.RemoveAll(dir)
	if left := leftoverMounts(); len(left) > 0 {
		fmt.Fprintln(os.Stderr, "FAIL: geofs mounts left behind:", left)
		for _, mp := range left {
			syscall.Unmount(mp, syscall.MNT_DETACH)
		}
		code = 1
	}
	os.Exit(code)
}

// requireFUSE skips without FUSE, or fails under CI=true.
func requireFUSE(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("FUSE tests cannot run (%s), and CI=true forbids skipping", why)
	}
	t.Skip(why)
}

// ours lists the mountpoints this test binary mounted, so that the check
// for leftovers never touches another run's mounts.
var (
	oursMu sync.Mutex
	ours   = map[string]bool{}
)

func track(mnt string) {
	oursMu.Lock()
	defer oursMu.Unlock()
	ours[mnt] = true
}

func leftoverMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	oursMu.Lock()
	defer oursMu.Unlock()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, x := range fields {
			if x == "-" && i+1 < len(fields) && fields[i+1] == "fuse.geofs" && ours[fields[4]] {
				out = append(out, fields[4])
			}
		}
	}
	return out
}

// site is a store made by 'geofs init' and, while mounted, its mount.
type site struct {
	t     *testing.T
	store string
	mnt   string
}

// newSite inits a store in a fresh temporary directory.
func newSite(t *testing.T) *site { return newSiteWith(t, "--name", "it") }

// newSiteWith inits a store with the given 'geofs init' options.
func newSiteWith(t *testing.T, initArgs ...string) *site {
	t.Helper()
	requireFUSE(t)
	dir, err := os.MkdirTemp("", "geofs-it")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &site{t: t, store: filepath.Join(dir, "store"), mnt: filepath.Join(dir, "mnt")}
	if err := os.Mkdir(s.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	s.geofs(append(append([]string{"init"}, initArgs...), s.store)...)
	return s
}

// geofs runs the binary and fails the test on a non-zero exit.
func (s *site) geofs(args ...string) string {
	s.t.Helper()
	out, err := runGeofs(args...)
	if err != nil {
		s.t.Fatalf("geofs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func runGeofs(args ...string) (string, error) {
	cmd := exec.Command(geofsBin, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// mount mounts the site (daemonized; returns when ready) and arranges an
// unmount at the end of the test. The cleanup also ends a process that is
// still shutting down, so that none outlives the test's directory (a
// Badger that loses its directory while closing retries forever).
func (s *site) mount(opts ...string) {
	s.t.Helper()
	track(s.mnt)
	s.geofs(append(append([]string{"mount"}, opts...), s.store, s.mnt)...)
	s.t.Cleanup(func() {
		if s.unmountQuiet() != nil || s.waitExit() != nil {
			for _, pid := range s.pids() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

// unmount unmounts and waits for the process to finish cleanly.
func (s *site) unmount() {
	s.t.Helper()
	if err := s.unmountQuiet(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *site) unmountQuiet() error {
	if !isMounted(s.mnt) {
		return nil
	}
	var err error
	for range 50 {
		if err = syscall.Unmount(s.mnt, 0); err == nil || err == syscall.EINVAL {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil && err != syscall.EINVAL {
		syscall.Unmount(s.mnt, syscall.MNT_DETACH)
		return fmt.Errorf("unmount %s: %w", s.mnt, err)
	}
	return s.waitExit()
}

// waitExit waits until the site's process has let go of the store.
func (s *site) waitExit() error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if pids := s.pids(); len(pids) == 0 {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("geofs process for %s still running after unmount", s.store)
}

// pids lists geofs processes serving this store.
func (s *site) pids() []int {
	out, _ := exec.Command("pgrep", "-f", "mount -f.* "+s.store+" ").Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		var p int
		fmt.Sscan(f, &p)
		pids = append(pids, p)
	}
	return pids
}

func isMounted(mnt string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == mnt {
			return true
		}
	}
	return false
}

// fsck runs geofs fsck and fails the test unless the store is clean.
func (s *site) fsck() {
	s.t.Helper()
	out := s.geofs("fsck", s.store)
	if !strings.Contains(out, "clean") {
		s.t.Fatalf("fsck: %s", out)
	}
}

func (s *site) path(name string) string { return filepath.Join(s.mnt, name) }
