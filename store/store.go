// Package store is a site's local storage: content-addressed chunks,
// manifests and version records in a Badger database, the per-site
// transaction log, and the namespace merkle root.
//
// # Ordering invariants
//
// These hold for every commit; docs/INVARIANTS.md explains them.
//
//  1. A chunk or manifest node is stored before any record that references
//     it is committed: PutChunks appends to a pack file and indexes it, and
//     PutManifest commits, before the version's transaction. Written data
//     survives a crash of the process as soon as it is written; it survives
//     a crash of the machine once Sync has run (fsync).
//  2. A version record, the head and directory-entry indexes, the namespace
//     buckets and its txlog entry commit in one Badger transaction (Update).
//  3. A record is in the txlog before anything can announce it: the txlog
//     entry is written in the same transaction as the record.
//  4. Sync makes everything committed so far durable; fs calls it in fsync.
//  5. Nothing is ever deleted: old versions stay reachable through Prev.
//     (Retention and garbage collection will have to keep this true.)
package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/klauspost/compress/zstd"

	"github.com/geofs/geofs/internal/hlc"
)

// Store is an open site store. Its methods are safe for concurrent use;
// commits are serialized.
type Store struct {
	dir   string
	db    *badger.DB
	site  SiteID
	clock *hlc.Clock
	// newest is the newest stamp time recorded here (guarded by mu): a
	// restarted site's clock starts past it (see Tx.record).
	newest hlc.Timestamp
	log    *slog.Logger

	mu      sync.Mutex // serializes Update; guards seq and buckets
	seq     uint64     // last txlog sequence number used
	buckets [256]Hash

	cacheMu   sync.Mutex // orders version-cache fills against commits (see headIn)
	gen       uint64     // commit generation, under cacheMu
	versions  *lru[FileID, *Version]
	dirStates *lru[FileID, DirState]
	extents   *lru[Hash, *Extents]
	headers   *lru[Hash, headerAt] // verified chunk headers
	bcache    *blockCache          // verified blocks
	bflight   blockFlight          // block loads in progress

	prefetchers chan struct{} // bounds read-ahead goroutines
	putMu       sync.Mutex    // makes PutChunks' "is it new?" and its write one step

	packs *packs
	cache *chunkCache // chunks fetched from peers
	rem   remote
	pin   pins

	partial atomic.Bool // metadata-only links (SetPartial)

	// Background work (fetches, the re-pinner) runs under bgCtx; Close
	// cancels it and waits for bg.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	zenc *zstd.Encoder
	zdec *zstd.Decoder

	reserve uint64 // free bytes to keep on the disk (see checkSpace)
	space   struct {
		sync.Mutex
		free uint64
		at   time.Time
	}

	newsMu sync.Mutex
	news   chan struct{} // closed at the next txlog commit (Committed)

	async asyncCommits // writeAsync commits in flight

	pend *pending // Updates not yet written to Badger (pending.go)
}

// DBDir is the Badger directory inside a store directory, CacheDir the
// chunk cache's.
const (
	DBDir    = "db"
	CacheDir = "cache"
)

