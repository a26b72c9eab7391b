package fs

import (
	"context"
	"errors"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/geofs/geofs/store"
)

// Node is a file, directory or symlink: a file id in the store.
type Node struct {
	gofs.Inode
	fsys *FS
	id   store.FileID
}

var (
	_ = (gofs.NodeLookuper)((*Node)(nil))
	_ = (gofs.NodeGetattrer)((*Node)(nil))
	_ = (gofs.NodeSetattrer)((*Node)(nil))
	_ = (gofs.NodeMkdirer)((*Node)(nil))
	_ = (gofs.NodeCreater)((*Node)(nil))
	_ = (gofs.NodeSymlinker)((*Node)(nil))
	_ = (gofs.NodeMknoder)((*Node)(nil))
	_ = (gofs.NodeLinker)((*Node)(nil))
	_ = (gofs.NodeReadlinker)((*Node)(nil))
	_ = (gofs.NodeUnlinker)((*Node)(nil))
	_ = (gofs.NodeRmdirer)((*Node)(nil))
	_ = (gofs.NodeRenamer)((*Node)(nil))
	_ = (gofs.NodeStatfser)((*Node)(nil))
	_ = (gofs.NodeOpener)((*Node)(nil))
	_ = (gofs.NodeOpendirHandler)((*Node)(nil))
	_ = (gofs.NodeGetxattrer)((*Node)(nil))
	_ = (gofs.NodeSetxattrer)((*Node)(nil))
	_ = (gofs.NodeListxattrer)((*Node)(nil))
	_ = (gofs.NodeRemovexattrer)((*Node)(nil))
	_ = (gofs.NodeAccesser)((*Node)(nil))
)

func (n *Node) errno(ctx context.Context, err error, op string) syscall.Errno {
	return n.fsys.toErrno(ctx, err, op, n.id)
}

var kindModes = map[store.Kind]uint32{
	store.KindFile: syscall.S_IFREG, store.KindDir: syscall.S_IFDIR, store.KindLink: syscall.S_IFLNK,
	store.KindFifo: syscall.S_IFIFO, store.KindSocket: syscall.S_IFSOCK,
	store.KindChar: syscall.S_IFCHR, store.KindBlock: syscall.S_IFBLK,
}

func kindMode(k store.Kind) uint32 { return kindModes[k] }

// modeKind returns the kind for the S_IFMT bits of mode.
func modeKind(mode uint32) (store.Kind, bool) {
	for k, m := range kindModes {
		if m == mode&syscall.S_IFMT {
			return k, true
		}
	}
	return 0, false
}

// fillAttr sets out from v, the local directory state and any uncommitted
// writes of an open file.
func (f *FS) fillAttr(v *store.Version, out *fuse.Attr) error {
	var o attrOverlay
	if of := f.lookupOpen(v.ID); of != nil {
		o = of.changes()
	}
	return f.fillAttrWith(v, o, out)
}

// currentAttr sets out to file id's attributes now. The open file's
// changes are taken before the head is read: a commit that lands in
// between then shows in the head, whereas the other order could pair the
// head from before a commit with an open file clean after it (a size
// change made at close, committed at release, read as the old size).
func (f *FS) currentAttr(id store.FileID, out *fuse.Attr) error {
	var o attrOverlay
	if of := f.lookupOpen(id); of != nil {
		o = of.changes()
	}
	v, err := f.s.Head(id)
	if err != nil {
		return err
	}
	return f.fillAttrWith(v, o, out)
}

