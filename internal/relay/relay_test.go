package relay

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// These tests use real UDP sockets on 127.0.0.1. Timing bounds are loose on
// purpose: the machines that run them are small and busy.

// TestForwardsBothWaysForTwoClients: each client gets its own replies, and
// the target sees each client as a distinct peer.
func TestForwardsBothWaysForTwoClients(t *testing.T) {
	e := newEcho(t)
	r := newRelay(t, e.addr())
	a, b := dial(t, r.Addr()), dial(t, r.Addr())
	for i := range 20 {
		for _, c := range []struct {
			conn *net.UDPConn
			name string
		}{{a, "a"}, {b, "b"}} {
			msg := fmt.Sprintf("%s-%d", c.name, i)
			if got := roundTrip(t, c.conn, msg, time.Second); got != msg {
				t.Fatalf("client %s got %q, want %q", c.name, got, msg)
			}
		}
	}
	if n := len(e.sources()); n != 2 {
		t.Errorf("target saw %d distinct peers, want 2", n)
	}
	// The counters move just after each send, so wait for the last one.
	st := settle(t, r, func(st Stats) int64 { return st.Up.Packets + st.Down.Packets })
	if st.Up.Packets != 40 || st.Down.Packets != 40 || st.Up.Dropped+st.Down.Dropped != 0 {
		t.Errorf("stats = %+v, want 40 packets each way, none dropped", st)
	}
	if st.Up.Bytes != st.Down.Bytes || st.Up.Bytes == 0 {
		t.Errorf("stats = %+v, want the same bytes each way", st)
	}
}

// TestLoss: the fraction dropped is near the configured loss.
func TestLoss(t *testing.T) {
	s := newSink(t)
	r := newRelay(t, s.addr())
	r.Set(Conditions{Up: Faults{Loss: 0.2}})
	c := dial(t, r.Addr())
	const n = 5000
	sendPaced(t, c, n, 100)
	st := settle(t, r, func(st Stats) int64 { return st.Up.Packets + st.Up.Dropped })
	total := st.Up.Packets + st.Up.Dropped
	if total < n*9/10 {
		t.Fatalf("relay saw only %d of %d packets", total, n)
	}
	frac := float64(st.Up.Dropped) / float64(total)
	t.Logf("dropped %d of %d (%.3f)", st.Up.Dropped, total, frac)
	if frac < 0.15 || frac > 0.25 {
		t.Errorf("dropped fraction %.3f, want about 0.2", frac)
	}
	if got := len(s.wait(int(st.Up.Packets), 2*time.Second)); int64(got) != st.Up.Packets {
		t.Errorf("sink got %d packets, relay forwarded %d", got, st.Up.Packets)
	}
}

// TestSeedRepeats: the same seed drops the same packets.
func TestSeedRepeats(t *testing.T) {
	run := func() []uint32 {
		s := newSink(t)
		r, err := NewWithSeed("127.0.0.1:0", s.addr(), 42)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		r.Set(Both(Faults{Loss: 0.5}))
		c := dial(t, r.Addr())
		sendPaced(t, c, 200, 100)
		st := settle(t, r, func(st Stats) int64 { return st.Up.Packets + st.Up.Dropped })
		return seqs(s.wait(int(st.Up.Packets), 2*time.Second))
	}
	first, second := run(), run()
	if len(first) < 50 || len(first) > 150 {
		t.Fatalf("%d of 200 packets got through at 50%% loss", len(first))
	}
	if !slices.Equal(first, second) {
		t.Errorf("same seed, different packets delivered:\n%v\n%v", first, second)
	}
}

// TestPartition: a partition drops everything; healing it restores traffic
// on the same session.
func TestPartition(t *testing.T) {
	e := newEcho(t)
	r := newRelay(t, e.addr())
	c := dial(t, r.Addr())
	if got := roundTrip(t, c, "before", time.Second); got != "before" {
		t.Fatalf("got %q before the partition", got)
	}
	r.Partition(true)
	if !r.Conditions().Up.Down || !r.Conditions().Down.Down {
		t.Fatalf("conditions after Partition(true) = %+v", r.Conditions())
	}
	for i := range 10 {
		mustWrite(t, c, fmt.Sprint("lost", i))
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 100)); err == nil {
		t.Fatalf("got %d bytes through a partition", n)
	}
	if st := r.Stats(); st.Up.Dropped != 10 || st.Up.Packets != 1 {
		t.Errorf("stats after partition = %+v, want 10 dropped up", st)
	}
	r.Partition(false)
	if got := roundTrip(t, c, "after", time.Second); got != "after" {
		t.Fatalf("got %q after healing", got)
	}
	if n := len(e.sources()); n != 1 {
		t.Errorf("target saw %d peers, want the same one throughout", n)
	}
}

