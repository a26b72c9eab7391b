package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Pinned subtrees (geofs pin): every chunk of the current version of every
// file under a pinned directory (or of a pinned file) is fetched and kept
// out of the cache's eviction. Chunks in packs need no pin; the rest are
// pinned in the cache. Changes that peers bring under a pinned path are
// fetched in the background soon after they are applied. The pinned file
// ids are kept in the site metadata, so pins outlive restarts.

const pinsMeta = "pins"

// pins is the pin state.
type pins struct {
	mu     sync.Mutex    // one pin computation at a time; guards the fields
	chunks map[Hash]bool // chunks pinned in the cache

	kickMu sync.Mutex
	kick   chan struct{} // asks the background re-pinner to run
}

// PinResult says what a pin holds.
type PinResult struct {
	Files   int   `json:"files"`
	Chunks  int   `json:"chunks"`
	Bytes   int64 `json:"bytes"`   // of the files' content
	Fetched int   `json:"fetched"` // chunks fetched from peers to pin them
}

// Pin pins the subtree at path: it fetches what is missing and keeps it
// out of eviction. It fails, pinning nothing new, when a chunk cannot be
// fetched or the pinned data does not fit in the cache.
func (s *Store) Pin(ctx context.Context, path string) (PinResult, error) {
	id, err := s.Resolve(path)
	if err != nil {
		return PinResult{}, err
	}
	s.pin.mu.Lock()
	defer s.pin.mu.Unlock()
	roots := s.pinRoots()
	if !slices.Contains(roots, id) {
		roots = append(roots, id)
	}
	if err := s.repinLocked(ctx, roots); err != nil {
		return PinResult{}, fmt.Errorf("pin %s: %w", path, err)
	}
	if err := s.savePins(roots); err != nil {
		return PinResult{}, err
	}
	return s.pinWalk(ctx, id, func(Hash, bool) error { return nil })
}

// Unpin releases the pin of path (which must be pinned itself, not be
// under a pinned directory).
func (s *Store) Unpin(ctx context.Context, path string) error {
	id, err := s.Resolve(path)
	if err != nil {
		return err
	}
	s.pin.mu.Lock()
	defer s.pin.mu.Unlock()
	roots := s.pinRoots()
	i := slices.Index(roots, id)
	if i < 0 {
		return fmt.Errorf("unpin %s: it is not pinned (pinned: %s): %w", path, s.describePins(roots), ErrNotFound)
	}
	roots = slices.Delete(roots, i, i+1)
	if err := s.savePins(roots); err != nil {
		return err
	}
	if err := s.repinLocked(ctx, roots); err != nil {
		// The unpin holds; the pins left are retried at the next change.
		s.log.Warn("unpinned; the remaining pinned files could not all be fetched", "path", path, "err", err)
	}
	return nil
}

// Pins lists the pinned paths.
func (s *Store) Pins() []string {
	var out []string
	for _, id := range s.pinRoots() {
		out = append(out, s.PathOf(id))
	}
	return out
}

func (s *Store) describePins(roots []FileID) string {
	if len(roots) == 0 {
		return "none"
	}
	var names []string
	for _, id := range roots {
		names = append(names, s.PathOf(id))
	}
	return fmt.Sprint(names)
}

func (s *Store) pinRoots() []FileID {
	b := s.Meta(pinsMeta)
	var out []FileID
	for ; len(b) >= len(FileID{}); b = b[len(FileID{}):] {
		out = append(out, FileID(b[:len(FileID{})]))
	}
	return out
}

func (s *Store) savePins(roots []FileID) error {
	var b []byte
	for _, id := range roots {
		b = append(b, id[:]...)
	}
	return s.SetMeta(pinsMeta, b)
}

// repinLocked pins the chunks under roots and releases those no longer
// under any. New pins are taken before old ones are released, so a chunk
// pinned before and after is never evictable in between.
func (s *Store) repinLocked(ctx context.Context, roots []FileID) error {
	next := map[Hash]bool{}
	release := func(set map[Hash]bool) {
		for h := range set {
			s.cache.unpin(h)
		}
	}
	for _, id := range roots {
		_, err := s.pinWalk(ctx, id, func(h Hash, cached bool) error {
			if !cached || next[h] {
				return nil
			}
			if !s.cache.pin(h) {
				release(next)
				return fmt.Errorf("chunk %s was evicted while pinning: the pinned data does not fit in cache.size %d; raise it with 'geofs config STORE cache.size SIZE'", h.Short(), s.cache.stats().Limit)
			}
			next[h] = true
			return nil
		})
		if errors.Is(err, ErrNotFound) {
			continue // the pinned file is gone: nothing to hold
		}
		if err != nil {
			release(next)
			return err
		}
	}
	release(s.pin.chunks)
	s.pin.chunks = next
	return nil
}

