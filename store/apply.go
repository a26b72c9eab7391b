package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// Applying versions received from peers.
//
// Apply keeps one invariant beyond those of Update: every version of a file
// this site knows is its head or an ancestor of its head (through Prev and
// Merged). Records are applied only after their parents (a peer sends its
// txlog in order, and the sync layer fetches missing ancestors first), so a
// new record either descends from the head (it becomes the head), or is
// concurrent with it (a merge record becomes the head, merge.go).
//
// After a head moves, the namespace is settled, again by rules that depend
// only on the records, so every site makes the same resolution records:
//   - two files claiming one name: the one with the larger file id moves
//     aside to NAME.conflict-SITE-TIME;
//   - a file in a directory deleted concurrently: the directory stays (a
//     modification beats a delete); so does a deleted directory that still
//     has entries;
//   - concurrent moves that make a directory cycle: the member moved last
//     goes to the root, keeping its name (moved aside if that clashes).

// Incoming is a version record received from a peer, with the operation
// its origin's txlog recorded.
type Incoming struct {
	Op  Op
	Rec []byte // the encoded version, exactly as its origin made it
}

// Change is one head that moved, with the names it had and has: what a
// mount must invalidate.
type Change struct {
	ID       FileID
	Old, New []Link
}

// ApplyResult says what Apply did.
type ApplyResult struct {
	Applied int      // records that were new here
	Known   int      // records this site already had
	Changes []Change // heads that moved, in order
}

// ErrMissing means a record cannot be applied yet: a version it descends
// from, or its content's manifest root, is not here. The error names it.
var ErrMissing = errors.New("missing")

// MissingError names what a record lacks.
type MissingError struct {
	Version Hash // the record
	Need    Hash // the missing parent version or manifest node
	Content bool // Need is a manifest node
}

func (e *MissingError) Error() string {
	what := "parent version"
	if e.Content {
		what = "manifest"
	}
	return fmt.Sprintf("version %s: %s %s %v", e.Version.Short(), what, e.Need.Short(), ErrMissing)
}

func (e *MissingError) Unwrap() error { return ErrMissing }

// PeerCursor is a position in a peer's txlog: the last entry applied here
// and the version it carried (so that a peer whose log was replaced, by a
// restore from backup, is noticed).
type PeerCursor struct {
	Seq     uint64
	Version Hash
}

// Apply applies records received from peer from, in order, in one
// transaction, and records cur as the position in the peer's txlog up to
// which everything has been applied (Cursor). Records already known are skipped, so applying
// twice is harmless. Nothing is committed if any record is malformed or
// lacks a parent (a *MissingError).
func (s *Store) Apply(from SiteID, cur PeerCursor, recs []Incoming) (ApplyResult, error) {
	return s.applyBatch(from, cur, recs, false)
}

// ApplyWithoutContent is Apply for a link that brings version records only
// (metadata-only "versions"): a file version's manifest need not be here;
// readers fetch it from peers when they need it.
func (s *Store) ApplyWithoutContent(from SiteID, cur PeerCursor, recs []Incoming) (ApplyResult, error) {
	return s.applyBatch(from, cur, recs, true)
}

func (s *Store) applyBatch(from SiteID, cur PeerCursor, recs []Incoming, lazy bool) (ApplyResult, error) {
	vs := make([]*Version, len(recs))
	hs := make([]Hash, len(recs))
	for i, in := range recs {
		hs[i] = Sum(in.Rec)
		v, err := DecodeVersion(in.Rec)
		if err != nil {
			return ApplyResult{}, fmt.Errorf("record %s from %s: %w: %w", hs[i].Short(), from, ErrCorrupt, err)
		}
		vs[i] = v
	}
	b := applyParts{s: s, from: from, lazy: lazy, recs: recs, vs: vs, hs: hs}
	res, err := b.apply(0, len(recs), cur)
	if res.Applied > 0 {
		s.repinSoon()
	}
	return res, err
}

