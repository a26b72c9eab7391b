package integration

// POSIX semantics checked through the mounted binary: permissions as
// another user, setgid directories, link counts, rename flavours, deep
// paths, sparse files past 4 GiB, shared mmap, open flags, extended
// attributes, times and ownership, fallocate and statfs, and big
// directories. Each test ends by unmounting and checking the store.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	nobodyUID = 65534
	nobodyGID = 65534
)

// finish unmounts the site and checks its store.
func (s *site) finish() {
	s.t.Helper()
	s.unmount()
	s.fsck()
}

// remount unmounts, checks the store and mounts again, so that what is
// read next comes from the store rather than the kernel's or the process's
// caches.
func (s *site) remount() {
	s.t.Helper()
	s.finish()
	s.mount()
}

func lstat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func wantContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read %s: %v", path, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s holds %d bytes %.40q, want %d bytes %.40q", path, len(got), got, len(want), want)
	}
}

// wantErrno checks err is the given errno.
func wantErrno(t *testing.T, err error, want syscall.Errno, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v (%s)", what, err, want, unix.ErrnoName(want))
	}
}

func wantMissing(t *testing.T, path string) {
	t.Helper()
	var st unix.Stat_t
	wantErrno(t, unix.Lstat(path, &st), unix.ENOENT, "lstat "+path)
}

// asNobody runs a shell script as uid/gid 65534 and returns its output.
func asNobody(t *testing.T, script string) (string, error) {
	t.Helper()
	out, err := nobodyCommand("sh", "-c", script).CombinedOutput()
	return string(out), err
}

// nobodyCommand is a command to run as uid/gid 65534, from /.
func nobodyCommand(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyGID}}
	return cmd
}

// openTestDir makes the site's temporary directory traversable by other
// users (os.MkdirTemp makes it 0700), so they can reach the mount.
func openTestDir(t *testing.T, s *site) {
	t.Helper()
	if err := os.Chmod(filepath.Dir(s.mnt), 0o755); err != nil {
		t.Fatal(err)
	}
}

func shQuote(path string) string { return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'" }

func TestSemanticsPermissions(t *testing.T) {
	s := newSite(t)
	openTestDir(t, s)
	s.mount()
	if st := lstat(t, s.mnt); st.Mode&0o005 != 0o005 {
		t.Fatalf("mount root mode %o: others cannot list it", st.Mode&0o7777)
	}
	pub, secret, public := s.path("pub"), s.path("secret"), s.path("public")
	mustMkdir(t, pub)
	if err := os.Chmod(pub, 0o777); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, secret, []byte("for root only\n"))
	mustWrite(t, public, []byte("for everyone\n"))
	if err := os.Chmod(secret, 0o600); err != nil {
		t.Fatal(err)
	}

	denied := []struct{ name, script string }{
		{"read 0600 file", "cat " + shQuote(secret)},
		{"write 0600 file", "echo x >> " + shQuote(secret)},
		{"write 0644 file", "echo x >> " + shQuote(public)},
		{"create in 0755 root dir", "touch " + shQuote(s.path("mine"))},
		{"unlink in 0755 root dir", "rm -f " + shQuote(public)},
		{"chmod another's file", "chmod 777 " + shQuote(public)},
	}
	for _, c := range denied {
		out, err := asNobody(t, c.script)
		if err == nil {
			t.Errorf("as nobody, %s succeeded", c.name)
		} else if !strings.Contains(out, "Permission denied") && !strings.Contains(out, "Operation not permitted") {
			t.Errorf("as nobody, %s: %v, output %q, want a permission error", c.name, err, out)
		}
	}
	wantContent(t, secret, []byte("for root only\n"))
	wantContent(t, public, []byte("for everyone\n"))
	if st := lstat(t, public); st.Mode&0o7777 != 0o644 {
		t.Errorf("public mode %o after refused chmod", st.Mode&0o7777)
	}

	if out, err := asNobody(t, "cat "+shQuote(public)); err != nil || out != "for everyone\n" {
		t.Errorf("as nobody, read 0644 file: %v %q", err, out)
	}
	mine := filepath.Join(pub, "mine")
	if out, err := asNobody(t, "echo hi > "+shQuote(mine)); err != nil {
		t.Fatalf("as nobody, create in 0777 dir: %v %s", err, out)
	}
	if st := lstat(t, mine); st.Uid != nobodyUID || st.Gid != nobodyGID {
		t.Errorf("file created by nobody is owned by %d:%d, want %d:%d", st.Uid, st.Gid, nobodyUID, nobodyGID)
	}
	wantContent(t, mine, []byte("hi\n"))

	// The caller's umask applies, not the daemon's.
	for _, c := range []struct {
		umask            string
		fileMode, dirMod uint32
	}{
		{"027", 0o640, 0o750},
		{"000", 0o666, 0o777},
		{"077", 0o600, 0o700},
	} {
		f := filepath.Join(pub, "f"+c.umask)
		d := filepath.Join(pub, "d"+c.umask)
		script := fmt.Sprintf("umask %s && touch %s && mkdir %s", c.umask, shQuote(f), shQuote(d))
		if out, err := asNobody(t, script); err != nil {
			t.Errorf("umask %s: %v %s", c.umask, err, out)
			continue
		}
		if st := lstat(t, f); st.Mode&0o7777 != c.fileMode || st.Uid != nobodyUID {
			t.Errorf("umask %s: file mode %o uid %d, want %o uid %d", c.umask, st.Mode&0o7777, st.Uid, c.fileMode, nobodyUID)
		}
		if st := lstat(t, d); st.Mode&0o7777 != c.dirMod || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Errorf("umask %s: dir mode %o, want %o", c.umask, st.Mode&0o7777, c.dirMod)
		}
	}

	s.remount()
	if st := lstat(t, mine); st.Uid != nobodyUID || st.Gid != nobodyGID {
		t.Errorf("after remount, owner %d:%d", st.Uid, st.Gid)
	}
	if st := lstat(t, filepath.Join(pub, "f027")); st.Mode&0o7777 != 0o640 {
		t.Errorf("after remount, mode %o", st.Mode&0o7777)
	}
	if _, err := asNobody(t, "cat "+shQuote(secret)); err == nil {
		t.Error("after remount, nobody reads the 0600 file")
	}
	s.finish()
}

