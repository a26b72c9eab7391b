package sync

import (
	"fmt"

	"github.com/geofs/geofs/fetch"
	"github.com/geofs/geofs/internal/codec"
	"github.com/geofs/geofs/store"
)

// The push protocol. A site that sends on a link opens one stream and
// pushes its txlog; the peer receives, fetches what it lacks, applies and
// acknowledges:
//
//	sender                               receiver
//	hello ─────────────────────────────▶
//	      ◀───────────────────────────── start (cursor) | refuse (why)
//	batch (records, up to seq N) ──────▶
//	      ◀───────────────────────────── want (versions, nodes, chunks)
//	data, data, ... ───────────────────▶  (one per wanted item, in order)
//	      ◀───────────────────────────── want ... (until nothing is missing)
//	      ◀───────────────────────────── ack N
//	batch ... | heartbeat ─────────────▶
//
// A fetch stream (fetchserve.go) carries one request for one item that a
// site lacks, and its answer:
//
//	requester                            server
//	hello (fetch), fetch ──────────────▶
//	      ◀───────────────────────────── data | refuse (why)      (a manifest node)
//	      ◀───────────────────────────── chunk header, block, block, ... | data (missing) | refuse
//
// A chunk comes block by block after its record header, whose block hashes
// hash to the chunk id: the requester checks each block as it arrives and
// hands it to waiting readers at once.
//
// Every message is one frame (frame.go); the type byte names the message.
// Decoders check every field and reject trailing bytes (fuzzed).

// Message types. The batch is the one message that can be large and
// compressible (names, modes, times), so it alone has a compressed form.
const (
	msgHello  = 'H'
	msgStart  = 'S'
	msgRefuse = 'R'
	msgBatch  = 'B'
	msgBatchZ = 'Z' // a batch compressed with zstd (when that saves an eighth)
	msgWant   = 'W'
	msgData   = 'D'
	msgAck    = 'A'
	msgFetch  = 'F'
	msgChunkH = 'C' // a fetched chunk's record header (block hashes)
	msgBlock  = 'K' // one block of a fetched chunk: codec byte, then its bytes
)

// protoVersion is the version of this protocol; a hello with another is
// refused. 3: txlog entries may carry op copy (14), which a site of
// version 2 takes for corruption.
const protoVersion = 3

// Limits a decoder enforces (a frame is at most MaxFrame bytes anyway).
const (
	maxBatchRecords = 4096
	maxWant         = 1024
	maxReason       = 1024
)

// Stream kinds, named by the hello that opens a stream.
const (
	streamPush  = 1
	streamFetch = 2
)

// hello opens a stream.
type hello struct {
	Version uint8
	Kind    uint8
}

func (m *hello) encode() []byte { return []byte{m.Version, m.Kind} }

func decodeHello(b []byte) (*hello, error) {
	d := codec.Decoder{B: b}
	m := &hello{Version: d.Byte(), Kind: d.Byte()}
	if d.Err == nil && m.Version == protoVersion && m.Kind != streamPush && m.Kind != streamFetch {
		d.Err = fmt.Errorf("%w: stream kind %d", codec.ErrMalformed, m.Kind)
	}
	return m, finish(&d, "hello")
}

// start tells the sender where to begin: after the entry From-1, which
// carried version Prev (zero From: from the sender's present end, for a
// continuous-only link; From 1: from the start). Until, when not zero, ends
// the push after that entry (an initial-only link). End is the receiver's
// own log end: if the sender has applied more of the receiver's log than
// that, the receiver was restored from a backup and gets everything again,
// its own old changes included. Buckets are the receiver's namespace
// buckets: the sender skips, in the part of its log written before the
// push began, the files of every bucket equal on both sides (they hold the
// same versions there), so a catch-up sends only what differs.
//
// Mode is the receiver's metadata-only setting for the link: the sender
// shows it, and does not count the receiver's acknowledgements as copies
// of the data.
type start struct {
	From    uint64
	Prev    store.Hash
	Until   uint64
	End     uint64       // the receiver's own last txlog entry
	Buckets []store.Hash // the receiver's namespace buckets (256, or none)
	Mode    uint8        // modeFull, modeMetaAll or modeMetaVersions
}

// Metadata-only modes on the wire.
const (
	modeFull         = 0
	modeMetaAll      = 1
	modeMetaVersions = 2
)

func modeOf(metadataOnly string) uint8 {
	switch metadataOnly {
	case store.MetadataOnlyAll:
		return modeMetaAll
	case store.MetadataOnlyVersions:
		return modeMetaVersions
	}
	return modeFull
}