// applyParts applies a batch in as few transactions as fit. A batch that
// fits one transaction when its origin wrote it may not fit one here: each
// record is written with its directory entries, log entry and indexes, and
// concurrent ones add a merge record and a conflict copy. A batch too big
// for one transaction is applied in halves (recursively), in order, and
// only the last part records the cursor: after a crash in between, the
// peer sends the batch again and the parts already applied are known.
//
// Each part is applied as a batch of its own, as the sender's batches are:
// every state committed keeps Apply's invariant (each version known is the
// head or its ancestor), whether or not the rest ever comes. Where a part
// ends between a concurrent record and a later one descending from it, the
// first is merged on its own; its merge record, and a conflict copy it may
// keep, go to peers like any other record.
type applyParts struct {
	s    *Store
	from SiteID
	lazy bool
	recs []Incoming
	vs   []*Version
	hs   []Hash
}

// apply applies records [i, j), then records cur (unless it is zero).
func (b *applyParts) apply(i, j int, cur PeerCursor) (ApplyResult, error) {
	res, committed, err := b.applyOne(i, j, cur)
	if committed || !errors.Is(err, badger.ErrTxnTooBig) || j-i < 2 {
		return res, err
	}
	mid := i + (j-i)/2
	first, err := b.apply(i, mid, PeerCursor{})
	if err != nil {
		return first, err
	}
	rest, err := b.apply(mid, j, cur)
	rest.Applied += first.Applied
	rest.Known += first.Known
	rest.Changes = append(first.Changes, rest.Changes...)
	return rest, err
}

// applyOne applies records [i, j) and records cur in one transaction, and
// says whether it committed (it may have, and still fail to flush).
func (b *applyParts) applyOne(i, j int, cur PeerCursor) (ApplyResult, bool, error) {
	// A record that a later record of the part descends from is only
	// recorded: merging it first would make a merge (and maybe a conflict
	// copy) of a state its own site had already moved past.
	superseded := map[Hash]bool{}
	for _, v := range b.vs[i:j] {
		superseded[v.Prev] = true
		for _, m := range v.Merged {
			superseded[m] = true
		}
	}
	var res ApplyResult
	tx, err := b.s.transact(OpMerge, b.from, func(tx *Tx) error {
		tx.superseded = superseded
		tx.lazyContent = b.lazy
		for k := i; k < j; k++ {
			applied, err := tx.apply(b.recs[k], b.vs[k], b.hs[k])
			if err != nil {
				return err
			}
			if applied {
				res.Applied++
			} else {
				res.Known++
			}
		}
		if cur.Seq == 0 {
			return nil
		}
		return tx.set(cursorKey(pCursor, b.from), append(binary.BigEndian.AppendUint64(nil, cur.Seq), cur.Version[:]...))
	})
	if tx == nil {
		return ApplyResult{}, false, err
	}
	// Applied, though maybe not flushed (err): the mount still needs the
	// changes for its caches.
	res.Changes = tx.changes
	return res, true, err
}

// apply applies record in, decoded as v, with hash h.
func (tx *Tx) apply(in Incoming, v *Version, h Hash) (bool, error) {
	if in.Op == 0 || int(in.Op) >= len(opNames) {
		return false, fmt.Errorf("record from %s: %w: unknown op %d", tx.from, ErrCorrupt, in.Op)
	}
	if known, err := tx.has(pVersion, h); known || err != nil {
		return false, err
	}
	if v.ID == RootID && v.Kind != KindDir || v.ID == RootID && (v.Deleted || len(v.Links) > 0) {
		return false, fmt.Errorf("record %s from %s: %w: a root that is not a live directory without links", h.Short(), tx.from, ErrCorrupt)
	}
	for _, p := range append([]Hash{v.Prev}, v.Merged...) {
		if p.IsZero() {
			continue
		}
		if ok, err := tx.has(pVersion, p); !ok || err != nil {
			return false, errors.Join(err, &MissingError{Version: h, Need: p})
		}
	}
	if !v.Content.IsZero() && v.Kind == KindFile && !tx.lazyContent {
		if ok, err := tx.has(pNode, v.Content); !ok || err != nil {
			return false, errors.Join(err, &MissingError{Version: h, Need: v.Content, Content: true})
		}
	}
	tx.s.clock.Update(v.Stamp.Time)
	if err := tx.record(in.Op, v, h, in.Rec); err != nil {
		return false, err
	}
	if tx.superseded[h] {
		// A record a later one of the batch descends from is integrated
		// now only when it follows the head: then the namespace passes
		// through the states its origin's did, in its log's order. (Left
		// for later, a rename-over's move was integrated after the next
		// file took the freed name, and the receiver resolved a name
		// clash its origin never had, then merged the origin's next
		// version with that resolution: a receive-only replica of one
		// writer diverged.) One concurrent with the head is only
		// recorded: merging it would merge a state its site moved past.
		if follows, err := tx.followsHead(v); err != nil || !follows {
			return true, err
		}
	}
	return true, tx.integrate(v, h, in.Rec)
}

