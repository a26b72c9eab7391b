package store

import (
	"fmt"
	"slices"
	"strings"

	"github.com/geofs/geofs/internal/codec"
	"github.com/geofs/geofs/internal/hlc"
)

// Kind is what a file id names.
type Kind uint8

// The kinds of file.
const (
	KindFile   Kind = 1
	KindDir    Kind = 2
	KindLink   Kind = 3 // symbolic link
	KindFifo   Kind = 4 // named pipe
	KindSocket Kind = 5 // unix socket
	KindChar   Kind = 6 // character device (Rdev)
	KindBlock  Kind = 7 // block device (Rdev)
)

// known reports whether k is one of the kinds above (decoders reject others).
func (k Kind) known() bool { return k >= KindFile && k <= KindBlock }

func (k Kind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindDir:
		return "dir"
	case KindLink:
		return "symlink"
	case KindFifo:
		return "fifo"
	case KindSocket:
		return "socket"
	case KindChar:
		return "char-device"
	case KindBlock:
		return "block-device"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Link is one name of a file: its parent directory and its name there. A
// file with hard links has several; a directory or symlink has one; a
// deleted file has none.
type Link struct {
	Parent FileID
	Name   string
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Stamp orders versions: hybrid logical clock time, then site id.
type Stamp struct {
	Time hlc.Timestamp
	Site SiteID
}

// Version is one immutable state of one file id. Its Hash (the SHA-256 of
// its encoding) is its identity; Prev chains it to the version it replaced.
type Version struct {
	ID    FileID
	Kind  Kind
	Links []Link // sorted by parent then name
	Mode  uint32 // permission bits, setuid, setgid and sticky (no type bits)
	UID   uint32
	GID   uint32
	Size  uint64
	// Alloc is how many bytes of a file's content are data, not holes:
	// what st_blocks reports, so that du and cp see a sparse file as one.
	// Zero for other kinds. Records of format 1 lack it; they decode with
	// Alloc = Size (every byte counted, as before).
	Alloc   uint64
	Atime   int64  // Unix nanoseconds; set only explicitly (reads never change it)
	Mtime   int64  // Unix nanoseconds
	Ctime   int64  // Unix nanoseconds
	Content Hash   // manifest root of a file; zero when empty
	Target  string // symlink target
	Rdev    uint64 // device number of a device node
	Xattrs  []Xattr
	Deleted bool
	Prev    Hash
	// Merged are the other versions a merge absorbed (concurrent versions of
	// this file from other sites, see merge.go), sorted. Prev is the merge's
	// winner; with Merged the versions of a file form a DAG whose single
	// head every site agrees on.
	Merged []Hash
	Stamp  Stamp

	// stored is the hash this version was read or committed under, so that
	// the next commit need not encode and hash it again. Zero when unknown;
	// Clone clears it (a clone is about to change).
	stored Hash
	// format1 marks a record decoded from format 1: it encodes in that
	// format again, so its hash does not change. Clone clears it (new
	// records are written in the current format).
	format1 bool
}

// Limits enforced when decoding, so a damaged or hostile record costs
// bounded memory.
const (
	MaxNameLen   = 255
	MaxPathLen   = 4096
	MaxLinks     = 65000
	MaxXattrs    = 1024
	MaxXattrName = 255
	MaxXattrSize = 64 << 10
	MaxMerged    = 64
)

const versionTag = 'V'

// Record formats: 2 added Alloc after Size. Format 1 records, written
// before, still decode (and re-encode byte for byte).
const (
	formatVersion = 2
	formatNoAlloc = 1
)

// Clone returns a deep copy whose slices can be changed freely.
func (v *Version) Clone() *Version {
	c := *v
	c.stored, c.format1 = Hash{}, false
	c.Links = slices.Clone(v.Links)
	c.Merged = slices.Clone(v.Merged)
	c.Xattrs = make([]Xattr, len(v.Xattrs))
	for i, x := range v.Xattrs {
		c.Xattrs[i] = Xattr{x.Name, slices.Clone(x.Value)}
	}
	return &c
}

// Normalize sorts Links, Xattrs and Merged (dropping repeats), so equal
// states encode equally; DecodeVersion accepts only normalized records.
func (v *Version) Normalize() {
	slices.SortFunc(v.Merged, func(a, b Hash) int { return slices.Compare(a[:], b[:]) })
	v.Merged = slices.Compact(v.Merged)
	slices.SortFunc(v.Links, compareLinks)
	v.Links = slices.Compact(v.Links)
	slices.SortFunc(v.Xattrs, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	v.Xattrs = slices.CompactFunc(v.Xattrs, func(a, b Xattr) bool { return a.Name == b.Name })
}

func compareLinks(a, b Link) int {
	if c := slices.Compare(a.Parent[:], b.Parent[:]); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// Encode returns the canonical encoding of v (call Normalize first).
func (v *Version) Encode() []byte {
	e := codec.Encoder{B: make([]byte, 0, 128+len(v.Target))}
	e.Byte(versionTag)
	if v.format1 {
		e.Byte(formatNoAlloc)
	} else {
		e.Byte(formatVersion)
	}
	e.Fixed(v.ID[:])
	e.Byte(byte(v.Kind))
	e.Uvarint(uint64(len(v.Links)))
	for _, l := range v.Links {
		e.Fixed(l.Parent[:])
		e.String(l.Name)
	}
	e.Uvarint(uint64(v.Mode))
	e.Uvarint(uint64(v.UID))
	e.Uvarint(uint64(v.GID))
	e.Uvarint(v.Size)
	if !v.format1 {
		e.Uvarint(v.Alloc)
	}
	e.Varint(v.Atime)
	e.Varint(v.Mtime)
	e.Varint(v.Ctime)
	e.Fixed(v.Content[:])
	e.String(v.Target)
	e.Uvarint(v.Rdev)
	e.Uvarint(uint64(len(v.Xattrs)))
	for _, x := range v.Xattrs {
		e.String(x.Name)
		e.Bytes(x.Value)
	}
	e.Byte(boolByte(v.Deleted))
	e.Fixed(v.Prev[:])
	e.Uvarint(uint64(len(v.Merged)))
	for _, h := range v.Merged {
		e.Fixed(h[:])
	}
	e.Uvarint(uint64(v.Stamp.Time))
	e.Fixed(v.Stamp.Site[:])
	return e.B
}

// Hash returns the version's identity.
func (v *Version) Hash() Hash { return Sum(v.Encode()) }

// StoredHash is Hash, without re-encoding when the store knows it (a
// version the store read or committed, not changed since).
func (v *Version) StoredHash() Hash { return v.storedHash() }

func (v *Version) storedHash() Hash {
	if !v.stored.IsZero() {
		return v.stored
	}
	return v.Hash()
}

// DecodeVersion parses an encoding made by Encode, checking every limit.
func DecodeVersion(b []byte) (*Version, error) {
	d := codec.Decoder{B: b}
	tag, format := d.Byte(), d.Byte()
	if tag != versionTag || (format != formatVersion && format != formatNoAlloc) {
		return nil, fmt.Errorf("decode version: %w: bad tag or format", codec.ErrMalformed)
	}
	v := &Version{format1: format == formatNoAlloc}
	d.Fixed(v.ID[:])
	v.Kind = Kind(d.Byte())
	v.Links = make([]Link, d.Count(MaxLinks, 17))
	for i := range v.Links {
		d.Fixed(v.Links[i].Parent[:])
		v.Links[i].Name = d.String(MaxNameLen)
	}
	v.Mode = d.Uint32()
	v.UID = d.Uint32()
	v.GID = d.Uint32()
	v.Size = d.Uvarint()
	if v.format1 {
		if v.Kind == KindFile {
			v.Alloc = v.Size
		}
	} else {
		v.Alloc = d.Uvarint()
	}
	v.Atime = d.Varint()
	v.Mtime = d.Varint()
	v.Ctime = d.Varint()
	d.Fixed(v.Content[:])
	v.Target = d.String(MaxPathLen)
	v.Rdev = d.Uvarint()
	v.Xattrs = make([]Xattr, d.Count(MaxXattrs, 2))
	for i := range v.Xattrs {
		v.Xattrs[i].Name = d.String(MaxXattrName)
		v.Xattrs[i].Value = d.Bytes(MaxXattrSize)
	}
	switch del := d.Byte(); del {
	case 0, 1:
		v.Deleted = del == 1
	default:
		d.Err = fmt.Errorf("%w: deleted flag %d", codec.ErrMalformed, del)
	}
	d.Fixed(v.Prev[:])
	if n := d.Count(MaxMerged, 32); n > 0 {
		v.Merged = make([]Hash, n)
		for i := range v.Merged {
			d.Fixed(v.Merged[i][:])
		}
	}
	v.Stamp.Time = hlc.Timestamp(d.Uvarint())
	d.Fixed(v.Stamp.Site[:])
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("decode version: %w", err)
	}
	if err := v.validate(); err != nil {
		return nil, fmt.Errorf("decode version: %w", err)
	}
	return v, nil
}

func (v *Version) validate() error {
	if !v.Kind.known() {
		return fmt.Errorf("%w: unknown kind %d", codec.ErrMalformed, v.Kind)
	}
	if v.Mode&^07777 != 0 {
		return fmt.Errorf("%w: mode %o has type bits", codec.ErrMalformed, v.Mode)
	}
	for i, l := range v.Links {
		if !ValidName(l.Name) {
			return fmt.Errorf("%w: bad name %q", codec.ErrMalformed, l.Name)
		}
		if i > 0 && compareLinks(v.Links[i-1], l) >= 0 {
			return fmt.Errorf("%w: links not sorted", codec.ErrMalformed)
		}
	}
	for i, x := range v.Xattrs {
		if i > 0 && v.Xattrs[i-1].Name >= x.Name {
			return fmt.Errorf("%w: xattrs not sorted", codec.ErrMalformed)
		}
	}
	for i, h := range v.Merged {
		if h.IsZero() || h == v.Prev || (i > 0 && slices.Compare(v.Merged[i-1][:], h[:]) >= 0) {
			return fmt.Errorf("%w: merged versions not sorted, unique and apart from prev", codec.ErrMalformed)
		}
	}
	if len(v.Merged) > 0 && v.Prev.IsZero() {
		return fmt.Errorf("%w: a merge without prev", codec.ErrMalformed)
	}
	if v.Alloc > v.Size || (v.Kind != KindFile && v.Alloc != 0) {
		return fmt.Errorf("%w: %d bytes allocated of %d", codec.ErrMalformed, v.Alloc, v.Size)
	}
	return nil
}

// ValidName reports whether s can be a directory entry name.
func ValidName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= MaxNameLen && !strings.ContainsAny(s, "/\x00")
}

// Xattr returns the value of the named attribute.
func (v *Version) Xattr(name string) ([]byte, bool) {
	for _, x := range v.Xattrs {
		if x.Name == name {
			return x.Value, true
		}
	}
	return nil, false
}

// SetXattr sets or, with a nil value, removes an attribute.
func (v *Version) SetXattr(name string, value []byte) {
	v.Xattrs = slices.DeleteFunc(v.Xattrs, func(x Xattr) bool { return x.Name == name })
	if value != nil {
		v.Xattrs = append(v.Xattrs, Xattr{name, slices.Clone(value)})
	}
	v.Normalize()
}

// HasLink reports whether v has the name (parent, name).
func (v *Version) HasLink(parent FileID, name string) bool {
	return slices.Contains(v.Links, Link{parent, name})
}

// RemoveLink drops one name.
func (v *Version) RemoveLink(parent FileID, name string) {
	v.Links = slices.DeleteFunc(v.Links, func(l Link) bool { return l == Link{parent, name} })
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}
