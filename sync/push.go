package sync

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/geofs/geofs/store"
)

// Batch limits: a batch ends at whichever comes first. The receiver
// applies a batch in one transaction when it can, and writes each record
// there at least twice (the version and its directory entries, with log
// and index entries, and for a concurrent one a merge record and a
// conflict copy), so a batch stays well inside one transaction's bound
// (store.Apply splits one that is not).
const (
	batchRecords = 2048
	batchBytes   = 1 << 20
)

// heartbeat is how often an idle sender sends an empty batch, so the
// receiver's view (and the link's lag) stays current.
const heartbeat = time.Second

// Sender pushes this site's txlog to one peer over one stream.
type Sender struct {
	Store *store.Store
	Peer  store.SiteID
	Link  store.PeerLink // its direction and paths, as this site configured them
	Stats *Stats
	Log   *slog.Logger

	echo bool // send entries that came from the peer too (a restored peer)

	// same marks the namespace buckets equal at both ends when the push
	// began; sameUntil is this site's log position then.
	same      [256]bool
	sameUntil uint64
}

// skipEqualBuckets compares the receiver's namespace buckets with this
// site's: the files of equal buckets need nothing from the log as it is.
func (s *Sender) skipEqualBuckets(st *start) {
	if len(st.Buckets) != 256 {
		return
	}
	mine, seq := s.Store.Summary()
	equal := 0
	for i := range mine {
		if s.same[i] = mine[i] == st.Buckets[i]; s.same[i] {
			equal++
		}
	}
	s.sameUntil = seq
	s.Log.Debug("namespace summaries compared", "peer", s.Peer, "equal_buckets", equal, "through", seq)
}

// Run pushes until ctx ends or the stream fails.
func (s *Sender) Run(ctx context.Context, rw io.ReadWriter) error {
	br, bw := bufio.NewReader(rw), bufio.NewWriter(rw)
	if err := send(bw, msgHello, (&hello{Version: protoVersion, Kind: streamPush}).encode()); err != nil {
		return err
	}
	typ, b, err := ReadFrame(br, MaxFrame)
	if err != nil {
		return fmt.Errorf("waiting for start: %w", err)
	}
	switch typ {
	case msgRefuse:
		m, err := decodeRefuse(b)
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: %s", ErrRefused, m.Reason)
	case msgStart:
	default:
		return fmt.Errorf("%w: message %q before start", ErrProtocol, typ)
	}
	st, err := decodeStart(b)
	if err == nil && s.Stats != nil {
		s.Stats.peerMode.Store(uint32(st.Mode))
	}
	if err != nil {
		return err
	}
	next := s.startAt(st)
	if st.Until == math.MaxUint64 {
		st.Until = max(s.Store.LastSeq(), 1) // initial only: what the log holds now
	}
	if mine := s.Store.Cursor(s.Peer); mine.Seq > st.End {
		s.Log.Warn("the peer's log is shorter than what this site applied from it (restored from a backup?): sending everything, its own old changes included",
			"peer", s.Peer, "peer_log_end", st.End, "applied_here", mine.Seq)
		next, s.echo = 1, true
	}
	s.skipEqualBuckets(st)
	cur := batch{Seq: next - 1, Last: s.entryAt(next - 1)} // the receiver's position
	scope := newScope(s.Link.Paths, s.Store)
	for {
		news := s.Store.Committed()
		b, err := s.readBatch(next, st.Until, scope)
		if err != nil {
			return err
		}
		if b.Seq == 0 {
			// Nothing new: wait for a commit, or send a heartbeat.
			if st.Until != 0 && next > st.Until {
				s.Log.Info("initial replication done", "peer", s.Peer, "through", st.Until)
				<-ctx.Done()
				return ctx.Err()
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-news:
				// Coalesce: let a burst of commits land in one batch.
				if w := s.Link.CoalesceWindow(); w > 0 {
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(w):
					}
				}
				continue
			case <-time.After(heartbeat):
				b.Seq, b.Last, b.End = cur.Seq, cur.Last, max(b.End, cur.Seq)
			}
		}
		if err := s.push(br, bw, b); err != nil {
			return err
		}
		cur = *b
		next = b.Seq + 1
	}
}

// ErrRefused means the peer refused the push (its link does not receive
// from this site, or names other paths).
var ErrRefused = errors.New("refused by peer")

// startAt checks the receiver's cursor against this log and returns the
// first entry to send.
func (s *Sender) startAt(st *start) uint64 {
	last := s.Store.LastSeq()
	switch {
	case st.From == 0:
		return last + 1 // continuous only: from now on
	case st.From == 1:
		return 1
	case st.From-1 > last:
		s.Log.Warn("peer has applied more of this site's log than it holds (restored from a backup?): sending everything again", "peer", s.Peer, "peer_cursor", st.From-1, "last", last)
		return 1
	}
	var ok bool
	s.Store.Log(st.From-1, func(e *store.Entry) (bool, error) {
		ok = e.Seq == st.From-1 && e.Version == st.Prev
		return false, nil
	})
	if !ok {
		s.Log.Warn("peer's cursor does not match this site's log (restored from a backup?): sending everything again", "peer", s.Peer, "peer_cursor", st.From-1)
		return 1
	}
	return st.From
}

// entryAt returns the version of entry seq (zero for 0).
func (s *Sender) entryAt(seq uint64) store.Hash {
	var h store.Hash
	if seq == 0 {
		return h
	}
	s.Store.Log(seq, func(e *store.Entry) (bool, error) {
		h = e.Version
		return false, nil
	})
	return h
}

