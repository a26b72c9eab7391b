package store

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// coldPack drops the page cache of s's current pack, or skips the test
// where this kernel cannot tell (no cachestat) or keeps the pages.
func coldPack(t *testing.T, s *Store) *os.File {
	t.Helper()
	f, err := s.packs.reader(s.packs.curID)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if s.packs.noCachestat.Load() || s.packs.cached(f, 0, 1<<30) {
		t.Skip("no cachestat(2), or the pack's pages stay cached")
	}
	return f
}

// heapAfterGC returns the live heap after a full collection.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// The block cache bounds what it holds by the bytes it counts ("the bound
// counts what is really held"). A cold read of a small file's block is
// now read O_DIRECT into whole aligned pages, and the block kept is a
// (cap-limited) slice of them: a 100-byte block counts 100 bytes and pins
// 4 or 8 KiB. Read buffered (as before b433d23), the same blocks cost
// what they count plus the cache's own per-entry overhead.
func TestColdSmallBlocksHoldWhatTheBlockCacheCounts(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	const files, size = 3000, 100
	var chunks [][]byte
	for i := range files {
		_, b := cacheChunk(1000+i, size)
		chunks = append(chunks, b)
	}
	var refs []Ref
	for i := 0; i < files; i += 100 { // small batches: buffered appends
		r, err := s.PutChunks(chunks[i : i+100])
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r...)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestSite(t, dir)
	defer s.Close()

	// perBlock reads every chunk once, cold, and returns the heap it
	// keeps per cached block, and what the block cache counts per block.
	perBlock := func(direct bool) (held, counted float64) {
		coldPack(t, s)
		s.packs.seen = new(seenSet)
		s.packs.noDirectRead.Store(!direct)
		for _, r := range refs {
			s.headers.Delete(r.Hash)
		}
		s.bcache.mu.Lock()
		s.bcache.max = 0
		s.bcache.evictLocked()
		s.bcache.max = 64 << 20
		s.bcache.mu.Unlock()
		before := heapAfterGC()
		p := make([]byte, size)
		for i, r := range refs {
			if err := s.readLocal(r.Hash, p, 0); err != nil || string(p) != string(chunks[i]) {
				t.Fatalf("chunk %d: %v", i, err)
			}
		}
		after := heapAfterGC()
		s.bcache.mu.Lock()
		n, sz := s.bcache.ll.Len(), s.bcache.size
		s.bcache.mu.Unlock()
		if n != files {
			t.Fatalf("%d blocks cached, want %d", n, files)
		}
		return float64(after-before) / files, float64(sz) / files
	}
	bufHeld, bufCounted := perBlock(false)
	dirHeld, dirCounted := perBlock(true)
	t.Logf("buffered: %.0f bytes held per cached block, %.0f counted", bufHeld, bufCounted)
	t.Logf("direct:   %.0f bytes held per cached block, %.0f counted", dirHeld, dirCounted)
	if s.packs.noDirectRead.Load() {
		t.Skip("direct reads refused here")
	}
	if dirCounted != bufCounted {
		t.Fatalf("the cache counts %.0f per block read direct, %.0f read buffered", dirCounted, bufCounted)
	}
	if dirHeld > bufHeld+1024 {
		t.Errorf("a cold %d-byte block read direct holds %.0f bytes (%.0f more than read buffered), "+
			"while the block cache counts %.0f: its 64 MiB bound would hold %s",
			size, dirHeld, dirHeld-bufHeld, dirCounted, fmtBytes(64<<20/dirCounted*(dirHeld-bufHeld+dirCounted)))
	}
}

func fmtBytes(b float64) string { return fmt.Sprintf("%.1f GiB", b/(1<<30)) }

// A chunk of 0 bytes (PutChunks stores one; decodeBlocks allows for it)
// whose data offset falls on a page boundary: a cold ReadChunk reads 0
// bytes there, and readSmall asks alignedAlloc for 0 bytes, which indexes
// b[0] of an empty slice. (cachestat with a length of 0 also means "to the
// end of the file", not "nothing".)
func TestColdReadOfAnEmptyChunkOnAPageBoundary(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	if s.packs.curSize != 0 {
		t.Fatalf("a fresh pack holds %d bytes", s.packs.curSize)
	}
	// A one-block raw chunk's record is 40+37 bytes of header and its
	// data; the empty chunk's record then starts at 4056 and its 40-byte
	// header ends at 4096, where its (empty) data starts.
	_, first := cacheChunk(7, 4096-40-77)
	refs, err := s.PutChunks([][]byte{first, {}})
	if err != nil {
		t.Fatal(err)
	}
	loc := s.mustLoc(t, refs[1].Hash)
	if data := loc.Off + uint64(loc.HdrLen); data%directAlign != 0 {
		t.Fatalf("the empty chunk's data is at %d, not on a page boundary", data)
	}
	// Straight after the write (the pack ends there: nothing cached past
	// it), and again cold after a reopen.
	read := func(s *Store) (got []byte, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return s.ReadChunk(refs[1].Hash)
	}
	got, err := read(s)
	if err != nil || len(got) != 0 {
		t.Errorf("read of an empty chunk just written: %d bytes, %v", len(got), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestSite(t, dir)
	defer s.Close()
	coldPack(t, s)
	got, err = read(s)
	if err != nil || len(got) != 0 {
		t.Fatalf("cold read of an empty chunk: %d bytes, %v", len(got), err)
	}
}

// A whole chunk read to be sent (ReadChunk) from a cold pack is read
// around the page cache, and is the chunk's bytes, also where it ends
// mid-page; from a warm pack it is read through the page cache. (A small
// chunk follows the small reads' rule, TestSmallReadsOfAColdPack.)
func TestWholeChunkReadsOfAColdPackGoDirect(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	_, big := cacheChunk(1, 2<<20+123)
	_, odd := cacheChunk(3, directWholeMin+4097) // ends mid-page
	_, small := cacheChunk(2, 5000)
	refs := putAndCheck(t, s, big, odd, small)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestSite(t, dir)
	defer s.Close()
	f := coldPack(t, s)
	want := [][]byte{big, odd, small}
	for i, r := range refs[:2] {
		got, err := s.ReadChunk(r.Hash)
		if err != nil || !bytes.Equal(got, want[i]) {
			t.Fatalf("cold chunk %d: %v, equal %v", i, err, bytes.Equal(got, want[i]))
		}
	}
	if s.packs.noDirectRead.Load() {
		t.Fatal("direct reads were refused on the test directory's file system")
	}
	if s.packs.cached(f, 0, 1<<30) {
		t.Fatal("whole-chunk reads of a cold pack went through the page cache")
	}
	if got, err := s.ReadChunk(refs[2].Hash); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("small chunk: %v, equal %v", err, bytes.Equal(got, small))
	}
	// Warm: the page cache serves it.
	if _, err := io.Copy(io.Discard, io.NewSectionReader(f, 0, 1<<40)); err != nil {
		t.Fatal(err)
	}
	for i, r := range refs {
		got, err := s.ReadChunk(r.Hash)
		if err != nil || !bytes.Equal(got, want[i]) {
			t.Fatalf("warm chunk %d: %v, equal %v", i, err, bytes.Equal(got, want[i]))
		}
	}
}
