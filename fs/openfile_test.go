package fs

import (
	"bytes"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/geofs/geofs/store"
)

func newTestFS(t *testing.T, maxDirty int) (*FS, *store.Store) {
	t.Helper()
	return newTestFSIn(t, t.TempDir(), maxDirty)
}

// newTestFSIn is newTestFS with the store in parent.
func newTestFSIn(t *testing.T, parent string, maxDirty int) (*FS, *store.Store) {
	t.Helper()
	dir := filepath.Join(parent, "site")
	if _, err := store.Init(dir, store.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := New(s, Options{MaxDirty: maxDirty})
	t.Cleanup(func() { f.Close(); s.Close() })
	return f, s
}

// TestOpenFileMatchesModel drives one open file with random and
// sequential writes, truncates, extensions, punched holes and zeroed
// ranges, with a small MaxDirty so that background
// commits overlap new writes, and checks every read against a model.
func TestOpenFileMatchesModel(t *testing.T) {
	f, s := newTestFS(t, 256<<10)
	m := newModelFile(t, f, s, "f")
	r := rand.New(rand.NewPCG(11, 12))
	for step := range 2000 {
		m.step(r, step)
	}
	m.check()
}

// TestRecycledArenasKeepContent is the model test with arenas small enough
// to recycle often and poisoned when recycled, on three files written in
// turns, so that an arena reused while its layer is still read (by the
// file, or by a commit in the background) shows as wrong bytes.
func TestRecycledArenasKeepContent(t *testing.T) {
	defer func(n int, p bool) { maxArena, poisonArenas = n, p }(maxArena, poisonArenas)
	maxArena, poisonArenas = 64<<10, true
	f, s := newTestFS(t, 256<<10)
	var files []*modelFile
	for _, name := range []string{"a", "b", "c"} {
		files = append(files, newModelFile(t, f, s, name))
	}
	r := rand.New(rand.NewPCG(13, 14))
	for step := range 3000 {
		files[r.IntN(len(files))].step(r, step)
	}
	for _, m := range files {
		m.check()
	}
}

// modelFile is an open file and what its content should be.
type modelFile struct {
	t       *testing.T
	s       *store.Store
	id      store.FileID
	of      *openFile
	model   []byte
	lastEnd int
}

func newModelFile(t *testing.T, f *FS, s *store.Store, name string) *modelFile {
	t.Helper()
	id := store.NewFileID()
	err := s.Update(store.OpCreate, func(tx *store.Tx) error {
		_, err := tx.Put(&store.Version{ID: id, Kind: store.KindFile, Links: []store.Link{{Parent: store.RootID, Name: name}}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	of, err := f.acquire(id, false)
	if err != nil {
		t.Fatal(err)
	}
	return &modelFile{t: t, s: s, id: id, of: of}
}

// step applies one random operation to the file and the model, then
// checks a random read.
func (m *modelFile) step(r *rand.Rand, step int) {
	t, of := m.t, m.of
	t.Helper()
	switch op := r.IntN(20); {
	case op == 0:
		size := r.IntN(len(m.model) + 300_000)
		of.truncate(uint64(size))
		m.model = resize(m.model, size)
	case op == 1:
		size := len(m.model) + r.IntN(100_000)
		of.extend(uint64(size))
		m.model = resize(m.model, size)
	case op == 2:
		if err := of.commit(); err != nil {
			t.Fatal(err)
		}
	case op == 3 || op == 4: // punch a hole, or zero a range that may grow the file
		off := r.IntN(len(m.model) + 50_000)
		end, grow := off+r.IntN(200_000), op == 4
		of.zero(uint64(off), uint64(end), grow)
		if grow {
			m.model = resize(m.model, max(len(m.model), end))
		}
		clear(m.model[min(off, len(m.model)):min(end, len(m.model))])
	default:
		off := r.IntN(len(m.model) + 50_000)
		if op < 12 {
			off = min(m.lastEnd, len(m.model)) // sequential: fills arenas
		}
		data := make([]byte, 1+r.IntN(70_000))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		if err := of.write(data, uint64(off)); err != nil {
			t.Fatal(err)
		}
		m.model = resize(m.model, max(len(m.model), off+len(data)))
		copy(m.model[off:], data)
		m.lastEnd = off + len(data)
	}
	checkRead(t, of, m.model, r, step)
}

// check commits the file and compares its committed content with the model.
func (m *modelFile) check() {
	t := m.t
	t.Helper()
	if err := m.of.commit(); err != nil {
		t.Fatal(err)
	}
	v, _ := m.s.Head(m.id)
	x, err := m.s.Extents(v.Content)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, x.Size)
	m.s.ReadAt(x, got, 0)
	if !bytes.Equal(got, m.model) {
		t.Fatalf("committed content (%d bytes) differs from the model (%d bytes)", len(got), len(m.model))
	}
}

func resize(b []byte, n int) []byte {
	if n <= len(b) {
		return b[:n]
	}
	return append(b, make([]byte, n-len(b))...)
}

func checkRead(t *testing.T, of *openFile, model []byte, r *rand.Rand, step int) {
	t.Helper()
	if got := of.size(); got != uint64(len(model)) {
		t.Fatalf("step %d: size %d, want %d", step, got, len(model))
	}
	off := r.IntN(len(model) + 1)
	buf := make([]byte, r.IntN(200_000))
	vec, n, err := of.readVec(buf, uint64(off), r.IntN(2) == 0)
	if err != nil {
		t.Fatal(err)
	}
	want := model[off:min(len(model), off+len(buf))]
	if got := bytes.Join(vec, nil); n != len(want) || !bytes.Equal(got, want) {
		t.Fatalf("step %d: read at %d differs from the model", step, off)
	}
}

// TestBufferedBytesStayWithinTheMountBudget writes four files in turns,
// each under the per-file limit, and checks that the mount never buffers
// more than its total budget (plus one write), and that every byte lands.
func TestBufferedBytesStayWithinTheMountBudget(t *testing.T) {
	f, s := newTestFS(t, 64<<20)
	f.opts.MaxDirtyTotal = 3 << 20
	var files []*openFile
	var ids []store.FileID
	for i := range 4 {
		id := store.NewFileID()
		err := s.Update(store.OpCreate, func(tx *store.Tx) error {
			_, err := tx.Create(&store.Version{ID: id, Kind: store.KindFile, Links: []store.Link{{Parent: store.RootID, Name: string(rune('a' + i))}}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		of, err := f.acquire(id, false)
		if err != nil {
			t.Fatal(err)
		}
		files, ids = append(files, of), append(ids, id)
	}
	block := make([]byte, 1<<20)
	for round := range 6 {
		for i, of := range files {
			for j := range block {
				block[j] = byte(round*7 + i)
			}
			if err := of.write(block, uint64(round)<<20); err != nil {
				t.Fatal(err)
			}
			if got := f.buffered.Load(); got > f.opts.MaxDirtyTotal+int64(len(block)) {
				t.Fatalf("round %d: %d bytes buffered, budget %d", round, got, f.opts.MaxDirtyTotal)
			}
		}
	}
	for i, of := range files {
		if err := of.commit(); err != nil {
			t.Fatal(err)
		}
		v, _ := s.Head(ids[i])
		x, _ := s.Extents(v.Content)
		got := make([]byte, x.Size)
		s.ReadAt(x, got, 0)
		for round := range 6 {
			if got[round<<20] != byte(round*7+i) || got[round<<20+(1<<20)-1] != byte(round*7+i) {
				t.Fatalf("file %d round %d: wrong bytes", i, round)
			}
		}
	}
	if got := f.buffered.Load(); got != 0 {
		t.Fatalf("%d bytes still counted as buffered after every commit", got)
	}
}

// The arenas' spare capacity, which the buffered-byte budget does not
// count, stays within maxArena per layer: a writer that appended a little
// after each large write and then skipped ahead made a layer hold three
// times what it counted (found by review).
func TestArenaSpareStaysBounded(t *testing.T) {
	sequential, skipping := newLayer(0), newLayer(0)
	for i := range uint64(200) {
		sequential.add(i<<20, make([]byte, 1<<20))
		off := i * (1<<20 + 4<<10)
		skipping.add(off, make([]byte, 1<<20))
		skipping.add(off+1<<20, []byte{1})
	}
	for name, l := range map[string]*layer{"sequential": sequential, "append, then skip": skipping} {
		held := 0
		for _, p := range l.patches {
			held += cap(p.Data)
		}
		if held-l.dirty > maxArena {
			t.Errorf("%s: %d bytes buffered hold %d", name, l.dirty, held)
		}
	}
	if n := len(sequential.patches); n > 200/16+8 {
		t.Errorf("sequential 1 MiB writes: %d patches, want arenas", n)
	}
}

// whileBusy runs op as if a background commit were running, calls check
// while op waits for it, then lets the commit end and op go on.
func whileBusy(t *testing.T, of *openFile, op func() error, check func()) {
	t.Helper()
	of.mu.Lock()
	of.busy = true
	of.mu.Unlock()
	done := make(chan error)
	go func() { done <- op() }()
	time.Sleep(50 * time.Millisecond)
	check()
	of.mu.Lock()
	of.busy = false
	of.cond.Broadcast()
	of.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestWriteThatWaitsIsNotSeenBeforeItReturns: a write that waits for the
// background commit before it adds nothing, size or bytes, until the wait
// ends. The kernel takes the new size from the write's reply; a reader that
// stat had shown a size the kernel did not have yet read EOF short of it.
func TestWriteThatWaitsIsNotSeenBeforeItReturns(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	m := newModelFile(t, f, s, "f")
	of := m.of
	block := bytes.Repeat([]byte{7}, 1<<20)
	if err := of.write(block, 0); err != nil { // fills the layer
		t.Fatal(err)
	}
	whileBusy(t, of, func() error { return of.write(block, 1<<20) }, func() {
		if got := of.size(); got != 1<<20 {
			t.Errorf("size %d while the write waits, want %d", got, 1<<20)
		}
		if n, err := of.read(make([]byte, 4096), 1<<20); n != 0 || err != nil {
			t.Errorf("read past the old end while the write waits: %d bytes, %v", n, err)
		}
	})
	m.model = bytes.Repeat([]byte{7}, 2<<20)
	m.check()
}

// TestTruncationThatWaitsIsNotSeenBeforeItReturns: ftruncate that waits for
// the background commit before it shows readers the old size and bytes
// until the wait ends. The kernel keeps the old size until the reply and
// fills a read that came back short of it with zeros: a stress run's
// O_DIRECT reader got whole MiBs of zeros from a file being truncated.
func TestTruncationThatWaitsIsNotSeenBeforeItReturns(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	m := newModelFile(t, f, s, "f")
	of := m.of
	block := bytes.Repeat([]byte{7}, 2<<20)
	if err := of.write(block, 0); err != nil {
		t.Fatal(err)
	}
	whileBusy(t, of, func() error { return of.resize(4096, attrChange{}) }, func() {
		if got := of.size(); got != 2<<20 {
			t.Errorf("size %d while the truncation waits, want %d", got, 2<<20)
		}
		p := make([]byte, 4096)
		if n, err := of.read(p, 1<<20); n != len(p) || err != nil || !bytes.Equal(p, block[:len(p)]) {
			t.Errorf("read past the new end while the truncation waits: %d bytes, %v, want the old bytes", n, err)
		}
	})
	if of.isDirty() {
		t.Error("the truncation is still buffered after it returned")
	}
	m.model = block[:4096]
	m.check()
}

// TestSmallAppendsAfterACommitGetNoArena: after an fsync or a close, the
// next small append gets a patch of its own size, not an arena as large as
// the run before the commit. Each arena's spare capacity is memory the
// mount's budget does not count, so a log appended and synced in small
// pieces held 16 MiB per open file (found by review).
func TestSmallAppendsAfterACommitGetNoArena(t *testing.T) {
	f, s := newTestFS(t, 64<<20)
	m := newModelFile(t, f, s, "log")
	block := bytes.Repeat([]byte{3}, 1<<20)
	for i := range 17 {
		if err := m.of.write(block, uint64(i)<<20); err != nil {
			t.Fatal(err)
		}
	}
	end := uint64(17 << 20)
	for i := range 10 {
		if err := m.of.commit(); err != nil {
			t.Fatal(err)
		}
		if err := m.of.write([]byte("a line of the log\n"), end); err != nil {
			t.Fatal(err)
		}
		end += 18
		m.of.mu.Lock()
		held := 0
		for _, p := range m.of.cur.patches {
			held += cap(p.Data)
		}
		m.of.mu.Unlock()
		if held > 4096 {
			t.Fatalf("append %d after a commit holds %d bytes for 18", i, held)
		}
	}
}

// A commit that leaves a file sparse notifies the kernel with the open
// file's lock held, while a peer's version arriving detaches open files
// with the FS's lock held, then takes the open file's: the notification
// must not wait for the FS's lock.
func TestSparseCommitDoesNotWaitForDetach(t *testing.T) {
	f, s := newTestFS(t, 1<<20)
	m := newModelFile(t, f, s, "f")
	m.of.extend(1 << 20) // a hole: the commit notifies
	m.of.mu.Lock()
	detached := make(chan bool)
	go func() { detached <- f.detach(m.id) }()
	time.Sleep(50 * time.Millisecond) // detach now holds f.mu and waits for of.mu
	committed := make(chan error)
	go func() { committed <- m.of.commitLocked() }()
	select {
	case err := <-committed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		m.of.mu.Unlock() // let both go, so that the test ends
		t.Fatal("the commit waits for detach, which waits for the commit: deadlock")
	}
	m.of.mu.Unlock()
	<-detached
}