func TestSemanticsSetgidDir(t *testing.T) {
	s := newSite(t)
	openTestDir(t, s)
	s.mount()
	sg := s.path("sg")
	mustMkdir(t, sg)
	if err := os.Chown(sg, 0, 100); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(sg, 0o2775); err != nil { // os.Chmod would drop the raw setgid bit
		t.Fatal(err)
	}
	if st := lstat(t, sg); st.Mode&0o7777 != 0o2775 || st.Gid != 100 {
		t.Fatalf("sg: mode %o gid %d, want 2775 gid 100", st.Mode&0o7777, st.Gid)
	}
	// One that others may write to, for a file made by nobody (not in group 100).
	open := s.path("sg-open")
	mustMkdir(t, open)
	if err := os.Chown(open, 0, 100); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(open, 0o2777); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(sg, "f")
	mustWrite(t, f, []byte("x"))
	sub := filepath.Join(sg, "sub")
	mustMkdir(t, sub)
	deeper := filepath.Join(sub, "deeper")
	mustMkdir(t, deeper)
	byNobody := filepath.Join(open, "by-nobody")
	if out, err := asNobody(t, "touch "+shQuote(byNobody)); err != nil {
		t.Fatalf("nobody creating in 02777 dir: %v %s", err, out)
	}
	sym := filepath.Join(sg, "sym")
	if err := os.Symlink("f", sym); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		for _, c := range []struct {
			path   string
			uid    uint32
			setgid bool
		}{
			{f, 0, false}, {sub, 0, true}, {deeper, 0, true}, {byNobody, nobodyUID, false}, {sym, 0, false},
		} {
			st := lstat(t, c.path)
			if st.Gid != 100 || st.Uid != c.uid {
				t.Errorf("%s: %s owned by %d:%d, want %d:100", when, c.path, st.Uid, st.Gid, c.uid)
			}
			if got := st.Mode&unix.S_ISGID != 0; got != c.setgid {
				t.Errorf("%s: %s mode %o: setgid %v, want %v", when, c.path, st.Mode&0o7777, got, c.setgid)
			}
		}
	}
	check("mounted")
	s.remount()
	check("after remount")
	s.finish()
}

// testCapability is a file capability set (version 2: permitted
// CAP_NET_RAW), the value of a security.capability attribute.
var testCapability = []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// TestSemanticsKillPrivileges: writing to, truncating or chowning a file
// clears its setuid bit, its setgid bit where group execute is set, and
// its file capabilities, as on a local file system. Callers with
// CAP_FSETID (root here) keep the mode bits on write and truncate, not on
// chown; capabilities go whoever writes. The mount clears them itself
// (FUSE_HANDLE_KILLPRIV_V2), so each case also survives a remount.
func TestSemanticsKillPrivileges(t *testing.T) {
	s := newSite(t)
	openTestDir(t, s)
	s.mount()
	root := func(fn func(path string) error) func(string) error { return fn }
	nobody := func(script string) func(string) error {
		return func(path string) error {
			out, err := asNobody(t, strings.ReplaceAll(script, "F", shQuote(path)))
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}
	}
	appendByte := func(path string) error {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = f.Write([]byte("x"))
		return errors.Join(err, f.Close())
	}
	cases := []struct {
		name string
		mode uint32 // set before the operation, on a file owned by nobody
		op   func(path string) error
		want uint32
	}{
		{"write by nobody", 0o6777, nobody("printf x >> F"), 0o0777},
		{"write by nobody, setgid without group execute", 0o2767, nobody("printf x >> F"), 0o2767},
		{"write by root", 0o6777, root(appendByte), 0o6777},
		{"truncate by nobody", 0o6777, nobody("truncate -s 1 F"), 0o0777},
		{"truncate by root", 0o6777, root(func(p string) error { return os.Truncate(p, 1) }), 0o6777},
		{"O_TRUNC open by nobody", 0o6777, nobody(": > F"), 0o0777},
		{"O_TRUNC open by root", 0o6777, root(func(p string) error { return os.WriteFile(p, nil, 0) }), 0o6777},
		{"fallocate by nobody", 0o6777, nobody("fallocate -l 8192 F"), 0o0777},
		{"fallocate by root", 0o6777, root(func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			return errors.Join(unix.Fallocate(int(f.Fd()), 0, 0, 8192), f.Close())
		}), 0o6777},
		// Root of a user namespace any user can make holds CAP_FSETID
		// only there: the kernel clears the bits, and so must the mount.
		{"fallocate by nobody as root of its own user namespace", 0o6777, nobody("unshare -Ur fallocate -l 8192 F"), 0o0777},
		{"chown -1 -1 by root", 0o6777, root(func(p string) error { return os.Chown(p, -1, -1) }), 0o0777},
		{"chown by root", 0o6777, root(func(p string) error { return os.Chown(p, nobodyUID, 0) }), 0o0777},
		{"chown by root, setgid without group execute", 0o6767, root(func(p string) error { return os.Chown(p, nobodyUID, 0) }), 0o2767},
		{"chmod by root", 0o6777, root(func(p string) error { return unix.Chmod(p, 0o6775) }), 0o6775},
	}
	for i, c := range cases {
		p := s.path(fmt.Sprintf("f%d", i))
		mustWrite(t, p, []byte("#!/bin/sh\n"))
		if err := os.Chown(p, nobodyUID, nobodyGID); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(p, c.mode); err != nil {
			t.Fatal(err)
		}
		if err := c.op(p); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		// A mode-only statx is answered from the kernel's cache, which a
		// write leaves alone: the mount must have told it.
		var sx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MODE, &sx); err != nil {
			t.Fatal(err)
		}
		if got := uint32(sx.Mode) & 0o7777; got != c.want {
			t.Errorf("%s: statx mode %04o after, want %04o", c.name, got, c.want)
		}
		if got := lstat(t, p).Mode & 0o7777; got != c.want {
			t.Errorf("%s: mode %04o after, want %04o", c.name, got, c.want)
		}
	}
	// A directory keeps its setgid bit through chown.
	d := s.path("dir")
	mustMkdir(t, d)
	if err := unix.Chmod(d, 0o2775); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, nobodyUID, nobodyGID); err != nil {
		t.Fatal(err)
	}
	if got := lstat(t, d).Mode & 0o7777; got != 0o2775 {
		t.Errorf("chown of a setgid directory: mode %04o, want 2775", got)
	}

	// File capabilities go on write, truncate and chown, whoever does it.
	capOps := []struct {
		name string
		op   func(path string) error
	}{
		{"write", appendByte},
		{"truncate", func(p string) error { return os.Truncate(p, 0) }},
		{"chown", func(p string) error { return os.Chown(p, nobodyUID, nobodyGID) }},
	}
	for _, c := range capOps {
		p := s.path("cap-" + c.name)
		mustWrite(t, p, []byte("binary"))
		if err := unix.Setxattr(p, "security.capability", testCapability, 0); err != nil {
			t.Fatalf("set security.capability: %v", err)
		}
		if err := c.op(p); err != nil {
			t.Fatalf("%s of a file with capabilities: %v", c.name, err)
		}
		_, err := unix.Getxattr(p, "security.capability", make([]byte, 64))
		wantErrno(t, err, unix.ENODATA, c.name+" of a file with capabilities: security.capability")
	}

	s.remount()
	for i, c := range cases {
		if got := lstat(t, s.path(fmt.Sprintf("f%d", i))).Mode & 0o7777; got != c.want {
			t.Errorf("after remount: %s: mode %04o, want %04o", c.name, got, c.want)
		}
	}
	for _, c := range capOps {
		_, err := unix.Getxattr(s.path("cap-"+c.name), "security.capability", make([]byte, 64))
		wantErrno(t, err, unix.ENODATA, "after remount: "+c.name+": security.capability")
	}
	s.finish()
}

