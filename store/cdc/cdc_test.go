package cdc

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
)

// small is a set of small params exercised by the golden and property tests.
var small = Params{Min: 2 << 10, Avg: 8 << 10, Max: 32 << 10}

// testData returns n deterministic pseudo-random bytes from a xorshift64
// generator. Unlike math/rand, its stream can never change.
func testData(n int, seed uint64) []byte {
	out := make([]byte, n+8)
	x := seed
	for i := 0; i < n; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(out[i:], x)
	}
	return out[:n]
}

func TestGearTable(t *testing.T) {
	for i, got := range gear {
		sum := sha256.Sum256(fmt.Appendf(nil, "geofs fastcdc gear %d", i))
		if want := binary.BigEndian.Uint64(sum[:8]); got != want {
			t.Fatalf("gear[%d] = %#016x, derivation gives %#016x", i, got, want)
		}
	}
}

// The golden vectors pin the on-disk chunk boundaries: if they change, every
// chunk boundary of existing stores changes too.
func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		p    Params
		data []byte
		want []int
	}{
		{"Default", Default, testData(24<<20, 1), goldenDefault},
		{"Small", small, testData(256<<10, 2), goldenSmall},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Split(tt.data); !slices.Equal(got, tt.want) {
				t.Errorf("Split = %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

var goldenDefault = []int{
	1284037, 1416506, 1243170, 394143, 326505, 1125807, 1169341, 539475,
	653008, 700983, 1107511, 1067445, 1339515, 1528186, 633581, 735857,
	1035215, 1132348, 265859, 1566224, 1142026, 1004011, 855027, 645705,
	1075563, 749355, 429421,
}

var goldenSmall = []int{
	8632, 9091, 8785, 10888, 9321, 12939, 7742, 9571,
	17492, 9994, 7488, 11824, 8483, 8699, 8386, 11343,
	8389, 8591, 9120, 10869, 8646, 9492, 8263, 9696,
	10988, 8449, 8963,
}

func TestValidate(t *testing.T) {
	tests := []struct {
		p  Params
		ok bool
	}{
		{Default, true},
		{small, true},
		{Params{1, 1, 1}, true},
		{Params{8, 8, 8}, true},
		{Params{0, 8, 16}, false},
		{Params{-1, 8, 16}, false},
		{Params{16, 8, 16}, false},
		{Params{4, 16, 8}, false},
		{Params{4, 12, 16}, false},
		{Params{4, 0, 16}, false},
	}
	for _, tt := range tests {
		if err := tt.p.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tt.p, err, tt.ok)
		}
	}
}

func TestCutPanicsOnInvalidParams(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Cut with invalid params did not panic")
		}
	}()
	Params{Min: 4, Avg: 12, Max: 16}.Cut(make([]byte, 100), true)
}

func TestEmpty(t *testing.T) {
	for _, eof := range []bool{false, true} {
		if n := Default.Cut(nil, eof); n != 0 {
			t.Errorf("Cut(nil, %v) = %d, want 0", eof, n)
		}
	}
	if lens := Default.Split(nil); lens != nil {
		t.Errorf("Split(nil) = %v, want nil", lens)
	}
}

func TestChunkBounds(t *testing.T) {
	for _, p := range []Params{Default, small, {Min: 64, Avg: 256, Max: 1024}} {
		data := testData(2048*p.Avg/256+12345, 3)
		lens := p.Split(data)
		checkLens(t, p, data, lens)
		mean := len(data) / len(lens)
		if mean < p.Avg/2 || mean > 2*p.Avg {
			t.Errorf("%+v: mean chunk size %d, too far from Avg", p, mean)
		}
	}
}

// checkLens checks that lens partitions data into chunks of [Min, Max] bytes,
// except the last one which may be shorter.
func checkLens(t *testing.T, p Params, data []byte, lens []int) {
	t.Helper()
	total := 0
	for i, n := range lens {
		last := i == len(lens)-1
		if n > p.Max || n < 1 || (n < p.Min && !last) {
			t.Fatalf("%+v: chunk %d/%d has length %d", p, i, len(lens), n)
		}
		total += n
	}
	if total != len(data) {
		t.Fatalf("%+v: chunks sum to %d, want %d", p, total, len(data))
	}
}

func TestZeros(t *testing.T) {
	for _, p := range []Params{Default, small} {
		data := make([]byte, 5*p.Max+123)
		want := []int{p.Max, p.Max, p.Max, p.Max, p.Max, 123}
		if got := p.Split(data); !slices.Equal(got, want) {
			t.Errorf("%+v: Split(zeros) = %v, want %v", p, got, want)
		}
	}
}

