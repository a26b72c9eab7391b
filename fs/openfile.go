package fs

import (
	"errors"
	"maps"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/geofs/geofs/store"
)

// openFile is the shared state of a regular file while any handle has it
// open: the committed content (base) and the writes not yet committed, in up
// to two layers. All handles of a file share it, so each sees the others'
// writes.
//
// Writes go to cur. When cur holds MaxDirty bytes it becomes pending and is
// committed in the background while new writes fill a fresh cur, so the
// writer does not wait for chunking, hashing and storing. A failed
// background commit keeps its layer (to retry) and reports the error to the
// next write or flush.
type openFile struct {
	fsys *FS
	id   store.FileID

	mu      sync.Mutex
	cond    *sync.Cond // signalled when a background commit ends
	refs    int        // open handles
	writers int        // open handles that may write (FS.mu): such a state is never detached
	base    *store.Extents
	root    store.Hash // manifest root of base: commits are made over it
	// rootNow is root, readable without the lock (set with it by setRoot;
	// never assign root directly).
	rootNow     atomic.Pointer[store.Hash]
	changeCount atomic.Uint64 // changes made so far (see change), read without the lock
	origin      store.Origin  // the version base's content is fetched in the name of (store.OriginOf)
	pending     *layer        // committing in the background, or failed and waiting for a retry
	cur         *layer
	busy        bool  // a background commit runs
	err         error // from the last background commit, not yet reported
	since       time.Time
	lastEnd     uint64 // where the last read ended (sequential reads read ahead)
	// copied says base is a prefix of the content whose manifest root is
	// copied.from, made by copyPrefix, with root copied.root: the next
	// piece of the copy may continue from chunks.
	copied struct{ from, root store.Hash }

	accounted int64 // buffered bytes counted in fsys.buffered
	detached  bool  // no longer the file's open state (see FS.detach)
	// stale counts notifications on their way to drop the kernel's pages
	// of the file, which may be an older content's (see dropStalePages):
	// meanwhile opens drop them.
	stale atomic.Int32
}

// A sequential reader gets the next readAhead bytes loaded in the
// background each time it crosses a readAheadStep boundary.
const (
	readAhead     = 4 << 20
	readAheadStep = 1 << 20
)

// layer is a set of uncommitted changes. Content at byte x, over what lies
// below: the patch holding x if any (zeros, for a patch of zeros); else,
// below keep, the content below; else zero. size is the file size with the
// layer applied.
type layer struct {
	patches []store.Patch // sorted by Off, not overlapping
	dirty   int           // bytes of data in patches (a patch of zeros holds none)
	size    uint64
	keep    uint64
	// cut: the layer truncated the file to nothing, so once it changes
	// anything its size and bytes are its own whatever the content below
	// becomes, as when a truncation cut bytes (keep < the size below).
	cut     bool
	mtime   int64      // new mtime (0: unchanged): of the last write, or as set
	ctime   int64      // time of the last change (0: unchanged)
	attrs   attrChange // chmod, chown and atime changes made while open
	changed bool
	run     int      // bytes written back to back, ending at runEnd
	runEnd  uint64   // (they size the arenas; see add)
	spare   int      // arena bytes allocated and not yet written (at most maxArena)
	arenas  [][]byte // the full-size arenas its patches are cut from (see recycle)
}

// attrChange holds attribute changes folded into an open file's next
// commit (tar, cp -p and rsync set them on the open file before closing
// it: one version instead of four).
type attrChange struct {
	setMode, setUID, setGID, setAtime, setMtime bool
	mode, uid, gid                              uint32
	atime, mtime                                int64
}

// any reports whether c changes anything.
func (c attrChange) any() bool { return c.setMode || c.setUID || c.setGID || c.setAtime || c.setMtime }

// fileAttrs are the attributes an open file shows.
type fileAttrs struct {
	size                uint64
	mode, uid, gid      uint32
	atime, mtime, ctime int64
}

func newLayer(size uint64) *layer { return &layer{size: size, keep: size} }

// successor is the empty layer that takes l's place when l, full, goes
// to a background commit. The writer's run goes on in it, so its next write
// gets a full-size arena at once. (Not after other commits: an fsync or a
// close between small appends would give each append an arena as large as
// the run, spare capacity the mount's budget does not count.)
func (l *layer) successor() *layer {
	next := newLayer(l.size)
	next.run, next.runEnd = l.run, l.runEnd
	return next
}

// acquire returns the open state of file id, creating it from the current
// version. (The caller's earlier read of the version may be stale by now:
// another handle's close may have committed and dropped the state.) The
// content's extents are read without holding f.mu: on a fog node they may
// be fetched from a peer, for up to the fetch timeout, and opens, closes
// and stat of other open files must not wait for that.
// A writer (a handle open for writing) is counted in the same step, so
// that no peer's version detaches the state in between (see detach).
func (f *FS) acquire(id store.FileID, writer bool) (*openFile, error) {
	for {
		v, err := f.s.Head(id)
		if err != nil {
			return nil, err
		}
		if of := f.holdCurrent(id, writer, v.Content); of != nil {
			return of, nil
		}
		x, err := f.s.ContentOf(v)
		if err != nil {
			return nil, err
		}
		if of, ok, err := f.create(id, v, x, writer); ok || err != nil {
			return of, err
		}
		// A commit moved the file meanwhile: read its new head.
	}
}

