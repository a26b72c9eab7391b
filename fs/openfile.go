package fs

import (
	"sort"
	"sync"
	"time"

	"github.com/geofs/geofs/store"
)

// openFile is the shared state of a regular file while any handle has it
// open: the committed content (base) and the writes not yet committed. All
// handles of a file share it, so each sees the others' writes.
//
// Uncommitted content at byte x is: the patch holding x if any; else, below
// both base.Size and keep, the base content; else zero.
type openFile struct {
	fsys *FS
	id   store.FileID

	mu      sync.Mutex
	refs    int // open handles
	base    *store.Extents
	content store.Hash    // manifest root of base
	patches []store.Patch // sorted by Off, not overlapping
	dirty   int           // bytes in patches
	size    uint64
	keep    uint64 // base bytes below keep survive (lowest truncation since commit)
	changed bool   // uncommitted size change or writes
	since   time.Time
	mtime   int64
}

// acquire returns the open state of v's file, creating it.
func (f *FS) acquire(v *store.Version) (*openFile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if of := f.open[v.ID]; of != nil {
		of.refs++
		return of, nil
	}
	x, err := f.s.Extents(v.Content)
	if err != nil {
		return nil, err
	}
	of := &openFile{fsys: f, id: v.ID, refs: 1, base: x, content: v.Content, size: v.Size, keep: v.Size}
	f.open[v.ID] = of
	return of, nil
}

// release drops a handle's reference, forgetting the state with the last.
func (f *FS) release(of *openFile) {
	f.mu.Lock()
	defer f.mu.Unlock()
	of.refs--
	if of.refs == 0 && !of.isDirty() {
		delete(f.open, of.id)
	}
}

func (f *FS) lookupOpen(id store.FileID) *openFile {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open[id]
}

func (of *openFile) isDirty() bool {
	of.mu.Lock()
	defer of.mu.Unlock()
	return of.changed
}

func (of *openFile) fillAttr(size *uint64, mtime, ctime *int64) {
	of.mu.Lock()
	defer of.mu.Unlock()
	if of.changed {
		*size = of.size
		*mtime = max(*mtime, of.mtime)
		*ctime = max(*ctime, of.mtime)
	}
}

func (of *openFile) touch() {
	if !of.changed {
		of.changed, of.since = true, time.Now()
	}
	of.mtime = time.Now().UnixNano()
}

// write buffers data at off. It commits when the buffer passes MaxDirty.
func (of *openFile) write(data []byte, off uint64) error {
	of.mu.Lock()
	defer of.mu.Unlock()
	of.addPatch(store.Patch{Off: off, Data: append([]byte(nil), data...)})
	of.size = max(of.size, off+uint64(len(data)))
	of.touch()
	if of.dirty >= of.fsys.opts.MaxDirty || len(of.patches) > 4096 {
		return of.commitLocked()
	}
	return nil
}

// addPatch inserts p over what it overwrites. A write that starts where
// the last patch ends grows that patch (sequential writes make one patch).
// Split pieces are capped so that growing one never writes into another.
func (of *openFile) addPatch(p store.Patch) {
	end := patchEnd(p)
	if n := len(of.patches); n > 0 && patchEnd(of.patches[n-1]) == p.Off {
		of.patches[n-1].Data = append(of.patches[n-1].Data, p.Data...)
		of.dirty += len(p.Data)
		return
	}
	i := sort.Search(len(of.patches), func(i int) bool { return patchEnd(of.patches[i]) > p.Off })
	j := i
	for j < len(of.patches) && of.patches[j].Off < end {
		j++
	}
	var mid []store.Patch
	if i < j && of.patches[i].Off < p.Off {
		q := of.patches[i]
		mid = append(mid, store.Patch{Off: q.Off, Data: q.Data[: p.Off-q.Off : p.Off-q.Off]})
	}
	mid = append(mid, p)
	if i < j && patchEnd(of.patches[j-1]) > end {
		q := of.patches[j-1]
		mid = append(mid, store.Patch{Off: end, Data: q.Data[end-q.Off:]})
	}
	for _, q := range of.patches[i:j] {
		of.dirty -= len(q.Data)
	}
	for _, q := range mid {
		of.dirty += len(q.Data)
	}
	of.patches = append(of.patches[:i], append(mid, of.patches[j:]...)...)
}

func patchEnd(p store.Patch) uint64 { return p.Off + uint64(len(p.Data)) }

// truncate sets the size, dropping buffered bytes past it.
func (of *openFile) truncate(size uint64) {
	of.mu.Lock()
	defer of.mu.Unlock()
	if size == of.size {
		return
	}
	out := of.patches[:0]
	for _, p := range of.patches {
		switch {
		case p.Off >= size:
			of.dirty -= len(p.Data)
		case p.Off+uint64(len(p.Data)) > size:
			of.dirty -= int(p.Off + uint64(len(p.Data)) - size)
			p.Data = p.Data[: size-p.Off : size-p.Off]
			out = append(out, p)
		default:
			out = append(out, p)
		}
	}
	of.patches = out
	of.size = size
	of.keep = min(of.keep, size)
	of.touch()
}

// read fills p from the uncommitted view of the file.
func (of *openFile) read(p []byte, off uint64) (int, error) {
	of.mu.Lock()
	defer of.mu.Unlock()
	if off >= of.size {
		return 0, nil
	}
	n := int(min(uint64(len(p)), of.size-off))
	p = p[:n]
	baseEnd := min(of.base.Size, of.keep)
	if off < baseEnd {
		m := int(min(uint64(n), baseEnd-off))
		if _, err := of.fsys.s.ReadAt(of.base, p[:m], off); err != nil {
			return 0, err
		}
		clear(p[m:])
	} else {
		clear(p)
	}
	end := off + uint64(n)
	for _, q := range of.patches {
		qend := q.Off + uint64(len(q.Data))
		if qend <= off || q.Off >= end {
			continue
		}
		lo, hi := max(q.Off, off), min(qend, end)
		copy(p[lo-off:hi-off], q.Data[lo-q.Off:hi-q.Off])
	}
	return n, nil
}

// commit makes the buffered changes a new version.
func (of *openFile) commit() error {
	of.mu.Lock()
	defer of.mu.Unlock()
	return of.commitLocked()
}

func (of *openFile) commitIfOlder(before time.Time) error {
	of.mu.Lock()
	defer of.mu.Unlock()
	if !of.changed || of.since.After(before) {
		return nil
	}
	return of.commitLocked()
}

func (of *openFile) commitLocked() error {
	if !of.changed {
		return nil
	}
	s := of.fsys.s
	base := of.base
	var err error
	if of.keep < base.Size {
		if base, err = s.Rewrite(base, nil, of.keep); err != nil {
			return err
		}
	}
	x, err := s.Rewrite(base, of.patches, of.size)
	if err != nil {
		return err
	}
	root, err := s.PutManifest(x.Refs)
	if err != nil {
		return err
	}
	err = s.Update(store.OpWrite, func(tx *store.Tx) error {
		v, err := tx.Head(of.id)
		if err != nil {
			return err
		}
		nv := v.Clone()
		nv.Content, nv.Size = root, x.Size
		nv.Mtime, nv.Ctime = of.mtime, of.mtime
		_, err = tx.Put(nv)
		return err
	})
	if err != nil {
		return err
	}
	of.base, of.content, of.patches, of.dirty = x, root, nil, 0
	of.keep, of.changed = of.size, false
	return nil
}
