package store

import (
	"fmt"
	"strings"
)

// Resolve returns the file id at path ("/a/b", relative to the root).
func (s *Store) Resolve(path string) (FileID, error) {
	id := RootID
	for _, name := range strings.Split(path, "/") {
		if name == "" || name == "." {
			continue
		}
		child, _, err := s.Lookup(id, name)
		if err != nil {
			return id, fmt.Errorf("resolve %s: %w", path, err)
		}
		id = child
	}
	return id, nil
}

// Restore makes old, a version of id, current again as a new version: its
// content, size, mode, owner, times, target and xattrs come back, while the
// file keeps its present names.
func (s *Store) Restore(id FileID, old Hash) (*Version, error) {
	ov, err := s.Version(old)
	if err != nil {
		return nil, err
	}
	if ov.ID != id {
		return nil, fmt.Errorf("version %s belongs to another file: %w", old.Short(), ErrNotFound)
	}
	var nv *Version
	err = s.Update(OpRestore, func(tx *Tx) error {
		cur, err := tx.Head(id)
		if err != nil {
			return err
		}
		nv = ov.Clone()
		nv.Links, nv.Deleted = cur.Links, cur.Deleted
		nv.Ctime = tx.Wall()
		_, err = tx.Put(nv)
		return err
	})
	return nv, err
}