// create makes the open state of id from version v with extents x, unless
// there is one by now (which it holds and returns) or v is no longer id's
// current content (ok false).
func (f *FS) create(id store.FileID, v *store.Version, x *store.Extents, writer bool) (of *openFile, ok bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if of := f.open[id]; of != nil {
		of.take(writer)
		return of, true, nil
	}
	now, err := f.s.Head(id)
	if err != nil {
		return nil, false, err
	}
	if now.Content != v.Content || now.Size != v.Size {
		return nil, false, nil
	}
	of = &openFile{fsys: f, id: id, base: x, origin: f.s.OriginOf(now), cur: newLayer(now.Size)}
	of.setRoot(now.Content)
	of.take(writer)
	of.cond = sync.NewCond(&of.mu)
	f.open[id] = of
	if pages, ok := f.pageRoots[id]; ok {
		delete(f.pageRoots, id)
		if pages.unknown || pages.root != now.Content {
			// The head moved since the last open state went, and the kernel
			// may not have been told yet (a peer's version is applied before
			// the mount hears of it): its cached pages may be the old
			// content's.
			f.dropStalePages(of)
		}
	}
	return of, true, nil
}

// dropStalePages has the kernel drop its pages of of's file, which may be
// of an older content than of's; until it has, opens drop them.
// (Notifications go from a goroutine: the kernel may wait on a page that
// a request in the mount holds.)
func (f *FS) dropStalePages(of *openFile) {
	of.stale.Add(1)
	go func() {
		f.notifyContent(of.id)
		of.stale.Add(-1)
	}()
}

// forgetOpenLocked drops id's open state of (with f.mu held), noting the
// content the kernel's pages may hold: of's, unless pages of another
// may not be dropped yet.
func (f *FS) forgetOpenLocked(of *openFile) {
	delete(f.open, of.id)
	f.pageGen++
	f.pageRoots[of.id] = pageRoot{of.contentRoot(), of.stale.Load() > 0, f.pageGen}
	if len(f.pageRoots) >= max(pageRootsMin, f.pruneAt) {
		f.pruneAt = 2 * len(f.pageRoots)
		go f.prunePageRoots()
	}
}

// pageRoot is the content a file's last open state had, noted at the
// noting's generation.
type pageRoot struct {
	root    store.Hash
	unknown bool // the pages may be of other content still
	gen     uint64
}

// prunePageRoots forgets the page roots of files the kernel no longer
// holds (and so holds no pages of), keeping the map about as small as the
// kernel's inode cache. An entry noted again meanwhile stays.
func (f *FS) prunePageRoots() {
	f.mu.Lock()
	seen := maps.Clone(f.pageRoots)
	f.mu.Unlock()
	for id := range seen {
		if len(f.kernelNodes(id)) > 0 {
			delete(seen, id)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, pr := range seen {
		if f.pageRoots[id] == pr {
			delete(f.pageRoots, id)
		}
	}
	f.pruneAt = 2 * len(f.pageRoots)
}

const pageRootsMin = 4096

// foldShared makes the attribute changes c in of, held by the caller, if
// someone else holds it too, to be committed by the last to release it
// (see release; f.mu keeps the others from releasing meanwhile); it
// reports whether it did, and whether of is still its file's state (not
// detached). If it is and nobody else holds it, the caller commits at once
// (commitChange).
func (f *FS) foldShared(of *openFile, c attrChange) (folded, current bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open[of.id] != of {
		return false, false
	}
	if of.refs < 2 {
		return false, true
	}
	of.setattr(c)
	return true, true
}

// foldTruncate sets the size of id's open state and makes the attribute
// changes c, to be committed with its writers' changes, if it has handles
// open for writing; it reports whether it did. The last to release the
// state commits it (see release; f.mu keeps the writers from going
// meanwhile), so a commit that fails is theirs to report, and this
// truncation has succeeded; without writers, the caller commits at once
// and fails whole (resize).
func (f *FS) foldTruncate(id store.FileID, size uint64, c attrChange) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	of := f.open[id]
	if of == nil || of.writers == 0 {
		return false
	}
	of.truncateWith(size, c)
	return true
}

// holdCurrent is holdAs for an open, given the file's current content. A
// state open only for reading that serves other content (a peer's version
// was applied and the mount is not told yet) is detached first, as FS.Applied
// will detach it, so that the open gets the current version: joining the
// old state, it read the old bytes up to the new size, which the kernel
// already had, then zeros (found by a stress test under load).
func (f *FS) holdCurrent(id store.FileID, writer bool, content store.Hash) *openFile {
	for {
		f.mu.Lock()
		of := f.open[id]
		if of == nil || of.writers > 0 || of.contentRoot() == content {
			if of != nil {
				of.take(writer)
			}
			f.mu.Unlock()
			return of
		}
		f.mu.Unlock()
		if f.detachIfStale(of) {
			return nil
		}
		// Its content is the head's after all, or it has changes to
		// commit (it is rebased, not detached): join it if it is still the
		// file's state.
		f.mu.Lock()
		if f.open[id] == of {
			of.take(writer)
			f.mu.Unlock()
			return of
		}
		f.mu.Unlock()
	}
}

// detachIfStale detaches of if it is still its file's state, open only for
// reading, with nothing to commit, and serving other content than the
// file's head; it reports whether it did. Whether of has changes is asked
// without f.mu, since a commit may hold of's lock for long and f.mu would
// stall every open of the mount meanwhile; f.mu is then taken to detach,
// unless of changed or went in between.
func (f *FS) detachIfStale(of *openFile) bool {
	n := of.changeCount.Load()
	if of.isDirty() {
		return false
	}
	v, err := f.s.Head(of.id)
	if err != nil || of.contentRoot() == v.Content {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open[of.id] != of || of.writers > 0 || of.changeCount.Load() != n || of.contentRoot() == v.Content {
		return false
	}
	f.detachLocked(of)
	return true
}

// setRoot sets root (with the lock held).
func (of *openFile) setRoot(h store.Hash) {
	of.root = h
	of.rootNow.Store(&h)
}

// contentRoot is the manifest root of the content of's commits are over,
// read without of's lock.
func (of *openFile) contentRoot() store.Hash { return *of.rootNow.Load() }

// hold takes a reference on id's open state if there is one.
func (f *FS) hold(id store.FileID) *openFile { return f.holdAs(id, false) }

func (f *FS) holdAs(id store.FileID, writer bool) *openFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	of := f.open[id]
	if of != nil {
		of.take(writer)
	}
	return of
}

// take counts a reference (with f.mu held), and a writer's.
func (of *openFile) take(writer bool) {
	of.refs++
	if writer {
		of.writers++
	}
}

// forgetIfIdle drops a state nobody holds once it has nothing to commit.
func (f *FS) forgetIfIdle(of *openFile) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if of.refs == 0 && !of.isDirty() && f.open[of.id] == of {
		f.forgetOpenLocked(of)
	}
}

