package main

// Fog-node benchmarks: a full site A and a fog site F whose only link is
// metadata-only (F receives version records and manifests, never chunks,
// and fetches file data from A on demand into its bounded on-disk cache).
// F dials A through the fault-injecting relay (internal/relay) with a set
// bandwidth and round-trip time, so every fetched byte crosses an emulated
// WAN. The reference for the link is a raw quic-go stream over geofs's own
// transport through a relay with the same settings, measured in the same
// run; the reference for local reads is A's own mount.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/geofs/geofs/internal/admin"
	"github.com/geofs/geofs/internal/relay"
	"github.com/geofs/geofs/store"
	"github.com/geofs/geofs/store/cdc"
	gsync "github.com/geofs/geofs/sync"
)

// fogConfig holds the -fog-* flags.
type fogConfig struct {
	size    int64         // the remote file read at F
	files   int           // files listed at F and A
	rate    int64         // relay rate limit per direction, bytes/s
	rtt     time.Duration // relay round-trip time (half each way)
	cache   int64         // F's cache.size
	refSize int64         // bytes the raw link reference sends
	pings   int           // round trips the raw link reference times
	profile string        // directory for CPU profiles of A and F (GEOFS_CPUPROFILE)
}

// addFlags registers the -fog-* flags on the default flag set.
func (c *fogConfig) addFlags() {
	c.size, c.rate, c.cache, c.refSize = 1<<30, 25e6, 2<<30, 256<<20
	flag.Func("fog-size", "fog: size of the remote file read at the fog site (default 1GiB)", func(s string) error { return setSize(&c.size, s) })
	flag.IntVar(&c.files, "fog-files", 10000, "fog: files (in directories of 100) listed at the fog site and at A")
	flag.Func("fog-rate", "fog: relay bandwidth per direction in bytes/s (default 25MB = 200 Mbit/s)", func(s string) error { return setSize(&c.rate, s) })
	flag.DurationVar(&c.rtt, "fog-rtt", 20*time.Millisecond, "fog: relay round-trip time (half of it each way)")
	flag.Func("fog-cache", "fog: cache.size of the fog site (default 2GiB)", func(s string) error { return setSize(&c.cache, s) })
	flag.Func("fog-ref-size", "fog: bytes the raw QUIC reference sends through the relay (default 256MiB)", func(s string) error { return setSize(&c.refSize, s) })
	flag.IntVar(&c.pings, "fog-pings", 50, "fog: round trips the raw QUIC reference times through the relay")
	flag.StringVar(&c.profile, "fog-cpuprofile", "", "fog: write CPU profiles of A's and F's daemons, from their first mount until their first unmount (first byte and sequential read), to DIR/fog-run-N-{a,f}.pprof")
}

func setSize(dst *int64, s string) error {
	n, err := parseSize(s)
	if err == nil {
		*dst = n
	}
	return err
}

// check validates the flags after parsing.
func (c *fogConfig) check() error {
	switch {
	case c.size < 2*pageSize || c.files < 1 || c.rate < 1<<20 || c.rtt < 0 || c.refSize < MiB || c.pings < 1:
		return errors.New("-fog-size must be >= 8KiB, -fog-rate >= 1MiB, -fog-ref-size >= 1MiB; -fog-files, -fog-pings positive")
	case c.cache < c.size+c.size/8:
		return fmt.Errorf("-fog-cache %s must hold the -fog-size file with room to spare (>= 1.125×)", fmtBytes(c.cache))
	}
	return nil
}

func (c fogConfig) String() string {
	return fmt.Sprintf("-fog-rate %s/s (%.0f Mbit/s), -fog-rtt %v, -fog-size %s, -fog-files %d, -fog-cache %s, -fog-ref-size %s",
		fmtDecimal(c.rate), float64(c.rate)*8/1e6, c.rtt, fmtBytes(c.size), c.files, fmtBytes(c.cache), fmtBytes(c.refSize))
}

func fmtDecimal(n int64) string {
	if n%1e6 == 0 {
		return fmt.Sprintf("%dMB", n/1e6)
	}
	return fmt.Sprintf("%dB", n)
}

// conditions are the relay settings of the emulated WAN.
func (c fogConfig) conditions() relay.Conditions {
	return relay.Both(relay.Faults{Delay: c.rtt / 2, Rate: c.rate})
}

