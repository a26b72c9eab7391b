package store

// Block codecs. A block is compressed with zstd only when that saves at
// least an eighth of its bytes.
const (
	codecRaw  = 0
	codecZstd = 1
)

// encodedChunk is a chunk ready to append to a pack.
type encodedChunk struct {
	hdr   *chunkHeader
	data  [][]byte // each block's stored bytes
	fresh bool     // not yet in the store
}

// PutChunks stores each chunk that is not already present and returns their
// Refs in order. Hashing and compression run on every core. A chunk is in
// its pack, and its location submitted to Badger ahead of any later Update,
// before PutChunks returns (invariant 1).
func (s *Store) PutChunks(chunks [][]byte) ([]Ref, error) {
	enc := s.encodeChunks(chunks)
	// The new chunks' records are laid out for the pack before the lock
	// (see image); should a batch written meanwhile have stored one of
	// them, writeChunks lays them out again.
	var img *image
	if cand := freshOf(enc, func(Hash) bool { return false }); len(cand) > 0 {
		if img = s.packs.prepareEarly(cand); img != nil {
			defer s.packs.release(img)
		}
	}
	// Deciding what is new and writing it is one step across batches (a
	// rewrite stores two at once, and files are written side by side), so
	// that a chunk that two batches hold is written once; so is a chunk
	// repeated within a batch (a repeated pattern, say).
	s.putMu.Lock()
	err := s.writeChunks(freshOf(enc, s.HasChunk), img)
	s.putMu.Unlock()
	if err != nil {
		return nil, err
	}
	refs := make([]Ref, len(chunks))
	for i, c := range chunks {
		refs[i] = Ref{enc[i].hdr.id, uint64(len(c))}
	}
	return refs, nil
}

// encodeChunks hashes the chunks and, for those not stored yet, decides
// how each block is stored, on every core.
func (s *Store) encodeChunks(chunks [][]byte) []encodedChunk {
	enc := make([]encodedChunk, len(chunks))
	parallel(len(chunks), func(i int) {
		leaves := blockHashes(chunks[i])
		id := rootHash(len(chunks[i]), leaves)
		enc[i].fresh = !s.HasChunk(id)
		enc[i].hdr = &chunkHeader{id: id, size: len(chunks[i])}
		if enc[i].fresh {
			s.encodeBlocks(&enc[i], chunks[i], leaves)
		}
	})
	return enc
}

// encodeBlocks fills in how each block is stored. Chunks under 16 KiB stay
// raw (zstd costs ~12 us a call, whatever the size), and so does a chunk
// whose first block does not compress.
func (s *Store) encodeBlocks(e *encodedChunk, data []byte, leaves []Hash) {
	try := len(data) >= 16<<10
	var off uint32
	for i, h := range leaves {
		b := data[i*BlockSize : min((i+1)*BlockSize, len(data))]
		codec, stored := byte(codecRaw), b
		if try {
			if z := s.zenc.EncodeAll(b, make([]byte, 0, len(b))); len(z) <= len(b)-len(b)/8 {
				codec, stored = codecZstd, z
			} else if i == 0 {
				try = false
			}
		}
		e.hdr.blocks = append(e.hdr.blocks, blockInfo{codec: codec, off: off, stored: uint32(len(stored)), hash: h})
		e.data = append(e.data, stored)
		off += uint32(len(stored))
	}
}

// freshOf returns the chunks of enc to write: those not stored before
// (fresh) nor now (stored), each once.
func freshOf(enc []encodedChunk, stored func(Hash) bool) []encodedChunk {
	var fresh []encodedChunk
	seen := make(map[Hash]bool, len(enc))
	for _, e := range enc {
		if e.fresh && !seen[e.hdr.id] && !stored(e.hdr.id) {
			fresh = append(fresh, e)
		}
		seen[e.hdr.id] = true
	}
	return fresh
}

// writeChunks appends the fresh chunks to a pack, from img when it holds
// exactly them, and indexes them.
func (s *Store) writeChunks(fresh []encodedChunk, img *image) error {
	if len(fresh) == 0 {
		return nil
	}
	var need uint64
	for _, e := range fresh {
		need += uint64(recordFixed + len(e.hdr.blocks)*recordPerBlock + e.hdr.dataLen())
	}
	need += 2 * directAlign // a direct append's alignment and padding
	if err := s.checkSpace(need); err != nil {
		return err
	}
	var locs []chunkLoc
	var err error
	if img != nil && img.holds(fresh) {
		locs, err = s.packs.appendImage(img)
	} else {
		locs, err = s.packs.append(fresh)
	}
	if err != nil {
		return classifyBadger(err)
	}
	kvs := make([]kv, len(fresh))
	for i, e := range fresh {
		kvs[i] = kv{hashKey(pChunk, e.hdr.id), locs[i].encode()}
	}
	if err := s.writeAsync(kvs); err != nil {
		return err
	}
	// Only now may HasChunk say yes (the headers answer it first): an
	// Update that relies on that is submitted after these locations, and
	// Badger applies commits in submission order.
	for i, e := range fresh {
		s.headers.Put(e.hdr.id, headerAt{e.hdr, locs[i]})
		if s.cache != nil && s.cache.has(e.hdr.id) {
			s.cache.remove(e.hdr.id) // it is in a pack now
		}
	}
	return nil
}

// HasChunk reports whether the chunk is stored for good, in a pack
// (without reading it). A chunk only in the cache does not count: a link
// that brings it stores it in a pack, out of eviction's reach.
func (s *Store) HasChunk(h Hash) bool {
	if ha, ok := s.headers.Get(h); ok && ha.loc.Pack != cachePack {
		return true
	}
	return s.hasKey(hashKey(pChunk, h))
}