// release drops a reference (a handle's, or one taken by hold or
// acquire), forgetting the state with the last. Whoever leaves the state
// with changes and nobody holding it commits them: a change folded in
// while its holders were going (foldShared, foldTruncate), or a read-only
// handle's attribute change. Two releases at once may each see the
// other's reference; whichever finds none left commits.
func (f *FS) release(of *openFile) error { return f.releaseAs(of, false) }

// releaseWriter is release for a handle that was open for writing.
func (f *FS) releaseWriter(of *openFile) error { return f.releaseAs(of, true) }

func (f *FS) releaseAs(of *openFile, writer bool) error {
	f.mu.Lock()
	if writer {
		of.writers--
	}
	f.releaseLocked(of)
	last := of.refs == 0 && f.open[of.id] == of
	f.mu.Unlock()
	if !last || !of.isDirty() {
		return nil
	}
	err := of.commit()
	f.forgetIfIdle(of)
	return err
}

func (f *FS) releaseLocked(of *openFile) {
	of.refs--
	if of.refs == 0 && !of.isDirty() && f.open[of.id] == of {
		f.forgetOpenLocked(of)
	}
	if of.refs == 0 && of.detached {
		of.detached = false
		// Its readers filled the page cache with the old version: new
		// opens bypass the page cache (pagesShared) until it is dropped.
		id := of.id
		go func() {
			f.notifyContent(id)
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.detached[id]--; f.detached[id] <= 0 {
				delete(f.detached, id)
			}
		}()
	}
}

// detach lets the open state of id go its own way if it is open only for
// reading: its handles keep reading the version they opened, and the next
// open starts from the current version. It reports whether it did. (A
// state open for writing stays the file's, even with nothing buffered: a
// write through it must be seen by the next open, committed by the
// periodic commit, and cut by another process's truncation.)
func (f *FS) detach(id store.FileID) bool {
	of := f.lookupOpen(id)
	return of != nil && f.detachIfStale(of) // else nothing to detach, or a state that is the file's (Changed)
}

// detachLocked takes of, open only for reading, off its file (with f.mu
// held): its readers keep its version, and until they are gone new opens
// bypass the page cache (pagesShared). A state nobody holds (between a
// commit at its release and its forgetting) is simply forgotten: no
// release would ever end its detachment.
func (f *FS) detachLocked(of *openFile) {
	id := of.id
	f.forgetOpenLocked(of)
	if of.refs == 0 {
		return
	}
	of.detached = true
	if f.detached == nil {
		f.detached = map[store.FileID]int{}
	}
	f.detached[id]++
}

// pagesShared reports whether id's page cache may hold an older version
// that readers of a detached state still use: new opens then bypass it.
func (f *FS) pagesShared(id store.FileID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.detached[id] > 0
}

func (f *FS) lookupOpen(id store.FileID) *openFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open[id]
}

func (of *openFile) isDirty() bool {
	of.mu.Lock()
	defer of.mu.Unlock()
	return of.dirtyLocked()
}

func (of *openFile) dirtyLocked() bool { return of.cur.changed || of.pending != nil || of.busy }

