package fs

import (
	"context"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/geofs/geofs/store"
)

// handle is one open file description of a regular file.
type handle struct {
	node *Node
	of   *openFile
	once sync.Once
	// readOnly: opened O_RDONLY without O_TRUNC. Closing it does not
	// commit what the file's other handles buffered: a reader's close
	// would otherwise make a version of a file being written (one per
	// read of a growing log, say) and wait for the writer's commit.
	readOnly bool
}

var (
	_ = (gofs.FileReader)((*handle)(nil))
	_ = (gofs.FileWriter)((*handle)(nil))
	_ = (gofs.FileFlusher)((*handle)(nil))
	_ = (gofs.FileFsyncer)((*handle)(nil))
	_ = (gofs.FileReleaser)((*handle)(nil))
	_ = (gofs.FileAllocater)((*handle)(nil))
	_ = (gofs.FileLseeker)((*handle)(nil))
	_ = (gofs.FileGetattrer)((*handle)(nil))
)

// Open opens a regular file. O_TRUNC empties it.
func (n *Node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	v, errno := n.head(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	if v.Kind != store.KindFile {
		return nil, 0, syscall.EISDIR
	}
	return n.openFile(ctx, v, flags)
}

func (n *Node) openFile(ctx context.Context, v *store.Version, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	readOnly := flags&syscall.O_ACCMODE == syscall.O_RDONLY && flags&syscall.O_TRUNC == 0
	of, err := n.fsys.acquire(v.ID, !readOnly)
	if err != nil {
		return nil, 0, n.errno(ctx, err, "open")
	}
	if flags&syscall.O_TRUNC != 0 { // like ext4, even with O_RDONLY
		// Bits first: an open that fails truncates nothing.
		if err := n.killPrivs(ctx, of, func() bool { return n.fsys.unprivileged(ctx) }); err != nil {
			n.fsys.releaseWriter(of) // O_TRUNC: counted as a writer
			return nil, 0, n.errno(ctx, err, "open")
		}
		of.truncate(0)
	}
	h := &handle{node: n, of: of, readOnly: readOnly}
	var fuseFlags uint32 = fuse.FOPEN_KEEP_CACHE
	if h.readOnly {
		// Nothing to commit at close: the kernel need not ask (one
		// request fewer for every file read).
		fuseFlags |= fuse.FOPEN_NOFLUSH
	}
	// The kernel's cached pages stay valid while only this mount changes
	// files, so keep them across opens; but while a reader still reads an
	// older version (a peer's version arrived), the pages are its: bypass.
	if n.fsys.pagesShared(v.ID) {
		fuseFlags = fuseFlags&^fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_DIRECT_IO
	} else if of.stale.Load() > 0 {
		fuseFlags &^= fuse.FOPEN_KEEP_CACHE // the kernel drops them at open
	}
	return h, fuseFlags, 0
}

func (h *handle) errno(ctx context.Context, err error, op string) syscall.Errno {
	return h.node.errno(ctx, err, op)
}

// Read serves uncommitted and committed bytes alike.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	vec, _, err := h.of.readVec(dest, uint64(off), true)
	if err != nil {
		return nil, h.errno(ctx, err, "read")
	}
	// A vector result is written to /dev/fuse with one writev, straight
	// from the verified blocks. go-fuse first tries to splice a
	// ReadResultData through a pipe, which costs a write into the pipe and
	// a splice to drain it before it falls back to the same writev: two
	// wasted system calls per read, a quarter of a cold 4 KiB read's time
	// in the mount (docs/DECISIONS.md).
	return fuse.ReadResultVector(vec), 0
}

// Write buffers data; it becomes a version at the next commit.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	// Bits first: the write may commit at once (a full buffer), and no
	// version may hold this caller's bytes with bits it clears.
	if err := h.node.killPrivs(ctx, h.of, func() bool { return h.node.fsys.unprivileged(ctx) }); err != nil {
		return 0, h.errno(ctx, err, "write")
	}
	if err := h.of.write(data, uint64(off)); err != nil {
		return 0, h.errno(ctx, err, "write")
	}
	return uint32(len(data)), 0
}

// Flush (every close of a writable handle) commits buffered writes, so
// close reports errors; read-only handles are opened with FOPEN_NOFLUSH and
// commit nothing here (see handle.readOnly). A truncation with nothing
// written after it waits for the next write's commit or the release: a
// shell's 'echo x > f' opens with O_TRUNC, closes a duplicate of the
// descriptor, then writes, and committing at that first close would make an
// empty version in between, which peers would see.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	if h.readOnly || h.of.onlyTruncated() {
		return 0
	}
	return h.errno(ctx, h.of.commit(), "flush")
}

