package store

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The chunk cache holds chunks a fog node fetched from peers, one file per
// chunk (dir/ab/abcd…, named by the chunk's hash), bounded by total size.
//
// Eviction is a segmented LRU, so that one pass over much data (a backup,
// a find | xargs cat) does not flush the chunks in steady use. A new chunk
// enters the probation segment; a second reference promotes it to the
// protected segment, which holds at most 80% of the limit and
// demotes its least recently used entries back to probation. Victims come
// from the probation LRU end first. Reads of one chunk within refGap of
// each other count as one reference: a sequential read touches a chunk
// once per small piece, and that must not look like reuse.
//
// Files are not fsynced: the caller verifies chunk bytes on every read and
// refetches a damaged or torn one.
const (
	cacheTmpPrefix  = "tmp-"
	cacheMaxOpen    = 128 // open files kept for reads
	cacheDefaultGap = time.Second
)

// CacheStats is what status shows about the cache.
type CacheStats struct {
	Size         int64  `json:"size"` // bytes held (sum of file sizes)
	Limit        int64  `json:"limit"`
	Chunks       int    `json:"chunks"`
	PinnedBytes  int64  `json:"pinned_bytes"`
	Hits         uint64 `json:"hits"`
	Evictions    uint64 `json:"evictions"`
	EvictedBytes uint64 `json:"evicted_bytes"`
}

// chunkCache is the on-disk, size-bounded, scan-resistant chunk cache.
type chunkCache struct {
	dir    string
	log    *slog.Logger
	refGap time.Duration    // touches closer than this are one reference
	now    func() time.Time // the clock (tests replace it)

	mu        sync.Mutex // guards everything below; no file I/O under it
	closed    bool
	limit     int64
	size      int64 // sum of file sizes, and of puts being written
	protSize  int64 // bytes in the protected segment
	pinned    int64 // bytes of entries with pins
	entries   map[Hash]*cacheEntry
	probation *list.List    // of *cacheEntry, MRU at the front
	protected *list.List    // of *cacheEntry, MRU at the front
	files     *list.List    // of *cacheEntry with an open file, MRU at the front
	maxOpen   int           // bound on files.Len()
	busy      map[Hash]bool // hashes whose file is being written or unlinked
	lostPins  map[Hash]int  // pins of pinned chunks removed (damaged), restored when they return
	hits      uint64
	evictions uint64
	evBytes   uint64
}

type cacheEntry struct {
	h       Hash
	size    int64
	elem    *list.Element // in probation or protected
	prot    bool          // elem is in protected
	lastRef time.Time     // admission or last counted reference
	pins    int
	inUse   int // readAts in progress
	file    *cacheFile
	fileEl  *list.Element // in files, when file != nil
}

// cacheFile is an open chunk file, closed when its last holder lets go:
// the cache's open-file LRU holds one reference, each readAt in flight
// another.
type cacheFile struct {
	f    *os.File
	refs int
}

// openChunkCache opens (creating if need be) the cache in dir, indexes the
// chunk files already there, oldest first, and evicts down to limit.
func openChunkCache(dir string, limit int64, log *slog.Logger) (*chunkCache, error) {
	if log == nil {
		log = discardLogger()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chunk cache directory: %w", err)
	}
	c := &chunkCache{
		dir: dir, log: log, refGap: cacheDefaultGap, now: time.Now,
		limit: limit, entries: map[Hash]*cacheEntry{},
		probation: list.New(), protected: list.New(), files: list.New(),
		maxOpen: cacheMaxOpen, busy: map[Hash]bool{}, lostPins: map[Hash]int{},
	}
	found, err := c.scan()
	if err != nil {
		return nil, err
	}
	sort.Slice(found, func(i, j int) bool { return found[i].mtime.Before(found[j].mtime) })
	now := c.now()
	for _, f := range found {
		e := &cacheEntry{h: f.h, size: f.size, lastRef: now}
		e.elem = c.probation.PushFront(e)
		c.entries[f.h] = e
		c.size += f.size
	}
	c.mu.Lock()
	victims, closing := c.evictLocked(c.limit)
	c.mu.Unlock()
	c.finish(victims, closing)
	c.log.Info("chunk cache opened", "dir", dir, "chunks", len(c.entries), "bytes", c.size)
	return c, nil
}

type foundChunk struct {
	h     Hash
	size  int64
	mtime time.Time
}

