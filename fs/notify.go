package fs

import (
	"context"
	"slices"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/geofs/geofs/store"
)

// The FS remembers the nodes of each file id the kernel may know, so that
// a change made behind the kernel's back (a restore, a version from a
// peer) can invalidate the kernel's caches for it.
//
// A lookup makes a new node, but go-fuse hands the kernel the node it
// already has for the file when there is one, and drops the new one. So
// every node made is remembered, not only the last: remembering the last
// alone sent notifications to a node the kernel never knew (ENOENT), and
// the kernel kept stale pages and names under the one it had (found by a
// stress run: every file of a replica read while it was rewritten). A
// node go-fuse dropped, or the kernel forgot without a FORGET reaching it
// (OnForget), is pruned once it has had a second to be added.

var _ = (gofs.NodeOnForgetter)((*Node)(nil))

// knownNode is a node of a file, and when it was made.
type knownNode struct {
	n  *Node
	at time.Time
}

// forgetGrace is how long a node may stay unknown to the kernel before it
// is pruned: a lookup adds its node to go-fuse's tree right after it
// returns.
const forgetGrace = time.Second

func (f *FS) remember(n *Node) {
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	if f.nodes == nil {
		f.nodes = map[store.FileID][]knownNode{}
	}
	ns := f.pruneLocked(n.id)
	if !slices.ContainsFunc(ns, func(k knownNode) bool { return k.n == n }) {
		f.nodes[n.id] = append(ns, knownNode{n, time.Now()})
	}
}

// pruneLocked drops id's nodes that the kernel does not know (past the
// grace) and returns the rest. go-fuse marks Inode.Forgotten deprecated for
// its window between creation and being added, which the grace covers; it
// is the only way to learn that go-fuse dropped a node it never added.
func (f *FS) pruneLocked(id store.FileID) []knownNode {
	now := time.Now()
	ns := slices.DeleteFunc(f.nodes[id], func(k knownNode) bool {
		return now.Sub(k.at) > forgetGrace && k.n.Forgotten()
	})
	if len(ns) == 0 {
		delete(f.nodes, id)
		return nil
	}
	f.nodes[id] = ns
	return ns
}

// OnForget drops the node when the kernel forgets it.
func (n *Node) OnForget() {
	f := n.fsys
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	ns := slices.DeleteFunc(f.nodes[n.id], func(k knownNode) bool { return k.n == n })
	if len(ns) == 0 {
		delete(f.nodes, n.id)
	} else {
		f.nodes[n.id] = ns
	}
}

// nodesOf returns the nodes of id the kernel may know.
func (f *FS) nodesOf(id store.FileID) []*Node {
	f.nodesMu.Lock()
	defer f.nodesMu.Unlock()
	var out []*Node
	for _, k := range f.pruneLocked(id) {
		out = append(out, k.n)
	}
	return out
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
	for _, n := range f.nodesOf(id) {
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
	nodes := f.nodesOf(child)
	for _, parent := range f.nodesOf(l.Parent) {
		if len(nodes) == 0 {
			parent.NotifyEntry(l.Name)
		}
		for _, node := range nodes {
			parent.NotifyDelete(l.Name, &node.Inode)
		}
		parent.NotifyContent(0, 0)
	}
}
