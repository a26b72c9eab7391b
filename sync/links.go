package sync

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	gosync "sync"
	"time"

	"github.com/geofs/geofs/fetch"
	"github.com/geofs/geofs/store"
)

// Links runs a site's links: it listens on the site's address, dials the
// links that name a remote, and on each connection pushes this site's log
// (if the link sends) and applies what the peer pushes (if it receives).
// It watches config.yaml and applies link changes without a restart.
type Links struct {
	Store    *store.Store
	Dir      string // the store directory (config.yaml)
	Identity *Identity
	Log      *slog.Logger
	// OnChange is told about heads moved by records from peers.
	OnChange func([]store.Change)

	mu    gosync.Mutex
	links map[string]*link
	ln    *Listener
	wg    gosync.WaitGroup
}

// link is one configured link and its connection.
type link struct {
	cfg    store.PeerLink
	stats  *Stats
	ctx    context.Context // ends when the link is removed or changed
	cancel context.CancelFunc
	ended  chan struct{} // a connection ended

	mu      gosync.Mutex
	conn    *Conn
	byMe    bool // conn was dialed by this site
	lastErr string
}

// redial bounds the wait between attempts to reach a peer.
const redial = 2 * time.Second

// Run serves the links until ctx ends. It sends nil on ready once it
// listens, or the error that stops it from starting.
func (l *Links) Run(ctx context.Context, ready chan<- error) error {
	cfg, err := store.LoadConfig(l.Dir)
	if err != nil {
		ready <- err
		return err
	}
	l.links = map[string]*link{}
	if cfg.Listen != "" {
		ln, err := Listen(cfg.Listen, l.Identity, l.admit)
		if err != nil {
			err = fmt.Errorf("listen on %s: %w", cfg.Listen, err)
			ready <- err
			return err
		}
		l.ln = ln
		l.Log.Info("listening for links", "addr", ln.Addr().String())
		l.wg.Go(func() { l.accept(ctx) })
	}
	l.apply(ctx, cfg.Links)
	l.wg.Go(func() { l.watch(ctx) })
	ready <- nil
	<-ctx.Done()
	if l.ln != nil {
		l.ln.Close()
	}
	l.mu.Lock()
	for _, k := range l.links {
		k.stop()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

// Addr is the address the site listens on (nil without one).
func (l *Links) Addr() string {
	if l.ln == nil {
		return ""
	}
	return l.ln.Addr().String()
}

// admit lets in a peer that a link names (called during the handshake).
func (l *Links) admit(peer store.SiteID) error {
	if l.byPeer(peer) == nil {
		l.Log.Warn("refused a connection from a site no link names", "peer", peer)
		return fmt.Errorf("site %s: %w", peer, ErrUntrusted)
	}
	return nil
}

func (l *Links) byPeer(peer store.SiteID) *link {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.links {
		if k.cfg.PeerID() == peer {
			return k
		}
	}
	return nil
}

func (l *Links) accept(ctx context.Context) {
	for {
		c, err := l.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.Log.Warn("link handshake failed", "err", err)
			continue
		}
		k := l.byPeer(c.Peer)
		if k == nil {
			c.Close("no link")
			continue
		}
		l.mu.Lock()
		lctx := k.ctx
		l.mu.Unlock()
		l.attach(lctx, k, c, false)
	}
}

// watch reloads config.yaml when it changes.
func (l *Links) watch(ctx context.Context) {
	path := filepath.Join(l.Dir, store.ConfigFile)
	stamp := func() string {
		st, err := os.Stat(path)
		if err != nil {
			return ""
		}
		return fmt.Sprint(st.ModTime().UnixNano(), st.Size())
	}
	last := stamp()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if now := stamp(); now != last {
			last = now
			cfg, err := store.LoadConfig(l.Dir)
			if err != nil {
				l.Log.Error("config.yaml changed but cannot be used: keeping the links as they were", "err", err)
				continue
			}
			l.Log.Info("config.yaml changed: applying link changes")
			l.apply(ctx, cfg.Links)
			l.Store.SetPartial(store.PartialLinks(cfg.Links))
			l.Store.SetFetchTimeout(cfg.FetchTimeout())
			if n := cfg.CacheSize(); n != l.Store.CacheStats().Limit {
				l.Log.Info("cache size changed", "limit", n)
				l.Store.SetCacheLimit(n)
			}
		}
	}
}

