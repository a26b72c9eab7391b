package sync

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/geofs/geofs/store"
)

// Receiver applies what one peer pushes over one stream.
type Receiver struct {
	Store *store.Store
	Peer  store.SiteID
	Link  store.PeerLink // as this site configured it
	Stats *Stats
	Log   *slog.Logger
	// OnChange, when set, is told about every head an applied batch moved
	// (the mount invalidates the kernel's caches with it).
	OnChange func([]store.Change)
}

// Run receives until ctx ends or the stream fails.
func (r *Receiver) Run(ctx context.Context, rw io.ReadWriter) error {
	br, bw := bufio.NewReader(rw), bufio.NewWriter(rw)
	h, err := readHello(br)
	if err != nil {
		return err
	}
	return r.run(ctx, br, bw, h)
}

// readHello reads the message that opens a stream.
func readHello(br *bufio.Reader) (*hello, error) {
	typ, p, err := ReadFrame(br, MaxFrame)
	if err != nil {
		return nil, fmt.Errorf("waiting for hello: %w", err)
	}
	if typ != msgHello {
		return nil, fmt.Errorf("%w: stream starts with %q", ErrProtocol, typ)
	}
	return decodeHello(p)
}

// run receives on a stream whose hello was h.
func (r *Receiver) run(ctx context.Context, br *bufio.Reader, bw *bufio.Writer, h *hello) error {
	if reason := r.refusal(h); reason != "" {
		send(bw, msgRefuse, (&refuse{Reason: reason}).encode())
		return fmt.Errorf("refused the peer's push: %s", reason)
	}
	cur := r.Store.Cursor(r.Peer)
	buckets, end := r.Store.Summary()
	st := &start{From: cur.Seq + 1, Prev: cur.Version, End: end, Buckets: buckets[:], Mode: modeOf(r.Link.MetadataOnly)}
	if cur.Seq == 0 && !r.Link.Initial() {
		st.From = 0 // continuous only: what changes from now on
	}
	if !r.Link.Continuous() {
		st.Until = math.MaxUint64
	}
	if err := send(bw, msgStart, st.encode()); err != nil {
		return err
	}
	for {
		typ, p, err := ReadFrame(br, MaxFrame)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("waiting for a batch: %w", err)
		}
		if typ != msgBatch && typ != msgBatchZ {
			return fmt.Errorf("%w: message %q instead of a batch", ErrProtocol, typ)
		}
		b, err := decodeBatchFrame(typ, p)
		if err != nil {
			return err
		}
		r.Stats.add(&r.Stats.BytesReceived, int64(len(p)))
		if err := r.receive(br, bw, b, cur); err != nil {
			return err
		}
		cur = store.PeerCursor{Seq: b.Seq, Version: b.Last}
		if err := send(bw, msgAck, (&ack{Seq: b.Seq}).encode()); err != nil {
			return err
		}
		r.Stats.applied(b.Seq, b.End, b.Time)
		if !r.Link.Continuous() && b.Seq >= b.End {
			if err := r.Store.SetMeta(initialDoneKey(r.Peer), []byte{1}); err != nil {
				return err
			}
		}
	}
}

// refusal says why this site does not take the push, or "".
func (r *Receiver) refusal(h *hello) string {
	switch {
	case h.Version != protoVersion:
		return fmt.Sprintf("protocol version %d, this site speaks %d", h.Version, protoVersion)
	case h.Kind != streamPush:
		return fmt.Sprintf("stream kind %d is not a push", h.Kind)
	case !r.Link.Receives():
		return fmt.Sprintf("link %q is send-only at this site", r.Link.Name)
	case !r.Link.Continuous() && len(r.Store.Meta(initialDoneKey(r.Peer))) > 0:
		return fmt.Sprintf("link %q is initial-only and its initial replication is done", r.Link.Name)
	}
	return ""
}

// mode is the link's metadata-only setting here.
func (r *Receiver) mode() uint8 { return modeOf(r.Link.MetadataOnly) }

func initialDoneKey(peer store.SiteID) string { return "initial-done/" + peer.String() }

