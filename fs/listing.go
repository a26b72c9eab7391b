package fs

import (
	"slices"
	"strings"
	"sync"

	"github.com/geofs/geofs/store"
)

// listings keeps the most recent directory scans, so that the lookups that
// follow a listing (a program that lists a directory and then stats every
// entry, as find, rsync, or ls -l's gathering do) are answered from the
// scan instead of one store read each. A scan answers only while no commit
// has happened since it (the store's commit generation is unchanged): it is
// then exactly the directory's state, so a name it lacks does not exist.
//
// The bound counts entries: a 20,000-entry listing holds about 6 MB (names
// and version records).
type listings struct {
	mu    sync.Mutex
	max   int // entries kept in all
	n     int
	byDir map[store.FileID]*listing
	order []store.FileID // oldest first
}

type listing struct {
	gen     uint64         // the store's commit generation before the scan
	entries []store.Dirent // in name order, without . and ..
}

const maxListed = 64 << 10

func newListings(max int) *listings {
	return &listings{max: max, byDir: map[store.FileID]*listing{}}
}

// put keeps the scan of dir taken at generation gen.
func (ls *listings) put(dir store.FileID, gen uint64, entries []store.Dirent) {
	if len(entries) > ls.max {
		return
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.dropLocked(dir)
	for ls.n+len(entries) > ls.max {
		ls.dropLocked(ls.order[0])
	}
	ls.byDir[dir] = &listing{gen, entries}
	ls.order = append(ls.order, dir)
	ls.n += len(entries)
}

func (ls *listings) dropLocked(dir store.FileID) {
	l, ok := ls.byDir[dir]
	if !ok {
		return
	}
	delete(ls.byDir, dir)
	ls.order = slices.DeleteFunc(ls.order, func(d store.FileID) bool { return d == dir })
	ls.n -= len(l.entries)
}

// lookup finds name in the kept scan of dir, if that scan is still the
// directory's state at the current generation (gen is asked only when
// there is a scan). ok is false when there is no such scan; then e is nil,
// and with ok true e is nil only if dir has no name.
func (ls *listings) lookup(dir store.FileID, name string, gen func() uint64) (e *store.Dirent, ok bool) {
	ls.mu.Lock()
	l := ls.byDir[dir]
	if l != nil && l.gen != gen() {
		ls.dropLocked(dir) // a commit since: it may be stale
		l = nil
	}
	ls.mu.Unlock()
	if l == nil {
		return nil, false
	}
	i, found := slices.BinarySearchFunc(l.entries, name, func(d store.Dirent, name string) int {
		return strings.Compare(d.Name, name)
	})
	if !found {
		return nil, true
	}
	return &l.entries[i], true
}
