package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/btree"
)

// Metadata is written behind (docs/DECISIONS.md, "Metadata is written
// behind"). An Update's writes land in the pending set, which readers see
// on top of Badger, and a flush writes the whole set to Badger as one
// transaction a moment later. Operations are acknowledged before Badger
// has them; a crash loses at most the last flushDelay of them, never part
// of one (every flush is atomic and holds whole operations). Sync flushes
// first, so fsync still means durable (invariant 4).
//
// Readers see the pending set over a Badger snapshot taken after the last
// flush was applied, not over a fresh transaction: Badger makes a new
// transaction wait until every commit in flight is applied, and a flush
// in flight is still in the pending set anyway. Keys written outside
// Updates (chunk locations, manifest nodes, acknowledgement cursors, site
// metadata) never enter the pending set and are always read fresh.

// flushDelay is how long written-behind operations wait for company
// before a flush; flushBytes and flushCount bound the pending set well
// inside one Badger transaction (15 % of the 32 MiB memtable).
const (
	flushDelay = time.Millisecond
	flushBytes = 2 << 20
	flushCount = 16 << 10
	// A single Update may not write more than this (Badger's own bound on
	// a transaction, with room to spare); it fails with ErrTxnTooBig.
	maxTxBytes = 4 << 20
	maxTxCount = 32 << 10
)

// pendEntry is the newest write of one key: a value, or a deletion.
type pendEntry struct {
	key string
	val []byte
	del bool
	op  uint64 // the operation that wrote it (pending.ops when added)
}

func pendLess(a, b pendEntry) bool { return a.key < b.key }

// entrySize is what an entry counts against the bounds, as Badger counts
// it against a transaction's: the key, a few bytes of metadata, and the
// value, or for a value that goes to the value log, a pointer to it.
func entrySize(k string, v []byte) int {
	if len(v) >= valueThreshold {
		return len(k) + 16 + 12
	}
	return len(k) + len(v) + 16
}

type pending struct {
	// mu: readers hold it shared for the whole of a read, so that the
	// flush cannot drop entries from under a Badger snapshot that predates
	// them; adding an operation and dropping flushed entries hold it alone.
	mu    sync.RWMutex
	tree  *btree.BTreeG[pendEntry]
	bytes int
	ops   uint64 // operations added so far

	flushMu sync.Mutex // one flush at a time
	timer   *time.Timer
	delay   time.Duration // flushDelay; tests lengthen it
	armed   atomic.Bool   // a flush is scheduled
	closing bool          // under Store.mu: Close has begun; no more Updates
	closed  bool          // under flushMu: Close has flushed for the last time
	snap    *badger.Txn   // read-only, taken after the last flush (under mu)
	failed  atomic.Pointer[error]
}

func newPending() *pending {
	return &pending{tree: btree.NewG(16, pendLess), delay: flushDelay}
}

// txWrite is one write of a Tx, kept apart until the Tx succeeds.
type txWrite struct {
	val []byte
	del bool
}

// addPending makes the writes of one successful operation visible to readers and
// schedules their flush.
func (s *Store) addPending(w map[string]txWrite) {
	p := s.pend
	p.mu.Lock()
	p.ops++
	for k, e := range w {
		if old, ok := p.tree.ReplaceOrInsert(pendEntry{key: k, val: e.val, del: e.del, op: p.ops}); ok {
			p.bytes -= entrySize(old.key, old.val)
		}
		p.bytes += entrySize(k, e.val)
	}
	p.mu.Unlock()
	arm := !p.armed.Swap(true)
	if arm {
		if p.timer == nil {
			p.timer = time.AfterFunc(p.delay, s.flushInBackground)
		} else {
			p.timer.Reset(p.delay)
		}
	}
}

// pendingFull reports whether an operation of n bytes and c writes must
// wait for a flush first, to keep one flush inside Badger's bounds.
func (s *Store) pendingFull(n, c int) bool {
	p := s.pend
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.tree.Len() > 0 && (p.bytes+n > flushBytes || p.tree.Len()+c > flushCount)
}

func (s *Store) flushInBackground() {
	if err := s.flush(false); err != nil {
		s.log.Error("writing metadata to the database failed; the store takes no more changes until it is reopened", "err", err)
	}
}

// Flush writes every pending operation to Badger and returns once they are
// applied (readers then find them there). It does not sync: see Sync.
func (s *Store) Flush() error { return s.flush(true) }