// killMode clears the setuid and setgid bits that kill says a change by
// its caller clears: kill gets the head and the file's attributes as they
// are now (the head's, with the uncommitted changes on top) and returns the
// mode to set, or false to leave it. The mode is read and set under one
// hold of the lock, as a chmod of an open file sets it (Setattr), so a
// chmod cannot come in between and be undone by a mode computed before it.
// The kernel holds the inode lock across writes, fallocate and chmod, but
// not across an open with O_TRUNC.
func (of *openFile) killMode(kill func(*store.Version, fileAttrs) (uint32, bool)) (bool, error) {
	of.mu.Lock()
	defer of.mu.Unlock()
	v, err := of.fsys.s.Head(of.id)
	if err != nil {
		return false, err
	}
	a := fileAttrs{mode: v.Mode, uid: v.UID, gid: v.GID}
	of.overlayLocked(&a)
	m, ok := kill(v, a)
	if ok {
		of.setattrLocked(attrChange{setMode: true, mode: m})
	}
	return ok, nil
}

// overlayLocked applies the uncommitted changes to a's committed attributes
// (what changes().apply does, without copying the layers).
func (of *openFile) overlayLocked(a *fileAttrs) {
	if !of.dirtyLocked() {
		return
	}
	a.size = of.cur.size
	for _, l := range [...]*layer{of.pending, of.cur} {
		if l != nil && l.changed {
			l.apply(a)
		}
	}
}

// attrOverlay is what an open file's uncommitted changes do to its
// attributes, taken at one moment (see FS.fillAttr for why).
type attrOverlay struct {
	dirty  bool
	size   uint64
	layers []layer // attribute fields only
}

// changes takes the open file's uncommitted attribute changes.
func (of *openFile) changes() attrOverlay {
	of.mu.Lock()
	defer of.mu.Unlock()
	if !of.dirtyLocked() {
		return attrOverlay{}
	}
	o := attrOverlay{dirty: true, size: of.cur.size}
	for _, l := range []*layer{of.pending, of.cur} {
		if l != nil && l.changed {
			o.layers = append(o.layers, layer{attrs: l.attrs, mtime: l.mtime, ctime: l.ctime})
		}
	}
	return o
}

func (o attrOverlay) apply(a *fileAttrs) {
	if !o.dirty {
		return
	}
	a.size = o.size
	for i := range o.layers {
		o.layers[i].apply(a)
	}
}

func (l *layer) apply(a *fileAttrs) {
	c := l.attrs
	if c.setMode {
		a.mode = c.mode
	}
	if c.setUID {
		a.uid = c.uid
	}
	if c.setGID {
		a.gid = c.gid
	}
	if c.setAtime {
		a.atime = c.atime
	}
	if l.mtime != 0 {
		a.mtime = l.mtime
	}
	if c.setMtime {
		a.mtime = c.mtime
	}
	if l.ctime != 0 {
		a.ctime = l.ctime
	}
}

// change marks the current layer changed at now.
func (of *openFile) change(now int64) {
	if !of.dirtyLocked() {
		of.since = time.Now()
	}
	of.cur.changed = true
	of.cur.ctime = now
	of.changeCount.Add(1)
}

// touch records a change of content: mtime and ctime become now.
func (of *openFile) touch() {
	now := time.Now().UnixNano()
	of.change(now)
	of.cur.mtime = now
	of.cur.attrs.setMtime = false // a write after utimens sets mtime again
}

// setattr folds mode, owner and time changes into the next commit.
func (of *openFile) setattr(c attrChange) {
	of.mu.Lock()
	defer of.mu.Unlock()
	of.setattrLocked(c)
}

func (of *openFile) setattrLocked(c attrChange) {
	of.change(time.Now().UnixNano())
	l := &of.cur.attrs
	if c.setMode {
		l.setMode, l.mode = true, c.mode
	}
	if c.setUID {
		l.setUID, l.uid = true, c.uid
	}
	if c.setGID {
		l.setGID, l.gid = true, c.gid
	}
	if c.setAtime {
		l.setAtime, l.atime = true, c.atime
	}
	if c.setMtime {
		l.setMtime, l.mtime = true, c.mtime
	}
}

// write buffers data at off. A full buffer goes to a background commit
// first (after the one before it, which may mean a wait), and over the
// mount's budget this file's buffer is stored first: any wait comes before
// this write's bytes and size become visible to the file's other handles.
// The kernel takes a file's new size from the write's reply, so a reader
// that stat showed the new size while the write still waited read EOF
// short of it (docs/DECISIONS.md, "A write is seen when it returns").
func (of *openFile) write(data []byte, off uint64) error {
	of.mu.Lock()
	defer of.mu.Unlock()
	if err := of.takeErr(); err != nil {
		return err
	}
	defer of.account()
	if of.fsys.buffered.Load()+int64(len(data)) > of.fsys.opts.MaxDirtyTotal {
		// Over the mount's budget: this writer stores its own buffer
		// now, so memory stays bounded however many files are written.
		if err := of.commitLocked(); err != nil {
			return err
		}
	} else if of.full() {
		if err := of.handOff(); err != nil {
			return err
		}
	}
	of.touch()
	of.cur.add(off, data)
	of.cur.size = max(of.cur.size, off+uint64(len(data)))
	return nil
}

// full reports whether the current layer holds MaxDirty bytes or as many
// patches as a commit should take.
func (of *openFile) full() bool {
	return of.cur.dirty >= of.fsys.opts.MaxDirty || len(of.cur.patches) >= 8192
}

