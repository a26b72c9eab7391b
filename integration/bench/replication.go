package main

// Replication benchmarks: pairs of real geofs sites, each its own daemon
// with its own FUSE mount and store, linked over QUIC on loopback, each
// figure compared with a reference measured in the same run (see
// README.md, "Replication").

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/geofs/geofs/internal/admin"
	"github.com/geofs/geofs/internal/relay"
)

// The sites of a pair listen on their own loopback addresses; the relay of
// the delta workload on a third.
const (
	hostA     = "127.0.0.101"
	hostB     = "127.0.0.102"
	hostRelay = "127.0.0.103"
)

// Timeouts. A wait that times out means replication stalled: the error says
// where and carries both sites' link status.
const (
	commitTimeout   = 30 * time.Second // one small file to appear at B
	syncTimeout     = 15 * time.Minute // an initial sync or a big preparatory sync
	statusInterval  = 10 * time.Millisecond
	maxPollInterval = 100 * time.Millisecond
	lagPoll         = time.Millisecond
)

// Published figure used when rsync is not installed: rsync sends about
// 197 KB (both directions) for a 1-byte change in a 256 MiB file.
const rsyncPublishedDelta = 197e3

var replicationWorkloads = []workload{
	{name: "repl-lag", group: "replication", runPair: replLag,
		desc: "sites A and B linked both ways (each dials the other), both mounted; -repl-commits times: write a small new file at A and close it, " +
			"poll B's mount every 1 ms (read) until the content is there; close→readable latency. " +
			"ref: round trip of a 1-byte ping on a raw quic-go stream between the same loopback hosts (quicref -pings, geofs's sync.Dial/Listen), " +
			"the network floor; no Syncthing here, so no ratio against it"},
	{name: "repl-delta", group: "replication", runPair: replDelta,
		desc: "A and B linked through a UDP relay that counts every datagram (A dials the relay, which forwards to B); a -repl-delta-size random file " +
			"written at A and synced; then one byte in its middle changed at A; bytes on the wire, both directions, from the write until B reads the " +
			"new byte and A's link has the ack. ref: rsync -a --no-whole-file --stats of the same change between two local directories (total bytes sent + received)"},
	{name: "repl-small-files", group: "replication", runPair: replSmallFiles,
		desc: "-repl-files 4 KiB random files written at A (mounted); then B created, links added (B dials A), B mounted; " +
			"time from `geofs mount` of B until B's namespace_root equals A's (status --json of both polled every 10 ms, later every 1 % of the time elapsed). " +
			"ref: rsync -a of the same files between two local directories (no network)"},
	{name: "repl-big-file", group: "replication", runPair: replBigFile,
		desc: "one -repl-big-size random file written at A, then B created, linked and mounted as for repl-small-files; throughput = size / time until equal roots. " +
			"ref: quicref sending the same number of bytes on one raw quic-go stream between two processes on the same loopback hosts (before geofs on even runs, after it on odd ones)"},
}

// ---------------------------------------------------------------------------
// Sites

// replSite is one site of a replication benchmark: a geofs store and mount
// point, listening on its own loopback address.
type replSite struct {
	*geofsTarget
	name string
	addr string // HOST:PORT it listens on
	id   string
}

// siteStatus is the part of `geofs status --json` the benchmarks read.
type siteStatus struct {
	NamespaceRoot string `json:"namespace_root"`
	LastSeq       uint64 `json:"last_seq"`
	Links         []struct {
		Name           string  `json:"name"`
		Connected      bool    `json:"connected"`
		LagSeconds     float64 `json:"lag_seconds"`
		PendingEntries uint64  `json:"pending_entries"`
		BytesSent      int64   `json:"bytes_sent"`
		BytesReceived  int64   `json:"bytes_received"`
		ChunksSent     int64   `json:"chunks_sent"`
		ChunksReceived int64   `json:"chunks_received"`
		LastError      string  `json:"last_error"`
	} `json:"links"`
}

// brief summarizes the links for error messages.
func (st siteStatus) brief() string {
	var parts []string
	for _, l := range st.Links {
		parts = append(parts, fmt.Sprintf("%s: connected=%v pending=%d lag=%.1fs last_error=%q",
			l.Name, l.Connected, l.PendingEntries, l.LagSeconds, l.LastError))
	}
	return fmt.Sprintf("root %.12s, last_seq %d, links [%s]", st.NamespaceRoot, st.LastSeq, strings.Join(parts, "; "))
}

