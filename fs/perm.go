package fs

// Permission checks.
//
// The mount checks every access itself, as the kernel's generic_permission
// would against the modes and owners geofs reports, instead of mounting
// with default_permissions. With default_permissions the kernel checks, but
// on this project's kernel (6.18) every create, unlink or rename in a
// directory marks the directory's cached attributes stale, mode included,
// and the next permission check in it waits on a GETATTR round trip: one
// more request per create and per unlink than the work itself
// (docs/DECISIONS.md, "Permissions are checked in the mount").
//
// Without default_permissions the kernel checks nothing on its own about
// search permission: a walk through a directory whose entries it has cached
// asks nobody. So an entry is cached only where everybody may search its
// directory (mode 0111 all set, no ACLs): there a search check cannot fail.
// In any other directory the kernel keeps its entries for no time at all
// and asks the mount again (LOOKUP) at every walk, and Lookup checks the
// caller's search permission (entryTimeout). A directory that stops being
// searchable by everybody has the entries the kernel cached in it dropped
// (dropChildEntries).
//
// A request carries the caller's fsuid, fsgid and thread id. Supplementary
// groups and capabilities come from /proc/TID/status, read only when the
// answer depends on them (the file's group grants other bits than
// everybody gets, or the answer without privileges is no).

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/geofs/geofs/store"
)

// Access modes (the kernel's MAY_READ, MAY_WRITE, MAY_EXEC).
const (
	mayExec  = 1
	mayWrite = 2
	mayRead  = 4
)

// Capability bits in CapEff.
const (
	capChown         = 0
	capDacOverride   = 1
	capDacReadSearch = 2
	capFowner        = 3
	capFsetidBit     = 4
)

// fmodeExec is the kernel's __FMODE_EXEC, set in the flags of the OPEN an
// execve makes: the file must be executable, not readable.
const fmodeExec = 0x20

// who is a request's caller as the checks see it.
type who struct {
	uid, gid, pid uint32
	internal      bool // not a kernel request: the mount itself
	loaded        bool
	creds         *creds // nil when /proc could not tell
}

// caller returns the caller of ctx's request.
func callerOf(ctx context.Context) *who {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return &who{internal: true}
	}
	return &who{uid: c.Uid, gid: c.Gid, pid: c.Pid}
}

func (w *who) load() *creds {
	if !w.loaded {
		w.loaded = true
		if w.pid != 0 {
			if c, err := readCreds(int(w.pid)); err == nil {
				w.creds = &c
			}
		}
	}
	return w.creds
}

// capable reports whether the caller holds capability bit c. Where its
// thread cannot be read (it lives in a process namespace the mount does
// not see), root is taken to hold every capability and others none.
func (w *who) capable(c int) bool {
	if w.internal {
		return true
	}
	if cr := w.load(); cr != nil {
		return cr.has(c)
	}
	return w.uid == 0
}

// inGroup reports whether gid is the caller's fsgid or one of its
// supplementary groups.
func (w *who) inGroup(gid uint32) bool {
	if w.gid == gid {
		return true
	}
	cr := w.load()
	return cr != nil && slices.Contains(cr.groups, gid)
}

// owns reports whether the caller owns a file of owner uid or holds
// CAP_FOWNER (the kernel's inode_owner_or_capable).
func (w *who) owns(uid uint32) bool {
	return w.internal || w.uid == uid || w.capable(capFowner)
}

