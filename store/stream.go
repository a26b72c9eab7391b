package store

import (
	"context"
	"fmt"
	"sync"
)

// Chunks travel between sites block by block: the record header first
// (block hashes that hash to the chunk id), then each block, checked on
// arrival. A reader waiting for the start of a fetched chunk gets it after
// one round trip and a block, not after the whole chunk.

// Partial receives a chunk's blocks, verified, as they arrive.
type Partial interface {
	Blocks(n, size int)    // the chunk has n blocks and size bytes (its header checked out)
	Block(i int, b []byte) // block i's plain bytes, checked against its hash
}

// ChunkAssembler checks a chunk arriving block by block.
type ChunkAssembler struct {
	hdr    *chunkHeader
	blocks [][]byte
	got    int
}

// NewChunkAssembler checks header, a chunk record header (as SendChunk
// sends it), against the chunk id want.
func NewChunkAssembler(header []byte, want Hash) (*ChunkAssembler, error) {
	hdr, err := decodeHeader(header, want)
	if err != nil {
		return nil, err
	}
	return &ChunkAssembler{hdr: hdr, blocks: make([][]byte, len(hdr.blocks))}, nil
}

// Blocks is the chunk's number of blocks.
func (a *ChunkAssembler) Blocks() int { return len(a.blocks) }

// Size is the chunk's length.
func (a *ChunkAssembler) Size() int { return a.hdr.size }

// Add checks block i's plain bytes against its hash and keeps them.
func (a *ChunkAssembler) Add(i int, b []byte) error {
	if i < 0 || i >= len(a.blocks) {
		return fmt.Errorf("chunk %s: %w: block %d of %d", a.hdr.id.Short(), ErrCorrupt, i, len(a.blocks))
	}
	if len(b) != a.hdr.blockLen(i) || blockHash(b) != a.hdr.blocks[i].hash {
		return fmt.Errorf("chunk %s block %d: %w: hash mismatch", a.hdr.id.Short(), i, ErrCorrupt)
	}
	if a.blocks[i] == nil {
		a.got++
	}
	a.blocks[i] = b
	return nil
}

// Bytes returns the whole chunk once every block was added.
func (a *ChunkAssembler) Bytes() ([]byte, error) {
	if a.got != len(a.blocks) {
		return nil, fmt.Errorf("chunk %s: %w: %d of %d blocks", a.hdr.id.Short(), ErrCorrupt, a.got, len(a.blocks))
	}
	out := make([]byte, 0, a.hdr.size)
	for _, b := range a.blocks {
		out = append(out, b...)
	}
	return out, nil
}

// SendChunk passes chunk h to head (its record header) and block (each
// block's plain bytes, verified, in order). A chunk this site lacks or
// holds damaged is obtained from peers first when the store has a Remote.
func (s *Store) SendChunk(ctx context.Context, req FetchRequest, head func(hdr []byte) error, block func(i int, b []byte) error) error {
	h := req.Hash
	ha, err := s.header(h)
	if err == nil {
		if err = head(ha.hdr.encode()); err != nil {
			return err
		}
		for from := 0; from < len(ha.hdr.blocks); from += 8 {
			to := min(from+8, len(ha.hdr.blocks))
			bl, err := s.blocks(ha, from, to)
			if err != nil {
				return err // damage found mid-chunk: the caller ends the answer
			}
			for i, b := range bl {
				if err := block(from+i, b); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if !s.fetchable(err) {
		return err
	}
	data, err := s.Obtain(ctx, req)
	if err != nil {
		return err
	}
	leaves := blockHashes(data)
	hdr := &chunkHeader{id: h, size: len(data)}
	for i, l := range leaves {
		hdr.blocks = append(hdr.blocks, blockInfo{stored: uint32(hdr.blockLen(i)), hash: l})
	}
	if err := head(hdr.encode()); err != nil {
		return err
	}
	for i := range leaves {
		if err := block(i, data[i*BlockSize:min((i+1)*BlockSize, len(data))]); err != nil {
			return err
		}
	}
	return nil
}

// fetchCall is one fetch in flight, with the blocks of a chunk as they
// arrive (a Partial), so readers of its start need not wait for its end.
type fetchCall struct {
	done chan struct{}
	data []byte
	err  error

	mu       sync.Mutex
	cond     *sync.Cond
	blocks   [][]byte
	size     int
	finished bool
}

func newFetchCall() *fetchCall {
	c := &fetchCall{done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *fetchCall) Blocks(n, size int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.blocks == nil {
		c.blocks, c.size = make([][]byte, n), size
	}
}

func (c *fetchCall) Block(i int, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < len(c.blocks) && c.blocks[i] == nil {
		c.blocks[i] = b
		c.cond.Broadcast()
	}
}

// finish records the fetch's end and wakes every waiter.
func (c *fetchCall) finish(data []byte, err error) {
	c.data, c.err = data, err
	c.mu.Lock()
	c.finished = true
	c.cond.Broadcast()
	c.mu.Unlock()
	close(c.done)
}

// waitBlocks returns blocks [from, to) and the chunk's size as soon as
// the blocks have all arrived, or nil if the fetch ended first (then data
// and err tell the outcome).
func (c *fetchCall) waitBlocks(from, to int) ([][]byte, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.blocks != nil && to <= len(c.blocks) {
			all := true
			for i := from; i < to && all; i++ {
				all = c.blocks[i] != nil
			}
			if all {
				return c.blocks[from:to], c.size
			}
		}
		if c.finished {
			return nil, 0
		}
		c.cond.Wait()
	}
}