// followsHead reports whether v is the first version of a file new here,
// or the successor of the file's head here.
func (tx *Tx) followsHead(v *Version) (bool, error) {
	head, err := tx.Head(v.ID)
	if errors.Is(err, ErrNotFound) {
		return len(v.Merged) == 0, nil
	}
	if err != nil {
		return false, err
	}
	oh := head.storedHash()
	return v.Prev == oh || slices.Contains(v.Merged, oh), nil
}

// integrate makes recorded version v (hash h, encoded enc) part of its
// file's state: the head, when it descends from the head or covers all it
// has seen; nothing, when the head covers it; else the head's merge with it.
func (tx *Tx) integrate(v *Version, h Hash, enc []byte) error {
	old, err := tx.Head(v.ID)
	if errors.Is(err, ErrNotFound) {
		return tx.settle(v, h, enc, nil)
	}
	if err != nil {
		return err
	}
	oh := old.storedHash()
	if oh == h {
		return nil
	}
	if v.Prev == oh || slices.Contains(v.Merged, oh) {
		return tx.settle(v, h, enc, old)
	}
	th, tv := tips(old, oh), tips(v, h)
	t, err := tx.maximal(append(slices.Clone(th), tv...))
	if err != nil {
		return err
	}
	switch {
	case sameSet(t, th):
		return nil // v (a merge) covers nothing the head lacks
	case sameSet(t, tv):
		return tx.settle(v, h, enc, old) // v covers all the head has seen
	}
	return tx.merge(old, t)
}

// tips returns the versions v stands for: the versions a merge merged, or
// v itself.
func tips(v *Version, h Hash) []Hash {
	if len(v.Merged) == 0 {
		return []Hash{h}
	}
	return append([]Hash{v.Prev}, v.Merged...)
}

func sameSet(a, b []Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for _, h := range a {
		if !slices.Contains(b, h) {
			return false
		}
	}
	return true
}