// offsets returns the end offsets of the chunks of data.
func offsets(p Params, data []byte) []int {
	var ends []int
	end := 0
	for _, n := range p.Split(data) {
		end += n
		ends = append(ends, end)
	}
	return ends
}

func TestResync(t *testing.T) {
	orig := testData(32<<20, 4)
	pos := 16<<20 + 12345
	tests := []struct {
		name  string
		edit  []byte
		shift int
	}{
		{"insert", slices.Concat(orig[:pos], testData(1000, 5), orig[pos:]), 1000},
		{"delete", slices.Concat(orig[:pos], orig[pos+777:]), -777},
		{"overwrite", slices.Concat(orig[:pos], testData(100, 6), orig[pos+100:]), 0},
	}
	before := offsets(Default, orig)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkResync(t, before, offsets(Default, tt.edit), pos, tt.shift)
		})
	}
}

// checkResync checks that chunk ends before the edit at pos are unchanged and
// that all but at most two of those after it are found again, shifted.
func checkResync(t *testing.T, before, after []int, pos, shift int) {
	t.Helper()
	var later, found int
	for _, end := range before {
		switch {
		case end <= pos && !slices.Contains(after, end):
			t.Errorf("chunk end %d before the edit at %d changed", end, pos)
		case end > pos:
			later++
			if slices.Contains(after, end+shift) {
				found++
			}
		}
	}
	if later < 10 || found < later-2 {
		t.Errorf("only %d of %d chunk ends after the edit resynchronised", found, later)
	}
}

// TestCutNeedsMore checks that Cut(buf[:k], false) is 0 exactly when the
// first boundary c of the stream lies beyond k, and c otherwise.
func TestCutNeedsMore(t *testing.T) {
	for _, p := range []Params{Default, small} {
		data := testData(3*p.Max, 7)
		for off := 0; off < len(data)-p.Max; off += p.Avg / 3 {
			checkPrefixes(t, p, data[off:])
		}
	}
}

func checkPrefixes(t *testing.T, p Params, buf []byte) {
	t.Helper()
	c := p.Cut(buf, false)
	if c == 0 {
		t.Fatalf("%+v: Cut of %d bytes (>= Max) returned 0", p, len(buf))
	}
	for _, k := range []int{0, 1, p.Min - 1, p.Min, p.Min + 1, c / 2, c - 1, c, c + 1, p.Max - 1, p.Max} {
		k = max(0, min(k, len(buf)))
		want, wantEOF := 0, k
		if k >= c {
			want, wantEOF = c, c
		}
		if got := p.Cut(buf[:k], false); got != want {
			t.Errorf("%+v: Cut(%d bytes, false) = %d, want %d (first chunk %d)", p, k, got, want, c)
		}
		if got := p.Cut(buf[:k], true); got != wantEOF {
			t.Errorf("%+v: Cut(%d bytes, true) = %d, want %d (first chunk %d)", p, k, got, wantEOF, c)
		}
	}
}

func TestStreaming(t *testing.T) {
	for _, p := range []Params{Default, small} {
		data := testData(4*p.Max+999, 8)
		for _, step := range []int{p.Max/32 + 3, p.Max / 3, p.Max} {
			checkStreaming(t, p, data, step)
		}
	}
}

// checkStreaming feeds data to Cut step bytes at a time, as a reader would,
// and checks that the chunks are those of Split.
func checkStreaming(t *testing.T, p Params, data []byte, step int) {
	t.Helper()
	var got []int
	var buf []byte
	for rest := data; ; {
		n := min(step, len(rest))
		buf, rest = append(buf, rest[:n]...), rest[n:]
		for len(buf) > 0 {
			c := p.Cut(buf, len(rest) == 0)
			if c == 0 {
				break
			}
			got, buf = append(got, c), buf[c:]
		}
		if len(rest) == 0 {
			break
		}
	}
	if want := p.Split(data); !slices.Equal(got, want) {
		t.Errorf("%+v, step %d: streamed chunks %v, want %v", p, step, got, want)
	}
}

// TestRollLanes checks the three-lane roll against the one-byte-at-a-time
// definition, with masks loose enough that boundaries fall in any lane,
// with and without later ones in the lanes before, near lane edges and past
// the end, and at every buffer length around a block of lanes.
func TestRollLanes(t *testing.T) {
	data := testData(4<<20, 11)
	for _, bits := range []int{10, 14, 15, 16, 18, 22} {
		mask := topBits(bits)
		for rest, h := data, uint64(0); len(rest) > 0; {
			n, hh, ok := roll(rest, h, mask)
			sn, sh, sok := rollSerial(rest, h, mask)
			if n != sn || hh != sh || ok != sok {
				t.Fatalf("mask %d bits at %d: roll = %d %x %v, serial %d %x %v",
					bits, len(data)-len(rest), n, hh, ok, sn, sh, sok)
			}
			rest, h = rest[n:], hh^uint64(n)
		}
	}
	const block = 48 << 10 // three lanes
	mask := topBits(30)    // no boundaries: the whole buffer is hashed
	for _, n := range []int{0, 1, window, block - 1, block, block + 1, 2*block - 1, 2 * block, 2*block + 7} {
		n1, h1, ok1 := roll(data[:n], 5, mask)
		n2, h2, ok2 := rollSerial(data[:n], 5, mask)
		if n1 != n2 || h1 != h2 || ok1 != ok2 {
			t.Fatalf("length %d: roll = %d %x %v, serial %d %x %v", n, n1, h1, ok1, n2, h2, ok2)
		}
	}
}