// receive fetches what batch b needs, applies it and its cursor.
func (r *Receiver) receive(br *bufio.Reader, bw *bufio.Writer, b *batch, cur store.PeerCursor) error {
	f := &fetcher{r: r, br: br, bw: bw, got: map[store.Hash]fetched{}}
	scope := newScope(r.Link.Paths, r.Store)
	var recs []store.Incoming
	for _, in := range b.Records {
		v, err := store.DecodeVersion(in.Rec)
		if err != nil {
			return fmt.Errorf("%w: record: %w", ErrProtocol, err)
		}
		if r.Store.HasVersion(store.Sum(in.Rec)) {
			continue
		}
		if !scope.accepts(v) {
			r.Stats.add(&r.Stats.RecordsOutOfScope, 1)
			r.Log.Warn("ignored a record outside the paths this link serves", "peer", r.Peer, "link", r.Link.Name, "path", scope.describe(v))
			continue
		}
		recs = append(recs, in)
		f.add(in, v)
	}
	if err := f.run(); err != nil {
		return err
	}
	recs = f.order(recs)
	if len(recs) == 0 && b.Seq == cur.Seq {
		return nil // a heartbeat
	}
	start := time.Now()
	apply := r.Store.Apply
	if r.mode() == modeMetaVersions {
		apply = r.Store.ApplyWithoutContent
	}
	res, err := apply(r.Peer, store.PeerCursor{Seq: b.Seq, Version: b.Last}, recs)
	// A failed apply may still have moved heads (the parts of a split
	// batch before the one that failed, or a batch applied but not
	// flushed): the mount must hear of them now, since a resend finds
	// those records known and reports no change.
	if r.OnChange != nil && len(res.Changes) > 0 {
		r.OnChange(res.Changes)
	}
	if err != nil {
		return fmt.Errorf("apply batch up to %d: %w", b.Seq, err)
	}
	r.Stats.add(&r.Stats.RecordsApplied, int64(res.Applied))
	if res.Applied > 0 {
		r.Log.Debug("applied", "peer", r.Peer, "records", res.Applied, "known", res.Known, "took", time.Since(start))
	}
	return nil
}

// fetcher asks the sender for what a batch's records lack: ancestor
// versions this site never saw, manifest nodes and chunks. It stores chunks
// as they come, then the nodes (deepest first, so a node here always has
// its subtree here), and orders records so parents come first.
type fetcher struct {
	r      *Receiver
	br     *bufio.Reader
	bw     *bufio.Writer
	got    map[store.Hash]fetched // records to apply, by hash
	vers   []store.Hash           // versions to fetch
	roots  []store.Hash           // manifest roots to fetch
	seen   map[store.Hash]bool    // items already asked for
	nodes  [][]byte               // fetched nodes, parents before children
	chunks []store.Hash
	prior  map[store.Hash]store.Hash // a new content root -> the file's content here before it
}

// fetched is a record with its decoded form.
type fetched struct {
	in store.Incoming
	v  *store.Version
}

// add notes what record in (decoded as v) needs.
func (f *fetcher) add(in store.Incoming, v *store.Version) {
	if f.seen == nil {
		f.seen = map[store.Hash]bool{}
	}
	f.got[store.Sum(in.Rec)] = fetched{in, v}
	for _, p := range append([]store.Hash{v.Prev}, v.Merged...) {
		if !p.IsZero() && !f.seen[p] && !f.r.Store.HasVersion(p) {
			if _, ok := f.got[p]; !ok {
				f.seen[p] = true
				f.vers = append(f.vers, p)
			}
		}
	}
	if f.r.mode() == modeMetaVersions {
		return // manifests are fetched when a reader needs them
	}
	if v.Kind == store.KindFile && !v.Content.IsZero() && !f.seen[v.Content] && !f.r.Store.HasNode(v.Content) {
		f.seen[v.Content] = true
		f.roots = append(f.roots, v.Content)
		if cur, err := f.r.Store.Head(v.ID); err == nil && !cur.Content.IsZero() {
			if f.prior == nil {
				f.prior = map[store.Hash]store.Hash{}
			}
			f.prior[v.Content] = cur.Content
		}
	}
}

