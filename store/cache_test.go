package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// newTestCache opens a cache in a fresh directory with refGap 0.
func newTestCache(t testing.TB, limit int64) *chunkCache {
	t.Helper()
	c, err := openChunkCache(t.TempDir(), limit, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	c.refGap = 0
	t.Cleanup(func() { c.close() })
	return c
}

// cacheChunk returns chunk i of n bytes (distinct for each i, n) and its id.
func cacheChunk(i, n int) (Hash, []byte) {
	seed := [32]byte{}
	binary.LittleEndian.PutUint64(seed[:], uint64(i))
	binary.LittleEndian.PutUint64(seed[8:], uint64(n))
	b := make([]byte, n)
	rand.NewChaCha8(seed).Read(b)
	return Sum(b), b
}

// splitRecord cuts b into up to three slices, as a chunk record comes.
func splitRecord(b []byte) [][]byte {
	a, m := len(b)/3, 2*len(b)/3
	return [][]byte{b[:a], b[a:m], b[m:]}
}

func mustPut(t testing.TB, c *chunkCache, i, n int) Hash {
	t.Helper()
	h, b := cacheChunk(i, n)
	ok, err := c.put(h, splitRecord(b))
	if err != nil || !ok {
		t.Fatalf("put chunk %d: %v, %v", i, ok, err)
	}
	return h
}

// cacheDisk returns the disk space the segment files in dir take, and
// their names.
func cacheDisk(t testing.TB, dir string) (allocated int64, segs []string) {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range des {
		if !strings.HasSuffix(d.Name(), cacheSegSuffix) {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, d.Name()), &st); err != nil {
			t.Fatal(err)
		}
		allocated += st.Blocks * 512
		segs = append(segs, d.Name())
	}
	return allocated, segs
}

// checkAccounting fails unless the cache's index matches its segment
// files: every entry's frame is on disk, every segment file has entries
// (or is the one appended to), and the space taken is what the index
// counts — evicted frames were punched out.
func checkAccounting(t testing.TB, c *chunkCache) {
	t.Helper()
	st := c.stats()
	allocated, segs := cacheDisk(t, c.dir)
	c.mu.Lock()
	type where struct {
		path string
		off  int64
		h    Hash
		n    int64
	}
	var frames []where
	live := map[string]int{}
	for _, e := range c.entries {
		frames = append(frames, where{e.seg.f.Name(), e.off, e.h, e.n})
		live[filepath.Base(e.seg.f.Name())]++
	}
	cur := ""
	if c.cur != nil {
		cur = filepath.Base(c.cur.f.Name())
	}
	c.mu.Unlock()
	for _, w := range frames {
		f, err := os.Open(w.path)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, cacheFrameLen)
		_, err = f.ReadAt(b, w.off)
		f.Close()
		if h, n, ok := decodeFrame(b); err != nil || !ok || h != w.h || n != w.n {
			t.Fatalf("frame of %s at %s:%d: %v, decoded %v %s %d", w.h.Short(), w.path, w.off, err, ok, h.Short(), n)
		}
	}
	for _, name := range segs {
		if live[name] == 0 && name != cur {
			t.Fatalf("segment %s has no entries and was not deleted (segments %v)", name, segs)
		}
	}
	// ext4 may hold an extent-tree block or two per fragmented file.
	if slack := int64(len(segs)) * 64 << 10; allocated > st.Size+slack {
		t.Fatalf("segments take %d bytes on disk, the index counts %d (%d segments)", allocated, st.Size, len(segs))
	}
	var sum, prot, pinned int64
	c.mu.Lock()
	for _, e := range c.entries {
		if e.size != cacheCost(e.n) {
			t.Fatalf("entry %s: size %d for a %d-byte record", e.h.Short(), e.size, e.n)
		}
		sum += e.size
		if e.prot {
			prot += e.size
		}
		if e.pins > 0 {
			pinned += e.size
		}
	}
	n := c.probation.Len() + c.protected.Len()
	protSize := c.protSize
	c.mu.Unlock()
	if sum != st.Size || n != st.Chunks || prot != protSize || pinned != st.PinnedBytes {
		t.Fatalf("index: %d bytes, %d listed, %d protected (field %d), %d pinned; stats %+v",
			sum, n, prot, protSize, pinned, st)
	}
}