// TestRollLaneStarts puts the first boundary at each of the first bytes of
// the second and third lanes, and just past them, where a lane's hash is
// the one its warm-up made: elsewhere a wrong warm-up is hidden, since the
// hash forgets it after 64 bytes.
func TestRollLaneStarts(t *testing.T) {
	const lane = 16 << 10
	data := testData(16<<20, 12)
	mask := topBits(16)
	// Boundaries with no other in the 3 lanes before them.
	var ends []int
	for at, prev, h := 0, 0, uint64(0); ; {
		n, hh, ok := rollSerial(data[at:], h, mask)
		if !ok {
			break
		}
		at, h = at+n, hh
		if at-prev > 3*lane+window {
			ends = append(ends, at)
		}
		prev = at
	}
	if len(ends) < 10 {
		t.Fatalf("only %d isolated boundaries", len(ends))
	}
	for k, j := range []int{0, 1, 2, window - 2, window - 1, window, window + 1} {
		for _, inLane := range []int{1, 2} {
			end := ends[(k*2+inLane)%len(ends)]
			start := end - 1 - (inLane*lane + j) // the boundary byte is at inLane*lane+j
			var h uint64                         // the hash at start: of the window bytes before it
			for _, c := range data[start-window : start] {
				h = 2*h + gear[c]
			}
			n, hh, ok := roll(data[start:], h, mask)
			sn, sh, sok := rollSerial(data[start:], h, mask)
			if n != sn || hh != sh || ok != sok || n != end-start {
				t.Fatalf("boundary %d bytes into lane %d: roll = %d %x %v, serial %d %x %v (want %d)",
					j, inLane, n, hh, ok, sn, sh, sok, end-start)
			}
		}
	}
}

func FuzzCut(f *testing.F) {
	f.Add([]byte("hello, world"), uint16(3), uint8(4), uint16(5), uint16(2))
	f.Add(bytes.Repeat([]byte{0}, 3000), uint16(64), uint8(8), uint16(700), uint16(100))
	f.Add(testData(5000, 9), uint16(100), uint8(9), uint16(1000), uint16(333))
	f.Fuzz(func(t *testing.T, data []byte, minSize uint16, avgLog uint8, extra, step uint16) {
		avg := 1 << (avgLog % 12)
		p := Params{Min: 1 + int(minSize)%avg, Avg: avg, Max: avg + int(extra)%(4*avg)}
		lens := p.Split(data)
		checkLens(t, p, data, lens)
		for i, off := 0, 0; i < len(lens); off, i = off+lens[i], i+1 {
			checkChunk(t, p, data[off:], lens[i], i == len(lens)-1)
		}
		// At most ~256 reads, so that the quadratic rescanning stays cheap.
		checkStreaming(t, p, data, max(1+int(step), len(data)/256))
	})
}

// checkChunk checks Cut on the prefixes of rest around its first chunk, of
// length c. The last chunk may have been cut only because of eof.
func checkChunk(t *testing.T, p Params, rest []byte, c int, last bool) {
	t.Helper()
	if got := p.Cut(rest[:c-1], false); got != 0 {
		t.Fatalf("%+v: Cut(%d bytes, false) = %d, want 0 (chunk %d)", p, c-1, got, c)
	}
	if got := p.Cut(rest[:c-1], true); got != c-1 {
		t.Fatalf("%+v: Cut(%d bytes, true) = %d, want %d", p, c-1, got, c-1)
	}
	if got := p.Cut(rest, false); got != c && !(last && got == 0) {
		t.Fatalf("%+v: Cut(%d bytes, false) = %d, want %d", p, len(rest), got, c)
	}
}

func BenchmarkCut(b *testing.B) {
	for _, bc := range []struct {
		name string
		p    Params
	}{{"Default", Default}, {"Small", small}} {
		b.Run(bc.name, func(b *testing.B) {
			data := testData(64<<20, 10)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				for rest := data; len(rest) > 0; {
					rest = rest[bc.p.Cut(rest, true):]
				}
			}
		})
	}
}
