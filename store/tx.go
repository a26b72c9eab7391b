package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/geofs/geofs/internal/hlc"
)

// Tx is one atomic change to the namespace: every version it puts, with
// their index updates, namespace buckets and txlog entries, commits
// together (invariant 2), or none of it does. Its writes are kept apart
// until fn succeeds, then join the pending set that is written behind to
// Badger (pending.go).
type Tx struct {
	s       *Store
	gen0    uint64  // commit generation when the transaction began
	r       *reader // what was committed before it, during fn
	w       map[string]txWrite
	wBytes  int
	op      Op
	now     hlc.Timestamp
	wall    int64 // Unix nanoseconds for directory times
	seq     uint64
	buckets [256]Hash
	puts    []*Version // new heads, in order
	from    SiteID     // the peer whose records Apply applies
	changes []Change   // heads Apply moved, for the mount
	depth   int        // of settle calls (apply.go)

	dirStates   map[FileID]DirState // directory states written, for the cache at commit
	superseded  map[Hash]bool       // records of the batch a later one descends from (apply.go)
	newest      hlc.Timestamp       // the newest stamp time recorded by this transaction
	lazyContent bool                // manifests may be missing (ApplyWithoutContent)
	wrote       bool
	seq0        uint64 // seq when the transaction began

	// Directory entries found in what was committed before the
	// transaction, so that a change that looks a name up and then moves
	// it (unlink, rename) reads it once. Committed state does not move
	// during a transaction, and get consults the transaction's own writes
	// first. (A name found missing is not kept: a create looks it up once.)
	entries map[string][]byte
}

// Update runs fn in a transaction recorded in the txlog as op. Updates are
// serialized. If fn returns an error nothing is committed.
func (s *Store) Update(op Op, fn func(tx *Tx) error) error {
	_, err := s.transact(op, SiteID{}, fn)
	return err
}

// transact runs fn in one serialized Badger transaction and commits it if
// fn wrote anything. from is the peer whose records it applies (zero for a
// local change).
func (s *Store) transact(op Op, from SiteID, fn func(tx *Tx) error) (*Tx, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.pendingErr(); err != nil {
		return nil, err
	}
	if s.pend.closing {
		return nil, fmt.Errorf("%s: %w", op, badger.ErrDBClosed)
	}
	if err := s.checkSpace(4096); err != nil {
		return nil, err
	}
	tx := &Tx{s: s, gen0: s.generation(), op: op, now: s.clock.Now(),
		wall: time.Now().UnixNano(), seq: s.seq, seq0: s.seq, buckets: s.buckets, from: from}
	err := s.view(func(r *reader) error {
		tx.r = r
		defer func() { tx.r = nil }()
		return fn(tx)
	})
	if err != nil {
		return nil, err
	}
	if !tx.wrote {
		return tx, nil
	}
	if s.pendingFull(tx.wBytes, len(tx.w)) {
		if err := s.Flush(); err != nil {
			return nil, fmt.Errorf("commit %s: %w", op, err)
		}
	}
	s.addPending(tx.w)
	var flushErr error
	if from != (SiteID{}) {
		// A peer's records are acknowledged once applied: they must be
		// in Badger, as they were before write-behind, when this returns.
		flushErr = s.Flush()
	}
	s.seq, s.buckets = tx.seq, tx.buckets
	s.newest = max(s.newest, tx.newest)
	s.cacheMu.Lock()
	s.gen++
	for _, v := range tx.puts {
		s.versions.Put(v.ID, v)
	}
	for id, st := range tx.dirStates {
		s.dirStates.Put(id, st)
	}
	s.cacheMu.Unlock()
	if tx.seq != tx.seq0 {
		s.notifyCommit()
	}
	if flushErr != nil {
		// The batch is applied here (readers see it) but not in Badger;
		// the caller still gets its changes, for the mount's caches.
		return tx, fmt.Errorf("commit %s: %w", op, flushErr)
	}
	return tx, nil
}

// Wall is the transaction's wall-clock time in Unix nanoseconds, for the
// times of the versions it makes.
func (tx *Tx) Wall() int64 { return tx.wall }

