package fs

import (
	"fmt"
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

func TestListingAnswersOnlyAtItsGeneration(t *testing.T) {
	ls := newListings(100)
	dir, es := store.NewFileID(), testEntries(10)
	ls.put(dir, 7, es)
	if e, ok := ls.lookup(dir, "f00003", at(7)); !ok || e == nil || e.ID != es[3].ID {
		t.Fatalf("present name: %v %v", e, ok)
	}
	if e, ok := ls.lookup(dir, "nope", at(7)); !ok || e != nil {
		t.Fatalf("absent name: %v %v, want a sure miss", e, ok)
	}
	if _, ok := ls.lookup(store.NewFileID(), "f00003", at(7)); ok {
		t.Fatal("answered for a directory it never listed")
	}
	// A commit since the scan: no answer, and the scan is gone.
	if _, ok := ls.lookup(dir, "nope", at(8)); ok {
		t.Fatal("answered after a commit")
	}
	if _, ok := ls.lookup(dir, "f00003", at(7)); ok || ls.n != 0 {
		t.Fatalf("stale listing kept (%d entries)", ls.n)
	}
}

func TestListingsStayBounded(t *testing.T) {
	ls := newListings(100)
	dirs := make([]store.FileID, 5)
	for i := range dirs {
		dirs[i] = store.NewFileID()
		ls.put(dirs[i], 1, testEntries(40))
	}
	if ls.n > 100 || len(ls.byDir) != 2 {
		t.Fatalf("%d entries in %d listings, want at most 100 in the newest 2", ls.n, len(ls.byDir))
	}
	if _, ok := ls.lookup(dirs[4], "f00001", at(1)); !ok {
		t.Fatal("newest listing dropped")
	}
	ls.put(dirs[4], 2, testEntries(30)) // a new scan replaces the old one
	if ls.n != 70 {
		t.Fatalf("%d entries after a rescan, want 70", ls.n)
	}
	ls.put(store.NewFileID(), 1, testEntries(101)) // too big to keep at all
	if ls.n != 70 {
		t.Fatalf("%d entries after an oversized listing, want 70", ls.n)
	}
}

func at(gen uint64) func() uint64 { return func() uint64 { return gen } }