// apply starts, restarts and stops links to match cfgs.
func (l *Links) apply(ctx context.Context, cfgs []store.PeerLink) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, k := range l.links {
		i := slices.IndexFunc(cfgs, func(c store.PeerLink) bool { return c.Name == name })
		if i < 0 || !reflect.DeepEqual(cfgs[i], k.cfg) {
			k.stop()
			delete(l.links, name)
		}
	}
	for _, c := range cfgs {
		if _, ok := l.links[c.Name]; ok {
			continue
		}
		kctx, cancel := context.WithCancel(ctx)
		k := &link{cfg: c, stats: &Stats{}, ctx: kctx, cancel: cancel, ended: make(chan struct{}, 1)}
		l.links[c.Name] = k
		l.wg.Go(func() { l.run(kctx, k) })
	}
}

func (k *link) stop() {
	k.cancel()
	k.mu.Lock()
	if k.conn != nil {
		k.conn.Close("link removed or changed")
	}
	k.mu.Unlock()
}

// run keeps the link connected until ctx ends: it dials the remote (if
// the link has one) whenever the link has no connection.
//
// A connection that ends within redial of being made (a peer that accepts
// the handshake and then refuses the link, because it has no link naming
// this site yet) is redialed only after redial: the ending must not become
// a loop of hundreds of connections a second.
func (l *Links) run(ctx context.Context, k *link) {
	var dialed time.Time
	for ctx.Err() == nil {
		if k.cfg.Remote != "" && k.current() == nil {
			if wait := redial - time.Since(dialed); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			dialed = time.Now()
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := Dial(dctx, k.cfg.Remote, l.Identity, k.cfg.PeerID())
			cancel()
			if err != nil {
				k.setErr(err)
				l.Log.Debug("dial failed", "link", k.cfg.Name, "remote", k.cfg.Remote, "err", err)
			} else {
				l.attach(ctx, k, c, true)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-k.ended:
		case <-time.After(redial):
		}
	}
}

// replaces reports whether a new connection, dialed by this site (me) if
// byMe, takes the place of a link's current one, dialed by this site if
// curByMe. When both ends dial, each keeps the connection dialed by the
// site with the smaller id, so both settle on the same one. A new
// connection from the same end as the current one replaces it: an end
// dials again only when it lost its connection (it restarted, or the
// connection timed out there), which this end may not have noticed yet.
// Keeping the old one made a peer restarted after SIGKILL wait for its
// dead connection's idle timeout here, then its own redial delay.
func replaces(me, peer store.SiteID, byMe, curByMe bool) bool {
	if byMe == curByMe {
		return true
	}
	dialer := func(mine bool) []byte {
		if mine {
			return me[:]
		}
		return peer[:]
	}
	return bytes.Compare(dialer(byMe), dialer(curByMe)) < 0
}

// attach serves connection c (dialed by this site if byMe) for link k,
// unless k keeps the one it has (see replaces).
func (l *Links) attach(ctx context.Context, k *link, c *Conn, byMe bool) {
	peer := c.Peer
	k.mu.Lock()
	if k.conn != nil {
		if !replaces(l.Store.Site(), peer, byMe, k.byMe) {
			k.mu.Unlock()
			c.Close("duplicate connection")
			return
		}
		k.conn.Close("duplicate connection")
	}
	k.conn, k.byMe = c, byMe
	k.mu.Unlock()
	log := l.Log.With("link", k.cfg.Name, "peer", peer)
	log.Info("link connected", "dialed_by_me", byMe)
	l.Store.PeersChanged()
	l.wg.Go(func() {
		l.serve(ctx, k, c, log)
		k.mu.Lock()
		if k.conn == c {
			k.conn = nil
		}
		k.mu.Unlock()
		log.Info("link disconnected")
		select {
		case k.ended <- struct{}{}:
		default:
		}
	})
}

func (k *link) current() *Conn {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.conn
}

// serve runs the link's streams on c until it ends.
func (l *Links) serve(ctx context.Context, k *link, c *Conn, log *slog.Logger) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.Done():
		case <-cctx.Done():
		}
		cancel()
		c.Close("closing")
	}()
	fail := func(err error) {
		if err != nil && cctx.Err() == nil && k.current() == c {
			k.setErr(err)
			log.Warn("link stream failed", "err", err)
			c.Close(err.Error())
		}
	}
	var wg gosync.WaitGroup
	if k.cfg.Sends() {
		wg.Go(func() {
			st, err := c.OpenStream(cctx)
			if err != nil {
				fail(err)
				return
			}
			defer st.Close()
			snd := &Sender{Store: l.Store, Peer: c.Peer, Link: k.cfg, Stats: k.stats, Log: log}
			if err := snd.Run(cctx, limited(cctx, st, k.cfg.RateLimit)); errors.Is(err, ErrRefused) {
				k.setErr(err)
				log.Warn("the peer does not take this site's changes", "err", err)
			} else {
				fail(err)
			}
		})
	}
	for {
		st, err := c.AcceptStream(cctx)
		if err != nil {
			break
		}
		wg.Go(func() {
			defer st.Close()
			br, bw := bufio.NewReader(st), bufio.NewWriter(st)
			h, err := readHello(br)
			if err != nil {
				fail(err)
				return
			}
			if h.Kind == streamFetch {
				// A failed fetch stream ends that request, not the link.
				fsrv := &FetchServer{Store: l.Store, Peer: c.Peer, Link: k.cfg, Stats: k.stats, Log: log}
				if err := fsrv.serve(cctx, br, bw, h); err != nil && cctx.Err() == nil {
					log.Debug("fetch stream failed", "err", err)
				}
				return
			}
			rcv := &Receiver{Store: l.Store, Peer: c.Peer, Link: k.cfg, Stats: k.stats, Log: log, OnChange: l.OnChange}
			fail(rcv.run(cctx, br, bw, h))
		})
	}
	cancel()
	wg.Wait()
}