// Open opens the store in dir, which Init made.
func Open(dir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	db, err := openBadger(filepath.Join(dir, DBDir), log)
	if err != nil {
		return nil, err
	}
	s, err := newStore(dir, db, cfg.SiteID, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	if s.packs, err = openPacks(filepath.Join(dir, PackDir)); err != nil {
		db.Close()
		return nil, err
	}
	s.SetPartial(PartialLinks(cfg.Links))
	// The cache opens unbounded until the pinned chunks are known, so that
	// enforcing the bound cannot evict them.
	if s.cache, err = openChunkCache(filepath.Join(dir, CacheDir), math.MaxInt64, log); err != nil {
		s.packs.close()
		db.Close()
		return nil, err
	}
	s.pinHeld()
	s.cache.setLimit(cfg.CacheSize())
	return s, nil
}

// valueThreshold: metadata values under it stay in the LSM tree (chunks
// are in packs); larger ones, such as the record of a file with many
// extended attributes, go to Badger's value log.
const valueThreshold = 1 << 20

func openBadger(path string, log *slog.Logger) (*badger.DB, error) {
	opts := badger.DefaultOptions(path).
		WithLogger(badgerLogger{log}).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(64 << 20).
		WithMemTableSize(32 << 20).
		WithNumVersionsToKeep(1).
		WithDetectConflicts(false). // Update is serialized by Store.mu
		WithCompression(options.None).
		WithBlockCacheSize(64 << 20).
		WithIndexCacheSize(32 << 20)
	db, err := badger.Open(opts)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return db, nil
}

func newStore(dir string, db *badger.DB, site SiteID, log *slog.Logger) (*Store, error) {
	zenc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		return nil, err
	}
	zdec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxChunkLen*2))
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir: dir, db: db, site: site, log: log,
		clock:     &hlc.Clock{},
		versions:  newLRU[FileID, *Version](100_000),
		dirStates: newLRU[FileID, DirState](100_000),
		extents:   newLRU[Hash, *Extents](1024),
		headers:   newLRU[Hash, headerAt](16384),
		bcache:    newBlockCache(64 << 20),
		zenc:      zenc, zdec: zdec,
		reserve: 128 << 20,
		pend:    newPending(),
	}
	s.bflight.calls = map[blockKey]*flightCall{}
	s.rem.flights = map[flightKey]*fetchCall{}
	s.rem.ahead = make(chan struct{}, remoteFetchers)
	s.rem.failed = map[flightKey]failure{}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	s.rem.origins = newLRU[Hash, Origin](4096)
	s.prefetchers = make(chan struct{}, 2)
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// load reads the txlog position, the clock and the namespace buckets.
func (s *Store) load() error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: []byte{pLog}})
		defer it.Close()
		it.Seek(logKey(^uint64(0)))
		if it.Valid() {
			b, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			e, err := DecodeEntry(b)
			if err != nil {
				return fmt.Errorf("last txlog entry: %w: %w", ErrCorrupt, err)
			}
			s.seq = e.Seq
			s.newest = e.Time
		}
		item, err := txn.Get([]byte{pStamp})
		if err == nil {
			b, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(b) != 8 {
				return fmt.Errorf("newest stamp: %w: %d bytes", ErrCorrupt, len(b))
			}
			s.newest = max(s.newest, hlc.Timestamp(binary.BigEndian.Uint64(b)))
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		s.clock.Update(s.newest)
		for i := range s.buckets {
			item, err := txn.Get([]byte{pBucket, byte(i)})
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if _, err := item.ValueCopy(s.buckets[i][:0]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close flushes and closes the database.
func (s *Store) Close() error {
	s.stopFetching()
	s.async.wait()
	ferr := s.closePending()
	s.zenc.Close()
	s.zdec.Close()
	perr := errors.Join(ferr, s.packs.sync())
	if s.cache != nil {
		perr = errors.Join(perr, s.cache.close())
	}
	if err := errors.Join(perr, s.packs.close(), s.db.Close()); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Sync makes every committed change durable (invariant 4).
func (s *Store) Sync() error {
	if err := s.Flush(); err != nil {
		return err
	}
	if err := s.packs.sync(); err != nil {
		s.stop(err)
		return err
	}
	s.async.wait() // the chunk locations written before this call
	if err := s.db.Sync(); err != nil {
		err = fmt.Errorf("sync store: %w", err)
		s.stop(err) // final, as for packs
		return err
	}
	if err := s.syncLogs(); err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	return s.pendingErr() // a location's commit failed, say
}

// syncLogs fsyncs every Badger log file. Badger's Sync syncs the active
// memtable's log and value log only: a memtable that filled up since the
// last Sync waits in a log nobody synced until it is written out as a
// table, and a full value log file is not synced when the next one
// starts. (Badger writes them through mmap; an fsync of the file writes
// back the pages dirtied through the mapping.) Those that are clean cost
// a system call each.
func (s *Store) syncLogs() error {
	dir := filepath.Join(s.dir, DBDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if name := e.Name(); strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog") {
			f, err := os.Open(filepath.Join(dir, name))
			if errors.Is(err, os.ErrNotExist) {
				continue // written out as a table meanwhile (and synced)
			}
			if err != nil {
				return err
			}
			err = f.Sync()
			f.Close()
			if err != nil {
				err = fmt.Errorf("%s: %w", name, err)
				s.stop(err) // final, as for packs
				return err
			}
		}
	}
	return nil
}

// Site returns the site id.
func (s *Store) Site() SiteID { return s.site }

// Dir returns the store directory.
func (s *Store) Dir() string { return s.dir }

// Now returns a fresh hybrid-logical-clock timestamp.
func (s *Store) Now() hlc.Timestamp { return s.clock.Now() }

// NamespaceRoot is the merkle root over every file id's current version:
// equal roots mean equal trees.
func (s *Store) NamespaceRoot() Hash {
	s.mu.Lock()
	defer s.mu.Unlock()
	return rootOf(&s.buckets)
}

// Summary returns the namespace buckets (bucket b covers the file ids whose
// first byte is b) and the txlog position they stand for, read together.
// Two sites with equal bucket b hold the same versions of every file in
// it: a head is committed only after its ancestors.
func (s *Store) Summary() ([256]Hash, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buckets, s.seq
}

func rootOf(b *[256]Hash) Hash {
	buf := make([]byte, 0, 1+256*32)
	buf = append(buf, 'N')
	for _, h := range b {
		buf = append(buf, h[:]...)
	}
	return Sum(buf)
}

// bucketTerm is a file's contribution to its namespace bucket.
func bucketTerm(id FileID, head Hash) Hash {
	var b [48]byte
	copy(b[:], id[:])
	copy(b[16:], head[:])
	return Sum(b[:])
}

func xorInto(dst *Hash, h Hash) {
	for i := range dst {
		dst[i] ^= h[i]
	}
}

// DBSize returns Badger's LSM and value-log sizes in bytes.
func (s *Store) DBSize() (lsm, vlog int64) { return s.db.Size() }

// RunGC runs value-log garbage collection until there is nothing to gain.
func (s *Store) RunGC(ctx context.Context) {
	for ctx.Err() == nil && s.db.RunValueLogGC(0.5) == nil {
	}
}

type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}
func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}
func (b badgerLogger) Debugf(f string, a ...any) {}

// exists reports whether dir holds anything.
func dirEmpty(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	return len(ents) == 0, err
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
