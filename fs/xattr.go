package fs

import (
	"context"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/geofs/geofs/store"
)

// Extended attributes live in the version record, so setting one makes a
// new version. POSIX ACLs (system.posix_acl_*) are not supported: the
// kernel would not enforce them.

func xattrAllowed(name string) syscall.Errno {
	switch {
	case name == "" || len(name) > store.MaxXattrName:
		return syscall.ERANGE
	case strings.HasPrefix(name, "system."):
		return syscall.EOPNOTSUPP
	}
	return 0
}

// Getxattr copies an attribute's value into dest.
func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if errno := xattrAllowed(attr); errno != 0 {
		return 0, errno
	}
	v, errno := n.head(ctx)
	if errno != 0 {
		return 0, errno
	}
	val, ok := v.Xattr(attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(val) {
		return uint32(len(val)), syscall.ERANGE
	}
	return uint32(copy(dest, val)), 0
}

// Listxattr lists attribute names, each followed by a NUL byte.
func (n *Node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	v, errno := n.head(ctx)
	if errno != 0 {
		return 0, errno
	}
	var list []byte
	for _, x := range v.Xattrs {
		list = append(append(list, x.Name...), 0)
	}
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

// Setxattr sets an attribute, honouring XATTR_CREATE and XATTR_REPLACE.
func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if errno := xattrAllowed(attr); errno != 0 {
		return errno
	}
	if len(data) > store.MaxXattrSize {
		return syscall.E2BIG
	}
	if data == nil {
		data = []byte{}
	}
	return n.changeXattr(ctx, attr, data, flags)
}

// Removexattr removes an attribute.
func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if errno := xattrAllowed(attr); errno != 0 {
		return errno
	}
	return n.changeXattr(ctx, attr, nil, unix.XATTR_REPLACE)
}

func (n *Node) changeXattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.errno(ctx, n.putXattr(attr, data, flags), "setxattr")
}

// putXattr sets attr to data (removes it if data is nil) in a new version.
// Its errors are errnos for XATTR_CREATE, XATTR_REPLACE and a full list.
func (n *Node) putXattr(attr string, data []byte, flags uint32) error {
	return n.fsys.s.Update(store.OpXattr, func(tx *store.Tx) error {
		v, err := tx.Head(n.id)
		if err != nil {
			return err
		}
		_, exists := v.Xattr(attr)
		switch {
		case flags&unix.XATTR_CREATE != 0 && exists:
			return syscall.EEXIST
		case flags&unix.XATTR_REPLACE != 0 && !exists:
			return syscall.ENODATA
		}
		if len(v.Xattrs) >= store.MaxXattrs && !exists {
			return syscall.ENOSPC
		}
		nv := v.Clone()
		nv.SetXattr(attr, data)
		nv.Ctime = tx.Wall()
		_, err = tx.Put(nv)
		return err
	})
}
