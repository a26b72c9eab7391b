package cdc

import (
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/blake2b"
)

// sink keeps the compiler from discarding the hashes.
var sink [32]byte

// BenchmarkHash compares the candidate 32-byte chunk hashes (see
// docs/hashbench.md).
func BenchmarkHash(b *testing.B) {
	algs := []struct {
		name string
		sum  func([]byte) [32]byte
	}{
		{"SHA-256", sha256.Sum256},
		{"BLAKE3", blake3.Sum256},
		{"BLAKE2b-256", blake2b.Sum256},
	}
	for _, alg := range algs {
		for _, size := range []int{4 << 10, 64 << 10, 1 << 20} {
			data := testData(size, 11)
			b.Run(fmt.Sprintf("%s/%dKiB", alg.name, size>>10), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					sink = alg.sum(data)
				}
			})
		}
	}
}
