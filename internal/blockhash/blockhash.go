// Package blockhash hashes 16 KiB blocks with BLAKE3 in derive-key mode,
// the way geofs names and verifies chunk blocks, using AVX-512 where the CPU
// has it.
//
// A 16 KiB input is a BLAKE3 tree of 16 chunks of 1 KiB: 16 chunk
// compressions of 16 blocks each, then 8, 4, 2 and 1 parent compressions.
// compress16 runs one compression on 16 independent inputs at once, one per
// 32-bit lane, so a block's 16 chunks go through it together, and the
// parents of many blocks go through it together too. General-purpose BLAKE3
// libraries work lane-wise only along one input's chunks, and the Go ones
// stop at AVX2 (8 lanes) or gather their message words one by one; on this
// project's machines (AMD Zen 5, full-width AVX-512) this kernel hashes
// 16 KiB blocks 2.4 to 2.9 times as fast as github.com/zeebo/blake3 (one
// block at a time, or 64 per call). The kernel compresses full 64-byte
// blocks only (blockLen), which is all a 16 KiB block holds.
//
// Without AVX-512 (or for other lengths) the callers use zeebo/blake3: the
// results are identical, which the tests check against it.
package blockhash

//go:generate go run gen.go

import (
	"encoding/binary"
	"sync"
	"unsafe"
)

// Size is the length of the blocks this package hashes.
const Size = 16 << 10

const (
	chunkLen = 1024
	chunks   = Size / chunkLen // per block: one lane each
)

// BLAKE3's domain flags.
const (
	flagChunkStart        = 1 << 0
	flagChunkEnd          = 1 << 1
	flagParent            = 1 << 2
	flagRoot              = 1 << 3
	flagDeriveKeyContext  = 1 << 5
	flagDeriveKeyMaterial = 1 << 6
)

// iv and blockLen are read by the assembly.
var (
	iv       = [8]uint32{0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19}
	blockLen = uint32(64)
)

// Lane counters: a block's chunk i has counter i; parents have 0. The
// second 16 words are the counters' high halves.
var (
	chunkCounters  [32]uint32
	parentCounters [32]uint32
)

func init() {
	for i := range chunks {
		chunkCounters[i] = uint32(i)
	}
}

// Fast says whether this machine runs the 16-lane kernel (amd64 with
// AVX-512; see the arch files). Without it, Sum and SumMany must not be
// called.
func Fast() bool { return fast }

// Hasher hashes blocks under one derive-key context.
type Hasher struct {
	key [8]uint32 // the context key
}

// New returns a Hasher for BLAKE3's derive_key(context, ·).
func New(context string) *Hasher {
	return &Hasher{key: contextKey(context)}
}

// scratch holds one call's chaining values: the chunk level of n blocks
// (16n rows) and, alternating with it, each parent level. compress16 reads
// and writes 16 rows whatever the number in use, so each buffer has 32 rows
// to spare.
type scratch struct{ a, b [][8]uint32 }

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func (s *scratch) grow(n int) {
	if len(s.a) < chunks*n+32 {
		s.a = make([][8]uint32, chunks*n+32)
		s.b = make([][8]uint32, chunks/2*n+32)
	}
}