// scan deletes leftover temp files and lists the chunk files in c.dir.
func (c *chunkCache) scan() ([]foundChunk, error) {
	top, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	var found []foundChunk
	for _, d := range top {
		name := d.Name()
		switch {
		case strings.HasPrefix(name, cacheTmpPrefix):
			if err := os.Remove(filepath.Join(c.dir, name)); err != nil {
				c.log.Warn("chunk cache: cannot remove temp file", "file", name, "err", err)
			}
			continue
		case !d.IsDir() || len(name) != 2 || !isLowerHex(name):
			c.log.Warn("chunk cache: ignoring unexpected file", "file", name)
			continue
		}
		sub, err := os.ReadDir(filepath.Join(c.dir, name))
		if err != nil {
			return nil, fmt.Errorf("chunk cache: %w", err)
		}
		for _, s := range sub {
			rel := filepath.Join(name, s.Name())
			h, err := ParseHash(s.Name())
			if err != nil || h.String() != s.Name() || !strings.HasPrefix(s.Name(), name) || !s.Type().IsRegular() {
				c.log.Warn("chunk cache: ignoring unexpected file", "file", rel)
				continue
			}
			info, err := s.Info()
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("chunk cache: %w", err)
			}
			found = append(found, foundChunk{h, info.Size(), info.ModTime()})
		}
	}
	return found, nil
}

func isLowerHex(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

func (c *chunkCache) path(h Hash) string {
	s := h.String()
	return filepath.Join(c.dir, s[:2], s)
}

// setLimit changes the limit and evicts down to it at once.
func (c *chunkCache) setLimit(limit int64) {
	c.mu.Lock()
	c.limit = limit
	c.balanceLocked()
	victims, closing := c.evictLocked(limit)
	c.mu.Unlock()
	c.finish(victims, closing)
}

// put stores a chunk whose bytes are the concatenation of record. It
// reports whether the chunk is now cached: false, with no error, when the
// cache is off or full of entries that cannot be evicted, or when the same
// chunk is being written or removed concurrently.
func (c *chunkCache) put(h Hash, record [][]byte) (bool, error) {
	var n int64
	for _, b := range record {
		n += int64(len(b))
	}
	c.mu.Lock()
	if c.entries[h] != nil {
		c.mu.Unlock()
		return true, nil
	}
	if c.closed || c.limit <= 0 || c.busy[h] {
		c.mu.Unlock()
		return false, nil
	}
	victims, closing := c.evictLocked(c.limit - n)
	// Admit only while within the limit, so that the cache never exceeds
	// it by more than one chunk.
	admit := c.size <= c.limit
	if admit {
		c.size += n // reserved while the file is written
		c.busy[h] = true
	}
	c.mu.Unlock()
	c.finish(victims, closing)
	if !admit {
		return false, nil
	}

	err := c.write(h, record)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.busy, h)
	if err != nil {
		c.size -= n
		return false, err
	}
	e := &cacheEntry{h: h, size: n, lastRef: c.now()}
	if p := c.lostPins[h]; p > 0 {
		e.pins = p
		c.pinned += n
		delete(c.lostPins, h)
	}
	e.elem = c.probation.PushFront(e)
	c.entries[h] = e
	return true, nil
}

// write writes the chunk to a temp file and renames it into place.
func (c *chunkCache) write(h Hash, record [][]byte) error {
	f, err := os.CreateTemp(c.dir, cacheTmpPrefix+"*")
	if err != nil {
		return cacheWriteErr(h, err)
	}
	tmp := f.Name()
	iov := make([][]byte, 0, len(record))
	for _, b := range record {
		if len(b) > 0 {
			iov = append(iov, b)
		}
	}
	_, err = writev(f, iov)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Mkdir(filepath.Dir(c.path(h)), 0o700)
		if errors.Is(err, os.ErrExist) {
			err = nil
		}
	}
	if err == nil {
		err = os.Rename(tmp, c.path(h))
	}
	if err != nil {
		os.Remove(tmp)
		return cacheWriteErr(h, err)
	}
	return nil
}

func cacheWriteErr(h Hash, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("cache chunk %s: %w: %w", h.Short(), ErrNoSpace, err)
	}
	return fmt.Errorf("cache chunk %s: %w", h.Short(), err)
}