// fillAttrWith sets out from v, the local directory state and o, the
// uncommitted changes of v's file if it is open.
func (f *FS) fillAttrWith(v *store.Version, o attrOverlay, out *fuse.Attr) error {
	out.Ino = v.ID.Ino()
	out.Mode = kindMode(v.Kind) | v.Mode
	out.Uid, out.Gid = v.UID, v.GID
	out.Size = v.Size
	out.Rdev = uint32(v.Rdev)
	out.Nlink = uint32(len(v.Links))
	mtime, ctime := v.Mtime, v.Ctime
	switch v.Kind {
	case store.KindDir:
		st, err := f.s.DirState(v.ID)
		if err != nil {
			return err
		}
		out.Nlink, out.Size = 2+st.Subdirs, 4096
		mtime, ctime = st.Mtime, max(ctime, st.Ctime)
		if mtime == 0 {
			mtime = v.Mtime
		}
	case store.KindLink:
		out.Size = uint64(len(v.Target))
	}
	atime := v.Atime
	if v.Kind == store.KindFile {
		if o.dirty {
			a := fileAttrs{size: out.Size, mode: v.Mode, uid: v.UID, gid: v.GID, atime: atime, mtime: mtime, ctime: ctime}
			o.apply(&a)
			out.Size, out.Uid, out.Gid = a.size, a.uid, a.gid
			out.Mode = kindMode(v.Kind) | a.mode
			atime, mtime, ctime = a.atime, a.mtime, a.ctime
		}
	}
	out.SetTimes(nsTime(atime), nsTime(mtime), nsTime(ctime))
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	if v.Kind == store.KindFile && !o.dirty {
		// Holes take no space: du and cp see a sparse file as one. (Until
		// its writes commit, an open file counts every byte.)
		out.Blocks = (v.Alloc + 511) / 512
	}
	return nil
}

func nsTime(ns int64) *time.Time {
	t := time.Unix(0, ns)
	return &t
}

func (n *Node) head(ctx context.Context) (*store.Version, syscall.Errno) {
	v, err := n.fsys.s.Head(n.id)
	if err != nil {
		return nil, n.errno(ctx, err, "getattr")
	}
	return v, 0
}

// Getattr reports the current version's attributes.
func (n *Node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.errno(ctx, n.fsys.currentAttr(n.id, &out.Attr), "getattr")
}

// newChild returns the inode for v, filling out.
func (n *Node) newChild(ctx context.Context, v *store.Version, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	var err error
	if v.Kind == store.KindFile {
		// A file's attributes are read again after its open state: a
		// commit at release may have moved it past v (see currentAttr).
		err = n.fsys.currentAttr(v.ID, &out.Attr)
	} else {
		err = n.fsys.fillAttr(v, &out.Attr)
	}
	if err != nil {
		return nil, n.errno(ctx, err, "lookup")
	}
	return n.NewInode(ctx, &Node{fsys: n.fsys, id: v.ID}, gofs.StableAttr{Mode: kindMode(v.Kind), Ino: v.ID.Ino()}), 0
}

// Lookup finds name in this directory.
func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if len(name) > store.MaxNameLen {
		return nil, syscall.ENAMETOOLONG
	}
	s := n.fsys.s
	var gen uint64
	if e, found, ok := n.fsys.listings.lookup(n.id, name, func() uint64 { gen = s.Generation(); return gen }); ok {
		if !found {
			return nil, syscall.ENOENT
		}
		if v, err := e.Load(); err == nil {
			s.Remember(v, gen) // the kernel asks for its attributes next
			return n.newChild(ctx, v, out)
		}
	}
	v, err := s.LookupVersion(n.id, name)
	if err != nil {
		return nil, n.errno(ctx, err, "lookup")
	}
	return n.newChild(ctx, v, out)
}

// caller returns the uid and gid of the process making the request.
func caller(ctx context.Context) (uint32, uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return 0, 0
}

// newVersion makes the first version of a new file named name here, owned
// by the caller. A setgid directory passes on its group (and, to
// subdirectories, the setgid bit).
func (n *Node) newVersion(ctx context.Context, tx *store.Tx, kind store.Kind, name string, mode uint32) (*store.Version, error) {
	if !store.ValidName(name) {
		if len(name) > store.MaxNameLen {
			return nil, syscall.ENAMETOOLONG
		}
		return nil, syscall.EINVAL
	}
	parent, err := tx.Head(n.id)
	if err != nil {
		return nil, err
	}
	if parent.Deleted {
		return nil, syscall.ENOENT
	}
	if _, _, err := tx.Lookup(n.id, name); err == nil {
		return nil, syscall.EEXIST
	}
	uid, gid := caller(ctx)
	mode &= 07777
	if parent.Mode&syscall.S_ISGID != 0 {
		gid = parent.GID
		if kind == store.KindDir {
			mode |= syscall.S_ISGID
		}
	}
	now := tx.Wall()
	return &store.Version{ID: store.NewFileID(), Kind: kind, Links: []store.Link{{Parent: n.id, Name: name}},
		Mode: mode, UID: uid, GID: gid, Atime: now, Mtime: now, Ctime: now}, nil
}