// SumMany writes the hash of each 16 KiB block of data to out[i]. len(data)
// must be a multiple of Size, and out must have room for every block.
// Only when Fast.
func (h *Hasher) SumMany(out [][32]byte, data []byte) {
	n := len(data) / Size
	if len(data)%Size != 0 || len(out) < n {
		panic("blockhash: SumMany of a partial block, or out too short")
	}
	if n == 0 {
		return
	}
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	s.grow(n)
	// Chunks: each block's 16 chunks, one per lane.
	for i := range n {
		compress16(&data[i*Size], chunkLen, chunkLen/64, &h.key, &chunkCounters,
			flagDeriveKeyMaterial, flagChunkStart, flagChunkEnd,
			(*[16][8]uint32)(s.a[chunks*i:]))
	}
	// Parents, level by level: rows 2j and 2j+1 of a level are the
	// children of row j of the next. A level's pairs never straddle two
	// blocks, so the levels of all blocks go through the lanes together.
	from, to := s.a, s.b
	for rows := chunks * n; rows > n; rows /= 2 {
		flags := uint32(flagDeriveKeyMaterial | flagParent)
		if rows == 2*n {
			flags |= flagRoot
		}
		for j := 0; j < rows/2; j += 16 {
			compress16((*byte)(unsafe.Pointer(&from[2*j])), 64, 1, &h.key, &parentCounters,
				flags, 0, 0, (*[16][8]uint32)(to[j:]))
		}
		from, to = to, from
	}
	for i := range n {
		for w, v := range from[i] {
			binary.LittleEndian.PutUint32(out[i][4*w:], v)
		}
	}
}

// Sum returns the hash of one 16 KiB block. Only when Fast.
func (h *Hasher) Sum(block []byte) [32]byte {
	var out [1][32]byte
	h.SumMany(out[:], block[:Size])
	return out[0]
}

// contextKey is BLAKE3's derive_key first step: the hash of the context
// string (at most one chunk) under the DERIVE_KEY_CONTEXT flag.
func contextKey(context string) [8]uint32 {
	if len(context) > chunkLen {
		panic("blockhash: context longer than one chunk")
	}
	cv := iv
	b := []byte(context)
	for first := true; first || len(b) > 0; first = false {
		var block [64]byte
		n := copy(block[:], b)
		b = b[n:]
		flags := uint32(flagDeriveKeyContext)
		if first {
			flags |= flagChunkStart
		}
		if len(b) == 0 {
			flags |= flagChunkEnd | flagRoot
		}
		var m [16]uint32
		for i := range m {
			m[i] = binary.LittleEndian.Uint32(block[4*i:])
		}
		v := compress(&cv, &m, 0, uint32(n), flags)
		copy(cv[:], v[:8])
	}
	return cv
}

// msgPerm is BLAKE3's message permutation, applied after every round.
var msgPerm = [16]int{2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8}

// compress is BLAKE3's compression function, one input at a time: the
// specification's definition, which the kernel must match.
func compress(cv *[8]uint32, m *[16]uint32, counter uint64, blockLen, flags uint32) [16]uint32 {
	v := [16]uint32{
		cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
		iv[0], iv[1], iv[2], iv[3], uint32(counter), uint32(counter >> 32), blockLen, flags,
	}
	s := *m
	for range 7 {
		g(&v, 0, 4, 8, 12, s[0], s[1])
		g(&v, 1, 5, 9, 13, s[2], s[3])
		g(&v, 2, 6, 10, 14, s[4], s[5])
		g(&v, 3, 7, 11, 15, s[6], s[7])
		g(&v, 0, 5, 10, 15, s[8], s[9])
		g(&v, 1, 6, 11, 12, s[10], s[11])
		g(&v, 2, 7, 8, 13, s[12], s[13])
		g(&v, 3, 4, 9, 14, s[14], s[15])
		var next [16]uint32
		for i := range next {
			next[i] = s[msgPerm[i]]
		}
		s = next
	}
	for i := range 8 {
		v[i] ^= v[i+8]
		v[i+8] ^= cv[i]
	}
	return v
}

func g(v *[16]uint32, a, b, c, d int, mx, my uint32) {
	v[a] += v[b] + mx
	v[d] = rotr(v[d]^v[a], 16)
	v[c] += v[d]
	v[b] = rotr(v[b]^v[c], 12)
	v[a] += v[b] + my
	v[d] = rotr(v[d]^v[a], 8)
	v[c] += v[d]
	v[b] = rotr(v[b]^v[c], 7)
}

func rotr(x uint32, n int) uint32 { return x>>n | x<<(32-n) }