const fogDesc = "a full site A (mounted) and a fog site F whose link is metadata-only (`--direction receive --metadata-only all`, cache.size -fog-cache); " +
	"F dials A through internal/relay set to -fog-rate each way and -fog-rtt round trip. A -fog-size random file and -fog-files 4 KiB files " +
	"(100 per directory) are written at A, then F is mounted and waits for equal namespace roots. " +
	"(1) time to first byte at F: drop_caches, open + pread of the first 4 KiB; ref = the target 2 × RTT + first chunk / link rate " +
	"(RTT and link rate measured by the raw reference, first chunk size from FastCDC over the same data). " +
	"(2) sequential read of the whole file at F in 1 MiB blocks (drop_caches first); ref = link rate: one raw quic-go stream over " +
	"geofs's transport sending -fog-ref-size through a fresh relay with the same settings, listener (A's host) to dialer, timed from the " +
	"request to the last byte (before geofs on even runs, after it on odd ones). " +
	"(3) re-read at F with the chunks in F's cache, cold (unmount, drop_caches, mount, link reconnected, drop_caches); ref = the same " +
	"read on A's own mount, cold. (4) walk of the -fog-files tree with lstat of every entry (like ls -lR), cold as in (3), at F; ref = the same at A"

var fogWorkloads = []workload{
	{name: "fog", runPair: fogBench, desc: fogDesc},
}

// ---------------------------------------------------------------------------
// The raw link reference

// fogLink is what the raw reference measured through the relay.
type fogLink struct {
	rttMin, rttP50, rttP99 time.Duration
	bytes                  int64
	took                   time.Duration // request sent → last byte received
	firstByte              time.Duration // request sent → first byte received
	firstChunk             time.Duration // request sent → the first chunk's worth of bytes received
	rate                   float64       // bytes/s = bytes / took
	wire                   relay.Stats   // relay counters over the transfer
}

// Stream kinds of the in-process reference.
const (
	fogRefPing = 'P'
	fogRefSend = 'S' // followed by 8 bytes: how many bytes to send back
)

// measureFogLink runs the raw reference: a listener on A's host (as A is)
// behind a fresh relay with the fog conditions, dialed through the relay
// (as F dials A). Both QUIC endpoints and the relay run in this process;
// at tens of MB/s they need a few percent of one core.
func (b *bench) measureFogLink(ctx context.Context, chunk int) (fogLink, error) {
	var res fogLink
	c := b.cfg.fog
	newID := func() (*gsync.Identity, error) {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return gsync.NewIdentity(key)
	}
	srvID, err := newID()
	if err != nil {
		return res, err
	}
	cliID, err := newID()
	if err != nil {
		return res, err
	}
	ln, err := gsync.Listen(hostA+":0", srvID, func(store.SiteID) error { return nil })
	if err != nil {
		return res, err
	}
	defer ln.Close()
	r, err := relay.New(hostRelay+":0", ln.Addr().String())
	if err != nil {
		return res, err
	}
	defer r.Close()
	r.Set(c.conditions())

	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		defer conn.Close("done")
		for {
			st, err := conn.AcceptStream(ctx)
			if err != nil {
				return
			}
			go serveFogRef(st)
		}
	}()

	conn, err := gsync.Dial(ctx, r.Addr(), cliID, srvID.Site)
	if err != nil {
		return res, err
	}
	defer conn.Close("done")

	// Round trips.
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return res, err
	}
	one := []byte{fogRefPing}
	if _, err := st.Write(one); err != nil {
		return res, err
	}
	rtts := make([]time.Duration, 0, c.pings)
	for i := 0; i < c.pings; i++ {
		start := time.Now()
		if _, err := st.Write(one); err != nil {
			return res, err
		}
		if _, err := io.ReadFull(st, one); err != nil {
			return res, err
		}
		rtts = append(rtts, time.Since(start))
	}
	st.Close()
	slices.Sort(rtts)
	res.rttMin, res.rttP50, res.rttP99 = rtts[0], percentile(rtts, 50), percentile(rtts, 99)

	// Bulk, listener to dialer, as chunks go from A to F.
	st, err = conn.OpenStream(ctx)
	if err != nil {
		return res, err
	}
	defer st.Close()
	req := make([]byte, 9)
	req[0] = fogRefSend
	binary.BigEndian.PutUint64(req[1:], uint64(c.refSize))
	before := r.Stats()
	start := time.Now()
	if _, err := st.Write(req); err != nil {
		return res, err
	}
	buf := make([]byte, MiB)
	var got int64
	for {
		n, err := st.Read(buf)
		if got == 0 && n > 0 {
			res.firstByte = time.Since(start)
		}
		if got < int64(chunk) && got+int64(n) >= int64(chunk) {
			res.firstChunk = time.Since(start)
		}
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("raw reference: read after %d bytes: %w", got, err)
		}
	}
	res.took = time.Since(start)
	after := r.Stats()
	if got != c.refSize {
		return res, fmt.Errorf("raw reference: got %d bytes, want %d", got, c.refSize)
	}
	res.bytes = got
	res.rate = float64(got) / res.took.Seconds()
	res.wire = relay.Stats{
		Up:   relay.Counters{Packets: after.Up.Packets - before.Up.Packets, Bytes: after.Up.Bytes - before.Up.Bytes, Dropped: after.Up.Dropped - before.Up.Dropped},
		Down: relay.Counters{Packets: after.Down.Packets - before.Down.Packets, Bytes: after.Down.Bytes - before.Down.Bytes, Dropped: after.Down.Dropped - before.Down.Dropped},
	}
	return res, nil
}