// inProtected reports whether h is in the protected segment.
func inProtected(c *chunkCache, h Hash) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[h]
	return e != nil && e.prot
}

// fakeClock makes c's clock one the test moves.
type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time          { return f.t }
func (f *fakeClock) advance(d time.Duration) { f.t = f.t.Add(d) }
func useFakeClock(c *chunkCache) *fakeClock {
	f := &fakeClock{time.Unix(1e9, 0)}
	c.now = f.now
	return f
}
func sameBytes(a, b []byte) bool           { return bytes.Equal(a, b) }
func isNotFound(err error) bool            { return errors.Is(err, ErrNotFound) }
func isCorrupt(err error) bool             { return errors.Is(err, ErrCorrupt) }
func cacheLimitFor(chunks, size int) int64 { return int64(chunks) * cacheCost(int64(size)) }
func wantStats(t testing.TB, got, want CacheStats) {
	t.Helper()
	if got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
}

func TestCachePutReadAt(t *testing.T) {
	c := newTestCache(t, 1<<20)
	h, b := cacheChunk(1, 100_000)
	if c.has(h) {
		t.Fatal("empty cache has a chunk")
	}
	if _, err := c.readAt(h, 0, 1); !isNotFound(err) {
		t.Fatalf("readAt of a missing chunk: %v, want ErrNotFound", err)
	}
	ok, err := c.put(h, splitRecord(b))
	if err != nil || !ok {
		t.Fatalf("put: %v, %v", ok, err)
	}
	// On disk: the frame, then the record, at the start of segment 1.
	seg := filepath.Join(c.dir, "00000001.seg")
	got, err := os.ReadFile(seg)
	if err != nil || len(got) != int(cacheCost(int64(len(b)))) || !sameBytes(got[cacheFrameLen:cacheFrameLen+len(b)], b) {
		t.Fatalf("segment file: %v, %d bytes", err, len(got))
	}
	if fh, fn, ok := decodeFrame(got); !ok || fh != h || fn != int64(len(b)) {
		t.Fatalf("frame: %v %s %d", ok, fh.Short(), fn)
	}
	if !c.has(h) {
		t.Fatal("has after put: false")
	}
	if n, ok := c.recordLen(h); !ok || n != int64(len(b)) {
		t.Fatalf("recordLen = %d, %v", n, ok)
	}
	for _, r := range [][2]int{{0, len(b)}, {0, 1}, {5, 40_000}, {len(b) - 7, 7}, {len(b), 0}} {
		got, err := c.readAt(h, int64(r[0]), r[1])
		if err != nil || !sameBytes(got, b[r[0]:r[0]+r[1]]) {
			t.Fatalf("readAt(%d, %d): %v", r[0], r[1], err)
		}
	}
	if _, err := c.readAt(h, int64(len(b)-3), 4); !isCorrupt(err) {
		t.Fatalf("readAt past the end: %v, want ErrCorrupt", err)
	}
	if ok, err := c.put(h, [][]byte{[]byte("other bytes")}); !ok || err != nil {
		t.Fatalf("second put: %v, %v", ok, err)
	}
	if got, _ := c.readAt(h, 0, len(b)); !sameBytes(got, b) {
		t.Fatal("second put changed the chunk")
	}
	c.touch(h)
	c.touch(Sum([]byte("not cached")))
	wantStats(t, c.stats(), CacheStats{Size: cacheCost(int64(len(b))), Limit: 1 << 20, Chunks: 1, Hits: 1})
	checkAccounting(t, c)

	// A segment cut short on disk is damage the caller refetches.
	if err := os.Truncate(seg, cacheFrameLen+10); err != nil {
		t.Fatal(err)
	}
	if _, err := c.readAt(h, 0, 11); !isCorrupt(err) {
		t.Fatalf("readAt of a truncated segment: %v, want ErrCorrupt", err)
	}
	if err := c.remove(h); err != nil || c.has(h) {
		t.Fatalf("remove: %v, has %v", err, c.has(h))
	}
	if _, err := c.readAt(h, 0, 1); !isNotFound(err) {
		t.Fatalf("readAt after remove: %v, want ErrNotFound", err)
	}
	if err := c.remove(h); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	checkAccounting(t, c)

	// Reopened, a frame whose record the file cuts short is dropped, and
	// the file cut before it.
	h2 := mustPut(t, c, 2, 10_000)
	c.close()
	st, _ := os.Stat(seg)
	if err := os.Truncate(seg, st.Size()-5000); err != nil {
		t.Fatal(err)
	}
	if c, err = openChunkCache(c.dir, 1<<20, discardLogger()); err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if c.has(h2) || c.stats().Size != 0 {
		t.Fatalf("a torn frame was indexed: %+v", c.stats())
	}
	if st, _ := os.Stat(seg); st.Size() != cacheCost(int64(len(b))) {
		t.Fatalf("segment is %d bytes after reopening; want it cut at the torn frame", st.Size())
	}
	mustPut(t, c, 3, 100) // appends after the cut
	checkAccounting(t, c)
}

