package store

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/geofs/geofs/internal/codec"
)

// Ref is one piece of a file's content: a chunk of Len bytes, or a hole of
// Len zero bytes when Hash is zero.
type Ref struct {
	Hash Hash
	Len  uint64
}

// IsHole reports whether r stands for zeros that are not stored.
func (r Ref) IsHole() bool { return r.Hash.IsZero() }

// A manifest is a merkle tree over a file's Refs. Leaf nodes list Refs;
// interior nodes list their children as Refs whose Len is the number of
// content bytes below them. Node boundaries are content-defined (see
// nodeBoundary), so a change to one chunk rewrites only the nodes on its path
// to the root: a small write costs O(log n) new metadata, and unchanged
// subtrees keep their hashes (and are not stored again).
const (
	leafTag     = 'L'
	interiorTag = 'I'
	// nodeFanout is the average number of entries per node; maxFanout bounds it.
	nodeFanout = 128
	maxFanout  = 1024
	// MaxChunkLen bounds one chunk; larger Refs can only be holes.
	MaxChunkLen = 16 << 20
)

// nodeBoundary reports whether a node ends after entry r: when the low bits
// of its hash say so (holes end a node, which is harmless).
func nodeBoundary(r Ref) bool {
	return binary.LittleEndian.Uint32(r.Hash[28:])%nodeFanout == 0
}

func encodeNode(tag byte, refs []Ref) []byte {
	e := codec.Encoder{B: make([]byte, 0, 3+len(refs)*36)}
	e.Byte(tag)
	e.Uvarint(uint64(len(refs)))
	for _, r := range refs {
		e.Fixed(r.Hash[:])
		e.Uvarint(r.Len)
	}
	return e.B
}

// DecodeNode parses a manifest node, returning whether it is a leaf.
func DecodeNode(b []byte) (refs []Ref, leaf bool, err error) {
	d := codec.Decoder{B: b}
	tag := d.Byte()
	if tag != leafTag && tag != interiorTag {
		return nil, false, fmt.Errorf("decode manifest node: %w: bad tag", codec.ErrMalformed)
	}
	refs = make([]Ref, d.Count(maxFanout, 33))
	for i := range refs {
		d.Fixed(refs[i].Hash[:])
		refs[i].Len = d.Uvarint()
		if tag == leafTag && !refs[i].IsHole() && refs[i].Len > MaxChunkLen {
			d.Err = fmt.Errorf("%w: chunk length %d", codec.ErrMalformed, refs[i].Len)
		}
	}
	if err := d.Finish(); err != nil {
		return nil, false, fmt.Errorf("decode manifest node: %w", err)
	}
	return refs, tag == leafTag, nil
}

// NodeWriter stores a manifest node under its hash.
type NodeWriter func(h Hash, node []byte) error

// BuildManifest stores the tree for refs through put and returns its root.
// Empty content has the zero root.
func BuildManifest(refs []Ref, put NodeWriter) (Hash, error) {
	if len(refs) == 0 {
		return Hash{}, nil
	}
	tag := byte(leafTag)
	for {
		parents, err := buildLevel(tag, refs, put)
		if err != nil {
			return Hash{}, err
		}
		if len(parents) == 1 {
			return parents[0].Hash, nil
		}
		refs, tag = parents, interiorTag
	}
}

func buildLevel(tag byte, refs []Ref, put NodeWriter) ([]Ref, error) {
	var parents []Ref
	start := 0
	for i, r := range refs {
		last := i == len(refs)-1
		if !last && !nodeBoundary(r) && i+1-start < maxFanout {
			continue
		}
		node := encodeNode(tag, refs[start:i+1])
		h := Sum(node)
		if err := put(h, node); err != nil {
			return nil, fmt.Errorf("store manifest node: %w", err)
		}
		parents = append(parents, Ref{h, sumLen(refs[start : i+1])})
		start = i + 1
	}
	return parents, nil
}

func sumLen(refs []Ref) uint64 {
	var n uint64
	for _, r := range refs {
		n += r.Len
	}
	return n
}

// NodeReader loads a manifest node by hash.
type NodeReader func(h Hash) ([]byte, error)

// Extents is a file's content flattened: Refs in order with their offsets.
type Extents struct {
	Root Hash // the manifest root (zero when not from a stored manifest)
	Refs []Ref
	Offs []uint64 // Offs[i] is where Refs[i] starts
	Size uint64
}

// FlattenManifest reads the whole tree under root.
func FlattenManifest(root Hash, get NodeReader) (*Extents, error) {
	x := &Extents{}
	if root.IsZero() {
		return x, nil
	}
	if err := flattenNode(root, get, x, 0); err != nil {
		return nil, err
	}
	return x, nil
}

func flattenNode(h Hash, get NodeReader, x *Extents, depth int) error {
	if depth > 16 {
		return fmt.Errorf("manifest %s: %w: tree too deep", h.Short(), codec.ErrMalformed)
	}
	b, err := get(h)
	if err != nil {
		return err
	}
	refs, leaf, err := DecodeNode(b)
	if err != nil {
		return fmt.Errorf("manifest node %s: %w", h.Short(), err)
	}
	for _, r := range refs {
		if !leaf {
			if err := flattenNode(r.Hash, get, x, depth+1); err != nil {
				return err
			}
			continue
		}
		x.Append(r)
	}
	return nil
}

// Data returns how many bytes of x are data, not holes (Version.Alloc).
func (x *Extents) Data() uint64 {
	var n uint64
	for _, r := range x.Refs {
		if !r.IsHole() {
			n += r.Len
		}
	}
	return n
}

// Append adds r at the end, merging adjacent holes.
func (x *Extents) Append(r Ref) {
	if r.Len == 0 {
		return
	}
	if n := len(x.Refs); n > 0 && r.IsHole() && x.Refs[n-1].IsHole() {
		x.Refs[n-1].Len += r.Len
	} else {
		x.Refs = append(x.Refs, r)
		x.Offs = append(x.Offs, x.Size)
	}
	x.Size += r.Len
}

// Find returns the index of the extent holding byte off, or len(Refs) when
// off is at or past the end.
func (x *Extents) Find(off uint64) int {
	return sort.Search(len(x.Offs), func(i int) bool { return x.Offs[i]+x.Refs[i].Len > off })
}

// WalkManifest calls fn with the hash of every node of the manifest under
// root that get can read.
func WalkManifest(root Hash, get NodeReader, fn func(Hash)) {
	if root.IsZero() {
		return
	}
	var walk func(h Hash, depth int)
	walk = func(h Hash, depth int) {
		fn(h)
		b, err := get(h)
		if err != nil || depth > 16 {
			return
		}
		refs, leaf, err := DecodeNode(b)
		if err != nil || leaf {
			return
		}
		for _, r := range refs {
			walk(r.Hash, depth+1)
		}
	}
	walk(root, 0)
}
