package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Chunks live in append-only pack files of geofs's own, not in Badger's
// value log: Badger validates its newest value-log file when it opens and
// cuts it at the first damaged entry, so one flipped bit would lose every
// chunk written after it. In a pack, damage costs only the block it hits.
// Badger keeps each chunk's location (see chunkLoc).
//
// A pack record is a chunk header (see chunkHeader.encode: id, length,
// and each block's codec, stored length and hash), then each block's
// stored bytes. The header lets a reader check that a location points at
// the chunk it names, and check each block on its own.
//
// Large appends (a batch of a big file's chunks) bypass the page cache
// with O_DIRECT: copying them into it cost a sequential write as much CPU
// as chunking, and a file read back soon after it is written is served
// from FUSE's page cache of the file itself. A direct append starts at a
// 4 KiB boundary and is padded with zeros to one; no location points into
// the gap or the padding. Small appends stay buffered, so small files are
// not padded. In a direct append, a record of 256 KiB of data or more is
// placed so that its data starts on a 4 KiB boundary too (at most 4 KiB of
// zeros before its header, 0.4 % of such a record): its stored-raw blocks,
// the usual case for large files, then lie on whole pages, and a small
// read of one (see readSmall) reads no page more than it needs.
const (
	PackDir     = "packs"
	packMaxSize = 1 << 30 // start a new pack file past this size

	directAlign  = 4 << 10   // offset, length and memory alignment of direct appends
	directMin    = 1 << 20   // appends of at least this many bytes go direct
	alignDataMin = 256 << 10 // in a direct append, such records' data starts on a page
)

// chunkLoc is where a chunk's record starts, and the lengths of its header
// and of its blocks' stored bytes.
type chunkLoc struct {
	Pack    uint32
	Off     uint64
	HdrLen  uint32
	DataLen uint32
}

func (l chunkLoc) encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, l.Pack)
	b = binary.LittleEndian.AppendUint64(b, l.Off)
	b = binary.LittleEndian.AppendUint32(b, l.HdrLen)
	return binary.LittleEndian.AppendUint32(b, l.DataLen)
}

func decodeLoc(b []byte) (chunkLoc, error) {
	if len(b) != 20 {
		return chunkLoc{}, fmt.Errorf("chunk location: %w: %d bytes", ErrCorrupt, len(b))
	}
	l := chunkLoc{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint64(b[4:]),
		binary.LittleEndian.Uint32(b[12:]), binary.LittleEndian.Uint32(b[16:])}
	if l.HdrLen < recordFixed || l.HdrLen > recordMaxHeader || l.DataLen > 2*MaxChunkLen {
		return chunkLoc{}, fmt.Errorf("chunk location: %w: lengths out of range", ErrCorrupt)
	}
	return l, nil
}

// packs appends chunk records and reads them back.
type packs struct {
	dir string

	syncMu   sync.Mutex // one sync at a time
	mu       sync.Mutex // guards the fields below and orders appends
	cur      *os.File   // opened O_APPEND: buffered appends go to its end
	curID    uint32
	curSize  int64      // the end of cur
	direct   *os.File   // cur opened O_DIRECT, or nil where that is refused
	noDirect bool       // the file system refused a direct write: stay buffered
	unsync   []*os.File // written since the last sync (cur, and any rotated)
	failed   error      // the fsync that failed (syncMu): every later sync reports it

	directOK atomic.Bool // direct != nil, for prepare (which runs without mu)
	bufMu    sync.Mutex
	bufs     [][]byte      // aligned buffers for images (see alignedBuf)
	early    chan struct{} // slots of prepareEarly

	// Readers have a lock of their own: an append holds mu while the
	// device writes a direct batch.
	readMu       sync.Mutex
	readers      map[uint32]*os.File
	directReads  map[uint32]*os.File // packs opened O_DIRECT for small reads
	noDirectRead atomic.Bool         // the file system refused a direct read
	noCachestat  atomic.Bool         // the kernel has no cachestat(2)
	seen         *seenSet            // small reads made directly (see readSmall)
}

