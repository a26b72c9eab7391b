package fs

import (
	"context"
	"slices"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/geofs/geofs/store"
)

// The FS remembers the node of each file id the kernel knows, so that a
// change made behind the kernel's back (a restore; later, a version from a
// peer) can invalidate the kernel's caches for it.

var _ = (gofs.NodeOnForgetter)((*Node)(nil))

func (f *FS) remember(n *Node) {
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	if f.nodes == nil {
		f.nodes = map[store.FileID]*Node{}
	}
	f.nodes[n.id] = n
}

// OnForget drops the node when the kernel forgets it.
func (n *Node) OnForget() {
	n.fsys.nodesMu.Lock()
	defer n.fsys.nodesMu.Unlock()
	if n.fsys.nodes[n.id] == n {
		delete(n.fsys.nodes, n.id)
	}
}

// Changed tells the mount that id's current version changed outside it:
// an open state takes the new content as its base (buffered writes stay on
// top; a running background commit rebases by itself), and the kernel
// drops cached pages and attributes.
func (f *FS) Changed(id store.FileID) {
	if of := f.lookupOpen(id); of != nil {
		if err := of.rebase(); err != nil {
			f.toErrno(context.Background(), err, "rebase", id)
		}
	}
	f.notifyContent(id)
}

// notifyContent drops the kernel's cached pages and attributes of id.
func (f *FS) notifyContent(id store.FileID) { f.notify(id, 0) }

// notifyAttrs drops the kernel's cached attributes of id (its pages stay).
func (f *FS) notifyAttrs(id store.FileID) { f.notify(id, -1) }

// notify drops the kernel's cached attributes of id, and its pages from
// off on unless off is negative, if the kernel knows id.
func (f *FS) notify(id store.FileID, off int64) {
	f.nodesMu.Lock()
	n := f.nodes[id]
	f.nodesMu.Unlock()
	if n != nil {
		n.NotifyContent(off, 0)
	}
}

// rebase takes the current version as the base, unless a background commit
// is using the layers (it rebases itself when its commit finds the change).
func (of *openFile) rebase() error {
	of.mu.Lock()
	defer of.mu.Unlock()
	if of.busy {
		return nil
	}
	return of.rebaseLocked()
}

// Applied tells the mount about heads moved by records from a peer. A file
// open only for reading keeps serving the version its handles opened, so a
// reader sees one consistent version; the next open gets the new one. A
// file open for writing takes the new version as its base, with any
// buffered writes on top (see detach). Either way the kernel drops the file's cached pages and
// attributes, and forgets the names that went or came (its entry cache,
// and the parent directories' listings).
func (f *FS) Applied(changes []store.Change) {
	for _, c := range changes {
		if f.detach(c.ID) {
			f.notifyContent(c.ID)
		} else {
			f.Changed(c.ID)
		}
		for _, l := range c.Old {
			if !slices.Contains(c.New, l) {
				f.forgetName(l, c.ID)
			}
		}
		for _, l := range c.New {
			if !slices.Contains(c.Old, l) {
				f.forgetName(l, store.FileID{})
			}
		}
	}
}

// forgetName drops the kernel's entry for l (in a directory it knows).
func (f *FS) forgetName(l store.Link, child store.FileID) {
	f.nodesMu.Lock()
	parent, node := f.nodes[l.Parent], f.nodes[child]
	f.nodesMu.Unlock()
	if parent == nil {
		return
	}
	if node != nil {
		parent.NotifyDelete(l.Name, &node.Inode)
	} else {
		parent.NotifyEntry(l.Name)
	}
	parent.NotifyContent(0, 0)
}
