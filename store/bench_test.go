package store

import (
	"testing"
)

// BenchmarkUpdateCreate measures one metadata commit (a create).
func BenchmarkUpdateCreate(b *testing.B) {
	s := newTestStore(b)
	for b.Loop() {
		err := s.Update(OpCreate, func(tx *Tx) error {
			_, err := tx.Create(&Version{ID: NewFileID(), Kind: KindFile, Links: []Link{{RootID, NewFileID().String()}}, Mode: 0o644})
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSmallFile measures what closing a new 4 KiB file costs the store.
func BenchmarkSmallFile(b *testing.B) {
	s := newTestStore(b)
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16)
		x, err := s.Rewrite(&Extents{}, []Patch{{Off: 0, Data: data}}, uint64(len(data)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.PutManifest(x.Refs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDirState measures one small metadata read from Badger.
func BenchmarkDirState(b *testing.B) {
	s := newTestStore(b)
	s.Update(OpMkdir, func(tx *Tx) error {
		_, err := tx.Put(&Version{ID: NewFileID(), Kind: KindDir, Links: []Link{{RootID, "d"}}, Mode: 0o755})
		return err
	})
	for b.Loop() {
		if _, err := s.DirState(RootID); err != nil {
			b.Fatal(err)
		}
	}
}