// maximal drops from hs every version that is an ancestor of another (or
// repeated), leaving pairwise concurrent versions, sorted by hash.
func (tx *Tx) maximal(hs []Hash) ([]Hash, error) {
	slices.SortFunc(hs, func(a, b Hash) int { return bytes.Compare(a[:], b[:]) })
	hs = slices.Compact(hs)
	drop := map[Hash]bool{}
	for _, y := range hs {
		err := tx.walkAncestors(y, ancestorLimit, func(a Hash, _ *Version) bool {
			if a != y && slices.Contains(hs, a) {
				drop[a] = true
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	return slices.DeleteFunc(hs, func(h Hash) bool { return drop[h] }), nil
}

// merge makes the merge of the concurrent versions t the head in place of
// old. The merge depends on t alone (not on the merges that led here), so
// every site that merges the same versions writes the same record.
func (tx *Tx) merge(old *Version, t []Hash) error {
	vs := make([]*Version, len(t))
	for i, h := range t {
		var err error
		if vs[i], err = versionIn(tx, h); err != nil {
			return err
		}
	}
	order := make([]int, len(t))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		if wins(vs[i], t[i], vs[j], t[j]) {
			return -1
		}
		return 1
	})
	w, wh := vs[order[0]], t[order[0]]
	m := w.Clone()
	var copies []*Version
	for _, i := range order[1:] {
		base, err := tx.commonAncestor(wh, t[i])
		if err != nil {
			return err
		}
		var conflict bool
		m, conflict = mergeState(base, m, vs[i])
		if conflict && len(vs[i].Links) > 0 && (vs[i].Kind == KindFile || vs[i].Kind == KindLink) {
			copies = append(copies, vs[i])
		}
	}
	m.Prev, m.Merged, m.Stamp = wh, slices.DeleteFunc(slices.Clone(t), func(h Hash) bool { return h == wh }), w.Stamp
	m.Normalize()
	enc := m.Encode()
	mh := Sum(enc)
	if known, err := tx.has(pVersion, mh); err != nil || !known {
		if err != nil {
			return err
		}
		if err := tx.record(OpMerge, m, mh, enc); err != nil {
			return err
		}
	}
	tx.s.log.Info("merged concurrent versions", "path", tx.pathOf(old.ID), "versions", len(t), "winner", stampString(w.Stamp))
	if err := tx.settle(m, mh, enc, old); err != nil {
		return err
	}
	for _, l := range copies {
		if err := tx.conflictCopy(l); err != nil {
			return err
		}
	}
	return nil
}

// conflictCopy keeps the content of l, which lost a merge, as a new file.
func (tx *Tx) conflictCopy(l *Version) error {
	c := conflictCopy(l)
	c.Normalize()
	enc := c.Encode()
	h := Sum(enc)
	if known, err := tx.has(pVersion, h); known || err != nil {
		return err
	}
	if _, err := tx.Head(c.ID); !errors.Is(err, ErrNotFound) {
		return err // the copy exists already, changed since
	}
	if err := tx.record(OpResolve, c, h, enc); err != nil {
		return err
	}
	tx.s.log.Warn("concurrent changes to one file: kept the other version as a conflict copy",
		"path", tx.pathOf(l.ID), "copy", c.Links[0].Name)
	return tx.settle(c, h, enc, nil)
}

// commonAncestor returns the nearest version both a and b descend from: the
// first of b's ancestors, breadth first, among a's mergeWalkLimit nearest;
// nil when there is none. It depends on the records alone, so every site
// finds the same one.
func (tx *Tx) commonAncestor(a, b Hash) (*Version, error) {
	seen := map[Hash]bool{}
	err := tx.walkAncestors(a, mergeWalkLimit, func(h Hash, _ *Version) bool { seen[h] = true; return true })
	if err != nil {
		return nil, err
	}
	var base *Version
	err = tx.walkAncestors(b, mergeWalkLimit, func(h Hash, v *Version) bool {
		if seen[h] {
			base = v
			return false
		}
		return true
	})
	return base, err
}

// walkAncestors visits from and its ancestors breadth first (Prev before
// Merged), at most limit of them, until fn returns false.
func (tx *Tx) walkAncestors(from Hash, limit int, fn func(Hash, *Version) bool) error {
	queue, seen := []Hash{from}, map[Hash]bool{from: true}
	for n := 0; len(queue) > 0 && n < limit; n++ {
		h := queue[0]
		queue = queue[1:]
		v, err := versionIn(tx, h)
		if err != nil {
			return err
		}
		if !fn(h, v) {
			return nil
		}
		for _, p := range append([]Hash{v.Prev}, v.Merged...) {
			if !p.IsZero() && !seen[p] {
				seen[p] = true
				queue = append(queue, p)
			}
		}
	}
	return nil
}

// maxSettle bounds the chain of resolution records one head can cause.
const maxSettle = 64

// settle makes v (hash h, encoded enc) the head of v.ID in place of old,
// first resolving what it would break in the namespace (see the top of the
// file) with resolution records that are the same at every site.
func (tx *Tx) settle(v *Version, h Hash, enc []byte, old *Version) error {
	tx.depth++
	defer func() { tx.depth-- }()
	if tx.depth > maxSettle {
		return fmt.Errorf("settling %s: %w: resolution does not end", tx.pathOf(v.ID), ErrCorrupt)
	}
	if v.Deleted && v.Kind == KindDir {
		if has, err := tx.HasChildren(v.ID); err != nil || has {
			if err != nil {
				return err
			}
			d, err := tx.revive(v, h)
			if err != nil {
				return err
			}
			return tx.derived(d, old)
		}
	}
	for _, l := range v.Links {
		if old != nil && slices.Contains(old.Links, l) {
			continue
		}
		if again, err := tx.settleLink(v, h, l, old); again || err != nil {
			return err
		}
	}
	// Resolving a link may have moved this file's head too (a cycle broken
	// at this directory): then decide again against the new head.
	if cur, err := tx.Head(v.ID); err == nil && (old == nil || cur.storedHash() != old.storedHash()) {
		return tx.integrate(v, h, enc)
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return tx.advance(v, h, enc, old)
}

// settleLink resolves what the new link l of v would break. It returns true
// when it made a successor of v the head instead (settle is then done).
func (tx *Tx) settleLink(v *Version, h Hash, l Link, old *Version) (bool, error) {
	owner, _, err := lookupIn(tx, l.Parent, l.Name)
	if err == nil && owner != v.ID {
		if bytes.Compare(v.ID[:], owner[:]) > 0 {
			return true, tx.derived(renamed(v, h, l), old)
		}
		g, err := tx.Head(owner)
		if err != nil {
			return false, err
		}
		if err := tx.derived(renamed(g, g.storedHash(), l), g); err != nil {
			return false, err
		}
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	p, err := tx.Head(l.Parent)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	if p != nil && p.Deleted {
		d, err := tx.revive(p, p.storedHash())
		if err != nil {
			return false, err
		}
		if err := tx.derived(d, p); err != nil {
			return false, err
		}
	}
	if v.Kind != KindDir {
		return false, nil
	}
	x, err := tx.cycleMember(v, l.Parent)
	if x == nil || err != nil {
		return false, err
	}
	if x.ID == v.ID {
		return true, tx.derived(toRoot(v, h), old)
	}
	return false, tx.derived(toRoot(x, x.storedHash()), x)
}

// derived records resolution record d and settles it as the head in place
// of old.
func (tx *Tx) derived(d *Version, old *Version) error {
	d.Normalize()
	enc := d.Encode()
	h := Sum(enc)
	if err := tx.record(OpResolve, d, h, enc); err != nil {
		return err
	}
	return tx.settle(d, h, enc, old)
}

// revive returns the successor of deleted directory v (hash h) that brings
// it back as it was last alive.
func (tx *Tx) revive(v *Version, h Hash) (*Version, error) {
	live := v
	for i := 0; live.Deleted && !live.Prev.IsZero() && i < ancestorLimit; i++ {
		var err error
		if live, err = versionIn(tx, live.Prev); err != nil {
			return nil, err
		}
	}
	d := derive(v, h)
	d.Deleted = false
	d.Links = slices.Clone(live.Links)
	if len(d.Links) == 0 {
		d.Links = []Link{{RootID, "lost+found." + v.ID.String()[:16]}}
	}
	tx.s.log.Info("kept a directory deleted at another site: it has entries", "path", pathOf(v.ID, tx.headOrNil)+" → "+d.Links[0].Name)
	return d, nil
}

// cycleMember returns, if linking directory v under parent would make a
// cycle, the member of that cycle moved last (highest stamp), else nil.
func (tx *Tx) cycleMember(v *Version, parent FileID) (*Version, error) {
	latest := v
	id := parent
	for range MaxPathLen {
		if id == v.ID {
			tx.s.log.Warn("concurrent moves made a directory cycle: moving one directory to the root", "dir", latest.Links[0].Name)
			return latest, nil
		}
		if id == RootID {
			return nil, nil
		}
		p, err := tx.Head(id)
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if len(p.Links) == 0 {
			return nil, nil
		}
		if p.Stamp.Time > latest.Stamp.Time || p.Stamp.Time == latest.Stamp.Time && bytes.Compare(p.ID[:], latest.ID[:]) > 0 {
			latest = p
		}
		id = p.Links[0].Parent
	}
	return nil, nil
}

// toRoot returns the successor of directory v (hash h) moved to the root
// under its name.
func toRoot(v *Version, h Hash) *Version {
	d := derive(v, h)
	d.Links = []Link{{RootID, v.Links[0].Name}}
	return d
}

func (tx *Tx) has(prefix byte, h Hash) (bool, error) {
	err := tx.get(hashKey(prefix, h), func([]byte) error { return nil })
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, classifyBadger(err)
	}
	return true, nil
}

func (tx *Tx) headOrNil(id FileID) *Version {
	v, err := tx.Head(id)
	if err != nil {
		return nil
	}
	return v
}

func (tx *Tx) pathOf(id FileID) string { return pathOf(id, tx.headOrNil) }

// HasVersion reports whether the version record h is here.
func (s *Store) HasVersion(h Hash) bool {
	_, err := s.viewValue(hashKey(pVersion, h))
	return err == nil
}

// HasNode reports whether the manifest node h is here.
func (s *Store) HasNode(h Hash) bool { return s.hasKey(hashKey(pNode, h)) }

// VersionRecord returns the encoded version record h, verified.
func (s *Store) VersionRecord(h Hash) ([]byte, error) {
	b, err := s.viewValue(hashKey(pVersion, h))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("version %s: %w", h.Short(), ErrNotFound)
	}
	if err == nil && Sum(b) != h {
		return nil, fmt.Errorf("version %s: %w: hash mismatch", h.Short(), ErrCorrupt)
	}
	return b, err
}

// Cursor returns the position in peer's txlog up to which everything was
// applied here (zero: nothing yet).
func (s *Store) Cursor(peer SiteID) PeerCursor {
	var c PeerCursor
	b, err := s.viewValue(cursorKey(pCursor, peer)) // written by Updates (applyBatch)
	if err == nil && len(b) == 40 {
		c.Seq = binary.BigEndian.Uint64(b)
		copy(c.Version[:], b[8:])
	}
	return c
}

// Acked returns the last entry of this site's txlog that peer acknowledged.
func (s *Store) Acked(peer SiteID) uint64 { return s.getU64(cursorKey(pAcked, peer)) }

// SetAcked records that peer acknowledged this site's txlog up to seq.
func (s *Store) SetAcked(peer SiteID, seq uint64) error {
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(cursorKey(pAcked, peer), binary.BigEndian.AppendUint64(nil, seq))
	})
	if err != nil {
		return fmt.Errorf("acknowledged cursor of %s: %w", peer, classifyBadger(err))
	}
	return nil
}

