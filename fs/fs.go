// Package fs serves a geofs store as a FUSE filesystem with go-fuse.
//
// Every node is a file id; its attributes come from the file's current
// version in the store. Writes are buffered per open file (see openFile) and
// committed as a new version on flush, fsync, release, and periodically for
// long writers.
//
// # Errors
//
// This package is the one boundary where errors become errno (toErrno).
//
// # Kernel caching
//
// Entries and attributes are cached by the kernel for Options.CacheTimeout.
// Only this process changes the store, and every change passes through the
// kernel or is followed by a notify call (see notify.go), so the caches stay
// true. Page-cache contents are kept across opens
// while a file's content hash is unchanged (FOPEN_KEEP_CACHE).
package fs

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/geofs/geofs/store"
)

// Options tune a mount.
type Options struct {
	// CommitInterval bounds how long written data stays uncommitted while a
	// file stays open (default 5 s).
	CommitInterval time.Duration
	// MaxDirty bounds the bytes buffered per open file before a commit
	// (default 64 MiB).
	MaxDirty int
	// MaxDirtyTotal bounds the bytes buffered by all open files together
	// (default 512 MiB): past it, each writer stores its own buffer before
	// its write returns.
	MaxDirtyTotal int64
	// CacheTimeout is the kernel's entry and attribute cache time (default
	// 1 h). Every change made at this site passes through the kernel, and
	// changes made behind its back (restore, and later peers) invalidate
	// the kernel's caches with notify calls, so long times are safe.
	CacheTimeout time.Duration
	Log          *slog.Logger
}

// FS is a mounted store.
type FS struct {
	s    *store.Store
	log  *slog.Logger
	opts Options

	mu   sync.Mutex
	open map[store.FileID]*openFile
	// detached counts, per file, open states left serving an older version
	// to their readers after a peer's version arrived (notify.go).
	detached map[store.FileID]int
	// pageRoots holds, per file with no open state, the content its last
	// open state had: what the kernel's cached pages may hold (see
	// FS.create).
	pageRoots map[store.FileID]pageRoot
	pageGen   uint64               // pageRoots notings so far
	pruneAt   int                  // prune pageRoots when it is this long
	root      atomic.Pointer[Node] // the root, once Root made it (notify.go)
	listings  *listings

	buffered atomic.Int64 // bytes buffered by all open files (see Options.MaxDirtyTotal)
	unpriv   sync.Map     // requests from callers without CAP_FSETID (killpriv.go)

	stop chan struct{}
	done chan struct{}
}

// New returns the filesystem for s. Call Close after unmounting.
func New(s *store.Store, opts Options) *FS {
	if opts.CommitInterval <= 0 {
		opts.CommitInterval = 5 * time.Second
	}
	if opts.MaxDirty <= 0 {
		opts.MaxDirty = 64 << 20
	}
	if opts.MaxDirtyTotal <= 0 {
		opts.MaxDirtyTotal = 512 << 20
	}
	if opts.CacheTimeout <= 0 {
		opts.CacheTimeout = time.Hour
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	f := &FS{s: s, log: opts.Log, opts: opts, open: map[store.FileID]*openFile{},
		pageRoots: map[store.FileID]pageRoot{},
		listings:  newListings(maxListedBytes),
		stop:      make(chan struct{}), done: make(chan struct{})}
	go f.committer()
	return f
}

// Root returns the root node to mount.
func (f *FS) Root() gofs.InodeEmbedder {
	n := &Node{fsys: f, id: store.RootID}
	f.root.Store(n)
	return n
}

// MountOptions returns go-fuse options for mounting f (with FS.Mount).
func (f *FS) MountOptions(fsname string, allowOther bool, extra []string) *gofs.Options {
	t := f.opts.CacheTimeout
	return &gofs.Options{
		EntryTimeout:    &t,
		AttrTimeout:     &t,
		NegativeTimeout: &t,
		// Report a mode of 0000 as it is: without this go-fuse shows 0644
		// (0755 for directories), and chmod 0 would not lock anyone out.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			// The kernel drops a file's cached pages only when told
			// (notify.go: a peer's version, a restore), not whenever
			// getattr shows a new mtime or size: that dropped them after
			// nearly every write, and a page dropped while another
			// descriptor's write to it was in flight was read back from
			// the mount before the write arrived and kept, stale
			// (docs/DECISIONS.md, "The mount says when pages are stale").
			ExplicitDataCacheControl: true,
			FsName:                   fsname,
			Name:                     "geofs",
			AllowOther:               allowOther,
			MaxWrite:                 1 << 20,
			MaxReadAhead:             1 << 20,
			DirectMount:              true,
			Options:                  append([]string{"default_permissions"}, extra...),
			// Let the kernel choose READDIRPLUS only when the program also
			// stats the entries (ls -l): a plain listing of a large
			// directory then skips making 20,000 inodes.
			// No ATOMIC_O_TRUNC: with it the kernel passes O_TRUNC to OPEN,
			// which it does not serialise with another descriptor's
			// write(), and a truncation landing between the 1 MiB WRITEs
			// of one write() left zeros before the write's tail (found by
			// a stress run). Without it the kernel truncates with a
			// SETATTR under the file's lock, as for ext4; the mount folds
			// it into the open file's buffered changes (Node.setSize), so
			// overwriting a file still makes one version at close.
			// With HANDLE_KILLPRIV_V2 the mount clears setuid, setgid
			// and capabilities itself, and the kernel stops asking for
			// security.capability before every write (killpriv.go).
			ExtraCapabilities:    fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_HANDLE_KILLPRIV_V2,
			EnableSymlinkCaching: true, // a version's target never changes
		},
	}
}

// committer commits files that stayed dirty longer than CommitInterval.
func (f *FS) committer() {
	defer close(f.done)
	tick := time.NewTicker(f.opts.CommitInterval / 2)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
			f.commitOld(time.Now().Add(-f.opts.CommitInterval))
		}
	}
}

func (f *FS) commitOld(before time.Time) {
	for _, of := range f.openFiles() {
		if err := of.commitIfOlder(before); err != nil {
			f.toErrno(context.Background(), err, "periodic commit", of.id)
			continue
		}
		f.forgetIfIdle(of)
	}
}

func (f *FS) openFiles() []*openFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*openFile, 0, len(f.open))
	for _, of := range f.open {
		out = append(out, of)
	}
	return out
}

// Close commits every open file and syncs the store. Call it after the
// kernel has unmounted (open files are then already released).
func (f *FS) Close() error {
	close(f.stop)
	<-f.done
	var first error
	for _, of := range f.openFiles() {
		if err := of.commit(); err != nil && first == nil {
			first = err
		}
	}
	if err := f.s.Sync(); err != nil && first == nil {
		first = err
	}
	return first
}