func TestCacheLimitZeroCachesNothing(t *testing.T) {
	for _, limit := range []int64{0, -1} {
		c := newTestCache(t, limit)
		h, b := cacheChunk(1, 10)
		if ok, err := c.put(h, [][]byte{b}); ok || err != nil {
			t.Fatalf("limit %d: put = %v, %v", limit, ok, err)
		}
		checkAccounting(t, c)
		if c.stats().Chunks != 0 {
			t.Fatalf("limit %d: cached a chunk", limit)
		}
	}
}

func TestCacheBound(t *testing.T) {
	const limit, maxLen = 100_000, 12_000
	c := newTestCache(t, limit)
	r := rand.New(rand.NewPCG(1, 2))
	var have []Hash
	pins := map[Hash]int{}
	for i := range 2000 {
		n := 1 + r.IntN(maxLen)
		h, b := cacheChunk(i, n)
		before := c.stats()
		ok, err := c.put(h, splitRecord(b))
		if err != nil {
			t.Fatal(err)
		}
		st := c.stats()
		if st.Size > limit+cacheCost(maxLen) {
			t.Fatalf("put %d: size %d exceeds limit %d by more than a chunk", i, st.Size, limit)
		}
		if ok && st.Size-cacheCost(int64(n)) > limit {
			t.Fatalf("put %d: admitted %d bytes with %d held, over the limit", i, n, st.Size-cacheCost(int64(n)))
		}
		if !ok && before.PinnedBytes == 0 {
			t.Fatalf("put %d: refused with nothing pinned", i)
		}
		if ok && before.PinnedBytes == 0 && st.Size > limit {
			// Nothing pinned: eviction alone must make room.
			t.Fatalf("put %d: size %d over limit %d with nothing pinned", i, st.Size, limit)
		}
		if ok {
			have = append(have, h)
		}
		// Touch, pin and unpin at random.
		for range 3 {
			if len(have) == 0 {
				break
			}
			x := have[r.IntN(len(have))]
			switch r.IntN(6) {
			case 0, 1, 2:
				c.touch(x)
			case 3:
				if c.pin(x) {
					pins[x]++
				}
			default:
				for p := range pins {
					c.unpin(p)
					if pins[p]--; pins[p] == 0 {
						delete(pins, p)
					}
					break
				}
			}
		}
		for p := range pins {
			if !c.has(p) {
				t.Fatalf("put %d: pinned chunk %s evicted", i, p.Short())
			}
		}
		if i%100 == 0 {
			checkAccounting(t, c)
		}
	}
	st := c.stats()
	if st.Evictions == 0 || st.EvictedBytes == 0 {
		t.Fatalf("no evictions counted: %+v", st)
	}
	checkAccounting(t, c)
}