// create commits a new file, directory or symlink and returns its inode.
func (n *Node) create(ctx context.Context, op store.Op, kind store.Kind, name string, mode uint32, target string, rdev uint64, out *fuse.EntryOut) (*gofs.Inode, *store.Version, syscall.Errno) {
	var v *store.Version
	err := n.fsys.s.Update(op, func(tx *store.Tx) error {
		var err error
		if v, err = n.newVersion(ctx, tx, kind, name, mode); err != nil {
			return err
		}
		v.Target = target
		v.Size = uint64(len(target))
		v.Rdev = rdev
		_, err = tx.Create(v)
		return err
	})
	if err != nil {
		return nil, nil, n.errno(ctx, err, op.String())
	}
	ino, errno := n.newChild(ctx, v, out)
	return ino, v, errno
}

// Mkdir makes a directory.
func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ino, _, errno := n.create(ctx, store.OpMkdir, store.KindDir, name, mode, "", 0, out)
	return ino, errno
}

// Symlink makes a symbolic link.
func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if len(target) > store.MaxPathLen {
		return nil, syscall.ENAMETOOLONG
	}
	ino, _, errno := n.create(ctx, store.OpSymlink, store.KindLink, name, 0o777, target, 0, out)
	return ino, errno
}

// Create makes and opens a regular file.
func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ino, v, errno := n.create(ctx, store.OpCreate, store.KindFile, name, mode, "", 0, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	child := ino.Operations().(*Node)
	fh, fuseFlags, errno := child.openFile(ctx, v, flags)
	return ino, fh, fuseFlags, errno
}

// Mknod makes a named pipe, a unix socket, a device node or an empty
// regular file. The kernel serves pipes, sockets and devices itself; geofs
// keeps their names, modes, owners and device numbers.
func (n *Node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	kind, ok := modeKind(mode)
	if !ok || kind == store.KindDir || kind == store.KindLink {
		return nil, syscall.EINVAL
	}
	var rdev uint64
	if kind == store.KindChar || kind == store.KindBlock {
		rdev = uint64(dev)
	}
	ino, _, errno := n.create(ctx, store.OpCreate, kind, name, mode, "", rdev, out)
	return ino, errno
}

// Readlink returns a symlink's target.
func (n *Node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	v, errno := n.head(ctx)
	if errno != 0 {
		return nil, errno
	}
	if v.Kind != store.KindLink {
		return nil, syscall.EINVAL
	}
	return []byte(v.Target), 0
}

// Link gives an existing file another name here.
func (n *Node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	tn, ok := target.(*Node)
	if !ok {
		return nil, syscall.EXDEV
	}
	if !store.ValidName(name) {
		return nil, syscall.EINVAL
	}
	var nv *store.Version
	err := n.fsys.s.Update(store.OpLink, func(tx *store.Tx) error {
		if _, _, err := tx.Lookup(n.id, name); err == nil {
			return syscall.EEXIST
		}
		v, err := tx.Head(tn.id)
		if err != nil {
			return err
		}
		if v.Kind == store.KindDir {
			return syscall.EPERM
		}
		if v.Deleted {
			return syscall.ENOENT
		}
		nv = v.Clone()
		nv.Links = append(nv.Links, store.Link{Parent: n.id, Name: name})
		nv.Ctime = tx.Wall()
		_, err = tx.Put(nv)
		return err
	})
	if err != nil {
		return nil, n.errno(ctx, err, "link")
	}
	return n.newChild(ctx, nv, out)
}

// Unlink removes a name of a non-directory.
func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, store.OpUnlink, name)
}

// Rmdir removes an empty directory.
func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, store.OpRmdir, name)
}

func (n *Node) remove(ctx context.Context, op store.Op, name string) syscall.Errno {
	err := n.fsys.s.Update(op, func(tx *store.Tx) error {
		id, kind, err := tx.Lookup(n.id, name)
		if err != nil {
			return err
		}
		if op == store.OpRmdir && kind != store.KindDir {
			return syscall.ENOTDIR
		}
		if op == store.OpUnlink && kind == store.KindDir {
			return syscall.EISDIR
		}
		return dropLink(tx, id, n.id, name)
	})
	return n.errno(ctx, err, op.String())
}

