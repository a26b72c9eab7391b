package sync

import (
	"strings"

	"github.com/geofs/geofs/store"
)

// scope decides which records a link carries: those of files under one of
// its paths, and the directories above them (so the paths exist at the
// other end). Both ends check: the sender sends nothing else, the receiver
// applies nothing else.
type scope struct {
	paths   []string // cleaned, absolute; "/" means everything
	st      *store.Store
	pending map[store.FileID]*store.Version // records of the batch being checked, not applied yet
}

func newScope(paths []string, st *store.Store) *scope {
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	return &scope{paths: paths, st: st, pending: map[store.FileID]*store.Version{}}
}

// allSent reports whether the link carries the whole tree.
func (s *scope) allSent() bool {
	for _, p := range s.paths {
		if p == "/" {
			return true
		}
	}
	return false
}

// sends reports whether v, a version in this site's log, is in scope: one
// of its names, or one of its previous version's (a move out, a delete),
// is within a served path.
func (s *scope) sends(v *store.Version) bool {
	if s.allSent() || v.ID == store.RootID {
		return true
	}
	if s.linksIn(v.Links, v.Kind) {
		return true
	}
	if !v.Prev.IsZero() {
		if p, err := s.st.Version(v.Prev); err == nil {
			return s.linksIn(p.Links, p.Kind)
		}
	}
	return false
}

// accepts reports whether v, received from the peer, is in scope here: by
// its names, or the names its file has here now.
func (s *scope) accepts(v *store.Version) bool {
	if s.allSent() || v.ID == store.RootID {
		return true
	}
	if s.linksIn(v.Links, v.Kind) {
		s.pending[v.ID] = v
		return true
	}
	if cur, err := s.st.Head(v.ID); err == nil && s.linksIn(cur.Links, cur.Kind) {
		s.pending[v.ID] = v
		return true
	}
	return false
}

// pathOf returns the path of directory id with a trailing slash, as the
// records of the batch accepted so far would make it ("" when it is not
// reachable).
func (s *scope) pathOf(id store.FileID) string {
	p, ok := store.PathVia(id, func(id store.FileID) *store.Version {
		if v, ok := s.pending[id]; ok {
			return v
		}
		v, _ := s.st.Head(id)
		return v
	})
	if !ok {
		return ""
	}
	return strings.TrimSuffix(p, "/") + "/"
}

func (s *scope) linksIn(links []store.Link, kind store.Kind) bool {
	for _, l := range links {
		parent := s.pathOf(l.Parent)
		if parent == "" {
			continue // not reachable here
		}
		p := parent + l.Name
		for _, served := range s.paths {
			if within(p, served) || kind == store.KindDir && within(served, p) {
				return true
			}
		}
	}
	return false
}

// within reports whether path p is dir or below it.
func within(p, dir string) bool {
	return dir == "/" || p == dir || strings.HasPrefix(p, dir+"/")
}

// describe names v's path for a log line.
func (s *scope) describe(v *store.Version) string {
	if len(v.Links) == 0 {
		return "(deleted) " + v.ID.String()
	}
	return s.pathOf(v.Links[0].Parent) + v.Links[0].Name
}
