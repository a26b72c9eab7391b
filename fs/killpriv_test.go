package fs

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
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
