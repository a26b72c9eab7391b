package store

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The chunk cache holds chunks a fog node fetched from peers, bounded by
// total size. Chunks are appended to segment files (dir/00000001.seg, …)
// in the order they arrive, each record in a frame that starts on a 4 KiB
// boundary; an evicted chunk's frame is freed by punching a hole over it,
// and a segment whose chunks are all gone is deleted. Chunks fetched
// together lie together, so a re-read is one sequential read of a file the
// kernel reads ahead, not an open and a cold inode per chunk.
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
// The index is in memory and rebuilt on open by reading the frames, oldest
// segment first. Segments are not fsynced: the caller verifies chunk bytes
// on every read and refetches a damaged or torn one, and a frame that does
// not check out ends its segment (what follows it is dropped).
const (
	cacheSegSuffix  = ".seg"
	cacheSegMax     = 256 << 20 // start a new segment past this size
	cacheAlign      = 4096      // frames start on file-system block boundaries
	cacheDefaultGap = time.Second

	// A frame: magic "GCF1", chunk id (32), record length (u32 LE), CRC-32C
	// of the preceding 40 bytes (u32 LE); then the record.
	cacheFrameLen = 44
	cacheMagic    = "GCF1"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// cacheCost is the disk space a record of n bytes takes in the cache, and
// what it counts against the limit.
func cacheCost(n int64) int64 {
	return (cacheFrameLen + n + cacheAlign - 1) / cacheAlign * cacheAlign
}

// CacheStats is what status shows about the cache.
type CacheStats struct {
	Size         int64  `json:"size"` // disk space held by cached chunks
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
	segMax int64            // start a new segment past this size

	wmu sync.Mutex // orders appends; taken before mu, never under it

	ops sync.WaitGroup // puts, readAts and removals in progress; close waits for them

	mu        sync.Mutex // guards everything below; no file I/O under it
	closed    bool
	noPunch   bool // the file system cannot punch holes (warned once)
	limit     int64
	size      int64 // cost of the entries, and of puts being written
	protSize  int64 // cost of the protected segment's entries
	pinned    int64 // cost of entries with pins
	entries   map[Hash]*cacheEntry
	probation *list.List // of *cacheEntry, MRU at the front
	protected *list.List // of *cacheEntry, MRU at the front
	segs      map[uint32]*cacheSeg
	cur       *cacheSeg     // the segment appended to (nil until the first put)
	nextSeg   uint32        // id of the next segment to create
	busy      map[Hash]bool // hashes being written
	lostPins  map[Hash]int  // pins of pinned chunks removed (damaged), restored when they return
	hits      uint64
	evictions uint64
	evBytes   uint64
}

type cacheEntry struct {
	h       Hash
	seg     *cacheSeg
	off     int64         // of the frame in seg
	n       int64         // record length
	size    int64         // cacheCost(n)
	elem    *list.Element // in probation or protected
	prot    bool          // elem is in protected
	lastRef time.Time     // admission or last counted reference
	pins    int
	inUse   int  // readAts in progress
	doomed  bool // out of the index while in use: the last readAt punches it out
}

// cacheSeg is a segment file. Its file stays open while it has entries or
// users; it is deleted once it has neither and is not being appended to.
type cacheSeg struct {
	id    uint32
	f     *os.File
	end   int64 // where the next frame goes (guarded by wmu)
	live  int   // entries in the index
	users int   // readAts and hole punches in progress
	gone  bool  // out of the index, to be closed
	empty bool  // gone with no entries: delete the file too
}

// hole is an evicted entry's frame, to punch out once the lock is
// released; it holds a user of its segment until then.
type hole struct {
	seg       *cacheSeg
	off, size int64
}

// openChunkCache opens (creating if need be) the cache in dir, indexes the
// chunks in its segments, oldest first, and evicts down to limit.
func openChunkCache(dir string, limit int64, log *slog.Logger) (*chunkCache, error) {
	if log == nil {
		log = discardLogger()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chunk cache directory: %w", err)
	}
	c := &chunkCache{
		dir: dir, log: log, refGap: cacheDefaultGap, now: time.Now, segMax: cacheSegMax,
		limit: limit, entries: map[Hash]*cacheEntry{},
		probation: list.New(), protected: list.New(), segs: map[uint32]*cacheSeg{},
		nextSeg: 1, busy: map[Hash]bool{}, lostPins: map[Hash]int{},
	}
	ids, err := c.segmentIDs()
	if err != nil {
		return nil, err
	}
	var holes []hole
	for _, id := range ids {
		dup, err := c.scanSegment(id)
		if err != nil {
			c.finish(holes)
			c.close()
			return nil, err
		}
		holes = append(holes, dup...)
		c.nextSeg = id + 1
	}
	if len(ids) > 0 { // go on appending to the newest segment
		c.cur = c.segs[ids[len(ids)-1]]
	}
	c.mu.Lock()
	holes = append(holes, c.evictLocked(c.limit)...)
	var empty []*cacheSeg
	for _, seg := range c.segs { // left empty by a crash or a failed delete
		if c.retireLocked(seg) {
			empty = append(empty, seg)
		}
	}
	c.mu.Unlock()
	c.dispose(empty)
	c.finish(holes)
	c.log.Info("chunk cache opened", "dir", dir, "chunks", len(c.entries), "bytes", c.size, "segments", len(ids))
	return c, nil
}

func (c *chunkCache) segPath(id uint32) string {
	return filepath.Join(c.dir, fmt.Sprintf("%08d%s", id, cacheSegSuffix))
}

// segmentIDs lists the segment files in c.dir, oldest first.
func (c *chunkCache) segmentIDs() ([]uint32, error) {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	var ids []uint32
	for _, d := range des {
		var id uint32
		name := d.Name()
		if _, err := fmt.Sscanf(name, "%08d"+cacheSegSuffix, &id); err != nil || c.segPath(id) != filepath.Join(c.dir, name) || !d.Type().IsRegular() || id == 0 {
			c.log.Warn("chunk cache: ignoring unexpected file", "file", name)
			continue
		}
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// scanSegment indexes the frames of segment id. The first frame that does
// not check out (a torn append) ends the segment: the file is cut there.
// A chunk already indexed from an older frame moves to this one; the
// older frames are returned to punch out.
func (c *chunkCache) scanSegment(id uint32) ([]hole, error) {
	f, err := os.OpenFile(c.segPath(id), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	seg := &cacheSeg{id: id, f: f}
	c.segs[id] = seg
	var holes []hole
	off, size := int64(0), st.Size()
	var frame [cacheFrameLen]byte
	for off < size {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			off = size // holes to the end
			break
		}
		if err != nil {
			return nil, fmt.Errorf("chunk cache: segment %d: %w", id, err)
		}
		off = data
		if off%cacheAlign != 0 { // data that is not a frame
			break
		}
		if _, err := f.ReadAt(frame[:], off); err != nil {
			if !errors.Is(err, io.EOF) {
				// Not a torn tail: keep the segment as it is, unindexed past here.
				c.log.Warn("chunk cache: cannot read a segment; its later chunks are not used", "segment", filepath.Base(c.segPath(id)), "offset", off, "err", err)
				seg.end = alignUp(size, cacheAlign)
				return holes, nil
			}
			break
		}
		if frame == ([cacheFrameLen]byte{}) {
			// Zeros, not a hole: an evicted frame where punching zeroes
			// (file-system blocks larger than 4 KiB).
			off += cacheAlign
			continue
		}
		h, n, ok := decodeFrame(frame[:])
		if !ok || off+cacheFrameLen+n > size {
			break
		}
		if old := c.entries[h]; old != nil {
			c.mu.Lock()
			holes = append(holes, c.deleteLocked(old))
			c.mu.Unlock()
		}
		e := &cacheEntry{h: h, seg: seg, off: off, n: n, size: cacheCost(n), lastRef: c.now()}
		e.elem = c.probation.PushFront(e)
		c.entries[h] = e
		c.size += e.size
		seg.live++
		off += e.size
	}
	if off < size {
		c.log.Warn("chunk cache: dropping a damaged segment tail", "segment", filepath.Base(c.segPath(id)), "offset", off, "bytes", size-off)
		if err := f.Truncate(off); err != nil {
			return nil, fmt.Errorf("chunk cache: segment %d: %w", id, err)
		}
		size = off
	}
	// A frame whose padding the file does not reach still ends on a block
	// boundary: the next frame must start on one.
	seg.end = alignUp(max(off, size), cacheAlign)
	return holes, nil
}

// alignUp rounds n up to a multiple of a, a power of two.
func alignUp(n, a int64) int64 { return (n + a - 1) &^ (a - 1) }

func encodeFrame(h Hash, n int64) []byte {
	b := make([]byte, cacheFrameLen)
	copy(b, cacheMagic)
	copy(b[4:], h[:])
	binary.LittleEndian.PutUint32(b[36:], uint32(n))
	binary.LittleEndian.PutUint32(b[40:], crc32.Checksum(b[:40], crcTable))
	return b
}

func decodeFrame(b []byte) (h Hash, n int64, ok bool) {
	if len(b) < cacheFrameLen || string(b[:4]) != cacheMagic ||
		crc32.Checksum(b[:40], crcTable) != binary.LittleEndian.Uint32(b[40:]) {
		return Hash{}, 0, false
	}
	copy(h[:], b[4:36])
	return h, int64(binary.LittleEndian.Uint32(b[36:])), true
}

// setLimit changes the limit and evicts down to it at once.
func (c *chunkCache) setLimit(limit int64) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.ops.Add(1)
	defer c.ops.Done()
	c.limit = limit
	c.balanceLocked()
	holes := c.evictLocked(limit)
	c.mu.Unlock()
	c.finish(holes)
}

// put stores a chunk whose bytes are the concatenation of record. It
// reports whether the chunk is now cached: false, with no error, when the
// cache is off or full of entries that cannot be evicted, or when the same
// chunk is being written concurrently.
func (c *chunkCache) put(h Hash, record [][]byte) (bool, error) {
	var n int64
	for _, b := range record {
		n += int64(len(b))
	}
	cost := cacheCost(n)
	c.mu.Lock()
	if c.entries[h] != nil {
		c.mu.Unlock()
		return true, nil
	}
	if c.closed || c.limit <= 0 || c.busy[h] || n > maxFramed {
		c.mu.Unlock()
		return false, nil
	}
	c.ops.Add(1)
	defer c.ops.Done()
	holes := c.evictLocked(c.limit - cost)
	// Admit only while within the limit, so that the cache never exceeds
	// it by more than one chunk.
	admit := c.size <= c.limit
	if admit {
		c.size += cost // reserved while the frame is written
		c.busy[h] = true
	}
	c.mu.Unlock()
	c.finish(holes)
	if !admit {
		return false, nil
	}

	c.wmu.Lock()
	defer c.wmu.Unlock()
	seg, off, err := c.append(h, n, record)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.busy, h)
	if err != nil {
		c.size -= cost
		if errors.Is(err, os.ErrClosed) {
			return false, nil
		}
		return false, err
	}
	e := &cacheEntry{h: h, seg: seg, off: off, n: n, size: cost, lastRef: c.now()}
	if p := c.lostPins[h]; p > 0 {
		e.pins = p
		c.pinned += cost
		delete(c.lostPins, h)
	}
	e.elem = c.probation.PushFront(e)
	c.entries[h] = e
	seg.live++
	return true, nil
}

const maxFramed = 1<<32 - 1 // a frame's record length is a u32

// append writes h's frame at the end of the current segment, starting a
// new one when it is full, and returns where. The caller holds wmu. A
// failed write is cut off and ends the segment, so a torn frame is never
// followed by good ones.
func (c *chunkCache) append(h Hash, n int64, record [][]byte) (*cacheSeg, int64, error) {
	c.mu.Lock()
	seg, closed := c.cur, c.closed
	c.mu.Unlock()
	if closed {
		return nil, 0, fmt.Errorf("cache chunk %s: %w", h.Short(), os.ErrClosed)
	}
	if seg == nil || seg.end >= c.segMax {
		var err error
		if seg, err = c.newSegment(); err != nil {
			return nil, 0, cacheWriteErr(h, err)
		}
	}
	off := seg.end
	iov := [][]byte{encodeFrame(h, n)}
	for _, b := range record {
		if len(b) > 0 {
			iov = append(iov, b)
		}
	}
	if pad := cacheCost(n) - cacheFrameLen - n; pad > 0 {
		iov = append(iov, make([]byte, pad))
	}
	if err := pwritev(seg.f, iov, off); err != nil {
		seg.f.Truncate(off)
		seg.end = c.segMax // the next put starts a new segment
		return nil, 0, cacheWriteErr(h, err)
	}
	seg.end = off + cacheCost(n)
	return seg, off, nil
}

// newSegment creates the next segment and makes it current. The caller
// holds wmu.
func (c *chunkCache) newSegment() (*cacheSeg, error) {
	c.mu.Lock()
	id := c.nextSeg
	c.nextSeg++
	c.mu.Unlock()
	f, err := os.OpenFile(c.segPath(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	seg := &cacheSeg{id: id, f: f}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		f.Close()
		os.Remove(f.Name())
		return nil, os.ErrClosed
	}
	old := c.cur
	c.segs[id], c.cur = seg, seg
	var done []*cacheSeg
	if old != nil && c.retireLocked(old) {
		done = append(done, old)
	}
	c.mu.Unlock()
	c.dispose(done)
	return seg, nil
}

// pwritev writes all of iov to f at off, retrying short writes.
func pwritev(f *os.File, iov [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for len(iov) > 0 {
		var n int
		var werr error
		batch := iov[:min(len(iov), 1024)] // IOV_MAX
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Pwritev(int(fd), batch, off)
			return true
		}); err != nil {
			return err
		}
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			return werr
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		off += int64(n)
		iov = advance(iov, n)
	}
	return nil
}

func cacheWriteErr(h Hash, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("cache chunk %s: %w: %w", h.Short(), ErrNoSpace, err)
	}
	return fmt.Errorf("cache chunk %s: %w", h.Short(), err)
}

