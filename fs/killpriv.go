package fs

// Clearing setuid, setgid and file capabilities when a file changes.
//
// A local file system clears a regular file's setuid bit, and its setgid
// bit where group execute is set or the caller is not in the file's group,
// when a caller without CAP_FSETID writes or truncates it; chown clears
// them whoever calls. Its security.capability attribute goes on any write,
// truncation or chown.
//
// A FUSE kernel can do this itself, but only by asking the mount for
// security.capability before every write system call: a round trip that
// made 4 KiB writes 1.7 times slower. With FUSE_HANDLE_KILLPRIV_V2 it asks
// once per inode (marking the inode S_NOSEC), and the mount clears the bits
// (docs/DECISIONS.md). The kernel says whether the caller lacks CAP_FSETID
// with a flag in WRITE and OPEN (O_TRUNC) requests and in SETATTR's valid
// mask (truncate; it is always set for chown of anything but a directory).
//
// go-fuse's node API hands SETATTR's mask to Setattr but drops the flags of
// WRITE and OPEN. rawFS sits between go-fuse's server and its node bridge
// and records them under the request's cancel channel, which is unique
// among requests in flight and reaches the handler as its context's
// Cancel; unprivileged looks them up.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/geofs/geofs/store"
)

// capXattr holds a file's capabilities.
const capXattr = "security.capability"

// Mount mounts f at mnt and serves it in the background until unmounted.
func (f *FS) Mount(mnt string, opts *gofs.Options) (*fuse.Server, error) {
	raw := &rawFS{RawFileSystem: gofs.NewNodeFS(f.Root(), opts), fsys: f}
	server, err := fuse.NewServer(raw, mnt, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, err
	}
	return server, nil
}

// rawFS passes requests to go-fuse's node bridge, noting for the handlers
// which WRITE and OPEN requests come from a caller without CAP_FSETID.
type rawFS struct {
	fuse.RawFileSystem
	fsys *FS
}

func (r *rawFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	defer r.fsys.noteUnprivileged(cancel, in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0)()
	return r.RawFileSystem.Write(cancel, in, data)
}

func (r *rawFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	defer r.fsys.noteUnprivileged(cancel, in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0)()
	return r.RawFileSystem.Writev(cancel, in, data)
}

func (r *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	defer r.fsys.noteUnprivileged(cancel, in.Mode&fuse.OPEN_KILL_SUIDGID != 0)() // Mode holds open_flags
	return r.RawFileSystem.Open(cancel, in, out)
}

// noteUnprivileged records, while a request runs, that its caller lacks
// CAP_FSETID; the returned function forgets it.
func (f *FS) noteUnprivileged(cancel <-chan struct{}, yes bool) func() {
	if !yes {
		return func() {}
	}
	f.unpriv.Store(cancel, struct{}{})
	return func() { f.unpriv.Delete(cancel) }
}

// unprivileged reports whether the kernel flagged the WRITE or OPEN request
// of ctx as coming from a caller without CAP_FSETID.
func (f *FS) unprivileged(ctx context.Context) bool {
	c, ok := ctx.(*fuse.Context)
	if !ok {
		return false
	}
	_, yes := f.unpriv.Load(c.Cancel)
	return yes
}

// killedMode returns mode without the setuid bit, and without the setgid
// bit if group execute is set or the caller is neither in group gid nor
// holds CAP_FSETID (the kernel's setattr_should_drop_suidgid, for a caller
// known to lack CAP_FSETID, and chown_common).
func killedMode(ctx context.Context, mode, gid uint32) uint32 {
	mode &^= syscall.S_ISUID
	if mode&syscall.S_ISGID != 0 && (mode&syscall.S_IXGRP != 0 || !inGroupOrCapable(ctx, gid)) {
		mode &^= syscall.S_ISGID
	}
	return mode
}

// inGroupOrCapable reports whether the caller of ctx is in group gid or
// holds CAP_FSETID. A request carries only the caller's uid, gid and
// thread id; its supplementary groups and capabilities come from
// /proc/TID/status. When that cannot be read (the thread is gone), the
// answer is no, which clears the bit: the safe side.
func inGroupOrCapable(ctx context.Context, gid uint32) bool {
	c, ok := ctx.(*fuse.Context)
	if !ok {
		return false
	}
	if c.Gid == gid {
		return true
	}
	st, err := readCreds(int(c.Pid))
	return err == nil && (st.capFsetid || slices.Contains(st.groups, gid))
}

// callerCapable reports whether the caller of ctx holds CAP_FSETID, for the
// changes whose requests carry no flag saying so (fallocate).
func callerCapable(ctx context.Context) bool {
	c, ok := ctx.(*fuse.Context)
	if !ok {
		return false
	}
	st, err := readCreds(int(c.Pid))
	return err == nil && st.capFsetid
}

type creds struct {
	groups    []uint32
	capFsetid bool // in CapEff, and the thread is in the mount's user namespace
}

const capFsetid = 4 // CAP_FSETID's bit in CapEff