func (k *link) setErr(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lastErr = err.Error()
}

func (k *link) err() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lastErr
}

// LinkStatus describes one link. Lag is now minus the commit time of the
// oldest change the peer has not acknowledged (sending), or minus the time
// the peer read its log for the newest batch applied here while the peer
// has more (receiving), whichever is larger: an idle link, kept current by
// heartbeats, reads 0. (JSON field names are part of the CLI
// contract, docs/CLI.md).
type LinkStatus struct {
	Name           string  `json:"name"`
	Peer           string  `json:"peer"`
	Remote         string  `json:"remote,omitempty"`
	Connected      bool    `json:"connected"`
	Direction      string  `json:"direction"`
	LagSeconds     float64 `json:"lag_seconds"`
	PendingEntries uint64  `json:"pending_entries"`
	PendingBytes   int64   `json:"pending_bytes"`
	BytesSent      int64   `json:"bytes_sent"`
	BytesReceived  int64   `json:"bytes_received"`
	ChunksSent     int64   `json:"chunks_sent"`
	ChunksReceived int64   `json:"chunks_received"`
	ChunksDeduped  int64   `json:"chunks_deduped"`
	RecordsSent    int64   `json:"records_sent"`
	RecordsApplied int64   `json:"records_applied"`
	// MetadataOnly is this site's setting for what it receives; PeerMetadataOnly
	// is the peer's, as it said when the link connected ("" for full data).
	MetadataOnly     string `json:"metadata_only"`
	PeerMetadataOnly string `json:"peer_metadata_only"`
	// Fetches this site made on the link, and those it answered.
	ChunksFetched    int64  `json:"chunks_fetched"`
	BytesFetched     int64  `json:"bytes_fetched"`
	FetchBadAnswers  int64  `json:"fetch_bad_answers"`
	FetchFailures    int64  `json:"fetch_failures"`
	FetchesServed    int64  `json:"fetches_served"`
	FetchesRefused   int64  `json:"fetches_refused"`
	FetchesForwarded int64  `json:"fetches_forwarded"`
	LastError        string `json:"last_error,omitempty"`
}

// pendingScan bounds the entries Status reads to size the backlog.
const pendingScan = 10000

