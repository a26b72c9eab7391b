// Package codec holds the small binary encoder and decoder used by every
// geofs on-disk and wire format: unsigned varints, fixed-size ids and
// length-prefixed byte strings.
//
// A Decoder never panics on malformed input: the first problem is kept in
// Err and every later read returns zero values, so a decode function can
// read all of its fields and check Err once at the end.
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrMalformed marks every decoding failure.
var ErrMalformed = errors.New("malformed encoding")

// Encoder appends to a byte slice.
type Encoder struct{ B []byte }

// Uvarint appends v as an unsigned varint.
func (e *Encoder) Uvarint(v uint64) { e.B = binary.AppendUvarint(e.B, v) }

// Varint appends v as a signed varint.
func (e *Encoder) Varint(v int64) { e.B = binary.AppendVarint(e.B, v) }

// Byte appends one byte.
func (e *Encoder) Byte(b byte) { e.B = append(e.B, b) }

// Fixed appends b as it is (for fixed-size ids).
func (e *Encoder) Fixed(b []byte) { e.B = append(e.B, b...) }

// Bytes appends a length-prefixed byte string.
func (e *Encoder) Bytes(b []byte) {
	e.Uvarint(uint64(len(b)))
	e.B = append(e.B, b...)
}

// String appends a length-prefixed string.
func (e *Encoder) String(s string) {
	e.Uvarint(uint64(len(s)))
	e.B = append(e.B, s...)
}

// Decoder reads from a byte slice. See the package comment for error handling.
type Decoder struct {
	B   []byte
	Err error
}

func (d *Decoder) fail(what string) {
	if d.Err == nil {
		d.Err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
	d.B = nil
}

// Uvarint reads an unsigned varint. Only the shortest encoding of a value
// is accepted, so that every value has one encoding (records are named by
// the hash of their bytes).
func (d *Decoder) Uvarint() uint64 {
	v, n := binary.Uvarint(d.B)
	if n <= 0 || n != uvarintLen(v) {
		d.fail("bad uvarint")
		return 0
	}
	d.B = d.B[n:]
	return v
}

// Uint32 reads an unsigned varint that must fit in 32 bits (a mode, an
// owner): a larger value cut to 32 bits would encode back to other bytes,
// so two records would decode to one.
func (d *Decoder) Uint32() uint32 {
	v := d.Uvarint()
	if v > math.MaxUint32 {
		d.fail("value over 32 bits")
		return 0
	}
	return uint32(v)
}

// Varint reads a signed varint (shortest encoding only).
func (d *Decoder) Varint() int64 {
	v, n := binary.Varint(d.B)
	if n <= 0 || n != len(binary.AppendVarint(nil, v)) {
		d.fail("bad varint")
		return 0
	}
	d.B = d.B[n:]
	return v
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// Byte reads one byte.
func (d *Decoder) Byte() byte {
	if len(d.B) < 1 {
		d.fail("short input")
		return 0
	}
	b := d.B[0]
	d.B = d.B[1:]
	return b
}

// Fixed fills dst from the input.
func (d *Decoder) Fixed(dst []byte) {
	if len(d.B) < len(dst) {
		d.fail("short input")
		return
	}
	copy(dst, d.B)
	d.B = d.B[len(dst):]
}

// Bytes reads a length-prefixed byte string of at most max bytes. The result
// aliases the input.
func (d *Decoder) Bytes(max int) []byte {
	n := d.Uvarint()
	if d.Err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(d.B)) {
		d.fail("length out of range")
		return nil
	}
	b := d.B[:n:n]
	d.B = d.B[n:]
	return b
}

// String reads a length-prefixed string of at most max bytes.
func (d *Decoder) String(max int) string { return string(d.Bytes(max)) }

// Count reads an element count, refusing more than max or more than the
// remaining input could hold at minSize bytes per element, so that a hostile
// count cannot make the caller allocate unbounded memory.
func (d *Decoder) Count(max, minSize int) int {
	n := d.Uvarint()
	if d.Err != nil {
		return 0
	}
	if n > uint64(max) || n*uint64(minSize) > uint64(len(d.B)) {
		d.fail("count out of range")
		return 0
	}
	return int(n)
}

// Finish reports Err, or an error if input is left over.
func (d *Decoder) Finish() error {
	if d.Err == nil && len(d.B) != 0 {
		d.fail("trailing bytes")
	}
	return d.Err
}
