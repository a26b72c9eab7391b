package store

import (
	"container/list"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/y"
	"golang.org/x/sys/unix"
)

// Chunk values start with a codec byte. Compression is used only when it
// saves at least an eighth of the bytes; otherwise the chunk is kept raw.
const (
	codecRaw  = 0
	codecZstd = 1
)

type encodedChunk struct {
	hash  Hash
	codec byte
	data  []byte // stored bytes: the chunk itself when raw
	fresh bool   // not yet in the store
}

// PutChunks stores each chunk that is not already present and returns their
// Refs in order. Hashing and compression run on every core. The chunks are
// durable in Badger's log order before PutChunks returns (invariant 1).
func (s *Store) PutChunks(chunks [][]byte) ([]Ref, error) {
	enc := make([]encodedChunk, len(chunks))
	parallel(len(chunks), func(i int) {
		enc[i].hash = Sum(chunks[i])
		enc[i].fresh = !s.HasChunk(enc[i].hash)
		if enc[i].fresh {
			enc[i].codec, enc[i].data = s.encodeChunk(chunks[i])
		}
	})
	if err := s.writeChunks(enc); err != nil {
		return nil, err
	}
	refs := make([]Ref, len(chunks))
	for i, c := range chunks {
		refs[i] = Ref{enc[i].hash, uint64(len(c))}
	}
	return refs, nil
}

func (s *Store) writeChunks(enc []encodedChunk) error {
	var fresh []encodedChunk
	var hashes []Hash
	var need uint64
	for _, e := range enc {
		if e.fresh {
			fresh, hashes = append(fresh, e), append(hashes, e.hash)
			need += uint64(len(e.data)) + packHeaderSize
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if err := s.checkSpace(need); err != nil {
		return err
	}
	locs, err := s.packs.append(fresh)
	if err != nil {
		return classifyBadger(err)
	}
	kvs := make([]kv, len(hashes))
	for i, h := range hashes {
		kvs[i] = kv{hashKey(pChunk, h), locs[i].encode()}
	}
	return s.writeAsync(kvs)
}

type kv struct{ k, v []byte }

// writeAsync submits a Badger transaction that sets kvs and returns without
// waiting for it. Badger applies commits in the order they are submitted
// (one write channel), so a later Update that references these keys is
// applied after them; a failure is reported by the next Update.
func (s *Store) writeAsync(kvs []kv) error {
	if len(kvs) == 0 {
		return nil
	}
	txn := s.db.NewTransaction(true)
	for _, e := range kvs {
		if err := txn.Set(e.k, e.v); err != nil {
			txn.Discard()
			return s.writeBatch(kvs) // too big for one transaction
		}
	}
	s.async.Add(1)
	txn.CommitWith(func(err error) {
		if err != nil {
			s.asyncErr.CompareAndSwap(nil, &err)
		}
		s.async.Done()
	})
	return nil
}

func (s *Store) writeBatch(kvs []kv) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, e := range kvs {
		if err := wb.Set(e.k, e.v); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("store index: %w", classifyBadger(err))
	}
	return nil
}

// takeAsyncErr returns (and clears) the failure of an earlier writeAsync.
func (s *Store) takeAsyncErr() error {
	if p := s.asyncErr.Swap(nil); p != nil {
		return fmt.Errorf("store index: %w", classifyBadger(*p))
	}
	return nil
}

// encodeChunk returns how to store data: zstd when that saves an eighth,
// else raw (the chunk itself, not a copy). Chunks under 16 KiB (small
// files) are kept raw, and a chunk whose first 64 KiB do not compress is
// taken to be incompressible and not tried whole.
func (s *Store) encodeChunk(data []byte) (byte, []byte) {
	const sample = 64 << 10
	const small = 16 << 10 // zstd costs ~12 µs a call whatever the size: not worth it here
	if len(data) < small || len(data) > 2*sample && !s.pays(data[:sample], nil) {
		return codecRaw, data
	}
	out := s.zenc.EncodeAll(data, make([]byte, 0, len(data)))
	if s.pays(data, out) {
		return codecZstd, out
	}
	return codecRaw, data
}

// pays reports whether compressing data (into out, or trying it when out
// is nil) saves at least an eighth.
func (s *Store) pays(data, out []byte) bool {
	if out == nil {
		out = s.zenc.EncodeAll(data, make([]byte, 0, len(data)))
	}
	return len(out) <= len(data)-len(data)/8
}

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// HasChunk reports whether the chunk is stored (without reading it).
func (s *Store) HasChunk(h Hash) bool {
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(hashKey(pChunk, h))
		return err
	})
	return err == nil
}

// ReadChunk returns a chunk's bytes, verified against its hash. Damage gives
// an error wrapping ErrCorrupt; corrupt bytes are never returned. The result
// is shared and must not be modified.
func (s *Store) ReadChunk(h Hash) ([]byte, error) {
	if b, ok := s.chunks.get(h); ok {
		return b, nil
	}
	raw, err := s.readStored(h)
	if err != nil {
		return nil, err
	}
	data, err := s.decodeChunk(h, raw)
	if err != nil {
		return nil, err
	}
	s.chunks.put(h, data)
	return data, nil
}

