package store

import (
	"fmt"
	"sort"

	"github.com/geofs/geofs/store/cdc"
)

// Patch is a run of bytes written at Off.
type Patch struct {
	Off  uint64
	Data []byte
	// Zeros, when set (and Data empty), makes the patch that many zero
	// bytes, kept as a hole: a punched hole or a zeroed range (fallocate).
	Zeros uint64
}

// End is where the patch ends.
func (p Patch) End() uint64 { return p.Off + uint64(len(p.Data)) + p.Zeros }

// Rewrite returns the content that results from writing patches (sorted by
// Off, not overlapping) over base and then setting the size to size (bytes
// past the old end that no patch covers are a hole).
//
// Work is proportional to what changed: unchanged chunks are kept; a dirty
// region is re-chunked from the start of the chunk around its first byte
// until a new boundary meets an old one again (content-defined chunking
// resynchronises there). Appending re-chunks the old last chunk together
// with the new bytes, so boundaries do not depend on when commits happened.
// Holes are kept as holes; a write into a hole is chunked from its offset.
// A patch of zeros (Patch.Zeros) becomes a hole: the chunk it starts in is
// cut short before it, and the content after it is chunked from its end.
func (s *Store) Rewrite(base *Extents, patches []Patch, size uint64) (*Extents, error) {
	w := &rewriter{s: s, base: base, patches: patches, size: size, params: chunkParams, out: &Extents{}}
	if err := w.run(); err != nil {
		return nil, err
	}
	return w.out, nil
}

type rewriter struct {
	s       *Store
	base    *Extents
	patches []Patch
	size    uint64
	params  cdc.Params
	out     *Extents
	pending [][]byte // chunks waiting for PutChunks
	slots   []int    // their indexes in out.Refs

	memoHash Hash // the base chunk read last, and its bytes
	memo     []byte

	storing []chan stored // batches being stored in the background, oldest first
}

func (w *rewriter) run() (err error) {
	defer func() {
		if werr := w.wait(); err == nil {
			err = werr
		}
	}()
	pos := uint64(0)
	for pos < w.size {
		next, err := w.step(pos)
		if err != nil {
			return err
		}
		pos = next
	}
	if err := w.flush(); err != nil {
		return err
	}
	return w.wait()
}

// step emits what starts at pos and returns where it ended.
func (w *rewriter) step(pos uint64) (uint64, error) {
	k := w.base.Find(pos)
	if k < len(w.base.Refs) && !w.base.Refs[k].IsHole() && w.base.Offs[k] == pos && w.clean(k) {
		w.out.Append(w.base.Refs[k])
		return pos + w.base.Refs[k].Len, nil
	}
	i, patched := w.patchAt(pos)
	if patched && w.patches[i].Zeros > 0 {
		end := min(w.patches[i].End(), w.size)
		w.out.Append(Ref{Len: end - pos})
		return end, nil
	}
	if !patched && w.holeAt(pos) {
		end := min(w.holeEnd(pos), w.nextPatch(pos), w.size)
		w.out.Append(Ref{Len: end - pos})
		return end, nil
	}
	return w.chunkRun(pos)
}

// clean reports whether base extent k can be kept as it is: no patch touches
// it, it ends within the new size, and it is not the last extent with an
// append right behind it (that extent was cut by the old end of file).
func (w *rewriter) clean(k int) bool {
	start, end := w.base.Offs[k], w.base.Offs[k]+w.base.Refs[k].Len
	if end > w.size {
		return false
	}
	last := k == len(w.base.Refs)-1
	if last && end < w.size && w.nextPatch(end) == end {
		return false
	}
	i := sort.Search(len(w.patches), func(i int) bool { return w.patches[i].End() > start })
	return i == len(w.patches) || w.patches[i].Off >= end
}

// patchAt returns the index of the patch holding byte x.
func (w *rewriter) patchAt(x uint64) (int, bool) {
	i := sort.Search(len(w.patches), func(i int) bool { return w.patches[i].End() > x })
	return i, i < len(w.patches) && w.patches[i].Off <= x
}

// nextPatch returns where the first patch at or after x starts (or size).
func (w *rewriter) nextPatch(x uint64) uint64 {
	i, in := w.patchAt(x)
	if in {
		return x
	}
	if i < len(w.patches) {
		return w.patches[i].Off
	}
	return w.size
}

// holeAt reports whether base byte x is a hole or past the old end.
func (w *rewriter) holeAt(x uint64) bool {
	k := w.base.Find(x)
	return k == len(w.base.Refs) || w.base.Refs[k].IsHole()
}

func (w *rewriter) holeEnd(x uint64) uint64 {
	k := w.base.Find(x)
	if k == len(w.base.Refs) {
		return w.size
	}
	return w.base.Offs[k] + w.base.Refs[k].Len
}