// Head returns the current version of id as this transaction sees it.
// The result may be shared: Clone it before changing it.
func (tx *Tx) Head(id FileID) (*Version, error) {
	for i := len(tx.puts) - 1; i >= 0; i-- {
		if tx.puts[i].ID == id {
			return tx.puts[i], nil
		}
	}
	return headIn(tx.s, tx, id, tx.gen0)
}

// Lookup returns the file id named name in dir.
func (tx *Tx) Lookup(dir FileID, name string) (FileID, Kind, error) {
	return lookupIn(tx, dir, name)
}

// HasChildren reports whether dir has any entry.
func (tx *Tx) HasChildren(dir FileID) (bool, error) {
	found := false
	err := tx.r.scan(idKey(pDirent, dir), tx.w, func(k, v []byte) (bool, error) {
		found = true
		return false, nil
	})
	return found, err
}

// get reads k as this transaction sees it: its own writes over what was
// committed before it.
func (tx *Tx) get(k []byte, fn func([]byte) error) error {
	if w, ok := tx.w[string(k)]; ok {
		if w.del {
			return badger.ErrKeyNotFound
		}
		return fn(w.val)
	}
	if len(k) == 0 || k[0] != pDirent {
		return tx.r.get(k, fn)
	}
	if b, ok := tx.entries[string(k)]; ok {
		return fn(b)
	}
	var kept []byte
	err := tx.r.get(k, func(b []byte) error {
		kept = bytes.Clone(b) // b is Badger's, valid during the call only
		return fn(kept)
	})
	if err == nil {
		if tx.entries == nil {
			tx.entries = map[string][]byte{}
		}
		tx.entries[string(k)] = kept
	}
	return err
}

// Put commits v as the new current version of v.ID: it sets Prev and Stamp,
// stores the record, moves the head, updates directory entries for changed
// Links, the namespace bucket, and appends a txlog entry.
func (tx *Tx) Put(v *Version) (Hash, error) {
	old, err := tx.Head(v.ID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Hash{}, err
	}
	return tx.put(v, old)
}

// Create commits the first version of a new file id (v.ID must be fresh,
// as NewFileID makes them), without looking for an earlier one.
func (tx *Tx) Create(v *Version) (Hash, error) { return tx.put(v, nil) }

func (tx *Tx) put(v, old *Version) (Hash, error) {
	if old != nil {
		v.Prev = old.storedHash()
	} else {
		v.Prev = Hash{}
	}
	v.Merged = nil
	v.Stamp = Stamp{tx.now, tx.s.site}
	v.Normalize()
	enc := v.Encode()
	h := Sum(enc)
	if err := tx.record(tx.op, v, h, enc); err != nil {
		return Hash{}, err
	}
	return h, tx.advance(v, h, enc, old)
}

// record stores version v (encoded as enc, hash h) and appends its txlog
// entry, without making it any file's head.
func (tx *Tx) record(op Op, v *Version, h Hash, enc []byte) error {
	if err := tx.set(hashKey(pVersion, h), enc); err != nil {
		return err
	}
	tx.seq++
	e := Entry{Seq: tx.seq, Time: v.Stamp.Time, Site: v.Stamp.Site, Op: op, File: v.ID, Version: h}
	// A restarted site's clock starts from the last txlog entry's stamp,
	// which covers every stamp recorded before it unless it is older: a
	// peer's record from a slower clock, a conflict copy keeping its
	// version's stamp. Then the newest stamp goes with it (pStamp), so
	// that no version made after a restart is older than one it follows.
	if newest := max(tx.s.newest, tx.newest); v.Stamp.Time < newest {
		if err := tx.set([]byte{pStamp}, binary.BigEndian.AppendUint64(nil, uint64(newest))); err != nil {
			return err
		}
	} else {
		tx.newest = v.Stamp.Time
	}
	if op != OpMerge && op != OpResolve {
		e.From = tx.from
	}
	v.stored = h
	return tx.set(logKey(e.Seq), e.Encode())
}