// permits reports whether the caller may access a file with attributes a
// for mask (mayRead, mayWrite, mayExec), as the kernel's generic_permission.
func (w *who) permits(a *fuse.Attr, mask uint32) bool {
	if w.internal {
		return true
	}
	mode := a.Mode
	mask &= 7
	if mask*0o111&^mode == 0 {
		return true // everybody has it
	}
	if w.uid == a.Uid {
		if mask&^(mode>>6) == 0 {
			return true
		}
	} else {
		m := mode
		if mask&(mode^mode>>3) != 0 && w.inGroup(a.Gid) {
			m = mode >> 3
		}
		if mask&^m == 0 {
			return true
		}
	}
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		if mask&mayWrite == 0 && w.capable(capDacReadSearch) {
			return true
		}
		return w.capable(capDacOverride)
	}
	if mask == mayRead && w.capable(capDacReadSearch) {
		return true
	}
	return (mask&mayExec == 0 || mode&0o111 != 0) && w.capable(capDacOverride)
}

// attrOf returns id's attributes as the kernel is told them (an open
// file's buffered chmod included).
func (f *FS) attrOf(id store.FileID) (*fuse.Attr, error) {
	var a fuse.Attr
	if err := f.currentAttr(id, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// access checks that the caller of ctx may access n for mask: 0, EACCES,
// or the error reading n's attributes.
func (n *Node) access(ctx context.Context, mask uint32) syscall.Errno {
	w := callerOf(ctx)
	if w.internal {
		return 0
	}
	a, err := n.fsys.attrOf(n.id)
	if err != nil {
		return n.errno(ctx, err, "access")
	}
	if !w.permits(a, mask) {
		return syscall.EACCES
	}
	return 0
}

// searchable reports whether everybody may search a directory of mode
// mode, so that no search check can fail in it.
func searchable(mode uint32) bool { return mode&0o111 == 0o111 }

// entryTimeout is how long the kernel may keep an entry of directory dir:
// the mount's cache timeout where everybody may search dir, else none
// (see the top of this file).
func (f *FS) entryTimeout(dir store.FileID) time.Duration {
	v, err := f.s.Head(dir)
	if err != nil || !searchable(v.Mode) {
		return 0
	}
	return f.opts.CacheTimeout
}

// setEntryTimeout sets how long the kernel may keep out, an entry of
// directory dir. go-fuse's bridge leaves it as set (Options.EntryTimeout
// is nil).
func (f *FS) setEntryTimeout(dir store.FileID, out *fuse.EntryOut) {
	out.SetEntryTimeout(f.entryTimeout(dir))
}

// noNegativeEntry marks the reply to a lookup that found no name in a
// directory not everybody may search, so that the kernel does not keep the
// absence either: the bridge turns ENOENT into a cached negative entry
// only when the node left the timeout unset.
func (f *FS) noNegativeEntry(dir store.FileID, out *fuse.EntryOut) {
	if f.entryTimeout(dir) == 0 {
		out.SetEntryTimeout(time.Nanosecond)
	}
}

// dropChildEntries makes the kernel forget the entries it cached in
// directory node n, which not everybody may search any more. It runs
// after the request that changed the mode has been answered: the kernel
// holds the directory's lock until then, and forgetting an entry takes it.
func (f *FS) dropChildEntries(n *gofs.Inode) {
	for name := range n.Children() {
		n.NotifyEntry(name)
	}
}

// protectedHardlinks reports whether fs.protected_hardlinks is on (as on
// every major distribution): then only the owner, or someone who may read
// and write a plain file, may link it.
var protectedHardlinks = sync.OnceValue(func() bool {
	b, err := os.ReadFile("/proc/sys/fs/protected_hardlinks")
	return err != nil || strings.TrimSpace(string(b)) != "0"
})

// mayLink applies the kernel's may_linkat to a link of a file with
// attributes a by the caller.
func (w *who) mayLink(a *fuse.Attr) bool {
	if w.owns(a.Uid) || !protectedHardlinks() {
		return true
	}
	mode := a.Mode
	if mode&syscall.S_IFMT != syscall.S_IFREG || mode&syscall.S_ISUID != 0 ||
		mode&(syscall.S_ISGID|syscall.S_IXGRP) == syscall.S_ISGID|syscall.S_IXGRP {
		return false
	}
	return w.permits(a, mayRead|mayWrite)
}
