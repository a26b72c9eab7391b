package blockhash

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
)

const testContext = "geofs 2026-11 chunk block v1"

func reference(context string, b []byte) [32]byte {
	h := blake3.NewDeriveKey(context)
	h.Write(b)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func needFast(t testing.TB) {
	if !Fast() {
		t.Skip("no AVX-512 on this CPU: the callers use zeebo/blake3 alone")
	}
}

// Every block of every batch size hashes as zeebo/blake3 hashes it; batch
// sizes cover partly used lanes in every parent level.
func TestSumManyMatchesReference(t *testing.T) {
	needFast(t)
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 70*Size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for _, ctx := range []string{testContext, "", "a context that is longer than one sixty-four byte block of BLAKE3 input"} {
		h := New(ctx)
		for _, n := range []int{1, 2, 3, 7, 15, 16, 17, 33, 64, 70} {
			out := make([][32]byte, n)
			h.SumMany(out, data[:n*Size])
			for i := range n {
				if want := reference(ctx, data[i*Size:(i+1)*Size]); out[i] != want {
					t.Fatalf("context %q, %d blocks: block %d = %x, want %x", ctx, n, i, out[i], want)
				}
			}
		}
	}
}

// A change of one bit anywhere changes the hash (no lane or word is left
// out of the transposes).
func TestSumSeesEveryBit(t *testing.T) {
	needFast(t)
	h := New(testContext)
	block := make([]byte, Size)
	base := h.Sum(block)
	for _, off := range []int{0, 1, 63, 64, 1023, 1024, 5000, 8191, 12345, Size - 1} {
		for bit := range 8 {
			block[off] ^= 1 << bit
			if h.Sum(block) == base {
				t.Fatalf("flipping bit %d of byte %d left the hash unchanged", bit, off)
			}
			if got, want := h.Sum(block), reference(testContext, block); got != want {
				t.Fatalf("byte %d bit %d: %x, want %x", off, bit, got, want)
			}
			block[off] ^= 1 << bit
		}
	}
}

func TestContextKeyOfLongContextPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a context over 1 KiB")
		}
	}()
	New(string(make([]byte, chunkLen+1)))
}

func BenchmarkSum(b *testing.B) {
	needFast(b)
	h, block := New(testContext), make([]byte, Size)
	b.SetBytes(Size)
	for b.Loop() {
		h.Sum(block)
	}
}

func BenchmarkSumMany64(b *testing.B) {
	needFast(b)
	h, data, out := New(testContext), make([]byte, 64*Size), make([][32]byte, 64)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h.SumMany(out, data)
	}
}

// The reference: what the store used before, one block at a time.
func BenchmarkZeebo(b *testing.B) {
	h, block := blake3.NewDeriveKey(testContext), make([]byte, Size)
	var out [32]byte
	b.SetBytes(Size)
	for b.Loop() {
		h.Reset()
		h.Write(block)
		h.Sum(out[:0])
	}
}

// The committed kernel is what gen.go writes.
func TestKernelIsGenerated(t *testing.T) {
	fresh := filepath.Join(t.TempDir(), "k.s")
	if out, err := exec.Command("go", "run", "gen.go", "-o", fresh).CombinedOutput(); err != nil {
		t.Fatalf("go run gen.go: %v\n%s", err, out)
	}
	want, err := os.ReadFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile("compress16_amd64.s"); !bytes.Equal(got, want) {
		t.Fatal("compress16_amd64.s is not what gen.go writes: run go generate ./internal/blockhash")
	}
}