// advance makes v (stored under h) the head of v.ID in place of old (nil
// for a new file): the head key, the directory entries of changed links,
// the directory states and the namespace bucket.
func (tx *Tx) advance(v *Version, h Hash, enc []byte, old *Version) error {
	var oldHash Hash
	var oldLinks []Link
	if old != nil {
		oldHash, oldLinks = old.storedHash(), old.Links
	}
	if err := tx.set(idKey(pHead, v.ID), h[:]); err != nil {
		return err
	}
	if err := tx.relink(v, oldLinks); err != nil {
		return err
	}
	for _, l := range v.Links {
		if err := tx.set(direntKey(l.Parent, l.Name), encodeDirent(v, h, enc)); err != nil {
			return err
		}
	}
	if err := tx.updateBucket(v.ID, oldHash, h); err != nil {
		return err
	}
	tx.puts = append(tx.puts, v)
	tx.changes = append(tx.changes, Change{ID: v.ID, Old: oldLinks, New: v.Links})
	return nil
}

// set writes v under k; v must not change afterwards.
func (tx *Tx) set(k, v []byte) error { return tx.write(k, txWrite{val: v}) }

func (tx *Tx) del(k []byte) error { return tx.write(k, txWrite{del: true}) }

func (tx *Tx) write(k []byte, w txWrite) error {
	if tx.w == nil {
		tx.w = map[string]txWrite{}
	}
	key := string(k)
	if old, ok := tx.w[key]; ok {
		tx.wBytes -= entrySize(key, old.val)
	}
	tx.w[key] = w
	tx.wBytes += entrySize(key, w.val)
	tx.wrote = true
	if tx.wBytes > maxTxBytes || len(tx.w) > maxTxCount {
		return fmt.Errorf("%s: %w", tx.op, badger.ErrTxnTooBig)
	}
	return nil
}

func (tx *Tx) updateBucket(id FileID, oldHead, newHead Hash) error {
	b := &tx.buckets[id[0]]
	if !oldHead.IsZero() {
		xorInto(b, bucketTerm(id, oldHead))
	}
	xorInto(b, bucketTerm(id, newHead))
	return tx.set([]byte{pBucket, id[0]}, b[:])
}

// relink removes the directory entries of links v no longer has and updates
// the directory state of every directory that gains or loses an entry.
// (Put then writes an entry, with the new record, for each link of v.)
func (tx *Tx) relink(v *Version, oldLinks []Link) error {
	for _, l := range oldLinks {
		if !slices.Contains(v.Links, l) {
			// Another file may own the name by now (rename exchange).
			if cur, _, err := lookupIn(tx, l.Parent, l.Name); err == nil && cur == v.ID {
				if err := tx.del(direntKey(l.Parent, l.Name)); err != nil {
					return err
				}
			}
			if err := tx.touchDir(l.Parent, v.Kind, -1); err != nil {
				return err
			}
		}
	}
	for _, l := range v.Links {
		if !slices.Contains(oldLinks, l) {
			if err := tx.touchDir(l.Parent, v.Kind, +1); err != nil {
				return err
			}
		}
	}
	return nil
}

// DirState is what a site keeps about a directory outside its versions:
// when its entries last changed, and how many subdirectories it holds (for
// its link count). Entry changes do not make new directory versions, so
// concurrent creates at two sites never conflict on the parent. The mount
// reports the later of this mtime and the version's; an explicit utimens
// sets both.
type DirState struct {
	Mtime, Ctime int64 // Unix nanoseconds
	Subdirs      uint32
}

func (tx *Tx) touchDir(dir FileID, child Kind, delta int) error {
	st, err := tx.dirState(dir)
	if err != nil {
		return err
	}
	st.Mtime, st.Ctime = tx.wall, tx.wall
	if child == KindDir {
		st.Subdirs = uint32(int(st.Subdirs) + delta)
	}
	return tx.putDirState(dir, st)
}

// SetDirMtime records an explicitly set directory mtime (utimens), so that
// it is not overridden by an older entry change.
func (tx *Tx) SetDirMtime(dir FileID, mtime int64) error {
	st, err := tx.dirState(dir)
	if err != nil {
		return err
	}
	st.Mtime = mtime
	return tx.putDirState(dir, st)
}

