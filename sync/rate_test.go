package sync

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// A rate limit is a promise to the network: 2 MiB at 4 MiB/s must take at
// least about half a second (the bound is loose only on the short side).
func TestRateWriterPaces(t *testing.T) {
	w := newRateWriter(context.Background(), io.Discard, 4<<20)
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

// A write waiting for its turn ends when the link stops: at 1 KiB/s the
// second 16 KiB piece waits about 16 s.
func TestRateWriterStopsWaitingWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w := newRateWriter(ctx, io.Discard, 1<<10)
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, 64<<10))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the write ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write still waits 10 s after its link stopped")
	}
}
