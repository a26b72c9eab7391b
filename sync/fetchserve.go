package sync

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/geofs/geofs/fetch"
	"github.com/geofs/geofs/store"
)

// Fetch streams: a site that lacks a chunk (a fog node, or a site whose
// copy is damaged) opens a stream on a link, asks for the item, and reads
// one answer (see msg.go). A stream per request lets requests run side by
// side and be cancelled alone.

// FetchServer answers a peer's fetch requests on one link.
type FetchServer struct {
	Store *store.Store
	Peer  store.SiteID
	Link  store.PeerLink // as this site configured it
	Stats *Stats
	Log   *slog.Logger
}

// serve answers the fetch request on a stream whose hello was h.
func (fs *FetchServer) serve(ctx context.Context, br *bufio.Reader, bw *bufio.Writer, h *hello) error {
	typ, p, err := ReadFrame(br, MaxFrame)
	if err != nil {
		return fmt.Errorf("waiting for a fetch request: %w", err)
	}
	if typ != msgFetch {
		return fmt.Errorf("%w: message %q instead of a fetch request", ErrProtocol, typ)
	}
	req, err := decodeFetch(p)
	if err != nil {
		return err
	}
	if reason := fs.refusal(h, req); reason != "" {
		fs.Stats.add(&fs.Stats.FetchesRefused, 1)
		fs.Log.Warn("refused a fetch request", "peer", fs.Peer, "link", fs.Link.Name, "item", req.Hash.Short(), "why", reason)
		return send(bw, msgRefuse, (&refuse{Reason: reason}).encode())
	}
	sreq := store.FetchRequest{Kind: req.Kind, Hash: req.Hash, Origin: store.Origin{File: req.File, Version: req.Version}}
	m := &data{Hash: req.Hash, Codec: codecMissing}
	b, err := fs.local(sreq)
	if err != nil && req.Hops < maxHops {
		// Not here (a fog node): ask this site's other peers, one hop.
		visited := append(slices.Clone(req.Visited), fs.Peer, fs.Store.Site())
		b, err = fs.Store.Obtain(fetch.Forwarded(ctx, req.Hops+1, visited), sreq)
		if err == nil {
			fs.Stats.add(&fs.Stats.FetchesForwarded, 1)
		}
	}
	if err == nil {
		m.Codec, m.Bytes = codecRaw, b
		if req.Kind == store.FetchChunk {
			m.Codec, m.Bytes = compress(b)
		}
		fs.Stats.add(&fs.Stats.FetchesServed, 1)
		fs.Stats.add(&fs.Stats.BytesServed, int64(len(m.Bytes)))
	} else {
		fs.Log.Debug("cannot serve a fetch request", "peer", fs.Peer, "item", sreq.String(), "err", err)
	}
	fs.Stats.add(&fs.Stats.BytesSent, int64(len(m.Bytes)))
	if err := writeFrameParts(bw, msgData, m.head(), m.Bytes); err != nil {
		return err
	}
	return bw.Flush()
}

// local reads the item here, without fetching it.
func (fs *FetchServer) local(req store.FetchRequest) ([]byte, error) {
	if req.Kind == store.FetchNode {
		return fs.Store.ReadNode(req.Hash)
	}
	return fs.Store.ReadChunk(req.Hash)
}

// refusal says why this site does not answer req, or "". A link serves
// fetches in the direction it sends, for the paths it serves: when those
// are not the whole tree, the request must name a file version in them
// whose content holds the item.
func (fs *FetchServer) refusal(h *hello, req *fetchReq) string {
	switch {
	case h.Version != protoVersion:
		return fmt.Sprintf("protocol version %d, this site speaks %d", h.Version, protoVersion)
	case !fs.Link.Sends():
		return fmt.Sprintf("link %q is receive-only at this site", fs.Link.Name)
	case slices.Contains(req.Visited, fs.Store.Site()):
		return "the request came through this site already"
	}
	sc := newScope(fs.Link.Paths, fs.Store)
	if sc.allSent() {
		return ""
	}
	rec, err := fs.Store.VersionRecord(req.Version)
	if err != nil {
		return "the request names a file version this site does not have"
	}
	v, err := store.DecodeVersion(rec)
	if err != nil || v.ID != req.File {
		return "the request names a file version of another file"
	}
	if !sc.sends(v) {
		return "the file is outside the paths this link serves"
	}
	x, err := fs.Store.ContentOf(v)
	if err != nil {
		return "this site cannot read the file's manifest"
	}
	if !contains(fs.Store, x, req) {
		return "the item is not part of the file version named"
	}
	return ""
}

// contains reports whether content x holds the item req asks for.
func contains(s *store.Store, x *store.Extents, req *fetchReq) bool {
	if req.Kind == store.FetchChunk {
		return slices.ContainsFunc(x.Refs, func(r store.Ref) bool { return r.Hash == req.Hash })
	}
	found := false
	store.WalkManifest(x.Root, s.ReadNode, func(h store.Hash) { found = found || h == req.Hash })
	return found
}

// fetchFrom asks the peer on c for one item and returns its bytes, checked
// against the hash.
func fetchFrom(ctx context.Context, c *Conn, req store.FetchRequest, hops uint8, visited []store.SiteID) ([]byte, error) {
	st, err := c.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	b, err := exchangeFetch(st, req, hops, visited)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return b, err
}

// exchangeFetch sends the request for req on a fresh stream and reads the
// answer (separate from fetchFrom so tests can run it over pipes).
func exchangeFetch(rw io.ReadWriter, req store.FetchRequest, hops uint8, visited []store.SiteID) ([]byte, error) {
	br, bw := bufio.NewReader(rw), bufio.NewWriter(rw)
	m := &fetchReq{Kind: req.Kind, Hash: req.Hash, File: req.Origin.File, Version: req.Origin.Version, Hops: hops, Visited: visited}
	if err := WriteFrame(bw, msgHello, (&hello{Version: protoVersion, Kind: streamFetch}).encode()); err != nil {
		return nil, err
	}
	if err := send(bw, msgFetch, m.encode()); err != nil {
		return nil, err
	}
	typ, p, err := ReadFrame(br, MaxFrame)
	if err != nil {
		return nil, fmt.Errorf("waiting for the answer: %w", err)
	}
	switch typ {
	case msgRefuse:
		r, err := decodeRefuse(p)
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s", ErrRefused, r.Reason)
	case msgData:
	default:
		return nil, fmt.Errorf("%w: message %q instead of data", ErrProtocol, typ)
	}
	d, err := decodeData(p)
	if err != nil {
		return nil, err
	}
	if d.Hash != req.Hash {
		return nil, fmt.Errorf("%w: data for %s, asked for %s", ErrProtocol, d.Hash.Short(), req.Hash.Short())
	}
	switch d.Codec {
	case codecMissing:
		return nil, fmt.Errorf("%s: %w", req, errPeerLacks)
	case codecDelta:
		return nil, fmt.Errorf("%w: a delta answering a fetch", ErrProtocol)
	}
	b, err := decompress(d.Codec, d.Bytes)
	if err != nil {
		return nil, err
	}
	if !fetch.Verify(req, b) {
		return nil, fmt.Errorf("%s: %w", req, fetch.ErrBadAnswer)
	}
	return b, nil
}

// errPeerLacks means the peer has not got the item either.
var errPeerLacks = errors.New("the peer does not have it")