// dropLink removes one name of id; a file with no names left is deleted
// (its last version keeps its content for handles still open and for
// history). A directory must be empty.
func dropLink(tx *store.Tx, id, parent store.FileID, name string) error {
	v, err := tx.Head(id)
	if err != nil {
		return err
	}
	if v.Kind == store.KindDir {
		if has, err := tx.HasChildren(id); err != nil {
			return err
		} else if has {
			return syscall.ENOTEMPTY
		}
	}
	nv := v.Clone()
	nv.RemoveLink(parent, name)
	nv.Deleted = len(nv.Links) == 0
	nv.Ctime = tx.Wall()
	_, err = tx.Put(nv)
	return err
}

// Rename moves name to newName in newParent, honouring RENAME_NOREPLACE,
// RENAME_EXCHANGE and RENAME_WHITEOUT. A whiteout (what overlayfs leaves in
// its upper layer where a lower file was removed or renamed) is a character
// device 0:0 with mode 0, made at name in the same commit as the move, as
// ext4 and xfs make it.
func (n *Node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*Node)
	if !ok {
		return syscall.EXDEV
	}
	if !store.ValidName(newName) {
		return syscall.EINVAL
	}
	whiteout := flags&unix.RENAME_WHITEOUT != 0
	flags &^= unix.RENAME_WHITEOUT
	if whiteout && flags&unix.RENAME_EXCHANGE != 0 {
		return syscall.EINVAL
	}
	err := n.fsys.s.Update(store.OpRename, func(tx *store.Tx) error {
		if err := rename(tx, n.id, name, np.id, newName, flags); err != nil || !whiteout {
			return err
		}
		w, err := n.newVersion(ctx, tx, store.KindChar, name, 0)
		if err != nil {
			return err
		}
		_, err = tx.Create(w)
		return err
	})
	return n.errno(ctx, err, "rename")
}

func rename(tx *store.Tx, oldDir store.FileID, oldName string, newDir store.FileID, newName string, flags uint32) error {
	src, srcKind, err := tx.Lookup(oldDir, oldName)
	if err != nil {
		return err
	}
	dst, dstKind, err := tx.Lookup(newDir, newName)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	exists := err == nil
	switch {
	case flags&unix.RENAME_NOREPLACE != 0 && exists:
		return syscall.EEXIST
	case flags&unix.RENAME_EXCHANGE != 0:
		if !exists {
			return syscall.ENOENT
		}
		if err := moveLink(tx, src, oldDir, oldName, newDir, newName); err != nil {
			return err
		}
		return moveLink(tx, dst, newDir, newName, oldDir, oldName)
	case flags&^uint32(unix.RENAME_NOREPLACE) != 0:
		return syscall.EINVAL
	}
	if exists {
		if src == dst {
			return nil // two names of one file: POSIX says do nothing
		}
		if srcKind == store.KindDir && dstKind != store.KindDir {
			return syscall.ENOTDIR
		}
		if srcKind != store.KindDir && dstKind == store.KindDir {
			return syscall.EISDIR
		}
		if err := dropLink(tx, dst, newDir, newName); err != nil {
			return err
		}
	}
	return moveLink(tx, src, oldDir, oldName, newDir, newName)
}

func moveLink(tx *store.Tx, id, oldDir store.FileID, oldName string, newDir store.FileID, newName string) error {
	v, err := tx.Head(id)
	if err != nil {
		return err
	}
	nv := v.Clone()
	nv.RemoveLink(oldDir, oldName)
	nv.Links = append(nv.Links, store.Link{Parent: newDir, Name: newName})
	nv.Ctime = tx.Wall()
	_, err = tx.Put(nv)
	return err
}

// Access is answered by the kernel (default_permissions); this only
// confirms the node exists.
func (n *Node) Access(ctx context.Context, mask uint32) syscall.Errno {
	_, errno := n.head(ctx)
	return errno
}

// Statfs reports the space of the disk that holds the store.
func (n *Node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := syscall.Statfs(n.fsys.s.Dir(), &st); err != nil {
		return n.errno(ctx, err, "statfs")
	}
	out.FromStatfsT(&st)
	out.NameLen = store.MaxNameLen
	return 0
}
