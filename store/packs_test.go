package store

import (
	"bytes"
	"io"
	"testing"
)

// packEnd returns where the next append goes and the pack file's size.
func packEnd(t *testing.T, s *Store) (int64, int64) {
	t.Helper()
	p := s.packs
	p.mu.Lock()
	defer p.mu.Unlock()
	st, err := p.cur.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return p.curSize, st.Size()
}

// putAndCheck stores chunks as one batch and reads each back.
func putAndCheck(t *testing.T, s *Store, chunks ...[]byte) []Ref {
	t.Helper()
	refs, err := s.PutChunks(chunks)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range refs {
		if got, err := s.ReadChunk(r.Hash); err != nil || !sameBytes(got, chunks[i]) {
			t.Fatalf("chunk %d read back: %v", i, err)
		}
	}
	return refs
}

// Large batches are appended with O_DIRECT at 4 KiB boundaries, small ones
// buffered right after whatever came before; all read back, before and
// after a reopen, and a reopened store appends after the padding.
func TestPackDirectAndBufferedAppends(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	if s.packs.direct == nil {
		t.Fatal("no O_DIRECT pack file on the test directory's file system")
	}
	var all [][]byte
	var refs []Ref
	step := func(chunks ...[]byte) {
		refs = append(refs, putAndCheck(t, s, chunks...)...)
		all = append(all, chunks...)
	}
	_, small := cacheChunk(1, 1000)
	step(small) // buffered: the pack's end is not aligned
	if end, _ := packEnd(t, s); end%directAlign == 0 {
		t.Fatalf("pack end %d after a small append is aligned; the test needs it not to be", end)
	}
	_, big1 := cacheChunk(2, 700_000)
	_, big2 := cacheChunk(3, 900_001)
	before, _ := packEnd(t, s)
	step(big1, big2) // direct
	end, size := packEnd(t, s)
	if end%directAlign != 0 || end != size {
		t.Fatalf("after a direct append: end %d, file size %d; want equal and 4 KiB aligned", end, size)
	}
	loc, err := s.header(refs[1].Hash)
	if err != nil {
		t.Fatal(err)
	}
	// Each large record's data starts on a page, its header just before.
	start := uint64(alignUp(before, directAlign))
	if off := loc.loc.Off; off < start || off >= start+directAlign || (off+uint64(loc.loc.HdrLen))%directAlign != 0 {
		t.Fatalf("direct batch at %d (header %d bytes): want its data on the first page boundary past %d", off, loc.loc.HdrLen, start)
	}
	loc2, err := s.header(refs[2].Hash)
	if err != nil {
		t.Fatal(err)
	}
	if (loc2.loc.Off+uint64(loc2.loc.HdrLen))%directAlign != 0 || loc2.loc.Off < loc.loc.Off+uint64(loc.loc.HdrLen+loc.loc.DataLen) {
		t.Fatalf("second record at %d: its data is not on a page, or it overlaps the first", loc2.loc.Off)
	}
	if pad := end - int64(start) - int64(len(big1)+len(big2)); pad < 0 || pad >= 3*directAlign+2*recordMaxHeader {
		t.Fatalf("direct batch of %d bytes took %d", len(big1)+len(big2), end-int64(start))
	}
	_, small2 := cacheChunk(4, 5000)
	step(small2) // buffered, straight after the padding
	if end2, _ := packEnd(t, s); end2 <= end || end2 > end+6000 {
		t.Fatalf("small append after a direct one: end %d → %d", end, end2)
	}
	_, big3 := cacheChunk(5, 2<<20)
	step(big3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestSite(t, dir)
	defer s.Close()
	for i, r := range refs {
		if got, err := s.ReadChunk(r.Hash); err != nil || !sameBytes(got, all[i]) {
			t.Fatalf("chunk %d after reopen: %v", i, err)
		}
	}
	_, big4 := cacheChunk(6, 1<<20)
	putAndCheck(t, s, big4)
}

// Where the file system refuses O_DIRECT, large batches are written
// buffered. (tmpfs and ext4 both take it on this kernel, so the test turns
// it off as a refusing open would.)
func TestPackBufferedWithoutDirectIO(t *testing.T) {
	s := newTestStore(t)
	s.packs.mu.Lock()
	s.packs.stopDirect()
	s.packs.mu.Unlock()
	start, _ := packEnd(t, s)
	_, small := cacheChunk(1, 1000)
	_, big := cacheChunk(2, 3<<20)
	putAndCheck(t, s, small)
	putAndCheck(t, s, big)
	want := start + int64(1000+3<<20) + 2*recordFixed + (1+(3<<20)/BlockSize)*recordPerBlock
	if end, size := packEnd(t, s); end != size || end != want {
		t.Fatalf("buffered appends: end %d, file size %d, want %d", end, size, want)
	}
}

// A batch is laid out for the pack before the write lock (see image). A
// chunk that another batch stored meanwhile is not written again: the
// batch is laid out anew without it.
func TestLaidOutBatchSkipsAChunkStoredMeanwhile(t *testing.T) {
	s := newTestStore(t)
	_, a := cacheChunk(1, 1<<20)
	_, b := cacheChunk(2, 1<<20+7)
	enc := s.encodeChunks([][]byte{a, b})
	img := s.packs.prepareEarly(freshOf(enc, func(Hash) bool { return false }))
	if img == nil {
		t.Fatal("a 2 MiB batch was not laid out for a direct append")
	}
	defer s.packs.release(img)
	putAndCheck(t, s, a) // another batch, in between
	before, _ := packEnd(t, s)
	s.putMu.Lock()
	err := s.writeChunks(freshOf(enc, s.HasChunk), img)
	s.putMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	after, _ := packEnd(t, s)
	if grew := after - before; grew > int64(len(b))+directAlign+recordMaxHeader {
		t.Fatalf("the pack grew by %d bytes for one new chunk of %d", grew, len(b))
	}
	for i, c := range [][]byte{a, b} {
		if got, err := s.ReadChunk(enc[i].hdr.id); err != nil || !sameBytes(got, c) {
			t.Fatalf("chunk %d read back: %v", i, err)
		}
	}
}

// Small reads of a pack whose pages are not cached go around the page
// cache (O_DIRECT) and return the right bytes, also for a record that ends
// where the pack ends off a page boundary; once the pages are cached, reads
// come from the cache.
func TestSmallReadsOfAColdPack(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	_, big := cacheChunk(1, 2<<20+123)
	_, small := cacheChunk(2, 5000)
	refs := append(putAndCheck(t, s, big), putAndCheck(t, s, small)...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestSite(t, dir)
	defer s.Close()
	f := coldPack(t, s)
	reads := []struct{ chunk, off, n int }{
		{0, 0, 4096}, {0, 4095, 4096}, {0, 16380, 10}, {0, 3 * BlockSize, 2 * BlockSize},
		{0, len(big) - 4096, 4096}, {0, len(big) - 1, 1}, {1, 0, len(small)}, {1, len(small) - 7, 7},
	}
	check := func(when string) {
		for _, r := range reads {
			want := [][]byte{big, small}[r.chunk][r.off : r.off+r.n]
			got := make([]byte, r.n)
			if err := s.readLocal(refs[r.chunk].Hash, got, r.off); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: chunk %d bytes %d+%d: %v, equal %v", when, r.chunk, r.off, r.n, err, bytes.Equal(got, want))
			}
		}
	}
	check("cold")
	if s.packs.noDirectRead.Load() {
		t.Fatal("direct reads were refused on the test directory's file system")
	}
	if s.packs.cached(f, 0, 1<<30) {
		t.Fatal("small reads of a cold pack went through the page cache")
	}
	forget := func() { // the mount's caches, not the kernel's
		s.bcache.mu.Lock()
		max := s.bcache.max
		s.bcache.max = 0
		s.bcache.evictLocked()
		s.bcache.max = max
		s.bcache.mu.Unlock()
		s.headers.Delete(refs[0].Hash)
		s.headers.Delete(refs[1].Hash)
	}
	// Read a second time, the same bytes go through the page cache.
	forget()
	check("again")
	if !s.packs.cached(f, int64(s.mustLoc(t, refs[0].Hash).Off), 1) {
		t.Fatal("a second read of a cold pack's header did not go through the page cache")
	}
	// Warm the whole pack: reads are served from it.
	if _, err := io.Copy(io.Discard, io.NewSectionReader(f, 0, 1<<40)); err != nil {
		t.Fatal(err)
	}
	forget()
	check("cached")
}

func (s *Store) mustLoc(t *testing.T, h Hash) chunkLoc {
	t.Helper()
	ha, err := s.header(h)
	if err != nil {
		t.Fatal(err)
	}
	return ha.loc
}

// A cold read of a chunk reads its header and, at once, the blocks it
// wants where they lie if the chunk is stored raw. Where blocks before
// them are compressed, that guess misses, and the read still returns the
// right bytes.
func TestColdReadsOfPartlyCompressedChunks(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	_, random := cacheChunk(1, 600_000)
	mixed := append(bytes.Repeat([]byte("compressible "), 30_000), random[:200_000]...) // zstd, then raw
	tail := append(append([]byte{}, random[:300_000]...), bytes.Repeat([]byte{7}, 100_000)...)
	refs := putAndCheck(t, s, random, mixed, tail)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestSite(t, dir)
	defer s.Close()
	chunks := [][]byte{random, mixed, tail}
	for i, c := range chunks {
		for _, off := range []int{0, 5000, BlockSize - 10, 390_000, len(c) - 4096, len(c) - 1} {
			s.headers.Delete(refs[i].Hash)
			n := min(4096, len(c)-off)
			got := make([]byte, n)
			if err := s.readLocal(refs[i].Hash, got, off); err != nil || !bytes.Equal(got, c[off:off+n]) {
				t.Fatalf("chunk %d, cold read at %d: %v, equal %v", i, off, err, bytes.Equal(got, c[off:off+n]))
			}
		}
	}
}
