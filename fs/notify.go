package fs

import (
	"context"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/geofs/geofs/store"
)

// The FS remembers the node of each file id the kernel knows, so that a
// change made behind the kernel's back (a restore; later, a version from a
// peer) can invalidate the kernel's caches for it.

var _ = (gofs.NodeOnForgetter)((*Node)(nil))

func (f *FS) remember(n *Node) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nodes == nil {
		f.nodes = map[store.FileID]*Node{}
	}
	f.nodes[n.id] = n
}

// OnForget drops the node when the kernel forgets it.
func (n *Node) OnForget() {
	n.fsys.mu.Lock()
	defer n.fsys.mu.Unlock()
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
	f.mu.Lock()
	n := f.nodes[id]
	f.mu.Unlock()
	if n != nil {
		n.NotifyContent(0, 0)
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