// flush is Flush; a flush that nobody waits for (wait false) does not make
// readers queue behind it (see swapSnapshot).
func (s *Store) flush(wait bool) error {
	p := s.pend
	p.flushMu.Lock()
	defer p.flushMu.Unlock()
	p.armed.Store(false)
	var batch []pendEntry
	p.mu.RLock() // Updates join under the write lock: this is a whole number of them
	p.tree.Ascend(func(e pendEntry) bool {
		batch = append(batch, e)
		return true
	})
	ops := p.ops
	p.mu.RUnlock()
	if len(batch) == 0 {
		return p.pendingFailure()
	}
	// The chunk locations the batch's records name were submitted before
	// them; wait for their outcome, so that no record naming a chunk
	// whose location failed reaches Badger (writeAsync stops the store).
	s.async.wait()
	if err := p.pendingFailure(); err != nil {
		return err
	}
	if p.closed {
		return fmt.Errorf("flush: %w", badger.ErrDBClosed)
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	err := func() error {
		for _, e := range batch {
			var err error
			if e.del {
				err = txn.Delete([]byte(e.key))
			} else {
				err = txn.Set([]byte(e.key), e.val)
			}
			if err != nil {
				return err
			}
		}
		return txn.Commit()
	}()
	if err != nil {
		// The operations were acknowledged; they stay readable from the
		// pending set, but no later change may build on them.
		err = fmt.Errorf("store failed writing metadata (reopen it): %w", classifyBadger(err))
		p.failed.Store(&err)
		return err
	}
	s.swapSnapshot(wait, func() {
		if p.ops == ops { // nothing joined since: the batch is the whole set
			p.tree.Clear(false)
			p.bytes = 0
			return
		}
		for _, e := range batch {
			// An entry rewritten since the batch stays (put back: one
			// walk of the tree in the usual case, not two).
			if cur, ok := p.tree.Delete(e); ok && cur.op != e.op {
				p.tree.ReplaceOrInsert(cur)
			} else if ok {
				p.bytes -= entrySize(e.key, e.val)
			}
		}
	})
	return nil
}

// swapSnapshot takes a new snapshot for readers and, in the same step,
// runs drop (which removes what the snapshot now holds from the pending
// set).
//
// It needs the pending set's lock alone. A reader inside a long
// transaction (a peer's batch) holds it shared, and while a Lock call
// waits, Go's RWMutex makes every new reader wait too; so a background
// flush tries for the lock for up to 10 ms before it queues.
func (s *Store) swapSnapshot(wait bool, drop func()) {
	p := s.pend
	snap := s.db.NewTransaction(false)
	if wait {
		p.mu.Lock()
	} else {
		for i := 0; !p.mu.TryLock(); i++ {
			if i == 500 {
				p.mu.Lock()
				break
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
	old := p.snap
	p.snap = snap
	drop()
	p.mu.Unlock()
	if old != nil {
		old.Discard() // no reader holds it: readers hold mu shared
	}
}

// closePending refuses further Updates and flushes for the last time.
func (s *Store) closePending() error {
	p := s.pend
	s.mu.Lock() // no Update is running, and none will
	p.closing = true
	if p.timer != nil {
		p.timer.Stop()
	}
	s.mu.Unlock()
	err := s.Flush()
	p.flushMu.Lock()
	p.closed = true
	p.flushMu.Unlock()
	p.mu.Lock()
	if p.snap != nil {
		p.snap.Discard()
		p.snap = nil
	}
	p.mu.Unlock()
	return err
}

func (p *pending) pendingFailure() error {
	if err := p.failed.Load(); err != nil {
		return *err
	}
	return nil
}

// stop makes the store take no more changes until it is reopened, after a
// failure that may have lost what it acknowledged (err says what).
func (s *Store) stop(err error) {
	if s.pend.failed.CompareAndSwap(nil, &err) {
		s.log.Error("the store takes no more changes until it is reopened", "err", err)
	}
}

// pendingErr is the failure that stopped the store taking changes.
func (s *Store) pendingErr() error {
	if err := s.pend.failed.Load(); err != nil {
		return *err
	}
	return nil
}

// getter reads one key.
type getter interface {
	// get calls fn with k's value (valid during the call only), or
	// returns badger.ErrKeyNotFound.
	get(k []byte, fn func(v []byte) error) error
}

// txnGetter reads a Badger transaction alone (fsck, which flushes first).
type txnGetter struct{ txn *badger.Txn }

func (g txnGetter) get(k []byte, fn func([]byte) error) error {
	item, err := g.txn.Get(k)
	if err != nil {
		return err
	}
	return item.Value(fn)
}

// viewValue returns a copy of k's value as readers see it (ErrNotFound
// when it has none); getValue is the same for keys written outside
// Updates.
func (s *Store) viewValue(k []byte) ([]byte, error) {
	var b []byte
	err := s.view(func(r *reader) error {
		return r.get(k, func(v []byte) error {
			b = bytes.Clone(v)
			return nil
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	return b, classifyBadger(err)
}

// reader sees the pending set over a Badger snapshot. It is valid inside
// the view call that made it.
type reader struct {
	s   *Store
	p   *pending
	txn *badger.Txn
}

// view runs fn with a reader of everything committed so far.
func (s *Store) view(fn func(r *reader) error) error {
	p := s.pend
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.snap != nil {
		return fn(&reader{s: s, p: p, txn: p.snap})
	}
	return s.db.View(func(txn *badger.Txn) error {
		return fn(&reader{s: s, p: p, txn: txn})
	})
}

// writtenOutside reports whether k is one of the keys written straight to
// Badger, which the snapshot may predate.
func writtenOutside(k []byte) bool {
	switch k[0] {
	case pChunk, pNode, pMeta, pAcked:
		return true
	}
	return false
}

func (r *reader) get(k []byte, fn func([]byte) error) error {
	if writtenOutside(k) {
		return r.s.db.View(func(txn *badger.Txn) error { return txnGetter{txn}.get(k, fn) })
	}
	if r.p.tree.Len() > 0 {
		if e, ok := r.p.tree.Get(pendEntry{key: string(k)}); ok {
			if e.del {
				return badger.ErrKeyNotFound
			}
			return fn(e.val)
		}
	}
	return txnGetter{r.txn}.get(k, fn)
}

// scan calls fn for each key with prefix, in key order, until fn returns
// false or an error; v is valid during the call only. over, when not nil,
// holds writes that hide both the pending set and Badger (a Tx's own).
func (r *reader) scan(prefix []byte, over map[string]txWrite, fn func(k, v []byte) (bool, error)) error {
	pre := string(prefix)
	// The pending entries and a Tx's own writes with the prefix, merged
	// (the Tx's win), in key order.
	var top []pendEntry
	if r.p.tree.Len() > 0 {
		r.p.tree.AscendGreaterOrEqual(pendEntry{key: pre}, func(e pendEntry) bool {
			if !strings.HasPrefix(e.key, pre) {
				return false
			}
			top = append(top, e)
			return true
		})
	}
	if len(over) > 0 {
		top = mergeOver(top, over, pre)
	}
	it := r.txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Rewind()
	for {
		var k []byte
		if it.Valid() {
			k = it.Item().Key()
		}
		if len(top) > 0 && (k == nil || top[0].key <= string(k)) {
			e := top[0]
			top = top[1:]
			if k != nil && e.key == string(k) {
				it.Next() // the pending write hides Badger's
			}
			if e.del {
				continue
			}
			if more, err := fn([]byte(e.key), e.val); !more || err != nil {
				return err
			}
			continue
		}
		if k == nil {
			return nil
		}
		var more bool
		err := it.Item().Value(func(v []byte) error {
			var err error
			more, err = fn(k, v)
			return err
		})
		if err != nil {
			return classifyBadger(err)
		}
		if !more {
			return nil
		}
		it.Next()
	}
}

// mergeOver puts a Tx's own writes with prefix over the pending entries es
// (sorted), keeping key order.
func mergeOver(es []pendEntry, over map[string]txWrite, prefix string) []pendEntry {
	byKey := make(map[string]int, len(es))
	for i, e := range es {
		byKey[e.key] = i
	}
	added := false
	for k, w := range over {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if i, ok := byKey[k]; ok {
			es[i].val, es[i].del = w.val, w.del
			continue
		}
		es = append(es, pendEntry{key: k, val: w.val, del: w.del})
		added = true
	}
	if added {
		slices.SortFunc(es, func(a, b pendEntry) int { return strings.Compare(a.key, b.key) })
	}
	return es
}