// newReplSite creates a site named name in dir/name, listening on host.
func (b *bench) newReplSite(ctx context.Context, dir, name, host string) (*replSite, error) {
	root := filepath.Join(dir, name)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	port, err := freeUDPPort(host)
	if err != nil {
		return nil, err
	}
	g := newGeofsTarget(b.cfg.geofsBin, root, b.logDir)
	g.logPath = filepath.Join(b.logDir, fmt.Sprintf("%s-%s-mount.log", filepath.Base(dir), name))
	s := &replSite{geofsTarget: g, name: name, addr: net.JoinHostPort(host, strconv.Itoa(port))}
	if _, err := runCmd(ctx, mountTimeout, g.bin, "init", "--name", name, "--listen", s.addr, g.store); err != nil {
		return nil, err
	}
	if s.id, err = runCmd(ctx, mountTimeout, g.bin, "id", g.store); err != nil {
		return nil, err
	}
	slog.Info("site created", "site", name, "id", s.id, "listen", s.addr)
	return s, nil
}

// freeUDPPort returns a UDP port on host that nothing is bound to now.
func freeUDPPort(host string) (int, error) {
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// link adds a link at s naming peer, dialing remote ("" to let the peer dial).
func (s *replSite) link(ctx context.Context, peer *replSite, remote string) error {
	args := []string{"link", "add", s.store, "--name", "to-" + peer.name, "--peer", peer.id}
	if remote != "" {
		args = append(args, "--remote", remote)
	}
	_, err := runCmd(ctx, time.Minute, s.bin, args...)
	return err
}

// status asks the running site over its admin socket, the same request
// 'geofs status --json' makes, without starting a process per poll (two
// CLI processes per poll cost the sites a noticeable share of two cores).
func (s *replSite) status(ctx context.Context) (siteStatus, error) {
	var st siteStatus
	as, err := admin.Dial(admin.SocketPath(s.store)).Status(ctx)
	if err != nil {
		return st, fmt.Errorf("status of %s: %w", s.name, err)
	}
	out, err := json.Marshal(as)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("status --json of %s: %w", s.name, err)
	}
	return st, nil
}

func (s *replSite) path(name string) string { return filepath.Join(s.mnt, name) }

// replPair is the two sites of one workload, and the relay between them if
// there is one. close unmounts everything and removes the stores.
type replPair struct {
	b     *bench
	dir   string
	a, z  *replSite // A writes, B ("z", to keep b for the bench) receives
	relay *relay.Relay
}

// newPair creates site A in DIR/repl/NAME; B is added by addB.
func (b *bench) newPair(ctx context.Context, name string) (*replPair, error) {
	dir := filepath.Join(b.dir, "repl", name)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	p := &replPair{b: b, dir: dir}
	b.addLive(p)
	a, err := b.newReplSite(ctx, dir, "a", hostA)
	if err != nil {
		return p, err
	}
	p.a = a
	return p, nil
}

func (p *replPair) addB(ctx context.Context) error {
	z, err := p.b.newReplSite(ctx, p.dir, "b", hostB)
	p.z = z
	return err
}

// sites returns the sites created so far.
func (p *replPair) sites() []*replSite {
	var ss []*replSite
	for _, s := range []*replSite{p.a, p.z} {
		if s != nil {
			ss = append(ss, s)
		}
	}
	return ss
}

// close unmounts both sites, closes the relay, keeps the daemon logs in the
// log directory and removes the stores (unless -keep, or something is
// still mounted).
func (p *replPair) close() {
	if p == nil {
		return
	}
	defer p.b.removeLive(p)
	clean := true
	for _, s := range p.sites() {
		if err := s.Unmount(context.Background()); err != nil {
			slog.Error("unmount failed; forcing", "site", s.name, "err", err)
			s.ForceUnmount()
			clean = false
		}
		log := filepath.Join(p.b.logDir, fmt.Sprintf("%s-%s-geofs.log", filepath.Base(p.dir), s.name))
		if data, err := os.ReadFile(filepath.Join(s.store, "geofs.log")); err == nil {
			os.WriteFile(log, data, 0o644)
		}
	}
	if p.relay != nil {
		p.relay.Close()
	}
	if left := mountsUnder(p.dir); len(left) > 0 {
		slog.Error("still mounted; not removing the stores", "mounts", left)
		return
	}
	if clean && !p.b.cfg.keep {
		os.RemoveAll(p.dir)
	}
}

