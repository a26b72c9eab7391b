package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/zeebo/blake3"
)

// Hash is the content id of a chunk, manifest node or version record: the
// BLAKE3-256 of its bytes (docs/hashbench.md: twice SHA-256's speed on
// 1 MiB chunks on this hardware, SHA-NI included). The zero Hash
// means "nothing": an empty file's content, a first version's predecessor, a
// hole in a manifest.
type Hash [32]byte

// Sum returns the Hash of b.
func Sum(b []byte) Hash { return Hash(blake3.Sum256(b)) }

// IsZero reports whether h is the zero Hash.
func (h Hash) IsZero() bool { return h == Hash{} }

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Short is the first 12 hex digits, enough to name a version to a person.
func (h Hash) Short() string { return h.String()[:12] }

// ParseHash parses the 64 hex digits written by Hash.String.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if err := parseHex(h[:], s); err != nil {
		return h, fmt.Errorf("parse hash %q: %w", s, err)
	}
	return h, nil
}

// FileID is the stable identity of a file, directory or symlink: random,
// given at creation, never changed by renames or new versions.
type FileID [16]byte

// RootID is the file id of the namespace root, the same at every site.
var RootID = FileID{15: 1}

// NewFileID returns a random file id.
func NewFileID() FileID {
	var id FileID
	if _, err := rand.Read(id[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return id
}

func (id FileID) String() string { return hex.EncodeToString(id[:]) }

// Ino is the inode number the mount reports for id: its first 8 bytes
// without the top bit (the root is 1). Programs that keep inode numbers in
// a signed 64-bit integer (Java's long, SQL's BIGINT) see them positive.
// Two random ids share an Ino with probability 2^-63 per pair.
func (id FileID) Ino() uint64 {
	if id == RootID {
		return 1
	}
	var v uint64
	for _, b := range id[:8] {
		v = v<<8 | uint64(b)
	}
	v &^= 1 << 63
	if v <= 1 {
		v += 2
	}
	return v
}

// ParseFileID parses the 32 hex digits written by FileID.String.
func ParseFileID(s string) (FileID, error) {
	var id FileID
	if err := parseHex(id[:], s); err != nil {
		return id, fmt.Errorf("parse file id %q: %w", s, err)
	}
	return id, nil
}

// SiteID names a site: the first 16 bytes of the SHA-256 of its ed25519 public key,
// so a peer can check it against the key it proves.
type SiteID [16]byte

func (id SiteID) String() string { return hex.EncodeToString(id[:]) }

// ParseSiteID parses the 32 hex digits written by SiteID.String.
func ParseSiteID(s string) (SiteID, error) {
	var id SiteID
	if err := parseHex(id[:], s); err != nil {
		return id, fmt.Errorf("parse site id %q: %w", s, err)
	}
	return id, nil
}

func parseHex(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("want %d hex digits, got %d", 2*len(dst), len(s))
	}
	_, err := hex.Decode(dst, []byte(s))
	return err
}
