package sync

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/geofs/geofs/store"
)

func newIdentity(t *testing.T) *Identity {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func listen(t *testing.T, id *Identity, allowed ...store.SiteID) *Listener {
	t.Helper()
	l, err := Listen("127.0.0.1:0", id, func(peer store.SiteID) error {
		for _, a := range allowed {
			if a == peer {
				return nil
			}
		}
		return errors.New("no link names this site")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestLinkBothSidesProveTheirKeys connects two sites over real QUIC on
// loopback; each learns the other's site id and a stream carries data both
// ways.
func TestLinkBothSidesProveTheirKeys(t *testing.T) {
	a, b := newIdentity(t), newIdentity(t)
	l := listen(t, b, a.Site)
	accepted := make(chan *Conn, 1)
	go func() {
		c, err := l.Accept(ctx(t))
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	ca, err := Dial(ctx(t), l.Addr().String(), a, b.Site)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close("done")
	s, err := ca.OpenStream(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("hello from a")); err != nil {
		t.Fatal(err)
	}
	cb := <-accepted
	if cb == nil {
		t.FailNow()
	}
	defer cb.Close("done")
	if cb.Peer != a.Site || ca.Peer != b.Site {
		t.Fatalf("peers: b sees %s (want %s), a sees %s (want %s)", cb.Peer, a.Site, ca.Peer, b.Site)
	}
	sb, err := cb.AcceptStream(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 12)
	if _, err := io.ReadFull(sb, buf); err != nil || string(buf) != "hello from a" {
		t.Fatalf("b read %q, %v", buf, err)
	}
	sb.Write([]byte("hi"))
	if _, err := io.ReadFull(s, buf[:2]); err != nil || string(buf[:2]) != "hi" {
		t.Fatalf("a read %q, %v", buf[:2], err)
	}
}

// TestDialerRefusesAnotherSite: the listener holds a valid key, but not
// the one the link names.
func TestDialerRefusesAnotherSite(t *testing.T) {
	a, b, c := newIdentity(t), newIdentity(t), newIdentity(t)
	l := listen(t, b, a.Site)
	go l.Accept(ctx(t))
	_, err := Dial(ctx(t), l.Addr().String(), a, c.Site)
	if err == nil || !strings.Contains(err.Error(), b.Site.String()) {
		t.Fatalf("dialing a site that proves another key: err = %v, want a refusal naming %s", err, b.Site)
	}
}

// TestListenerRefusesUnknownSite: a valid key that no link names gets no
// connection, on either side.
func TestListenerRefusesUnknownSite(t *testing.T) {
	a, b, stranger := newIdentity(t), newIdentity(t), newIdentity(t)
	l := listen(t, b, a.Site)
	got := make(chan *Conn, 1)
	go func() {
		c, _ := l.Accept(ctx(t))
		got <- c
	}()
	conn, err := Dial(ctx(t), l.Addr().String(), stranger, b.Site)
	if err == nil {
		// QUIC lets the client finish its half of the handshake before the
		// server checks the client's key; the server must then close it.
		mustDie(t, conn.Done())
	}
	select {
	case c := <-got:
		if c != nil {
			t.Fatalf("listener accepted unknown site %s", c.Peer)
		}
	case <-time.After(500 * time.Millisecond):
	}
}

// TestNoCertificateNoLink: a client that presents no certificate at all.
func TestNoCertificateNoLink(t *testing.T) {
	a, b := newIdentity(t), newIdentity(t)
	l := listen(t, b, a.Site)
	go l.Accept(ctx(t))
	conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	q, err := quic.DialAddr(ctx(t), l.Addr().String(), conf, nil)
	if err == nil {
		mustDie(t, q.Context().Done())
	}
}

// mustDie fails unless a connection the server should refuse is closed.
func mustDie(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("the refused connection is still open")
	}
}

func TestProvenSiteRejectsForeignCertificates(t *testing.T) {
	if _, err := provenSite(nil); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("no certificate: %v", err)
	}
	if _, err := provenSite([][]byte{[]byte("not a certificate")}); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("garbage: %v", err)
	}
	a := newIdentity(t)
	got, err := provenSite(a.cert.Certificate)
	if err != nil || got != a.Site {
		t.Fatalf("own certificate: %v %v", got, err)
	}
}

// A new connection replaces the link's current one when the same end
// dialed both (that end lost the old one: a restart after SIGKILL leaves it
// open here until its idle timeout); when each end dialed one, both ends
// keep the one dialed by the smaller site id.
func TestWhichConnectionALinkKeeps(t *testing.T) {
	small, big := store.SiteID{1}, store.SiteID{2}
	for _, c := range []struct {
		me, peer      store.SiteID
		byMe, curByMe bool
		want          bool
	}{
		{small, big, false, false, true}, // the peer dialed again
		{small, big, true, true, true},   // this site dialed again
		{small, big, true, false, true},  // both dialed: keep the smaller's (mine)
		{small, big, false, true, false},
		{big, small, true, false, false}, // both dialed: keep the smaller's (the peer's)
		{big, small, false, true, true},
	} {
		if got := replaces(c.me, c.peer, c.byMe, c.curByMe); got != c.want {
			t.Errorf("me %x, peer %x, new dialed by me %v, current by me %v: replaces %v, want %v",
				c.me[:1], c.peer[:1], c.byMe, c.curByMe, got, c.want)
		}
	}
}
