package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Content this site lacks is fetched from peers: on a fog node (whose links
// are metadata-only) every chunk it has not read before, and manifest
// nodes too with "versions" links; on any site, a chunk it held that is
// now missing or damaged. The store asks its Remote (fetch.Fetcher, which
// asks the links) and keeps the answer:
//
//   - a chunk this site held (its location is in Badger) is repaired in
//     place: a new copy appended to a pack, the location moved to it;
//   - a chunk it never held goes to the cache (cache.go), within cache.size;
//   - a manifest node is kept for good (metadata, like version records).
//
// Readers of one item share one fetch. A fetch that no peer answers fails
// after the fetch timeout with ErrUnavailable; zeros are never returned.

// What a fetch asks for.
const (
	FetchChunk = 1
	FetchNode  = 2
)

// Origin names the file version whose content needs an item. A peer checks
// it against the paths its link serves; logs name the file with it.
type Origin struct {
	File    FileID
	Version Hash
}

// FetchRequest asks peers for one item.
type FetchRequest struct {
	Kind   uint8
	Hash   Hash
	Origin Origin
}

func (r FetchRequest) String() string {
	if r.Kind == FetchNode {
		return "manifest node " + r.Hash.Short()
	}
	return "chunk " + r.Hash.Short()
}

// Remote fetches items from peers. The bytes it returns must already be
// checked against the hash asked for. For a chunk, it passes p the blocks
// as they arrive, each checked.
type Remote interface {
	Fetch(ctx context.Context, req FetchRequest, p Partial) ([]byte, error)
}

// ErrUnavailable means content is not here and no peer served it in time.
var ErrUnavailable = errors.New("not here, and no peer could serve it")

// DefaultFetchTimeout bounds a fetch that no peer answers.
const DefaultFetchTimeout = 5 * time.Second

// remote is the store's fetch state.
type remote struct {
	mu      sync.Mutex
	r       Remote
	timeout time.Duration
	flights map[flightKey]*fetchCall
	ahead   chan struct{}         // bounds read-ahead fetches (prefetchRemote)
	failed  map[flightKey]failure // fetches that failed just now
	gen     uint64                // counts links connecting (PeersChanged)
	closing bool                  // Close began: no new fetches
	origins *lru[Hash, Origin]    // content root -> a file version that has it
	stats   FetchStats
	lat     []time.Duration // the latest fetch latencies, a ring
	latN    int
}

// FetchStats counts fetches from peers (see docs/CLI.md, status "cache").
type FetchStats struct {
	Fetches    uint64        `json:"fetches"`       // items fetched from peers
	Bytes      uint64        `json:"fetched_bytes"` // their plain bytes
	Failures   uint64        `json:"fetch_failures"`
	Repaired   uint64        `json:"repaired"` // local chunks replaced by a peer's copy
	Misses     uint64        `json:"-"`        // reads that had to fetch a chunk
	LatencyP50 time.Duration `json:"-"`
	LatencyP99 time.Duration `json:"-"`
}

const latencyRing = 1024

// SetRemote makes the store fetch what it lacks through r, giving up after
// timeout (0: DefaultFetchTimeout).
func (s *Store) SetRemote(r Remote, timeout time.Duration) {
	if timeout <= 0 {
		timeout = DefaultFetchTimeout
	}
	s.rem.mu.Lock()
	s.rem.r, s.rem.timeout = r, timeout
	s.rem.mu.Unlock()
	s.startRepinner()
}

// SetFetchTimeout changes how long a fetch may wait for peers.
func (s *Store) SetFetchTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultFetchTimeout
	}
	s.rem.mu.Lock()
	defer s.rem.mu.Unlock()
	s.rem.timeout = d
}

func (s *Store) remoteSet() bool {
	s.rem.mu.Lock()
	defer s.rem.mu.Unlock()
	return s.rem.r != nil
}

// FetchStats returns the fetch counters and recent latency percentiles.
func (s *Store) FetchStats() FetchStats {
	s.rem.mu.Lock()
	defer s.rem.mu.Unlock()
	st := s.rem.stats
	lat := slices.Clone(s.rem.lat)
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		st.LatencyP50, st.LatencyP99 = lat[n/2], lat[min(n-1, n*99/100)]
	}
	return st
}