// TestKillPrivilegesNoVersionMixes: no version holds bytes written or
// cut by a caller without CAP_FSETID together with the setuid bit, not
// even when that caller's first write fills the open file's buffer (64
// MiB) and commits at once, or when it truncates.
func TestKillPrivilegesNoVersionMixes(t *testing.T) {
	s := newSite(t)
	openTestDir(t, s)
	s.mount()
	big, short := s.path("big"), s.path("short")
	mustWrite(t, big, nil)
	mustWrite(t, short, []byte("0123456789"))
	for _, p := range []string{big, short} {
		if err := unix.Chmod(p, 0o4777); err != nil {
			t.Fatal(err)
		}
	}
	// nobody's process starts before root opens the file: a child that
	// inherited root's descriptor would flush (commit) it when it execs.
	// (One write system call, and no close of a second descriptor before
	// it, which would commit root's buffer first: dd dup2s its output.)
	nobody := nobodyCommand("perl", "-e", `use Fcntl; <STDIN>;
sysopen(F, $ARGV[0], O_WRONLY|O_APPEND) or die "open: $!";
syswrite(F, "n" x 1048576) == 1048576 or die "write: $!";
close(F) or die "close: $!";
truncate($ARGV[1], 3) or die "truncate: $!";`, big, short)
	start, err := nobody.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	nobody.Stdout, nobody.Stderr = &out, &out
	if err := nobody.Start(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(big, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	rootBytes := 63<<20 + 512<<10 // nobody's 1 MiB write passes 64 MiB
	if _, err := f.Write(bytes.Repeat([]byte("r"), rootBytes)); err != nil {
		t.Fatal(err)
	}
	start.Write([]byte("go\n"))
	start.Close()
	if err := nobody.Wait(); err != nil {
		t.Fatalf("nobody: %v %s", err, out.Bytes())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path  string
		mixed func(v versionJSON) bool
	}{
		{big, func(v versionJSON) bool { return v.Size > uint64(rootBytes) }},
		{short, func(v versionJSON) bool { return v.Size == 3 }},
	} {
		vs := versionsJSON(t, c.path)
		if len(vs) < 3 {
			t.Errorf("%s: %d versions, want the change by nobody among them", c.path, len(vs))
		}
		for _, v := range vs {
			if c.mixed(v) && strings.HasPrefix(v.Mode, "4") {
				t.Errorf("%s: version %s of %d bytes by nobody has mode %s", c.path, v.Version[:12], v.Size, v.Mode)
			}
		}
	}
	s.finish()
}

func TestSemanticsLinkCounts(t *testing.T) {
	s := newSite(t)
	s.mount()
	nlink := func(p string) uint64 { return uint64(lstat(t, p).Nlink) }
	f, g := s.path("f"), s.path("g")
	mustWrite(t, f, []byte("data"))
	if n := nlink(f); n != 1 {
		t.Errorf("new file nlink %d, want 1", n)
	}
	if err := os.Link(f, g); err != nil {
		t.Fatal(err)
	}
	if n := nlink(f); n != 2 {
		t.Errorf("after link, f nlink %d, want 2", n)
	}
	if sf, sg := lstat(t, f), lstat(t, g); sf.Ino != sg.Ino || sg.Nlink != 2 {
		t.Errorf("f ino %d, g ino %d nlink %d", sf.Ino, sg.Ino, sg.Nlink)
	}
	mustMkdir(t, s.path("d"))
	h := s.path("d/h")
	if err := os.Link(g, h); err != nil {
		t.Fatal(err)
	}
	if n := nlink(f); n != 3 {
		t.Errorf("after second link, f nlink %d, want 3", n)
	}
	if err := os.Remove(g); err != nil {
		t.Fatal(err)
	}
	if n := nlink(f); n != 2 {
		t.Errorf("after unlink g, f nlink %d, want 2", n)
	}
	if err := os.Rename(h, s.path("h2")); err != nil {
		t.Fatal(err)
	}
	if n := nlink(f); n != 2 {
		t.Errorf("after renaming a link, f nlink %d, want 2", n)
	}
	if err := os.Remove(s.path("h2")); err != nil {
		t.Fatal(err)
	}
	if n := nlink(f); n != 1 {
		t.Errorf("after unlink, f nlink %d, want 1", n)
	}
	// An open file keeps working after its last name goes.
	fd, err := unix.Open(f, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Nlink != 0 {
		t.Errorf("fstat of unlinked open file: %v nlink %d, want 0", err, st.Nlink)
	}
	buf := make([]byte, 10)
	if n, err := unix.Pread(fd, buf, 0); err != nil || string(buf[:n]) != "data" {
		t.Errorf("read unlinked open file: %q %v", buf[:n], err)
	}
	unix.Close(fd)

	// Directories: 2 + subdirectories.
	dir := s.path("dir")
	mustMkdir(t, dir)
	if n := nlink(dir); n != 2 {
		t.Errorf("empty dir nlink %d, want 2", n)
	}
	for _, name := range []string{"a", "b", "c"} {
		mustMkdir(t, filepath.Join(dir, name))
	}
	mustWrite(t, filepath.Join(dir, "file"), nil)
	if err := os.Symlink("a", filepath.Join(dir, "sym")); err != nil {
		t.Fatal(err)
	}
	if n := nlink(dir); n != 5 {
		t.Errorf("dir with 3 subdirs nlink %d, want 5", n)
	}
	if err := os.Remove(filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	if n := nlink(dir); n != 4 {
		t.Errorf("after rmdir, dir nlink %d, want 4", n)
	}
	other := s.path("other")
	mustMkdir(t, other)
	if err := os.Rename(filepath.Join(dir, "b"), filepath.Join(other, "b")); err != nil {
		t.Fatal(err)
	}
	if n, m := nlink(dir), nlink(other); n != 3 || m != 3 {
		t.Errorf("after moving a subdir, nlink %d and %d, want 3 and 3", n, m)
	}
	// Root: d, dir, other.
	if n := nlink(s.mnt); n != 5 {
		t.Errorf("root nlink %d, want 5", n)
	}
	s.remount()
	if n, m := nlink(dir), nlink(other); n != 3 || m != 3 {
		t.Errorf("after remount, nlink %d and %d, want 3 and 3", n, m)
	}
	wantMissing(t, f)
	s.finish()
}

func TestSemanticsRename(t *testing.T) {
	s := newSite(t)
	s.mount()
	renameat2 := func(from, to string, flags uint) error {
		return unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, flags)
	}
	cases := []struct {
		name string
		run  func(t *testing.T, dir string)
	}{
		{"over existing file", func(t *testing.T, dir string) {
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			mustWrite(t, a, []byte("source"))
			mustWrite(t, b, []byte("target, to be replaced"))
			ino := lstat(t, a).Ino
			if err := renameat2(a, b, 0); err != nil {
				t.Fatal(err)
			}
			wantContent(t, b, []byte("source"))
			wantMissing(t, a)
			if st := lstat(t, b); st.Ino != ino || st.Nlink != 1 {
				t.Errorf("b ino %d nlink %d, want ino %d nlink 1", st.Ino, st.Nlink, ino)
			}
		}},
		{"noreplace onto existing", func(t *testing.T, dir string) {
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			mustWrite(t, a, []byte("A"))
			mustWrite(t, b, []byte("B"))
			wantErrno(t, renameat2(a, b, unix.RENAME_NOREPLACE), unix.EEXIST, "RENAME_NOREPLACE onto a file")
			wantContent(t, a, []byte("A"))
			wantContent(t, b, []byte("B"))
			c := filepath.Join(dir, "c")
			if err := renameat2(a, c, unix.RENAME_NOREPLACE); err != nil {
				t.Fatalf("RENAME_NOREPLACE onto a free name: %v", err)
			}
			wantContent(t, c, []byte("A"))
			wantMissing(t, a)
		}},
		{"exchange files", func(t *testing.T, dir string) {
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			mustWrite(t, a, []byte("content of a"))
			mustWrite(t, b, []byte("content of b, longer"))
			ia, ib := lstat(t, a).Ino, lstat(t, b).Ino
			if err := renameat2(a, b, unix.RENAME_EXCHANGE); err != nil {
				t.Fatal(err)
			}
			wantContent(t, a, []byte("content of b, longer"))
			wantContent(t, b, []byte("content of a"))
			if lstat(t, a).Ino != ib || lstat(t, b).Ino != ia {
				t.Error("inode numbers did not swap")
			}
			wantErrno(t, renameat2(a, filepath.Join(dir, "none"), unix.RENAME_EXCHANGE), unix.ENOENT, "RENAME_EXCHANGE with a missing target")
		}},
		{"exchange directories", func(t *testing.T, dir string) {
			d1, d2 := filepath.Join(dir, "d1"), filepath.Join(dir, "d2")
			mustMkdir(t, d1)
			mustMkdir(t, d2)
			mustWrite(t, filepath.Join(d1, "x"), []byte("x in d1"))
			mustMkdir(t, filepath.Join(d2, "sub"))
			mustWrite(t, filepath.Join(d2, "sub", "y"), []byte("y in d2/sub"))
			if err := renameat2(d1, d2, unix.RENAME_EXCHANGE); err != nil {
				t.Fatal(err)
			}
			wantContent(t, filepath.Join(d2, "x"), []byte("x in d1"))
			wantContent(t, filepath.Join(d1, "sub", "y"), []byte("y in d2/sub"))
			wantMissing(t, filepath.Join(d1, "x"))
			wantMissing(t, filepath.Join(d2, "sub"))
			if n1, n2 := lstat(t, d1).Nlink, lstat(t, d2).Nlink; n1 != 3 || n2 != 2 {
				t.Errorf("after exchange, nlink d1 %d d2 %d, want 3 and 2", n1, n2)
			}
		}},
		{"exchange file and directory across dirs", func(t *testing.T, dir string) {
			p, q := filepath.Join(dir, "p"), filepath.Join(dir, "q")
			mustMkdir(t, p)
			mustMkdir(t, q)
			f := filepath.Join(p, "e")
			d := filepath.Join(q, "e")
			mustWrite(t, f, []byte("file e"))
			mustMkdir(t, d)
			mustWrite(t, filepath.Join(d, "inside"), []byte("inside dir e"))
			if err := renameat2(f, d, unix.RENAME_EXCHANGE); err != nil {
				t.Fatal(err)
			}
			wantContent(t, filepath.Join(q, "e"), []byte("file e"))
			wantContent(t, filepath.Join(p, "e", "inside"), []byte("inside dir e"))
			if n1, n2 := lstat(t, p).Nlink, lstat(t, q).Nlink; n1 != 3 || n2 != 2 {
				t.Errorf("after exchange, nlink p %d q %d, want 3 and 2", n1, n2)
			}
		}},
		{"directory with contents", func(t *testing.T, dir string) {
			src := filepath.Join(dir, "src")
			if err := os.MkdirAll(filepath.Join(src, "a", "b"), 0o755); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, filepath.Join(src, "top"), []byte("top"))
			mustWrite(t, filepath.Join(src, "a", "b", "leaf"), []byte("leaf"))
			dst := filepath.Join(dir, "elsewhere", "moved")
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := renameat2(src, dst, 0); err != nil {
				t.Fatal(err)
			}
			wantContent(t, filepath.Join(dst, "top"), []byte("top"))
			wantContent(t, filepath.Join(dst, "a", "b", "leaf"), []byte("leaf"))
			wantMissing(t, src)
			wantMissing(t, filepath.Join(src, "a", "b", "leaf"))
			// Moving a directory into its own subtree is refused.
			wantErrno(t, renameat2(dst, filepath.Join(dst, "a", "inside"), 0), unix.EINVAL, "rename a dir into itself")
		}},
		{"dir over non-empty dir", func(t *testing.T, dir string) {
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			mustMkdir(t, a)
			mustMkdir(t, b)
			mustWrite(t, filepath.Join(a, "fa"), []byte("fa"))
			mustWrite(t, filepath.Join(b, "fb"), []byte("fb"))
			err := renameat2(a, b, 0)
			if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
				t.Errorf("rename dir over non-empty dir: %v, want ENOTEMPTY", err)
			}
			wantContent(t, filepath.Join(a, "fa"), []byte("fa"))
			wantContent(t, filepath.Join(b, "fb"), []byte("fb"))
		}},
		{"dir over empty dir", func(t *testing.T, dir string) {
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			mustMkdir(t, a)
			mustMkdir(t, b)
			mustWrite(t, filepath.Join(a, "fa"), []byte("fa"))
			if err := renameat2(a, b, 0); err != nil {
				t.Fatal(err)
			}
			wantContent(t, filepath.Join(b, "fa"), []byte("fa"))
			wantMissing(t, a)
			if n := lstat(t, dir).Nlink; n != 3 {
				t.Errorf("parent nlink %d after replacing a dir, want 3", n)
			}
		}},
		{"whiteout", func(t *testing.T, dir string) {
			a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
			mustWrite(t, a, []byte("moved"))
			mustWrite(t, c, []byte("stays"))
			ino := lstat(t, a).Ino
			if err := renameat2(a, b, unix.RENAME_WHITEOUT); err != nil {
				t.Fatal(err)
			}
			wantContent(t, b, []byte("moved"))
			wantWhiteout(t, a)
			if lstat(t, b).Ino != ino || lstat(t, a).Ino == ino {
				t.Error("the whiteout took the moved file's inode number")
			}
			// Over an existing target, and refused without change.
			mustWrite(t, a+"2", []byte("second"))
			if err := renameat2(a+"2", c, unix.RENAME_WHITEOUT); err != nil {
				t.Fatal(err)
			}
			wantContent(t, c, []byte("second"))
			wantWhiteout(t, a+"2")
			mustWrite(t, a+"3", []byte("third"))
			wantErrno(t, renameat2(a+"3", b, unix.RENAME_WHITEOUT|unix.RENAME_NOREPLACE), unix.EEXIST, "RENAME_WHITEOUT|RENAME_NOREPLACE onto a file")
			wantErrno(t, renameat2(a+"3", b, unix.RENAME_WHITEOUT|unix.RENAME_EXCHANGE), unix.EINVAL, "RENAME_WHITEOUT|RENAME_EXCHANGE")
			wantContent(t, a+"3", []byte("third"))
			wantContent(t, b, []byte("moved"))
		}},
		{"type mismatches", func(t *testing.T, dir string) {
			f, d := filepath.Join(dir, "f"), filepath.Join(dir, "d")
			mustWrite(t, f, []byte("f"))
			mustMkdir(t, d)
			wantErrno(t, renameat2(d, f, 0), unix.ENOTDIR, "rename dir over file")
			wantErrno(t, renameat2(f, d, 0), unix.EISDIR, "rename file over dir")
			wantErrno(t, renameat2(filepath.Join(dir, "none"), f, 0), unix.ENOENT, "rename missing source")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := s.path(strings.ReplaceAll(c.name, " ", "-"))
			mustMkdir(t, dir)
			c.run(t, dir)
		})
	}
	// The renames are in the store, not only in the kernel's caches.
	s.remount()
	wantContent(t, s.path("over-existing-file/b"), []byte("source"))
	wantContent(t, s.path("exchange-files/a"), []byte("content of b, longer"))
	wantContent(t, s.path("exchange-directories/d1/sub/y"), []byte("y in d2/sub"))
	wantContent(t, s.path("exchange-directories/d2/x"), []byte("x in d1"))
	wantContent(t, s.path("directory-with-contents/elsewhere/moved/a/b/leaf"), []byte("leaf"))
	wantContent(t, s.path("dir-over-empty-dir/b/fa"), []byte("fa"))
	wantContent(t, s.path("whiteout/b"), []byte("moved"))
	wantWhiteout(t, s.path("whiteout/a"))
	wantWhiteout(t, s.path("whiteout/a2"))
	s.finish()
}

// wantWhiteout checks that path is an overlayfs whiteout: a character
// device 0:0 with mode 0, owned by the caller (root here). (Overlayfs
// links one whiteout to many names, so the link count is not checked.)
func wantWhiteout(t *testing.T, path string) {
	t.Helper()
	st := lstat(t, path)
	if st.Mode != unix.S_IFCHR || st.Rdev != 0 || st.Uid != 0 {
		t.Errorf("%s: mode %#o rdev %d uid %d, want a whiteout (%#o, 0, 0)", path, st.Mode, st.Rdev, st.Uid, unix.S_IFCHR)
	}
}

func TestSemanticsDeepPaths(t *testing.T) {
	s := newSite(t)
	s.mount()
	root, err := unix.Open(s.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}

	// 15 levels of 255-byte names, then a 200-byte file name: the path from
	// the mount root is 4040 bytes, close to PATH_MAX (4096 with its NUL).
	var parts []string
	fd, err := unix.Dup(root)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 15 {
		name := fmt.Sprintf("%02d", i) + strings.Repeat(string(rune('a'+i)), 253)
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatalf("mkdirat level %d: %v", i, err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatalf("openat level %d: %v", i, err)
		}
		unix.Close(fd)
		fd = next
		parts = append(parts, name)
	}
	fileName := strings.Repeat("z", 196) + ".txt"
	rel := strings.Join(append(parts, fileName), "/")
	if len(rel) < 4000 || len(rel) >= 4096 {
		t.Fatalf("relative path is %d bytes", len(rel))
	}
	data := []byte("at the bottom of a very deep tree\n")
	f, err := unix.Openat(fd, fileName, unix.O_CREAT|unix.O_WRONLY|unix.O_EXCL, 0o644)
	if err != nil {
		t.Fatalf("create deepest file: %v", err)
	}
	if _, err := unix.Write(f, data); err != nil {
		t.Fatal(err)
	}
	if err := unix.Close(f); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)

	readRel := func() {
		t.Helper()
		f, err := unix.Openat(root, rel, unix.O_RDONLY, 0)
		if err != nil {
			t.Errorf("open %d-byte path from the mount root: %v", len(rel), err)
			return
		}
		defer unix.Close(f)
		buf := make([]byte, 100)
		n, err := unix.Read(f, buf)
		if err != nil || !bytes.Equal(buf[:n], data) {
			t.Errorf("read deep file: %q %v", buf[:n], err)
		}
	}
	readRel()

	// Names longer than 255 bytes.
	long := strings.Repeat("n", 256)
	mustWrite(t, s.path("exists"), []byte("x"))
	longPath := s.path(long)
	var st unix.Stat_t
	for _, c := range []struct {
		what string
		err  error
	}{
		{"mkdir", unix.Mkdir(longPath, 0o755)},
		{"create", func() error {
			fd, err := unix.Open(longPath, unix.O_CREAT|unix.O_WRONLY, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}()},
		{"stat", unix.Lstat(longPath, &st)},
		{"symlink", unix.Symlink("exists", longPath)},
		{"link", unix.Link(s.path("exists"), longPath)},
		{"rename", unix.Rename(s.path("exists"), longPath)},
		{"mkdir 1000 bytes", unix.Mkdir(s.path(strings.Repeat("m", 1000)), 0o755)},
	} {
		wantErrno(t, c.err, unix.ENAMETOOLONG, c.what+" with a 256-byte name")
	}
	// 255 bytes is fine.
	if err := unix.Mkdir(s.path(long[:255]), 0o755); err != nil {
		t.Errorf("mkdir with a 255-byte name: %v", err)
	}

	unix.Close(root) // an open descriptor would keep the mount busy
	s.remount()
	if root, err = unix.Open(s.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0); err != nil {
		t.Fatal(err)
	}
	readRel()
	unix.Close(root)
	s.finish()
	// The store resolves the full path too.
	if got := geofsStdout(t, "cat", "--store", s.store, "/"+rel); !bytes.Equal(got, data) {
		t.Errorf("geofs cat of the deep path: %q", got)
	}
}

func TestSemanticsSparseBeyond4GiB(t *testing.T) {
	s := newSite(t)
	s.mount()
	const (
		dataOff = 5<<30 + 12345
		dataLen = 1 << 20
	)
	data := make([]byte, dataLen)
	rand.New(rand.NewSource(42)).Read(data)
	p := s.path("sparse")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.WriteAt(data, dataOff); err != nil || n != dataLen {
		t.Fatalf("pwrite at 5 GiB: %d %v", n, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	empty := s.path("truncated")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(empty, 5<<30); err != nil {
		t.Fatal(err)
	}

	verify := func(when string) {
		t.Helper()
		st := lstat(t, p)
		if st.Size != dataOff+dataLen {
			t.Errorf("%s: size %d, want %d", when, st.Size, dataOff+dataLen)
		}
		// Holes take no space (du, and cp's sparse detection, go by
		// st_blocks): the data's chunks, not the 5 GiB.
		if used := st.Blocks * 512; used < dataLen || used > 16<<20 {
			t.Errorf("%s: %d bytes allocated for %d bytes of data in a %d-byte file", when, used, dataLen, st.Size)
		}
		if st := lstat(t, empty); st.Size != 5<<30 || st.Blocks != 0 {
			t.Errorf("%s: a truncated-only file: size %d, %d blocks, want 5 GiB and 0", when, st.Size, st.Blocks)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got := make([]byte, dataLen)
		if n, err := f.ReadAt(got, dataOff); n != dataLen || err != nil && n != dataLen {
			t.Errorf("%s: read data: %d %v", when, n, err)
		} else if !bytes.Equal(got, data) {
			t.Errorf("%s: data read back differs", when)
		}
		for _, off := range []int64{0, 1 << 20, 4<<30 - 4096, 4 << 30, 5<<30 - 1, dataOff - 8192} {
			buf := make([]byte, 8192)
			if n, err := f.ReadAt(buf, off); n != len(buf) {
				t.Errorf("%s: read hole at %d: %d %v", when, off, n, err)
			} else if !bytes.Equal(buf, make([]byte, len(buf))) {
				t.Errorf("%s: hole at %d is not zero", when, off)
			}
		}
		// Across the start of the data.
		buf := make([]byte, 200)
		if n, _ := f.ReadAt(buf, dataOff-100); n != 200 || !bytes.Equal(buf[:100], make([]byte, 100)) || !bytes.Equal(buf[100:], data[:100]) {
			t.Errorf("%s: read across the start of the data is wrong", when)
		}
		// Past the end.
		if n, err := f.ReadAt(buf, dataOff+dataLen); n != 0 || err == nil {
			t.Errorf("%s: read at EOF: %d %v", when, n, err)
		}

		fd := int(f.Fd())
		d, err := unix.Seek(fd, 0, unix.SEEK_DATA)
		if err != nil || d <= 0 || d > dataOff {
			t.Errorf("%s: SEEK_DATA from 0: %d %v, want in (0, %d]", when, d, err, dataOff)
		}
		if h, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err != nil || h != 0 {
			t.Errorf("%s: SEEK_HOLE from 0: %d %v, want 0", when, h, err)
		}
		if h, err := unix.Seek(fd, dataOff, unix.SEEK_HOLE); err != nil || h != dataOff+dataLen {
			t.Errorf("%s: SEEK_HOLE from the data: %d %v, want EOF %d", when, h, err, dataOff+dataLen)
		}
		if d, err := unix.Seek(fd, dataOff+dataLen/2, unix.SEEK_DATA); err != nil || d != dataOff+dataLen/2 {
			t.Errorf("%s: SEEK_DATA inside the data: %d %v", when, d, err)
		}
		if _, err := unix.Seek(fd, dataOff+dataLen, unix.SEEK_DATA); !errors.Is(err, unix.ENXIO) {
			t.Errorf("%s: SEEK_DATA at EOF: %v, want ENXIO", when, err)
		}
	}
	verify("mounted")
	s.remount()
	verify("after remount")
	s.finish()
}

func TestSemanticsSharedMmap(t *testing.T) {
	s := newSite(t)
	s.mount()
	const size = 1 << 20
	wants := map[string][]byte{}
	// With msync, and relying on close alone (the kernel writes dirty
	// pages back before FLUSH).
	for i, msync := range []bool{true, false} {
		p := s.path(fmt.Sprintf("mapped-%v", msync))
		mustWrite(t, p, bytes.Repeat([]byte{'.'}, size))
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatalf("mmap MAP_SHARED: %v", err)
		}
		want := bytes.Repeat([]byte{'.'}, size)
		rng := rand.New(rand.NewSource(int64(7 + i)))
		for range 300 { // scattered writes, some across page boundaries
			off := rng.Intn(size - 64)
			n := 1 + rng.Intn(64)
			for i := range n {
				b := byte('A' + rng.Intn(26))
				m[off+i], want[off+i] = b, b
			}
		}
		copy(m[size-5:], "TAIL!")
		copy(want[size-5:], "TAIL!")
		if msync {
			if err := unix.Msync(m, unix.MS_SYNC); err != nil {
				t.Fatalf("msync: %v", err)
			}
		}
		if err := unix.Munmap(m); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		wantContent(t, p, want)
		if st := lstat(t, p); st.Size != size {
			t.Errorf("size %d after mmap writes", st.Size)
		}
		wants[p] = want
	}
	s.remount()
	for p, want := range wants {
		wantContent(t, p, want)
	}
	s.finish()
}

func TestSemanticsOpenFlags(t *testing.T) {
	s := newSite(t)
	s.mount()

	// O_APPEND through two descriptors.
	p := s.path("log")
	mustWrite(t, p, []byte("start\n"))
	var fds [2]*os.File
	for i := range fds {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = f
	}
	want := []byte("start\n")
	for i := range 200 {
		line := fmt.Appendf(nil, "%c%03d %s\n", 'A'+i%2, i, strings.Repeat("x", i%17))
		if _, err := fds[i%2].Write(line); err != nil {
			t.Fatal(err)
		}
		want = append(want, line...)
	}
	for _, f := range fds {
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	wantContent(t, p, want)

	// O_EXCL on an existing name, file or directory.
	mustMkdir(t, s.path("dir"))
	for _, name := range []string{"log", "dir"} {
		_, err := unix.Open(s.path(name), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		wantErrno(t, err, unix.EEXIST, "O_CREAT|O_EXCL on existing "+name)
	}
	fd, err := unix.Open(s.path("fresh"), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o600)
	if err != nil {
		t.Fatalf("O_EXCL on a new name: %v", err)
	}
	unix.Close(fd)

	// O_TRUNC empties.
	tr := s.path("trunc")
	mustWrite(t, tr, []byte("some content to drop"))
	fd, err = unix.Open(tr, unix.O_WRONLY|unix.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != 0 {
		t.Errorf("fstat right after O_TRUNC: size %d %v", st.Size, err)
	}
	unix.Close(fd)
	wantContent(t, tr, []byte{})
	// Truncate then write a shorter content: nothing old shows through.
	mustWrite(t, tr, []byte("some content to drop"))
	mustWrite(t, tr, []byte("new"))
	wantContent(t, tr, []byte("new"))

	s.remount()
	wantContent(t, p, want)
	wantContent(t, tr, []byte("new"))
	s.finish()
}

func TestSemanticsXattr(t *testing.T) {
	s := newSite(t)
	s.mount()
	f, d := s.path("file"), s.path("dir")
	mustWrite(t, f, []byte("x"))
	mustMkdir(t, d)
	big := bytes.Repeat([]byte("v"), 4000)
	for _, p := range []string{f, d} {
		if err := unix.Setxattr(p, "user.one", []byte("1"), 0); err != nil {
			t.Fatalf("setxattr %s: %v", p, err)
		}
		if err := unix.Setxattr(p, "user.big", big, unix.XATTR_CREATE); err != nil {
			t.Fatalf("setxattr XATTR_CREATE: %v", err)
		}
		if err := unix.Setxattr(p, "user.empty", nil, 0); err != nil {
			t.Fatalf("setxattr empty value: %v", err)
		}
		wantErrno(t, unix.Setxattr(p, "user.one", []byte("2"), unix.XATTR_CREATE), unix.EEXIST, "XATTR_CREATE on existing")
		wantErrno(t, unix.Setxattr(p, "user.missing", []byte("2"), unix.XATTR_REPLACE), unix.ENODATA, "XATTR_REPLACE on missing")
		if err := unix.Setxattr(p, "user.one", []byte("one"), unix.XATTR_REPLACE); err != nil {
			t.Errorf("XATTR_REPLACE on existing: %v", err)
		}
		if err := unix.Setxattr(p, "user.gone", []byte("soon"), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Removexattr(p, "user.gone"); err != nil {
			t.Errorf("removexattr: %v", err)
		}
		wantErrno(t, unix.Removexattr(p, "user.gone"), unix.ENODATA, "removexattr of missing")
		// A too small buffer gives ERANGE; size 0 asks for the size.
		if n, err := unix.Getxattr(p, "user.big", nil); err != nil || n != len(big) {
			t.Errorf("getxattr size query: %d %v", n, err)
		}
		_, err := unix.Getxattr(p, "user.big", make([]byte, 10))
		wantErrno(t, err, unix.ERANGE, "getxattr into a small buffer")
	}

	check := func(when string) {
		t.Helper()
		for _, p := range []string{f, d} {
			for name, want := range map[string][]byte{"user.one": []byte("one"), "user.big": big, "user.empty": {}} {
				buf := make([]byte, 8192)
				n, err := unix.Getxattr(p, name, buf)
				if err != nil || !bytes.Equal(buf[:n], want) {
					t.Errorf("%s: getxattr %s %s: %d bytes %v", when, p, name, n, err)
				}
			}
			_, err := unix.Getxattr(p, "user.gone", make([]byte, 10))
			wantErrno(t, err, unix.ENODATA, when+": getxattr of removed")
			buf := make([]byte, 4096)
			n, err := unix.Listxattr(p, buf)
			if err != nil {
				t.Errorf("%s: listxattr: %v", when, err)
				continue
			}
			names := strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
			sort.Strings(names)
			if got := strings.Join(names, ","); got != "user.big,user.empty,user.one" {
				t.Errorf("%s: listxattr %s: %q", when, p, got)
			}
		}
	}
	check("mounted")
	s.remount()
	check("after remount")
	s.finish()
}

func TestSemanticsTimesAndOwnership(t *testing.T) {
	s := newSite(t)
	s.mount()
	f, d := s.path("file"), s.path("dir")
	mustWrite(t, f, []byte("times"))
	mustMkdir(t, d)
	mustWrite(t, filepath.Join(d, "child"), []byte("c")) // the dir changed after its creation
	atime := time.Date(2001, 2, 3, 4, 5, 6, 123456789, time.UTC)
	mtime := time.Date(2010, 11, 12, 13, 14, 15, 987654321, time.UTC)
	for _, p := range []string{f, d} {
		ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
		if err := unix.UtimesNano(p, ts); err != nil {
			t.Fatalf("utimensat %s: %v", p, err)
		}
	}
	if err := os.Chmod(f, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(f, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o710); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, 4321, 8765); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			path     string
			mode     uint32
			uid, gid uint32
		}{{f, 0o640, 1234, 5678}, {d, 0o710, 4321, 8765}} {
			st := lstat(t, c.path)
			if got := time.Unix(st.Atim.Unix()); !got.Equal(atime) {
				t.Errorf("%s: %s atime %s, want %s", when, c.path, got.UTC(), atime)
			}
			if got := time.Unix(st.Mtim.Unix()); !got.Equal(mtime) {
				t.Errorf("%s: %s mtime %s, want %s", when, c.path, got.UTC(), mtime)
			}
			if st.Mode&0o7777 != c.mode || st.Uid != c.uid || st.Gid != c.gid {
				t.Errorf("%s: %s mode %o owner %d:%d, want %o %d:%d", when, c.path, st.Mode&0o7777, st.Uid, st.Gid, c.mode, c.uid, c.gid)
			}
			if ctime := time.Unix(st.Ctim.Unix()); time.Since(ctime) > time.Minute || ctime.Before(mtime) {
				t.Errorf("%s: %s ctime %s is not recent", when, c.path, ctime)
			}
		}
	}
	check("mounted")
	s.remount()
	check("after remount")

	// UTIME_NOW sets the current time; UTIME_OMIT leaves a time alone.
	before := time.Now().Add(-time.Second)
	ts := []unix.Timespec{{Sec: 0, Nsec: unix.UTIME_OMIT}, {Sec: 0, Nsec: unix.UTIME_NOW}}
	if err := unix.UtimesNano(f, ts); err != nil {
		t.Fatal(err)
	}
	st := lstat(t, f)
	if got := time.Unix(st.Atim.Unix()); !got.Equal(atime) {
		t.Errorf("UTIME_OMIT changed atime to %s", got)
	}
	if got := time.Unix(st.Mtim.Unix()); got.Before(before) || time.Since(got) > time.Minute {
		t.Errorf("UTIME_NOW set mtime %s", got)
	}
	s.finish()
}

func TestSemanticsFallocateStatfs(t *testing.T) {
	s := newSite(t)
	s.mount()
	p := s.path("alloc")
	mustWrite(t, p, []byte("abc"))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if err := unix.Fallocate(fd, 0, 0, 1<<20); err != nil {
		t.Fatalf("fallocate mode 0: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != 1<<20 {
		t.Errorf("fstat after fallocate: size %d %v, want %d", st.Size, err, 1<<20)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, 4<<20); err != nil {
		t.Errorf("fallocate KEEP_SIZE: %v", err)
	}
	// Preallocation inside the file changes nothing.
	if err := unix.Fallocate(fd, 0, 100, 200); err != nil {
		t.Errorf("fallocate inside the file: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := append([]byte("abc"), make([]byte, 1<<20-3)...)
	wantContent(t, p, want)

	var fs unix.Statfs_t
	if err := unix.Statfs(s.mnt, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Blocks == 0 || fs.Bsize <= 0 || fs.Bfree > fs.Blocks || fs.Bavail > fs.Blocks {
		t.Errorf("statfs: blocks %d bsize %d bfree %d bavail %d", fs.Blocks, fs.Bsize, fs.Bfree, fs.Bavail)
	}
	if fs.Namelen != 255 {
		t.Errorf("statfs namelen %d, want 255", fs.Namelen)
	}
	if fs.Type != 0x65735546 { // FUSE_SUPER_MAGIC
		t.Errorf("statfs type %#x, want FUSE", fs.Type)
	}
	s.remount()
	wantContent(t, p, want)
	s.finish()
}

// TestSemanticsPunchHoleAndZeroRange punches a hole and zeroes ranges in a
// file that has committed and buffered bytes, and checks the content
// through the open file, the holes (SEEK_HOLE, st_blocks), and that they
// last past a remount.
func TestSemanticsPunchHoleAndZeroRange(t *testing.T) {
	s := newSite(t)
	s.mount()
	p := s.path("sparse")
	want := randomBytes(t, 3<<20)
	mustWrite(t, p, want)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	// Buffered bytes inside the hole go with it.
	x := bytes.Repeat([]byte{'x'}, 4096)
	if _, err := unix.Pwrite(fd, x, 200_000); err != nil {
		t.Fatal(err)
	}
	const keep = unix.FALLOC_FL_KEEP_SIZE
	ops := []struct {
		name           string
		mode           uint32
		off, n, newLen int64
	}{
		{"punch hole", unix.FALLOC_FL_PUNCH_HOLE | keep, 100_000, 1 << 20, 3 << 20},
		{"zero range past the end", unix.FALLOC_FL_ZERO_RANGE, 3<<20 - 1000, 5000, 3<<20 + 4000},
		{"zero range to the end, keep size", unix.FALLOC_FL_ZERO_RANGE | keep, 2 << 20, 4 << 20, 3<<20 + 4000},
		{"punch hole past the end", unix.FALLOC_FL_PUNCH_HOLE | keep, 8 << 20, 4096, 3<<20 + 4000},
	}
	for _, op := range ops {
		if err := unix.Fallocate(fd, op.mode, op.off, op.n); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		want = append(want, make([]byte, max(0, int(op.newLen)-len(want)))...)
		clear(want[min(op.off, op.newLen):min(op.off+op.n, op.newLen)])
		got := make([]byte, len(want)+1)
		if n, err := unix.Pread(fd, got, 0); err != nil || !bytes.Equal(got[:n], want) {
			t.Fatalf("%s: read %d bytes (%v), want %d, content differs: %v", op.name, n, err, len(want), !bytes.Equal(got[:n], want))
		}
	}
	wantErrno(t, unix.Fallocate(fd, unix.FALLOC_FL_COLLAPSE_RANGE, 0, 4096), unix.EOPNOTSUPP, "collapse range")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		wantContent(t, p, want)
		g, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		hole, err := unix.Seek(int(g.Fd()), 0, unix.SEEK_HOLE)
		if err != nil || hole != 100_000 {
			t.Errorf("%s: first hole at %d (%v), want 100000", when, hole, err)
		}
		data, err := unix.Seek(int(g.Fd()), 100_000, unix.SEEK_DATA)
		if err != nil || data != 100_000+1<<20 {
			t.Errorf("%s: data after the hole at %d (%v), want %d", when, data, err, 100_000+1<<20)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		// Data is left in [0, 100000) and [100000 + 1 MiB, 2 MiB).
		if st.Blocks*512 > 1<<20+64<<10 {
			t.Errorf("%s: %d blocks of 512 bytes allocated, want about 1 MiB's worth", when, st.Blocks)
		}
	}
	check("before remount")
	s.remount()
	check("after remount")
	s.finish()
}

// getdents lists a directory with raw getdents64 calls.
func getdents(t *testing.T, dir string) []string {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 8192) // small, so the listing takes many calls
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents: %v", err)
		}
		if n == 0 {
			return names
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			names = append(names, string(name))
			b = b[reclen:]
		}
	}
}

func TestSemanticsBigDirectory(t *testing.T) {
	s := newSite(t)
	s.mount()
	dir := s.path("big")
	mustMkdir(t, dir)
	const count = 3000
	want := map[string]bool{".": true, "..": true}
	for i := range count {
		name := fmt.Sprintf("entry-%04d-%s", i, strings.Repeat("x", i%40))
		fd, err := unix.Open(filepath.Join(dir, name), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		unix.Close(fd)
		want[name] = true
	}
	check := func(when string) {
		t.Helper()
		names := getdents(t, dir)
		seen := map[string]int{}
		for _, n := range names {
			seen[n]++
		}
		for n, c := range seen {
			if c != 1 {
				t.Errorf("%s: %q listed %d times", when, n, c)
			}
			if !want[n] {
				t.Errorf("%s: unexpected entry %q", when, n)
			}
		}
		for n := range want {
			if seen[n] == 0 {
				t.Errorf("%s: %q missing", when, n)
			}
		}
		if len(names) != count+2 {
			t.Errorf("%s: %d entries, want %d", when, len(names), count+2)
		}
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) != count {
			t.Errorf("%s: ReadDir: %d entries %v", when, len(ents), err)
		}
	}
	check("mounted")
	s.remount()
	check("after remount")
	s.finish()
}
