package store

import "testing"

// A block that is a slice of a larger buffer is copied out when it is read
// a second time, so a block in steady use does not keep its neighbours'
// memory alive; read-ahead checks do not count as reads.
func TestBlockCacheSharedBlocks(t *testing.T) {
	c := newBlockCache(1 << 20)
	run := make([]byte, 4*BlockSize)
	for i := range run {
		run[i] = byte(i)
	}
	k := func(i int) blockKey { return blockKey{Hash{1}, i} }
	for i := range 4 {
		c.putShared(k(i), run[i*BlockSize:(i+1)*BlockSize], true)
	}
	own := make([]byte, BlockSize)
	c.put(k(9), own)

	same := func(a, b []byte) bool { return &a[0] == &b[0] }
	b, ok := c.get(k(1), false) // read-ahead
	if !ok || !same(b, run[BlockSize:]) {
		t.Fatal("read-ahead check: not the shared block")
	}
	b, _ = c.get(k(1), true) // first read: still shared
	if !same(b, run[BlockSize:]) {
		t.Fatal("first read copied the block")
	}
	b, _ = c.get(k(1), true) // second read: a copy of its own
	if same(b, run[BlockSize:]) || string(b) != string(run[BlockSize:2*BlockSize]) || len(b) != BlockSize {
		t.Fatal("second read did not copy the block out of its run (or changed it)")
	}
	if b2, _ := c.get(k(1), true); !same(b, b2) {
		t.Fatal("a copied block was copied again")
	}
	for range 3 {
		if b, _ := c.get(k(9), true); !same(b, own) {
			t.Fatal("a block of its own was copied")
		}
	}
	if c.size != 5*BlockSize {
		t.Fatalf("size %d, want %d", c.size, 5*BlockSize)
	}
}
