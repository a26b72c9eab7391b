package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Problem is one piece of damage fsck found.
type Problem struct {
	File     FileID
	Path     string // a path of File, for people
	Issue    string
	Repaired bool // fixed with a peer's copy (FsckRepair)
}

func (p Problem) String() string {
	if p.Repaired {
		return p.Path + ": " + p.Issue + " (repaired from a peer)"
	}
	return p.Path + ": " + p.Issue
}

// FsckStats counts what fsck checked. Remote counts chunks and manifest
// nodes that are not here by design: a site with metadata-only links
// fetches them when they are read.
type FsckStats struct {
	Files, Versions, Nodes, Chunks, Entries int
	ChunkBytes                              int64
	Remote, Repaired                        int
}

// Fsck checks every file's versions (following Prev to the first), their
// manifests and chunks against their hashes, the directory entries against
// the versions' links, the txlog entries, and the namespace root. It reads
// one consistent snapshot, so it may run while the store is in use.
func (s *Store) Fsck(report func(Problem)) (FsckStats, error) {
	return s.FsckRepair(context.Background(), false, report)
}

// FsckRepair is Fsck that, with repair set, replaces each damaged or lost
// chunk or manifest node with a copy fetched from peers (the store needs
// a Remote). A repaired problem is reported with Repaired set.
func (s *Store) FsckRepair(ctx context.Context, repair bool, report func(Problem)) (FsckStats, error) {
	c := &checker{s: s, ctx: ctx, repair: repair && s.remoteSet(), partial: s.Partial(), report: report,
		seenVersion: map[Hash]bool{}, seenNode: map[Hash]bool{}, seenChunk: map[Hash]bool{}}
	if err := s.Flush(); err != nil { // fsck reads Badger alone
		return c.stats, err
	}
	err := s.db.View(func(txn *badger.Txn) error {
		c.txn = txn
		for _, step := range []func() error{c.checkHeads, c.dirents, c.txlog} {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	})
	return c.stats, err
}

type checker struct {
	s       *Store
	ctx     context.Context
	repair  bool
	partial bool // metadata-only links: content may be elsewhere
	txn     *badger.Txn
	report  func(Problem)
	stats   FsckStats

	heads       map[FileID]*Version
	buckets     [256]Hash
	seenVersion map[Hash]bool
	seenNode    map[Hash]bool
	seenChunk   map[Hash]bool
}

func (c *checker) problem(id FileID, format string, args ...any) {
	c.report(Problem{File: id, Path: c.path(id), Issue: fmt.Sprintf(format, args...)})
}

// path names id from the heads read so far.
func (c *checker) path(id FileID) string {
	return pathOf(id, func(id FileID) *Version { return c.heads[id] })
}

// checkHeads loads every current version first (so problems can name paths),
// then checks each file's chain and content.
func (c *checker) checkHeads() error {
	c.heads = map[FileID]*Version{}
	hashes := map[FileID]Hash{}
	err := iterate(c.txn, []byte{pHead}, func(k, v []byte) error {
		var id FileID
		var h Hash
		copy(id[:], k[1:])
		if len(v) != len(h) {
			c.problem(id, "head entry has %d bytes", len(v))
			return nil
		}
		copy(h[:], v)
		hashes[id] = h
		xorInto(&c.buckets[id[0]], bucketTerm(id, h))
		if ver, err := versionIn(txnGetter{c.txn}, h); err == nil {
			c.heads[id] = ver
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id, h := range hashes {
		c.stats.Files++
		c.chain(id, h)
	}
	// Compare with the buckets stored in the same snapshot, not with the
	// store's in-memory ones, which an Update made after the snapshot (on
	// a mounted site) has moved.
	var stored [256]Hash
	for i := range stored {
		err := txnGetter{c.txn}.get([]byte{pBucket, byte(i)}, func(v []byte) error {
			copy(stored[i][:], v)
			return nil
		})
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return classifyBadger(err)
		}
	}
	if rootOf(&c.buckets) != rootOf(&stored) {
		c.report(Problem{Path: "/", Issue: "namespace root does not match the file heads"})
	}
	return nil
}

// chain checks every version of id, from the head back through Prev and
// Merged.
func (c *checker) chain(id FileID, h Hash) {
	c.seenVersion[h] = true
	for queue := []Hash{h}; len(queue) > 0; queue = queue[1:] {
		h := queue[0]
		v, err := versionIn(txnGetter{c.txn}, h)
		if err != nil {
			c.problem(id, "version %s: %v", h.Short(), err)
			continue
		}
		c.stats.Versions++
		if v.ID != id {
			c.problem(id, "version %s belongs to file %s", h.Short(), v.ID)
		}
		if v.Kind == KindFile {
			c.content(id, h, v)
		}
		for _, p := range append([]Hash{v.Prev}, v.Merged...) {
			if !p.IsZero() && !c.seenVersion[p] {
				c.seenVersion[p] = true
				queue = append(queue, p)
			}
		}
	}
}

func (c *checker) content(id FileID, vh Hash, v *Version) {
	if v.Content.IsZero() {
		if v.Size != 0 {
			c.problem(id, "version %s: size %d but no content", vh.Short(), v.Size)
		}
		return
	}
	origin := Origin{File: id, Version: vh}
	x, err := FlattenManifest(v.Content, func(h Hash) ([]byte, error) { return c.node(h, origin) })
	if errors.Is(err, ErrRemote) {
		return
	}
	if err != nil {
		c.problem(id, "version %s: manifest: %v", vh.Short(), err)
		return
	}
	if x.Size != v.Size {
		c.problem(id, "version %s: size %d but content holds %d bytes", vh.Short(), v.Size, x.Size)
	}
	if !v.format1 && x.Data() != v.Alloc {
		c.problem(id, "version %s: %d bytes allocated but content holds %d bytes of data", vh.Short(), v.Alloc, x.Data())
	}
	for _, r := range x.Refs {
		if !r.IsHole() {
			c.chunk(id, vh, r)
		}
	}
}

// ErrRemote marks content that is not here by design (metadata-only
// links): fsck counts it and goes on.
var ErrRemote = errors.New("not here: fetched when read")

func (c *checker) node(h Hash, origin Origin) ([]byte, error) {
	b, err := c.s.ReadNode(h)
	if errors.Is(err, ErrNotFound) && c.partial {
		c.stats.Remote++
		return nil, ErrRemote
	}
	if err != nil && c.repair {
		if _, ferr := c.s.fetch(c.ctx, FetchRequest{Kind: FetchNode, Hash: h, Origin: origin}); ferr == nil {
			c.report(Problem{File: origin.File, Path: c.path(origin.File), Issue: fmt.Sprintf("version %s: manifest node %s: %v", origin.Version.Short(), h.Short(), err), Repaired: true})
			c.stats.Repaired++
			b, err = c.s.ReadNode(h)
		}
	}
	if err == nil && !c.seenNode[h] {
		c.seenNode[h] = true
		c.stats.Nodes++
	}
	return b, err
}

func (c *checker) chunk(id FileID, vh Hash, r Ref) {
	if c.seenChunk[r.Hash] {
		return
	}
	c.seenChunk[r.Hash] = true
	held := c.s.HasChunk(r.Hash)
	data, err := c.s.readChunkUncached(r.Hash)
	if err == nil && uint64(len(data)) != r.Len {
		err = fmt.Errorf("%w: %d bytes, manifest says %d", ErrCorrupt, len(data), r.Len)
	}
	if err != nil && !held && c.partial {
		c.stats.Remote++ // not here, or a damaged cache copy (dropped): fetched when read
		return
	}
	if err != nil && c.repair {
		if _, ferr := c.s.fetch(c.ctx, FetchRequest{Kind: FetchChunk, Hash: r.Hash, Origin: Origin{File: id, Version: vh}}); ferr == nil {
			c.report(Problem{File: id, Path: c.path(id), Issue: fmt.Sprintf("version %s: %v", vh.Short(), err), Repaired: true})
			c.stats.Repaired++
			err = nil
		} else {
			err = fmt.Errorf("%w (repair failed: %w)", err, ferr)
		}
	}
	if err != nil {
		c.problem(id, "version %s: %v", vh.Short(), err)
		return
	}
	c.stats.Chunks++
	c.stats.ChunkBytes += int64(r.Len)
}

func missing(err error) error {
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	return classifyBadger(err)
}

// dirents checks that directory entries and links agree both ways.
func (c *checker) dirents() error {
	seen := map[Link]bool{}
	err := iterate(c.txn, []byte{pDirent}, func(k, val []byte) error {
		var parent, child FileID
		copy(parent[:], k[1:17])
		name := string(k[17:])
		c.stats.Entries++
		d, err := decodeDirent(name, val, true)
		if err != nil {
			c.problem(parent, "%v", err)
			return nil
		}
		child = d.ID
		seen[Link{parent, name}] = true
		v := c.heads[child]
		if v == nil || !v.HasLink(parent, name) {
			c.problem(parent, "entry %q names file %s, which does not link back", name, child)
		} else if d.Hash != v.Hash() {
			c.problem(child, "entry %q holds version %s, not the current %s", name, d.Hash.Short(), v.Hash().Short())
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id, v := range c.heads {
		for _, l := range v.Links {
			if !seen[l] {
				c.problem(id, "link %q in %s has no directory entry", l.Name, l.Parent)
			}
		}
	}
	return nil
}

// txlog checks that entries decode, are in order, and name known versions.
func (c *checker) txlog() error {
	var last uint64
	return iterate(c.txn, []byte{pLog}, func(k, v []byte) error {
		e, err := DecodeEntry(v)
		if err != nil {
			c.report(Problem{Path: "(txlog)", Issue: fmt.Sprintf("entry %x: %v", k[1:], err)})
			return nil
		}
		if e.Seq <= last {
			c.report(Problem{Path: "(txlog)", Issue: fmt.Sprintf("entry %d out of order", e.Seq)})
		}
		last = e.Seq
		if _, err := c.txn.Get(hashKey(pVersion, e.Version)); err != nil {
			c.problem(e.File, "txlog entry %d: version %s: %v", e.Seq, e.Version.Short(), missing(err))
		}
		return nil
	})
}

func iterate(txn *badger.Txn, prefix []byte, fn func(k, v []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return classifyBadger(err)
		}
		if err := fn(it.Item().KeyCopy(nil), v); err != nil {
			return err
		}
	}
	return nil
}