// handOff starts a background commit of the full current layer, once the
// one before it has ended (retrying that one first if it failed).
func (of *openFile) handOff() error {
	for of.busy {
		of.cond.Wait()
	}
	if !of.full() { // another handle's write handed it on meanwhile
		return nil
	}
	if of.pending != nil { // an earlier background commit failed: retry now
		of.err = nil // the retry reports it instead, if it fails too
		// (unless a commit that then failed on cur committed it)
		if of.pending.changed {
			if err := of.commitLayer(of.pending); err != nil {
				return err
			}
		}
		of.pending.recycle()
		of.pending = nil
	}
	of.pending, of.cur = of.cur, of.cur.successor()
	of.busy = true
	go of.background(of.base, of.root, of.pending)
	return nil
}

// account brings the mount's count of buffered bytes up to date with this
// file's (with of.mu held).
func (of *openFile) account() {
	n := int64(of.cur.dirty)
	if of.pending != nil {
		n += int64(of.pending.dirty)
	}
	of.fsys.buffered.Add(n - of.accounted)
	of.accounted = n
}

func (of *openFile) takeErr() error {
	err := of.err
	of.err = nil
	return err
}

// background commits l over base without holding the lock. If the file's
// version moved meanwhile (a restore, a peer's version), it rebases and
// builds again.
func (of *openFile) background(base *store.Extents, root store.Hash, l *layer) {
	x, err := of.fsys.build(of.id, base, root, l)
	rebased := false
	for tries := 0; errors.Is(err, errBaseMoved) && tries < 8; tries++ {
		of.mu.Lock()
		err = of.rebaseLocked()
		base, root = of.base, of.root
		of.mu.Unlock()
		rebased = true
		if err == nil {
			x, err = of.fsys.build(of.id, base, root, l)
		}
	}
	if rebased {
		// Readers may have cached pages of the content this commit
		// was first built over since FS.Changed, which found it
		// running, dropped them: the kernel drops pages only when told.
		// It is told after busy is cleared and the lock released: the
		// kernel waits for the pages it drops to be unlocked, and a
		// WRITE holds its last partial page locked while it waits for
		// this commit (handOff, commitLocked) or for the lock.
		defer of.fsys.notifyContent(of.id)
	}
	of.mu.Lock()
	defer of.mu.Unlock()
	if err == nil {
		of.base, of.pending = x.extents, nil
		of.setRoot(x.root)
		l.recycle()
	} else {
		of.err = err
	}
	of.busy = false
	of.account()
	of.cond.Broadcast()
}

// add copies data, written at off, over what it overwrites.
//
// A write that continues the last patch goes into that patch's spare
// capacity: a sequential writer's writes fill arenas as large as the run
// of writes so far (see maxArena), so the chunker cuts most chunks
// straight out of them (see store.Rewrite) instead of copying them again.
// Other writes are patches of their own (growing one slice would copy the
// data again and again).
func (l *layer) add(off uint64, data []byte) {
	if off == l.runEnd {
		l.run += len(data)
	} else {
		l.run = len(data)
	}
	l.runEnd = off + uint64(len(data))
	if n := len(l.patches); n == 0 || l.patches[n-1].End() <= off {
		if n > 0 && l.patches[n-1].End() == off && l.patches[n-1].Zeros == 0 {
			last := &l.patches[n-1]
			if cap(last.Data)-len(last.Data) >= len(data) {
				last.Data = append(last.Data, data...)
				l.dirty += len(data)
				l.spare -= len(data)
				return
			}
		}
		// A write that goes on with a run (in this layer or the one
		// before) starts an arena as large as the run so far.
		var buf []byte
		if arena := min(l.run-len(data), maxArena); arena > len(data) && l.spare+arena-len(data) <= maxArena {
			l.spare += arena - len(data)
			if arena == maxArena {
				buf = takeArena()
				l.arenas = append(l.arenas, buf)
			} else {
				buf = make([]byte, 0, arena)
			}
		} else {
			buf = make([]byte, 0, len(data))
		}
		l.patches = append(l.patches, store.Patch{Off: off, Data: append(buf, data...)})
		l.dirty += len(data)
		return
	}
	l.put(store.Patch{Off: off, Data: append([]byte(nil), data...)})
}

// zero makes bytes [off, end) zeros, kept as a hole (fallocate's
// PUNCH_HOLE and ZERO_RANGE). The buffered bytes it covers are dropped.
func (l *layer) zero(off, end uint64) {
	if end > off {
		l.put(store.Patch{Off: off, Zeros: end - off})
	}
}

// put places p over the patches it overlaps, cutting them where it begins
// and ends.
func (l *layer) put(p store.Patch) {
	end := p.End()
	i := sort.Search(len(l.patches), func(i int) bool { return l.patches[i].End() > p.Off })
	j := i
	for j < len(l.patches) && l.patches[j].Off < end {
		j++
	}
	var mid []store.Patch
	if i < j && l.patches[i].Off < p.Off {
		mid = append(mid, head(l.patches[i], p.Off))
	}
	mid = append(mid, p)
	if i < j && l.patches[j-1].End() > end {
		mid = append(mid, tail(l.patches[j-1], end))
	}
	for _, q := range l.patches[i:j] {
		l.dirty -= len(q.Data)
	}
	for _, q := range mid {
		l.dirty += len(q.Data)
	}
	l.patches = append(l.patches[:i], append(mid, l.patches[j:]...)...)
}

