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
	// What this site lacks (a fog node), or holds damaged, it asks its
	// other peers for, one hop at most.
	visited := append(slices.Clone(req.Visited), fs.Peer, fs.Store.Site())
	fctx := store.ForPeer(fetch.Forwarded(ctx, req.Hops+1, visited))
	if !fs.Store.Holds(sreq) {
		if req.Hops >= fetch.MaxHops {
			return fs.answerMissing(bw, sreq, errors.New("not here, and the request went as far as it may"))
		}
		fs.Stats.add(&fs.Stats.FetchesForwarded, 1)
	}
	if req.Kind == store.FetchChunk {
		return fs.sendChunk(fctx, bw, sreq)
	}
	b, err := fs.Store.Obtain(fctx, sreq)
	if err != nil {
		return fs.answerMissing(bw, sreq, err)
	}
	fs.Stats.add(&fs.Stats.FetchesServed, 1)
	return fs.answer(bw, &data{Hash: req.Hash, Codec: codecRaw, Bytes: b})
}

// sendChunk answers with the chunk's record header, then its blocks, each
// compressed when that pays (judged on the first block).
func (fs *FetchServer) sendChunk(ctx context.Context, bw *bufio.Writer, req store.FetchRequest) error {
	started, try := false, true
	err := fs.Store.SendChunk(ctx, req, func(hdr []byte) error {
		started = true
		fs.Stats.add(&fs.Stats.BytesServed, int64(len(hdr)))
		return WriteFrame(bw, msgChunkH, hdr)
	}, func(i int, b []byte) error {
		codec, out := uint8(codecRaw), b
		if try {
			if codec, out = compress(b); codec == codecRaw && i == 0 {
				try = false
			}
		}
		fs.Stats.add(&fs.Stats.BytesServed, int64(len(out)))
		fs.Stats.add(&fs.Stats.BytesSent, int64(len(out)))
		return writeFrameParts(bw, msgBlock, []byte{codec}, out)
	})
	switch {
	case err == nil:
		fs.Stats.add(&fs.Stats.FetchesServed, 1)
		return bw.Flush()
	case !started:
		return fs.answerMissing(bw, req, err)
	}
	// Damage found mid-chunk: end the answer; the requester asks another
	// peer, and this site's own readers will repair the chunk.
	fs.Log.Warn("a chunk being served turned out damaged", "peer", fs.Peer, "item", req.String(), "err", err)
	return send(bw, msgRefuse, (&refuse{Reason: "the chunk is damaged at this site"}).encode())
}

// answerMissing says this site cannot serve req.
func (fs *FetchServer) answerMissing(bw *bufio.Writer, req store.FetchRequest, why error) error {
	fs.Log.Debug("cannot serve a fetch request", "peer", fs.Peer, "item", req.String(), "err", why)
	return fs.answer(bw, &data{Hash: req.Hash, Codec: codecMissing})
}

func (fs *FetchServer) answer(bw *bufio.Writer, m *data) error {
	fs.Stats.add(&fs.Stats.BytesServed, int64(len(m.Bytes)))
	fs.Stats.add(&fs.Stats.BytesSent, int64(len(m.Bytes)))
	if err := writeFrameParts(bw, msgData, m.head(), m.Bytes); err != nil {
		return err
	}
	return bw.Flush()
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
func fetchFrom(ctx context.Context, c *Conn, req store.FetchRequest, hops uint8, visited []store.SiteID, part store.Partial) ([]byte, error) {
	st, err := c.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() {
		if c, ok := st.(interface{ Cancel() }); ok {
			c.Cancel()
		}
	})
	defer stop()
	b, err := exchangeFetch(st, req, hops, visited, part)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return b, err
}

// exchangeFetch sends the request for req on a fresh stream and reads the
// answer (separate from fetchFrom so tests can run it over pipes).
func exchangeFetch(rw io.ReadWriter, req store.FetchRequest, hops uint8, visited []store.SiteID, part store.Partial) ([]byte, error) {
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
	case msgChunkH:
		if req.Kind != store.FetchChunk {
			return nil, fmt.Errorf("%w: a chunk answering a request for a %s", ErrProtocol, req)
		}
		return receiveChunk(br, req, p, part)
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

// receiveChunk reads the blocks of the chunk whose record header is hdr,
// checking each and passing it to part as it arrives.
func receiveChunk(br *bufio.Reader, req store.FetchRequest, hdr []byte, part store.Partial) ([]byte, error) {
	asm, err := store.NewChunkAssembler(hdr, req.Hash)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", req, fetch.ErrBadAnswer, err)
	}
	if part != nil {
		part.Head(hdr, asm.Blocks(), asm.Size())
	}
	for i := range asm.Blocks() {
		typ, p, err := ReadFrame(br, MaxFrame)
		if err != nil {
			return nil, fmt.Errorf("%s: waiting for block %d: %w", req, i, err)
		}
		switch {
		case typ == msgRefuse:
			r, err := decodeRefuse(p)
			if err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%s: %w: %s", req, ErrRefused, r.Reason)
		case typ != msgBlock || len(p) < 1 || p[0] > codecZstd:
			return nil, fmt.Errorf("%w: %s: message %q instead of block %d", ErrProtocol, req, typ, i)
		}
		b, err := decompress(p[0], p[1:])
		if err != nil {
			return nil, err
		}
		if err := asm.Add(i, b); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", req, fetch.ErrBadAnswer, err)
		}
		if part != nil {
			part.Block(i, b)
		}
	}
	return asm.Bytes()
}

// errPeerLacks means the peer has not got the item either.
var errPeerLacks = errors.New("the peer does not have it")
