package integration

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Permissions as other users see them: the cases where a mount that
// checked in the daemon rather than the kernel (default_permissions) could
// let another user through, or shut a user out: entries the kernel cached
// before their directory closed (and a name it found missing there),
// supplementary groups, truncation by an open that may only read, times,
// owners, execute-only programs, access(2), moves, hard links, and a FIFO,
// whose open never reaches the daemon (docs/DECISIONS.md).

const otherGID = 4242 // a group nobody is put in for some cases

// asNobodyIn runs a shell script as uid/gid 65534 with the supplementary
// groups given.
func asNobodyIn(t *testing.T, groups []uint32, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyGID, Groups: groups}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestPermissionsAsOtherUsers(t *testing.T) {
	s := newSite(t)
	openTestDir(t, s)
	s.mount()
	p := s.path
	write := func(name, data string, mode os.FileMode) {
		t.Helper()
		mustWrite(t, p(name), []byte(data))
		if err := os.Chmod(p(name), mode); err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(name string, mode os.FileMode) {
		t.Helper()
		mustMkdir(t, p(name))
		if err := os.Chmod(p(name), mode); err != nil {
			t.Fatal(err)
		}
	}
	chown := func(name string, uid, gid int) {
		t.Helper()
		if err := os.Chown(p(name), uid, gid); err != nil {
			t.Fatal(err)
		}
	}

	// A directory closed after root walked it: the kernel had its
	// entries (and a name it lacks) cached.
	mkdir("private", 0o755)
	write("private/f", "private\n", 0o644)
	mkdir("private/sub", 0o755)
	for _, name := range []string{"private/f", "private/sub", "private/missing"} {
		var st unix.Stat_t
		unix.Lstat(p(name), &st)
	}
	if err := os.Chmod(p("private"), 0o700); err != nil {
		t.Fatal(err)
	}

	mkdir("listonly", 0o711) // search, no read
	write("listonly/f", "listed\n", 0o644)
	write("grp", "group\n", 0o640)
	chown("grp", 0, otherGID)
	write("pub", "public\n", 0o644)
	write("w666", "anyone\n", 0o666)
	write("secret", "secret\n", 0o600)
	mkdir("open", 0o777)
	write("mine", "nobody's\n", 0o644)
	chown("mine", nobodyUID, otherGID)
	mkdir("open/d", 0o755) // root's, in a directory nobody may change
	mkdir("open/to", 0o777)
	for _, name := range []string{"x711", "x744"} {
		b, err := os.ReadFile("/bin/true")
		if err != nil {
			t.Fatal(err)
		}
		write(name, string(b), map[string]os.FileMode{"x711": 0o711, "x744": 0o744}[name])
	}
	if err := unix.Mkfifo(p("fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	hardlinks, _ := os.ReadFile("/proc/sys/fs/protected_hardlinks")

	q := shQuote
	cases := []struct {
		name   string
		groups []uint32
		script string
		want   string // "" to succeed, else a word of the error message
	}{
		{"read through a closed directory", nil, "cat " + q(p("private/f")), "Permission denied"},
		{"list a subdirectory of a closed directory", nil, "ls " + q(p("private/sub")), "Permission denied"},
		{"look up a missing name in a closed directory", nil, "stat " + q(p("private/missing")), "Permission denied"},
		{"list a directory without read permission", nil, "ls " + q(p("listonly")), "Permission denied"},
		{"read a file in a searchable directory", nil, "cat " + q(p("listonly/f")), ""},
		{"read a 0640 file as a member of its group", []uint32{otherGID}, "cat " + q(p("grp")), ""},
		{"read a 0640 file outside its group", nil, "cat " + q(p("grp")), "Permission denied"},
		{"truncate a 0644 file opened read-only", nil, "perl -e 'use Fcntl; sysopen(F, $ARGV[0], O_RDONLY|O_TRUNC) or die \"$!\\n\"' " + q(p("pub")), "Permission denied"},
		{"truncate a 0644 file by name", nil, "truncate -s 0 " + q(p("pub")), "Permission denied"},
		{"touch a 0666 file", nil, "touch " + q(p("w666")), ""},
		{"touch a 0644 file", nil, "touch " + q(p("pub")), "Permission denied"},
		{"set explicit times on a 0666 file", nil, "touch -d 2001-01-01 " + q(p("w666")), "Operation not permitted"},
		{"chown another's file", nil, "chown 65534 " + q(p("pub")), "Operation not permitted"},
		{"chgrp one's file to a group one is in", []uint32{otherGID}, "chgrp 65534 " + q(p("mine")) + " && chgrp 4242 " + q(p("mine")), ""},
		{"chgrp one's file to a group one is not in", nil, "chgrp 4243 " + q(p("mine")), "Operation not permitted"},
		{"run a 0711 program", nil, q(p("x711")), ""},
		{"run a 0744 program", nil, q(p("x744")), "Permission denied"},
		{"access(2) for writing a 0644 file", nil, "test -w " + q(p("pub")) + " || echo 'Permission denied'; exit 1", "Permission denied"},
		{"access(2) for reading a 0644 file", nil, "test -r " + q(p("pub")), ""},
		{"move a directory one may not write to another", nil, "mv " + q(p("open/d")) + " " + q(p("open/to/d")), "Permission denied"},
		{"unlink in a 0700 directory", nil, "rm -f " + q(p("private/f")), "Permission denied"},
		{"open another's 0600 FIFO", nil, "exec 3<>" + q(p("fifo")), "Permission denied"},
	}
	if strings.TrimSpace(string(hardlinks)) == "1" {
		cases = append(cases, struct {
			name   string
			groups []uint32
			script string
			want   string
		}{"hard-link another's 0600 file", nil, "ln " + q(p("secret")) + " " + q(p("open/l")), "Operation not permitted"})
	}
	for _, c := range cases {
		out, err := asNobodyIn(t, c.groups, c.script)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("as nobody, %s: %v, %q", c.name, err, out)
		case c.want != "" && err == nil:
			t.Errorf("as nobody, %s succeeded", c.name)
		case c.want != "" && !strings.Contains(out, c.want):
			t.Errorf("as nobody, %s: %v, %q, want %q", c.name, err, out, c.want)
		}
	}
	wantContent(t, p("pub"), []byte("public\n"))
	wantContent(t, p("private/f"), []byte("private\n"))

	// A chmod g+s by the owner outside the file's group keeps the rest.
	if out, err := asNobodyIn(t, nil, "chmod 2755 "+q(p("mine"))); err != nil {
		t.Fatalf("as nobody, chmod 2755 of its own file: %v %s", err, out)
	}
	if st := lstat(t, p("mine")); st.Mode&0o7777 != 0o755 {
		t.Errorf("after chmod 2755 by a caller outside the group, mode %o, want 755", st.Mode&0o7777)
	}
	// The closed directory opens again.
	if err := os.Chmod(p("private"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := asNobodyIn(t, nil, "cat "+q(p("private/f"))); err != nil || out != "private\n" {
		t.Errorf("as nobody, read after the directory opened again: %v %q", err, out)
	}
	s.finish()
}
