//go:build !amd64

package blockhash

const fast = false

func compress16(in *byte, stride uintptr, nblocks int, key *[8]uint32, ctr *[32]uint32, flags, first, last uint32, out *[16][8]uint32) {
	panic("blockhash: no 16-lane kernel on this architecture (Fast is false)")
}