func (s *Store) getU64(key []byte) uint64 {
	var n uint64
	s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			if len(b) == 8 {
				n = binary.BigEndian.Uint64(b)
			}
			return nil
		})
	})
	return n
}

// PutNodes stores manifest nodes received from a peer, each checked to
// decode, keyed by its hash. They are committed when it returns, so an
// Apply after it finds them (invariant 1).
func (s *Store) PutNodes(nodes [][]byte) error {
	var size uint64
	for _, n := range nodes {
		if _, _, err := DecodeNode(n); err != nil {
			return fmt.Errorf("manifest node %s: %w: %w", Sum(n).Short(), ErrCorrupt, err)
		}
		size += uint64(len(n))
	}
	if err := s.checkSpace(size); err != nil {
		return err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, n := range nodes {
		if err := wb.Set(hashKey(pNode, Sum(n)), n); err != nil {
			return classifyBadger(err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("store manifest nodes: %w", classifyBadger(err))
	}
	return nil
}

// Meta returns the site metadata stored under name (nil when none).
func (s *Store) Meta(name string) []byte {
	b, _ := s.getValue(metaKey(name))
	return b
}

// SetMeta stores site metadata under name, durably.
func (s *Store) SetMeta(name string, value []byte) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(metaKey(name), value) }); err != nil {
		return fmt.Errorf("site metadata %s: %w", name, classifyBadger(err))
	}
	return nil
}