// bases picks, for each missing chunk, the chunk at the same offset of the
// file's content here before (which a small change leaves nearly equal),
// so the sender can send a delta against it.
func (f *fetcher) bases() []store.Hash {
	out := make([]store.Hash, len(f.chunks))
	if len(f.prior) == 0 {
		return out
	}
	fetched := map[store.Hash][]byte{}
	for _, n := range f.nodes {
		fetched[store.Sum(n)] = n
	}
	get := func(h store.Hash) ([]byte, error) {
		if b, ok := fetched[h]; ok {
			return b, nil
		}
		return f.r.Store.ReadNode(h)
	}
	want := map[store.Hash]int{}
	for i, h := range f.chunks {
		want[h] = i
	}
	for root, prior := range f.prior {
		x, err := store.FlattenManifest(root, get)
		if err != nil {
			continue
		}
		old, err := f.r.Store.Extents(prior)
		if err != nil {
			continue
		}
		for i, ref := range x.Refs {
			k, ok := want[ref.Hash]
			if !ok || !out[k].IsZero() {
				continue
			}
			if j := old.Find(x.Offs[i]); j < len(old.Refs) && !old.Refs[j].IsHole() && f.r.Store.HasChunk(old.Refs[j].Hash) {
				out[k] = old.Refs[j].Hash
			}
		}
	}
	return out
}

