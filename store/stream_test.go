package store

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// partialRemote answers a chunk block by block, waiting for a go-ahead
// between blocks, so a test can watch readers get blocks as they arrive.
type partialRemote struct {
	data []byte
	step chan struct{} // one receive per block sent
}

func (r *partialRemote) Fetch(ctx context.Context, req FetchRequest, p Partial) ([]byte, error) {
	leaves := blockHashes(r.data)
	hd := &chunkHeader{id: req.Hash, size: len(r.data)}
	for i, l := range leaves {
		hd.blocks = append(hd.blocks, blockInfo{stored: uint32(hd.blockLen(i)), hash: l})
	}
	p.Head(hd.encode(), len(leaves), len(r.data))
	for i := range leaves {
		select {
		case <-r.step:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		p.Block(i, r.data[i*BlockSize:min((i+1)*BlockSize, len(r.data))])
	}
	return r.data, nil
}

func TestReadersGetFetchedBlocksAsTheyArrive(t *testing.T) {
	s := newTestStore(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 4*BlockSize/16) // 4 blocks
	h := ChunkID(data)
	rem := &partialRemote{data: data, step: make(chan struct{})}
	s.SetPartial(true)
	s.SetRemote(rem, 10*time.Second)

	// A reader of block 0 gets it after the first block, while the rest
	// of the chunk has not arrived.
	got := make(chan error, 1)
	p := make([]byte, 100)
	go func() { got <- s.readRange(Origin{}, h, p, 10) }()
	rem.step <- struct{}{}
	select {
	case err := <-got:
		if err != nil || !bytes.Equal(p, data[10:110]) {
			t.Fatalf("first block: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reader of block 0 waited for more than block 0")
	}
	// A reader of the last block waits for it; a reader past the end fails.
	var wg sync.WaitGroup
	last := make([]byte, 100)
	var lastErr error
	wg.Go(func() { lastErr = s.readRange(Origin{}, h, last, len(data)-100) })
	for range 3 {
		rem.step <- struct{}{}
	}
	wg.Wait()
	if lastErr != nil || !bytes.Equal(last, data[len(data)-100:]) {
		t.Fatalf("last block: %v", lastErr)
	}
	if err := s.readRange(Origin{}, h, make([]byte, 100), len(data)-50); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read past the end: %v", err)
	}
	// The fetched chunk was kept (in the cache: the site is partial).
	if !s.Holds(FetchRequest{Kind: FetchChunk, Hash: h}) {
		t.Fatal("the fetched chunk was not kept")
	}
}
