package fs

import (
	"fmt"
	"sync"
	"testing"

	"github.com/geofs/geofs/store"
)

func testEntries(n int) []store.Dirent {
	es := make([]store.Dirent, n)
	for i := range es {
		es[i] = store.Dirent{Name: fmt.Sprintf("f%05d", i), ID: store.NewFileID()}
	}
	return es
}

func at(gen uint64) func() uint64 { return func() uint64 { return gen } }

func TestListingAnswersOnlyAtItsGeneration(t *testing.T) {
	ls := newListings(1 << 20)
	dir, es := store.NewFileID(), testEntries(10)
	ls.put(dir, 7, es)
	if e, found, ok := ls.lookup(dir, "f00003", at(7)); !ok || !found || e.ID != es[3].ID {
		t.Fatalf("present name: %v %v %v", e, found, ok)
	}
	if _, found, ok := ls.lookup(dir, "nope", at(7)); !ok || found {
		t.Fatalf("absent name: found %v ok %v, want a sure miss", found, ok)
	}
	if _, _, ok := ls.lookup(store.NewFileID(), "f00003", at(7)); ok {
		t.Fatal("answered for a directory it never listed")
	}
	// A scan older than the kept ones is not kept.
	older := store.NewFileID()
	ls.put(older, 6, testEntries(3))
	if _, _, ok := ls.lookup(older, "f00001", at(7)); ok {
		t.Fatal("kept a scan older than the others")
	}
	// A commit since the scans: no answer, and every scan is gone.
	other := store.NewFileID()
	ls.put(other, 7, testEntries(5))
	if _, _, ok := ls.lookup(dir, "nope", at(8)); ok {
		t.Fatal("answered after a commit")
	}
	if ls.order.Len() != 0 || ls.size != 0 {
		t.Fatalf("%d stale listings kept (%d bytes)", ls.order.Len(), ls.size)
	}
	// A newer scan starts afresh.
	ls.put(dir, 9, es)
	if _, found, ok := ls.lookup(dir, "f00009", at(9)); !ok || !found {
		t.Fatal("newer scan not kept")
	}
}

func TestListingsStayBounded(t *testing.T) {
	per := listingCost + 10*testEntries(1)[0].MemSize()
	ls := newListings(2*per + per/2)
	dirs := make([]store.FileID, 5)
	for i := range dirs {
		dirs[i] = store.NewFileID()
		ls.put(dirs[i], 1, testEntries(10))
	}
	if ls.size > ls.max || ls.order.Len() != 2 {
		t.Fatalf("%d bytes in %d listings, want at most %d in the newest 2", ls.size, ls.order.Len(), ls.max)
	}
	if _, _, ok := ls.lookup(dirs[4], "f00001", at(1)); !ok {
		t.Fatal("newest listing dropped")
	}
	ls.put(dirs[4], 1, testEntries(10)) // a new scan replaces the old one
	if ls.size != 2*per || ls.order.Len() != 2 {
		t.Fatalf("%d bytes in %d listings after a rescan, want %d in 2", ls.size, ls.order.Len(), 2*per)
	}
	ls.put(store.NewFileID(), 1, testEntries(1000)) // too big to keep at all
	if ls.size != 2*per {
		t.Fatalf("%d bytes after an oversized listing, want %d", ls.size, 2*per)
	}
	// Empty directories cost their listing too.
	for range 10_000 {
		ls.put(store.NewFileID(), 1, nil)
	}
	if ls.size > ls.max || ls.order.Len() > ls.max/listingCost || len(ls.byDir) != ls.order.Len() {
		t.Fatalf("%d bytes in %d listings of empty directories, bound %d", ls.size, ls.order.Len(), ls.max)
	}
}

// Lookups of different names of one listed directory run at once, and
// decode the records of the entries they get (run with -race: the kept
// entries must not be written).
func TestListingConcurrentLookups(t *testing.T) {
	f, s := newTestFS(t, 0)
	for i := range 50 {
		reviewFile(t, s, fmt.Sprintf("n%02d", i))
	}
	gen := s.Generation()
	ents, err := s.ReadDir(store.RootID)
	if err != nil {
		t.Fatal(err)
	}
	f.listings.put(store.RootID, gen, ents)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				name := fmt.Sprintf("n%02d", (i+g*7)%50)
				e, found, ok := f.listings.lookup(store.RootID, name, s.Generation)
				if !ok || !found {
					t.Errorf("%s: found %v ok %v", name, found, ok)
					return
				}
				if v, err := e.Load(); err != nil || v.ID != e.ID {
					t.Errorf("%s: %v", name, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