func serveFogRef(st io.ReadWriteCloser) {
	defer st.Close()
	var kind [1]byte
	if _, err := io.ReadFull(st, kind[:]); err != nil {
		return
	}
	switch kind[0] {
	case fogRefPing:
		var b [1]byte
		for {
			if _, err := io.ReadFull(st, b[:]); err != nil {
				return
			}
			if _, err := st.Write(b[:]); err != nil {
				return
			}
		}
	case fogRefSend:
		var n [8]byte
		if _, err := io.ReadFull(st, n[:]); err != nil {
			return
		}
		size := int64(binary.BigEndian.Uint64(n[:]))
		buf := make([]byte, MiB)
		rand.Read(buf)
		for sent := int64(0); sent < size; {
			k := min(int64(len(buf)), size-sent)
			if _, err := st.Write(buf[:k]); err != nil {
				return
			}
			sent += k
		}
	}
}

// ---------------------------------------------------------------------------
// The fog workload

// fogStatus asks a running site for its status over the admin socket.
func fogStatus(ctx context.Context, s *replSite) (admin.Status, error) {
	st, err := admin.Dial(admin.SocketPath(s.store)).Status(ctx)
	if err != nil {
		return admin.Status{}, fmt.Errorf("status of %s: %w", s.name, err)
	}
	return st, nil
}

// fogFetchDelta describes F's fetching between two status snapshots.
func fogFetchDelta(a, b admin.Status) string {
	var lf, lb int64
	for _, l := range b.Links {
		lf += l.ChunksFetched
		lb += l.BytesFetched
	}
	for _, l := range a.Links {
		lf -= l.ChunksFetched
		lb -= l.BytesFetched
	}
	cb, ca := b.Cache, a.Cache
	return fmt.Sprintf("fetches %+d (%s), fetch_failures %+d, hits %+d, misses %+d, evictions %+d; fetch latency p50 %.1f ms, p99 %.1f ms (over the daemon's last 1024 fetches); "+
		"links chunks_fetched %+d, bytes_fetched %+d; cache now %s in %d chunks of limit %s",
		cb.Fetches-ca.Fetches, fmtBytes(int64(cb.FetchStats.Bytes-ca.FetchStats.Bytes)), cb.Failures-ca.Failures,
		cb.Hits-ca.Hits, cb.Misses-ca.Misses, cb.Evictions-ca.Evictions, cb.FetchLatencyP50Ms, cb.FetchLatencyP99Ms,
		lf, lb, fmtBytes(cb.Size), cb.Chunks, fmtBytes(cb.Limit))
}

const fogBigName = "big.dat"

func fogFileName(i int) string {
	return filepath.Join(fmt.Sprintf("d%03d", i/100), fmt.Sprintf("f%05d", i))
}

