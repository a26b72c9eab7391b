package integration

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSpecialFiles makes a named pipe, a unix socket and device nodes and
// checks their types, modes and device numbers, also after a remount.
func TestSpecialFiles(t *testing.T) {
	s := newSite(t)
	s.mount()
	if err := unix.Mkfifo(s.path("fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	dev := int(unix.Mkdev(1, 3))
	if err := unix.Mknod(s.path("chr"), unix.S_IFCHR|0o600, dev); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(s.path("blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", s.path("sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // keep the socket's name
	ln.Close()
	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			name string
			mode uint32
			rdev uint64
		}{
			{"fifo", unix.S_IFIFO | 0o640, 0},
			{"chr", unix.S_IFCHR | 0o600, uint64(dev)},
			{"blk", unix.S_IFBLK | 0o600, unix.Mkdev(7, 0)},
			{"sock", unix.S_IFSOCK, 0},
		} {
			st := lstat(t, s.path(c.name))
			if c.name == "sock" {
				st.Mode &^= 0o7777 // the socket's mode follows the umask
			}
			if st.Mode != c.mode || st.Rdev != c.rdev {
				t.Errorf("%s %s: mode %o rdev %d, want %o %d", when, c.name, st.Mode, st.Rdev, c.mode, c.rdev)
			}
		}
	}
	check("mounted")
	s.remount()
	check("after remount")
	s.finish()
}

// TestModeZeroLocksOthersOut checks that mode 0000 is reported as it is,
// so the kernel denies other users (go-fuse would report 0644 otherwise).
func TestModeZeroLocksOthersOut(t *testing.T) {
	s := newSite(t)
	openTestDir(t, s)
	s.mount()
	f := s.path("secret")
	mustWrite(t, f, []byte("top secret\n"))
	if err := unix.Chmod(f, 0); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, f); st.Mode&0o7777 != 0 {
		t.Fatalf("mode after chmod 0: %o", st.Mode&0o7777)
	}
	if out, err := asNobody(t, "cat "+shQuote(f)); err == nil {
		t.Fatalf("another user read a mode-0000 file: %q", out)
	}
	s.finish()
}