// TestPartitionDropsQueued: packets already delayed when the partition
// starts are lost too.
func TestPartitionDropsQueued(t *testing.T) {
	s := newSink(t)
	r := newRelay(t, s.addr())
	r.Set(Conditions{Up: Faults{Delay: 200 * time.Millisecond}})
	c := dial(t, r.Addr())
	sendPaced(t, c, 10, 10)
	time.Sleep(50 * time.Millisecond)
	r.Partition(true)
	st := settle(t, r, func(st Stats) int64 { return st.Up.Dropped })
	if st.Up.Dropped != 10 || st.Up.Packets != 0 {
		t.Errorf("stats = %+v, want the 10 queued packets dropped", st)
	}
}

// TestDelay: an echo round trip takes at least twice the one-way delay, and
// a burst is not serialized by it.
func TestDelay(t *testing.T) {
	const delay = 50 * time.Millisecond
	e := newEcho(t)
	r := newRelay(t, e.addr())
	r.Set(Both(Faults{Delay: delay}))
	c := dial(t, r.Addr())
	for i := range 3 {
		start := time.Now()
		roundTrip(t, c, fmt.Sprint("ping", i), 2*time.Second)
		rtt := time.Since(start)
		t.Logf("round trip %v", rtt)
		if rtt < 2*delay || rtt > 2*delay+time.Second {
			t.Errorf("round trip took %v, want about %v", rtt, 2*delay)
		}
	}

	// 100 packets back to back: serialized, they would take 10 s.
	const n = 100
	start := time.Now()
	for i := range n {
		mustWrite(t, c, fmt.Sprint(i))
	}
	buf := make([]byte, 100)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for i := range n {
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
	}
	if took := time.Since(start); took < 2*delay || took > 2*delay+time.Second {
		t.Errorf("burst of %d took %v, want about %v", n, took, 2*delay)
	}
}

// TestJitterKeepsOrder: jitter varies the delay but does not reorder.
func TestJitterKeepsOrder(t *testing.T) {
	s := newSink(t)
	r := newRelay(t, s.addr())
	r.Set(Conditions{Up: Faults{Delay: 20 * time.Millisecond, Jitter: 15 * time.Millisecond}})
	c := dial(t, r.Addr())
	sendPaced(t, c, 300, 10)
	got := seqs(s.wait(300, 3*time.Second))
	if len(got) < 290 {
		t.Fatalf("only %d of 300 packets arrived", len(got))
	}
	if !slices.IsSorted(got) {
		t.Errorf("jitter reordered packets: %v", got)
	}
}

// TestReorder: some packets arrive after their successor, and none is lost.
func TestReorder(t *testing.T) {
	s := newSink(t)
	r := newRelay(t, s.addr())
	r.Set(Conditions{Up: Faults{Reorder: 0.1}})
	c := dial(t, r.Addr())
	const n = 1000
	sendPaced(t, c, n, 20)
	got := seqs(s.wait(n, 3*time.Second))
	if len(got) < n*99/100 {
		t.Fatalf("only %d of %d packets arrived", len(got), n)
	}
	late := 0
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			late++
		}
	}
	t.Logf("%d of %d packets arrived after a later one", late, len(got))
	if late < 20 || late > 300 {
		t.Errorf("%d packets reordered at 10%%, want about 100", late)
	}
}

