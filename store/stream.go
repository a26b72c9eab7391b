package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Chunks travel between sites block by block: the record header first
// (block hashes that hash to the chunk id), then each block, checked on
// arrival. A reader waiting for the start of a fetched chunk gets it after
// one round trip and a block, not after the whole chunk.

// Partial receives a chunk's blocks, verified, as they arrive.
type Partial interface {
	Head(header []byte, blocks, size int) // the chunk's record header (checked against its id), its block count and length
	Block(i int, b []byte)                // block i's plain bytes, checked against its hash
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
	var data []byte
	if err == nil {
		// Verified whole before the header goes out: damage found here
		// is fetched from peers below, not discovered mid-answer.
		data, err = s.readWhole(ha)
	}
	if err == nil {
		if err := head(ha.hdr.encode()); err != nil {
			return err
		}
		for i := range ha.hdr.blocks {
			if err := block(i, data[i*BlockSize:min((i+1)*BlockSize, len(data))]); err != nil {
				return err
			}
		}
		return nil
	}
	if !s.fetchable(err) {
		return err
	}
	// Not here, or damaged: pass the blocks on as the fetch brings them.
	c := s.flight(ctx, req)
	hdr, n := c.waitHead()
	if hdr == nil {
		<-c.done
		if errors.Is(c.err, errHeldNow) {
			return s.SendChunk(ctx, req, head, block) // kept meanwhile: send it from here
		}
		return c.err
	}
	if err := head(hdr); err != nil {
		return err
	}
	for i := range n {
		bl, _ := c.waitBlocks(i, i+1)
		if bl == nil {
			<-c.done
			if c.err == nil {
				// (c is shared with the fetch's other waiters: not
				// written here.)
				return fmt.Errorf("chunk %s: %w: block %d missing", h.Short(), ErrCorrupt, i)
			}
			return c.err
		}
		if err := block(i, bl[0]); err != nil {
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
	header   []byte
	blocks   [][]byte // len set by Head; fixed after
	size     int
	finished bool
}

func newFetchCall() *fetchCall {
	c := &fetchCall{done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *fetchCall) Head(header []byte, blocks, size int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.header == nil {
		c.header, c.blocks, c.size = header, make([][]byte, blocks), size
		c.cond.Broadcast()
	}
}

// head returns the chunk's record header, if it came block by block.
func (c *fetchCall) head() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.header
}

// waitHead returns the chunk's record header and block count once they
// arrived, or nil if the fetch ended first.
func (c *fetchCall) waitHead() ([]byte, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.header == nil && !c.finished {
		c.cond.Wait()
	}
	return c.header, len(c.blocks)
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