func fogBench(ctx context.Context, b *bench) (pairResult, error) {
	var res pairResult
	c := b.cfg.fog
	rd := newRandData("fog-big")
	// The first chunk of the file, as FastCDC cuts it.
	first := make([]byte, 4*MiB)
	for i := int64(0); i < int64(len(first))/blockSize; i++ {
		rd.fill(i, first[i*blockSize:(i+1)*blockSize])
	}
	first = first[:min(int64(len(first)), c.size)]
	firstChunk := cdc.Default.Cut(first, int64(len(first)) == c.size)

	// The raw link reference, first on even runs and last on odd ones.
	var link fogLink
	var linkErr error
	measureLink := func() {
		slog.Info("fog: raw link reference through the relay", "rate", c.rate, "rtt", c.rtt, "bytes", c.refSize)
		link, linkErr = b.measureFogLink(ctx, firstChunk)
		if linkErr == nil {
			slog.Info("fog: raw link", "rtt_p50", link.rttP50, "MB/s", fmt.Sprintf("%.2f", link.rate/1e6), "took", link.took.Round(time.Millisecond))
		}
	}
	if b.run%2 == 0 {
		if measureLink(); linkErr != nil {
			return res, fmt.Errorf("raw link reference: %w", linkErr)
		}
	}

	p, err := b.newPair(ctx, "fog")
	defer p.close()
	if err != nil {
		return res, err
	}
	a := p.a
	f, err := b.newReplSite(ctx, p.dir, "f", hostB)
	p.z = f
	if err != nil {
		return res, err
	}
	if _, err := runCmd(ctx, time.Minute, f.bin, "config", f.store, "cache.size", strconv.FormatInt(c.cache, 10)); err != nil {
		return res, err
	}
	if p.relay, err = relay.New(hostRelay+":0", a.addr); err != nil {
		return res, err
	}
	p.relay.Set(c.conditions())
	if _, err := runCmd(ctx, time.Minute, a.bin, "link", "add", a.store, "--name", "to-f", "--peer", f.id); err != nil {
		return res, err
	}
	if _, err := runCmd(ctx, time.Minute, f.bin, "link", "add", f.store, "--name", "to-a", "--peer", a.id,
		"--remote", p.relay.Addr(), "--direction", "receive", "--metadata-only", "all"); err != nil {
		return res, err
	}

	// A's data (untimed).
	if err := fogMount(ctx, b, a); err != nil {
		return res, err
	}
	if _, err := writeRandomFile(ctx, a.path(fogBigName), rd, c.size, nil); err != nil {
		return res, err
	}
	start := time.Now()
	small := newRandData("fog-small")
	buf := make([]byte, smallFileSize)
	for i := 0; i < c.files; i++ {
		path := a.path(fogFileName(i))
		if i%100 == 0 {
			if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
				return res, err
			}
		}
		if err := os.WriteFile(path, smallFile(small, i, buf), 0o644); err != nil {
			return res, err
		}
		if i%256 == 0 {
			if err := checkCtx(ctx); err != nil {
				return res, err
			}
		}
	}
	unix.Sync()
	slog.Info("fog: wrote the small files at A (untimed)", "files", c.files, "took", time.Since(start).Round(time.Millisecond))

	// F joins and receives the metadata.
	start = time.Now()
	if err := fogMount(ctx, b, f); err != nil {
		return res, err
	}
	if err := p.waitUntil(ctx, "equal roots at A and F (metadata sync)", syncTimeout, statusInterval, p.converged); err != nil {
		return res, err
	}
	metaSync := time.Since(start)
	st, err := os.Stat(f.path(fogBigName))
	if err != nil || st.Size() != c.size {
		return res, fmt.Errorf("roots are equal but F's %s is %v (%v), want %d bytes", fogBigName, st, err, c.size)
	}
	fs0, err := fogStatus(ctx, f)
	if err != nil {
		return res, err
	}
	var chunksReceived int64
	for _, l := range fs0.Links {
		chunksReceived += l.ChunksReceived
	}
	wire0 := p.relay.Stats()
	b.notef("fog (run %d): F mounted and had A's namespace root %v after `geofs mount` started (%d files + one %s file; metadata only: chunks_received %d, "+
		"cache fetches %d; relay so far %s A→F in %d datagrams, %d dropped at the rate limit's queue, %s F→A).",
		b.run+1, metaSync.Round(time.Millisecond), c.files, fmtBytes(c.size), chunksReceived, fs0.Cache.Fetches,
		fmtBytes(wire0.Down.Bytes), wire0.Down.Packets, wire0.Down.Dropped, fmtBytes(wire0.Up.Bytes))

	// 1. Time to first byte.
	if err := dropCaches(); err != nil {
		return res, err
	}
	page := make([]byte, pageSize)
	start = time.Now()
	fh, err := os.Open(f.path(fogBigName))
	if err != nil {
		return res, err
	}
	n, err := fh.ReadAt(page, 0)
	ttfb := time.Since(start)
	fh.Close()
	if err != nil || n != pageSize {
		return res, fmt.Errorf("first 4 KiB at F: %d bytes, %v", n, err)
	}
	if !slices.Equal(page, first[:pageSize]) {
		return res, errors.New("first 4 KiB at F differ from what A wrote")
	}
	fs1, err := fogStatus(ctx, f)
	if err != nil {
		return res, err
	}
	slog.Info("fog: time to first byte", "ttfb", ttfb.Round(time.Microsecond), "first_chunk", firstChunk)
	b.notef("fog (run %d) time to first byte: %.1f ms; first chunk %d bytes (FastCDC of the data, cdc.Default); F over the read: %s.",
		b.run+1, ms(ttfb), firstChunk, fogFetchDelta(fs0, fs1))
	// Let any read-ahead the first read started finish before timing the sequential read.
	if err := fogQuiet(ctx, f); err != nil {
		return res, err
	}

	// 2. Sequential read over the link.
	if err := dropCaches(); err != nil {
		return res, err
	}
	fs2, err := fogStatus(ctx, f)
	if err != nil {
		return res, err
	}
	w2 := p.relay.Stats()
	seq, seqErr := fogReadFile(ctx, f.path(fogBigName), rd, c.size, "F, over the link")
	w3 := p.relay.Stats()
	fs3, err := fogStatus(ctx, f)
	if err != nil {
		return res, err
	}
	down := w3.Down.Bytes - w2.Down.Bytes
	wire := fmt.Sprintf("relay A→F %s in %d datagrams (%.2f MB/s on the wire, %d dropped), F→A %s in %d datagrams",
		fmtBytes(down), w3.Down.Packets-w2.Down.Packets, float64(down)/seq.took.Seconds()/1e6, w3.Down.Dropped-w2.Down.Dropped,
		fmtBytes(w3.Up.Bytes-w2.Up.Bytes), w3.Up.Packets-w2.Up.Packets)
	if seqErr != nil {
		seqErr = fmt.Errorf("sequential read at F: %w", seqErr)
		as, err := fogStatus(ctx, a)
		if err != nil {
			return res, err
		}
		var served int64
		for _, l := range as.Links {
			served += l.FetchesServed
		}
		b.notef("fog (run %d) sequential read at F FAILED: %v. %s. F over the read: %s; A's link fetches_served %d in all. %s.",
			b.run+1, seqErr, seq, fogFetchDelta(fs2, fs3), served, wire)
	} else {
		b.notef("fog (run %d) sequential read at F: %s in %.2f s = %.2f MB/s (%s already cached before it; %s); %s; F over the read: %s.",
			b.run+1, fmtBytes(c.size), seq.took.Seconds(), float64(c.size)/seq.took.Seconds()/1e6, fmtBytes(fs2.Cache.Size), seq, wire, fogFetchDelta(fs2, fs3))
	}

	// 3. Cached re-read at F against a read on A's own mount, both cold
	// (only if F read the whole file); 4. listing at F against A, both
	// cold. The reference goes first on even runs.
	var reread, aRead fogRead
	var listF, listA time.Duration
	var rereadNote string
	fogSide := func() error {
		if seqErr == nil {
			if err := fogRemountCold(ctx, p, f); err != nil {
				return err
			}
			before, err := fogStatus(ctx, f)
			if err != nil {
				return err
			}
			if reread, err = fogReadFile(ctx, f.path(fogBigName), rd, c.size, "F, cached"); err != nil {
				return fmt.Errorf("cached re-read at F: %w (%s)", err, reread)
			}
			after, err := fogStatus(ctx, f)
			if err != nil {
				return err
			}
			rereadNote = fogFetchDelta(before, after)
			if after.Cache.Fetches != before.Cache.Fetches {
				b.notef("fog (run %d): the cached re-read at F fetched again: %s.", b.run+1, rereadNote)
			}
		}
		if err := fogRemountCold(ctx, p, f); err != nil {
			return err
		}
		var err error
		if listF, err = fogWalk(ctx, f.mnt, c.files); err != nil {
			return fmt.Errorf("walk at F: %w", err)
		}
		after, err := fogStatus(ctx, f)
		if err != nil {
			return err
		}
		if after.Cache.Fetches != 0 {
			b.notef("fog (run %d): listing at F fetched: %s.", b.run+1, fogFetchDelta(admin.Status{}, after))
		}
		return nil
	}
	aSide := func() error {
		if err := fogRemountCold(ctx, p, a); err != nil {
			return err
		}
		var err error
		if aRead, err = fogReadFile(ctx, a.path(fogBigName), rd, c.size, "A"); err != nil {
			return fmt.Errorf("read at A: %w", err)
		}
		if err := fogRemountCold(ctx, p, a); err != nil {
			return err
		}
		if listA, err = fogWalk(ctx, a.mnt, c.files); err != nil {
			return fmt.Errorf("walk at A: %w", err)
		}
		return nil
	}
	sides := []func() error{aSide, fogSide}
	if b.run%2 == 1 {
		sides = []func() error{fogSide, aSide}
	}
	for _, side := range sides {
		if err := side(); err != nil {
			return res, err
		}
	}
	if seqErr == nil {
		b.notef("fog (run %d) cold re-read at F from its cache: %.2f s = %.1f MiB/s (F over it: %s); the same read on A's own mount: %.2f s = %.1f MiB/s.",
			b.run+1, reread.took.Seconds(), mibPerSec(c.size, reread.took), rereadNote, aRead.took.Seconds(), mibPerSec(c.size, aRead.took))
	} else {
		b.notef("fog (run %d) cold read on A's own mount: %.2f s = %.1f MiB/s (no cached re-read at F to compare: F never had the whole file).",
			b.run+1, aRead.took.Seconds(), mibPerSec(c.size, aRead.took))
	}
	b.notef("fog (run %d) cold walk + lstat of %d files in %d directories: F %.3f s, A %.3f s.",
		b.run+1, c.files, (c.files+99)/100, listF.Seconds(), listA.Seconds())

	if b.run%2 == 1 {
		if measureLink(); linkErr != nil {
			return res, fmt.Errorf("raw link reference: %w", linkErr)
		}
	}
	b.notef("fog (run %d) raw link reference (relay %s): round trip min %.2f ms, p50 %.2f ms, p99 %.2f ms (%d pings); %s listener→dialer in %.2f s "+
		"(first byte after %.1f ms, first %d bytes (the first chunk's size) after %.1f ms) = %.2f MB/s = %.1f MiB/s goodput; relay forwarded %s in %d datagrams that way (%d dropped) and %s in %d the other way.",
		b.run+1, c, ms(link.rttMin), ms(link.rttP50), ms(link.rttP99), c.pings, fmtBytes(link.bytes), link.took.Seconds(), ms(link.firstByte), firstChunk, ms(link.firstChunk),
		link.rate/1e6, link.rate/MiB, fmtBytes(link.wire.Down.Bytes), link.wire.Down.Packets, link.wire.Down.Dropped,
		fmtBytes(link.wire.Up.Bytes), link.wire.Up.Packets)

	target := 2*link.rttP50 + time.Duration(float64(firstChunk)/link.rate*float64(time.Second))
	ttfbName := "time to first byte (open + 4 KiB), cold; ref = 2 RTT + first chunk at link rate"
	seqName := fmt.Sprintf("sequential read of %s over the link; ref = raw link rate", fmtBytes(c.size))
	rereadName := fmt.Sprintf("re-read of %s from F's cache, cold; ref = A's own mount", fmtBytes(c.size))
	listName := fmt.Sprintf("walk + lstat of %d files, cold; ref = A", c.files)
	atLeast := func(x float64, text string) *goal {
		return &goal{text: text, met: func(g, ref float64) bool { return ref > 0 && g >= x*ref }}
	}
	ttfbGoal := &goal{text: "≤ ref", met: func(g, ref float64) bool { return ref > 0 && g <= ref }}
	seqGoal, rereadGoal := atLeast(0.9, "≥ 0.9× ref"), atLeast(0.9, "≥ 0.9× ref")
	// The goals go on both sides: a row takes its metric from whichever
	// side is recorded first.
	res.ref = []metric{
		{name: ttfbName, unit: "ms", value: ms(target), goal: ttfbGoal},
		{name: seqName, unit: "MiB/s", value: link.rate / MiB, higherBetter: true, goal: seqGoal},
		{name: rereadName, unit: "MiB/s", value: mibPerSec(c.size, aRead.took), higherBetter: true, goal: rereadGoal},
		{name: listName, unit: "s", value: listA.Seconds()},
	}
	res.geofs = []metric{{name: ttfbName, unit: "ms", value: ms(ttfb), goal: ttfbGoal}}
	if seqErr == nil {
		res.geofs = append(res.geofs,
			metric{name: seqName, unit: "MiB/s", value: mibPerSec(c.size, seq.took), higherBetter: true, goal: seqGoal},
			metric{name: rereadName, unit: "MiB/s", value: mibPerSec(c.size, reread.took), higherBetter: true, goal: rereadGoal})
	}
	res.geofs = append(res.geofs, metric{name: listName, unit: "s", value: listF.Seconds()})
	slog.Info("fog: run done", "ttfb_ms", ms(ttfb), "target_ms", ms(target), "seq_MiBps", mibPerSec(c.size, seq.took), "seq_err", seqErr,
		"link_MiBps", link.rate/MiB, "reread_MiBps", mibPerSec(c.size, reread.took), "a_read_MiBps", mibPerSec(c.size, aRead.took),
		"list_f_s", listF.Seconds(), "list_a_s", listA.Seconds())
	if seqErr != nil {
		// Record what was measured, then fail the workload: the rows
		// without a figure show as errors, and the run exits non-zero.
		w := workload{name: "fog", desc: fogDesc} // as in fogWorkloads
		b.report.add(w, "ref", res.ref, nil)      // first: it has every row, in order
		b.report.add(w, "geofs", res.geofs, nil)
		return pairResult{}, fmt.Errorf("%w (the re-read from F's cache needs the whole file and was skipped; see the notes)", seqErr)
	}
	return res, nil
}

