// Package relay is a user-space UDP relay that injects WAN faults between
// geofs sites, for tests.
//
// geofs sites replicate over QUIC on 127.0.0.x, and the tests need to see
// how replication copes with a slow, lossy, reordering or partitioned
// network. The usual tool for that, tc netem, is not available: the kernel
// these tests run on is built without it (and changing qdiscs would need
// root anyway). So a test puts a Relay in front of a site instead: the peer
// dials the relay's address, the relay forwards every datagram to the real
// site and the replies back, and on the way it delays, drops, reorders,
// rate-limits or blocks them according to the Conditions currently set.
//
// Each direction is a link with its own Faults and a queue of packets
// stamped with the time they may leave. One goroutine per direction sends
// each packet when its time comes, so a long delay adds latency without
// limiting throughput, as on a real long-haul link.
package relay

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	maxDatagram  = 64 << 10              // largest UDP payload read
	socketBuffer = 4 << 20               // requested kernel buffer per socket
	minQueue     = 64 << 10              // smallest default rate-limit queue, in bytes
	minBurst     = 16 << 10              // smallest token-bucket depth, in bytes
	burstTime    = 10 * time.Millisecond // token-bucket depth as time at the rate
	maxHold      = 10 * time.Millisecond // longest a reordered packet waits for a successor
)

// idleTimeout is how long a client may stay silent, in both directions,
// before its upstream socket is closed. A variable so tests can shorten it;
// a relay reads it once, when it starts.
var idleTimeout = 2 * time.Minute

// Faults are the impairments applied to one direction of the relay. The
// zero value forwards everything at once.
type Faults struct {
	// Delay is the one-way latency added to every packet.
	Delay time.Duration
	// Jitter varies each packet's delay by a uniformly random amount in
	// [-Jitter, +Jitter], never below zero. Packets still leave in the order
	// they came (unless Reorder is set), so a packet may also wait for a
	// slower one ahead of it.
	Jitter time.Duration
	// Loss is the probability (0..1) that a packet is dropped.
	Loss float64
	// Reorder is the probability (0..1) that a packet is held back and sent
	// just after the next one. A held packet whose successor does not come
	// within 10ms is sent on its own.
	Reorder float64
	// Rate limits the direction to this many bytes per second, with a token
	// bucket about 10ms deep (0: unlimited). Packets over the rate wait in a
	// queue of Queue bytes; when the queue is full they are dropped, like a
	// router's tail drop.
	Rate int64
	// Queue is the most bytes that may wait for the rate limit. 0 means twice
	// the bandwidth-delay product (Rate × Delay), but at least 64 KiB.
	Queue int64
	// Down partitions the direction: every packet is dropped, including
	// packets already delayed and not yet sent.
	Down bool
}

// Conditions are the faults of both directions. Up is from the clients to
// the target; Down is from the target back to the clients.
type Conditions struct {
	Up   Faults
	Down Faults
}

// Both returns Conditions that apply f in both directions.
func Both(f Faults) Conditions { return Conditions{Up: f, Down: f} }

// Counters count the packets of one direction.
type Counters struct {
	Packets      int64 // packets forwarded
	Bytes        int64 // payload bytes forwarded
	Dropped      int64 // packets dropped: loss, partition, full queue or failed send
	DroppedBytes int64 // payload bytes dropped
}

// Stats are the counters of both directions since the relay started.
type Stats struct {
	Up   Counters // client to target
	Down Counters // target to client
}

// Relay forwards UDP datagrams between clients and one target, applying
// faults. It is safe for concurrent use.
type Relay struct {
	ln       *net.UDPConn
	target   *net.UDPAddr
	up, down *link
	done     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
	idle     time.Duration // idleTimeout when the relay started

	mu       sync.Mutex
	sessions map[netip.AddrPort]*session // by client address
	closed   bool
}