// chunkRun re-chunks new content from pos. It starts at the base chunk that
// holds pos (or, when appending, the old last chunk) and stops at the end of
// the data (a hole, or the new size) or where a new boundary meets an old one.
//
// Where one patch holds the next chunk whole (a sequential writer's
// buffer), the chunk is cut straight out of it.
// Otherwise bytes are read into buf once; emitted chunks are slices of it,
// so buf is never written again after a chunk is cut from it: when it
// fills up, the unconsumed tail moves to a fresh buffer.
func (w *rewriter) chunkRun(pos uint64) (uint64, error) {
	start := pos
	var buf []byte
	x := start
	stopped := false
	for {
		view, last, ok := w.view(start)
		if ok {
			if n := w.params.Cut(view, last); n > 0 {
				if err := w.emit(view[:n:n]); err != nil {
					return 0, err
				}
				end := start + uint64(n)
				if last && n == len(view) || w.oldBoundary(end) {
					return end, nil
				}
				// Whatever buf holds from an earlier copy is read again.
				start, buf, x, stopped = end, nil, end, false
				continue
			}
			// The chunk runs past the patch: copy it.
		}
		if cap(buf)-len(buf) < w.params.Max {
			// At most 4 chunks' worth, but no more than is left to read:
			// a small file must not cost a 16 MiB allocation. For a chunk
			// that runs past a patch, 1: the chunks after it are mostly
			// cut straight out of the next patch (a fresh buffer is zeroed
			// and faulted in, which costs more than the copy).
			ahead := 4 * w.params.Max
			if ok {
				ahead = w.params.Max
			}
			want := min(uint64(ahead), uint64(len(buf))+w.size-min(x, w.size)) + 1
			buf = append(make([]byte, 0, want), buf...)
		}
		for len(buf) < w.params.Max && !stopped {
			var err error
			buf, x, stopped, err = w.fill(buf, x, w.params.Max-len(buf))
			if err != nil {
				return 0, err
			}
		}
		n := w.params.Cut(buf, stopped)
		if err := w.emit(buf[:n:n]); err != nil {
			return 0, err
		}
		end := start + uint64(n)
		if stopped && n == len(buf) {
			return end, nil
		}
		if w.oldBoundary(end) {
			return end, nil
		}
		buf = buf[n:]
		start = end
	}
}

// view returns the new content from x on, up to a maximal chunk, as a
// slice of the patch that holds x; last says it runs to the new size.
func (w *rewriter) view(x uint64) (b []byte, last, ok bool) {
	i, in := w.patchAt(x)
	if !in || x >= w.size || w.patches[i].Zeros > 0 {
		return nil, false, false
	}
	p := w.patches[i]
	end := min(p.End(), w.size, x+uint64(w.params.Max))
	return p.Data[x-p.Off : end-p.Off], end == w.size, true
}

// fill appends up to want bytes of new content at x to buf. It reports
// stopped at the end of a data run: a base hole or gap no patch covers, a
// patch of zeros, or the new size.
func (w *rewriter) fill(buf []byte, x uint64, want int) ([]byte, uint64, bool, error) {
	if x >= w.size {
		return buf, x, true, nil
	}
	limit := min(x+uint64(want), w.size)
	if i, in := w.patchAt(x); in {
		p := w.patches[i]
		if p.Zeros > 0 {
			return buf, x, true, nil
		}
		end := min(p.End(), limit)
		return append(buf, p.Data[x-p.Off:end-p.Off]...), end, false, nil
	}
	if w.holeAt(x) {
		return buf, x, true, nil
	}
	k := w.base.Find(x)
	end := min(w.base.Offs[k]+w.base.Refs[k].Len, limit, w.nextPatch(x))
	data, err := w.chunk(w.base.Refs[k].Hash)
	if err != nil {
		return nil, 0, false, err
	}
	off := w.base.Offs[k]
	return append(buf, data[x-off:end-off]...), end, false, nil
}

// chunk reads a base chunk, remembering the last one (fill asks for the
// same chunk piece by piece).
func (w *rewriter) chunk(h Hash) ([]byte, error) {
	if w.memoHash == h && w.memo != nil {
		return w.memo, nil
	}
	data, err := w.s.chunkFor(w.base, h)
	if err != nil {
		return nil, err
	}
	w.memoHash, w.memo = h, data
	return data, nil
}

// oldBoundary reports whether a base data chunk ends at e with more base
// content after it, so the base extents from e on can be kept.
func (w *rewriter) oldBoundary(e uint64) bool {
	if e >= w.base.Size || e >= w.size {
		return false
	}
	k := w.base.Find(e)
	return k > 0 && w.base.Offs[k] == e && !w.base.Refs[k-1].IsHole()
}

// emit queues a new chunk; queued chunks are stored in batches so that
// hashing and compression run in parallel.
func (w *rewriter) emit(chunk []byte) error {
	if len(chunk) == 0 {
		return nil
	}
	w.slots = append(w.slots, len(w.out.Refs))
	w.pending = append(w.pending, chunk)
	w.out.Append(Ref{Len: uint64(len(chunk)), Hash: Hash{0xff}}) // placeholder until flush
	if len(w.pending) >= 8 {
		return w.flush()
	}
	return nil
}

