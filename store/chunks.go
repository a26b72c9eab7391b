package store

import (
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

type kv struct{ k, v []byte }

// writeAsync submits a Badger transaction that sets kvs and returns without
// waiting for it. Badger applies commits in the order they are submitted
// (one write channel), so a later Update that references these keys is
// applied after them. A failure stops the store (Store.stop): no Update
// after it commits, a flush waits for the outcome of the location commits
// submitted before it (so no record naming a chunk whose location failed
// reaches Badger), and Sync reports it. (It used to be reported to the
// next Update alone: a retry then found the chunk in the header cache,
// did not write its location again, and committed a version naming a
// chunk with none.)
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
	n := s.async.start()
	failed := func(err error) {
		s.stop(fmt.Errorf("store index: %w", classifyBadger(err)))
		s.async.end(n)
	}
	if testCommitFail != nil {
		if err, after := testCommitFail(); err != nil {
			txn.Discard()
			go func() {
				<-after
				failed(err)
			}()
			return nil
		}
	}
	txn.CommitWith(func(err error) {
		if err != nil {
			failed(err)
			return
		}
		s.async.end(n)
	})
	return nil
}

// testCommitFail, set by tests, makes writeAsync's commit fail as a failed
// Badger write would: nothing written, the error reported once after is
// closed.
var testCommitFail func() (err error, after <-chan struct{})

// asyncCommits tracks the writeAsync commits in flight, so that Sync can
// wait for those submitted before it while others start.
type asyncCommits struct {
	mu   sync.Mutex
	cond *sync.Cond
	next uint64              // the number of the next commit
	open map[uint64]struct{} // started and not ended
}

func (a *asyncCommits) start() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.open == nil {
		a.open, a.cond = map[uint64]struct{}{}, sync.NewCond(&a.mu)
	}
	n := a.next
	a.next++
	a.open[n] = struct{}{}
	return n
}

func (a *asyncCommits) end(n uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.open, n)
	a.cond.Broadcast()
}

// wait returns once every commit started before the call has ended.
func (a *asyncCommits) wait() {
	a.mu.Lock()
	defer a.mu.Unlock()
	before := a.next
	for a.open != nil && a.oldest() < before {
		a.cond.Wait()
	}
}

// oldest is the number of the oldest commit in flight (next if none).
func (a *asyncCommits) oldest() uint64 {
	o := a.next
	for n := range a.open {
		o = min(o, n)
	}
	return o
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

// classifyBadger marks Badger's checksum failures as corruption and its
// full-disk failures as ErrNoSpace. Badger's y.Wrap formats the cause with
// %+v instead of wrapping it, so the message is all that is left to test.
func classifyBadger(err error) error {
	if err == nil {
		return nil
	}
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
	x, err := FlattenManifest(root, s.nodeReader(root))
	if err != nil {
		return nil, err
	}
	x.Root = root
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
