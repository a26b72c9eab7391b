package store

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestReviewHeadCacheGoesStale: Store.Head runs without Store.mu. On a cache
// miss (an LRU eviction, or the first access after opening the store) it
// reads the head in a Badger read transaction and then Puts what it read
// into s.versions. If an Update of the same file commits (and Puts its new
// version into the cache) between the read snapshot and that Put, the older
// version overwrites the newer one and stays cached. Every later Tx.Head
// then starts from the stale version: the next Put records a wrong Prev
// (forking history), drops the changes of the lost version (links, content,
// attributes) and XORs a hash out of the namespace bucket that is no longer
// in it.
//
// The eviction is simulated with s.versions.Delete; the test then just runs
// Head and Update concurrently and compares the cache with the database.
func TestReviewHeadCacheGoesStale(t *testing.T) {
	s := newTestStore(t)
	id := NewFileID()
	if err := s.Update(OpCreate, func(tx *Tx) error {
		_, err := tx.Create(&Version{ID: id, Kind: KindFile, Links: []Link{{RootID, "f"}}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// readers: stat the file over and over, each time after an eviction.
	startReaders := func() (stop func()) {
		var done atomic.Bool
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for !done.Load() {
					s.versions.Delete(id)
					s.Head(id)
				}
			})
		}
		return func() { done.Store(true); wg.Wait() }
	}
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		stop := startReaders()
		time.Sleep(20 * time.Microsecond)
		if err := s.Update(OpSetattr, func(tx *Tx) error {
			v, err := tx.Head(id)
			if err != nil {
				return err
			}
			nv := v.Clone()
			nv.Mode = uint32(i) & 0o777
			_, err = tx.Put(nv)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Microsecond)
		stop()
		// Readers only ever Put what they read: the cache must not hold a
		// version older than the database's head.
		cached, ok := s.versions.Get(id)
		s.versions.Delete(id)
		fromDB, err := s.Head(id)
		if err != nil {
			t.Fatal(err)
		}
		if ok && cached.storedHash() != fromDB.storedHash() {
			t.Errorf("after %d updates the version cache holds a stale head (mode %o; the database's head has mode %o)",
				i+1, cached.Mode, fromDB.Mode)
			// What the next commit does with it: put the cache back as it was.
			s.versions.Put(id, cached)
			var nv *Version
			if err := s.Update(OpLink, func(tx *Tx) error {
				v, err := tx.Head(id)
				if err != nil {
					return err
				}
				nv = v.Clone()
				nv.Links = append(nv.Links, Link{RootID, "g"})
				_, err = tx.Put(nv)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if nv.Prev != fromDB.storedHash() {
				t.Errorf("the next version's Prev skips the head %s (history forks; that version's change is lost)", fromDB.storedHash().Short())
			}
			return
		}
	}
}

// slowSyncFile is a file on a test FUSE mount whose fsync blocks until
// release is closed: it stands for a pack whose fsync takes a while.
type slowSyncFile struct {
	gofs.MemRegularFile
	entered, release chan struct{}
	once             sync.Once
}

func (f *slowSyncFile) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	f.once.Do(func() { close(f.entered) })
	<-f.release
	return 0
}

type slowSyncRoot struct {
	gofs.Inode
	file *slowSyncFile
}

func (r *slowSyncRoot) OnAdd(ctx context.Context) {
	r.AddChild("pack", r.NewPersistentInode(ctx, r.file, gofs.StableAttr{Mode: syscall.S_IFREG}), false)
}

// TestReviewConcurrentSyncReturnsBeforePackIsDurable: packs.sync takes the
// list of files written since the last sync, clears it, drops the lock and
// only then fsyncs them. A second Sync that runs while the first is still
// inside fsync finds the list empty and returns at once, although the chunk
// written before it was called is not durable yet (the only fsync that
// covers it has not returned). Two fsync(2) calls on two files of a mount
// run concurrently, so the second can return (invariant 4: "fsync returns
// only after the file's data and its version are durable") while its data
// can still be lost to a machine crash, and Badger's Sync in the same call
// makes the version that references the chunk durable first.
//
// The pack is put on a FUSE mount whose fsync blocks, to hold the first
// Sync inside fsync deterministically.
func TestReviewConcurrentSyncReturnsBeforePackIsDurable(t *testing.T) {
	s := newTestStore(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	file := &slowSyncFile{MemRegularFile: gofs.MemRegularFile{Attr: fuse.Attr{Mode: 0o600}},
		entered: make(chan struct{}), release: make(chan struct{})}
	srv, err := gofs.Mount(mnt, &slowSyncRoot{file: file}, &gofs.Options{})
	if err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	defer srv.Unmount()
	released := false
	defer func() {
		if !released {
			close(file.release)
		}
	}()
	f, err := os.OpenFile(filepath.Join(mnt, "pack"), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Make the FUSE file the current pack.
	p := s.packs
	p.mu.Lock()
	oldCur, oldID, oldSize := p.cur, p.curID, p.curSize
	p.cur, p.curID, p.curSize, p.unsync = f, 99, 0, nil
	p.readers[99] = f
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.cur, p.curID, p.curSize, p.unsync = oldCur, oldID, oldSize, nil
		delete(p.readers, 99)
		p.mu.Unlock()
	}()

	// A file's commit stores its chunk; another file's fsync starts a Sync
	// that gets stuck in the pack's fsync.
	r := rand.New(rand.NewPCG(1, 2))
	if _, err := s.PutChunks([][]byte{randBytes(r, 100_000)}); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- s.Sync() }()
	<-file.entered

	// The first file's fsync: its chunk is not durable until the pack's
	// fsync returns, so its Sync must not return before that.
	second := make(chan error, 1)
	go func() { second <- s.Sync() }()
	secondDone := false
	select {
	case <-second:
		secondDone = true
		t.Errorf("Sync returned while the only fsync of the pack holding the chunk was still running")
	case <-time.After(time.Second):
	}
	close(file.release)
	released = true
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if !secondDone {
		<-second
	}
}
