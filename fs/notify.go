package fs

import (
	"context"
	"slices"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/geofs/geofs/store"
)

// A change made behind the kernel's back (a restore, a version from a
// peer) is notified to the node the kernel holds for the file. A lookup
// makes a new node, but go-fuse hands the kernel the node it already has
// for the file and drops the new one, so the node to notify is the one
// go-fuse's tree holds for the file's identity (Inode.KnownInode, added to
// the go-fuse geofs carries). Notifying the last node a lookup made, as the
// mount did, reached a node the kernel never knew (ENOENT), and the kernel
// kept stale pages and names under its own (found by a stress run: every
// file of a replica read while a peer rewrote it).

// kernelNodes returns the nodes the kernel holds for file id: at most one,
// but the kind is not known here, and each kind is its own identity.
func (f *FS) kernelNodes(id store.FileID) []*gofs.Inode {
	root := f.root.Load()
	if root == nil {
		return nil
	}
	if id == store.RootID {
		return []*gofs.Inode{&root.Inode}
	}
	var out []*gofs.Inode
	for _, mode := range kindModes {
		if n := root.KnownInode(gofs.StableAttr{Mode: mode, Ino: id.Ino()}); n != nil {
			out = append(out, n)
		}
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
	for _, n := range f.kernelNodes(id) {
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
	var nodes []*gofs.Inode
	if child != (store.FileID{}) {
		nodes = f.kernelNodes(child)
	}
	for _, parent := range f.kernelNodes(l.Parent) {
		if len(nodes) == 0 {
			parent.NotifyEntry(l.Name)
		}
		for _, node := range nodes {
			parent.NotifyDelete(l.Name, node)
		}
		parent.NotifyContent(0, 0)
	}
}
