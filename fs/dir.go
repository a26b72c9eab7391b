package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/geofs/geofs/store"
)

// dirHandle lists a directory from one scan of the store taken at opendir,
// and answers the kernel's per-entry lookups of READDIRPLUS from it.
type dirHandle struct {
	node    *Node
	entries []store.Dirent
	gen     uint64 // the store's commit generation before the scan
	pos     int    // next entry; offsets handed to the kernel are pos+1
}

var (
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileLookuper)((*dirHandle)(nil))
	_ = (gofs.FileFsyncdirer)((*dirHandle)(nil))
)

// OpendirHandle scans the directory once.
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	v, errno := n.head(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	gen := n.fsys.s.Generation()
	ents, err := n.fsys.s.ReadDir(n.id)
	if err != nil {
		return nil, 0, n.errno(ctx, err, "opendir")
	}
	n.fsys.listings.put(n.id, gen, ents)
	parent := n.id
	if len(v.Links) > 0 {
		parent = v.Links[0].Parent
	}
	dots := []store.Dirent{{Name: ".", ID: n.id, Kind: store.KindDir, Version: v}, {Name: "..", ID: parent, Kind: store.KindDir}}
	return &dirHandle{node: n, entries: append(dots, ents...), gen: gen}, 0, 0
}

// Readdirent returns the next entry, or nil at the end.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.pos >= len(d.entries) {
		return nil, 0
	}
	e := d.entries[d.pos]
	d.pos++
	return &fuse.DirEntry{Name: e.Name, Mode: kindMode(e.Kind), Ino: e.ID.Ino(), Off: uint64(d.pos)}, 0
}

// Seekdir moves to the entry after offset off; back to the start
// (rewinddir) it scans again, to see entries made since.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		fresh, _, errno := d.node.OpendirHandle(ctx, 0)
		if errno != 0 {
			return errno
		}
		d.entries, d.gen = fresh.(*dirHandle).entries, fresh.(*dirHandle).gen
	}
	d.pos = int(min(off, uint64(len(d.entries))))
	return 0
}

// Lookup answers READDIRPLUS. The scan's record is used only while it is
// still the file's current version (the kernel keeps what it is told for
// an hour): surely so if nothing was committed since the scan, else if it
// is the head; otherwise the name is looked up afresh.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	i := d.pos - 1
	if i < 0 || i >= len(d.entries) || d.entries[i].Name != name {
		return d.node.Lookup(ctx, name, out)
	}
	e := &d.entries[i]
	s := d.node.fsys.s
	unchanged := s.Generation() == d.gen
	if !unchanged {
		if cur, err := s.Head(e.ID); err != nil || cur.StoredHash() != e.Hash {
			return d.node.Lookup(ctx, name, out)
		}
	}
	v, err := e.Load()
	if err != nil {
		return d.node.Lookup(ctx, name, out)
	}
	s.Remember(v, d.gen) // the kernel asks for its attributes next
	return d.node.newChild(ctx, v, out)
}

// Fsyncdir makes directory changes durable.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.node.errno(ctx, d.node.fsys.s.Sync(), "fsyncdir")
}