// head is the part of q before at. Its bytes are capped (a three-index
// slice) so that no later append can write into the bytes after them.
func head(q store.Patch, at uint64) store.Patch {
	if q.Zeros > 0 {
		return store.Patch{Off: q.Off, Zeros: at - q.Off}
	}
	return store.Patch{Off: q.Off, Data: q.Data[: at-q.Off : at-q.Off]}
}

// tail is the part of q from at on.
func tail(q store.Patch, at uint64) store.Patch {
	if q.Zeros > 0 {
		return store.Patch{Off: at, Zeros: q.End() - at}
	}
	return store.Patch{Off: at, Data: q.Data[at-q.Off:]}
}

// maxArena bounds the arenas of sequential writers, and the spare capacity
// of all of a layer's arenas together, which the buffered bytes do not
// count (a writer may leave an arena for a write elsewhere). Tests lower it.
var maxArena = 16 << 20

// arenaPool holds full-size arenas of committed layers for the next
// writer: a fresh one costs its zeroing and a page fault per 4 KiB, about
// a tenth of a sequential write's CPU (docs/DECISIONS.md). Arenas a GC
// finds idle twice are freed.
var arenaPool sync.Pool

// poisonArenas fills recycled arenas with 0xA5, so that a read of a
// recycled layer's bytes shows in any test that checks content. Tests turn
// it on (GEOFS_POISON_ARENAS=1 for the mount process).
var poisonArenas = os.Getenv("GEOFS_POISON_ARENAS") != ""

// takeArena returns an empty arena of capacity maxArena.
func takeArena() []byte {
	if a, ok := arenaPool.Get().(*[]byte); ok && cap(*a) == maxArena {
		return (*a)[:0]
	}
	return make([]byte, 0, maxArena)
}

// recycle hands l's full-size arenas to the next writer. Only a layer that
// is committed and no longer any open file's may be recycled (with of.mu
// held, so no reader is copying from it): the store keeps no slices of the
// patches once a Rewrite returns, and a commit to retry keeps its layer.
// The layer is emptied, so that a use after this finds no bytes.
func (l *layer) recycle() {
	for _, a := range l.arenas {
		a = a[:0]
		if poisonArenas {
			p := a[:cap(a)]
			p[0] = 0xA5
			for n := 1; n < len(p); n *= 2 {
				copy(p[n:], p[:n])
			}
		}
		arenaPool.Put(&a)
	}
	l.arenas, l.patches, l.dirty, l.spare = nil, nil, 0, 0
}

// truncate sets the size, dropping buffered bytes past it.
func (of *openFile) truncate(size uint64) {
	of.mu.Lock()
	defer of.mu.Unlock()
	of.truncateLocked(size)
}

// truncateWith sets the size and makes the attribute changes c, to be
// committed with the file's other buffered changes.
func (of *openFile) truncateWith(size uint64, c attrChange) {
	of.mu.Lock()
	defer of.mu.Unlock()
	of.truncateLocked(size)
	if c.any() {
		of.setattrLocked(c)
	}
}

// resize is ftruncate: it sets the size, makes the attribute changes c,
// and commits both as one version. The new size becomes visible to the
// file's readers only once nothing is left to wait for: the wait for a
// background commit comes first, and the commit runs with the lock held.
// The kernel keeps the file's old size until the reply and fills a read
// that comes back short of it with zeros (docs/DECISIONS.md, "A
// truncation is seen when it returns").
func (of *openFile) resize(size uint64, c attrChange) error {
	return of.commitChange(func() {
		of.truncateLocked(size)
		if c.any() {
			of.setattrLocked(c)
		}
	})
}

// commitChange makes change (with the lock held) and commits it with
// whatever else is buffered. A change whose commit fails is undone: the
// kernel keeps what it had (the size, the mode), and the change must not
// be committed later with other changes.
func (of *openFile) commitChange(change func()) error {
	of.mu.Lock()
	defer of.mu.Unlock()
	for of.busy {
		of.cond.Wait()
	}
	saved, since, below := *of.cur, of.since, of.below()
	saved.patches = slices.Clone(of.cur.patches) // truncateLocked cuts them in place
	change()
	err := of.commitLocked()
	if err != nil {
		*of.cur, of.since = saved, since
		if now := of.below(); now != below { // the commit rebased before it failed
			of.cur.rebase(below, now)
		}
		of.account()
	}
	return err
}

// below is the size of the content under the current layer.
func (of *openFile) below() uint64 {
	if of.pending != nil {
		return of.pending.size
	}
	return of.base.Size
}

func (of *openFile) truncateLocked(size uint64) {
	if size == 0 {
		of.cur.cut = true
	}
	if size == of.cur.size {
		return
	}
	of.touch()
	l := of.cur
	out := l.patches[:0]
	for _, p := range l.patches {
		switch {
		case p.Off >= size:
			l.dirty -= len(p.Data)
		case p.End() > size:
			q := head(p, size)
			l.dirty -= len(p.Data) - len(q.Data)
			out = append(out, q)
		default:
			out = append(out, p)
		}
	}
	l.patches = out
	l.size = size
	l.keep = min(l.keep, size)
	of.account()
}

// extend grows the file with a hole.
func (of *openFile) extend(size uint64) {
	of.mu.Lock()
	defer of.mu.Unlock()
	if size > of.cur.size {
		of.touch()
		of.cur.size = size
	}
}

