package blockhash

import "golang.org/x/sys/cpu"

var fast = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL

// compress16 runs BLAKE3's compression on 16 inputs, one per lane: lane i
// compresses the nblocks 64-byte blocks at in+i*stride, chaining from the
// key, with counter ctr[i] (high half ctr[16+i]), and the block flags
// (plus first on the first block and last on the last). It writes each
// lane's resulting chaining value to out[i]. It reads 16 lanes whatever
// the caller uses.
//
//go:noescape
func compress16(in *byte, stride uintptr, nblocks int, key *[8]uint32, ctr *[32]uint32, flags, first, last uint32, out *[16][8]uint32)