// Fsync returns once the data and its version are durable (invariant 4).
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if err := h.of.commit(); err != nil {
		return h.errno(ctx, err, "fsync")
	}
	return h.errno(ctx, h.node.fsys.s.Sync(), "fsync")
}

// Release commits what is left and drops the handle. A read-only handle
// commits only as the file's last one (an attribute change made through
// it, say); otherwise the writers' own closes and the periodic commit do.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	var errno syscall.Errno
	h.once.Do(func() {
		if h.readOnly {
			errno = h.errno(ctx, h.node.fsys.release(h.of), "release")
			return
		}
		err := h.of.commit()
		// A change folded in since that commit is committed by the
		// release if nobody else holds the state (after a failed commit,
		// it tries once more; the first error is the one reported).
		if rerr := h.node.fsys.releaseWriter(h.of); err == nil {
			err = rerr
		}
		errno = h.errno(ctx, err, "release")
	})
	return errno
}

// Getattr on an open handle also sees uncommitted writes.
func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.node.Getattr(ctx, h, out)
}

// Allocate supports plain preallocation (which may extend the file),
// FALLOC_FL_KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE. Space is not reserved:
// chunks are written when data is, so preallocation cannot promise later
// writes will fit. A punched hole or a zeroed range becomes a hole in the
// file's extents, like a hole left by seeking past the end: it stores
// nothing and reads as zeros. COLLAPSE_RANGE and INSERT_RANGE would shift
// every later byte; they are refused (EOPNOTSUPP), as on most file systems.
// Like a write, it clears setuid, setgid and capabilities; its request
// does not say whether the caller holds CAP_FSETID, so /proc does (only
// for a file with setuid or setgid set).
func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	const keep, punch, zero = unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE, unix.FALLOC_FL_ZERO_RANGE
	switch mode {
	case 0, keep, punch | keep, zero, zero | keep:
	default: // COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE
		return syscall.EOPNOTSUPP
	}
	if err := h.node.killPrivs(ctx, h.of, func() bool { return !callerCapable(ctx) }); err != nil {
		return h.errno(ctx, err, "fallocate")
	}
	switch mode {
	case 0:
		h.of.extend(off + size)
	case punch | keep, zero | keep:
		h.of.zero(off, off+size, false)
	case zero:
		h.of.zero(off, off+size, true)
	} // keep alone preallocates past the end: nothing to do
	return 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the committed extents (holes
// are explicit in manifests).
func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	if err := h.of.commit(); err != nil {
		return 0, h.errno(ctx, err, "lseek")
	}
	h.of.mu.Lock()
	defer h.of.mu.Unlock()
	x := h.of.base
	if off >= x.Size {
		return 0, syscall.ENXIO
	}
	for k := x.Find(off); k < len(x.Refs); k++ {
		start := max(off, x.Offs[k])
		if x.Refs[k].IsHole() == (whence == unix.SEEK_HOLE) {
			return start, 0
		}
	}
	if whence == unix.SEEK_HOLE {
		return x.Size, 0
	}
	return 0, syscall.ENXIO
}