// readCreds reads a thread's supplementary groups and whether it holds
// CAP_FSETID. CapEff counts only in the mount's own user namespace: root
// of a namespace any user can make (unshare -Ur) holds it there, which is
// not what the kernel's capable() asks.
func readCreds(tid int) (creds, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return creds{}, err
	}
	defer f.Close()
	c, err := parseCreds(f)
	if err != nil {
		return c, fmt.Errorf("/proc/%d/status: %w", tid, err)
	}
	if c.capFsetid {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", tid))
		own, err2 := ownUserNS()
		c.capFsetid = err == nil && err2 == nil && ns == own
	}
	return c, nil
}

var ownUserNS = sync.OnceValues(func() (string, error) { return os.Readlink("/proc/self/ns/user") })

// parseCreds reads the Groups and CapEff lines of a /proc status file.
func parseCreds(r io.Reader) (creds, error) {
	var c creds
	capEff := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, _ := strings.Cut(sc.Text(), ":")
		switch key {
		case "Groups":
			for _, g := range strings.Fields(val) {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					c.groups = append(c.groups, uint32(n))
				}
			}
		case "CapEff":
			caps, err := strconv.ParseUint(strings.TrimSpace(val), 16, 64)
			if err != nil {
				return c, fmt.Errorf("CapEff %q: %w", val, err)
			}
			c.capFsetid, capEff = caps&(1<<capFsetid) != 0, true
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if !capEff {
		return c, errors.New("no CapEff line")
	}
	return c, nil
}

// killPrivs prepares a change of an open regular file's content (a write,
// an O_TRUNC open, fallocate): unless the caller may keep them (asked of
// unprivileged only when the file has either bit), the setuid and setgid
// bits go in the file's next commit; its capabilities go now. The kernel is
// told to drop the attributes it cached.
func (n *Node) killPrivs(ctx context.Context, of *openFile, unprivileged func() bool) error {
	var v *store.Version
	changed, err := of.killMode(func(head *store.Version, a fileAttrs) (uint32, bool) {
		v = head
		if a.mode&(syscall.S_ISUID|syscall.S_ISGID) == 0 || !unprivileged() {
			return 0, false
		}
		m := killedMode(ctx, a.mode, a.gid)
		return m, m != a.mode
	})
	if err != nil {
		return err
	}
	if _, ok := v.Xattr(capXattr); ok {
		if err := n.dropCaps(); err != nil {
			return err
		}
		changed = true
	}
	if changed {
		n.NotifyContent(-1, 0) // attributes only
	}
	return nil
}

// dropCaps removes the file's capabilities, if it still has them.
func (n *Node) dropCaps() error {
	// Most files have none: look before taking the write path (every
	// truncation, open(O_TRUNC) included, comes here).
	if v, err := n.fsys.s.Head(n.id); err != nil {
		return err
	} else if _, ok := v.Xattr(capXattr); !ok {
		return nil
	}
	if err := n.putXattr(capXattr, nil, unix.XATTR_REPLACE); !errors.Is(err, syscall.ENODATA) {
		return err
	}
	return nil
}

// setattrKill is what a SETATTR clears besides what it asks for.
type setattrKill struct {
	mode    bool   // set the mode to newMode
	newMode uint32 // the mode without its setuid and setgid bits
	caps    bool   // drop the capabilities
}

// apply adds the mode change of k to c.
func (k setattrKill) apply(c attrChange) attrChange {
	if k.mode {
		c.setMode, c.mode = true, k.newMode
	}
	return c
}

// setattrKills returns what a SETATTR clears on anything but a directory:
//   - a truncation or chown: the capabilities, and the setuid and setgid
//     bits if in asks for it (FATTR_KILL_SUIDGID);
//   - an empty one: the bits, by chown's rule. It is what chown(f, -1, -1)
//     sends, and what the kernel sends before a write or fallocate that
//     clears them (it drops the capabilities itself). That is also sent
//     when only capabilities go, before a write by a caller with
//     CAP_FSETID to a file with capabilities: then the setuid bit goes
//     too, which ext4 would keep (docs/DECISIONS.md).
func (n *Node) setattrKills(ctx context.Context, in *fuse.SetAttrIn) (setattrKill, error) {
	var k setattrKill
	_, sized := in.GetSize()
	_, uid := in.GetUID()
	_, gid := in.GetGID()
	empty := in.Valid&^(fuse.FATTR_FH|fuse.FATTR_LOCKOWNER|fuse.FATTR_CTIME) == 0
	if !sized && !uid && !gid && !empty {
		return k, nil
	}
	var a fuse.Attr
	if err := n.fsys.currentAttr(n.id, &a); err != nil {
		return k, err
	}
	if a.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return k, nil
	}
	k.caps = !empty
	if empty || in.Valid&fuse.FATTR_KILL_SUIDGID != 0 {
		mode := a.Mode & 0o7777
		if m, ok := in.GetMode(); ok {
			mode = m & 0o7777
		}
		if m := killedMode(ctx, mode, a.Gid); m != mode {
			k.mode, k.newMode = true, m
		}
	}
	return k, nil
}
