package sync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/geofs/geofs/store"
)

// This is the one file that uses quic-go: the rest of the package sees
// authenticated connections and plain streams (io.ReadWriteCloser), so the
// protocol can be tested over in-memory pipes too.

// A link pings every second and gives up after 5 s of silence, so a dead
// peer or a partition is noticed quickly and the link redials.
//
// Flow-control windows are sized for a WAN link: a stream may have 32 MiB
// in flight (1 Gbit/s at 250 ms round trip), the connection 64 MiB.
var quicConfig = &quic.Config{
	HandshakeIdleTimeout:           10 * time.Second,
	MaxIdleTimeout:                 5 * time.Second,
	KeepAlivePeriod:                time.Second,
	MaxStreamReceiveWindow:         32 << 20,
	MaxConnectionReceiveWindow:     64 << 20,
	InitialStreamReceiveWindow:     4 << 20,
	InitialConnectionReceiveWindow: 8 << 20,
}

// Conn is a link connection to an authenticated peer site.
type Conn struct {
	q    *quic.Conn
	Peer store.SiteID
}

// OpenStream opens a new stream to the peer.
func (c *Conn) OpenStream(ctx context.Context) (io.ReadWriteCloser, error) {
	s, err := c.q.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream to %s: %w", c.Peer, err)
	}
	return stream{s}, nil
}

// AcceptStream waits for the peer to open a stream.
func (c *Conn) AcceptStream(ctx context.Context) (io.ReadWriteCloser, error) {
	s, err := c.q.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("accept stream from %s: %w", c.Peer, err)
	}
	return stream{s}, nil
}

// stream is a QUIC stream whose Close ends both directions. quic-go's
// Close ends only the sending half, and a stream counts against the peer's
// limit of open streams (100) until its receiving half is read to the end
// or cancelled too: without this, a link could carry 100 fetches and then
// no more.
type stream struct{ *quic.Stream }

func (s stream) Close() error {
	s.CancelRead(0)
	return s.Stream.Close()
}

// CloseWrite ends the sending direction only (the peer reads EOF), so an
// answer can still be read.
func (s stream) CloseWrite() error { return s.Stream.Close() }

// Cancel abandons the stream in both directions. Unlike Close, it may be
// called while another goroutine reads or writes.
func (s stream) Cancel() {
	s.CancelRead(0)
	s.CancelWrite(0)
}

// Close ends the connection, telling the peer why.
func (c *Conn) Close(reason string) error {
	return c.q.CloseWithError(0, reason)
}

// Done is closed when the connection ends.
func (c *Conn) Done() <-chan struct{} { return c.q.Context().Done() }

// Dial connects to the site at addr, which must prove the key of peer.
func Dial(ctx context.Context, addr string, id *Identity, peer store.SiteID) (*Conn, error) {
	conf := id.tlsConfig(func(got store.SiteID) error {
		if got != peer {
			return fmt.Errorf("%w: %s answered as site %s, not %s", ErrUntrusted, addr, got, peer)
		}
		return nil
	})
	q, err := quic.DialAddr(ctx, addr, conf, quicConfig)
	if err != nil {
		return nil, fmt.Errorf("link to %s: %w", addr, err)
	}
	return &Conn{q: q, Peer: peer}, nil
}

// Listener accepts links from other sites.
type Listener struct {
	q  *quic.Listener
	tr *quic.Transport
}

// Listen accepts links on addr (HOST:PORT) from sites that accept allows.
func Listen(addr string, id *Identity, accept func(peer store.SiteID) error) (*Listener, error) {
	conf := id.tlsConfig(func(peer store.SiteID) error {
		if err := accept(peer); err != nil {
			return fmt.Errorf("%w: site %s: %w", ErrUntrusted, peer, err)
		}
		return nil
	})
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	// The reset key is derived from the site key, so after a restart the
	// site tells peers at once that their old connections are gone.
	key := quic.StatelessResetKey(id.resetKey)
	tr := &quic.Transport{Conn: udp, StatelessResetKey: &key}
	q, err := tr.Listen(conf, quicConfig)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return &Listener{q: q, tr: tr}, nil
}

// Accept waits for the next authenticated connection. Handshakes that fail
// (an unknown or lying peer) never come out of Accept.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	q, err := l.q.Accept(ctx)
	if err != nil {
		return nil, fmt.Errorf("accept link: %w", err)
	}
	var raw [][]byte
	for _, c := range q.ConnectionState().TLS.PeerCertificates {
		raw = append(raw, c.Raw)
	}
	peer, err := provenSite(raw) // checked in the handshake already
	if err != nil {
		q.CloseWithError(1, "untrusted")
		return nil, err
	}
	return &Conn{q: q, Peer: peer}, nil
}

// Addr is the address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.q.Addr() }

// Close stops accepting links.
func (l *Listener) Close() error { return errors.Join(l.q.Close(), l.tr.Close()) }