// TestRate: throughput through a rate limit is near the rate, and the
// excess is dropped.
func TestRate(t *testing.T) {
	const rate = 1_000_000 // bytes per second
	s := newSink(t)
	r := newRelay(t, s.addr())
	r.Set(Conditions{Up: Faults{Rate: rate}})
	c := dial(t, r.Addr())

	// Offer twice the rate for a second.
	pkt := make([]byte, 1000)
	start, sent := time.Now(), 0
	for time.Since(start) < time.Second {
		for float64(sent) < 2*rate*time.Since(start).Seconds() {
			binary.BigEndian.PutUint32(pkt, uint32(sent/len(pkt)))
			mustWrite(t, c, string(pkt))
			sent += len(pkt)
		}
		time.Sleep(time.Millisecond)
	}
	st := settle(t, r, func(st Stats) int64 { return st.Up.Packets + st.Up.Dropped })
	got := s.wait(int(st.Up.Packets), 2*time.Second)
	if len(got) < 100 {
		t.Fatalf("only %d packets arrived", len(got))
	}
	first, last := got[0], got[len(got)-1]
	total := 0 // after the first packet
	for _, a := range got[1:] {
		total += a.n
	}
	through := float64(total) / last.at.Sub(first.at).Seconds()
	t.Logf("offered %d bytes, %+v; throughput %.0f B/s", sent, st.Up, through)
	if through < 0.7*rate || through > 1.3*rate {
		t.Errorf("throughput %.0f B/s, want about %d", through, rate)
	}
	if st.Up.Dropped == 0 {
		t.Errorf("nothing dropped at twice the rate")
	}
}

// TestIdleSessionsExpire: a client silent for the idle timeout gets a new
// upstream socket when it speaks again.
func TestIdleSessionsExpire(t *testing.T) {
	e := newEcho(t)
	saved := idleTimeout
	idleTimeout = 200 * time.Millisecond
	r := newRelay(t, e.addr())
	idleTimeout = saved
	c := dial(t, r.Addr())
	roundTrip(t, c, "one", time.Second)
	time.Sleep(100 * time.Millisecond)
	roundTrip(t, c, "two", time.Second) // not idle yet
	if n := len(e.sources()); n != 1 {
		t.Fatalf("target saw %d peers before the timeout, want 1", n)
	}
	time.Sleep(600 * time.Millisecond)
	roundTrip(t, c, "three", time.Second)
	if n := len(e.sources()); n != 2 {
		t.Errorf("target saw %d peers after the timeout, want 2", n)
	}
}

// TestCloseLeavesNoGoroutines: Close stops everything, even with packets
// queued and several sessions open.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	e := newEcho(t)
	before := runtime.NumGoroutine()
	r, err := NewWithSeed("127.0.0.1:0", e.addr(), 1)
	if err != nil {
		t.Fatal(err)
	}
	r.Set(Both(Faults{Delay: 50 * time.Millisecond, Reorder: 0.5, Rate: 100_000}))
	for i := range 3 {
		c := dial(t, r.Addr())
		for j := range 20 {
			mustWrite(t, c, fmt.Sprint(i, j))
		}
	}
	time.Sleep(80 * time.Millisecond) // some replies are queued downstream
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after Close:\n%s",
				before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestQUICThroughLossyRelay: a real QUIC connection moves 4 MiB intact
// through 5% loss and 10ms delay each way.
// At 5% loss quic-go's congestion control keeps the window small, so this
// takes about 10 s.
func TestQUICThroughLossyRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: moves 4 MiB at about 400 KB/s")
	}
	serverTLS, clientTLS := tlsConfigs(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := newRelay(t, ln.Addr().String())
	r.Set(Both(Faults{Loss: 0.05, Delay: 10 * time.Millisecond}))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serveHash(ctx, ln) }()

	data := make([]byte, 4<<20)
	rand.Read(data)
	start := time.Now()
	conn, err := quic.DialAddr(ctx, r.Addr(), clientTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write(data); err != nil {
		t.Fatal(err)
	}
	str.Close() // our half: the server reads to EOF
	got, err := io.ReadAll(str)
	if err != nil {
		t.Fatalf("reading the server's hash: %v", err)
	}
	t.Logf("4 MiB in %v; relay %+v", time.Since(start), r.Stats())
	if want := sha256.Sum256(data); !bytes.Equal(got, want[:]) {
		t.Fatalf("server hashed %x, sent %x", got, want)
	}
	// The close is one packet, never retransmitted: through 5% loss the
	// server would sometimes learn of it only from its idle timeout.
	st := r.Stats()
	r.Set(Both(Faults{}))
	conn.CloseWithError(0, "done")
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if st.Up.Dropped == 0 || st.Down.Dropped == 0 {
		t.Errorf("no loss in one direction: %+v", st)
	}
}

