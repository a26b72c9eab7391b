package sync

import (
	"io"
	"testing"
	"time"
)

// A rate limit is a promise to the network: 2 MiB at 4 MiB/s must take at
// least about half a second (the bound is loose only on the short side).
func TestRateWriterPaces(t *testing.T) {
	w := newRateWriter(io.Discard, 4<<20)
	start := time.Now()
	buf := make([]byte, 256<<10)
	for range 8 {
		if _, err := w.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("2 MiB at 4 MiB/s took %v", took)
	}
}
