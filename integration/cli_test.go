package integration

// Tests of the geofs command line against the real binary: site identity,
// usage errors and exit codes, mounting (directly, through mount(8) and an
// fstab line), and the version, log, status and fsck commands mounted and
// unmounted.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// geofsExit runs the binary and returns its combined output and exit code.
func geofsExit(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := runGeofs(args...)
	if err == nil {
		return out, 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("geofs %s: %v", strings.Join(args, " "), err)
	}
	return out, ee.ExitCode()
}

// geofsStdout runs the binary and returns only its standard output, failing
// the test on a non-zero exit (JSON output must not be mixed with stderr).
func geofsStdout(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(geofsBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("geofs %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// versionJSON is one entry of 'geofs versions --json'.
type versionJSON struct {
	Version string    `json:"version"`
	Time    time.Time `json:"time"`
	Site    string    `json:"site"`
	Size    uint64    `json:"size"`
	Kind    string    `json:"kind"`
	Mode    string    `json:"mode"`
	Deleted bool      `json:"deleted"`
}

type logJSON struct {
	Seq     uint64 `json:"seq"`
	Site    string `json:"site"`
	Op      string `json:"op"`
	File    string `json:"file"`
	Version string `json:"version"`
}

type statusJSON struct {
	Site          string `json:"site"`
	Name          string `json:"name"`
	Store         string `json:"store"`
	Mountpoint    string `json:"mountpoint"`
	NamespaceRoot string `json:"namespace_root"`
	LastSeq       uint64 `json:"last_seq"`
}

func versionsJSON(t *testing.T, args ...string) []versionJSON {
	t.Helper()
	var vs []versionJSON
	out := geofsStdout(t, append([]string{"versions", "--json"}, args...)...)
	if err := json.Unmarshal(out, &vs); err != nil {
		t.Fatalf("versions --json: %v\n%s", err, out)
	}
	return vs
}

func logEntries(t *testing.T, target string) []logJSON {
	t.Helper()
	out := geofsStdout(t, "log", "--json", target)
	var es []logJSON
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var e logJSON
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("log --json: %v\n%s", err, out)
		}
		es = append(es, e)
	}
	return es
}

func siteStatus(t *testing.T, target string) statusJSON {
	t.Helper()
	out := geofsStdout(t, "status", "--json", target)
	var st statusJSON
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestCLIInitAndID(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	out := strings.TrimSpace(string(geofsStdout(t, "init", "--name", "x", store)))
	if !hexID.MatchString(out) {
		t.Fatalf("init printed %q, want a 32-hex site id", out)
	}
	if id := strings.TrimSpace(string(geofsStdout(t, "id", store))); id != out {
		t.Fatalf("id printed %q, init printed %q", id, out)
	}

	// A second site gets a different id.
	other := strings.TrimSpace(string(geofsStdout(t, "init", filepath.Join(dir, "other"))))
	if other == out {
		t.Fatalf("two inits gave the same site id %s", out)
	}

	// Init into a non-empty directory (the store itself, or any other).
	full := filepath.Join(dir, "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "keep.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{store, full} {
		msg, code := geofsExit(t, "init", target)
		if code != 1 {
			t.Errorf("init %s (not empty): exit %d, want 1\n%s", target, code, msg)
		}
		checkFailureMessage(t, msg, "not empty")
	}
	if b, err := os.ReadFile(filepath.Join(full, "keep.txt")); err != nil || string(b) != "mine" {
		t.Errorf("failed init touched existing file: %q %v", b, err)
	}
	if id := strings.TrimSpace(string(geofsStdout(t, "id", store))); id != out {
		t.Errorf("after refused init, id is %q, want %q", id, out)
	}
}

// checkFailureMessage checks a failure's output is one "geofs: ..." line
// (docs/CLI.md, exit code 1) containing want.
func checkFailureMessage(t *testing.T, out, want string) {
	t.Helper()
	if lines := strings.Split(strings.TrimRight(out, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "geofs: ") {
		t.Errorf("want one 'geofs: ' line, got:\n%s", out)
	}
	if !strings.Contains(out, want) {
		t.Errorf("message does not mention %q:\n%s", want, out)
	}
}

// checkUsageMessage checks a usage error's output: one "geofs: ..." line
// naming the problem (optionally followed by a pointer to --help), and no
// dump of the help text.
func checkUsageMessage(t *testing.T, out, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	var msgs []string
	for _, l := range lines {
		if strings.HasPrefix(l, "geofs: ") {
			msgs = append(msgs, l)
		}
	}
	if len(msgs) != 1 {
		t.Errorf("want exactly one 'geofs: ' message line, got output:\n%s", out)
		return
	}
	if !strings.Contains(msgs[0], want) {
		t.Errorf("message %q does not mention %q", msgs[0], want)
	}
	if len(lines) > 2 || strings.Contains(out, "USAGE:") {
		t.Errorf("usage error dumps more than a message (%d lines):\n%s", len(lines), out)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	s := newSite(t) // a real store, so only the usage is wrong
	cases := []struct {
		name string
		args []string
		want string // in the message
	}{
		{"unknown flag", []string{"mount", "--bogus", "a", "b"}, "bogus"},
		{"unknown flag on fsck", []string{"fsck", "--frob", s.store}, "frob"},
		{"unknown command", []string{"frobnicate"}, "frobnicate"},
		{"unknown command with args", []string{"frobnicate", "a", "b", "c"}, "frobnicate"},
		{"mount missing mountpoint", []string{"mount", s.store}, "STORE MOUNTPOINT"},
		{"mount extra argument", []string{"mount", s.store, s.mnt, "extra"}, "STORE MOUNTPOINT"},
		{"id without store", []string{"id"}, "STORE"},
		{"init two stores", []string{"init", "a", "b"}, "STORE"},
		{"versions without path", []string{"versions"}, "PATH"},
		{"fsck two args", []string{"fsck", s.store, s.store}, "STORE|MOUNTPOINT"},
		{"restore without --version", []string{"restore", "--store", s.store, "/x"}, "version"},
		{"unknown -o option", []string{"mount", "-o", "bogusopt", s.store, s.mnt}, "bogusopt"},
		{"unknown -o option among known", []string{"mount", "-o", "ro,nodev,frobopt", s.store, s.mnt}, "frobopt"},
		{"helper form unknown -o option", []string{s.store, s.mnt, "-o", "rw,zapopt"}, "zapopt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := geofsExit(t, c.args...)
			if code != 2 {
				t.Fatalf("geofs %s: exit %d, want 2\n%s", strings.Join(c.args, " "), code, out)
			}
			checkUsageMessage(t, out, c.want)
		})
	}
	if isMounted(s.mnt) {
		t.Fatal("a usage error left a mount behind")
	}
}

// A file named like urfave/cli's help command is a file: 'geofs versions
// h' in its directory lists its versions.
func TestCLIFilesNamedHelp(t *testing.T) {
	s := newSite(t)
	s.mount()
	for _, name := range []string{"h", "help"} {
		if err := os.WriteFile(s.path(name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(geofsBin, "versions", "--json", name)
		cmd.Dir = s.mnt
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"version"`) {
			t.Errorf("geofs versions --json %s: %v\n%s", name, err, out)
		}
		cmd = exec.Command(geofsBin, "cat", name)
		cmd.Dir = s.mnt
		if out, err := cmd.CombinedOutput(); err != nil || string(out) != name {
			t.Errorf("geofs cat %s: %v, %q", name, err, out)
		}
	}
}

func TestCLIMissingStore(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nonexistent")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"fsck /nonexistent", []string{"fsck", "/nonexistent"}},
		{"fsck", []string{"fsck", missing}},
		{"status", []string{"status", missing}},
		{"log", []string{"log", missing}},
		{"id", []string{"id", missing}},
		{"mount", []string{"mount", missing, t.TempDir()}},
		{"versions --store", []string{"versions", "--store", missing, "/a"}},
	} {
		args := c.args
		t.Run(c.name, func(t *testing.T) {
			out, code := geofsExit(t, args...)
			if code != 1 {
				t.Errorf("geofs %s: exit %d, want 1\n%s", strings.Join(args, " "), code, out)
			}
			checkFailureMessage(t, out, "geofs init")
		})
	}
}

func TestCLISecondMountRefused(t *testing.T) {
	s := newSite(t)
	s.mount()
	if err := os.WriteFile(s.path("a"), []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt2 := filepath.Join(filepath.Dir(s.mnt), "mnt2")
	if err := os.Mkdir(mnt2, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if isMounted(mnt2) {
			exec.Command("umount", "-l", mnt2).Run()
		}
	})
	out, code := geofsExit(t, "mount", s.store, mnt2)
	if code != 1 {
		t.Errorf("second mount: exit %d, want 1\n%s", code, out)
	}
	checkFailureMessage(t, out, "in use")
	if isMounted(mnt2) {
		t.Errorf("second mount left %s mounted", mnt2)
	}
	// The first mount still works.
	if b, err := os.ReadFile(s.path("a")); err != nil || string(b) != "first" {
		t.Errorf("first mount after refused second: %q %v", b, err)
	}
	if pids := s.pids(); len(pids) != 1 {
		t.Errorf("%d geofs processes serve the store, want 1: %v", len(pids), pids)
	}
	s.unmount()
	s.fsck()
}

// runCmd runs a command (mount(8), umount(8), a mount helper) with the
// test binary's directory first in PATH.
func runCmd(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(geofsBin)+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// checkHelperMount checks a mount made by mount(8) serves the store, then
// unmounts it with umount(8) and waits for the process to end.
func checkHelperMount(t *testing.T, s *site) {
	t.Helper()
	track(s.mnt)
	s.t.Cleanup(func() { s.unmountQuiet() })
	if !isMounted(s.mnt) {
		t.Fatalf("%s is not mounted", s.mnt)
	}
	if pids := s.pids(); len(pids) != 1 {
		t.Errorf("%d geofs processes serve the store, want 1", len(pids))
	}
	data := []byte("through the mount helper\n")
	if err := os.WriteFile(s.path("helper.txt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(s.path("helper.txt")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read back %q %v", b, err)
	}
	if st := siteStatus(t, s.mnt); st.Mountpoint != s.mnt {
		t.Errorf("status mountpoint %q, want %q", st.Mountpoint, s.mnt)
	}
	runCmd(t, "umount", s.mnt)
	if err := s.waitExit(); err != nil {
		t.Fatal(err)
	}
	if isMounted(s.mnt) {
		t.Fatal("still mounted after umount")
	}
	s.fsck()
	// The data was committed: remount and read it again.
	s.mount()
	if b, err := os.ReadFile(s.path("helper.txt")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("after remount: %q %v", b, err)
	}
	s.unmount()
	s.fsck()
}

// TestCLIMountHelper mounts through Debian's fuse3 mount helper, which runs
// 'geofs STORE MNT -o OPTS'.
//
// mount(8) (util-linux 2.38) drops PATH from the helper's environment, so
// for type fuse.geofs the helper's /bin/sh finds geofs only in the default
// /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin, never in
// the test's build directory. The cases therefore cover the chain in two
// ways without installing anything: mount(8) end to end with fuse's
// "PROGRAM#SOURCE" form (the helper runs PROGRAM by its path), and, for
// type fuse.geofs, mount.fuse run exactly as mount(8) runs it for an fstab
// line "STORE MNT fuse.geofs defaults,_netdev 0 0", with PATH set.
func TestCLIMountHelper(t *testing.T) {
	t.Run("mount -t fuse PROGRAM#STORE", func(t *testing.T) {
		s := newSite(t)
		runCmd(t, "mount", "-t", "fuse", geofsBin+"#"+s.store, s.mnt)
		checkHelperMount(t, s)
	})
	t.Run("mount -T fstab", func(t *testing.T) {
		s := newSite(t)
		fstab := filepath.Join(filepath.Dir(s.mnt), "fstab")
		line := geofsBin + "#" + s.store + " " + s.mnt + " fuse defaults,_netdev 0 0\n"
		if err := os.WriteFile(fstab, []byte("# test fstab\n"+line), 0o644); err != nil {
			t.Fatal(err)
		}
		runCmd(t, "mount", "-T", fstab, s.mnt)
		checkHelperMount(t, s)
	})
	t.Run("mount.fuse -t fuse.geofs", func(t *testing.T) {
		s := newSite(t)
		runCmd(t, "/sbin/mount.fuse", s.store, s.mnt, "-o", "rw,_netdev", "-t", "fuse.geofs")
		checkHelperMount(t, s)
	})
	t.Run("geofs STORE MNT -o fstab options", func(t *testing.T) {
		s := newSite(t)
		runCmd(t, geofsBin, s.store, s.mnt, "-o", "defaults,_netdev,nofail,x-systemd.automount,rw")
		checkHelperMount(t, s)
	})
}

// writeClose writes data to path with one open and one close.
func writeClose(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkNewestFirst checks versions are ordered newest first.
func checkNewestFirst(t *testing.T, vs []versionJSON) {
	t.Helper()
	for i := 1; i < len(vs); i++ {
		if vs[i].Time.After(vs[i-1].Time) {
			t.Errorf("versions not newest first: #%d %s is after #%d %s", i, vs[i].Time, i-1, vs[i-1].Time)
		}
	}
}

// findSize returns the one version of the given size.
func findSize(t *testing.T, vs []versionJSON, size int) versionJSON {
	t.Helper()
	var found []versionJSON
	for _, v := range vs {
		if v.Size == uint64(size) {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d versions of size %d, want 1: %+v", len(found), size, vs)
	}
	return found[0]
}

func TestCLIVersionsCatRestore(t *testing.T) {
	// Distinct sizes tell the versions apart.
	v1 := []byte("version one\n")
	v2 := []byte("version two, longer\n")
	v3 := []byte("version three, the longest of all\n")

	check := func(t *testing.T, s *site, mounted bool) {
		var loc []string // how the commands name the file
		if mounted {
			loc = []string{s.path("doc.txt")}
		} else {
			loc = []string{"--store", s.store, "/doc.txt"}
		}
		arg := func(extra ...string) []string { return append(extra, loc...) }

		vs := versionsJSON(t, loc...)
		if len(vs) < 3 {
			t.Fatalf("%d versions, want >= 3: %+v", len(vs), vs)
		}
		checkNewestFirst(t, vs)
		if vs[0].Size != uint64(len(v3)) {
			t.Errorf("newest version has size %d, want %d", vs[0].Size, len(v3))
		}
		for _, v := range vs {
			if len(v.Version) < 12 || v.Kind != "file" && v.Kind != "" {
				t.Errorf("odd version entry %+v", v)
			}
		}
		first := findSize(t, vs, len(v1))
		second := findSize(t, vs, len(v2))
		if !first.Time.Before(second.Time) {
			t.Errorf("v1 (%s) not older than v2 (%s)", first.Time, second.Time)
		}
		for _, c := range []struct {
			id   string
			want []byte
		}{{first.Version, v1}, {first.Version[:12], v1}, {second.Version, v2}, {vs[0].Version, v3}} {
			if got := geofsStdout(t, arg("cat", "--version", c.id)...); !bytes.Equal(got, c.want) {
				t.Errorf("cat --version %s: %q, want %q", c.id, got, c.want)
			}
		}
		if got := geofsStdout(t, arg("cat")...); !bytes.Equal(got, v3) {
			t.Errorf("cat (current): %q, want %q", got, v3)
		}
		if out, code := geofsExit(t, arg("cat", "--version", "ffffffffffff")...); code != 1 || !strings.Contains(out, "ffffffffffff") {
			t.Errorf("cat of an unknown version: exit %d, want 1 and a message naming it\n%s", code, out)
		}

		out := string(geofsStdout(t, arg("restore", "--version", first.Version[:12])...))
		if !strings.Contains(out, "restored") {
			t.Errorf("restore printed %q", out)
		}
		after := versionsJSON(t, loc...)
		if len(after) != len(vs)+1 {
			t.Fatalf("after restore %d versions, want %d", len(after), len(vs)+1)
		}
		checkNewestFirst(t, after)
		if after[0].Size != uint64(len(v1)) || after[0].Version == first.Version {
			t.Errorf("newest version after restore %+v, want a new version of size %d", after[0], len(v1))
		}
		for i, v := range vs { // nothing lost
			if after[i+1].Version != v.Version {
				t.Errorf("after restore, version #%d is %s, want %s", i+1, after[i+1].Version, v.Version)
			}
		}
		if got := geofsStdout(t, arg("cat", "--version", vs[0].Version)...); !bytes.Equal(got, v3) {
			t.Errorf("replaced version lost: cat --version %s gives %q", vs[0].Version, got)
		}
		if got := geofsStdout(t, arg("cat")...); !bytes.Equal(got, v1) {
			t.Errorf("cat after restore: %q, want %q", got, v1)
		}
	}

	t.Run("mounted", func(t *testing.T) {
		s := newSite(t)
		s.mount()
		p := s.path("doc.txt")
		for _, v := range [][]byte{v1, v2, v3} {
			writeClose(t, p, v)
		}
		// The kernel has the file's v3 pages and attributes cached, and a
		// descriptor stays open across the restore.
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, v3) {
			t.Fatalf("before restore: %q %v", b, err)
		}
		held, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		check(t, s, true)
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, v1) {
			t.Errorf("read through the mount after restore (another descriptor open): %q %v, want %q", b, err, v1)
		}
		held.Close()
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, v1) {
			t.Errorf("read through the mount after restore: %q %v, want %q", b, err, v1)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() != int64(len(v1)) {
			t.Errorf("stat after restore: %v %v, want size %d", fi, err, len(v1))
		}
		s.unmount()
		s.fsck()
		s.mount()
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, v1) {
			t.Errorf("after remount: %q %v, want %q", b, err, v1)
		}
		s.unmount()
		s.fsck()
	})

	t.Run("unmounted", func(t *testing.T) {
		s := newSite(t)
		s.mount()
		for _, v := range [][]byte{v1, v2, v3} {
			writeClose(t, s.path("doc.txt"), v)
		}
		s.unmount()
		check(t, s, false)
		s.fsck()
		s.mount()
		if b, err := os.ReadFile(s.path("doc.txt")); err != nil || !bytes.Equal(b, v1) {
			t.Errorf("read through the mount after offline restore: %q %v, want %q", b, err, v1)
		}
		s.unmount()
		s.fsck()
	})
}

func TestCLILogAndStatus(t *testing.T) {
	s := newSite(t)
	id := strings.TrimSpace(s.geofs("id", s.store))
	s.mount()

	st0 := siteStatus(t, s.mnt)
	if st0.Site != id || st0.NamespaceRoot == "" || st0.Mountpoint != s.mnt {
		t.Fatalf("status: %+v, want site %s, a namespace root and mountpoint %s", st0, id, s.mnt)
	}
	if st := siteStatus(t, s.store); st != st0 {
		t.Errorf("status of store %+v differs from status of mountpoint %+v", st, st0)
	}

	if err := os.Mkdir(s.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeClose(t, s.path("d/f"), []byte("hello"))
	st1 := siteStatus(t, s.mnt)
	if st1.NamespaceRoot == st0.NamespaceRoot {
		t.Errorf("namespace root unchanged after mkdir and write: %s", st1.NamespaceRoot)
	}
	if st1.LastSeq <= st0.LastSeq {
		t.Errorf("last seq %d after changes, was %d", st1.LastSeq, st0.LastSeq)
	}
	// A content-only write changes the root too.
	writeClose(t, s.path("d/f"), []byte("world"))
	st2 := siteStatus(t, s.mnt)
	if st2.NamespaceRoot == st1.NamespaceRoot {
		t.Errorf("namespace root unchanged after rewriting a file: %s", st2.NamespaceRoot)
	}
	if err := os.Rename(s.path("d/f"), s.path("d/g")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(s.path("d/g"), s.path("h")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.path("h")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d/g", s.path("sym")); err != nil {
		t.Fatal(err)
	}

	checkLog := func(t *testing.T, es []logJSON, lastSeq uint64) {
		t.Helper()
		if len(es) == 0 {
			t.Fatal("empty log")
		}
		ops := map[string]bool{}
		for i, e := range es {
			ops[e.Op] = true
			if i > 0 && e.Seq <= es[i-1].Seq {
				t.Errorf("log seq not increasing: %d after %d", e.Seq, es[i-1].Seq)
			}
			if e.Site != id || e.File == "" || e.Version == "" {
				t.Errorf("log entry %+v: want site %s, a file and a version", e, id)
			}
		}
		for _, op := range []string{"mkdir", "create", "write", "rename", "link", "unlink", "symlink"} {
			if !ops[op] {
				t.Errorf("log has no %q entry (ops: %v)", op, ops)
			}
		}
		if last := es[len(es)-1].Seq; last != lastSeq {
			t.Errorf("last log seq %d, status says %d", last, lastSeq)
		}
	}
	stMounted := siteStatus(t, s.mnt)
	mounted := logEntries(t, s.store)
	checkLog(t, mounted, stMounted.LastSeq)
	if len(mounted) > 3 {
		from := mounted[len(mounted)-3].Seq
		out := geofsStdout(t, "log", "--json", "--from", fmt.Sprint(from), s.mnt)
		if n := bytes.Count(out, []byte("\n")); n != 3 {
			t.Errorf("log --from %d: %d entries, want 3\n%s", from, n, out)
		}
	}
	if viaMnt := logEntries(t, s.mnt); len(viaMnt) != len(mounted) {
		t.Errorf("log of mountpoint has %d entries, log of store %d", len(viaMnt), len(mounted))
	}
	s.unmount()

	unmounted := logEntries(t, s.store)
	stOff := siteStatus(t, s.store)
	checkLog(t, unmounted, stOff.LastSeq)
	if len(unmounted) != len(mounted) {
		t.Errorf("unmounted log has %d entries, mounted log had %d", len(unmounted), len(mounted))
	}
	for i := range min(len(unmounted), len(mounted)) {
		if unmounted[i] != mounted[i] {
			t.Errorf("log entry %d: mounted %+v, unmounted %+v", i, mounted[i], unmounted[i])
		}
	}
	if stOff.NamespaceRoot != stMounted.NamespaceRoot || stOff.Site != id || stOff.Mountpoint != "" {
		t.Errorf("unmounted status %+v, mounted was %+v", stOff, stMounted)
	}
	s.fsck()
}

func TestCLIFsckClean(t *testing.T) {
	s := newSite(t)
	s.fsck() // fresh store
	s.mount()
	if err := os.MkdirAll(s.path("a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"a/x", "a/b/y", "z"} {
		writeClose(t, s.path(name), bytes.Repeat([]byte{byte('a' + i)}, 100000*(i+1)))
	}
	for _, target := range []string{s.mnt, s.store} {
		out, code := geofsExit(t, "fsck", target)
		if code != 0 || !strings.Contains(out, "clean") {
			t.Errorf("fsck %s while mounted: exit %d\n%s", target, code, out)
		}
	}
	var rep struct {
		Stats    map[string]any `json:"stats"`
		Problems []string       `json:"problems"`
	}
	out := geofsStdout(t, "fsck", "--json", s.mnt)
	if err := json.Unmarshal(out, &rep); err != nil || rep.Problems == nil || len(rep.Problems) != 0 {
		t.Errorf("fsck --json while mounted: %v problems=%v\n%s", err, rep.Problems, out)
	}
	s.unmount()
	out2, code := geofsExit(t, "fsck", s.store)
	if code != 0 || !strings.Contains(out2, "clean") {
		t.Errorf("fsck unmounted: exit %d\n%s", code, out2)
	}
	out = geofsStdout(t, "fsck", "--json", s.store)
	if err := json.Unmarshal(out, &rep); err != nil || len(rep.Problems) != 0 {
		t.Errorf("fsck --json unmounted: %v %v\n%s", err, rep.Problems, out)
	}
}

// Closing a reader commits nothing of what another handle has buffered: a
// file read while it is written (a log being tailed) gets no version per
// read, and the writer's close makes the one version.
func TestReaderCloseCommitsNothing(t *testing.T) {
	s := newSite(t)
	s.mount()
	want := []byte("first line\n")
	if err := os.WriteFile(s.path("log"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	before := len(versionsJSON(t, s.path("log")))
	w, err := os.OpenFile(s.path("log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		line := fmt.Sprintf("line %d\n", i)
		if _, err := w.WriteString(line); err != nil {
			t.Fatal(err)
		}
		want = append(want, line...)
		wantContent(t, s.path("log"), want) // open, read, close
	}
	// (Not counted while w is open: running geofs would close a copy of
	// w in the child, and that close commits.)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(versionsJSON(t, s.path("log"))); n != before+1 {
		t.Errorf("20 reads while writing, then the writer's close, made %d versions, want 1", n-before)
	}
	s.remount()
	wantContent(t, s.path("log"), want)
	s.finish()
}

// Overwriting a file (open with O_TRUNC, write, close) makes one version,
// with no empty one in between that a peer could see.
func TestOverwriteMakesOneVersion(t *testing.T) {
	s := newSite(t)
	s.mount()
	os.WriteFile(s.path("f"), []byte("one"), 0o644)
	before := strings.Count(s.geofs("versions", "--json", s.path("f")), `"version"`)
	os.WriteFile(s.path("f"), []byte("two"), 0o644)
	out := s.geofs("versions", "--json", s.path("f"))
	if n := strings.Count(out, `"version"`); n != before+1 {
		t.Fatalf("an overwrite made %d versions:\n%s", n-before, out)
	}
	// A shell closes a duplicate of the descriptor before writing.
	for _, cmd := range []string{"echo three > f", ": > f"} {
		before = strings.Count(out, `"version"`)
		if b, err := exec.Command("sh", "-c", "cd "+s.mnt+" && "+cmd).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", cmd, err, b)
		}
		var got []byte
		for range 100 { // the release that commits is asynchronous to close
			out = s.geofs("versions", "--json", s.path("f"))
			if strings.Count(out, `"version"`) > before {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n := strings.Count(out, `"version"`); n != before+1 {
			t.Fatalf("%q made %d versions:\n%s", cmd, n-before, out)
		}
		got, _ = os.ReadFile(s.path("f"))
		if want := map[string]string{"echo three > f": "three\n", ": > f": ""}[cmd]; string(got) != want {
			t.Fatalf("%q: f holds %q", cmd, got)
		}
	}
}

// A mount raises the kernel's read-ahead past FUSE's 128 KiB cap, so
// that cold sequential reads keep several requests in flight.
func TestMountReadAhead(t *testing.T) {
	s := newSite(t)
	s.mount()
	var st syscall.Stat_t
	if err := syscall.Stat(s.mnt, &st); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", st.Dev>>8&0xfff, st.Dev&0xff|st.Dev>>12&0xfff00)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "4096" {
		t.Fatalf("%s = %s, want 4096", path, got)
	}
}

// TestMountSpareProcs checks that the mount gives the Go runtime Ps beyond
// one per CPU for go-fuse's readers, and that GOMAXPROCS in the
// environment still wins (docs/DECISIONS.md, "A P for each FUSE reader").
func TestMountSpareProcs(t *testing.T) {
	mountedProcs := func(s *site) int {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(s.store, "geofs.log"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`msg=mounted .*gomaxprocs=(\d+)`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("no gomaxprocs in the mount's log:\n%s", b)
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	cpus := runtime.GOMAXPROCS(0) // the test runs with the runtime's default
	s := newSite(t)
	s.mount()
	if got, want := mountedProcs(s), cpus+min(max(cpus, 2), 16)+1; got != want {
		t.Errorf("GOMAXPROCS in the mount = %d, want %d (%d CPUs and go-fuse's readers)", got, want, cpus)
	}
	s.unmount()

	t.Setenv("GOMAXPROCS", "3")
	s2 := newSite(t)
	s2.mount()
	if got := mountedProcs(s2); got != 3 {
		t.Errorf("with GOMAXPROCS=3 in the environment the mount used %d", got)
	}
}

// TestMountRightAfterUnmount mounts a store again the moment umount
// returns, while the old mount process may still be flushing and closing
// it: the new mount waits for the store rather than failing.
func TestMountRightAfterUnmount(t *testing.T) {
	s := newSite(t)
	for i := range 5 {
		s.mount()
		name := fmt.Sprintf("f%d", i)
		if err := os.WriteFile(s.path(name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Unmount(s.mnt, 0); err != nil {
			t.Fatal(err)
		}
		// No wait for the process: a script's "umount; mount".
	}
	s.mount()
	for i := range 5 {
		name := fmt.Sprintf("f%d", i)
		if b, err := os.ReadFile(s.path(name)); err != nil || string(b) != name {
			t.Fatalf("%s after remounting: %q %v", name, b, err)
		}
	}
	s.unmount()
}

// Right after umount, the mount process may take more than 10 s to close a
// large store (11 s in a stress run, and fsck was refused): commands wait
// while the process the database names as its holder is alive.
func TestCLIWaitsForAProcessClosingTheStore(t *testing.T) {
	s := newSite(t)
	db := filepath.Join(s.store, "db")
	lock := filepath.Join(db, "LOCK")
	// A stand-in for a mount process that is closing: it holds the
	// database's lock, as Badger does, for 12 s.
	hold := exec.Command("flock", db, "sh", "-c", "echo $$ > "+lock+"; exec sleep 12")
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hold.Process.Kill(); hold.Wait() })
	eventually(t, "the lock held", func() bool {
		b, err := os.ReadFile(lock)
		return err == nil && len(b) > 1 && exec.Command("flock", "-n", db, "true").Run() != nil
	})
	start := time.Now()
	out, err := runGeofs("fsck", s.store)
	if err != nil {
		t.Fatalf("fsck while a live process held the store for 12 s: %v after %v\n%s", err, time.Since(start).Round(time.Second), out)
	}
	if !strings.Contains(out, "waiting for process") {
		t.Errorf("fsck did not say what it waited for:\n%s", out)
	}
}

// Every command's help shows how it is used: at least one example line
// that runs it, and exit status 0.
func TestCLIHelpShowsExamples(t *testing.T) {
	cmds := [][]string{{"init"}, {"id"}, {"mount"}, {"versions"}, {"cat"}, {"restore"}, {"log"},
		{"fsck"}, {"status"}, {"serve"}, {"link"}, {"link", "add"}, {"link", "list"},
		{"link", "remove"}, {"config"}, {"pin"}, {"unpin"}}
	for _, c := range cmds {
		help := string(geofsStdout(t, append(c, "--help")...))
		example := "geofs " + strings.Join(c, " ") + " "
		if !strings.Contains(help, example) {
			t.Errorf("geofs %s --help has no example (no line with %q):\n%s", strings.Join(c, " "), example, help)
		}
	}
	top := string(geofsStdout(t, "--help"))
	for _, c := range cmds {
		if len(c) == 1 && !strings.Contains(top, "\n   "+c[0]+" ") {
			t.Errorf("geofs --help does not list %s", c[0])
		}
	}
}