// dirState returns dir's state as this transaction sees it: its own
// writes, else the cache of committed states (transactions are serialized
// and the cache moves at commit), else the store.
func (tx *Tx) dirState(dir FileID) (DirState, error) {
	if st, ok := tx.dirStates[dir]; ok {
		return st, nil
	}
	if st, ok := tx.s.dirStates.Get(dir); ok {
		return st, nil
	}
	return dirStateIn(tx, dir)
}

func (tx *Tx) putDirState(dir FileID, st DirState) error {
	if tx.dirStates == nil {
		tx.dirStates = map[FileID]DirState{}
	}
	tx.dirStates[dir] = st
	b := binary.AppendVarint(nil, st.Mtime)
	b = binary.AppendVarint(b, st.Ctime)
	b = binary.AppendUvarint(b, uint64(st.Subdirs))
	return tx.set(idKey(pDirState, dir), b)
}

func dirStateIn(g getter, dir FileID) (DirState, error) {
	var st DirState
	err := g.get(idKey(pDirState, dir), func(b []byte) error {
		var n1, n2, n3 int
		st.Mtime, n1 = binary.Varint(b)
		if n1 > 0 {
			st.Ctime, n2 = binary.Varint(b[n1:])
		}
		if n1 > 0 && n2 > 0 {
			var sub uint64
			sub, n3 = binary.Uvarint(b[n1+n2:])
			st.Subdirs = uint32(sub)
		}
		if n1 <= 0 || n2 <= 0 || n3 <= 0 {
			return fmt.Errorf("directory state of %s: %w", dir, ErrCorrupt)
		}
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return DirState{}, nil
	}
	return st, classifyBadger(err)
}

// DirState returns the local state of a directory. States are cached:
// the kernel asks for a directory's attributes after every change in it.
func (s *Store) DirState(dir FileID) (DirState, error) {
	if st, ok := s.dirStates.Get(dir); ok {
		return st, nil
	}
	gen0 := s.generation()
	var st DirState
	err := s.view(func(r *reader) error {
		var err error
		st, err = dirStateIn(r, dir)
		return err
	})
	if err == nil {
		s.fillCache(gen0, func() { s.dirStates.Put(dir, st) })
	}
	return st, err
}

// headIn reads id's current version in txn and caches it, unless a commit
// happened since gen0 (the commit generation from before txn began): a
// reader must never put back a version older than one an Update cached.
func headIn(s *Store, g getter, id FileID, gen0 uint64) (*Version, error) {
	if v, ok := s.versions.Get(id); ok {
		return v, nil
	}
	h, err := headHash(g, id)
	if err != nil {
		return nil, err
	}
	v, err := versionIn(g, h)
	if err != nil {
		return nil, fmt.Errorf("head of %s: %w", id, err)
	}
	s.Remember(v, gen0)
	return v, nil
}

// generation returns the commit generation (see headIn).
func (s *Store) generation() uint64 {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	return s.gen
}

// Generation counts commits. A version read when it had some value is
// still its file's current one if it has not moved since.
func (s *Store) Generation() uint64 { return s.generation() }

// Remember caches v as its file's current version, read when the commit
// generation was gen0, unless a commit happened since (see headIn).
func (s *Store) Remember(v *Version, gen0 uint64) {
	s.fillCache(gen0, func() { s.versions.Put(v.ID, v) })
}

// fillCache runs put, which caches what a reader read when the commit
// generation was gen0, only if no commit happened since: a reader must
// never put back a value older than one a commit cached.
func (s *Store) fillCache(gen0 uint64, put func()) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if s.gen == gen0 {
		put()
	}
}