// ContentOf returns the extents of file version v's content, fetching
// missing manifest nodes from peers.
func (s *Store) ContentOf(v *Version) (*Extents, error) {
	if v.Kind == KindFile && !v.Content.IsZero() {
		s.rem.origins.Put(v.Content, s.OriginOf(v))
	}
	return s.Extents(v.Content)
}

// OriginOf names, for fetching v's content, the latest version of v's file
// up to v that a peer made: content unchanged since then is the peer's,
// and a peer that serves part of the tree checks a request against a
// version it has (this site's own newer versions may not have reached it).
func (s *Store) OriginOf(v *Version) Origin {
	for i := 0; i < 64 && v.Stamp.Site == s.site && !v.Prev.IsZero(); i++ {
		prev, err := s.Version(v.Prev)
		if err != nil {
			break
		}
		v = prev
	}
	return Origin{File: v.ID, Version: v.Hash()}
}

// originOf returns the file version known to have content root (zero when
// none is known: peers serving only part of the tree will refuse).
func (s *Store) originOf(root Hash) Origin {
	o, _ := s.rem.origins.Get(root)
	return o
}

// fetchable reports whether a failed local read of an item may be answered
// by fetching it.
func (s *Store) fetchable(err error) bool {
	return s.remoteSet() && (errors.Is(err, ErrUnavailable) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotFound))
}

// errHeldNow tells a reader that the chunk it would fetch is in the cache
// now: read it here.
var errHeldNow = errors.New("held here now")

// flightKey names a fetch in flight. A fetch made for a peer (ForPeer)
// carries the peer's forwarding limits, so this site's own readers do not
// share it, nor it theirs.
type flightKey struct {
	h       Hash
	forPeer bool
}

type forPeerKey struct{}

// ForPeer marks ctx as a fetch this site makes to answer a peer.
func ForPeer(ctx context.Context) context.Context {
	return context.WithValue(ctx, forPeerKey{}, true)
}

func keyOf(ctx context.Context, h Hash) flightKey {
	forPeer, _ := ctx.Value(forPeerKey{}).(bool)
	return flightKey{h, forPeer}
}

// fetching reports whether h is being fetched for this site's readers.
func (s *Store) fetching(h Hash) bool {
	s.rem.mu.Lock()
	defer s.rem.mu.Unlock()
	_, ok := s.rem.flights[flightKey{h: h}]
	return ok
}

// Holds reports whether the item req asks for is here (in a pack or the
// cache), without reading it.
func (s *Store) Holds(req FetchRequest) bool {
	if req.Kind == FetchNode {
		return s.HasNode(req.Hash)
	}
	return s.HasChunk(req.Hash) || s.cache.has(req.Hash)
}

// Lacks reports whether content bytes [off, off+n) of x need a chunk that
// is neither in a pack nor in the cache (reading them would fetch).
func (s *Store) Lacks(x *Extents, off, n uint64) bool {
	if !s.remoteSet() || !s.Partial() {
		return false
	}
	for k := x.Find(off); k < len(x.Refs) && x.Offs[k] < off+n; k++ {
		if r := x.Refs[k]; !r.IsHole() && !s.cache.has(r.Hash) && !s.HasChunk(r.Hash) {
			return true
		}
	}
	return false
}

// Obtain returns an item's bytes: read here, or fetched from peers (and
// kept) when it is missing or damaged here. ctx may carry the fetch
// package's forwarding state.
func (s *Store) Obtain(ctx context.Context, req FetchRequest) ([]byte, error) {
	var b []byte
	var err error
	if req.Kind == FetchNode {
		b, err = s.ReadNode(req.Hash)
	} else {
		b, err = s.ReadChunk(req.Hash)
	}
	if err == nil || !s.fetchable(err) {
		return b, err
	}
	if errors.Is(err, ErrCorrupt) {
		s.log.Warn("damaged here: fetching a copy from peers", "item", req.String(), "err", err)
	}
	return s.fetch(ctx, req)
}

// fetch gets req's item from peers, once however many readers ask, keeps
// it and returns its bytes.
func (s *Store) fetch(ctx context.Context, req FetchRequest) ([]byte, error) {
	c := s.flight(ctx, req)
	select {
	case <-c.done:
		if errors.Is(c.err, errHeldNow) {
			return s.ReadChunk(req.Hash)
		}
		return c.data, c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", req, ctx.Err())
	}
}