// session is one client: its own upstream socket makes the target see a
// distinct, stable peer for each client.
type session struct {
	client   netip.AddrPort
	up       *net.UDPConn // connected to the target
	idle     time.Duration
	lastSeen atomic.Int64 // Unix nanoseconds of the last packet either way
}

func (s *session) touch() { s.lastSeen.Store(time.Now().UnixNano()) }

// idleAt is when the session expires unless another packet passes.
func (s *session) idleAt() time.Time { return time.Unix(0, s.lastSeen.Load()).Add(s.idle) }

// New starts a relay listening on UDP address listen (such as
// "127.0.0.5:0") that forwards to target, with random faults seeded at
// random. It forwards without faults until Set is called.
func New(listen, target string) (*Relay, error) {
	return NewWithSeed(listen, target, rand.Uint64())
}

// NewWithSeed is New with the random choices (loss, jitter, reordering)
// seeded by seed, so that the same packets sent in the same order through
// each direction meet the same fate on every run.
func NewWithSeed(listen, target string, seed uint64) (*Relay, error) {
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("relay target %s: %w", target, err)
	}
	laddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("relay listen address %s: %w", listen, err)
	}
	ln, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("relay listen: %w", err)
	}
	growBuffers(ln)
	r := &Relay{
		ln:       ln,
		target:   taddr,
		done:     make(chan struct{}),
		idle:     idleTimeout,
		sessions: make(map[netip.AddrPort]*session),
	}
	r.up = newLink(rand.NewPCG(seed, 1), r.sendUp)
	r.down = newLink(rand.NewPCG(seed, 2), r.sendDown)
	r.wg.Go(func() { r.up.run(r.done) })
	r.wg.Go(func() { r.down.run(r.done) })
	r.wg.Go(r.readClients)
	return r, nil
}

// Addr returns the address the relay listens on, for clients to dial.
func (r *Relay) Addr() string { return r.ln.LocalAddr().String() }

// Set replaces the faults of both directions. It takes effect for packets
// arriving from now on; packets already queued keep their departure times.
func (r *Relay) Set(c Conditions) {
	r.up.set(c.Up)
	r.down.set(c.Down)
}

// Conditions returns the faults currently set.
func (r *Relay) Conditions() Conditions {
	return Conditions{Up: r.up.get(), Down: r.down.get()}
}

// Partition cuts both directions (down true) or heals them (false),
// leaving the other faults as they are.
func (r *Relay) Partition(down bool) {
	r.up.partition(down)
	r.down.partition(down)
}

// Stats returns the packet counters of both directions.
func (r *Relay) Stats() Stats {
	return Stats{Up: r.up.counters(), Down: r.down.counters()}
}

