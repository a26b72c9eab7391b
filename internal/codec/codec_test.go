package codec

import (
	"errors"
	"math"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var e Encoder
	e.Uvarint(300)
	e.Varint(-5)
	e.Byte(7)
	e.Fixed([]byte{1, 2})
	e.Bytes([]byte("abc"))
	e.String("name")
	d := Decoder{B: e.B}
	var fixed [2]byte
	u, v, b := d.Uvarint(), d.Varint(), d.Byte()
	d.Fixed(fixed[:])
	bs, s := d.Bytes(10), d.String(10)
	if err := d.Finish(); err != nil || u != 300 || v != -5 || b != 7 || fixed != [2]byte{1, 2} || string(bs) != "abc" || s != "name" {
		t.Fatalf("round trip: %v %d %d %d %v %q %q", err, u, v, b, fixed, bs, s)
	}
}

func TestRejects(t *testing.T) {
	for name, in := range map[string][]byte{
		"non-minimal uvarint": {0x80, 0x00},
		"truncated uvarint":   {0x80},
		"length past end":     {0x05, 'a'},
		"trailing bytes":      {0x01, 0x00},
	} {
		d := Decoder{B: in}
		d.Uvarint()
		if name == "length past end" {
			d = Decoder{B: in}
			d.Bytes(100)
		}
		if err := d.Finish(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	d := Decoder{B: []byte{0x80, 0x00}}
	d.Varint()
	if d.Err == nil {
		t.Error("non-minimal varint accepted")
	}
}

func TestCountBoundsAllocation(t *testing.T) {
	var e Encoder
	e.Uvarint(1 << 40) // claims a trillion elements
	d := Decoder{B: e.B}
	if n := d.Count(1<<20, 1); n != 0 || d.Err == nil {
		t.Fatalf("Count accepted %d elements from %d bytes", n, len(e.B))
	}
}

func TestUint32TakesOnly32Bits(t *testing.T) {
	var e Encoder
	e.Uvarint(math.MaxUint32)
	e.Uvarint(math.MaxUint32 + 1)
	d := Decoder{B: e.B}
	if v := d.Uint32(); v != math.MaxUint32 || d.Err != nil {
		t.Fatalf("largest 32-bit value: %d, %v", v, d.Err)
	}
	if v := d.Uint32(); v != 0 || !errors.Is(d.Err, ErrMalformed) {
		t.Fatalf("a 33-bit value read as %d, err %v; want ErrMalformed", v, d.Err)
	}
}