func modeName(m uint8) string {
	switch m {
	case modeMetaAll:
		return store.MetadataOnlyAll
	case modeMetaVersions:
		return store.MetadataOnlyVersions
	}
	return ""
}

func (m *start) encode() []byte {
	e := codec.Encoder{}
	e.Byte(m.Mode)
	e.Uvarint(m.From)
	e.Fixed(m.Prev[:])
	e.Uvarint(m.Until)
	e.Uvarint(m.End)
	e.Uvarint(uint64(len(m.Buckets)))
	for _, h := range m.Buckets {
		e.Fixed(h[:])
	}
	return e.B
}

func decodeStart(b []byte) (*start, error) {
	d := codec.Decoder{B: b}
	m := &start{Mode: d.Byte()}
	if m.Mode > modeMetaVersions {
		d.Err = fmt.Errorf("%w: metadata-only mode %d", codec.ErrMalformed, m.Mode)
	}
	m.From = d.Uvarint()
	d.Fixed(m.Prev[:])
	m.Until = d.Uvarint()
	m.End = d.Uvarint()
	if n := d.Count(256, 32); n > 0 {
		if n != 256 {
			d.Err = fmt.Errorf("%w: %d namespace buckets", codec.ErrMalformed, n)
		}
		m.Buckets = make([]store.Hash, n)
		for i := range m.Buckets {
			d.Fixed(m.Buckets[i][:])
		}
	}
	return m, finish(&d, "start")
}

// refuse ends a push stream the receiver does not accept.
type refuse struct{ Reason string }

func (m *refuse) encode() []byte {
	e := codec.Encoder{}
	e.String(m.Reason)
	return e.B
}

func decodeRefuse(b []byte) (*refuse, error) {
	d := codec.Decoder{B: b}
	m := &refuse{Reason: d.String(maxReason)}
	return m, finish(&d, "refuse")
}

// batch carries the records of the sender's txlog entries up to Seq (whose
// version is Last; entries the link does not carry are skipped, so a batch
// may be empty), and the time the sender read its log.
type batch struct {
	Seq     uint64
	Last    store.Hash
	End     uint64 // the sender's last entry when it read the batch
	Time    int64  // Unix nanoseconds at the sender
	Records []store.Incoming
}

func (m *batch) encode() []byte {
	e := codec.Encoder{}
	e.Uvarint(m.Seq)
	e.Fixed(m.Last[:])
	e.Uvarint(m.End)
	e.Varint(m.Time)
	e.Uvarint(uint64(len(m.Records)))
	for _, r := range m.Records {
		e.Byte(byte(r.Op))
		e.Bytes(r.Rec)
	}
	return e.B
}

func decodeBatch(b []byte) (*batch, error) {
	d := codec.Decoder{B: b}
	m := &batch{Seq: d.Uvarint()}
	d.Fixed(m.Last[:])
	m.End = d.Uvarint()
	m.Time = d.Varint()
	m.Records = make([]store.Incoming, d.Count(maxBatchRecords, 2))
	for i := range m.Records {
		m.Records[i].Op = store.Op(d.Byte())
		m.Records[i].Rec = d.Bytes(MaxFrame)
	}
	return m, finish(&d, "batch")
}

// What a want asks for.
const (
	wantVersion = 1
	wantNode    = 2
	wantChunk   = 3
)

// want asks for items by hash; the sender answers with one data message
// per item, in order. For chunks, Bases names for each a chunk the
// receiver has that is likely similar (the chunk at the same offset of the
// file's previous content; zero for none): the sender may send the chunk
// as a zstd delta against it.
type want struct {
	Kind   uint8
	Hashes []store.Hash
	Bases  []store.Hash // chunks only, as many as Hashes
}

func (m *want) encode() []byte {
	e := codec.Encoder{}
	e.Byte(m.Kind)
	e.Uvarint(uint64(len(m.Hashes)))
	for i, h := range m.Hashes {
		e.Fixed(h[:])
		if m.Kind == wantChunk {
			e.Fixed(m.Bases[i][:])
		}
	}
	return e.B
}

func decodeWant(b []byte) (*want, error) {
	d := codec.Decoder{B: b}
	m := &want{Kind: d.Byte()}
	if m.Kind < wantVersion || m.Kind > wantChunk {
		d.Err = fmt.Errorf("%w: want kind %d", codec.ErrMalformed, m.Kind)
	}
	size := 32
	if m.Kind == wantChunk {
		size = 64
	}
	m.Hashes = make([]store.Hash, d.Count(maxWant, size))
	if m.Kind == wantChunk {
		m.Bases = make([]store.Hash, len(m.Hashes))
	}
	for i := range m.Hashes {
		d.Fixed(m.Hashes[i][:])
		if m.Kind == wantChunk {
			d.Fixed(m.Bases[i][:])
		}
	}
	return m, finish(&d, "want")
}