// Status reports every link.
func (l *Links) Status() []LinkStatus {
	l.mu.Lock()
	ks := make([]*link, 0, len(l.links))
	for _, k := range l.links {
		ks = append(ks, k)
	}
	l.mu.Unlock()
	slices.SortFunc(ks, func(a, b *link) int { return strings.Compare(a.cfg.Name, b.cfg.Name) })
	last := l.Store.LastSeq()
	var out []LinkStatus
	for _, k := range ks {
		k.mu.Lock()
		connected, lastErr := k.conn != nil, k.lastErr
		k.mu.Unlock()
		st := LinkStatus{Name: k.cfg.Name, Peer: k.cfg.Peer, Remote: k.cfg.Remote, Connected: connected,
			Direction: k.cfg.Direction, LastError: lastErr,
			BytesSent: k.stats.BytesSent.Load(), BytesReceived: k.stats.BytesReceived.Load(),
			ChunksSent: k.stats.ChunksSent.Load(), ChunksReceived: k.stats.ChunksReceived.Load(),
			ChunksDeduped: k.stats.ChunksDeduped.Load(), RecordsSent: k.stats.RecordsSent.Load(),
			RecordsApplied: k.stats.RecordsApplied.Load(),
			MetadataOnly:   k.cfg.MetadataOnly, PeerMetadataOnly: modeName(uint8(k.stats.peerMode.Load())),
			ChunksFetched: k.stats.Fetched.Load(), BytesFetched: k.stats.BytesFetched.Load(),
			FetchBadAnswers: k.stats.FetchBadAnswers.Load(), FetchFailures: k.stats.FetchFailures.Load(),
			FetchesServed: k.stats.FetchesServed.Load(), FetchesRefused: k.stats.FetchesRefused.Load(),
			FetchesForwarded: k.stats.FetchesForwarded.Load()}
		recvSeq, recvEnd, recvAt := k.stats.received()
		var behind time.Duration
		if k.cfg.Sends() {
			if a := l.Store.Acked(k.cfg.PeerID()); a < last {
				st.PendingEntries = last - a
				var oldest time.Time
				st.PendingBytes, oldest = l.pending(a + 1)
				behind = time.Since(oldest)
			}
		}
		if k.cfg.Receives() && recvSeq < recvEnd && !recvAt.IsZero() {
			behind = max(behind, time.Since(recvAt))
		}
		st.LagSeconds = max(behind, 0).Seconds()
		out = append(out, st)
	}
	return out
}

// pending returns the size of the records from entry from on (reading at
// most pendingScan of them) and the commit time of the first.
func (l *Links) pending(from uint64) (int64, time.Time) {
	var n int64
	var first time.Time
	seen := 0
	l.Store.Log(from, func(e *store.Entry) (bool, error) {
		if seen == 0 {
			first = e.Time.Time()
		}
		if rec, err := l.Store.VersionRecord(e.Version); err == nil {
			n += int64(len(rec))
		}
		seen++
		return seen < pendingScan, nil
	})
	return n, first
}

// FetchPeers lists the connected links that can serve req: those that
// receive at this site (the peer sends), for the paths req's file is in.
// It is the fetch.Source of the site's fetcher.
func (l *Links) FetchPeers(req store.FetchRequest) []fetch.Peer {
	l.mu.Lock()
	ks := make([]*link, 0, len(l.links))
	for _, k := range l.links {
		ks = append(ks, k)
	}
	l.mu.Unlock()
	var v *store.Version
	if rec, err := l.Store.VersionRecord(req.Origin.Version); err == nil {
		v, _ = store.DecodeVersion(rec)
	}
	var out []fetch.Peer
	for _, k := range ks {
		c := k.current()
		if c == nil || !k.cfg.Receives() {
			continue
		}
		if sc := newScope(k.cfg.Paths, l.Store); !sc.allSent() && (v == nil || !sc.accepts(v)) {
			continue
		}
		out = append(out, fetch.Peer{Name: k.cfg.Name, Site: c.Peer, Fetch: func(ctx context.Context, req store.FetchRequest, hops uint8, visited []store.SiteID, part store.Partial) ([]byte, error) {
			b, err := fetchFrom(ctx, c, req, hops, visited, part)
			switch {
			case err == nil:
				k.stats.add(&k.stats.Fetched, 1)
				k.stats.add(&k.stats.BytesFetched, int64(len(b)))
				k.stats.add(&k.stats.BytesReceived, int64(len(b)))
			case errors.Is(err, fetch.ErrBadAnswer):
				k.stats.add(&k.stats.FetchBadAnswers, 1)
			case !errors.Is(err, context.Canceled):
				k.stats.add(&k.stats.FetchFailures, 1)
			}
			return b, err
		}})
	}
	return out
}
