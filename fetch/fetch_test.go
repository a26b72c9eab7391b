package fetch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geofs/geofs/store"
)

// The peers here are functions: the fetcher's seam to the links. The same
// code runs over real QUIC links in integration/fog_test.go.

var chunk = []byte("the bytes of a chunk that a fog node lacks")

func request() store.FetchRequest {
	return store.FetchRequest{Kind: store.FetchChunk, Hash: store.ChunkID(chunk)}
}

func peer(name string, site byte, fn func(ctx context.Context) ([]byte, error)) Peer {
	return Peer{Name: name, Site: store.SiteID{site}, Fetch: func(ctx context.Context, req store.FetchRequest, hops uint8, visited []store.SiteID, part store.Partial) ([]byte, error) {
		return fn(ctx)
	}}
}

func answer(b []byte, delay time.Duration, calls *atomic.Int32) func(ctx context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		calls.Add(1)
		select {
		case <-time.After(delay):
			return b, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func fetcher(peers ...Peer) *Fetcher {
	return &Fetcher{Peers: func(store.FetchRequest) []Peer { return append([]Peer(nil), peers...) }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestFirstPeerAnswers(t *testing.T) {
	var a, b atomic.Int32
	f := fetcher(peer("a", 1, answer(chunk, 0, &a)), peer("b", 2, answer(chunk, 0, &b)))
	got, err := f.Fetch(context.Background(), request(), nil)
	if err != nil || string(got) != string(chunk) {
		t.Fatalf("fetch: %q %v", got, err)
	}
	if a.Load()+b.Load() != 1 {
		t.Fatalf("a fast answer still asked %d peers", a.Load()+b.Load())
	}
}

func TestSlowPeerIsHedged(t *testing.T) {
	var slow, fast atomic.Int32
	f := fetcher(peer("slow", 1, answer(chunk, time.Hour, &slow)), peer("fast", 2, answer(chunk, 0, &fast)))
	start := time.Now()
	got, err := f.Fetch(context.Background(), request(), nil)
	if err != nil || string(got) != string(chunk) {
		t.Fatalf("fetch: %v", err)
	}
	if slow.Load() != 1 || fast.Load() != 1 {
		t.Fatalf("asked slow %d, fast %d times", slow.Load(), fast.Load())
	}
	if time.Since(start) > 10*unknownHedge {
		t.Fatalf("hedged only after %v", time.Since(start))
	}
	// The slow peer now ranks behind the fast one.
	slow.Store(0)
	fast.Store(0)
	if _, err := f.Fetch(context.Background(), request(), nil); err != nil {
		t.Fatal(err)
	}
	if slow.Load() != 0 {
		t.Fatal("the peer that stalled was asked first again")
	}
}

func TestBadAnswerIsIgnored(t *testing.T) {
	var bad, good atomic.Int32
	wrong := append([]byte(nil), chunk...)
	wrong[0] ^= 1
	f := fetcher(
		peer("bad", 1, func(ctx context.Context) ([]byte, error) {
			bad.Add(1)
			if !Verify(request(), wrong) {
				return nil, ErrBadAnswer // as the link's Fetch reports it
			}
			return wrong, nil
		}),
		peer("good", 2, answer(chunk, 20*time.Millisecond, &good)))
	got, err := f.Fetch(context.Background(), request(), nil)
	if err != nil || string(got) != string(chunk) {
		t.Fatalf("fetch: %q %v", got, err)
	}
	if bad.Load() != 1 || good.Load() != 1 {
		t.Fatalf("asked bad %d, good %d", bad.Load(), good.Load())
	}
}

func TestEveryPeerFailing(t *testing.T) {
	fail := func(ctx context.Context) ([]byte, error) { return nil, errors.New("the peer does not have it") }
	f := fetcher(peer("a", 1, fail), peer("b", 2, fail))
	_, err := f.Fetch(context.Background(), request(), nil)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("err %v, want ErrUnavailable", err)
	}
}

func TestNoPeerFailsAtTheDeadline(t *testing.T) {
	f := fetcher()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := f.Fetch(ctx, request(), nil)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("err %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Fatalf("gave up after %v", d)
	}
}

func TestAPeerThatConnectsLateIsUsed(t *testing.T) {
	var calls atomic.Int32
	var connected atomic.Bool
	p := peer("late", 1, answer(chunk, 0, &calls))
	f := &Fetcher{Log: slog.New(slog.DiscardHandler), Peers: func(store.FetchRequest) []Peer {
		if connected.Load() {
			return []Peer{p}
		}
		return nil
	}}
	time.AfterFunc(150*time.Millisecond, func() { connected.Store(true) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := f.Fetch(ctx, request(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestForwardingSkipsVisitedSites(t *testing.T) {
	var a, b atomic.Int32
	f := fetcher(peer("a", 1, answer(chunk, 0, &a)), peer("b", 2, answer(chunk, 0, &b)))
	ctx := Forwarded(context.Background(), 1, []store.SiteID{{1}})
	if _, err := f.Fetch(ctx, request(), nil); err != nil {
		t.Fatal(err)
	}
	if a.Load() != 0 || b.Load() != 1 {
		t.Fatalf("asked visited a %d times, b %d", a.Load(), b.Load())
	}
	ctx = Forwarded(context.Background(), 1, []store.SiteID{{1}, {2}})
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := f.Fetch(ctx, request(), nil); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("with every peer visited: %v", err)
	}
}

func TestVerify(t *testing.T) {
	if !Verify(request(), chunk) || Verify(request(), chunk[1:]) {
		t.Fatal("chunk verification")
	}
	node := []byte("node bytes")
	req := store.FetchRequest{Kind: store.FetchNode, Hash: store.Sum(node)}
	if !Verify(req, node) || Verify(req, chunk) {
		t.Fatal("node verification")
	}
}