// forceClose is the last resort on abort.
func (p *replPair) forceClose() {
	for _, s := range p.sites() {
		s.ForceUnmount()
	}
}

// statuses returns the status of every site of the pair, for errors.
func (p *replPair) statuses(ctx context.Context) string {
	var parts []string
	for _, s := range p.sites() {
		st, err := s.status(context.WithoutCancel(ctx))
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: status: %v", s.name, err))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %s", s.name, st.brief()))
	}
	return strings.Join(parts, " | ")
}

// converged reports whether A and B have the same namespace root.
func (p *replPair) converged(ctx context.Context) (bool, error) {
	sa, err := p.a.status(ctx)
	if err != nil {
		return false, err
	}
	sb, err := p.z.status(ctx)
	if err != nil {
		return false, err
	}
	return sa.NamespaceRoot == sb.NamespaceRoot, nil
}

// acked reports whether every link of A has nothing pending.
func (p *replPair) acked(ctx context.Context) (bool, error) {
	st, err := p.a.status(ctx)
	if err != nil {
		return false, err
	}
	for _, l := range st.Links {
		if l.PendingEntries != 0 || !l.Connected {
			return false, nil
		}
	}
	return true, nil
}

// waitUntil polls cond until it is true, failing after timeout with both
// sites' status. It waits interval between polls at first, then 1 % of the
// time elapsed (at most 100 ms): a timed wait is resolved to about 1 %
// while the polling (each status poll runs the geofs CLI and asks the
// daemon) takes little CPU from the sync it is timing.
func (p *replPair) waitUntil(ctx context.Context, what string, timeout, interval time.Duration, cond func(context.Context) (bool, error)) error {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if err := checkCtx(ctx); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replication stalled: no %s after %v (%s)", what, timeout, p.statuses(ctx))
		}
		time.Sleep(min(max(interval, time.Since(start)/100), maxPollInterval))
	}
}

// Live pairs, for the signal handler and the final cleanup.

func (b *bench) addLive(p *replPair) {
	b.liveMu.Lock()
	defer b.liveMu.Unlock()
	b.live = append(b.live, p)
}

func (b *bench) removeLive(p *replPair) {
	b.liveMu.Lock()
	defer b.liveMu.Unlock()
	b.live = slices.DeleteFunc(b.live, func(x *replPair) bool { return x == p })
}

// forceCloseLive force-unmounts the sites of every live pair.
func (b *bench) forceCloseLive() {
	b.liveMu.Lock()
	live := slices.Clone(b.live)
	b.liveMu.Unlock()
	for _, p := range live {
		p.forceClose()
	}
}

// closeLive unmounts the sites of every pair still live (after a panic
// or an abort).
func (b *bench) closeLive() {
	b.liveMu.Lock()
	live := slices.Clone(b.live)
	b.liveMu.Unlock()
	for _, p := range live {
		p.close()
	}
}

// ---------------------------------------------------------------------------
// Reference helpers

// quicrefResult mirrors quicref's output.
type quicrefResult struct {
	Seconds   float64 `json:"seconds"`
	MiBPerSec float64 `json:"mib_per_s"`
	RTTP50Ms  float64 `json:"rtt_p50_ms"`
	RTTP99Ms  float64 `json:"rtt_p99_ms"`
	RTTMinMs  float64 `json:"rtt_min_ms"`
}

// runQuicref runs the raw quic-go reference, its receiving process
// listening on host (the sending one dials it).
func (b *bench) runQuicref(ctx context.Context, host string, args ...string) (quicrefResult, error) {
	var res quicrefResult
	args = append([]string{"-listen", host + ":0"}, args...)
	slog.Info("reference: quicref", "args", strings.Join(args, " "))
	out, err := runCmd(ctx, 30*time.Minute, b.quicrefBin, args...)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return res, fmt.Errorf("quicref output %q: %w", out, err)
	}
	return res, nil
}

// rsyncStats are the totals rsync --stats prints.
type rsyncStats struct {
	sent, received, literal, matched int64
}