func TestCacheScanResistance(t *testing.T) {
	const n = 1000
	c := newTestCache(t, cacheLimitFor(100, n))
	var hot []Hash
	for i := range 30 {
		hot = append(hot, mustPut(t, c, i, n))
	}
	for _, h := range hot {
		c.touch(h) // second reference: protected
	}
	// A one-off scan of many new chunks, five times the cache.
	for i := 1000; i < 1500; i++ {
		mustPut(t, c, i, n)
	}
	for _, h := range hot {
		if !c.has(h) {
			t.Fatalf("scan evicted hot chunk %s", h.Short())
		}
	}
	// The scan's chunks took the rest of the space, and were the ones evicted.
	st := c.stats()
	if st.Chunks != 100 || st.Evictions != 430 {
		t.Fatalf("after the scan: %+v", st)
	}
	checkAccounting(t, c)
}

func TestCacheProtectedShare(t *testing.T) {
	const n = 1000
	c := newTestCache(t, cacheLimitFor(10, n))
	var hs []Hash
	for i := range 10 {
		h := mustPut(t, c, i, n)
		c.touch(h)
		hs = append(hs, h)
	}
	// Only 8 fit in protected: the first two touched were demoted.
	for i, h := range hs {
		if inProtected(c, h) != (i >= 2) {
			t.Fatalf("chunk %d: protected %v", i, inProtected(c, h))
		}
	}
	// A counted reference moves a protected chunk to the MRU end, so the
	// next demotion takes another.
	c.touch(hs[2])
	c.touch(hs[0]) // promotes 0, demotes the protected LRU: 3
	if !inProtected(c, hs[2]) || !inProtected(c, hs[0]) || inProtected(c, hs[3]) {
		t.Fatalf("protected: 0 %v, 2 %v, 3 %v", inProtected(c, hs[0]), inProtected(c, hs[2]), inProtected(c, hs[3]))
	}
	// Eviction takes probation first: 1 and 3 (demoted) go before any
	// protected chunk.
	mustPut(t, c, 100, n)
	mustPut(t, c, 101, n)
	if c.has(hs[1]) || c.has(hs[3]) {
		t.Fatal("probation chunks survived")
	}
	for _, i := range []int{0, 2, 4, 5, 6, 7, 8, 9} {
		if !c.has(hs[i]) {
			t.Fatalf("protected chunk %d evicted", i)
		}
	}
	checkAccounting(t, c)
}

func TestCacheRefGap(t *testing.T) {
	const n = 1000
	c := newTestCache(t, cacheLimitFor(10, n))
	c.refGap = time.Second
	clock := useFakeClock(c)

	a := mustPut(t, c, 1, n)
	for range 50 { // one sequential pass: many small reads at once
		c.touch(a)
		clock.advance(time.Millisecond)
	}
	if inProtected(c, a) {
		t.Fatal("touches within refGap of admission promoted the chunk")
	}
	if got := c.stats().Hits; got != 50 {
		t.Fatalf("hits = %d, want 50", got)
	}
	clock.advance(time.Second - 50*time.Millisecond - 1)
	c.touch(a)
	if inProtected(c, a) {
		t.Fatal("touch 1ns short of refGap promoted the chunk")
	}
	clock.advance(1)
	c.touch(a)
	if !inProtected(c, a) {
		t.Fatal("touch refGap after admission did not promote")
	}

	// In protected, only counted references move a chunk to the MRU end.
	b := mustPut(t, c, 2, n)
	clock.advance(time.Second)
	c.touch(b) // promoted, MRU
	c.touch(a) // 1s since a's last counted reference: counts, a is MRU
	clock.advance(time.Second / 2)
	c.touch(b) // too soon: b stays behind a
	c.mu.Lock()
	front := c.protected.Front().Value.(*cacheEntry).h
	c.mu.Unlock()
	if front != a {
		t.Fatal("an uncounted touch moved a protected chunk")
	}

	// Chunks read only in quick passes stay in probation, so a scan of
	// them cannot flush a.
	for i := 100; i < 130; i++ {
		h := mustPut(t, c, i, n)
		for range 10 {
			c.touch(h)
		}
		clock.advance(time.Millisecond)
	}
	if !c.has(a) || !c.has(b) {
		t.Fatal("a scan read in small pieces evicted referenced chunks")
	}
	checkAccounting(t, c)
}

