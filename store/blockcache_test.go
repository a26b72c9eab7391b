package store

import "testing"

// Blocks cached as slices of a larger buffer (their run) count the whole
// run while any of them is cached; a block read a second time is copied
// out of its run; read-ahead checks are not reads.
func TestBlockCacheRuns(t *testing.T) {
	c := newBlockCache(1 << 20)
	data := make([]byte, 4*BlockSize)
	for i := range data {
		data[i] = byte(i)
	}
	k := func(i int) blockKey { return blockKey{Hash{1}, i} }
	block := func(i int) []byte { return data[i*BlockSize : (i+1)*BlockSize] }
	run := newRun(len(data))
	for i := range 4 {
		c.putRun(k(i), block(i), run, false)
	}
	own := make([]byte, BlockSize)
	c.put(k(9), own)
	if want := len(data) + BlockSize; c.size != want {
		t.Fatalf("size %d, want %d (the run counted once, whole)", c.size, want)
	}

	same := func(a, b []byte) bool { return &a[0] == &b[0] }
	if b, ok := c.get(k(1), false); !ok || !same(b, block(1)) { // read-ahead
		t.Fatal("read-ahead check: not the run's block")
	}
	if b, _ := c.get(k(1), true); !same(b, block(1)) {
		t.Fatal("first read copied the block")
	}
	b, _ := c.get(k(1), true) // second read: a copy of its own
	if same(b, block(1)) || string(b) != string(block(1)) {
		t.Fatal("second read did not copy the block out of its run (or changed it)")
	}
	if b2, _ := c.get(k(1), true); !same(b, b2) {
		t.Fatal("a copied block was copied again")
	}
	if want := len(data) + 2*BlockSize; c.size != want {
		t.Fatalf("size %d after the copy, want %d", c.size, want)
	}
	for range 3 {
		if b, _ := c.get(k(9), true); !same(b, own) {
			t.Fatal("a block of its own was copied")
		}
	}

	// A block a reader loaded counts as read once.
	run2 := newRun(2 * BlockSize)
	other := make([]byte, 2*BlockSize)
	c.putRun(blockKey{Hash{2}, 0}, other[:BlockSize], run2, true)
	c.putRun(blockKey{Hash{2}, 1}, other[BlockSize:], run2, true)
	if b, _ := c.get(blockKey{Hash{2}, 0}, true); same(b, other) {
		t.Fatal("a reader-loaded block's next read did not copy it")
	}
}

// The bound counts runs: one block read once and kept while the rest of
// its run was evicted keeps counting the whole run, so many such blocks
// cannot hold more memory than the bound.
func TestBlockCacheBoundCountsRuns(t *testing.T) {
	const runLen = 8 * BlockSize
	c := newBlockCache(4 * runLen)
	for r := range 100 {
		buf := make([]byte, runLen)
		run := newRun(runLen)
		for i := range 8 {
			c.putRun(blockKey{Hash{byte(r)}, i}, buf[i*BlockSize:(i+1)*BlockSize], run, false)
		}
		c.get(blockKey{Hash{byte(r)}, 0}, true) // one block of each run read once
		if c.size > c.max {
			t.Fatalf("run %d: size %d over the bound %d", r, c.size, c.max)
		}
	}
	held := map[*blockRun]bool{}
	sum := 0
	for e := c.ll.Front(); e != nil; e = e.Next() {
		cb := e.Value.(*cachedBlock)
		if cb.run == nil {
			sum += len(cb.data)
		} else if !held[cb.run] {
			held[cb.run] = true
			sum += cb.run.size
		}
	}
	if sum != c.size || sum > c.max {
		t.Fatalf("blocks hold %d bytes, size says %d, bound %d", sum, c.size, c.max)
	}
}
