package fs

import (
	"container/list"
	"sort"
	"sync"

	"github.com/geofs/geofs/store"
)

// listings keeps the most recent directory scans, so that the lookups that
// follow a listing (a program that lists a directory and then stats every
// entry, as find, rsync or a scandir loop do) are answered from the scan
// instead of one store read each. The scans kept were all taken at one
// commit generation, and answer only while it is the store's: a scan is
// then exactly its directory's state, so a name it lacks does not exist.
// The first lookup or scan after any commit drops them all.
//
// Kept scans are never changed (lookups get copies of their entries), so
// they are read without the lock. The bound is in bytes (Dirent.MemSize,
// plus listingCost for each listing, so empty directories count too).
type listings struct {
	mu    sync.Mutex
	max   int // bytes
	size  int
	gen   uint64                         // the generation of every kept scan
	byDir map[store.FileID]*list.Element // of *listing, in order
	order *list.List                     // oldest first
}

type listing struct {
	dir     store.FileID
	size    int
	entries []store.Dirent // in the byte order of names (the store's key order), without . and ..
}

const (
	maxListedBytes = 32 << 20 // about 100,000 entries of a few hundred bytes
	listingCost    = 256
)

func newListings(max int) *listings {
	return &listings{max: max, byDir: map[store.FileID]*list.Element{}, order: list.New()}
}

// put keeps the scan of dir, taken at generation gen.
func (ls *listings) put(dir store.FileID, gen uint64, entries []store.Dirent) {
	size := listingCost
	for i := range entries {
		size += entries[i].MemSize()
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if gen != ls.gen {
		if gen < ls.gen {
			return // older than the kept scans: stale already
		}
		ls.clearLocked() // a commit since the kept scans
		ls.gen = gen
	}
	ls.dropLocked(dir)
	if size > ls.max {
		return
	}
	for ls.size+size > ls.max {
		ls.dropLocked(ls.order.Front().Value.(*listing).dir)
	}
	ls.byDir[dir] = ls.order.PushBack(&listing{dir, size, entries})
	ls.size += size
}

func (ls *listings) dropLocked(dir store.FileID) {
	if el, ok := ls.byDir[dir]; ok {
		ls.size -= ls.order.Remove(el).(*listing).size
		delete(ls.byDir, dir)
	}
}

func (ls *listings) clearLocked() {
	clear(ls.byDir)
	ls.order.Init()
	ls.size = 0
}

// lookup finds name in the kept scan of dir, if no commit has happened
// since it. gen returns the store's generation; it is called only while
// scans are kept, under ls.mu (so the lock order is ls.mu, then the
// store's cache lock). ok is false without such a scan; with ok, found
// says whether dir has the name, and e is a copy of its entry.
func (ls *listings) lookup(dir store.FileID, name string, gen func() uint64) (e store.Dirent, found, ok bool) {
	ls.mu.Lock()
	var l *listing
	if ls.order.Len() > 0 {
		if gen() != ls.gen {
			ls.clearLocked()
		} else if el := ls.byDir[dir]; el != nil {
			l = el.Value.(*listing)
		}
	}
	ls.mu.Unlock()
	if l == nil {
		return store.Dirent{}, false, false
	}
	i := sort.Search(len(l.entries), func(i int) bool { return l.entries[i].Name >= name })
	if i < len(l.entries) && l.entries[i].Name == name {
		return l.entries[i], true, true
	}
	return store.Dirent{}, false, true
}