// serveHash accepts one connection and one stream, and answers the SHA-256
// of everything read from it.
func serveHash(ctx context.Context, ln *quic.Listener) error {
	conn, err := ln.Accept(ctx)
	if err != nil {
		return err
	}
	str, err := conn.AcceptStream(ctx)
	if err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, str); err != nil {
		return fmt.Errorf("server read: %w", err)
	}
	if _, err := str.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("server write: %w", err)
	}
	str.Close()
	select { // let the client read the hash before the connection goes
	case <-conn.Context().Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tlsConfigs makes a self-signed certificate for 127.0.0.1 and the configs
// that serve and trust it.
func tlsConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	const alpn = "geofs-relay-test"
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{alpn},
	}
	client = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{alpn}}
	return server, client
}

// newRelay starts a relay on 127.0.0.1 with a fixed seed, closed when the
// test ends.
func newRelay(t *testing.T, target string) *Relay {
	t.Helper()
	r, err := NewWithSeed("127.0.0.1:0", target, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// listenUDP opens a UDP socket on 127.0.0.1, closed when the test ends.
func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { c.Close() })
	return c
}

// dial opens a client socket connected to addr.
func dial(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { c.Close() })
	return c
}

func mustWrite(t *testing.T, c *net.UDPConn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}

// roundTrip sends msg and returns the first reply.
func roundTrip(t *testing.T, c *net.UDPConn, msg string, timeout time.Duration) string {
	t.Helper()
	mustWrite(t, c, msg)
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply to %q: %v", msg, err)
	}
	return string(buf[:n])
}

// sendPaced sends n packets numbered 0..n-1, pausing after every batch so
// that no socket buffer overflows.
func sendPaced(t *testing.T, c *net.UDPConn, n, batch int) {
	t.Helper()
	pkt := make([]byte, 100)
	for i := range n {
		binary.BigEndian.PutUint32(pkt, uint32(i))
		if _, err := c.Write(pkt); err != nil {
			t.Fatal(err)
		}
		if i%batch == batch-1 {
			time.Sleep(time.Millisecond)
		}
	}
}

// settle waits until count(r.Stats()) stops changing, and returns the stats.
func settle(t *testing.T, r *Relay, count func(Stats) int64) Stats {
	t.Helper()
	st := r.Stats()
	for still := time.Now(); time.Since(still) < 300*time.Millisecond; {
		time.Sleep(20 * time.Millisecond)
		if now := r.Stats(); count(now) != count(st) {
			st, still = now, time.Now()
		}
	}
	return st
}

// echo is a UDP server that answers every datagram with itself.
type echo struct {
	conn *net.UDPConn
	mu   sync.Mutex
	from map[netip.AddrPort]bool
}

func newEcho(t *testing.T) *echo {
	e := &echo{conn: listenUDP(t), from: make(map[netip.AddrPort]bool)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := e.conn.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			e.mu.Lock()
			e.from[from] = true
			e.mu.Unlock()
			e.conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { e.conn.Close(); <-done })
	return e
}

func (e *echo) addr() string { return e.conn.LocalAddr().String() }

// sources are the peers the echo server has heard from.
func (e *echo) sources() []netip.AddrPort {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []netip.AddrPort
	for a := range e.from {
		out = append(out, a)
	}
	return out
}

// sink is a UDP server that records what arrives.
type sink struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []arrival
}

// arrival is one datagram received by a sink.
type arrival struct {
	seq uint32 // its first four bytes
	n   int
	at  time.Time
}

func newSink(t *testing.T) *sink {
	s := &sink{conn: listenUDP(t)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		for {
			n, err := s.conn.Read(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if n < 4 {
				continue
			}
			a := arrival{seq: binary.BigEndian.Uint32(buf), n: n, at: time.Now()}
			s.mu.Lock()
			s.got = append(s.got, a)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { s.conn.Close(); <-done })
	return s
}

func (s *sink) addr() string { return s.conn.LocalAddr().String() }

// wait returns what has arrived once n datagrams have, or at the timeout.
func (s *sink) wait(n int, timeout time.Duration) []arrival {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		got := slices.Clone(s.got)
		s.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func seqs(as []arrival) []uint32 {
	out := make([]uint32, len(as))
	for i, a := range as {
		out[i] = a.seq
	}
	return out
}