// headHash reads the hash of id's current version.
func headHash(g getter, id FileID) (Hash, error) {
	var h Hash
	err := g.get(idKey(pHead, id), func(b []byte) error {
		copy(h[:], b)
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return h, fmt.Errorf("file %s: %w", id, ErrNotFound)
	}
	return h, classifyBadger(err)
}

func versionIn(g getter, h Hash) (*Version, error) {
	var b []byte
	err := g.get(hashKey(pVersion, h), func(v []byte) error {
		b = bytes.Clone(v)
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("version %s: %w", h.Short(), ErrNotFound)
	}
	if err != nil {
		return nil, classifyBadger(err)
	}
	if Sum(b) != h {
		return nil, fmt.Errorf("version %s: %w: hash mismatch", h.Short(), ErrCorrupt)
	}
	v, err := DecodeVersion(b)
	if err != nil {
		return nil, fmt.Errorf("version %s: %w: %w", h.Short(), ErrCorrupt, err)
	}
	v.stored = h
	return v, nil
}

func lookupIn(g getter, dir FileID, name string) (FileID, Kind, error) {
	d, err := direntIn(g, dir, name, false)
	return d.ID, d.Kind, err
}

// direntIn reads one directory entry, decoding its record when full.
func direntIn(g getter, dir FileID, name string, full bool) (Dirent, error) {
	var d Dirent
	err := g.get(direntKey(dir, name), func(b []byte) error {
		var err error
		d, err = decodeDirent(name, b, full)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Dirent{}, fmt.Errorf("%q: %w", name, ErrNotFound)
	}
	return d, classifyBadger(err)
}

// A directory entry's value is the child's file id, kind, current version
// hash and encoded current version, rewritten with every new version, so
// that listing a directory and looking up a name each take one read.
func encodeDirent(v *Version, h Hash, enc []byte) []byte {
	b := make([]byte, 0, 16+1+32+len(enc))
	b = append(b, v.ID[:]...)
	b = append(b, byte(v.Kind))
	b = append(b, h[:]...)
	return append(b, enc...)
}

func decodeDirent(name string, b []byte, full bool) (Dirent, error) {
	d := Dirent{Name: name}
	if len(b) < 49 {
		return d, fmt.Errorf("directory entry %q: %w", name, ErrCorrupt)
	}
	copy(d.ID[:], b)
	d.Kind = Kind(b[16])
	copy(d.Hash[:], b[17:49])
	if !d.Kind.known() {
		// Lookups that do not load the record go by this byte alone.
		return d, fmt.Errorf("directory entry %q: %w: unknown kind %d", name, ErrCorrupt, d.Kind)
	}
	if !full {
		return d, nil
	}
	d.record = b[49:]
	_, err := d.Load()
	d.record = nil // b belongs to the caller (a Badger value)
	return d, err
}

// MemSize is about the memory the entry holds, for caches of listings.
func (d *Dirent) MemSize() int { return len(d.Name) + len(d.record) + 128 }

// Load returns the child's current version from the record the entry
// carries, checked against its hash (ReadDir leaves decoding to this, so
// that a listing does not decode records nobody asks for).
func (d *Dirent) Load() (*Version, error) {
	if d.Version != nil {
		return d.Version, nil
	}
	if Sum(d.record) != d.Hash {
		return nil, fmt.Errorf("directory entry %q: %w: record hash mismatch", d.Name, ErrCorrupt)
	}
	v, err := DecodeVersion(d.record)
	if err != nil {
		return nil, fmt.Errorf("directory entry %q: %w: %w", d.Name, ErrCorrupt, err)
	}
	if v.ID != d.ID {
		return nil, fmt.Errorf("directory entry %q: %w: record of another file", d.Name, ErrCorrupt)
	}
	if v.Kind != d.Kind {
		return nil, fmt.Errorf("directory entry %q: %w: record of another kind", d.Name, ErrCorrupt)
	}
	v.stored = d.Hash
	d.Version = v
	return v, nil
}

// Head returns the current version of id. The result is shared: Clone it
// before changing it.
func (s *Store) Head(id FileID) (*Version, error) {
	if v, ok := s.versions.Get(id); ok {
		return v, nil
	}
	gen0 := s.generation()
	var v *Version
	err := s.view(func(r *reader) error {
		var err error
		v, err = headIn(s, r, id, gen0)
		return err
	})
	return v, err
}

// Version returns the version record with hash h, verified.
func (s *Store) Version(h Hash) (*Version, error) {
	var v *Version
	err := s.view(func(r *reader) error {
		var err error
		v, err = versionIn(r, h)
		return err
	})
	return v, err
}

// Lookup returns the file id named name in dir.
func (s *Store) Lookup(dir FileID, name string) (FileID, Kind, error) {
	var id FileID
	var kind Kind
	err := s.view(func(r *reader) error {
		var err error
		id, kind, err = lookupIn(r, dir, name)
		return err
	})
	return id, kind, err
}

// Dirent is one directory entry.
type Dirent struct {
	Name    string
	ID      FileID
	Kind    Kind
	Hash    Hash     // of the child's current version
	Version *Version // the child's current version (from LookupVersion, or Load)
	record  []byte   // its encoding, for Load
}

// ReadDir returns dir's entries in name order from one scan. Each carries
// the child's current version record, decoded by Dirent.Load.
func (s *Store) ReadDir(dir FileID) ([]Dirent, error) { return s.readDir(dir, true) }

// readDir lists dir; without records, its entries have names, ids and
// kinds only (Load fails on them).
func (s *Store) readDir(dir FileID, records bool) ([]Dirent, error) {
	var out []Dirent
	prefix := idKey(pDirent, dir)
	err := s.view(func(r *reader) error {
		return r.scan(prefix, nil, func(k, b []byte) (bool, error) {
			d, err := decodeDirent(string(k[len(prefix):]), b, false)
			if records {
				d.record = bytes.Clone(b[min(49, len(b)):])
			}
			out = append(out, d)
			return err == nil, err
		})
	})
	return out, err
}

// LookupVersion returns the entry name in dir with the child's current
// version, from one read. The version is cached as the child's head (an
// entry carries its child's current record), so that the attributes asked
// for next come from memory.
func (s *Store) LookupVersion(dir FileID, name string) (*Version, error) {
	var d Dirent
	gen0 := s.generation()
	err := s.view(func(r *reader) error {
		var err error
		d, err = direntIn(r, dir, name, true)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.Remember(d.Version, gen0)
	return d.Version, nil
}

// History returns the versions of id, newest first: its head and every
// version the head descends from (through Prev, and through Merged for the
// concurrent versions a merge absorbed).
func (s *Store) History(id FileID) ([]*Version, []Hash, error) {
	var vs []*Version
	var hs []Hash
	err := s.view(func(r *reader) error {
		h, err := headHash(r, id)
		if err != nil {
			return err
		}
		seen := map[Hash]bool{h: true}
		for queue := []Hash{h}; len(queue) > 0; queue = queue[1:] {
			v, err := versionIn(r, queue[0])
			if err != nil {
				return err
			}
			vs, hs = append(vs, v), append(hs, queue[0])
			for _, p := range append([]Hash{v.Prev}, v.Merged...) {
				if !p.IsZero() && !seen[p] {
					seen[p] = true
					queue = append(queue, p)
				}
			}
		}
		return nil
	})
	// Newest first; a version before its ancestors when stamps tie (the
	// records a merge or a resolution makes keep their parent's stamp).
	idx := make([]int, len(vs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(vs[b].Stamp.Time, vs[a].Stamp.Time) })
	outV, outH := make([]*Version, len(vs)), make([]Hash, len(hs))
	for i, j := range idx {
		outV[i], outH[i] = vs[j], hs[j]
	}
	return outV, outH, err
}

// PathOf returns a path of id for messages ("/a/b"), following its first
// link up to the root. Deleted files get "(deleted) " and their id.
func (s *Store) PathOf(id FileID) string {
	return pathOf(id, func(id FileID) *Version {
		v, err := s.Head(id)
		if err != nil {
			return nil
		}
		return v
	})
}

// pathOf builds a path of id from head, which returns nil for a file it
// cannot find, for messages.
func pathOf(id FileID, head func(FileID) *Version) string {
	p, ok := PathVia(id, head)
	if !ok {
		return "(deleted) " + id.String()
	}
	return p
}

// PathVia returns the path of id ("/a/b"; "/" for the root), following
// first links up to the root through head, which returns nil for a file
// it cannot find. ok is false when id is not reachable from the root
// (deleted, unknown here, or in a cycle).
func PathVia(id FileID, head func(FileID) *Version) (path string, ok bool) {
	var parts []string
	for range MaxPathLen {
		if id == RootID {
			slices.Reverse(parts)
			return "/" + strings.Join(parts, "/"), true
		}
		v := head(id)
		if v == nil || len(v.Links) == 0 {
			return "", false
		}
		parts = append(parts, v.Links[0].Name)
		id = v.Links[0].Parent
	}
	return "", false
}
