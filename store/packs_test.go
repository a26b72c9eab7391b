package store

import "testing"

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
	if loc.loc.Off != uint64(alignUp(before, directAlign)) {
		t.Fatalf("direct batch starts at %d, want %d", loc.loc.Off, alignUp(before, directAlign))
	}
	if pad := end - int64(loc.loc.Off) - int64(len(big1)+len(big2)); pad < 0 || pad >= directAlign+2*recordMaxHeader {
		t.Fatalf("direct batch of %d bytes took %d", len(big1)+len(big2), end-int64(loc.loc.Off))
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