// zero makes bytes [off, end) of the file zeros, kept as a hole (see
// layer.zero); with grow set the file grows to end if shorter (ZERO_RANGE
// without KEEP_SIZE), else nothing past its end changes.
func (of *openFile) zero(off, end uint64, grow bool) {
	of.mu.Lock()
	defer of.mu.Unlock()
	if grow {
		of.cur.size = max(of.cur.size, end)
	}
	end = min(end, of.cur.size)
	if end <= off {
		return
	}
	of.touch()
	of.cur.zero(off, end)
	of.account()
}

// size returns the current size, uncommitted changes included.
func (of *openFile) size() uint64 {
	of.mu.Lock()
	defer of.mu.Unlock()
	return of.cur.size
}

// read fills p from the uncommitted view of the file. With nothing
// buffered it reads the committed extents (immutable) without the lock, so
// the kernel's parallel read-ahead requests run in parallel.
func (of *openFile) read(p []byte, off uint64) (int, error) {
	_, n, err := of.readVec(p, off, false)
	return n, err
}

// readVec is read that, with vec set and nothing buffered, may return the
// bytes as slices of verified blocks instead of copying them into p (see
// store.ReadVecFrom). The bytes read are always the slices it returns.
func (of *openFile) readVec(p []byte, off uint64, vec bool) ([][]byte, int, error) {
	of.mu.Lock()
	seq := off == of.lastEnd
	of.lastEnd = off + uint64(len(p))
	if !of.dirtyLocked() {
		base, origin := of.base, of.origin
		of.mu.Unlock()
		var v [][]byte
		var n int
		var err error
		if vec {
			v, n, err = of.fsys.s.ReadVecFrom(origin, base, p, off)
		} else {
			n, err = of.fsys.s.ReadAtFrom(origin, base, p, off)
			v = [][]byte{p[:n]}
		}
		if end := off + uint64(n); seq && off/readAheadStep != end/readAheadStep {
			of.fsys.s.PrefetchFrom(origin, base, end+readAheadStep, readAhead-readAheadStep)
		}
		return v, n, err
	}
	n, err := of.readLayered(p, off)
	return [][]byte{p[:n]}, n, err
}

// readLayered reads through the buffered layers; it is called with of.mu
// held and releases it.
func (of *openFile) readLayered(p []byte, off uint64) (int, error) {
	if base, origin := of.base, of.origin; of.fsys.s.Lacks(base, off, uint64(len(p))) {
		// Fetch what the base lacks without holding the file: a fetch may
		// take up to the fetch timeout, and stat or writes of this file
		// must not wait for it. (The bytes are read again below, locally.)
		of.mu.Unlock()
		of.fsys.s.ReadAtFrom(origin, base, p, off)
		of.mu.Lock()
	}
	defer of.mu.Unlock()
	if off >= of.cur.size {
		return 0, nil
	}
	n := int(min(uint64(len(p)), of.cur.size-off))
	p = p[:n]
	if off < of.base.Size {
		m := int(min(uint64(n), of.base.Size-off))
		if _, err := of.fsys.s.ReadAtFrom(of.origin, of.base, p[:m], off); err != nil {
			return 0, err
		}
		clear(p[m:])
	} else {
		clear(p)
	}
	for _, l := range []*layer{of.pending, of.cur} {
		if l != nil {
			l.overlay(p, off)
		}
	}
	return n, nil
}

// overlay applies l to p, which holds the content below l from off.
func (l *layer) overlay(p []byte, off uint64) {
	end := off + uint64(len(p))
	if l.keep < end {
		clear(p[max(l.keep, off)-off:])
	}
	i := sort.Search(len(l.patches), func(i int) bool { return l.patches[i].End() > off })
	for _, q := range l.patches[i:] {
		if q.Off >= end {
			break
		}
		lo, hi := max(q.Off, off), min(q.End(), end)
		if q.Zeros > 0 {
			clear(p[lo-off : hi-off])
		} else {
			copy(p[lo-off:hi-off], q.Data[lo-q.Off:hi-q.Off])
		}
	}
}

// commit makes every buffered change a version before it returns.
// onlyTruncated reports whether the only buffered change is a truncation
// to empty (O_TRUNC), with no data written and no attribute changed. A
// file made longer (ftruncate, fallocate) commits at close like any
// change: a program that opens it next must see the new size.
func (of *openFile) onlyTruncated() bool {
	of.mu.Lock()
	defer of.mu.Unlock()
	l := of.cur
	return of.pending == nil && !of.busy && l.changed && l.size == 0 && len(l.patches) == 0 && !l.attrs.any()
}

func (of *openFile) commit() error {
	of.mu.Lock()
	defer of.mu.Unlock()
	return of.commitLocked()
}

func (of *openFile) commitLocked() error {
	defer of.account()
	for of.busy {
		of.cond.Wait()
	}
	of.err = nil // reported here instead, if the retry below fails too
	for _, l := range []*layer{of.pending, of.cur} {
		if l != nil && l.changed {
			if err := of.commitLayer(l); err != nil {
				return err
			}
		}
	}
	if of.pending != nil {
		of.pending.recycle()
	}
	of.cur.recycle()
	of.pending, of.cur = nil, newLayer(of.cur.size)
	return nil
}

