// Package sync links sites: the authenticated transport now, and the
// replication protocol that runs over it as it is built (see
// docs/DECISIONS.md). Import it under another name where the standard
// library's sync is also needed.
//
// # Trust
//
// A site is its ed25519 key pair (made by geofs init); its site id is
// derived from the public key. On a link each side presents a self-signed
// certificate for its key and proves possession in the TLS 1.3 handshake;
// the other side derives the site id from that key. A dialer names the peer
// it expects and refuses any other; a listener asks its caller whether the
// proven peer may connect. There is no unauthenticated mode.
package sync

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/geofs/geofs/store"
)

// ErrUntrusted marks a peer refused for the key it proved.
var ErrUntrusted = errors.New("peer not trusted")

// Identity is a site's key pair in the form TLS uses.
type Identity struct {
	Site     store.SiteID
	cert     tls.Certificate
	resetKey [32]byte // for QUIC stateless resets (transport.go)
}

// NewIdentity makes the identity of the site whose private key is key.
func NewIdentity(key ed25519.PrivateKey) (*Identity, error) {
	pub := key.Public().(ed25519.PublicKey)
	site := store.SiteIDOf(pub)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "geofs site " + site.String()},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), // the key is the identity, not the dates
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("site certificate: %w", err)
	}
	id := &Identity{Site: site, cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
	id.resetKey = sha256.Sum256(append([]byte("geofs 2026-11 quic stateless reset v1"), key.Seed()...))
	return id, nil
}

// provenSite returns the site id of the key a peer's certificate carries,
// after checking the certificate is signed by that key. The handshake has
// already shown that the peer holds the private key.
func provenSite(rawCerts [][]byte) (store.SiteID, error) {
	if len(rawCerts) != 1 {
		return store.SiteID{}, fmt.Errorf("%w: want one self-signed site certificate, got %d", ErrUntrusted, len(rawCerts))
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return store.SiteID{}, fmt.Errorf("%w: certificate: %w", ErrUntrusted, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return store.SiteID{}, fmt.Errorf("%w: certificate key is not ed25519", ErrUntrusted)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return store.SiteID{}, fmt.Errorf("%w: certificate not signed by its own key: %w", ErrUntrusted, err)
	}
	return store.SiteIDOf(pub), nil
}

// tlsConfig returns the TLS settings for one side of a link. check is
// called with the peer's proven site id and refuses it with an error.
func (id *Identity) tlsConfig(check func(store.SiteID) error) *tls.Config {
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		peer, err := provenSite(rawCerts)
		if err != nil {
			return err
		}
		return check(peer)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{id.cert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{alpn},
		ClientAuth:   tls.RequireAnyClientCert,
		// Chains are not used: a site is its key, checked in verify.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verify,
	}
}

// alpn names the protocol on the wire; a new wire version gets a new name.
const alpn = "geofs/1"