// failure is a fetch that failed, remembered for failMemory: the kernel
// retries a failed read-ahead read at once, and without this the reader
// would wait out the fetch timeout twice.
type failure struct {
	at  time.Time
	gen uint64 // remote.gen then: a link connected since makes it stale
	err error
}

// PeersChanged tells the store a link connected: fetches that failed
// before may succeed now.
func (s *Store) PeersChanged() {
	s.rem.mu.Lock()
	s.rem.gen++
	s.rem.mu.Unlock()
	s.repinSoon() // pins that could not be fetched may be now
}

const failMemory = time.Second

// flight returns the fetch of req's item in flight, starting it if none
// is. The fetch runs on its own, bounded by the fetch timeout, whoever
// stops waiting for it.
func (s *Store) flight(ctx context.Context, req FetchRequest) *fetchCall {
	s.rem.mu.Lock()
	defer s.rem.mu.Unlock()
	key := keyOf(ctx, req.Hash)
	if c, ok := s.rem.flights[key]; ok {
		return c
	}
	if f, ok := s.rem.failed[key]; ok && time.Since(f.at) < failMemory && f.gen == s.rem.gen {
		c := newFetchCall()
		c.finish(nil, f.err)
		return c
	}
	if req.Kind == FetchChunk && s.cache.has(req.Hash) {
		// Kept by a fetch that ended after the caller's local read failed.
		c := newFetchCall()
		c.finish(nil, errHeldNow)
		return c
	}
	if s.rem.closing {
		c := newFetchCall()
		c.finish(nil, fmt.Errorf("%s: %w: the store is closing", req, ErrUnavailable))
		return c
	}
	c := newFetchCall()
	s.rem.flights[key] = c
	r, timeout := s.rem.r, s.rem.timeout
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.run(context.WithoutCancel(ctx), key, req, c, r, timeout)
	}()
	return c
}