// fogMount mounts s, with GEOFS_CPUPROFILE set in its environment if
// -fog-cpuprofile asks for profiles.
func fogMount(ctx context.Context, b *bench, s *replSite) error {
	if b.cfg.fog.profile == "" {
		return s.Mount(ctx)
	}
	path, err := filepath.Abs(filepath.Join(b.cfg.fog.profile, fmt.Sprintf("fog-run-%d-%s.pprof", b.run+1, s.name)))
	if err != nil {
		return err
	}
	// The mount inherits this process's environment.
	os.Setenv("GEOFS_CPUPROFILE", path)
	defer os.Unsetenv("GEOFS_CPUPROFILE")
	slog.Info("fog: CPU profile", "site", s.name, "path", path)
	return s.Mount(ctx)
}

// fogQuiet waits until F's fetch counters stop moving (100 ms apart).
func fogQuiet(ctx context.Context, f *replSite) error {
	var last uint64 = ^uint64(0)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		st, err := fogStatus(ctx, f)
		if err != nil {
			return err
		}
		if st.Cache.Fetches == last {
			return nil
		}
		last = st.Cache.Fetches
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("F kept fetching for a minute after the first read")
}

// fogRemountCold unmounts s, drops the caches, mounts it again, waits until
// both sites are connected with equal roots (so no reconciliation runs
// during the timed part) and drops the caches again.
func fogRemountCold(ctx context.Context, p *replPair, s *replSite) error {
	if err := s.Unmount(ctx); err != nil {
		return err
	}
	if err := dropCaches(); err != nil {
		return err
	}
	if err := s.Mount(ctx); err != nil {
		return err
	}
	connected := func(ctx context.Context) (bool, error) {
		for _, x := range p.sites() {
			st, err := x.status(ctx)
			if err != nil {
				return false, err
			}
			for _, l := range st.Links {
				if !l.Connected {
					return false, nil
				}
			}
		}
		return p.converged(ctx)
	}
	if err := p.waitUntil(ctx, "the link reconnected with equal roots after remounting "+s.name, 2*time.Minute, statusInterval, connected); err != nil {
		return err
	}
	return dropCaches()
}

