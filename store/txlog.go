package store

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/geofs/geofs/internal/codec"
	"github.com/geofs/geofs/internal/hlc"
)

// Op says what kind of change a txlog entry records.
type Op uint8

// The operations. Their numbers are part of the on-disk format.
const (
	OpCreate Op = iota + 1
	OpMkdir
	OpSymlink
	OpWrite
	OpSetattr
	OpRename
	OpLink
	OpUnlink
	OpRmdir
	OpXattr
	OpRestore
	OpMerge   // a merge of concurrent versions made here (merge.go)
	OpResolve // a record derived to resolve a conflict: a conflict copy, a rename out of a name clash, a directory kept alive, a cycle broken
	OpCopy    // content made from another file's chunks, without copying bytes (copy_file_range)
)

var opNames = [...]string{"", "create", "mkdir", "symlink", "write", "setattr", "rename", "link", "unlink", "rmdir", "xattr", "restore", "merge", "resolve", "copy"}

func (o Op) String() string {
	if int(o) < len(opNames) && o != 0 {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Entry is one txlog entry: a version this site committed or accepted.
type Entry struct {
	Seq     uint64
	Time    hlc.Timestamp
	Site    SiteID // the site whose stamp the version carries
	Op      Op
	File    FileID
	Version Hash
	From    SiteID // the peer it arrived from; zero when made here
}

const entryTag = 'E'

// Encode returns the entry's on-disk form.
func (e *Entry) Encode() []byte {
	c := codec.Encoder{B: make([]byte, 0, 96)}
	c.Byte(entryTag)
	c.Uvarint(e.Seq)
	c.Uvarint(uint64(e.Time))
	c.Fixed(e.Site[:])
	c.Byte(byte(e.Op))
	c.Fixed(e.File[:])
	c.Fixed(e.Version[:])
	c.Fixed(e.From[:])
	return c.B
}

// DecodeEntry parses an encoded entry.
func DecodeEntry(b []byte) (*Entry, error) {
	d := codec.Decoder{B: b}
	e := &Entry{}
	if d.Byte() != entryTag {
		return nil, fmt.Errorf("decode txlog entry: %w: bad tag", codec.ErrMalformed)
	}
	e.Seq = d.Uvarint()
	e.Time = hlc.Timestamp(d.Uvarint())
	d.Fixed(e.Site[:])
	e.Op = Op(d.Byte())
	d.Fixed(e.File[:])
	d.Fixed(e.Version[:])
	d.Fixed(e.From[:])
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("decode txlog entry: %w", err)
	}
	if e.Op == 0 || int(e.Op) >= len(opNames) {
		return nil, fmt.Errorf("decode txlog entry: %w: unknown op %d", codec.ErrMalformed, e.Op)
	}
	return e, nil
}

// Log calls fn for each txlog entry with Seq >= from, in order, until fn
// returns false or an error.
func (s *Store) Log(from uint64, fn func(*Entry) (bool, error)) error {
	// Entries are read from Badger once written there: a link must not
	// send a peer what a crash here could still lose.
	if err := s.Flush(); err != nil {
		return err
	}
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256, Prefix: []byte{pLog}})
		defer it.Close()
		for it.Seek(logKey(from)); it.Valid(); it.Next() {
			b, err := it.Item().ValueCopy(nil)
			if err != nil {
				return classifyBadger(err)
			}
			e, err := DecodeEntry(b)
			if err != nil {
				return fmt.Errorf("txlog entry %x: %w: %w", it.Item().Key()[1:], ErrCorrupt, err)
			}
			if more, err := fn(e); !more || err != nil {
				return err
			}
		}
		return nil
	})
}

// LastSeq returns the sequence number of the newest txlog entry.
func (s *Store) LastSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// Committed returns a channel that is closed when the next commit that
// appends to the txlog is done: how the links learn there is news.
func (s *Store) Committed() <-chan struct{} {
	s.newsMu.Lock()
	defer s.newsMu.Unlock()
	if s.news == nil {
		s.news = make(chan struct{})
	}
	return s.news
}

func (s *Store) notifyCommit() {
	s.newsMu.Lock()
	defer s.newsMu.Unlock()
	if s.news != nil {
		close(s.news)
		s.news = nil
	}
}