// runRsync runs rsync with args plus --stats and returns its totals and
// how long it took.
func runRsync(ctx context.Context, args ...string) (rsyncStats, time.Duration, error) {
	var st rsyncStats
	start := time.Now()
	out, err := runCmd(ctx, time.Hour, "rsync", append([]string{"--stats"}, args...)...)
	d := time.Since(start)
	if err != nil {
		return st, d, err
	}
	fields := map[string]*int64{
		"Total bytes sent:":     &st.sent,
		"Total bytes received:": &st.received,
		"Literal data:":         &st.literal,
		"Matched data:":         &st.matched,
	}
	for _, line := range strings.Split(out, "\n") {
		for prefix, dst := range fields {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
				f := strings.Fields(strings.ReplaceAll(rest, ",", ""))
				if len(f) > 0 {
					*dst, _ = strconv.ParseInt(f[0], 10, 64)
				}
			}
		}
	}
	if st.sent == 0 {
		return st, d, fmt.Errorf("rsync --stats: no totals in %q", out)
	}
	return st, d, nil
}

func haveRsync() bool {
	_, err := exec.LookPath("rsync")
	return err == nil
}

// ---------------------------------------------------------------------------
// Figures

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the p-th percentile (nearest rank) of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

func below(limit float64, text string) *goal {
	return &goal{text: text, met: func(g, _ float64) bool { return g < limit }}
}

// ---------------------------------------------------------------------------
// 1. Replication lag of small commits

func replLag(ctx context.Context, b *bench) (pairResult, error) {
	var res pairResult
	n := b.cfg.replCommits

	// The floor: a raw QUIC round trip between the same hosts, measured
	// before the sites start so that they do not disturb it.
	ref, refErr := b.runQuicref(ctx, hostB, "-pings", strconv.Itoa(n))

	p, err := b.newPair(ctx, "lag")
	defer p.close()
	if err != nil {
		return res, err
	}
	if err := p.addB(ctx); err != nil {
		return res, err
	}
	if err := p.a.link(ctx, p.z, p.z.addr); err != nil {
		return res, err
	}
	if err := p.z.link(ctx, p.a, p.a.addr); err != nil {
		return res, err
	}
	for _, s := range p.sites() {
		if err := s.Mount(ctx); err != nil {
			return res, err
		}
	}
	// A first commit proves that A reaches B (untimed).
	if err := os.Mkdir(p.a.path("lag"), 0o755); err != nil {
		return res, err
	}
	if err := p.waitUntil(ctx, "the lag directory at B", syncTimeout, statusInterval, func(context.Context) (bool, error) {
		st, err := os.Stat(p.z.path("lag"))
		return err == nil && st.IsDir(), nil
	}); err != nil {
		return res, err
	}

	slog.Info("repl-lag: timing commits", "commits", n)
	lags := make([]time.Duration, 0, n)
	var polls int
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("lag/f%05d", i)
		content := []byte(fmt.Sprintf("commit %d of %d at %s\n", i, n, time.Now().Format(time.RFC3339Nano)))
		f, err := os.OpenFile(p.a.path(name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return res, err
		}
		if _, err := f.Write(content); err != nil {
			f.Close()
			return res, err
		}
		start := time.Now()
		if err := f.Close(); err != nil {
			return res, err
		}
		deadline := start.Add(commitTimeout)
		for {
			polls++
			if got, err := os.ReadFile(p.z.path(name)); err == nil && bytes.Equal(got, content) {
				break
			}
			if time.Now().After(deadline) {
				return res, fmt.Errorf("replication stalled: %s not readable at B %v after close (commit %d of %d; %s)",
					name, commitTimeout, i+1, n, p.statuses(ctx))
			}
			if err := checkCtx(ctx); err != nil {
				return res, err
			}
			time.Sleep(lagPoll)
		}
		lags = append(lags, time.Since(start))
		if (i+1)%100 == 0 {
			sorted := slices.Sorted(slices.Values(lags))
			slog.Info("repl-lag", "commits", i+1, "p50", percentile(sorted, 50).Round(time.Microsecond),
				"p99", percentile(sorted, 99).Round(time.Microsecond))
		}
	}
	slices.Sort(lags)
	var sum time.Duration
	for _, l := range lags {
		sum += l
	}
	p50, p99 := percentile(lags, 50), percentile(lags, 99)
	b.notef("repl-lag (run %d): %d commits, close→readable min %.1f ms, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms, mean %.1f ms "+
		"(%d reads of B's mount). Links have the default --coalesce 50ms: an idle sender waits 50 ms after the first new commit "+
		"(here the create at open(2), not the close) before it sends; commits that land while a batch is in flight go without waiting.",
		b.run+1, n, ms(lags[0]), ms(p50), ms(percentile(lags, 90)), ms(p99), ms(lags[len(lags)-1]), ms(sum/time.Duration(n)), polls)
	res.geofs = []metric{
		{name: "close→readable p50", unit: "ms", value: ms(p50), goal: below(150, "< 150 ms")},
		{name: "close→readable p99", unit: "ms", value: ms(p99), goal: below(500, "< 500 ms")},
	}
	if refErr != nil {
		res.refErr = fmt.Errorf("reference (quicref -pings): %w", refErr)
	} else {
		res.ref = []metric{
			{name: "close→readable p50", unit: "ms", value: ref.RTTP50Ms},
			{name: "close→readable p99", unit: "ms", value: ref.RTTP99Ms},
		}
		b.notef("repl-lag (run %d) reference: raw QUIC 1-byte round trip %s ⇄ %s over geofs's transport, %d pings: min %.3f ms, p50 %.3f ms, p99 %.3f ms.",
			b.run+1, "127.0.0.1", hostB, n, ref.RTTMinMs, ref.RTTP50Ms, ref.RTTP99Ms)
	}
	return res, nil
}

