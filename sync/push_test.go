package sync

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	gosync "sync"
	"testing"
	"time"

	"github.com/geofs/geofs/store"
)

// These tests run the push protocol between two real stores over an
// in-memory pipe.

func newSite(t testing.TB) *store.Store {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "site")
	if _, err := store.Init(dir, store.InitOptions{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// manifestOf stores data at s and returns its manifest root.
func manifestOf(t testing.TB, s *store.Store, data []byte) store.Hash {
	t.Helper()
	x, err := s.Rewrite(&store.Extents{}, []store.Patch{{Off: 0, Data: data}}, uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	root, err := s.PutManifest(x.Refs)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// put creates or overwrites the file name in dir with data.
func put(t testing.TB, s *store.Store, dir store.FileID, name string, data []byte) store.FileID {
	t.Helper()
	root := manifestOf(t, s, data)
	var id store.FileID
	err := s.Update(store.OpWrite, func(tx *store.Tx) error {
		v := &store.Version{ID: store.NewFileID(), Kind: store.KindFile, Links: []store.Link{{Parent: dir, Name: name}}, Mode: 0o644}
		if cur, _, err := tx.Lookup(dir, name); err == nil {
			old, err := tx.Head(cur)
			if err != nil {
				return err
			}
			v = old.Clone()
		}
		v.Content, v.Size, v.Alloc, id = root, uint64(len(data)), uint64(len(data)), v.ID
		_, err := tx.Put(v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mkdirIn(t testing.TB, s *store.Store, dir store.FileID, name string) store.FileID {
	t.Helper()
	id := store.NewFileID()
	err := s.Update(store.OpMkdir, func(tx *store.Tx) error {
		_, err := tx.Create(&store.Version{ID: id, Kind: store.KindDir, Links: []store.Link{{Parent: dir, Name: name}}, Mode: 0o755})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// headOf returns the current version of path at s.
func headOf(t testing.TB, s *store.Store, path string) *store.Version {
	t.Helper()
	id, err := s.Resolve(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Head(id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func content(t testing.TB, s *store.Store, path string) []byte {
	t.Helper()
	b, err := s.ReadAll(headOf(t, s, path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// session runs a sender at from and a receiver at to over a pipe until the
// returned stop is called; errs gets each side's result.
type session struct {
	stop  func()
	errs  chan error
	stats *Stats
}

func push(t testing.TB, from, to *store.Store, sendLink, recvLink store.PeerLink) *session {
	t.Helper()
	for _, l := range []*store.PeerLink{&sendLink, &recvLink} {
		l.Name = "test"
		l.Normalize()
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, b := net.Pipe()
	ss := &session{errs: make(chan error, 2), stats: &Stats{}}
	log := slog.New(slog.DiscardHandler)
	snd := &Sender{Store: from, Peer: to.Site(), Link: sendLink, Stats: ss.stats, Log: log}
	rcv := &Receiver{Store: to, Peer: from.Site(), Link: recvLink, Stats: &Stats{}, Log: log}
	var wg gosync.WaitGroup
	wg.Go(func() { ss.errs <- snd.Run(ctx, a); a.Close() })
	wg.Go(func() { ss.errs <- rcv.Run(ctx, b); b.Close() })
	ss.stop = func() {
		cancel()
		a.Close()
		b.Close()
		wg.Wait()
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			ss.stop()
		}
	})
	return ss
}

// waitSame waits until to's namespace root equals from's.
func waitSame(t testing.TB, from, to *store.Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for from.NamespaceRoot() != to.NamespaceRoot() {
		if time.Now().After(deadline) {
			t.Fatal("the receiver did not catch up in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestPushCopiesAndDedups(t *testing.T) {
	a, b := newSite(t), newSite(t)
	d := mkdirIn(t, a, store.RootID, "d")
	data := randomData(1, 6<<20)
	put(t, a, d, "f", data)
	ss := push(t, a, b, store.PeerLink{}, store.PeerLink{})
	waitSame(t, a, b)
	if !bytes.Equal(content(t, b, "/d/f"), data) {
		t.Fatal("b's copy differs")
	}
	sent := ss.stats.ChunksSent.Load()
	// A copy under a new name moves no data.
	put(t, a, d, "copy", data)
	waitSame(t, a, b)
	if n := ss.stats.ChunksSent.Load(); n != sent {
		t.Fatalf("a copy sent %d chunks", n-sent)
	}
	// One byte changed in the middle sends about one chunk.
	bytesBefore := ss.stats.BytesSent.Load()
	data[3<<20] ^= 1
	put(t, a, d, "f", data)
	waitSame(t, a, b)
	if !bytes.Equal(content(t, b, "/d/f"), data) {
		t.Fatal("b's copy differs after the change")
	}
	if n := ss.stats.BytesSent.Load() - bytesBefore; n > 32<<10 {
		t.Fatalf("a 1-byte change sent %d bytes", n)
	}
}

func TestPushResumesFromTheCursor(t *testing.T) {
	a, b := newSite(t), newSite(t)
	put(t, a, store.RootID, "one", []byte("1"))
	ss := push(t, a, b, store.PeerLink{}, store.PeerLink{})
	waitSame(t, a, b)
	ss.stop()
	put(t, a, store.RootID, "two", []byte("2"))
	ss = push(t, a, b, store.PeerLink{}, store.PeerLink{})
	waitSame(t, a, b)
	if n := ss.stats.RecordsSent.Load(); n != 1 {
		t.Fatalf("the second session sent %d records, want 1", n)
	}
	if c := b.Cursor(a.Site()); c.Seq != a.LastSeq() {
		t.Fatalf("cursor %d, a's log ends at %d", c.Seq, a.LastSeq())
	}
}

func TestPushBothWaysConverges(t *testing.T) {
	a, b := newSite(t), newSite(t)
	put(t, a, store.RootID, "f", []byte("v1"))
	push(t, a, b, store.PeerLink{}, store.PeerLink{})
	push(t, b, a, store.PeerLink{}, store.PeerLink{})
	waitSame(t, a, b)
	put(t, a, store.RootID, "f", []byte("from a"))
	put(t, b, store.RootID, "f", []byte("from b"))
	time.Sleep(200 * time.Millisecond)
	waitSame(t, a, b)
	ents, err := a.ReadDir(store.RootID)
	if err != nil || len(ents) != 2 {
		t.Fatalf("want the file and a conflict copy: %v %v", ents, err)
	}
}

func TestReceiveOnlyRefusesPush(t *testing.T) {
	a, b := newSite(t), newSite(t)
	put(t, a, store.RootID, "f", []byte("x"))
	ss := push(t, a, b, store.PeerLink{}, store.PeerLink{Direction: store.DirectionSend})
	if err := <-ss.errs; !errors.Is(err, ErrRefused) && !errors.Is(err, io.ErrClosedPipe) && err == nil {
		t.Fatalf("push to a send-only link: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if b.LastSeq() != 0 {
		t.Fatal("the send-only side applied records")
	}
}

func TestPathsAreEnforcedOnBothEnds(t *testing.T) {
	a, b := newSite(t), newSite(t)
	pub := mkdirIn(t, a, store.RootID, "pub")
	put(t, a, pub, "in", []byte("in"))
	put(t, a, store.RootID, "secret", []byte("out"))
	ss := push(t, a, b, store.PeerLink{Paths: []string{"/pub"}}, store.PeerLink{Paths: []string{"/pub"}})
	deadline := time.Now().Add(5 * time.Second)
	for b.Cursor(a.Site()).Seq != a.LastSeq() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := b.Resolve("/pub/in"); err != nil {
		t.Fatalf("the served path did not arrive: %v", err)
	}
	if _, err := b.Resolve("/secret"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a file outside the served path arrived: %v", err)
	}
	if ss.stats.RecordsOutOfScope.Load() != 1 {
		t.Fatalf("sender skipped %d records, want 1", ss.stats.RecordsOutOfScope.Load())
	}
	// A sender that ignores the paths: the receiver still refuses.
	c := newSite(t)
	put(t, c, store.RootID, "secret", []byte("out"))
	push(t, c, b, store.PeerLink{}, store.PeerLink{Paths: []string{"/pub"}})
	time.Sleep(300 * time.Millisecond)
	if _, err := b.Resolve("/secret"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the receiver took a file outside its paths: %v", err)
	}
}

func TestMalformedBatchAppliesNothing(t *testing.T) {
	a, b := newSite(t), newSite(t)
	_ = a
	c1, c2 := net.Pipe()
	defer c1.Close()
	done := make(chan error, 1)
	rcv := &Receiver{Store: b, Peer: a.Site(), Link: store.PeerLink{Name: "x"}, Stats: &Stats{}, Log: slog.New(slog.DiscardHandler)}
	rcv.Link.Normalize()
	go func() { done <- rcv.Run(context.Background(), c2) }()
	bw := bufioWriter(c1)
	send(bw, msgHello, (&hello{Version: protoVersion, Kind: streamPush}).encode())
	go io.Copy(io.Discard, c1)
	send(bw, msgBatch, []byte{1, 2, 3})
	if err := <-done; !errors.Is(err, ErrProtocol) {
		t.Fatalf("garbage batch: %v", err)
	}
	if b.LastSeq() != 0 {
		t.Fatal("something was applied")
	}
}

func FuzzDecodeMessages(f *testing.F) {
	f.Add(byte(msgBatch), (&batch{Seq: 3, Records: []store.Incoming{{Op: store.OpCreate, Rec: []byte("x")}}}).encode())
	f.Add(byte(msgWant), (&want{Kind: wantChunk, Hashes: []store.Hash{{1}}, Bases: []store.Hash{{2}}}).encode())
	f.Add(byte(msgWant), (&want{Kind: wantNode, Hashes: []store.Hash{{1}}}).encode())
	f.Add(byte(msgStart), (&start{From: 5}).encode())
	f.Add(byte(msgData), (&data{Hash: store.Hash{2}, Bytes: []byte("abc")}).encode())
	f.Add(byte(msgAck), (&ack{Seq: 9}).encode())
	f.Add(byte(msgRefuse), (&refuse{Reason: "no"}).encode())
	f.Add(byte(msgFetch), (&fetchReq{Kind: store.FetchChunk, Hash: store.Hash{3}, Hops: 1, Visited: []store.SiteID{{4}}}).encode())
	f.Add(byte(msgStart), (&start{From: 5, Mode: modeMetaAll}).encode())
	f.Add(byte(msgHello), (&hello{Version: protoVersion, Kind: streamFetch}).encode())
	big := &batch{Seq: 1}
	for range 64 {
		big.Records = append(big.Records, store.Incoming{Op: store.OpCreate, Rec: bytes.Repeat([]byte("name"), 20)})
	}
	if typ, p := encodeBatch(big); typ == msgBatchZ {
		f.Add(byte(msgBatchZ), p)
	}
	f.Fuzz(func(t *testing.T, typ byte, b []byte) {
		var enc []byte
		switch typ {
		case msgBatch:
			if m, err := decodeBatch(b); err == nil {
				enc = m.encode()
			}
		case msgWant:
			if m, err := decodeWant(b); err == nil {
				enc = m.encode()
			}
		case msgStart:
			if m, err := decodeStart(b); err == nil {
				enc = m.encode()
			}
		case msgData:
			if m, err := decodeData(b); err == nil {
				enc = m.encode()
			}
		case msgAck:
			if m, err := decodeAck(b); err == nil {
				enc = m.encode()
			}
		case msgRefuse:
			if m, err := decodeRefuse(b); err == nil {
				enc = m.encode()
			}
		case msgHello:
			if m, err := decodeHello(b); err == nil {
				enc = m.encode()
			}
		case msgFetch:
			if m, err := decodeFetch(b); err == nil {
				enc = m.encode()
			}
		case msgBatchZ:
			decodeBatchFrame(typ, b) // must not panic or allocate without bound
			return
		default:
			return
		}
		if enc != nil && !bytes.Equal(enc, b) {
			t.Fatalf("message %q: decode/encode not canonical", typ)
		}
	})
}

func bufioWriter(w io.Writer) *bufio.Writer { return bufio.NewWriter(w) }

// A site restored from a backup taken before it made a change gets that
// change back from the peer it had pushed it to.
func TestRestoredPeerGetsItsOwnChangesBack(t *testing.T) {
	a := newSite(t)
	dir := filepath.Join(t.TempDir(), "b")
	if _, err := store.Init(dir, store.InitOptions{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "backup")
	if err := exec.Command("cp", "-a", dir, backup).Run(); err != nil {
		t.Fatal(err)
	}
	b, err := store.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	put(t, b, store.RootID, "made-at-b", []byte("keep me"))
	ss := push(t, b, a, store.PeerLink{}, store.PeerLink{})
	waitSame(t, b, a)
	ss.stop()
	b.Close()
	restored, err := store.Open(backup, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	push(t, a, restored, store.PeerLink{}, store.PeerLink{})
	waitSame(t, a, restored)
	if got := content(t, restored, "/made-at-b"); string(got) != "keep me" {
		t.Fatalf("restored site reads %q", got)
	}
}

// An initial-only link copies what the sender has when the link starts,
// and nothing later, even across reconnections.
func TestInitialOnly(t *testing.T) {
	a, b := newSite(t), newSite(t)
	put(t, a, store.RootID, "before", []byte("1"))
	initial := store.PeerLink{Replication: store.ReplicationInitial}
	ss := push(t, a, b, store.PeerLink{}, initial)
	waitSame(t, a, b)
	put(t, a, store.RootID, "after", []byte("2"))
	time.Sleep(300 * time.Millisecond)
	ss.stop()
	push(t, a, b, store.PeerLink{}, initial)
	time.Sleep(300 * time.Millisecond)
	if _, err := b.Resolve("/after"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an initial-only link copied a later change: %v", err)
	}
	if _, err := b.Resolve("/before"); err != nil {
		t.Fatal(err)
	}
}

// A continuous-only link sends what changes from when it starts, not the
// history.
func TestContinuousOnly(t *testing.T) {
	a, b := newSite(t), newSite(t)
	put(t, a, store.RootID, "before", []byte("1"))
	push(t, a, b, store.PeerLink{}, store.PeerLink{Replication: store.ReplicationContinuous})
	time.Sleep(200 * time.Millisecond)
	put(t, a, store.RootID, "after", []byte("2"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := b.Resolve("/after"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the later change did not arrive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := b.Resolve("/before"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a continuous-only link copied the history: %v", err)
	}
}

// corruptFirstChunk passes frames from r through, flipping a byte in the
// first chunk-sized data message: a peer (or a path) that damages a chunk.
type corruptFirstChunk struct {
	net.Conn
	br   *bufio.Reader
	done bool
	buf  []byte
}

func (c *corruptFirstChunk) Read(p []byte) (int, error) {
	if len(c.buf) == 0 {
		typ, payload, err := ReadFrame(c.br, MaxFrame)
		if err != nil {
			return 0, err
		}
		if typ == msgData && len(payload) > 64<<10 && !c.done {
			payload[len(payload)/2] ^= 0xff
			c.done = true
		}
		var b bytes.Buffer
		WriteFrame(&b, typ, payload)
		c.buf = b.Bytes()
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func TestDamagedChunkIsFetchedAgain(t *testing.T) {
	a, b := newSite(t), newSite(t)
	data := randomData(7, 3<<20)
	put(t, a, store.RootID, "f", data)
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	var links [2]store.PeerLink
	for i := range links {
		links[i].Name = "x"
		links[i].Normalize()
	}
	rstats := &Stats{}
	go (&Sender{Store: a, Peer: b.Site(), Link: links[0], Stats: &Stats{}, Log: log}).Run(ctx, c1)
	go (&Receiver{Store: b, Peer: a.Site(), Link: links[1], Stats: rstats, Log: log}).Run(ctx, &corruptFirstChunk{Conn: c2, br: bufio.NewReader(c2)})
	waitSame(t, a, b)
	if !bytes.Equal(content(t, b, "/f"), data) {
		t.Fatal("b's copy differs")
	}
	if n := rstats.ChunksRejected.Load(); n != 1 {
		t.Fatalf("%d chunks rejected, want 1", n)
	}
}

// A new link between two sites that already hold the same tree (through a
// third) sends no records: the namespace summaries match.
func TestEqualSummariesSendNothing(t *testing.T) {
	a, b, c := newSite(t), newSite(t), newSite(t)
	d := mkdirIn(t, a, store.RootID, "d")
	for i := range 50 {
		put(t, a, d, fmt.Sprint("f", i), []byte{byte(i)})
	}
	ss := push(t, a, c, store.PeerLink{}, store.PeerLink{})
	waitSame(t, a, c)
	ss.stop()
	ss = push(t, c, b, store.PeerLink{}, store.PeerLink{})
	waitSame(t, c, b)
	ss.stop()
	// One more file at a, in a bucket of its own: only it should travel.
	put(t, a, d, "late", []byte("x"))
	ss = push(t, a, b, store.PeerLink{}, store.PeerLink{})
	waitSame(t, a, b)
	if n := ss.stats.RecordsSent.Load(); n >= 10 { // 52 without the summaries
		t.Fatalf("a new link between equal sites sent %d records (skipped %d)", n, ss.stats.RecordsSkippedEqual.Load())
	}
	if ss.stats.RecordsSkippedEqual.Load() == 0 {
		t.Fatal("nothing was skipped by the summaries")
	}
}
