package store

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSyncAfterAFailedFsyncFails: the packs live on an ext4 image whose
// backing tmpfs is full, so writing back a pack fails on the device. Linux
// reports that to one fsync and marks the pages clean: a second fsync of
// the same file succeeds with the data lost. So the first failure must be
// final: every later Sync reports it (an application's next fsync must not
// succeed), and the store takes no more changes until it is reopened.
func TestSyncAfterAFailedFsyncFails(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "fstrim", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, "%s: %v", tool, err)
		}
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			unavailable(t, "%s %v: %v %s", name, args, err, out)
		}
	}
	back := filepath.Join(t.TempDir(), "back")
	if err := os.Mkdir(back, 0o700); err != nil {
		t.Fatal(err)
	}
	run("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", back)
	t.Cleanup(func() { exec.Command("umount", back).Run() })
	img := filepath.Join(back, "img")
	run("truncate", "-s", "128M", img)
	run("mkfs.ext4", "-F", "-q", "-O", "^has_journal", img)
	dir := initTestSite(t)
	packDir := filepath.Join(dir, PackDir)
	if err := os.MkdirAll(packDir, 0o700); err != nil {
		t.Fatal(err)
	}
	run("mount", "-o", "loop", img, packDir)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", packDir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", packDir, err, out)
		}
	})
	run("fstrim", packDir) // the image's free blocks become holes in the tmpfs
	s := openTestSite(t, dir)
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})

	filler := filepath.Join(back, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 64<<10)); err != nil {
			break // the tmpfs is full: the image cannot take new blocks
		}
	}
	f.Close()
	_, data := cacheChunk(77, 600_000) // under 1 MiB: a buffered append, in the page cache
	if _, err := s.PutChunks([][]byte{data}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err == nil {
		t.Fatal("Sync succeeded with the pack's device full: the test made no failure")
	}
	if err := os.Remove(filler); err != nil { // room again; the lost pages stay lost
		t.Fatal(err)
	}
	if err := s.Sync(); err == nil {
		t.Error("a second Sync succeeded after a failed one: the chunk written before it is not on the device")
	}
	err = s.Update(OpCreate, func(tx *Tx) error {
		_, err := tx.Create(&Version{ID: NewFileID(), Kind: KindFile, Links: []Link{{RootID, "f"}}, Mode: 0o644})
		return err
	})
	if err == nil {
		t.Error("the store took a change after a failed fsync")
	}
	closed = true
	if err := s.Close(); err == nil {
		t.Error("Close reported nothing after a failed fsync")
	}
}

// unavailable skips a test that needs what this machine lacks, or fails it
// in CI, where everything must run.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// TestSyncSyncsFullMemtableLogs: Badger's Sync syncs only the active
// memtable's log; one that filled up waits, unsynced, until it is written
// out as a table. After Sync no Badger log may hold dirty pages (a power
// loss would lose what fsync reported durable). Metadata is written until
// Badger starts a second memtable, then synced at once.
func TestSyncSyncsFullMemtableLogs(t *testing.T) {
	dir := initTestSite(t)
	s := openTestSite(t, dir)
	defer s.Close()
	db := filepath.Join(dir, DBDir)
	logs := func() []string {
		m, _ := filepath.Glob(filepath.Join(db, "*.mem"))
		return m
	}
	first := len(logs())
	value := make([]byte, 60<<10)
	for i := 0; len(logs()) <= first; i++ {
		if i > 5000 {
			t.Fatalf("no second memtable after %d updates of %d bytes", i, len(value))
		}
		value[0], value[1] = byte(i), byte(i>>8)
		err := s.Update(OpCreate, func(tx *Tx) error {
			v := &Version{ID: NewFileID(), Kind: KindFile, Links: []Link{{RootID, fmt.Sprint("f", i)}}, Mode: 0o644}
			v.SetXattr("user.v", value)
			_, err := tx.Create(v)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, p := range logs() {
		f, err := os.Open(p)
		if err != nil {
			continue // written out as a table meanwhile
		}
		var st unix.Cachestat_t
		err = unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &st, 0)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st.Dirty+st.Writeback > 0 {
			t.Errorf("%s: %d dirty pages after Sync", filepath.Base(p), st.Dirty+st.Writeback)
		}
	}
}

// A failed commit of chunk locations (a Badger write failure, injected:
// this machine cannot make Badger fail a small commit on purpose) stops the
// store. Before, it was reported to the next Update alone: its retry found
// the chunk in the header cache, wrote no location, and committed a
// version whose chunk was gone after a reopen; and a failure reported
// after the Update had begun left Sync reporting success.
func TestFailedLocationCommitStopsTheStore(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprint("late=", late), func(t *testing.T) {
			s := openTestSite(t, initTestSite(t))
			defer s.Close()
			reported := make(chan struct{})
			report := sync.OnceFunc(func() { close(reported) })
			var once sync.Once
			testCommitFail = func() (err error, after <-chan struct{}) {
				once.Do(func() { err = errors.New("injected: badger write failed") })
				return err, reported
			}
			defer func() { testCommitFail = nil }()
			_, data := cacheChunk(5, 300_000)
			create := func() error {
				x, err := s.Rewrite(&Extents{}, []Patch{{Off: 0, Data: data}}, uint64(len(data)))
				if err != nil {
					return err
				}
				root, err := s.PutManifest(x.Refs)
				if err != nil {
					return err
				}
				if !late {
					report()
					s.async.wait()
				}
				return s.Update(OpCreate, func(tx *Tx) error {
					_, err := tx.Create(&Version{ID: NewFileID(), Kind: KindFile, Links: []Link{{RootID, "f"}},
						Mode: 0o644, Size: uint64(len(data)), Alloc: uint64(len(data)), Content: root})
					return err
				})
			}
			err := create()
			if !late && err == nil {
				t.Error("an Update committed after a chunk location it names failed to commit")
			}
			if late {
				// The Update was taken before the failure was known; a
				// flush must wait for the location's outcome and write
				// nothing to Badger.
				flushed := make(chan error)
				go func() { flushed <- s.Flush() }()
				time.Sleep(100 * time.Millisecond)
				report()
				if err := <-flushed; err == nil {
					t.Error("a flush wrote a record naming a chunk whose location failed to commit")
				}
			}
			report()
			if err := s.Sync(); err == nil {
				t.Error("Sync succeeded after a chunk location failed to commit")
			}
			if err := create(); err == nil {
				t.Error("a retry committed after a chunk location failed to commit")
			}
		})
	}
}
