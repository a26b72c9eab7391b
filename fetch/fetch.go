// Package fetch gets content a site lacks from its peers: a fog node's
// chunks, manifests on "versions" links, and copies of local chunks that
// are missing or damaged. The store asks (store.Remote); Fetcher asks the
// connected links that serve the file, hedged: the fastest peer first, the
// next one when the first is slow or fails, and the first answer that
// matches its hash wins. A site that is asked for what it lacks itself
// forwards the request one hop (Forwarded), never back through a site the
// request has visited.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/geofs/geofs/store"
)

// ErrBadAnswer means a peer answered with bytes that do not match the hash
// asked for. The answer is ignored and another peer's used.
var ErrBadAnswer = errors.New("answer does not match its hash")

// Verify reports whether b is the item req asks for.
func Verify(req store.FetchRequest, b []byte) bool {
	if req.Kind == store.FetchNode {
		return store.Sum(b) == req.Hash
	}
	return store.ChunkID(b) == req.Hash
}

// Peer is a connected link that may serve a request.
type Peer struct {
	Name string
	Site store.SiteID
	// Fetch asks the peer; the bytes it returns match the hash. It passes
	// part a chunk's blocks as they arrive, each checked.
	Fetch func(ctx context.Context, req store.FetchRequest, hops uint8, visited []store.SiteID, part store.Partial) ([]byte, error)
}

// Source lists the connected peers whose links serve req's file.
type Source func(req store.FetchRequest) []Peer

// Fetcher asks peers for items. It implements store.Remote.
type Fetcher struct {
	Peers Source
	Log   *slog.Logger

	mu  sync.Mutex
	lat map[store.SiteID]time.Duration // smoothed answer time per peer
}

// Hedging bounds: a request goes to the next peer after twice the first
// peer's usual answer time, within these.
const (
	minHedge     = 50 * time.Millisecond
	maxHedge     = time.Second
	unknownHedge = 200 * time.Millisecond
	waitForPeers = 100 * time.Millisecond // poll while no link is connected
)

// MaxHops is how far a fetch travels: the site asked, and one more.
const MaxHops = 1

type fwdKey struct{}

type forwarding struct {
	hops    uint8
	visited []store.SiteID
}

// Forwarded returns ctx for a request forwarded on behalf of a peer: it
// has made hops hops and visited the sites listed, which are not asked.
func Forwarded(ctx context.Context, hops uint8, visited []store.SiteID) context.Context {
	return context.WithValue(ctx, fwdKey{}, forwarding{hops, visited})
}

type result struct {
	i   int // which peer
	b   []byte
	err error
}

// Fetch asks the peers that serve req's file and returns the first answer
// that matches its hash. It fails with store.ErrUnavailable when every
// peer failed, or none answered before ctx ended.
func (f *Fetcher) Fetch(ctx context.Context, req store.FetchRequest, part store.Partial) ([]byte, error) {
	fw, _ := ctx.Value(fwdKey{}).(forwarding)
	if fw.hops > MaxHops {
		return nil, fmt.Errorf("%s: %w: the request went as far as it may", req, store.ErrUnavailable)
	}
	peers, err := f.candidates(ctx, req, fw.visited)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, len(peers))
	started := make([]time.Time, len(peers))
	answered := make([]bool, len(peers))
	next, inflight := 0, 0
	launch := func() {
		i := next
		next++
		inflight++
		started[i] = time.Now()
		go func() {
			b, err := peers[i].Fetch(ctx, req, fw.hops, fw.visited, part)
			results <- result{i, b, err}
		}()
	}
	// Peers still working when the fetch ends count as at least that slow.
	defer func() {
		for i := range next {
			if !answered[i] {
				f.observe(peers[i].Site, time.Since(started[i]), context.Canceled)
			}
		}
	}()
	launch()
	timer := time.NewTimer(f.hedge(peers[0].Site))
	defer timer.Stop()
	var errs []error
	for {
		select {
		case r := <-results:
			inflight--
			answered[r.i] = true
			p := peers[r.i]
			f.observe(p.Site, time.Since(started[r.i]), r.err)
			if r.err == nil {
				return r.b, nil
			}
			if errors.Is(r.err, ErrBadAnswer) {
				f.Log.Warn("a peer answered with bytes that do not match: asking another", "peer", p.Name, "item", req.String())
			}
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, r.err))
			if next < len(peers) {
				launch()
				timer.Reset(f.hedge(peers[next-1].Site))
			} else if inflight == 0 {
				return nil, fmt.Errorf("%s: %w: %w", req, store.ErrUnavailable, errors.Join(errs...))
			}
		case <-timer.C:
			if next < len(peers) {
				launch()
				timer.Reset(f.hedge(peers[next-1].Site))
			}
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
			return nil, fmt.Errorf("%s: %w: no peer answered in time: %w", req, store.ErrUnavailable, errors.Join(errs...))
		}
	}
}

// candidates returns the peers to ask, fastest first. While no link that
// serves the file is connected (a peer restarting, a link redialing), it
// waits for one until ctx ends.
func (f *Fetcher) candidates(ctx context.Context, req store.FetchRequest, visited []store.SiteID) ([]Peer, error) {
	for {
		peers := slices.DeleteFunc(f.Peers(req), func(p Peer) bool { return slices.Contains(visited, p.Site) })
		if len(peers) > 0 {
			f.mu.Lock()
			slices.SortStableFunc(peers, func(a, b Peer) int { return int(f.lat[a.Site] - f.lat[b.Site]) })
			f.mu.Unlock()
			return peers, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w: no connected link serves it", req, store.ErrUnavailable)
		case <-time.After(waitForPeers):
		}
	}
}

// observe folds an answer time into the peer's smoothed one. A peer that
// was still working when another answered counts as at least that slow,
// so a stalled peer drops to the back.
func (f *Fetcher) observe(site store.SiteID, d time.Duration, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		d = max(d, maxHedge) // a failure: try others first next time
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lat == nil {
		f.lat = map[store.SiteID]time.Duration{}
	}
	if old, ok := f.lat[site]; ok {
		if errors.Is(err, context.Canceled) {
			d = max(d, old)
		}
		d = (3*old + d) / 4
	}
	f.lat[site] = d
}

// hedge is how long to wait for a peer before asking the next.
func (f *Fetcher) hedge(site store.SiteID) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.lat[site]
	if !ok {
		return unknownHedge
	}
	return min(max(2*d, minHedge), maxHedge)
}