// readStored returns a chunk as stored: the codec byte, then its bytes.
func (s *Store) readStored(h Hash) ([]byte, error) {
	b, err := s.getValue(hashKey(pChunk, h))
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", h.Short(), err)
	}
	loc, err := decodeLoc(b)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", h.Short(), err)
	}
	codec, data, err := s.packs.read(h, loc)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", h.Short(), err)
	}
	return append([]byte{codec}, data...), nil
}

func (s *Store) decodeChunk(h Hash, raw []byte) ([]byte, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("chunk %s: %w: empty value", h.Short(), ErrCorrupt)
	}
	data := raw[1:]
	switch raw[0] {
	case codecRaw:
	case codecZstd:
		var err error
		if data, err = s.zdec.DecodeAll(data, nil); err != nil {
			return nil, fmt.Errorf("chunk %s: %w: %w", h.Short(), ErrCorrupt, err)
		}
	default:
		return nil, fmt.Errorf("chunk %s: %w: unknown codec %d", h.Short(), ErrCorrupt, raw[0])
	}
	if Sum(data) != h {
		return nil, fmt.Errorf("chunk %s: %w: hash mismatch", h.Short(), ErrCorrupt)
	}
	return data, nil
}

// classifyBadger marks Badger's checksum failures as corruption and its
// full-disk failures as ErrNoSpace. Badger's y.Wrap formats the cause with
// %+v instead of wrapping it, so the message is all that is left to test.
func classifyBadger(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, y.ErrChecksumMismatch), strings.Contains(msg, "checksum mismatch"),
		strings.Contains(msg, "value corrupted"):
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	case errors.Is(err, syscall.ENOSPC), strings.Contains(msg, "no space left"):
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// checkSpace refuses a write of n bytes that would leave less than the
// reserve free. Badger writes through mmap: running its disk truly full
// would crash the process (SIGBUS) rather than return an error, so geofs
// stops early and reports ENOSPC while the store is still consistent. The
// free space is asked of the kernel at most once a second, and whenever
// the estimate gets within 256 MiB of the reserve.
func (s *Store) checkSpace(n uint64) error {
	s.space.Lock()
	defer s.space.Unlock()
	if time.Since(s.space.at) > time.Second || s.space.free < n+s.reserve+256<<20 {
		var st unix.Statfs_t
		if err := unix.Statfs(s.dir, &st); err != nil {
			return fmt.Errorf("statfs %s: %w", s.dir, err)
		}
		s.space.free, s.space.at = st.Bavail*uint64(st.Bsize), time.Now()
	}
	if s.space.free < n+s.reserve {
		return fmt.Errorf("write %d bytes with %d free: %w", n, s.space.free, ErrNoSpace)
	}
	s.space.free -= n
	return nil
}

// PutManifest stores the manifest tree for refs and returns its root.
// Nodes already present are not written again. Like chunk locations, the
// nodes are written ahead of (and applied before) the version's Update.
func (s *Store) PutManifest(refs []Ref) (Hash, error) {
	if err := s.checkSpace(uint64(len(refs)) * 40); err != nil {
		return Hash{}, err
	}
	var kvs []kv
	root, err := BuildManifest(refs, func(h Hash, node []byte) error {
		if !s.hasKey(hashKey(pNode, h)) {
			kvs = append(kvs, kv{hashKey(pNode, h), node})
		}
		return nil
	})
	if err != nil {
		return Hash{}, err
	}
	return root, s.writeAsync(kvs)
}

func (s *Store) hasKey(k []byte) bool {
	return s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		return err
	}) == nil
}

// ReadNode returns a manifest node's bytes, verified against its hash.
func (s *Store) ReadNode(h Hash) ([]byte, error) {
	b, err := s.getValue(hashKey(pNode, h))
	if err != nil {
		return nil, fmt.Errorf("manifest node %s: %w", h.Short(), err)
	}
	if Sum(b) != h {
		return nil, fmt.Errorf("manifest node %s: %w: hash mismatch", h.Short(), ErrCorrupt)
	}
	return b, nil
}

// Extents returns the flattened content of the manifest rooted at root.
// The result is shared and must not be modified.
func (s *Store) Extents(root Hash) (*Extents, error) {
	if x, ok := s.extents.Get(root); ok {
		return x, nil
	}
	x, err := FlattenManifest(root, s.ReadNode)
	if err != nil {
		return nil, err
	}
	s.extents.Put(root, x)
	return x, nil
}

func (s *Store) getValue(k []byte) ([]byte, error) {
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, classifyBadger(err)
	}
	return v, nil
}

// chunkCache keeps recently read, verified chunks in memory, bounded by bytes.
type chunkCache struct {
	mu    sync.Mutex
	max   int
	size  int
	ll    *list.List
	items map[Hash]*list.Element
}

type cachedChunk struct {
	h    Hash
	data []byte
}

func newChunkCache(max int) *chunkCache {
	return &chunkCache{max: max, ll: list.New(), items: make(map[Hash]*list.Element)}
}

func (c *chunkCache) get(h Hash) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[h]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*cachedChunk).data, true
	}
	return nil, false
}

func (c *chunkCache) put(h Hash, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[h]; ok || len(data) > c.max/4 {
		return
	}
	c.items[h] = c.ll.PushFront(&cachedChunk{h, data})
	c.size += len(data)
	for c.size > c.max {
		last := c.ll.Back()
		cc := c.ll.Remove(last).(*cachedChunk)
		delete(c.items, cc.h)
		c.size -= len(cc.data)
	}
}