// storeAhead is how many batches may be stored at once while chunking
// goes on: with two, one batch's hashing overlaps the previous one's
// append to the pack, and chunking overlaps both.
const storeAhead = 2

// flush hands the pending chunks to a background store (hashing,
// compressing and appending them) and goes on chunking.
func (w *rewriter) flush() error {
	for len(w.storing) >= storeAhead {
		if err := w.waitOne(); err != nil {
			return err
		}
	}
	if len(w.pending) == 0 {
		return nil
	}
	chunks, slots := w.pending, w.slots
	w.pending, w.slots = nil, nil
	done := make(chan stored, 1)
	w.storing = append(w.storing, done)
	go func() {
		refs, err := w.s.PutChunks(chunks)
		done <- stored{refs, slots, err}
	}()
	return nil
}

// stored is the outcome of storing one batch in the background.
type stored struct {
	refs  []Ref
	slots []int // where they go in out.Refs
	err   error
}

// wait waits for every batch being stored.
func (w *rewriter) wait() error {
	var first error
	for len(w.storing) > 0 {
		if err := w.waitOne(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// waitOne waits for the oldest batch being stored and fills in its hashes
// (out.Refs is only ever touched by the chunking goroutine).
func (w *rewriter) waitOne() error {
	r := <-w.storing[0]
	w.storing = w.storing[1:]
	if r.err != nil {
		return fmt.Errorf("store chunks: %w", r.err)
	}
	for i, ref := range r.refs {
		w.out.Refs[r.slots[i]] = ref
	}
	return nil
}

// ReadAll returns the whole content of file version v, verified (for
// small files and tests; large ones are read with ReadAt).
func (s *Store) ReadAll(v *Version) ([]byte, error) {
	x, err := s.ContentOf(v)
	if err != nil {
		return nil, err
	}
	b := make([]byte, x.Size)
	if _, err := s.ReadAtFrom(s.OriginOf(v), x, b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// ReadAt fills p with content from x at off and returns how many bytes it
// read (short only at the end of the content). Holes read as zeros; only
// the blocks the range touches are read, each verified.
func (s *Store) ReadAt(x *Extents, p []byte, off uint64) (int, error) {
	return s.ReadAtFrom(s.originOf(x.Root), x, p, off)
}

// ReadAtFrom is ReadAt for content of the file version o: content this
// site lacks is fetched from peers in its name (peers serving part of the
// tree check it).
func (s *Store) ReadAtFrom(o Origin, x *Extents, p []byte, off uint64) (int, error) {
	return x.pieces(off, len(p), func(r Ref, in uint64, at, m int) error {
		if r.IsHole() {
			clear(p[at : at+m])
			return nil
		}
		return s.readRange(o, r.Hash, p[at:at+m], int(in))
	})
}

// ReadVecFrom is ReadAtFrom that returns the bytes as slices of verified
// blocks where it can, to be written out with one writev without copying
// them into p first. Holes are slices of a shared zero block; what is
// fetched from a peer is copied into p. The slices must not be modified.
func (s *Store) ReadVecFrom(o Origin, x *Extents, p []byte, off uint64) ([][]byte, int, error) {
	var vec [][]byte
	n, err := x.pieces(off, len(p), func(r Ref, in uint64, at, m int) error {
		if r.IsHole() {
			for z := m; z > 0; z -= len(zeroBlock) {
				k := min(z, len(zeroBlock))
				vec = append(vec, zeroBlock[:k:k])
			}
			return nil
		}
		bl, err := s.localSlices(r.Hash, int(in), m)
		if err == nil {
			vec = append(vec, bl...)
			return nil
		}
		if !s.fetchable(err) {
			return err
		}
		if err := s.fetchRange(o, r.Hash, p[at:at+m], int(in)); err != nil {
			return err
		}
		vec = append(vec, p[at:at+m])
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return vec, n, nil
}

// pieces calls fn for each piece of content bytes [off, off+n) that one
// extent holds: its ref, the piece's offset in the extent, where it starts
// in the range, and its length. It returns how many bytes the pieces that
// succeeded cover.
func (x *Extents) pieces(off uint64, n int, fn func(r Ref, in uint64, at, m int) error) (int, error) {
	done := 0
	for done < n && off < x.Size {
		k := x.Find(off)
		r := x.Refs[k]
		in := off - x.Offs[k]
		m := int(min(uint64(n-done), r.Len-in))
		if err := fn(r, in, done, m); err != nil {
			return done, err
		}
		done += m
		off += uint64(m)
	}
	return done, nil
}

var zeroBlock = make([]byte, BlockSize)

// chunkParams are the chunk size bounds; tests shrink them.
var chunkParams = cdc.Default