// fogRead describes one sequential read of a file.
type fogRead struct {
	total      int64         // bytes read
	took       time.Duration // until the end of the file or the error
	stallAt    int64         // offset of the first read(2) that took over stallTime, -1 if none
	stallAfter time.Duration // when that read started
	stall      time.Duration // how long it took
}

// stallTime is a read(2) of 1 MiB that counts as a stall: at the link
// rates this benchmark uses, a 1 MiB read takes tens of milliseconds.
const stallTime = time.Second

func (r fogRead) String() string {
	s := fmt.Sprintf("read %s in %.2f s", fmtBytes(r.total), r.took.Seconds())
	if r.stallAt < 0 {
		return s + ", no read(2) over " + stallTime.String()
	}
	return s + fmt.Sprintf("; the first read(2) over %v was at offset %d (%.1f MiB), %.2f s in, and took %.2f s; before it: %.2f MB/s",
		stallTime, r.stallAt, float64(r.stallAt)/MiB, r.stallAfter.Seconds(), r.stall.Seconds(), float64(r.stallAt)/r.stallAfter.Seconds()/1e6)
}

// fogReadFile reads path sequentially in 1 MiB blocks, checks the size and
// the first and last blocks, and says how long the reads took.
func fogReadFile(ctx context.Context, path string, rd *randData, size int64, what string) (fogRead, error) {
	r := fogRead{stallAt: -1}
	f, err := os.Open(path)
	if err != nil {
		return r, err
	}
	defer f.Close()
	buf := make([]byte, blockSize)
	const every = 64 * MiB
	start := time.Now()
	lastAt, lastTotal := start, int64(0)
	for {
		t0 := time.Now()
		n, err := f.Read(buf)
		if d := time.Since(t0); d > stallTime && r.stallAt < 0 {
			r.stallAt, r.stallAfter, r.stall = r.total, t0.Sub(start), d
			slog.Warn("fog: a read(2) stalled", "what", what, "offset", r.total, "took", d.Round(time.Millisecond), "err", err)
		}
		r.total += int64(n)
		r.took = time.Since(start)
		if err == io.EOF {
			break
		}
		if err != nil {
			return r, fmt.Errorf("read %s at %d: %w", path, r.total, err)
		}
		if r.total/every != (r.total-int64(n))/every {
			now := time.Now()
			slog.Info("fog: reading", "what", what, "at", fmtBytes(r.total), "MiB/s_last", fmt.Sprintf("%.1f", mibPerSec(r.total-lastTotal, now.Sub(lastAt))))
			lastAt, lastTotal = now, r.total
			if err := checkCtx(ctx); err != nil {
				return r, err
			}
		}
	}
	if r.total != size {
		return r, fmt.Errorf("read %d bytes of %s, want %d", r.total, path, size)
	}
	if err := verifyBlocks(f, rd, size); err != nil {
		return r, err
	}
	slog.Info("fog: read", "what", what, "took", r.took.Round(time.Millisecond), "MiB/s", fmt.Sprintf("%.1f", mibPerSec(size, r.took)))
	return r, nil
}

// fogWalk walks root like ls -lR: readdir of every directory and lstat of
// every entry. It checks that it saw the files.
func fogWalk(ctx context.Context, root string, files int) (time.Duration, error) {
	var st unix.Stat_t
	seen := 0
	start := time.Now()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		if d.Type().IsRegular() && filepath.Dir(filepath.Dir(path)) == root {
			seen++
		}
		if seen%256 == 0 {
			return checkCtx(ctx)
		}
		return nil
	})
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if seen != files {
		return 0, fmt.Errorf("walk of %s: %d files in its directories, want %d", root, seen, files)
	}
	return d, nil
}
