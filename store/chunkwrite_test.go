package store

import "testing"

// A chunk repeated within one batch is written to the pack once.
func TestPutChunksWritesARepeatedChunkOnce(t *testing.T) {
	s := newTestStore(t)
	_, a := cacheChunk(1, 100_000)
	_, b := cacheChunk(2, 50_000)
	size := func() int64 { end, _ := packEnd(t, s); return end }
	before := size()
	refs, err := s.PutChunks([][]byte{a, b, a, a, b})
	if err != nil {
		t.Fatal(err)
	}
	if refs[0] != refs[2] || refs[0] != refs[3] || refs[1] != refs[4] || refs[0] == refs[1] {
		t.Fatalf("refs %v", refs)
	}
	if grew := size() - before; grew > 160_000 {
		t.Fatalf("pack grew by %d bytes for two distinct chunks of 150,000 bytes", grew)
	}
	for i, want := range [][]byte{a, b, a, a, b} {
		if got, err := s.ReadChunk(refs[i].Hash); err != nil || !sameBytes(got, want) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
}

// A chunk that two batches of one rewrite hold (a pattern that repeats
// every 11 MiB, longer than a batch) is written once: the rewrite stores
// two batches at once. (Found by review.)
func TestRewriteWritesACrossBatchChunkOnce(t *testing.T) {
	s := newTestStore(t)
	_, pat := cacheChunk(7, 11<<20)
	var data []byte
	for range 10 {
		data = append(data, pat...)
	}
	size := func() int64 { end, _ := packEnd(t, s); return end }
	before := size()
	x, err := s.Rewrite(&Extents{}, []Patch{{Off: 0, Data: data}}, uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	unique := map[Hash]uint64{}
	for _, r := range x.Refs {
		unique[r.Hash] = r.Len
	}
	var bytes uint64
	for _, n := range unique {
		bytes += n
	}
	if grew := uint64(size() - before); grew > bytes+bytes/20 {
		t.Fatalf("pack grew %d bytes for %d chunks of %d bytes", grew, len(unique), bytes)
	}
}