// ---------------------------------------------------------------------------
// 2. Bytes on the wire for a 1-byte change

func replDelta(ctx context.Context, b *bench) (pairResult, error) {
	var res pairResult
	size := b.cfg.replDeltaSize
	off := size / 2
	rd := newRandData("repl-delta")

	p, err := b.newPair(ctx, "delta")
	defer p.close()
	if err != nil {
		return res, err
	}
	if err := p.addB(ctx); err != nil {
		return res, err
	}
	// All traffic between A and B goes through the relay: A dials it, B
	// has no remote (it never dials). Up = A→B, Down = B→A.
	if p.relay, err = relay.New(hostRelay+":0", p.z.addr); err != nil {
		return res, err
	}
	if err := p.a.link(ctx, p.z, p.relay.Addr()); err != nil {
		return res, err
	}
	if err := p.z.link(ctx, p.a, ""); err != nil {
		return res, err
	}
	for _, s := range p.sites() {
		if err := s.Mount(ctx); err != nil {
			return res, err
		}
	}
	name := "delta.dat"
	slog.Info("repl-delta: writing and syncing the file (untimed)", "size", fmtBytes(size))
	if _, err := writeRandomFile(ctx, p.a.path(name), rd, size, nil); err != nil {
		return res, err
	}
	start := time.Now()
	if err := p.waitUntil(ctx, "equal roots after the initial sync", syncTimeout, statusInterval, p.converged); err != nil {
		return res, err
	}
	if err := p.waitUntil(ctx, "A's link acknowledged", syncTimeout, statusInterval, p.acked); err != nil {
		return res, err
	}
	slog.Info("repl-delta: synced", "took", time.Since(start).Round(time.Millisecond))

	// The idle background (keepalives, heartbeats), to put the figure in
	// context: measured over 3 s before the change.
	const idleWindow = 3 * time.Second
	s0 := p.relay.Stats()
	time.Sleep(idleWindow)
	idle := wireBytes(p.relay.Stats()) - wireBytes(s0)

	unix.Sync()
	before := p.relay.Stats()
	linksBefore, err := p.linkCounters(ctx)
	if err != nil {
		return res, err
	}
	start = time.Now()
	newByte, err := flipByte(p.a.path(name), off)
	if err != nil {
		return res, err
	}
	if err := p.waitUntil(ctx, "the changed byte at B", syncTimeout, lagPoll, func(context.Context) (bool, error) {
		got, err := readByte(p.z.path(name), off)
		return err == nil && got == newByte, nil
	}); err != nil {
		return res, err
	}
	if err := p.waitUntil(ctx, "equal roots after the change", syncTimeout, statusInterval, p.converged); err != nil {
		return res, err
	}
	if err := p.waitUntil(ctx, "A's link acknowledged after the change", syncTimeout, statusInterval, p.acked); err != nil {
		return res, err
	}
	window := time.Since(start)
	after := p.relay.Stats()
	linksAfter, err := p.linkCounters(ctx)
	if err != nil {
		return res, err
	}
	up, down := after.Up.Bytes-before.Up.Bytes, after.Down.Bytes-before.Down.Bytes
	packets := after.Up.Packets - before.Up.Packets + after.Down.Packets - before.Down.Packets
	dropped := after.Up.Dropped - before.Up.Dropped + after.Down.Dropped - before.Down.Dropped
	b.notef("repl-delta (run %d): 1 byte changed at offset %d of a %s file: %d bytes A→B + %d bytes B→A = %d UDP payload bytes in %d datagrams "+
		"(%d dropped) over %v (change → new byte readable at B, equal roots, A's link acknowledged); idle background over %v before it: %d bytes. "+
		"Link counters of status --json over the same window: %s.",
		b.run+1, off, fmtBytes(size), up, down, up+down, packets, dropped, window.Round(time.Millisecond), idleWindow, idle,
		linksAfter.minus(linksBefore))
	res.geofs = []metric{{name: "bytes on the wire for a 1-byte change, both directions", unit: "KiB",
		value: float64(up+down) / 1024, goal: below(32, "< 32 KiB")}}

	// Reference: rsync of the same change between two local directories.
	if !haveRsync() {
		res.ref = []metric{{name: res.geofs[0].name, unit: "KiB", value: rsyncPublishedDelta / 1024}}
		b.notef("repl-delta reference: rsync is not installed; the ref column shows the published figure (about 197 KB for this change), not a measurement.")
		return res, nil
	}
	st, err := rsyncDelta(ctx, b, rd, size, off)
	if err != nil {
		res.refErr = fmt.Errorf("reference (rsync): %w", err)
		return res, nil
	}
	res.ref = []metric{{name: res.geofs[0].name, unit: "KiB", value: float64(st.sent+st.received) / 1024}}
	b.notef("repl-delta (run %d) reference: rsync -a --no-whole-file --stats of the same 1-byte change in the same %s file between two local directories: "+
		"total bytes sent %d + received %d = %d (literal data %d bytes, matched %d bytes). rsync's delta algorithm sends a checksum per block "+
		"(√size ≈ %d KiB blocks) plus the changed block; geofs sends the changed manifest node and each changed chunk as a zstd delta against the chunk at the same offset of the version the receiver has.",
		b.run+1, fmtBytes(size), st.sent, st.received, st.sent+st.received, st.literal, st.matched, isqrt(size)>>10)
	return res, nil
}