// readAt reads n bytes at off of cached chunk h. It gives an error
// wrapping ErrNotFound if h is not cached, and one wrapping ErrCorrupt if
// the file is too short (the caller then refetches the chunk).
func (c *chunkCache) readAt(h Hash, off int64, n int) ([]byte, error) {
	if off < 0 || n < 0 {
		return nil, fmt.Errorf("cached chunk %s: bad range %d+%d", h.Short(), off, n)
	}
	c.mu.Lock()
	e := c.entries[h]
	if e == nil || c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("cached chunk %s: %w", h.Short(), ErrNotFound)
	}
	e.inUse++
	cf := e.file
	if cf != nil {
		cf.refs++
		c.files.MoveToFront(e.fileEl)
	}
	c.mu.Unlock()

	if cf == nil {
		var err error
		if cf, err = c.openFile(e); err != nil {
			return nil, err
		}
	}
	buf := make([]byte, n)
	_, err := cf.f.ReadAt(buf, off)

	c.mu.Lock()
	e.inUse--
	closing := c.releaseLocked(cf)
	c.mu.Unlock()
	if closing != nil {
		closing.Close()
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("cached chunk %s at %d: %w: %w", h.Short(), off, ErrCorrupt, err)
	}
	return buf, nil
}

// openFile opens e's file for readAt, which holds e in use, and returns it
// with a reference for the caller. The file joins the open-file LRU
// unless another readAt got there first or e left the cache meanwhile.
func (c *chunkCache) openFile(e *cacheEntry) (*cacheFile, error) {
	f, err := os.Open(c.path(e.h))
	c.mu.Lock()
	current := c.entries[e.h] == e && !c.closed
	if err != nil {
		e.inUse--
		c.mu.Unlock()
		if errors.Is(err, os.ErrNotExist) {
			if current { // indexed but gone: damage
				return nil, fmt.Errorf("cached chunk %s: %w: file missing", e.h.Short(), ErrCorrupt)
			}
			return nil, fmt.Errorf("cached chunk %s: %w", e.h.Short(), ErrNotFound)
		}
		return nil, fmt.Errorf("cached chunk %s: %w", e.h.Short(), err)
	}
	var cf *cacheFile
	var closing []*os.File
	switch {
	case e.file != nil: // another readAt opened it first
		cf = e.file
		cf.refs++
		closing = append(closing, f)
	case current:
		cf = &cacheFile{f: f, refs: 2}
		e.file = cf
		e.fileEl = c.files.PushFront(e)
		for c.files.Len() > c.maxOpen {
			old := c.files.Back().Value.(*cacheEntry)
			if of := c.dropFileLocked(old); of != nil {
				closing = append(closing, of)
			}
		}
	default: // e was removed or the cache closed: read privately
		cf = &cacheFile{f: f, refs: 1}
	}
	c.mu.Unlock()
	for _, f := range closing {
		f.Close()
	}
	return cf, nil
}

// releaseLocked drops one reference to cf and returns its file if that
// was the last one (for the caller to close outside the lock).
func (c *chunkCache) releaseLocked(cf *cacheFile) *os.File {
	cf.refs--
	if cf.refs == 0 {
		return cf.f
	}
	return nil
}

// dropFileLocked takes e's file out of the open-file LRU.
func (c *chunkCache) dropFileLocked(e *cacheEntry) *os.File {
	if e.file == nil {
		return nil
	}
	c.files.Remove(e.fileEl)
	cf := e.file
	e.file, e.fileEl = nil, nil
	return c.releaseLocked(cf)
}

// has reports whether chunk h is cached.
func (c *chunkCache) has(h Hash) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[h] != nil
}

// fileSize returns the size of cached chunk h's file.
func (c *chunkCache) fileSize(h Hash) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[h]; e != nil {
		return e.size, true
	}
	return 0, false
}

// touch records a read of cached chunk h. Only a read refGap or more after
// the previous counted one (or the admission) counts as a new reference:
// it promotes a probation entry, or refreshes a protected one.
func (c *chunkCache) touch(h Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[h]
	if e == nil {
		return
	}
	c.hits++
	now := c.now()
	if now.Sub(e.lastRef) < c.refGap {
		return
	}
	e.lastRef = now
	if e.prot {
		c.protected.MoveToFront(e.elem)
		return
	}
	c.probation.Remove(e.elem)
	e.elem, e.prot = c.protected.PushFront(e), true
	c.protSize += e.size
	c.balanceLocked()
}

// balanceLocked demotes protected LRU entries to the probation MRU end
// until the protected segment fits its share of the limit.
func (c *chunkCache) balanceLocked() {
	max := c.limit - c.limit/5 // 80%
	for c.protSize > max && c.protected.Len() > 0 {
		e := c.protected.Back().Value.(*cacheEntry)
		c.protected.Remove(e.elem)
		e.elem, e.prot = c.probation.PushFront(e), false
		c.protSize -= e.size
	}
}