func TestCachePinnedAndInUse(t *testing.T) {
	const n = 1000
	c := newTestCache(t, cacheLimitFor(3, n))
	k := cacheCost(n)
	a, b, d := mustPut(t, c, 1, n), mustPut(t, c, 2, n), mustPut(t, c, 3, n)
	if c.pin(Sum([]byte("absent"))) {
		t.Fatal("pin of an absent chunk succeeded")
	}
	if !c.pin(a) || !c.pin(a) || !c.pin(b) {
		t.Fatal("pin failed")
	}
	if got := c.stats().PinnedBytes; got != 2*k {
		t.Fatalf("pinned bytes %d, want %d", got, 2*k)
	}
	// d is "being read".
	c.mu.Lock()
	c.entries[d].inUse++
	c.mu.Unlock()

	// Nothing is evictable, but the cache is within its limit: x is
	// admitted, over the limit by one chunk.
	x := mustPut(t, c, 4, n)
	if st := c.stats(); st.Size != 4*k || !c.has(a) || !c.has(b) || !c.has(d) {
		t.Fatalf("after put x: %+v", st)
	}
	c.pin(x)
	// Now over the limit with nothing evictable: refused, nothing written.
	y, yb := cacheChunk(5, n)
	if ok, err := c.put(y, [][]byte{yb}); ok || err != nil {
		t.Fatalf("put with nothing evictable: %v, %v", ok, err)
	}
	if c.has(y) || c.stats().Size != 4*k {
		t.Fatal("a refused put changed the cache")
	}
	checkAccounting(t, c) // also: no file or temp file written

	c.mu.Lock()
	c.entries[d].inUse--
	c.mu.Unlock()
	if ok, err := c.put(y, [][]byte{yb}); !ok || err != nil {
		t.Fatalf("put once d is free: %v, %v", ok, err)
	}
	if c.has(d) || !c.has(a) || !c.has(b) || !c.has(x) {
		t.Fatal("evicted the wrong chunk")
	}

	// Pins are counted: a is still pinned once; b and x are free.
	c.unpin(a)
	c.unpin(b)
	c.unpin(b) // extra unpins are harmless
	c.unpin(x)
	if got := c.stats().PinnedBytes; got != k {
		t.Fatalf("pinned bytes %d, want %d", got, k)
	}
	z := mustPut(t, c, 6, n) // evicts b, then x: back to the limit
	if !c.has(a) || c.has(b) || c.has(x) || !c.has(y) || !c.has(z) {
		t.Fatalf("after put z: a %v b %v x %v y %v z %v", c.has(a), c.has(b), c.has(x), c.has(y), c.has(z))
	}
	if st := c.stats(); st.Size != 3*k {
		t.Fatalf("after put z: %+v", st)
	}

	// remove drops even a pinned chunk.
	if err := c.remove(a); err != nil || c.has(a) {
		t.Fatalf("remove pinned: %v", err)
	}
	if got := c.stats().PinnedBytes; got != 0 {
		t.Fatalf("pinned bytes after remove %d", got)
	}
	checkAccounting(t, c)
}