// wireBytes is the payload bytes a relay forwarded in both directions.
func wireBytes(s relay.Stats) int64 { return s.Up.Bytes + s.Down.Bytes }

func isqrt(n int64) int64 {
	r := int64(1)
	for r*r <= n {
		r++
	}
	return r - 1
}

// linkCounters are the summed link counters of both sites' status.
type linkCounters struct{ aSent, aRecv, bSent, bRecv, aChunks, bChunks int64 }

func (c linkCounters) minus(o linkCounters) string {
	return fmt.Sprintf("A bytes_sent %+d, bytes_received %+d, chunks_sent %+d; B bytes_sent %+d, bytes_received %+d, chunks_received %+d",
		c.aSent-o.aSent, c.aRecv-o.aRecv, c.aChunks-o.aChunks, c.bSent-o.bSent, c.bRecv-o.bRecv, c.bChunks-o.bChunks)
}

func (p *replPair) linkCounters(ctx context.Context) (linkCounters, error) {
	var c linkCounters
	for _, x := range []struct {
		s                  *replSite
		sent, recv, chunks *int64
		sender             bool
	}{{p.a, &c.aSent, &c.aRecv, &c.aChunks, true}, {p.z, &c.bSent, &c.bRecv, &c.bChunks, false}} {
		st, err := x.s.status(ctx)
		if err != nil {
			return c, err
		}
		for _, l := range st.Links {
			*x.sent += l.BytesSent
			*x.recv += l.BytesReceived
			if x.sender {
				*x.chunks += l.ChunksSent
			} else {
				*x.chunks += l.ChunksReceived
			}
		}
	}
	return c, nil
}

// flipByte inverts the byte at off in path (open, pwrite, close) and
// returns its new value.
func flipByte(path string, off int64) (byte, error) {
	old, err := readByte(path, off)
	if err != nil {
		return 0, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	if _, err := f.WriteAt([]byte{^old}, off); err != nil {
		f.Close()
		return 0, err
	}
	return ^old, f.Close()
}

func readByte(path string, off int64) (byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return 0, err
	}
	return b[0], nil
}