// evictLocked evicts entries, probation LRU first, then protected LRU,
// until size ≤ target or no entry is evictable (pinned or being read).
// It returns the hashes whose files the caller must unlink, marked busy,
// and files to close; pass both to finish once the lock is released.
func (c *chunkCache) evictLocked(target int64) ([]Hash, []*os.File) {
	var victims []Hash
	var closing []*os.File
	for _, seg := range []*list.List{c.probation, c.protected} {
		for el := seg.Back(); el != nil && c.size > target; {
			e := el.Value.(*cacheEntry)
			el = el.Prev()
			if e.pins > 0 || e.inUse > 0 {
				continue
			}
			if f := c.deleteLocked(e); f != nil {
				closing = append(closing, f)
			}
			c.busy[e.h] = true
			victims = append(victims, e.h)
			c.evictions++
			c.evBytes += uint64(e.size)
		}
	}
	return victims, closing
}

// deleteLocked takes e out of the index and returns its file if it must
// be closed.
func (c *chunkCache) deleteLocked(e *cacheEntry) *os.File {
	if e.prot {
		c.protected.Remove(e.elem)
		c.protSize -= e.size
	} else {
		c.probation.Remove(e.elem)
	}
	if e.pins > 0 {
		c.pinned -= e.size
	}
	c.size -= e.size
	delete(c.entries, e.h)
	return c.dropFileLocked(e)
}

// finish closes files and unlinks evicted chunks' files, outside the lock.
func (c *chunkCache) finish(victims []Hash, closing []*os.File) {
	for _, f := range closing {
		f.Close()
	}
	if len(victims) == 0 {
		return
	}
	for _, h := range victims {
		if err := os.Remove(c.path(h)); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("chunk cache: cannot delete evicted chunk", "chunk", h.Short(), "err", err)
		}
	}
	c.mu.Lock()
	for _, h := range victims {
		delete(c.busy, h)
	}
	c.mu.Unlock()
}

// remove drops chunk h and deletes its file, pinned or not (for a damaged
// chunk, or one moved elsewhere). A readAt in progress finishes on the
// file it has open.
func (c *chunkCache) remove(h Hash) error {
	c.mu.Lock()
	e := c.entries[h]
	if e == nil {
		c.mu.Unlock()
		return nil
	}
	if e.pins > 0 {
		// A pinned chunk stays pinned: its next copy takes the pins back.
		c.lostPins[h] = e.pins
	}
	f := c.deleteLocked(e)
	c.busy[h] = true
	c.mu.Unlock()
	if f != nil {
		f.Close()
	}
	err := os.Remove(c.path(h))
	c.mu.Lock()
	delete(c.busy, h)
	c.mu.Unlock()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove cached chunk %s: %w", h.Short(), err)
	}
	return nil
}

// pin keeps chunk h from eviction until a matching unpin. Pins are
// counted. It reports false if h is not cached.
func (c *chunkCache) pin(h Hash) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[h]
	if e == nil {
		return false
	}
	if e.pins == 0 {
		c.pinned += e.size
	}
	e.pins++
	return true
}

// unpin undoes one pin. The entry becomes evictable at the next put or
// setLimit, not at once.
func (c *chunkCache) unpin(h Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[h]
	if e == nil {
		if c.lostPins[h]--; c.lostPins[h] <= 0 {
			delete(c.lostPins, h)
		}
		return
	}
	if e.pins == 0 {
		return
	}
	e.pins--
	if e.pins == 0 {
		c.pinned -= e.size
	}
}

func (c *chunkCache) stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{
		Size: c.size, Limit: c.limit, Chunks: len(c.entries), PinnedBytes: c.pinned,
		Hits: c.hits, Evictions: c.evictions, EvictedBytes: c.evBytes,
	}
}

// close closes the cache's open files (a readAt in progress closes its
// own when done). Afterwards put caches nothing and readAt finds nothing.
func (c *chunkCache) close() error {
	c.mu.Lock()
	c.closed = true
	var closing []*os.File
	for c.files.Len() > 0 {
		if f := c.dropFileLocked(c.files.Front().Value.(*cacheEntry)); f != nil {
			closing = append(closing, f)
		}
	}
	c.mu.Unlock()
	var first error
	for _, f := range closing {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