func openPacks(dir string) (*packs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pack directory: %w", err)
	}
	p := &packs{dir: dir, readers: map[uint32]*os.File{}, directReads: map[uint32]*os.File{},
		seen: new(seenSet), early: make(chan struct{}, earlyImages)}
	ids, err := p.list()
	if err != nil {
		return nil, err
	}
	id := uint32(1)
	if len(ids) > 0 {
		id = ids[len(ids)-1]
	}
	if err := p.openForAppend(id); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *packs) path(id uint32) string { return filepath.Join(p.dir, fmt.Sprintf("%08d.pack", id)) }

func (p *packs) list() ([]uint32, error) {
	names, err := filepath.Glob(filepath.Join(p.dir, "*.pack"))
	if err != nil {
		return nil, err
	}
	var ids []uint32
	for _, n := range names {
		var id uint32
		if _, err := fmt.Sscanf(filepath.Base(n), "%08d.pack", &id); err == nil {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// openForAppend makes pack id the current one. A torn record at its end
// (from a crash) is never referenced; new records simply follow it.
func (p *packs) openForAppend(id uint32) error {
	f, err := os.OpenFile(p.path(id), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open pack: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open pack: %w", err)
	}
	// The new pack's name must survive a crash with its records: sync the
	// directory (ext4 happens to with the file's fsync; POSIX does not say).
	if err := syncDir(p.dir); err != nil {
		f.Close()
		return fmt.Errorf("open pack: %w", err)
	}
	p.cur, p.curID, p.curSize = f, id, st.Size()
	p.readMu.Lock()
	p.readers[id] = f
	p.readMu.Unlock()
	if p.direct != nil {
		p.direct.Close()
		p.direct = nil
	}
	if !p.noDirect {
		// Where the file system refuses O_DIRECT, appends stay buffered.
		p.direct, _ = os.OpenFile(p.path(id), os.O_WRONLY|unix.O_DIRECT, 0)
	}
	p.directOK.Store(p.direct != nil)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// append writes records for the chunks and returns their locations:
// directly when they are large (see directMin), else with one writev.
func (p *packs) append(chunks []encodedChunk) ([]chunkLoc, error) {
	if img := p.prepare(chunks); img != nil {
		defer p.release(img)
		return p.appendImage(img)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.rotate(); err != nil {
		return nil, err
	}
	var iov [][]byte
	locs := make([]chunkLoc, len(chunks))
	off := uint64(p.curSize)
	for i, c := range chunks {
		hdr := c.hdr.encode()
		locs[i] = chunkLoc{Pack: p.curID, Off: off, HdrLen: uint32(len(hdr)), DataLen: uint32(c.hdr.dataLen())}
		iov = append(iov, hdr)
		iov = append(iov, c.data...)
		off += uint64(len(hdr)) + uint64(c.hdr.dataLen())
	}
	n, err := writev(p.cur, iov)
	p.curSize += n // a short write leaves an unreferenced tail
	if err != nil {
		return nil, fmt.Errorf("write pack %d: %w", p.curID, err)
	}
	p.markUnsynced()
	return locs, nil
}

// rotate starts a new pack file once the current one is full (with p.mu
// held).
func (p *packs) rotate() error {
	if p.curSize > packMaxSize {
		return p.openForAppend(p.curID + 1)
	}
	return nil
}

// image is a batch of records laid out, in an aligned buffer, for one
// direct append. A batch is laid out before the store's write lock is
// taken (see PutChunks), so that copying one batch overlaps the device
// writing the batch before it: done under the lock, the copy was about a
// quarter of the time a sequential writer's batch held it.
type image struct {
	ids   []Hash     // the chunks, in order
	locs  []chunkLoc // their records, with Off relative to the image's start
	n     int        // bytes of records; buf is zero-padded past them
	buf   []byte     // aligned, a multiple of directAlign long
	early bool       // holds one of the early slots (see prepareEarly)
}

// earlyImages bounds the batches laid out ahead of the write lock at once
// (each up to 32 MiB): a writer stores two batches at once (storeAhead).
const earlyImages = 2

// prepareEarly is prepare for a batch laid out before the store's write
// lock, or nil when earlyImages are held already: the batch is then laid
// out under the lock.
func (p *packs) prepareEarly(chunks []encodedChunk) *image {
	select {
	case p.early <- struct{}{}:
	default:
		return nil
	}
	img := p.prepare(chunks)
	if img == nil {
		<-p.early
		return nil
	}
	img.early = true
	return img
}

// prepare lays out records for chunks, or returns nil when they are to be
// appended buffered (too small, or direct writes unavailable here).
func (p *packs) prepare(chunks []encodedChunk) *image {
	if !p.directOK.Load() {
		return nil
	}
	img := &image{ids: make([]Hash, len(chunks)), locs: make([]chunkLoc, len(chunks))}
	hdrs := make([][]byte, len(chunks))
	for i, c := range chunks {
		hdrs[i] = c.hdr.encode()
		img.ids[i] = c.hdr.id
		off := img.n
		if c.hdr.dataLen() >= alignDataMin {
			off = int(alignUp(int64(off+len(hdrs[i])), directAlign)) - len(hdrs[i])
		}
		img.locs[i] = chunkLoc{Off: uint64(off), HdrLen: uint32(len(hdrs[i])), DataLen: uint32(c.hdr.dataLen())}
		img.n = off + len(hdrs[i]) + c.hdr.dataLen()
	}
	if img.n < directMin {
		return nil
	}
	img.buf = p.alignedBuf(int(alignUp(int64(img.n), directAlign)))
	n := 0
	for i, c := range chunks {
		gap := int(img.locs[i].Off) - n
		clear(img.buf[n : n+gap])
		n += gap
		n += copy(img.buf[n:], hdrs[i])
		for _, d := range c.data {
			n += copy(img.buf[n:], d)
		}
	}
	clear(img.buf[n:])
	return img
}

// holds reports whether img lays out exactly the chunks of enc.
func (img *image) holds(enc []encodedChunk) bool {
	if len(enc) != len(img.ids) {
		return false
	}
	for i, e := range enc {
		if e.hdr.id != img.ids[i] {
			return false
		}
	}
	return true
}

// appendImage appends img's records: directly, at the first 4 KiB
// boundary at or after the end of the pack, or buffered where the file
// system refuses direct writes.
func (p *packs) appendImage(img *image) ([]chunkLoc, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.rotate(); err != nil {
		return nil, err
	}
	if p.direct != nil {
		start := alignUp(p.curSize, directAlign)
		err := p.writeDirect(img.buf, start)
		if err == nil {
			return img.at(p.curID, uint64(start)), nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return nil, err
		}
		// The file system takes O_DIRECT opens but not these writes.
		p.stopDirect()
	}
	start := p.curSize
	n, err := writev(p.cur, [][]byte{img.buf[:img.n]})
	p.curSize += n // a short write leaves an unreferenced tail
	if err != nil {
		return nil, fmt.Errorf("write pack %d: %w", p.curID, err)
	}
	p.markUnsynced()
	return img.at(p.curID, uint64(start)), nil
}

// stopDirect makes every later append buffered (with p.mu held).
func (p *packs) stopDirect() {
	p.direct.Close()
	p.direct, p.noDirect = nil, true
	p.directOK.Store(false)
}

// at returns img's record locations once it is written at off of pack.
func (img *image) at(pack uint32, off uint64) []chunkLoc {
	locs := make([]chunkLoc, len(img.locs))
	for i, l := range img.locs {
		l.Pack, l.Off = pack, off+l.Off
		locs[i] = l
	}
	return locs
}

// writeDirect writes buf with O_DIRECT at start (with p.mu held).
func (p *packs) writeDirect(buf []byte, start int64) error {
	for done := 0; done < len(buf); {
		w, err := unix.Pwrite(int(p.direct.Fd()), buf[done:], start+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err == nil && w == 0 {
			err = unix.ENOSPC
		}
		if err != nil {
			// What was written is an unreferenced tail; appends go on
			// from its end.
			if done > 0 {
				p.curSize = start + int64(done)
			}
			if err == unix.EINVAL {
				return err
			}
			return fmt.Errorf("write pack %d: %w", p.curID, err)
		}
		done += w
	}
	p.curSize = start + int64(len(buf))
	p.markUnsynced()
	return nil
}

// alignedBuf returns an aligned buffer of n bytes, reusing a released one
// that is large enough. Up to two are kept (see earlyImages).
func (p *packs) alignedBuf(n int) []byte {
	p.bufMu.Lock()
	for i, b := range p.bufs {
		if cap(b) >= n {
			p.bufs = append(p.bufs[:i], p.bufs[i+1:]...)
			p.bufMu.Unlock()
			return b[:n]
		}
	}
	p.bufMu.Unlock()
	// Rounded up, so that a kept buffer fits most later batches.
	b := make([]byte, alignUp(int64(n), 4<<20)+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+n : len(b)-directAlign+skip]
}

// release keeps img's buffer for a later image.
func (p *packs) release(img *image) {
	if img.early {
		<-p.early
	}
	p.bufMu.Lock()
	defer p.bufMu.Unlock()
	if len(p.bufs) < earlyImages {
		p.bufs = append(p.bufs, img.buf[:0])
	} else if i := slices.IndexFunc(p.bufs, func(b []byte) bool { return cap(b) < cap(img.buf) }); i >= 0 {
		p.bufs[i] = img.buf[:0] // keep the larger
	}
	img.buf = nil
}

// markUnsynced notes that cur has appends to sync (with p.mu held).
func (p *packs) markUnsynced() {
	if len(p.unsync) == 0 || p.unsync[len(p.unsync)-1] != p.cur {
		p.unsync = append(p.unsync, p.cur)
	}
}

// writev writes all of iov to f (an O_APPEND file), retrying short writes.
func writev(f *os.File, iov [][]byte) (int64, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	for len(iov) > 0 {
		var n int
		var werr error
		batch := iov[:min(len(iov), 1024)] // IOV_MAX
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Writev(int(fd), batch)
			return werr != unix.EAGAIN
		}); err != nil {
			return total, err
		}
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			return total, werr
		}
		total += int64(n)
		iov = advance(iov, n)
	}
	return total, nil
}

// advance drops the first n bytes of iov.
func advance(iov [][]byte, n int) [][]byte {
	for n > 0 && len(iov) > 0 {
		if n < len(iov[0]) {
			iov[0] = iov[0][n:]
			return iov
		}
		n -= len(iov[0])
		iov = iov[1:]
	}
	for len(iov) > 0 && len(iov[0]) == 0 {
		iov = iov[1:]
	}
	return iov
}

// readAt reads n bytes of pack l.Pack at offset off.
func (p *packs) readAt(l chunkLoc, off uint64, n int) ([]byte, error) {
	f, err := p.reader(l.Pack)
	if err != nil {
		return nil, err
	}
	if n <= directReadMax {
		if b := p.readSmall(l.Pack, f, int64(off), n); b != nil {
			return b, nil
		}
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, int64(off)); err != nil {
		return nil, fmt.Errorf("pack %d at %d: %w: %w", l.Pack, off, ErrCorrupt, err)
	}
	return buf, nil
}

// readWhole is readAt for a whole chunk's data, read to be sent to a peer
// or a fog node: read once, in one piece, and not soon again here. Where
// the page cache holds none of it (a chunk appended directly, or one the
// cache let go) it is read directly, as one large read into memory the
// caller keeps: through the page cache the kernel fills pages and copies
// them out, about 2 s of CPU per GiB on the slower of this project's
// machines, where the two cores are what a link's transfer runs out of
// (the sender reads, hashes and encrypts, the receiver decrypts, hashes
// and writes). Reads through the mount keep the page cache and its
// read-ahead (readAt).
func (p *packs) readWhole(l chunkLoc, off uint64, n int) ([]byte, error) {
	if n < directWholeMin {
		return p.readAt(l, off, n)
	}
	f, err := p.reader(l.Pack)
	if err != nil {
		return nil, err
	}
	if !p.cached(f, int64(off), n) {
		if b := p.readDirect(l.Pack, int64(off), n); b != nil {
			return b, nil
		}
	}
	return p.readAt(l, off, n)
}

// directWholeMin is the smallest whole-chunk read readWhole makes directly.
const directWholeMin = 256 << 10

// readDirect returns n bytes of pack id at off, read with O_DIRECT into
// memory the caller keeps (covering the 4 KiB pages around them), or nil
// where it could not: the file system refuses O_DIRECT, or the read ends
// past the end of the pack. The caller then reads through the page cache,
// which reports any error.
func (p *packs) readDirect(id uint32, off int64, n int) []byte {
	d := p.directReader(id)
	if d == nil {
		return nil
	}
	start, end := off&^(directAlign-1), alignUp(off+int64(n), directAlign)
	buf := alignedAlloc(int(end - start))
	ok := false
	// Through the file's own descriptor reference, so that a close racing
	// the read (a read-ahead at shutdown) gets an error, not another file.
	withFd(d, func(fd int) {
		for done := 0; done < len(buf); {
			r, err := unix.Pread(fd, buf[done:], start+int64(done))
			if err == unix.EINTR {
				continue
			}
			if err == unix.EINVAL {
				// Alignment the device wants and 4 KiB does not meet.
				p.noDirectRead.Store(true)
				return
			}
			if err != nil || r == 0 {
				return
			}
			done += r
			if start+int64(done) >= off+int64(n) {
				break // the rest is past the end of the pack
			}
		}
		ok = true
	})
	if !ok {
		return nil
	}
	return buf[off-start : off-start+int64(n) : off-start+int64(n)]
}

// A small read (the block or two a FUSE read needs, a chunk's header) of
// pack bytes that the page cache does not hold, read for the first time
// as far as this mount knows, goes around the page cache (O_DIRECT).
// Through the page cache each 4 KiB page of a cold read costs about 3 µs
// more on this project's machines (16 KiB: 33–35 µs buffered, 23–24 µs
// direct), and most bytes read once at random are not read again soon;
// the block cache keeps them a while anyway. A read of the same bytes
// again goes through the page cache, so that a working set larger than the
// block cache (a database's index, read at random over and over) ends up
// there as it did before. Larger reads (read-ahead pieces, whole chunks)
// always go through the page cache and its read-ahead of the pack.
const (
	directReadMax = 64 << 10
	seenBits      = 18 // 2 MiB of slots: the last ~256k small reads
)

// seen is a direct-mapped set of small reads made directly: a slot holds
// the key of the last read that hashed to it. A collision only sends a
// read the other way.
type seenSet [1 << seenBits]atomic.Uint64

// firstRead records the small read at pack id, offset off, and reports
// whether it was not recorded already.
func (s *seenSet) firstRead(id uint32, off int64) bool {
	key := uint64(id)<<40 ^ uint64(off) | 1<<63 // never 0, an empty slot
	slot := &s[(key*0x9E3779B97F4A7C15)>>(64-seenBits)]
	return slot.Swap(key) != key
}

// readSmall returns n bytes of pack id at off, read directly into memory
// the caller keeps, or nil where it could not: the page cache holds some
// of them, the file system refuses O_DIRECT, or the read ends past the end
// of the pack. The caller then reads through f, which reports any error.
func (p *packs) readSmall(id uint32, f *os.File, off int64, n int) []byte {
	if n <= 0 || p.cached(f, off, n) || !p.seen.firstRead(id, off) {
		return nil
	}
	b := p.readDirect(id, off, n)
	if b == nil {
		return nil
	}
	if pages := alignUp(off+int64(n), directAlign) - off&^(directAlign-1); pages > int64(n+n/8) {
		// The block cache counts what a block's slice holds, not the
		// pages around it: a small block (a small file's) would keep a
		// page or two alive for its few bytes.
		b = bytes.Clone(b)
	}
	return b
}

// alignedAlloc returns n bytes (a multiple of directAlign) at a
// directAlign boundary. Go's allocator gives such sizes up to 32 KiB a size
// class of their own, whose objects are so aligned, and larger ones whole
// pages; where it does not, a larger allocation is cut to the boundary.
func alignedAlloc(n int) []byte {
	b := make([]byte, n)
	if uintptr(unsafe.Pointer(&b[0]))%directAlign == 0 {
		return b
	}
	b = make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+n : skip+n]
}

// cached reports whether the page cache holds any of pack bytes
// [off, off+n) of f (cachestat(2), Linux 6.5; without it, assume not).
// A direct read of cached bytes would go to the device for what memory
// holds, and write back first what is dirty.
func (p *packs) cached(f *os.File, off int64, n int) bool {
	if p.noCachestat.Load() {
		return false
	}
	r := unix.CachestatRange{Off: uint64(off), Len: uint64(n)}
	var st unix.Cachestat_t
	errno := unix.EBADF
	withFd(f, func(fd int) {
		_, _, errno = unix.Syscall6(unix.SYS_CACHESTAT, uintptr(fd), uintptr(unsafe.Pointer(&r)), uintptr(unsafe.Pointer(&st)), 0, 0, 0)
	})
	if errno == unix.ENOSYS {
		p.noCachestat.Store(true)
	}
	return errno == 0 && st.Cache > 0
}

// withFd calls fn with f's descriptor, which f keeps open until fn returns.
// If f is closed, fn is not called.
func withFd(f *os.File, fn func(fd int)) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// directReader returns pack id opened with O_DIRECT, or nil where direct
// reads are refused.
func (p *packs) directReader(id uint32) *os.File {
	if p.noDirectRead.Load() {
		return nil
	}
	p.readMu.Lock()
	defer p.readMu.Unlock()
	if f := p.directReads[id]; f != nil {
		return f
	}
	f, err := os.OpenFile(p.path(id), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		p.noDirectRead.Store(true) // tmpfs, for one
		return nil
	}
	p.directReads[id] = f
	return f
}

func (p *packs) reader(id uint32) (*os.File, error) {
	p.readMu.Lock()
	defer p.readMu.Unlock()
	if f := p.readers[id]; f != nil {
		return f, nil
	}
	f, err := os.Open(p.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("pack %d: %w: file missing", id, ErrCorrupt)
	}
	if err != nil {
		return nil, err
	}
	p.readers[id] = f
	return f, nil
}

// sync makes every appended record durable.
//
// One sync runs at a time (syncMu), so a caller never returns while data
// written before its call is still being synced by another. A failed fsync
// is final: Linux reports a writeback error once and marks the pages
// clean, so a second fsync of the same file succeeds with the data lost.
// Every later sync returns the first failure (the store stops taking
// changes, see Store.Sync).
func (p *packs) sync() error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	if p.failed != nil {
		return p.failed
	}
	p.mu.Lock()
	files := p.unsync
	p.unsync = nil
	p.mu.Unlock()
	for _, f := range files {
		if err := f.Sync(); err != nil {
			p.failed = fmt.Errorf("sync pack %s (chunks written since the last sync may be lost; reopen the store): %w", filepath.Base(f.Name()), err)
			return p.failed
		}
	}
	return nil
}

func (p *packs) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first error
	if p.direct != nil {
		first = p.direct.Close()
	}
	p.readMu.Lock()
	defer p.readMu.Unlock()
	for _, f := range p.readers {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	for _, f := range p.directReads {
		f.Close()
	}
	return first
}