// rsyncDelta makes two local copies of the file, flips the byte at off in
// one, and rsyncs the change.
func rsyncDelta(ctx context.Context, b *bench, rd *randData, size, off int64) (rsyncStats, error) {
	dir := filepath.Join(b.dir, "repl", "rsync-delta")
	defer os.RemoveAll(dir)
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	for _, d := range []string{src, dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return rsyncStats{}, err
		}
	}
	name := "delta.dat"
	if _, err := writeRandomFile(ctx, filepath.Join(src, name), rd, size, nil); err != nil {
		return rsyncStats{}, err
	}
	if _, _, err := runRsync(ctx, "-a", src+"/", dst+"/"); err != nil {
		return rsyncStats{}, err
	}
	newByte, err := flipByte(filepath.Join(src, name), off)
	if err != nil {
		return rsyncStats{}, err
	}
	// rsync's quick check compares size and mtime; the change may fall in
	// the same second as the copy, so date it a minute later, as a later
	// edit would be.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(src, name), later, later); err != nil {
		return rsyncStats{}, err
	}
	st, _, err := runRsync(ctx, "-a", "--no-whole-file", src+"/", dst+"/")
	if err != nil {
		return st, err
	}
	if got, err := readByte(filepath.Join(dst, name), off); err != nil || got != newByte {
		return st, fmt.Errorf("rsync did not carry the change (%v)", err)
	}
	return st, nil
}

// ---------------------------------------------------------------------------
// 3 and 4. Initial sync to a new site