// readAt reads n bytes at off of cached chunk h's record. It gives an
// error wrapping ErrNotFound if h is not cached, and one wrapping
// ErrCorrupt if the range is past the record's end or the segment was
// cut short (the caller then refetches the chunk).
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
	if off+int64(n) > e.n {
		c.mu.Unlock()
		return nil, fmt.Errorf("cached chunk %s: %w: %d+%d is past its %d bytes", h.Short(), ErrCorrupt, off, n, e.n)
	}
	c.ops.Add(1)
	defer c.ops.Done()
	e.inUse++
	seg, at := e.seg, e.off+cacheFrameLen+off
	seg.users++
	c.mu.Unlock()

	buf := make([]byte, n)
	_, err := seg.f.ReadAt(buf, at)

	c.mu.Lock()
	e.inUse--
	seg.users--
	var done []*cacheSeg
	var holes []hole
	if e.inUse == 0 && e.doomed {
		e.doomed = false
		holes = append(holes, hole{seg, e.off, e.size})
	} else if c.retireLocked(seg) {
		done = append(done, seg)
	}
	c.mu.Unlock()
	c.dispose(done)
	c.finish(holes)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("cached chunk %s at %d: %w: %w", h.Short(), off, ErrCorrupt, err)
	}
	return buf, nil
}