// readBatch reads entries from next on (to until, if not zero) and returns
// the records the link carries. Seq is zero when there was no entry.
func (s *Sender) readBatch(next, until uint64, scope *scope) (*batch, error) {
	b := &batch{Time: time.Now().UnixNano(), End: s.Store.LastSeq()}
	if until != 0 {
		b.End = min(b.End, until)
	}
	size := 0
	err := s.Store.Log(next, func(e *store.Entry) (bool, error) {
		if until != 0 && e.Seq > until {
			return false, nil
		}
		if len(b.Records) >= batchRecords || size >= batchBytes {
			return false, nil
		}
		b.Seq, b.Last = e.Seq, e.Version
		if e.From == s.Peer && !s.echo {
			return true, nil // it came from the peer: no echo
		}
		if e.Seq <= s.sameUntil && s.same[e.File[0]] {
			s.Stats.add(&s.Stats.RecordsSkippedEqual, 1)
			return true, nil // the peer holds this file's versions already
		}
		rec, err := s.Store.VersionRecord(e.Version)
		if err != nil {
			return false, err
		}
		if !scope.allSent() {
			v, err := store.DecodeVersion(rec)
			if err != nil {
				return false, err
			}
			if !scope.sends(v) {
				s.Stats.add(&s.Stats.RecordsOutOfScope, 1)
				return true, nil
			}
		}
		b.Records = append(b.Records, store.Incoming{Op: e.Op, Rec: rec})
		size += len(rec)
		return true, nil
	})
	return b, err
}

// push sends one batch and serves the receiver's wants until it
// acknowledges.
func (s *Sender) push(br *bufio.Reader, bw *bufio.Writer, b *batch) error {
	typ, payload := encodeBatch(b)
	s.Stats.add(&s.Stats.BytesSent, int64(len(payload)))
	if err := send(bw, typ, payload); err != nil {
		return err
	}
	s.Stats.add(&s.Stats.RecordsSent, int64(len(b.Records)))
	for {
		typ, p, err := ReadFrame(br, MaxFrame)
		if err != nil {
			return fmt.Errorf("waiting for the peer: %w", err)
		}
		switch typ {
		case msgAck:
			a, err := decodeAck(p)
			if err != nil {
				return err
			}
			if a.Seq != b.Seq {
				return fmt.Errorf("%w: ack of %d for batch %d", ErrProtocol, a.Seq, b.Seq)
			}
			return s.Store.SetAcked(s.Peer, a.Seq)
		case msgWant:
			w, err := decodeWant(p)
			if err != nil {
				return err
			}
			if err := s.serve(bw, w); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: message %q while pushing", ErrProtocol, typ)
		}
	}
}

// serve answers a want, one data message per item. Items are read (and
// chunks compressed) a few ahead by a second goroutine, so reading the
// store overlaps sending.
func (s *Sender) serve(bw *bufio.Writer, w *want) error {
	ready := make(chan *data, 4)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(ready)
		for i, h := range w.Hashes {
			select {
			case ready <- s.prepare(w, i, h):
			case <-stop:
				return
			}
		}
	}()
	for m := range ready {
		s.Stats.add(&s.Stats.BytesSent, int64(len(m.Bytes)))
		if err := writeFrameParts(bw, msgData, m.head(), m.Bytes); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// prepare reads the i-th item w wants (hash h) as a data message.
func (s *Sender) prepare(w *want, i int, h store.Hash) *data {
	m := &data{Hash: h, Codec: codecRaw}
	var err error
	switch w.Kind {
	case wantVersion:
		m.Bytes, err = s.Store.VersionRecord(h)
	case wantNode:
		// Obtain reads the item here or, on a site that does not hold it (a
		// fog node relaying to a full site), fetches it from its peers.
		m.Bytes, err = s.Store.Obtain(context.Background(), store.FetchRequest{Kind: store.FetchNode, Hash: h})
	case wantChunk:
		m.Bytes, err = s.Store.Obtain(context.Background(), store.FetchRequest{Kind: store.FetchChunk, Hash: h})
	}
	if err != nil {
		s.Log.Warn("peer wants what this site cannot read", "peer", s.Peer, "hash", h.Short(), "err", err)
		m.Bytes, m.Codec = nil, codecMissing
	}
	if w.Kind == wantChunk && m.Codec == codecRaw {
		s.Stats.add(&s.Stats.ChunksSent, 1)
		raw := m.Bytes
		m.Codec, m.Bytes = compress(raw)
		if !w.Bases[i].IsZero() {
			if d, ok := s.delta(raw, w.Bases[i]); ok && len(d) < len(m.Bytes) {
				m.Codec, m.Bytes = codecDelta, d
			}
		}
	}
	return m
}

// delta encodes chunk b against base, if this site has base.
func (s *Sender) delta(b []byte, base store.Hash) ([]byte, bool) {
	if !s.Store.HasChunk(base) {
		return nil, false
	}
	bb, err := s.Store.ReadChunk(base)
	if err != nil || !similar(b, bb) {
		return nil, false
	}
	d, err := compressDelta(b, bb)
	return d, err == nil
}

func send(bw *bufio.Writer, typ byte, payload []byte) error {
	if err := WriteFrame(bw, typ, payload); err != nil {
		return err
	}
	return bw.Flush()
}
