package store

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A torn append that kept the frame's record but lost part of its zero
// padding leaves a file whose size is not 4 KiB-aligned. The next frame
// must still start on a block boundary, or evicting the first would punch
// over it. (Found by review.)
func TestCacheTornPaddingKeepsFramesAligned(t *testing.T) {
	dir := t.TempDir()
	c := openCacheAt(t, dir)
	ha := mustPut(t, c, 1, 1000)
	c.close()
	seg := filepath.Join(dir, "00000001.seg")
	if err := os.Truncate(seg, cacheFrameLen+1000+10); err != nil { // pad torn
		t.Fatal(err)
	}
	c = openCacheAt(t, dir)
	if !c.has(ha) {
		t.Fatal("frame A not indexed")
	}
	hb, bb := cacheChunk(2, 1000)
	if ok, err := c.put(hb, [][]byte{bb}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	c.mu.Lock()
	offB := c.entries[hb].off
	c.mu.Unlock()
	t.Logf("frame B at offset %d (aligned: %v)", offB, offB%cacheAlign == 0)
	c.remove(ha) // punches [0, 4096): B's frame is in there
	got, err := c.readAt(hb, 0, 1000)
	if err != nil || !sameBytes(got, bb) {
		t.Errorf("chunk B damaged by A's eviction: err %v, equal %v", err, sameBytes(got, bb))
	}
	c.close()
	c = openCacheAt(t, dir)
	defer c.close()
	if !c.has(hb) {
		t.Errorf("chunk B lost on reopen")
	}
}

// A segment the scan leaves without entries (a torn first frame, or all
// frames punched before a crash) is deleted at open.
func TestCacheEmptySegmentDeletedAtOpen(t *testing.T) {
	dir := t.TempDir()
	c := openCacheAt(t, dir)
	c.segMax = 1
	mustPut(t, c, 1, 1000)
	mustPut(t, c, 2, 1000) // segment 2
	c.close()
	// garbage at the start of segment 1 (torn first frame)
	f, _ := os.OpenFile(filepath.Join(dir, "00000001.seg"), os.O_WRONLY, 0)
	f.WriteAt([]byte("garbage!"), 0)
	f.Close()
	c = openCacheAt(t, dir)
	defer c.close()
	c.segMax = 1
	for i := 3; i < 6; i++ {
		mustPut(t, c, i, 1000)
	}
	checkAccounting(t, c)
}

// On a file system that zeroes rather than deallocates a punched range
// (blocks larger than 4 KiB), an evicted frame reads as zeros: the scan
// skips it and keeps the frames after it.
func TestCacheZeroedFrameIsSkipped(t *testing.T) {
	dir := t.TempDir()
	c := openCacheAt(t, dir)
	mustPut(t, c, 1, 1000)
	hb := mustPut(t, c, 2, 1000)
	c.close()
	f, _ := os.OpenFile(filepath.Join(dir, "00000001.seg"), os.O_WRONLY, 0)
	f.WriteAt(make([]byte, cacheAlign), 0) // frame A zeroed, not a hole
	f.Close()
	c = openCacheAt(t, dir)
	defer c.close()
	if !c.has(hb) {
		t.Errorf("chunk B after a zeroed frame was dropped")
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }

// close while puts, reads, removals and limit changes run: nothing
// touches a closed file, and nothing fails.
func TestCacheCloseUnderLoad(t *testing.T) {
	for round := 0; round < 30; round++ {
		var buf syncBuf
		log := slog.New(slog.NewTextHandler(&buf, nil))
		c, err := openChunkCache(t.TempDir(), cacheLimitFor(6, 4000), log)
		if err != nil {
			t.Fatal(err)
		}
		c.refGap = 0
		c.segMax = 3 * cacheCost(4000)
		const chunks = 16
		hs := make([]Hash, chunks)
		data := make([][]byte, chunks)
		for i := range hs {
			hs[i], data[i] = cacheChunk(i, 4000)
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), uint64(round)))
				for {
					select {
					case <-stop:
						return
					default:
					}
					i := r.IntN(chunks)
					switch r.IntN(6) {
					case 0, 1:
						c.put(hs[i], [][]byte{data[i]})
					case 2, 3:
						got, err := c.readAt(hs[i], 0, 4000)
						if err == nil && !sameBytes(got, data[i]) {
							t.Error("wrong bytes")
						}
					case 4:
						c.remove(hs[i])
					case 5:
						c.setLimit(int64(r.IntN(8)) * cacheCost(4000))
					}
				}
			}()
		}
		time.Sleep(time.Duration(5+round) * time.Millisecond)
		c.close()
		time.Sleep(5 * time.Millisecond)
		close(stop)
		wg.Wait()
		if s := buf.b.String(); strings.Contains(s, "bad file") || strings.Contains(s, "cannot") {
			t.Fatalf("round %d: %s", round, s)
		}
	}
}

type wholeRemote struct {
	data []byte
	n    int
}

func (r *wholeRemote) Fetch(ctx context.Context, req FetchRequest, p Partial) ([]byte, error) {
	r.n++
	return r.data, nil
}

// A cached chunk whose data (not its frame) is damaged on disk, as a crash
// can leave it (segments are not fsynced), is dropped and fetched again
// by the read that finds the damage. (Found by review: it used to fail
// every read until evicted.)
func TestDamagedCachedBlockIsFetchedAgain(t *testing.T) {
	s := newTestStore(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 4*BlockSize/16)
	for i := range data {
		data[i] ^= byte(i * 7)
	}
	h := ChunkID(data)
	rem := &wholeRemote{data: data}
	s.SetPartial(true)
	s.SetRemote(rem, 10*time.Second)
	p := make([]byte, 100)
	if err := s.readRange(Origin{}, h, p, 2*BlockSize); err != nil {
		t.Fatal(err)
	}
	if !s.cache.has(h) {
		t.Fatal("not cached")
	}
	s.cache.mu.Lock()
	e := s.cache.entries[h]
	path, off := e.seg.f.Name(), e.off
	s.cache.mu.Unlock()
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	// damage the last 16 KiB of the record: block 3's stored bytes
	f.WriteAt(make([]byte, 100), off+cacheFrameLen+e.n-200)
	f.Close()
	s.bcache = newBlockCache(64 << 20)
	for i := 0; i < 3; i++ {
		if err := s.readRange(Origin{}, h, p, len(data)-150); err != nil || !sameBytes(p, data[len(data)-150:len(data)-50]) {
			t.Fatalf("read %d of the damaged cached chunk: %v (fetches %d)", i, err, rem.n)
		}
	}
	if rem.n != 2 {
		t.Fatalf("%d fetches, want 2 (the first, and one after the damage)", rem.n)
	}
}
