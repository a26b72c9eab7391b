package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
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
// not padded.
const (
	PackDir     = "packs"
	packMaxSize = 1 << 30 // start a new pack file past this size

	directAlign = 4 << 10 // offset, length and memory alignment of direct appends
	directMin   = 1 << 20 // appends of at least this many bytes go direct
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
	stage    []byte     // aligned buffer for direct appends (see staging)
	unsync   []*os.File // written since the last sync (cur, and any rotated)

	// Readers have a lock of their own: an append holds mu while the
	// device writes a direct batch.
	readMu  sync.Mutex
	readers map[uint32]*os.File
}

func openPacks(dir string) (*packs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pack directory: %w", err)
	}
	p := &packs{dir: dir, readers: map[uint32]*os.File{}}
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
	return nil
}

// append writes records for the chunks and returns their locations:
// directly when they are large (see directMin), else with one writev.
func (p *packs) append(chunks []encodedChunk) ([]chunkLoc, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.curSize > packMaxSize {
		if err := p.openForAppend(p.curID + 1); err != nil {
			return nil, err
		}
	}
	hdrs := make([][]byte, len(chunks))
	total := 0
	for i, c := range chunks {
		hdrs[i] = c.hdr.encode()
		total += len(hdrs[i]) + c.hdr.dataLen()
	}
	if p.direct != nil && total >= directMin {
		locs, err := p.appendDirect(chunks, hdrs, total)
		if !errors.Is(err, unix.EINVAL) {
			return locs, err
		}
		// The filesystem takes O_DIRECT opens but not these writes.
		p.direct.Close()
		p.direct, p.noDirect = nil, true
	}
	var iov [][]byte
	locs := make([]chunkLoc, len(chunks))
	off := uint64(p.curSize)
	for i, c := range chunks {
		locs[i] = chunkLoc{Pack: p.curID, Off: off, HdrLen: uint32(len(hdrs[i])), DataLen: uint32(c.hdr.dataLen())}
		iov = append(iov, hdrs[i])
		iov = append(iov, c.data...)
		off += uint64(len(hdrs[i])) + uint64(c.hdr.dataLen())
	}
	n, err := writev(p.cur, iov)
	p.curSize += n // a short write leaves an unreferenced tail
	if err != nil {
		return nil, fmt.Errorf("write pack %d: %w", p.curID, err)
	}
	p.markUnsynced()
	return locs, nil
}

// appendDirect writes the records, total bytes, with O_DIRECT at the first
// 4 KiB boundary at or after the end of the pack.
func (p *packs) appendDirect(chunks []encodedChunk, hdrs [][]byte, total int) ([]chunkLoc, error) {
	start := alignUp(p.curSize, directAlign)
	buf := p.staging(int(alignUp(int64(total), directAlign)))
	locs := make([]chunkLoc, len(chunks))
	n := 0
	for i, c := range chunks {
		locs[i] = chunkLoc{Pack: p.curID, Off: uint64(start) + uint64(n), HdrLen: uint32(len(hdrs[i])), DataLen: uint32(c.hdr.dataLen())}
		n += copy(buf[n:], hdrs[i])
		for _, d := range c.data {
			n += copy(buf[n:], d)
		}
	}
	clear(buf[n:])
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
				return nil, err
			}
			return nil, fmt.Errorf("write pack %d: %w", p.curID, err)
		}
		done += w
	}
	p.curSize = start + int64(len(buf))
	p.markUnsynced()
	return locs, nil
}

// staging returns an aligned buffer of n bytes, kept for the next direct
// append: a rewrite's batch is at most 8 chunks of up to 4 MiB (a link's
// about 4 MiB), so the store keeps up to 32 MiB once it has written one.
func (p *packs) staging(n int) []byte {
	if cap(p.stage) < n {
		b := make([]byte, n+directAlign)
		skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
		p.stage = b[skip : skip+n]
	}
	return p.stage[:n]
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
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, int64(off)); err != nil {
		return nil, fmt.Errorf("pack %d at %d: %w: %w", l.Pack, off, ErrCorrupt, err)
	}
	return buf, nil
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
// written before its call is still being synced by another; a file leaves
// the list only once its fsync succeeded.
func (p *packs) sync() error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	p.mu.Lock()
	files := p.unsync
	p.unsync = nil
	p.mu.Unlock()
	for i, f := range files {
		if err := f.Sync(); err != nil {
			p.mu.Lock()
			p.unsync = append(files[i:], p.unsync...) // try them again next time
			p.mu.Unlock()
			return fmt.Errorf("sync pack: %w", err)
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
	return first
}