func TestCacheReopen(t *testing.T) {
	const n = 1000
	c := newTestCache(t, 1<<20)
	c.segMax = 3 * cacheCost(n+9) // three chunks per segment
	dir := c.dir
	var hs []Hash
	for i := range 10 {
		hs = append(hs, mustPut(t, c, i, n+i)) // chunk 0 oldest
	}
	// A hole in the middle of a segment, and a segment emptied (deleted).
	for _, i := range []int{1, 3, 4, 5} {
		c.remove(hs[i])
	}
	if _, err := os.Stat(filepath.Join(dir, "00000002.seg")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("emptied segment 2: %v", err)
	}
	checkAccounting(t, c)
	want := c.stats()
	if _, err := c.readAt(hs[0], 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	// Files that are not the cache's are left alone.
	junk := []string{"junk", "1.seg", "00000009.seg.old", "tmp-123"}
	for _, name := range junk {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("xx"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	c, err := openChunkCache(dir, 1<<20, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	got := c.stats()
	want.Hits = 0
	wantStats(t, got, want)
	for _, name := range junk {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("foreign file %s: %v", name, err)
		}
		os.Remove(filepath.Join(dir, name))
	}
	for i, h := range hs {
		_, b := cacheChunk(i, n+i)
		removed := i == 1 || (i >= 3 && i <= 5)
		if sz, ok := c.recordLen(h); ok == removed || (ok && sz != int64(n+i)) {
			t.Fatalf("chunk %d: size %d, %v", i, sz, ok)
		}
		if removed {
			continue
		}
		if got, err := c.readAt(h, 0, n+i); err != nil || !sameBytes(got, b) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	checkAccounting(t, c)
	// Puts go on in the newest segment, then in new ones.
	for i := 10; i < 13; i++ {
		hs = append(hs, mustPut(t, c, i, n+i))
	}
	checkAccounting(t, c)
	c.close()

	// Garbage after the last frame (a torn append) is cut off; the frames
	// before it stay.
	ids, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	last := ids[len(ids)-1]
	st, _ := os.Stat(last)
	f, _ := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(bytes.Repeat([]byte("garbage!"), 600))
	f.Close()
	if c, err = openChunkCache(dir, 1<<20, discardLogger()); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(last); after.Size() != st.Size() {
		t.Fatalf("last segment %d bytes after reopening, want %d", after.Size(), st.Size())
	}
	if !c.has(hs[12]) {
		t.Fatal("the frame before the garbage was lost")
	}
	c.close()

	// Reopened with a smaller limit, the oldest chunks go first.
	c, err = openChunkCache(dir, 5*cacheCost(n+12), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	for i, h := range hs {
		if c.has(h) != (i >= 8) {
			t.Fatalf("chunk %d: cached %v", i, c.has(h))
		}
	}
	checkAccounting(t, c)
}

func TestCacheSetLimit(t *testing.T) {
	const n = 1000
	c := newTestCache(t, cacheLimitFor(10, n))
	k := cacheCost(n)
	var hs []Hash
	for i := range 10 {
		h := mustPut(t, c, i, n)
		c.touch(h)
		hs = append(hs, h)
	}
	c.pin(hs[9])
	c.setLimit(4 * k)
	st := c.stats()
	if st.Size > 4*k || st.Limit != 4*k || st.Evictions != 6 || st.EvictedBytes != uint64(6*k) {
		t.Fatalf("after setLimit: %+v", st)
	}
	if !c.has(hs[9]) {
		t.Fatal("setLimit evicted a pinned chunk")
	}
	c.mu.Lock()
	prot := c.protSize
	c.mu.Unlock()
	if prot > 4*k*8/10 {
		t.Fatalf("protected holds %d bytes, over 80%% of the new limit", prot)
	}
	checkAccounting(t, c)

	c.setLimit(0)
	if st := c.stats(); st.Chunks != 1 || st.Size != k {
		t.Fatalf("after setLimit(0): %+v", st)
	}
	h, b := cacheChunk(100, n)
	if ok, err := c.put(h, [][]byte{b}); ok || err != nil {
		t.Fatalf("put at limit 0: %v, %v", ok, err)
	}
	c.unpin(hs[9])
	c.setLimit(0)
	if st := c.stats(); st.Chunks != 0 || st.Size != 0 {
		t.Fatalf("after unpin and setLimit(0): %+v", st)
	}
	checkAccounting(t, c)
}

func TestCacheWriteFailure(t *testing.T) {
	c := newTestCache(t, 1<<20)
	h, b := cacheChunk(1, 100)
	// A directory where the first segment should be makes its creation fail.
	if err := os.Mkdir(filepath.Join(c.dir, "00000001.seg"), 0o700); err != nil {
		t.Fatal(err)
	}
	ok, err := c.put(h, [][]byte{b})
	if ok || err == nil {
		t.Fatalf("put: %v, %v; want an error", ok, err)
	}
	if st := c.stats(); st.Size != 0 || st.Chunks != 0 {
		t.Fatalf("failed put left %+v", st)
	}
	// The next put goes on to the next segment.
	if err := os.Remove(filepath.Join(c.dir, "00000001.seg")); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.put(h, [][]byte{b}); !ok || err != nil {
		t.Fatalf("put after a failure: %v, %v", ok, err)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "00000002.seg")); err != nil {
		t.Fatal(err)
	}
	checkAccounting(t, c)
	// Disk full is reported as ErrNoSpace.
	full := cacheWriteErr(h, &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC})
	if !errors.Is(full, ErrNoSpace) || !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("ENOSPC became %v", full)
	}
	if other := cacheWriteErr(h, syscall.EIO); errors.Is(other, ErrNoSpace) {
		t.Fatalf("EIO became %v", other)
	}
}

func TestCacheConcurrent(t *testing.T) {
	const n, chunks = 4000, 16
	c := newTestCache(t, cacheLimitFor(6, n))
	data := make([][]byte, chunks)
	hs := make([]Hash, chunks)
	for i := range hs {
		hs[i], data[i] = cacheChunk(i, n)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	stop := make(chan struct{})
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				i := r.IntN(chunks)
				switch op := r.IntN(10); {
				case op < 3:
					if _, err := c.put(hs[i], splitRecord(data[i])); err != nil {
						fail(err)
					}
				case op < 7:
					off := r.IntN(n)
					m := r.IntN(n - off + 1)
					got, err := c.readAt(hs[i], int64(off), m)
					switch {
					case isNotFound(err):
					case err != nil:
						fail(err)
					case !sameBytes(got, data[i][off:off+m]):
						fail(errors.New("readAt returned wrong bytes"))
					default:
						c.touch(hs[i])
					}
				case op < 9:
					if err := c.remove(hs[i]); err != nil {
						fail(err)
					}
				default:
					if c.pin(hs[i]) {
						c.has(hs[i])
						c.unpin(hs[i])
					}
					c.stats()
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if st := c.stats(); st.Size > cacheLimitFor(7, n) {
		t.Errorf("size %d over the limit by more than one chunk", st.Size)
	}
	// Shrink under load, then close under load.
	c.setLimit(cacheLimitFor(3, n))
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	st := c.stats()
	if st.Size > cacheLimitFor(4, n) || st.PinnedBytes != 0 || st.Hits == 0 {
		t.Fatalf("after the run: %+v", st)
	}
	checkAccounting(t, c)

	// close while reads run: they see data or ErrNotFound, never a
	// closed file.
	stop = make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (g + k) % chunks
				if got, err := c.readAt(hs[i], 0, n); err != nil && !isNotFound(err) {
					fail(err)
				} else if err == nil && !sameBytes(got, data[i]) {
					fail(errors.New("readAt returned wrong bytes"))
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}

// A pinned chunk removed as damaged is still pinned when it comes back.
func TestCacheRemovedPinnedChunkComesBackPinned(t *testing.T) {
	c, err := openChunkCache(t.TempDir(), 1<<20, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	h := Hash{1}
	if ok, err := c.put(h, [][]byte{make([]byte, 1000)}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	c.pin(h)
	c.remove(h)
	if ok, err := c.put(h, [][]byte{make([]byte, 1000)}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if st := c.stats(); st.PinnedBytes != cacheCost(1000) {
		t.Fatalf("after coming back: %+v", st)
	}
	c.unpin(h)
	if st := c.stats(); st.PinnedBytes != 0 {
		t.Fatalf("after unpin: %+v", st)
	}
}

// openCacheAt opens the cache in dir with a 1 MiB limit, and closes it
// at the end of the test (closing twice is harmless).
func openCacheAt(t testing.TB, dir string) *chunkCache {
	t.Helper()
	c, err := openChunkCache(dir, 1<<20, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	return c
}

// A cache file's frame is read back after crashes and from damaged disks:
// one that is accepted is exactly the frame encodeFrame writes.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(encodeFrame(Sum([]byte("chunk")), 12345))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, ok := decodeFrame(b)
		if ok && !bytes.Equal(encodeFrame(h, n), b[:cacheFrameLen]) {
			t.Fatal("accepted frame does not round-trip")
		}
	})
}
