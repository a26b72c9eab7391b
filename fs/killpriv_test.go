package fs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/geofs/geofs/store"
)

func TestParseCreds(t *testing.T) {
	status := "Name:\tsh\nUid:\t65534\t65534\t65534\t65534\nGroups:\t4 24 100 \nCapEff:\t0000000000000000\n"
	c, err := parseCreds(strings.NewReader(status))
	if err != nil || c.capFsetid || len(c.groups) != 3 || c.groups[2] != 100 {
		t.Fatalf("unprivileged: %+v %v", c, err)
	}
	c, err = parseCreds(strings.NewReader("Groups:\t\nCapEff:\t000001ffffffffff\n"))
	if err != nil || !c.capFsetid || len(c.groups) != 0 {
		t.Fatalf("root: %+v %v", c, err)
	}
	c, err = parseCreds(strings.NewReader("CapEff:\t0000000000000010\n")) // CAP_FSETID alone
	if err != nil || !c.capFsetid {
		t.Fatalf("CAP_FSETID alone: %+v %v", c, err)
	}
	for _, bad := range []string{"Groups:\t1\n", "CapEff:\tzz\n"} {
		if _, err := parseCreds(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestKilledMode(t *testing.T) {
	// This test's own thread stands for the caller: it runs as root in CI
	// (CAP_FSETID), so for it the group rule keeps setgid.
	self := &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Uid: 0, Gid: 12345}, Pid: uint32(os.Getpid())}}
	gone := &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Gid: 12345}, Pid: 0}} // no /proc/0
	member := &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Gid: 7}, Pid: 0}}
	for _, c := range []struct {
		name       string
		ctx        context.Context
		mode, want uint32
	}{
		{"setuid always goes", gone, 0o4755, 0o0755},
		{"setgid with group execute goes", member, 0o2775, 0o0775},
		{"setgid without group execute stays for a member", member, 0o2765, 0o2765},
		{"setgid without group execute goes for a stranger", gone, 0o2765, 0o0765},
		{"nothing to clear", gone, 0o0777, 0o0777},
		{"sticky stays", gone, 0o1777, 0o1777},
		{"a caller that is not a FUSE request is a stranger", context.Background(), 0o6765, 0o0765},
	} {
		if got := killedMode(c.ctx, c.mode, 7); got != c.want {
			t.Errorf("%s: killedMode(%04o) = %04o, want %04o", c.name, c.mode, got, c.want)
		}
	}
	if os.Geteuid() == 0 {
		if got := killedMode(self, 0o6765, 7); got != 0o2765 {
			t.Errorf("caller with CAP_FSETID: killedMode(6765) = %04o, want 2765", got)
		}
	}
}

// TestChmodDuringKillPrivsIsKept: an open with O_TRUNC by a caller without
// CAP_FSETID clears the file's setuid and setgid bits, and the kernel does
// not serialize that open with a chmod of the same file. A chmod that comes
// while the open works out the cleared mode must not be undone by it: in
// either order the file ends with the chmod's mode, which has no bits to
// clear.
func TestChmodDuringKillPrivsIsKept(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	id := reviewFile(t, s, "f")
	err := s.Update(store.OpSetattr, func(tx *store.Tx) error {
		v, err := tx.Head(id)
		if err != nil {
			return err
		}
		nv := v.Clone()
		nv.Mode = 0o6755
		_, err = tx.Put(nv)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// killPrivs tells the kernel the attributes changed: the node must be
	// one the kernel knows.
	mnt := mountTestFS(t, f)
	if _, err := os.Stat(filepath.Join(mnt, "f")); err != nil {
		t.Fatal(err)
	}
	n := f.kernelNodes(id)[0].Operations().(*Node)
	of, err := f.acquire(id, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.releaseWriter(of)

	// The chmod runs as Setattr runs it for an open file, while the open
	// asks whether its caller is unprivileged: after the open has read the
	// mode. With the mode read and set under one hold of the open file's
	// lock, the chmod waits for the open instead.
	chmodded := make(chan error, 1)
	unprivileged := func() bool {
		go func() {
			o := f.hold(id)
			o.setattr(attrChange{setMode: true, mode: 0o700})
			chmodded <- f.release(o)
		}()
		select {
		case err := <-chmodded:
			chmodded <- err
		case <-time.After(200 * time.Millisecond):
		}
		return true
	}
	if err := n.killPrivs(context.Background(), of, unprivileged); err != nil {
		t.Fatal(err)
	}
	if err := <-chmodded; err != nil {
		t.Fatal(err)
	}
	var a fuse.Attr
	if err := f.currentAttr(id, &a); err != nil {
		t.Fatal(err)
	}
	if got := a.Mode & 0o7777; got != 0o700 {
		t.Errorf("mode %#o after a chmod to 0700 raced an open that clears setuid and setgid, want 0700", got)
	}
}