// Data codecs.
const (
	codecRaw     = 0
	codecZstd    = 1
	codecMissing = 2 // the sender does not have the item
	codecDelta   = 3 // zstd with the wanted base chunk as its dictionary
)

// data answers one wanted item.
type data struct {
	Hash  store.Hash
	Codec uint8
	Bytes []byte
}

func (m *data) encode() []byte { return append(m.head(), m.Bytes...) }

// head is the encoding up to the bytes (see push.go: the bytes are
// written after it without a copy).
func (m *data) head() []byte {
	b := make([]byte, 0, 33)
	return append(append(b, m.Hash[:]...), m.Codec)
}

func decodeData(b []byte) (*data, error) {
	if len(b) < 33 {
		return nil, fmt.Errorf("%w: data message of %d bytes", ErrProtocol, len(b))
	}
	m := &data{Codec: b[32], Bytes: b[33:]}
	copy(m.Hash[:], b)
	if m.Codec > codecDelta || m.Codec == codecMissing && len(m.Bytes) > 0 {
		return nil, fmt.Errorf("%w: data codec %d", ErrProtocol, m.Codec)
	}
	return m, nil
}

// fetch asks for one item a site lacks: a chunk or a manifest node of the
// content of file version Version of file File (the server checks that
// against the paths its link serves). Hops counts the sites the request
// went through; Visited are those sites (a site forwards a request it
// cannot serve only to peers not in it, and only while Hops < maxHops).
type fetchReq struct {
	Kind    uint8
	Hash    store.Hash
	File    store.FileID
	Version store.Hash
	Hops    uint8
	Visited []store.SiteID
}

// maxHops is how far a fetch travels: the site asked, and one more.
const maxHops = fetch.MaxHops

func (m *fetchReq) encode() []byte {
	e := codec.Encoder{}
	e.Byte(m.Kind)
	e.Fixed(m.Hash[:])
	e.Fixed(m.File[:])
	e.Fixed(m.Version[:])
	e.Byte(m.Hops)
	e.Uvarint(uint64(len(m.Visited)))
	for _, s := range m.Visited {
		e.Fixed(s[:])
	}
	return e.B
}

func decodeFetch(b []byte) (*fetchReq, error) {
	d := codec.Decoder{B: b}
	m := &fetchReq{Kind: d.Byte()}
	if m.Kind != store.FetchChunk && m.Kind != store.FetchNode {
		d.Err = fmt.Errorf("%w: fetch kind %d", codec.ErrMalformed, m.Kind)
	}
	d.Fixed(m.Hash[:])
	d.Fixed(m.File[:])
	d.Fixed(m.Version[:])
	m.Hops = d.Byte()
	if d.Err == nil && m.Hops > maxHops {
		d.Err = fmt.Errorf("%w: fetch after %d hops", codec.ErrMalformed, m.Hops)
	}
	m.Visited = make([]store.SiteID, d.Count(maxHops+1, len(store.SiteID{})))
	for i := range m.Visited {
		d.Fixed(m.Visited[i][:])
	}
	return m, finish(&d, "fetch")
}

// ack says the receiver applied everything up to Seq.
type ack struct{ Seq uint64 }

func (m *ack) encode() []byte {
	e := codec.Encoder{}
	e.Uvarint(m.Seq)
	return e.B
}

func decodeAck(b []byte) (*ack, error) {
	d := codec.Decoder{B: b}
	m := &ack{Seq: d.Uvarint()}
	return m, finish(&d, "ack")
}

func finish(d *codec.Decoder, what string) error {
	if err := d.Finish(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrProtocol, what, err)
	}
	return nil
}

// encodeBatch returns b as a frame type and payload: compressed when that
// saves at least an eighth.
func encodeBatch(b *batch) (byte, []byte) {
	p := b.encode()
	if len(p) >= 1024 {
		if c := zenc.EncodeAll(p, nil); len(c) <= len(p)*7/8 {
			return msgBatchZ, c
		}
	}
	return msgBatch, p
}

// decodeBatchFrame decodes a batch frame of either form.
func decodeBatchFrame(typ byte, p []byte) (*batch, error) {
	if typ == msgBatchZ {
		var err error
		if p, err = decompress(codecZstd, p); err != nil {
			return nil, err
		}
	}
	return decodeBatch(p)
}