// Setattr changes mode, owner, size and times as one new version. On an
// open file the changes join its next commit instead.
func (n *Node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	kill, err := n.setattrKills(ctx, in)
	if err != nil {
		return n.errno(ctx, err, "setattr")
	}
	if kill.caps {
		if err := n.dropCaps(); err != nil {
			return n.errno(ctx, err, "setattr")
		}
	}
	if size, ok := in.GetSize(); ok {
		// The new size and the rest (cleared setuid and setgid bits,
		// times) make one version: none holds the shorter content with
		// the bits a truncation by this caller clears.
		if errno := n.setSize(ctx, fh, size, kill.apply(attrChangeOf(in, time.Now().UnixNano()))); errno != 0 {
			return errno
		}
		return n.errno(ctx, n.fsys.currentAttr(n.id, &out.Attr), "setattr")
	}
	for of := n.fsys.hold(n.id); of != nil; of = n.fsys.hold(n.id) {
		// Into the open state, whose buffered changes would otherwise be
		// committed over it: with its handles' changes if it has handles,
		// else at once, undone if that fails. A state detached meanwhile
		// (a peer's version came) is no longer the file's: try again.
		c := kill.apply(attrChangeOf(in, time.Now().UnixNano()))
		folded, current := n.fsys.foldShared(of, c)
		if !current {
			n.fsys.release(of)
			continue
		}
		var err error
		if !folded {
			err = of.commitChange(func() { of.setattrLocked(c) })
		}
		if rerr := n.fsys.release(of); rerr != nil {
			// Others' changes, and a folded chmod, stay buffered: the
			// chmod itself has succeeded.
			n.errno(ctx, rerr, "commit")
		}
		if err != nil {
			return n.errno(ctx, err, "setattr")
		}
		return n.errno(ctx, n.fsys.currentAttr(n.id, &out.Attr), "setattr")
	}
	var nv *store.Version
	err = n.fsys.s.Update(store.OpSetattr, func(tx *store.Tx) error {
		v, err := tx.Head(n.id)
		if err != nil {
			return err
		}
		nv = v.Clone()
		if !applySetattr(nv, kill.apply(attrChangeOf(in, tx.Wall())), tx.Wall()) {
			nv = v
			return nil
		}
		if _, err = tx.Put(nv); err != nil {
			return err
		}
		if nv.Kind == store.KindDir && in.Valid&(fuse.FATTR_MTIME|fuse.FATTR_MTIME_NOW) != 0 {
			// An explicit time wins over the last entry change.
			return tx.SetDirMtime(nv.ID, nv.Mtime)
		}
		return nil
	})
	if err != nil {
		return n.errno(ctx, err, "setattr")
	}
	return n.errno(ctx, n.fsys.fillAttr(nv, &out.Attr), "setattr")
}

// applySetattr makes the changes c in v and reports whether there were any.
func applySetattr(v *store.Version, c attrChange, now int64) bool {
	if !c.any() {
		return false
	}
	a := fileAttrs{mode: v.Mode, uid: v.UID, gid: v.GID, atime: v.Atime, mtime: v.Mtime}
	(&layer{attrs: c, ctime: now}).apply(&a)
	v.Mode, v.UID, v.GID, v.Atime, v.Mtime, v.Ctime = a.mode, a.uid, a.gid, a.atime, a.mtime, a.ctime
	return true
}

// attrChangeOf returns the mode, owner and time changes in in.
func attrChangeOf(in *fuse.SetAttrIn, now int64) attrChange {
	var c attrChange
	if m, ok := in.GetMode(); ok {
		c.setMode, c.mode = true, m&07777
	}
	if uid, ok := in.GetUID(); ok {
		c.setUID, c.uid = true, uid
	}
	if gid, ok := in.GetGID(); ok {
		c.setGID, c.gid = true, gid
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_ATIME_NOW) != 0 {
		c.setAtime, c.atime = true, now
		if a, ok := in.GetATime(); ok && in.Valid&fuse.FATTR_ATIME_NOW == 0 {
			c.atime = a.UnixNano()
		}
	}
	if in.Valid&(fuse.FATTR_MTIME|fuse.FATTR_MTIME_NOW) != 0 {
		c.setMtime, c.mtime = true, now
		if m, ok := in.GetMTime(); ok && in.Valid&fuse.FATTR_MTIME_NOW == 0 {
			c.mtime = m.UnixNano()
		}
	}
	return c
}

// setSize truncates or extends a file and commits it, with the changes c:
// through the descriptor's open state for ftruncate (fh), else the file's.
func (n *Node) setSize(ctx context.Context, fh gofs.FileHandle, size uint64, c attrChange) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		return n.errno(ctx, h.of.resize(size, c), "truncate")
	}
	// A truncation by name while the file is open for writing (which is
	// how an open with O_TRUNC reaches the mount: see Options in fs.go)
	// joins the writers' buffered changes, committed with them, so that
	// overwriting a file makes one version and not an empty one first.
	if n.fsys.foldTruncate(n.id, size, c) {
		return 0
	}
	v, errno := n.head(ctx)
	if errno != 0 {
		return errno
	}
	if v.Kind == store.KindDir {
		return syscall.EISDIR
	}
	of, err := n.fsys.acquire(v.ID, false)
	if err != nil {
		return n.errno(ctx, err, "truncate")
	}
	errno = n.errno(ctx, of.resize(size, c), "truncate")
	if err := n.fsys.release(of); err != nil {
		n.errno(ctx, err, "commit") // a change folded in meanwhile: it stays buffered
	}
	return errno
}
