package store

import (
	"bytes"
	"encoding/binary"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/zeebo/blake3"
)

// Merging concurrent versions.
//
// Every site keeps, for each file id, one head that descends from every
// version of the file it knows (Apply keeps that true). When a version
// arrives that neither descends from the head nor is known, the two are
// concurrent, and Apply commits a merge record: the fields each side changed
// since their common ancestor, the winner's where both changed the same
// field, Prev = the winner and Merged = the loser. The merge is a function of
// the two versions and their ancestry alone, so every site that merges the
// same pair writes the same record (same hash), and all sites reach the same
// namespace root whatever the order in which records arrived.
//
// The winner is the live side when one side deleted the file (a modification
// beats a concurrent delete), else the higher stamp (hybrid clock time, then
// site id, then hash). When both sides changed a file's content, the loser's
// content is kept as a new file beside it (a conflict copy, see
// conflictCopy): no committed content is lost.

// ancestorLimit bounds the ancestry walked to tell whether one version
// descends from another (maximal) and back to a deleted directory's last
// live version (revive); mergeWalkLimit bounds each side of the walk for a
// merge's common ancestor (about 10 ms at most: a merge walks the winner's
// whole ancestry up to it, however little the sides diverged). They are
// constants so that the result is the same at every site.
const (
	ancestorLimit  = 512
	mergeWalkLimit = 4096
)

// wins reports whether version a (hash ha) beats concurrent version b.
func wins(a *Version, ha Hash, b *Version, hb Hash) bool {
	if a.Deleted != b.Deleted {
		return !a.Deleted
	}
	if a.Stamp.Time != b.Stamp.Time {
		return a.Stamp.Time > b.Stamp.Time
	}
	if c := bytes.Compare(a.Stamp.Site[:], b.Stamp.Site[:]); c != 0 {
		return c > 0
	}
	return bytes.Compare(ha[:], hb[:]) > 0
}

// mergeState returns the merged state of winner w and loser l, which
// descend from base (nil when none was found within mergeWalkLimit), and
// whether both changed the content (the loser's then needs a conflict copy).
func mergeState(base, w, l *Version) (m *Version, contentConflict bool) {
	m = w.Clone()
	m.Merged = nil
	if w.Deleted || l.Deleted {
		// Both deleted, or the live winner against a delete: the delete
		// contributes nothing.
		return m, false
	}
	sameContent := w.Content == l.Content && w.Size == l.Size && w.Target == l.Target
	if base == nil {
		return m, !sameContent
	}
	// For each group of fields: the loser's value when only the loser
	// changed it, else the winner's.
	lonly := func(wSame, lSame bool) bool { return wSame && !lSame }
	if lonly(slices.Equal(w.Links, base.Links), slices.Equal(l.Links, base.Links)) {
		m.Links = slices.Clone(l.Links)
	}
	wContent := w.Content == base.Content && w.Size == base.Size && w.Target == base.Target
	lContent := l.Content == base.Content && l.Size == base.Size && l.Target == base.Target
	if lonly(wContent, lContent) {
		m.Content, m.Size, m.Alloc, m.Target = l.Content, l.Size, l.Alloc, l.Target
	}
	if lonly(w.Mode == base.Mode, l.Mode == base.Mode) {
		m.Mode = l.Mode
	}
	if lonly(w.UID == base.UID && w.GID == base.GID, l.UID == base.UID && l.GID == base.GID) {
		m.UID, m.GID = l.UID, l.GID
	}
	if lonly(w.Rdev == base.Rdev, l.Rdev == base.Rdev) {
		m.Rdev = l.Rdev
	}
	if lonly(xattrsEqual(w.Xattrs, base.Xattrs), xattrsEqual(l.Xattrs, base.Xattrs)) {
		m.Xattrs = l.Clone().Xattrs
	}
	if lonly(w.Atime == base.Atime, l.Atime == base.Atime) {
		m.Atime = l.Atime
	}
	if lonly(w.Mtime == base.Mtime, l.Mtime == base.Mtime) {
		m.Mtime = l.Mtime
	}
	m.Ctime = max(w.Ctime, l.Ctime)
	return m, !wContent && !lContent && !sameContent
}

func xattrsEqual(a, b []Xattr) bool {
	return slices.EqualFunc(a, b, func(x, y Xattr) bool { return x.Name == y.Name && bytes.Equal(x.Value, y.Value) })
}

// conflictCopy returns the first version of the file that keeps loser l's
// content beside the winner: a new file id and a name derived from l alone,
// so every site that makes it makes the same record.
func conflictCopy(l *Version) *Version {
	c := l.Clone()
	c.ID = derivedID("geofs 2026-11 conflict copy v1", l.ID[:], l.Content[:], []byte(l.Target), stampBytes(l.Stamp))
	c.Links = []Link{{l.Links[0].Parent, ConflictName(l.Links[0].Name, l.Stamp)}}
	c.Prev, c.Merged = Hash{}, nil
	return c
}

// renamed returns the successor of v (hash h) with the link old replaced
// by a conflict name: how the loser of a name clash moves aside.
func renamed(v *Version, h Hash, old Link) *Version {
	r := derive(v, h)
	r.RemoveLink(old.Parent, old.Name)
	r.Links = append(r.Links, Link{old.Parent, ConflictName(old.Name, v.Stamp)})
	return r
}

// derive returns a successor of v (hash h) that keeps v's stamp: the
// records Apply makes to resolve a conflict must be the same at every site,
// so they take nothing from the site making them.
func derive(v *Version, h Hash) *Version {
	d := v.Clone()
	d.Prev, d.Merged = h, nil
	return d
}

// ConflictName is the name a version moved aside by a conflict gets:
// NAME.conflict-SITE-TIME, with the first 8 hex digits of the site id and
// the UTC time of the version's stamp, the name shortened to fit.
func ConflictName(name string, st Stamp) string {
	suffix := ".conflict-" + st.Site.String()[:8] + "-" + st.Time.Time().UTC().Format("20060102-150405.000")
	for len(name)+len(suffix) > MaxNameLen {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name + suffix
}

func derivedID(context string, parts ...[]byte) FileID {
	h := blake3.NewDeriveKey(context)
	for _, p := range parts {
		h.Write(binary.AppendUvarint(nil, uint64(len(p))))
		h.Write(p)
	}
	var id FileID
	copy(id[:], h.Sum(nil))
	return id
}

func stampBytes(st Stamp) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(st.Time)), st.Site[:]...)
}

// stampString is for log lines.
func stampString(st Stamp) string {
	return st.Site.String()[:8] + "@" + st.Time.Time().UTC().Format(time.RFC3339Nano)
}