// Close stops the relay: it closes every socket, discards queued packets
// and waits for its goroutines to end. Closing twice is harmless.
func (r *Relay) Close() error {
	var err error
	r.once.Do(func() {
		close(r.done)
		err = r.ln.Close()
		r.mu.Lock()
		r.closed = true
		for _, s := range r.sessions {
			s.up.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return err
}

// readClients reads datagrams from clients and queues them upstream.
func (r *Relay) readClients() {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := r.ln.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		s := r.session(from)
		if s == nil {
			r.up.drop(n)
			continue
		}
		s.touch()
		r.up.push(time.Now(), bytes.Clone(buf[:n]), s)
	}
}

// session returns the session of client, opening one if needed. It returns
// nil once the relay is closed or if no upstream socket can be opened.
func (r *Relay) session(client netip.AddrPort) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.sessions[client]; s != nil || r.closed {
		return s
	}
	up, err := net.DialUDP("udp", nil, r.target)
	if err != nil {
		return nil
	}
	growBuffers(up)
	s := &session{client: client, up: up, idle: r.idle}
	s.touch()
	r.sessions[client] = s
	r.wg.Go(func() { r.readTarget(s) })
	return s
}

// readTarget reads the target's replies to one client and queues them
// downstream, until the relay closes or the client has been idle too long.
func (r *Relay) readTarget(s *session) {
	buf := make([]byte, maxDatagram)
	s.up.SetReadDeadline(s.idleAt())
	for {
		n, err := s.up.Read(buf)
		switch {
		case err == nil:
			s.touch()
			r.down.push(time.Now(), bytes.Clone(buf[:n]), s)
		case errors.Is(err, os.ErrDeadlineExceeded):
			if idle := s.idleAt(); time.Now().Before(idle) {
				s.up.SetReadDeadline(idle)
				continue
			}
			r.forget(s)
			return
		case errors.Is(err, net.ErrClosed):
			return
		}
		// Other errors, such as "connection refused" while nothing listens
		// on the target, are transient: keep reading.
	}
}

// forget closes an idle session. A later packet from the client opens a
// new one.
func (r *Relay) forget(s *session) {
	r.mu.Lock()
	if r.sessions[s.client] == s {
		delete(r.sessions, s.client)
	}
	r.mu.Unlock()
	s.up.Close()
}

func (r *Relay) sendUp(p packet) error {
	_, err := p.s.up.Write(p.data)
	return err
}

func (r *Relay) sendDown(p packet) error {
	_, err := r.ln.WriteToUDPAddrPort(p.data, p.s.client)
	return err
}

// growBuffers asks for large kernel socket buffers, so bursts are not lost
// before the relay reads them. The kernel may grant less; that is fine.
func growBuffers(c *net.UDPConn) {
	c.SetReadBuffer(socketBuffer)
	c.SetWriteBuffer(socketBuffer)
}

// packet is a datagram waiting in a link.
type packet struct {
	at   time.Time // when it may leave
	data []byte
	s    *session
}

// link is one direction: faults, a queue of packets in departure order, and
// the counters.
type link struct {
	send func(packet) error
	wake chan struct{} // a packet arrived at an empty link

	mu        sync.Mutex
	f         Faults
	rng       *rand.Rand
	queue     []packet  // departure times never decrease
	last      time.Time // departure time of the newest queued packet
	held      *packet   // a packet held back to be reordered
	heldUntil time.Time // when to give up waiting for its successor
	free      time.Time // token bucket: when it would be empty (tokens = rate × (now - free))

	packets, bytes, dropped, droppedBytes atomic.Int64
}

func newLink(src rand.Source, send func(packet) error) *link {
	return &link{send: send, wake: make(chan struct{}, 1), rng: rand.New(src)}
}

func (l *link) set(f Faults) {
	l.mu.Lock()
	l.f = f
	l.mu.Unlock()
}

func (l *link) get() Faults {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f
}

func (l *link) partition(down bool) {
	l.mu.Lock()
	l.f.Down = down
	l.mu.Unlock()
}

func (l *link) counters() Counters {
	return Counters{
		Packets:      l.packets.Load(),
		Bytes:        l.bytes.Load(),
		Dropped:      l.dropped.Load(),
		DroppedBytes: l.droppedBytes.Load(),
	}
}

func (l *link) drop(n int) {
	l.dropped.Add(1)
	l.droppedBytes.Add(int64(n))
}

// push offers a packet that arrived at now to the link, which queues it or
// drops it.
func (l *link) push(now time.Time, data []byte, s *session) {
	l.mu.Lock()
	at, ok := l.admit(now, len(data))
	wasIdle := len(l.queue) == 0 // the run loop waits for nothing earlier
	if ok {
		l.schedule(packet{at: at, data: data, s: s})
	}
	l.mu.Unlock()
	if !ok {
		l.drop(len(data))
		return
	}
	if wasIdle {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// admit applies the partition, loss, rate limit, delay and jitter to a
// packet of n bytes arriving at now, and says when it may leave.
func (l *link) admit(now time.Time, n int) (time.Time, bool) {
	if l.f.Down || l.rng.Float64() < l.f.Loss {
		return time.Time{}, false
	}
	at, ok := l.shape(now, n)
	if !ok {
		return time.Time{}, false
	}
	return at.Add(l.latency()), true
}

// shape runs the token bucket: it says when a packet of n bytes arriving at
// now has enough tokens to leave, or false if the queue for tokens is full.
func (l *link) shape(now time.Time, n int) (time.Time, bool) {
	rate := l.f.Rate
	if rate <= 0 {
		return now, true
	}
	if backlog := bytesAt(l.free.Sub(now), rate); backlog+int64(n) > l.queueLimit() {
		return time.Time{}, false
	}
	// The bucket holds at most burst bytes of tokens, so it was never
	// emptier than burst/rate before now.
	if full := now.Add(-durationOf(max(minBurst, bytesAt(burstTime, rate)), rate)); l.free.Before(full) {
		l.free = full
	}
	l.free = l.free.Add(durationOf(int64(n), rate))
	if l.free.After(now) {
		return l.free, true
	}
	return now, true
}

// queueLimit is how many bytes may wait for the rate limit.
func (l *link) queueLimit() int64 {
	if l.f.Queue > 0 {
		return l.f.Queue
	}
	return max(minQueue, 2*bytesAt(l.f.Delay, l.f.Rate))
}

// latency is the delay for one packet, with jitter.
func (l *link) latency() time.Duration {
	d := l.f.Delay
	if j := l.f.Jitter; j > 0 {
		d += time.Duration(l.rng.Int64N(2*int64(j)+1)) - j
	}
	return max(d, 0)
}

// schedule queues an admitted packet behind those already queued, or holds
// it back to send after the next one.
func (l *link) schedule(p packet) {
	p.at = later(p.at, l.last)
	if l.held == nil && l.rng.Float64() < l.f.Reorder {
		l.held, l.heldUntil = &p, p.at.Add(maxHold)
		return
	}
	l.enqueue(p)
	if h := l.held; h != nil {
		l.held = nil
		h.at = later(h.at, p.at)
		l.enqueue(*h)
	}
}

func (l *link) enqueue(p packet) {
	l.queue = append(l.queue, p)
	l.last = p.at
}

// due removes the packets that may leave at now. It says whether the link
// is partitioned, and how long until the next packet is due (-1: none).
func (l *link) due(now time.Time) (out []packet, down bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held != nil && !now.Before(l.heldUntil) {
		h := *l.held // its successor never came
		l.held = nil
		h.at = later(h.at, l.last)
		l.enqueue(h)
	}
	i := 0
	for i < len(l.queue) && !l.queue[i].at.After(now) {
		i++
	}
	out, l.queue = l.queue[:i:i], l.queue[i:]
	wait = -1
	if len(l.queue) > 0 {
		wait = l.queue[0].at.Sub(now)
	}
	if l.held != nil && (wait < 0 || l.heldUntil.Sub(now) < wait) {
		wait = l.heldUntil.Sub(now)
	}
	return out, l.f.Down, wait
}

// run sends packets when they are due, until done is closed.
func (l *link) run(done <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		out, down, wait := l.due(time.Now())
		for _, p := range out {
			l.deliver(p, down)
		}
		var tick <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-done:
			return
		case <-l.wake:
		case <-tick:
		}
	}
}

// deliver sends one packet, or drops it if the link is down.
// It counts the packet before sending it, so that a reply is never counted
// before the packet it answers.
func (l *link) deliver(p packet, down bool) {
	if down {
		l.drop(len(p.data))
		return
	}
	l.packets.Add(1)
	l.bytes.Add(int64(len(p.data)))
	if l.send(p) != nil {
		l.packets.Add(-1)
		l.bytes.Add(-int64(len(p.data)))
		l.drop(len(p.data))
	}
}

// bytesAt is how many bytes pass in d at rate bytes per second.
func bytesAt(d time.Duration, rate int64) int64 {
	if d <= 0 {
		return 0
	}
	return int64(d.Seconds() * float64(rate))
}

// durationOf is how long n bytes take at rate bytes per second.
func durationOf(n, rate int64) time.Duration {
	return time.Duration(float64(n) / float64(rate) * float64(time.Second))
}

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}