func (of *openFile) commitIfOlder(before time.Time) error {
	of.mu.Lock()
	old := of.dirtyLocked() && of.since.Before(before)
	of.mu.Unlock()
	if !old {
		return nil
	}
	return of.commit()
}

// commitLayer commits l over the base (with the lock held), rebasing
// first if the file's version moved behind this open file.
func (of *openFile) commitLayer(l *layer) error {
	x, err := of.fsys.build(of.id, of.base, of.root, l)
	for tries := 0; errors.Is(err, errBaseMoved) && tries < 8; tries++ {
		if err = of.rebaseLocked(); err == nil {
			// The kernel's pages are the old content's, with this file's
			// writes; the notification of the change may not have come.
			of.fsys.dropStalePages(of)
			x, err = of.fsys.build(of.id, of.base, of.root, l)
		}
	}
	if err != nil {
		return err
	}
	of.base = x.extents
	of.setRoot(x.root)
	l.changed = false
	return nil
}

// errBaseMoved means the file's current content is no longer the one a
// commit was built over.
var errBaseMoved = errors.New("file changed behind its open state")

// rebaseLocked makes the file's current content the base, keeping the
// buffered changes on top of it (they are byte ranges, a size and times, so
// they apply to any content). Called with of.mu held and, for the pending
// layer, only when no background commit is using it.
func (of *openFile) rebaseLocked() error {
	v, err := of.fsys.s.Head(of.id)
	if err != nil {
		return err
	}
	if v.Content == of.root {
		return nil
	}
	x, err := of.fsys.s.ContentOf(v)
	if err != nil {
		return err
	}
	below, newBelow := of.base.Size, x.Size
	for _, l := range []*layer{of.pending, of.cur} {
		if l != nil {
			old := l.size
			l.rebase(below, newBelow)
			below, newBelow = old, l.size
		}
	}
	of.base, of.origin = x, of.fsys.s.OriginOf(v)
	of.setRoot(v.Content)
	return nil
}

// rebase adjusts l for content below it that changed size from old to
// size: what l did not cut away is kept, and l's own size follows unless l
// set it.
func (l *layer) rebase(old, size uint64) {
	if l.keep < old || l.cut && l.changed {
		// l cut the content below at keep (a truncation, maybe then
		// writes or an extension): its size, and whatever lies past
		// keep, are its own, however the content below changed. (Taking
		// the larger new size made a truncate-and-write over a peer's
		// longer version commit the writes padded with zeros; an O_TRUNC
		// of an empty file cut nothing, and its writes went on top of the
		// peer's version.)
		return
	}
	l.keep, l.cut = size, false // l is over the new content now, as if it had opened it
	switch {
	case l.size == old:
		l.size = size
		if n := len(l.patches); n > 0 {
			l.size = max(l.size, l.patches[n-1].End())
		}
	case l.size > old:
		l.size = max(l.size, size)
	}
	l.keep = min(l.keep, l.size)
}

// content stores l's content over base and returns it with its manifest
// root. A layer that changed only attributes keeps base as it is.
func (f *FS) content(base *store.Extents, root store.Hash, l *layer) (*store.Extents, store.Hash, error) {
	if len(l.patches) == 0 && l.size == base.Size && l.keep >= base.Size {
		return base, root, nil
	}
	s := f.s
	var err error
	if l.keep < base.Size {
		if base, err = s.Rewrite(base, nil, l.keep); err != nil {
			return nil, store.Hash{}, err
		}
	}
	x, err := s.Rewrite(base, l.patches, l.size)
	if err != nil {
		return nil, store.Hash{}, err
	}
	newRoot, err := s.PutManifest(x.Refs)
	if err != nil {
		return nil, store.Hash{}, err
	}
	return x, newRoot, nil
}

// built is a committed layer's content.
type built struct {
	extents *store.Extents
	root    store.Hash
}

// build stores l's content over base (whose manifest root is root) and
// commits it as a new version of id, unless id's content is no longer
// root (errBaseMoved).
func (f *FS) build(id store.FileID, base *store.Extents, root store.Hash, l *layer) (built, error) {
	s := f.s
	x, newRoot, err := f.content(base, root, l)
	if err != nil {
		return built{}, err
	}
	alloc := x.Data() // a walk of every extent: once, outside the commit
	err = s.Update(store.OpWrite, func(tx *store.Tx) error {
		v, err := tx.Head(id)
		if err != nil {
			return err
		}
		if v.Content != root {
			return errBaseMoved
		}
		nv := v.Clone()
		nv.Content, nv.Size, nv.Alloc = newRoot, x.Size, alloc
		a := fileAttrs{mode: nv.Mode, uid: nv.UID, gid: nv.GID, atime: nv.Atime, mtime: nv.Mtime, ctime: nv.Ctime}
		l.apply(&a)
		nv.Mode, nv.UID, nv.GID, nv.Atime, nv.Mtime, nv.Ctime = a.mode, a.uid, a.gid, a.atime, a.mtime, a.ctime
		_, err = tx.Put(nv)
		return err
	})
	if err != nil {
		return built{}, err
	}
	if alloc != x.Size {
		// While writes were buffered the file counted every byte as
		// allocated (see Getattr); the kernel may hold that count.
		f.notifyAttrs(id)
	}
	return built{x, newRoot}, nil
}