// run fetches req's item for c and keeps it.
func (s *Store) run(ctx context.Context, key flightKey, req FetchRequest, c *fetchCall, r Remote, timeout time.Duration) {
	start := time.Now()
	fctx, cancel := context.WithTimeout(ctx, timeout)
	stop := context.AfterFunc(s.bgCtx, cancel) // Close ends fetches
	data, err := r.Fetch(fctx, req, c)
	stop()
	cancel()
	if err == nil {
		err = s.keep(req, data, c.head())
	}
	if err != nil {
		data = nil
		if !errors.Is(err, ErrUnavailable) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	s.rem.mu.Lock()
	delete(s.rem.flights, key)
	if err != nil {
		s.rem.stats.Failures++
		for h, f := range s.rem.failed {
			if time.Since(f.at) >= failMemory {
				delete(s.rem.failed, h)
			}
		}
		s.rem.failed[key] = failure{time.Now(), s.rem.gen, err}
	} else {
		delete(s.rem.failed, key)
		s.rem.stats.Fetches++
		s.rem.stats.Bytes += uint64(len(data))
		if len(s.rem.lat) < latencyRing {
			s.rem.lat = append(s.rem.lat, time.Since(start))
		} else {
			s.rem.lat[s.rem.latN%latencyRing] = time.Since(start)
		}
		s.rem.latN++
	}
	s.rem.mu.Unlock()
	c.finish(data, err)
}

// keep stores a fetched item (checked against its hash by the Remote; it
// is checked again here, since what is kept must be right).
//
// A chunk that came block by block (header set: its record header, which
// hashes to the chunk id) had each block checked against the header as it
// arrived, so its block hashes are taken from there rather than computed
// a second time.
func (s *Store) keep(req FetchRequest, b []byte, header []byte) error {
	if req.Kind == FetchNode {
		if Sum(b) != req.Hash {
			return fmt.Errorf("%s: %w: fetched bytes do not match", req, ErrCorrupt)
		}
		return s.PutNodes([][]byte{b})
	}
	var leaves []Hash
	if hd, err := decodeHeader(header, req.Hash); err == nil && hd.size == len(b) {
		for _, bl := range hd.blocks {
			leaves = append(leaves, bl.hash)
		}
	} else {
		leaves = blockHashes(b)
	}
	id := rootHash(len(b), leaves)
	if id != req.Hash {
		return fmt.Errorf("%s: %w: fetched bytes do not match", req, ErrCorrupt)
	}
	e := encodedChunk{hdr: &chunkHeader{id: id, size: len(b)}, fresh: true}
	s.encodeBlocks(&e, b, leaves)
	s.warmBlocks(e.hdr, b)
	if s.hasKey(hashKey(pChunk, id)) || !s.Partial() {
		// Held here but damaged or lost: repair in place. (A site without
		// metadata-only links holds every chunk for good.)
		s.headers.Delete(id)
		if err := s.writeChunks([]encodedChunk{e}, nil); err != nil {
			return fmt.Errorf("repair %s: %w", req, err)
		}
		if err := s.packs.sync(); err != nil {
			s.stop(err)
			return fmt.Errorf("repair %s: %w", req, err)
		}
		s.rem.mu.Lock()
		s.rem.stats.Repaired++
		s.rem.mu.Unlock()
		s.log.Info("repaired a damaged chunk with a peer's copy", "chunk", id.Short())
		return nil
	}
	if s.cache == nil {
		return nil
	}
	record := append([][]byte{e.hdr.encode()}, e.data...)
	if _, err := s.cache.put(id, record); err != nil {
		// The reader still gets the bytes; only keeping them failed.
		s.log.Warn("could not keep a fetched chunk in the cache", "chunk", id.Short(), "err", err)
	}
	return nil
}

// warmBlocks puts a fetched chunk's blocks in the block cache, so readers
// get them at once even if the disk cache could not keep the chunk.
func (s *Store) warmBlocks(hd *chunkHeader, b []byte) {
	var run *blockRun // the blocks are slices of b
	if len(hd.blocks) > 1 {
		run = newRun(len(b))
	}
	s.bcache.mu.Lock()
	defer s.bcache.mu.Unlock()
	for i := range hd.blocks {
		s.bcache.putRunLocked(blockKey{hd.id, i}, b[i*BlockSize:min((i+1)*BlockSize, len(b))], run, false)
	}
}

// chunkFor reads whole chunk h of content x, fetching it if need be.
func (s *Store) chunkFor(x *Extents, h Hash) ([]byte, error) {
	b, err := s.ReadChunk(h)
	if err == nil || !s.fetchable(err) {
		return b, err
	}
	return s.fetch(context.Background(), FetchRequest{Kind: FetchChunk, Hash: h, Origin: s.originOf(x.Root)})
}

// nodeReader reads the manifest nodes under root, fetching missing ones.
func (s *Store) nodeReader(root Hash) NodeReader {
	return func(h Hash) ([]byte, error) {
		b, err := s.ReadNode(h)
		if errors.Is(err, ErrNotFound) {
			// A manifest a version references but this site lacks: the
			// content is unavailable here, the file is not missing.
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		if err == nil || !s.fetchable(err) {
			return b, err
		}
		return s.fetch(context.Background(), FetchRequest{Kind: FetchNode, Hash: h, Origin: s.originOf(root)})
	}
}

// stopFetching ends the fetches in flight and waits for them and the
// re-pinner (Close).
func (s *Store) stopFetching() {
	s.rem.mu.Lock()
	s.rem.closing = true
	s.rem.mu.Unlock()
	s.stopRepinner()
	s.bgCancel()
	s.bg.Wait()
}

// SetPartial says whether the site has metadata-only links, so content
// may be missing here by design (fsck counts it rather than report it, and
// fetched chunks go to the cache rather than packs). Open sets it from
// config.yaml; the links manager updates it when links change.
func (s *Store) SetPartial(p bool) { s.partial.Store(p) }

// Partial reports what SetPartial set.
func (s *Store) Partial() bool { return s.partial.Load() }

// PartialLinks reports whether any of links is metadata-only.
func PartialLinks(links []PeerLink) bool {
	for _, l := range links {
		if l.MetadataOnly != MetadataOnlyNone && l.Receives() {
			return true
		}
	}
	return false
}

// SetCacheLimit changes the cache's size bound (config.yaml cache.size),
// evicting at once down to it.
func (s *Store) SetCacheLimit(n int64) { s.cache.setLimit(n) }

// CacheStats describes the chunk cache.
func (s *Store) CacheStats() CacheStats { return s.cache.stats() }