func (f *fetcher) run() error {
	// Versions first: each may need older ones, and content.
	for len(f.vers) > 0 {
		want := f.vers
		f.vers = nil
		err := f.fetch(wantVersion, want, nil, func(h store.Hash, b []byte) error {
			if store.Sum(b) != h {
				return fmt.Errorf("%w: version %s does not match its hash", ErrProtocol, h.Short())
			}
			v, err := store.DecodeVersion(b)
			if err != nil {
				return fmt.Errorf("%w: version %s: %w", ErrProtocol, h.Short(), err)
			}
			f.add(store.Incoming{Op: opOf(v), Rec: b}, v)
			return nil
		})
		if err != nil {
			return err
		}
	}
	// Manifest nodes, level by level, noting missing chunks.
	for level := f.roots; len(level) > 0; {
		var next []store.Hash
		err := f.fetch(wantNode, level, nil, func(h store.Hash, b []byte) error {
			if store.Sum(b) != h {
				return fmt.Errorf("%w: manifest node %s does not match its hash", ErrProtocol, h.Short())
			}
			refs, leaf, err := store.DecodeNode(b)
			if err != nil {
				return fmt.Errorf("%w: manifest node %s: %w", ErrProtocol, h.Short(), err)
			}
			f.nodes = append(f.nodes, b)
			for _, ref := range refs {
				switch {
				case ref.IsHole() || f.seen[ref.Hash]:
				case !leaf:
					if !f.r.Store.HasNode(ref.Hash) {
						next = append(next, ref.Hash)
					}
				case f.r.mode() != modeFull:
					// Metadata only: readers fetch chunks when they need them.
				case !f.r.Store.HasChunk(ref.Hash):
					f.chunks = append(f.chunks, ref.Hash)
				default:
					f.r.Stats.add(&f.r.Stats.ChunksDeduped, 1)
				}
				f.seen[ref.Hash] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		level = next
	}
	if err := f.fetchChunks(); err != nil {
		return err
	}
	for i, j := 0, len(f.nodes)-1; i < j; i, j = i+1, j-1 {
		f.nodes[i], f.nodes[j] = f.nodes[j], f.nodes[i]
	}
	return f.r.Store.PutNodes(f.nodes)
}

// fetchChunks fetches the missing chunks and stores them, a few megabytes
// at a time, in a second goroutine so that storing (hashing, compressing,
// writing) overlaps the transfer. A chunk is checked against its hash as
// it is stored (a wrong one lands under its own id, referenced by nothing);
// one that does not match is asked for again once.
func (f *fetcher) fetchChunks() error {
	if len(f.chunks) == 0 {
		return nil
	}
	bad, err := f.fetchAndStore(f.chunks, f.bases())
	if err != nil || len(bad) == 0 {
		return err
	}
	if bad, err = f.fetchAndStore(bad, make([]store.Hash, len(bad))); err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: chunk %s does not match its hash twice", ErrProtocol, bad[0].Short())
	}
	return nil
}

// storeBatch is what fetchAndStore hands its storing goroutine.
type storeBatch struct {
	data [][]byte
	ids  []store.Hash
}

func (f *fetcher) fetchAndStore(hashes, bases []store.Hash) (bad []store.Hash, err error) {
	batches := make(chan storeBatch, 8)
	stored := make(chan error, 1)
	go func() {
		var err error
		for b := range batches {
			if err != nil {
				continue // drain
			}
			var refs []store.Ref
			if refs, err = f.r.Store.PutChunks(b.data); err != nil {
				continue
			}
			for i, ref := range refs {
				if ref.Hash != b.ids[i] {
					f.r.Stats.add(&f.r.Stats.ChunksRejected, 1)
					f.r.Log.Warn("a chunk from the peer does not match its hash: asking again", "peer", f.r.Peer, "chunk", b.ids[i].Short())
					bad = append(bad, b.ids[i])
				} else {
					f.r.Stats.add(&f.r.Stats.ChunksReceived, 1)
				}
			}
		}
		stored <- err
	}()
	var cur storeBatch
	size := 0
	ferr := f.fetch(wantChunk, hashes, bases, func(h store.Hash, b []byte) error {
		cur.data, cur.ids = append(cur.data, b), append(cur.ids, h)
		if size += len(b); size >= 4<<20 {
			batches <- cur
			cur, size = storeBatch{}, 0
		}
		return nil
	})
	if len(cur.data) > 0 {
		batches <- cur
	}
	close(batches)
	serr := <-stored
	if ferr != nil {
		return nil, ferr
	}
	return bad, serr
}

// fetch asks for items (chunks with their bases), maxWant at a time, and
// passes each answer to fn, in order.
func (f *fetcher) fetch(kind uint8, hashes, bases []store.Hash, fn func(store.Hash, []byte) error) error {
	for len(hashes) > 0 {
		n := min(maxWant, len(hashes))
		w := &want{Kind: kind, Hashes: hashes[:n]}
		if kind == wantChunk {
			w.Bases = bases[:n]
			bases = bases[n:]
		}
		hashes = hashes[n:]
		if err := send(f.bw, msgWant, w.encode()); err != nil {
			return err
		}
		for i, h := range w.Hashes {
			var base store.Hash
			if kind == wantChunk {
				base = w.Bases[i]
			}
			b, err := f.answer(h, base)
			if err != nil {
				return err
			}
			if err := fn(h, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// answer reads the data message for h (asked for with base).
func (f *fetcher) answer(h, base store.Hash) ([]byte, error) {
	typ, p, err := ReadFrame(f.br, MaxFrame)
	if err != nil {
		return nil, fmt.Errorf("waiting for data: %w", err)
	}
	if typ != msgData {
		return nil, fmt.Errorf("%w: message %q instead of data", ErrProtocol, typ)
	}
	f.r.Stats.add(&f.r.Stats.BytesReceived, int64(len(p)))
	d, err := decodeData(p)
	if err != nil {
		return nil, err
	}
	if d.Hash != h {
		return nil, fmt.Errorf("%w: data for %s, wanted %s", ErrProtocol, d.Hash.Short(), h.Short())
	}
	switch d.Codec {
	case codecMissing:
		return nil, fmt.Errorf("the peer lacks %s it announced", h.Short())
	case codecDelta:
		if base.IsZero() {
			return nil, fmt.Errorf("%w: a delta for %s, asked for without a base", ErrProtocol, h.Short())
		}
		bb, err := f.r.Store.ReadChunk(base)
		if err != nil {
			return nil, err
		}
		return decompressDelta(d.Bytes, bb)
	}
	return decompress(d.Codec, d.Bytes)
}

// order returns recs and the fetched ancestors with every record after the
// records it descends from.
func (f *fetcher) order(recs []store.Incoming) []store.Incoming {
	var out []store.Incoming
	done := map[store.Hash]bool{}
	var visit func(h store.Hash)
	visit = func(h store.Hash) {
		r, ok := f.got[h]
		if !ok || done[h] {
			return
		}
		done[h] = true
		for _, p := range append([]store.Hash{r.v.Prev}, r.v.Merged...) {
			visit(p)
		}
		out = append(out, r.in)
	}
	for _, in := range recs {
		visit(store.Sum(in.Rec))
	}
	return out
}

// opOf names the change a version fetched as an ancestor made (the txlog
// entry that came with it stayed at the peer).
func opOf(v *store.Version) store.Op {
	switch {
	case len(v.Merged) > 0:
		return store.OpMerge
	case v.Deleted:
		return store.OpUnlink
	case !v.Prev.IsZero():
		return store.OpWrite
	case v.Kind == store.KindDir:
		return store.OpMkdir
	case v.Kind == store.KindLink:
		return store.OpSymlink
	}
	return store.OpCreate
}