// pinWalk visits every chunk of the current content of the files under
// id, fetching those not here; fn learns whether each is in the cache
// (rather than a pack).
func (s *Store) pinWalk(ctx context.Context, id FileID, fn func(h Hash, cached bool) error) (PinResult, error) {
	var res PinResult
	var walk func(id FileID) error
	walk = func(id FileID) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		v, err := s.Head(id)
		if err != nil {
			return err
		}
		switch v.Kind {
		case KindDir:
			ents, err := s.readDir(id, false)
			if err != nil {
				return err
			}
			for _, e := range ents {
				if err := walk(e.ID); err != nil && !errors.Is(err, ErrNotFound) {
					return err
				}
			}
			return nil
		case KindFile:
		default:
			return nil
		}
		res.Files++
		x, err := s.ContentOf(v)
		if err != nil {
			return fmt.Errorf("%s: %w", s.PathOf(id), err)
		}
		origin := Origin{File: v.ID, Version: v.Hash()}
		for _, r := range x.Refs {
			if r.IsHole() {
				continue
			}
			res.Chunks++
			res.Bytes += int64(r.Len)
			if s.HasChunk(r.Hash) {
				if err := fn(r.Hash, false); err != nil {
					return err
				}
				continue
			}
			if !s.cache.has(r.Hash) {
				if _, err := s.fetch(ctx, FetchRequest{Kind: FetchChunk, Hash: r.Hash, Origin: origin}); err != nil {
					return fmt.Errorf("%s: %w", s.PathOf(id), err)
				}
				res.Fetched++
				if !s.cache.has(r.Hash) {
					return fmt.Errorf("%s: chunk %s does not fit in the cache (cache.size %d; raise it with 'geofs config STORE cache.size SIZE')", s.PathOf(id), r.Hash.Short(), s.cache.stats().Limit)
				}
			}
			if err := fn(r.Hash, true); err != nil {
				return err
			}
		}
		return nil
	}
	err := walk(id)
	return res, err
}

// pinHeld pins the cached chunks of the pinned trees, as far as they are
// here (Open, before the cache enforces its bound; the re-pinner fetches
// the rest once the site has peers).
func (s *Store) pinHeld() {
	s.pin.mu.Lock()
	defer s.pin.mu.Unlock()
	next := map[Hash]bool{}
	for _, id := range s.pinRoots() {
		s.pinWalkLocal(id, func(h Hash) {
			if !next[h] && s.cache.pin(h) {
				next[h] = true
			}
		})
	}
	s.pin.chunks = next
}

// pinWalkLocal calls fn with every cached chunk of the current content of
// the files under id, reading only what is here.
func (s *Store) pinWalkLocal(id FileID, fn func(Hash)) {
	v, err := s.Head(id)
	if err != nil {
		return
	}
	switch v.Kind {
	case KindDir:
		ents, err := s.readDir(id, false)
		if err != nil {
			return
		}
		for _, e := range ents {
			s.pinWalkLocal(e.ID, fn)
		}
	case KindFile:
		x, err := FlattenManifest(v.Content, s.ReadNode)
		if err != nil {
			return
		}
		for _, r := range x.Refs {
			if !r.IsHole() && s.cache.has(r.Hash) {
				fn(r.Hash)
			}
		}
	}
}

// startRepinner re-pins in the background after peers change files, so a
// pinned subtree stays whole. It runs while the store has a Remote.
func (s *Store) startRepinner() {
	s.pin.kickMu.Lock()
	if s.pin.kick != nil {
		s.pin.kickMu.Unlock()
		return
	}
	s.pin.kick = make(chan struct{}, 1)
	kick := s.pin.kick
	s.pin.kickMu.Unlock()
	// Pins from before a restart hold again.
	kick <- struct{}{}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		for range kick {
			time.Sleep(200 * time.Millisecond) // let a burst of changes land
			s.pin.mu.Lock()
			var err error
			if roots := s.pinRoots(); len(roots) > 0 || len(s.pin.chunks) > 0 {
				err = s.repinLocked(s.bgCtx, roots)
			}
			s.pin.mu.Unlock()
			if err != nil {
				s.log.Warn("pinned files could not all be fetched; retrying at the next change", "err", err)
			}
		}
	}()
}

// repinSoon asks the re-pinner to run (after changes from peers).
func (s *Store) repinSoon() {
	s.pin.kickMu.Lock()
	defer s.pin.kickMu.Unlock()
	if s.pin.kick == nil {
		return
	}
	select {
	case s.pin.kick <- struct{}{}:
	default:
	}
}

// stopRepinner ends the background re-pinner.
func (s *Store) stopRepinner() {
	s.pin.kickMu.Lock()
	defer s.pin.kickMu.Unlock()
	if s.pin.kick != nil {
		close(s.pin.kick)
		s.pin.kick = nil
	}
}
