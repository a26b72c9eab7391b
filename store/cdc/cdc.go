package cdc

import (
	"errors"
	"math/bits"
)

// Params bound chunk sizes in bytes.
type Params struct{ Min, Avg, Max int }

// Default: Min 256 KiB, Avg 1 MiB, Max 4 MiB.
var Default = Params{Min: 256 << 10, Avg: 1 << 20, Max: 4 << 20}

// Validate reports whether the params are usable (0 < Min <= Avg <= Max, Avg a power of two).
func (p Params) Validate() error {
	switch {
	case p.Min <= 0:
		return errors.New("cdc: Min must be positive")
	case p.Min > p.Avg:
		return errors.New("cdc: Min must not exceed Avg")
	case p.Avg > p.Max:
		return errors.New("cdc: Avg must not exceed Max")
	case p.Avg&(p.Avg-1) != 0:
		return errors.New("cdc: Avg must be a power of two")
	}
	return nil
}

// Cut returns the length of the first chunk of buf. It never returns more than Max.
// When no boundary is found within buf and len(buf) < Max: if eof it returns len(buf), otherwise 0 (the caller must supply more data).
// A boundary depends only on the bytes from the start of buf, so that chunking resynchronises after an edit.
//
// Cut panics if p is not valid (see Validate).
func (p Params) Cut(buf []byte, eof bool) int {
	if err := p.Validate(); err != nil {
		panic(err)
	}
	limit := min(len(buf), p.Max)
	if limit > p.Min {
		if n := p.scan(buf[:limit]); n > 0 {
			return n
		}
	}
	switch {
	case limit == p.Max:
		return p.Max
	case eof:
		return len(buf)
	default:
		return 0
	}
}

// Split returns the lengths of the chunks of data, which is taken to be
// complete (eof). The lengths sum to len(data); it returns nil for empty data.
func (p Params) Split(data []byte) []int {
	var lens []int
	for len(data) > 0 {
		n := p.Cut(data, true)
		lens = append(lens, n)
		data = data[n:]
	}
	return lens
}

// scan looks for a boundary in buf (Min < len(buf) <= Max) and returns the
// chunk length, or 0 if there is none.
func (p Params) scan(buf []byte) int {
	strict, loose := p.masks()
	normal := min(p.Avg, len(buf))
	n, h, ok := roll(buf[p.Min:normal], 0, strict)
	if ok {
		return p.Min + n
	}
	n, _, ok = roll(buf[normal:], h, loose)
	if ok {
		return normal + n
	}
	return 0
}

// roll feeds buf into the gear hash h, stopping after the first byte at which
// h&mask == 0. It returns the number of bytes consumed, the hash, and whether
// a boundary was found.
//
// Each step h = h<<1 + gear[b] waits for the one before, so one hash runs at
// about two cycles a byte. roll runs three hashes side by side instead, over
// neighbouring 16 KiB lanes of the buffer, which is exact because of the
// window: bit k of h depends only on the last k+1 bytes, so all 64 bits at
// any offset depend only on the 64 bytes ending there. Each later lane
// starts from the hash of the 64 bytes before it (warm), and holds exactly
// the hash a single serial pass would. A hit in the first lane is the
// answer; a hit in a later one is, once the rest of each lane before it has
// none (laneHit). Four steps a turn keep the loop's own count and bounds
// checks small; four lanes no longer fit in the registers and are slower.
func roll(buf []byte, h, mask uint64) (int, uint64, bool) {
	const lane = 16 << 10
	g := &gear
	off := 0
	for len(buf)-off >= 3*lane {
		a := buf[off : off+lane : off+lane]
		b := buf[off+lane : off+2*lane : off+2*lane]
		c := buf[off+2*lane : off+3*lane : off+3*lane]
		ha, hb, hc := h, warm(a), warm(b)
		for i := 0; i < lane; i += 4 {
			x, y, z := a[i:i+4:i+4], b[i:i+4:i+4], c[i:i+4:i+4]
			ha, hb, hc = 2*ha+g[x[0]], 2*hb+g[y[0]], 2*hc+g[z[0]]
			if ha&mask == 0 || hb&mask == 0 || hc&mask == 0 {
				return laneHit(buf[off:off+3*lane], lane, i, [3]uint64{ha, hb, hc}, mask, off)
			}
			ha, hb, hc = 2*ha+g[x[1]], 2*hb+g[y[1]], 2*hc+g[z[1]]
			if ha&mask == 0 || hb&mask == 0 || hc&mask == 0 {
				return laneHit(buf[off:off+3*lane], lane, i+1, [3]uint64{ha, hb, hc}, mask, off)
			}
			ha, hb, hc = 2*ha+g[x[2]], 2*hb+g[y[2]], 2*hc+g[z[2]]
			if ha&mask == 0 || hb&mask == 0 || hc&mask == 0 {
				return laneHit(buf[off:off+3*lane], lane, i+2, [3]uint64{ha, hb, hc}, mask, off)
			}
			ha, hb, hc = 2*ha+g[x[3]], 2*hb+g[y[3]], 2*hc+g[z[3]]
			if ha&mask == 0 || hb&mask == 0 || hc&mask == 0 {
				return laneHit(buf[off:off+3*lane], lane, i+3, [3]uint64{ha, hb, hc}, mask, off)
			}
		}
		h = hc
		off += 3 * lane
	}
	n, h, ok := rollSerial(buf[off:], h, mask)
	return off + n, h, ok
}

// warm returns the hash after the last window bytes of the lane before.
func warm(prev []byte) uint64 {
	var h uint64
	for _, c := range prev[len(prev)-window:] {
		h = 2*h + gear[c]
	}
	return h
}

// laneHit is roll's answer once some lane has a boundary at step i (hs the
// lanes' hashes there): the first lane's, or else the earliest one after
// it, looking at the rest of each earlier lane first.
func laneHit(block []byte, lane, i int, hs [3]uint64, mask uint64, off int) (int, uint64, bool) {
	last := len(hs) - 1
	for k, h := range hs[:last] {
		if h&mask == 0 {
			return off + k*lane + i + 1, h, true
		}
		start := k*lane + i + 1
		if n, h, ok := rollSerial(block[start:(k+1)*lane], h, mask); ok {
			return off + start + n, h, true
		}
	}
	return off + last*lane + i + 1, hs[last], true
}

// window is how many trailing bytes the gear hash depends on.
const window = 64

// rollSerial is roll one byte at a time.
func rollSerial(buf []byte, h, mask uint64) (int, uint64, bool) {
	g := &gear
	for i, b := range buf {
		h = 2*h + g[b]
		if h&mask == 0 {
			return i + 1, h, true
		}
	}
	return len(buf), h, false
}

// masks returns the strict mask (log2(Avg)+2 bits), used before Avg, and the
// loose mask (log2(Avg)-2 bits), used after it: normalized chunking level 2.
func (p Params) masks() (strict, loose uint64) {
	lg := bits.Len(uint(p.Avg)) - 1
	return topBits(lg + 2), topBits(lg - 2)
}

// topBits returns a mask of the n most significant bits, n clamped to [1, 64].
func topBits(n int) uint64 {
	n = max(1, min(n, 64))
	return ^uint64(0) << (64 - n)
}
