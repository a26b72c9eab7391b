package store

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/geofs/geofs/internal/blockhash"
	"github.com/zeebo/blake3"
)

// goldenInput is 2.5 blocks of bytes that depend on their offset.
func goldenInput() []byte {
	b := make([]byte, 2*BlockSize+BlockSize/2)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// A chunk's id is part of the format (docs/FORMAT.md): it names chunks in
// every store and on every link, so no change of hashing code may move it.
// The value was computed by zeebo/blake3 alone, before the 16-lane kernel.
func TestChunkIDGolden(t *testing.T) {
	const want = "bc3df0a39fd54a57214c8a44bec24e9abf0fda77453359e4833c2bb3246cdc8b"
	if got := ChunkID(goldenInput()); hex.EncodeToString(got[:]) != want {
		t.Fatalf("ChunkID = %s, want %s", hex.EncodeToString(got[:]), want)
	}
}

// Damage in any block of a run that the kernel hashes in one call is
// caught, and named: the first and last block of each core's share, and
// one in the middle.
func TestBatchedVerifyNamesTheDamagedBlock(t *testing.T) {
	s := newTestStore(t)
	data := randBytes(rand.New(rand.NewPCG(3, 4)), 20*BlockSize+100)
	refs, err := s.PutChunks([][]byte{data})
	if err != nil {
		t.Fatal(err)
	}
	h := refs[0].Hash
	b, _ := s.getValue(hashKey(pChunk, h))
	loc, _ := decodeLoc(b)
	f, err := os.OpenFile(s.packs.path(loc.Pack), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, blk := range []int{0, 4, 9, 10, 19} {
		at := int64(loc.Off) + int64(loc.HdrLen) + int64(blk*BlockSize+777)
		var orig [1]byte
		f.ReadAt(orig[:], at)
		f.WriteAt([]byte{orig[0] ^ 0x40}, at)
		s.bcache, s.headers = newBlockCache(1<<20), newLRU[Hash, headerAt](10)
		_, err := s.ReadChunk(h)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("block %d:", blk)) {
			t.Fatalf("damage in block %d: err = %v", blk, err)
		}
		f.WriteAt(orig[:], at)
		s.bcache, s.headers = newBlockCache(1<<20), newLRU[Hash, headerAt](10)
		if got, err := s.ReadChunk(h); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("after repair of block %d: %v", blk, err)
		}
	}
}

// A machine without AVX-512 names chunks the same way: block hashes and
// chunk ids computed by zeebo/blake3 alone equal the store's.
func TestWithoutAVX512SameHashes(t *testing.T) {
	data := randBytes(rand.New(rand.NewPCG(5, 6)), 40*BlockSize+1234)
	slow := make([]Hash, 0, 41)
	for off := 0; off < len(data); off += BlockSize {
		h := blake3.NewDeriveKey(blockContext)
		h.Write(data[off:min(off+BlockSize, len(data))])
		var sum Hash
		h.Sum(sum[:0])
		slow = append(slow, sum)
	}
	if !slices.Equal(blockHashes(data), slow) || ChunkID(data) != rootHash(len(data), slow) {
		t.Fatalf("block hashes or chunk id differ from zeebo/blake3's (kernel in use: %v)", blockhash.Fast())
	}
}

// An empty chunk (which a peer may send: its hash is right) stores and
// reads back.
func TestEmptyChunkReadsBack(t *testing.T) {
	s := newTestStore(t)
	refs, err := s.PutChunks([][]byte{{}})
	if err != nil {
		t.Fatal(err)
	}
	s.bcache, s.headers = newBlockCache(1<<20), newLRU[Hash, headerAt](10)
	if got, err := s.ReadChunk(refs[0].Hash); err != nil || len(got) != 0 {
		t.Fatalf("ReadChunk of an empty chunk: %d bytes, %v", len(got), err)
	}
}