// retireLocked reports whether seg is done with — no entries, no users,
// not being appended to (or the cache closed) — and marks it gone, for
// the caller to dispose of once the lock is released.
func (c *chunkCache) retireLocked(seg *cacheSeg) bool {
	if seg.gone || seg.users > 0 || (!c.closed && (seg.live > 0 || seg == c.cur)) {
		return false
	}
	seg.gone, seg.empty = true, seg.live == 0
	delete(c.segs, seg.id)
	if seg == c.cur {
		c.cur = nil
	}
	return true
}

// dispose closes retired segments, deleting those left empty.
func (c *chunkCache) dispose(segs []*cacheSeg) {
	for _, seg := range segs {
		seg.f.Close()
		if seg.empty {
			if err := os.Remove(seg.f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
				c.log.Warn("chunk cache: cannot delete an empty segment", "segment", seg.f.Name(), "err", err)
			}
		}
	}
}

// has reports whether chunk h is cached.
func (c *chunkCache) has(h Hash) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[h] != nil
}

// recordLen returns the length of cached chunk h's record.
func (c *chunkCache) recordLen(h Hash) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[h]; e != nil {
		return e.n, true
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
// It returns the frames to punch out; pass them to finish once the lock
// is released.
func (c *chunkCache) evictLocked(target int64) []hole {
	var holes []hole
	for _, seg := range []*list.List{c.probation, c.protected} {
		for el := seg.Back(); el != nil && c.size > target; {
			e := el.Value.(*cacheEntry)
			el = el.Prev()
			if e.pins > 0 || e.inUse > 0 {
				continue
			}
			holes = append(holes, c.deleteLocked(e))
			c.evictions++
			c.evBytes += uint64(e.size)
		}
	}
	return holes
}

// deleteLocked takes e out of the index and returns its frame to punch
// out.
func (c *chunkCache) deleteLocked(e *cacheEntry) hole {
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
	e.seg.live--
	if e.seg.gone { // the cache is closed: leave the file alone
		return hole{}
	}
	e.seg.users++
	if e.inUse > 0 { // removed while being read: punched when the read ends
		e.doomed = true
		return hole{}
	}
	return hole{e.seg, e.off, e.size}
}

// finish punches out evicted frames, outside the lock, and disposes of
// segments left empty.
func (c *chunkCache) finish(holes []hole) {
	if len(holes) == 0 {
		return
	}
	for _, h := range holes {
		if h.seg == nil {
			continue
		}
		err := unix.Fallocate(int(h.seg.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, h.off, h.size)
		if err != nil {
			c.mu.Lock()
			warned := c.noPunch
			c.noPunch = c.noPunch || errors.Is(err, unix.EOPNOTSUPP)
			c.mu.Unlock()
			if !warned {
				c.log.Warn("chunk cache: cannot free an evicted chunk's space; the cache's disk use can exceed cache.size until its segments empty", "segment", h.seg.f.Name(), "err", err)
			}
		}
	}
	var done []*cacheSeg
	c.mu.Lock()
	for _, h := range holes {
		if h.seg == nil {
			continue
		}
		h.seg.users--
		if c.retireLocked(h.seg) {
			done = append(done, h.seg)
		}
	}
	c.mu.Unlock()
	c.dispose(done)
}

// remove drops chunk h and frees its space, pinned or not (for a damaged
// chunk, or one moved elsewhere). A readAt in progress reads the chunk
// as it was; the space is freed when it ends.
func (c *chunkCache) remove(h Hash) error {
	c.mu.Lock()
	e := c.entries[h]
	if e == nil || c.closed {
		c.mu.Unlock()
		return nil
	}
	c.ops.Add(1)
	defer c.ops.Done()
	if e.pins > 0 {
		// A pinned chunk stays pinned: its next copy takes the pins back.
		c.lostPins[h] = e.pins
	}
	hl := c.deleteLocked(e)
	c.mu.Unlock()
	c.finish([]hole{hl})
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

// close waits for the puts, reads and removals under way, then closes
// the cache's segments. Afterwards put caches nothing and readAt finds
// nothing.
func (c *chunkCache) close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.ops.Wait() // puts, reads and punches under way end first
	c.mu.Lock()
	var done []*cacheSeg
	for _, seg := range c.segs {
		if c.retireLocked(seg) {
			done = append(done, seg)
		}
	}
	c.mu.Unlock()
	var first error
	for _, seg := range done {
		if err := seg.f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