// initialSync fills A's mount with fill, then creates B, links the two
// (B dials A) and mounts B, and returns the time from the start of B's
// mount until both have the same namespace root. verify checks B's mount
// afterwards (untimed).
func (b *bench) initialSync(ctx context.Context, name string, fill, verify func(mnt string) error) (time.Duration, error) {
	p, err := b.newPair(ctx, name)
	defer p.close()
	if err != nil {
		return 0, err
	}
	if err := p.a.Mount(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := fill(p.a.mnt); err != nil {
		return 0, err
	}
	slog.Info(name+": filled site A (untimed)", "took", time.Since(start).Round(time.Millisecond))

	if err := p.addB(ctx); err != nil {
		return 0, err
	}
	if err := p.a.link(ctx, p.z, ""); err != nil {
		return 0, err
	}
	// A is running: it applies config.yaml changes within a second. B must
	// not dial before A names it, or its first attempt is refused.
	if err := p.waitUntil(ctx, "A to pick up its new link", time.Minute, statusInterval, func(ctx context.Context) (bool, error) {
		st, err := p.a.status(ctx)
		return err == nil && len(st.Links) == 1, err
	}); err != nil {
		return 0, err
	}
	if err := p.z.link(ctx, p.a, p.a.addr); err != nil {
		return 0, err
	}

	unix.Sync() // no writeback of the filled data during the timed sync
	start = time.Now()
	if err := p.z.Mount(ctx); err != nil {
		return 0, err
	}
	mounted := time.Since(start)
	if err := p.waitUntil(ctx, "equal roots", syncTimeout, statusInterval, p.converged); err != nil {
		return 0, err
	}
	d := time.Since(start)
	slog.Info(name+": B has A's tree", "took", d.Round(time.Millisecond), "mount_returned_after", mounted.Round(time.Millisecond))
	b.notef("%s (run %d): B's `geofs mount` returned after %v; equal namespace roots %v after it started.",
		name, b.run+1, mounted.Round(time.Millisecond), d.Round(time.Millisecond))
	if err := verify(p.z.mnt); err != nil {
		return 0, fmt.Errorf("roots are equal but B's tree is wrong: %w", err)
	}
	return d, nil
}

const smallFileSize = 4096

// smallFile is the content of small file i: the first 4 KiB of 1 MiB block
// i of the label's random data, so every file differs.
func smallFile(rd *randData, i int, buf []byte) []byte {
	buf = buf[:smallFileSize]
	rd.fill(int64(i), buf)
	return buf
}

func smallFileName(i int) string { return fmt.Sprintf("f%05d", i) }

// writeSmallFiles writes n small files into dir/files.
func writeSmallFiles(ctx context.Context, rd *randData, dir string, n int) error {
	dir = filepath.Join(dir, "files")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	buf := make([]byte, smallFileSize)
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, smallFileName(i)), smallFile(rd, i, buf), 0o644); err != nil {
			return err
		}
		if i%256 == 0 {
			if err := checkCtx(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

func replSmallFiles(ctx context.Context, b *bench) (pairResult, error) {
	var res pairResult
	n := b.cfg.replFiles
	rd := newRandData("repl-small")
	d, err := b.initialSync(ctx, "small-files",
		func(mnt string) error { return writeSmallFiles(ctx, rd, mnt, n) },
		func(mnt string) error {
			ents, err := os.ReadDir(filepath.Join(mnt, "files"))
			if err != nil {
				return err
			}
			if len(ents) != n {
				return fmt.Errorf("%d files at B, want %d", len(ents), n)
			}
			buf := make([]byte, smallFileSize)
			for _, i := range []int{0, n / 2, n - 1} {
				got, err := os.ReadFile(filepath.Join(mnt, "files", smallFileName(i)))
				if err != nil {
					return err
				}
				if !bytes.Equal(got, smallFile(rd, i, buf)) {
					return fmt.Errorf("file %d differs at B", i)
				}
			}
			return nil
		})
	if err != nil {
		return res, err
	}
	res.geofs = []metric{{name: fmt.Sprintf("initial sync of %d 4 KiB files", n), unit: "s", value: d.Seconds(), goal: below(3, "< 3 s")}}

	if !haveRsync() {
		b.notef("repl-small-files: rsync is not installed, so there is no reference figure.")
		return res, nil
	}
	dir := filepath.Join(b.dir, "repl", "rsync-small")
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return res, err
	}
	if err := writeSmallFiles(ctx, rd, src, n); err != nil {
		return res, err
	}
	unix.Sync()
	st, rd2, err := runRsync(ctx, "-a", src+"/", filepath.Join(dir, "dst")+"/")
	if err != nil {
		res.refErr = fmt.Errorf("reference (rsync): %w", err)
		return res, nil
	}
	res.ref = []metric{{name: res.geofs[0].name, unit: "s", value: rd2.Seconds()}}
	b.notef("repl-small-files (run %d) reference: rsync -a of the same %d files between two local directories on the same disk (page cache warm): %.2f s, %d bytes sent.",
		b.run+1, n, rd2.Seconds(), st.sent)
	return res, nil
}

func replBigFile(ctx context.Context, b *bench) (pairResult, error) {
	var res pairResult
	size := b.cfg.replBigSize
	rd := newRandData("repl-big")

	// The reference goes first on even runs and last on odd ones, as the
	// filesystems alternate in the other workloads.
	var ref quicrefResult
	var refErr error
	runRef := func() {
		unix.Sync()
		ref, refErr = b.runQuicref(ctx, hostA, "-size", strconv.FormatInt(size, 10))
	}
	if b.run%2 == 0 {
		runRef()
	}
	d, err := b.initialSync(ctx, "big-file",
		func(mnt string) error {
			_, err := writeRandomFile(ctx, filepath.Join(mnt, "big.dat"), rd, size, nil)
			return err
		},
		func(mnt string) error {
			f, err := os.Open(filepath.Join(mnt, "big.dat"))
			if err != nil {
				return err
			}
			defer f.Close()
			if st, err := f.Stat(); err != nil || st.Size() != size {
				return fmt.Errorf("big.dat at B: %v, %v", st, err)
			}
			return verifyBlocks(f, rd, size)
		})
	if err != nil {
		return res, err
	}
	name := fmt.Sprintf("initial sync of one %s file", fmtBytes(size))
	res.geofs = []metric{throughput(name, "MiB/s", float64(size)/MiB/d.Seconds())}
	// The target is relative to the raw stream measured below.
	res.geofs[0].goal = &goal{text: "≥ 0.5× ref", met: func(g, ref float64) bool { return ref > 0 && g >= 0.5*ref }}

	if b.run%2 == 1 {
		runRef()
	}
	if refErr != nil {
		res.refErr = fmt.Errorf("reference (quicref -size): %w", refErr)
		return res, nil
	}
	res.ref = []metric{throughput(name, "MiB/s", ref.MiBPerSec)}
	b.notef("big-file (run %d): geofs %.2f s for %s; reference: one raw quic-go stream (geofs's transport) to a second process listening on %s: %.2f s, %.0f MiB/s.",
		b.run+1, d.Seconds(), fmtBytes(size), hostA, ref.Seconds, ref.MiBPerSec)
	return res, nil
}
