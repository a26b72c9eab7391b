package sync

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/geofs/geofs/fetch"
	"github.com/geofs/geofs/store"
)

// ask runs one fetch exchange over a pipe against a FetchServer for
// server's side of link.
func ask(t *testing.T, server *store.Store, link store.PeerLink, req store.FetchRequest, hops uint8, visited []store.SiteID) ([]byte, *Stats, error) {
	t.Helper()
	link.Name = "test"
	link.Normalize()
	a, b := net.Pipe()
	defer a.Close()
	stats := &Stats{}
	srv := &FetchServer{Store: server, Peer: store.SiteID{9}, Link: link, Stats: stats, Log: slog.New(slog.DiscardHandler)}
	done := make(chan error, 1)
	go func() {
		defer b.Close()
		br, bw := bufio.NewReader(b), bufio.NewWriter(b)
		h, err := readHello(br)
		if err == nil {
			err = srv.serve(context.Background(), br, bw, h)
		}
		done <- err
	}()
	got, err := exchangeFetch(a, req, hops, visited, nil)
	if serr := <-done; serr != nil {
		t.Fatalf("server: %v", serr)
	}
	return got, stats, err
}

// chunkOf returns the first chunk of path at s, and its version's origin.
func chunkOf(t *testing.T, s *store.Store, path string) (store.Hash, store.Origin) {
	t.Helper()
	v := headOf(t, s, path)
	x, err := s.ContentOf(v)
	if err != nil {
		t.Fatal(err)
	}
	return x.Refs[0].Hash, store.Origin{File: v.ID, Version: v.Hash()}
}

func TestFetchServerChecksPathsAndDirection(t *testing.T) {
	a := newSite(t)
	pub, priv := mkdirIn(t, a, store.RootID, "pub"), mkdirIn(t, a, store.RootID, "priv")
	pubData, privData := randomData(1, 100_000), randomData(2, 100_000)
	put(t, a, pub, "f", pubData)
	put(t, a, priv, "g", privData)
	pubChunk, pubOrigin := chunkOf(t, a, "/pub/f")
	privChunk, privOrigin := chunkOf(t, a, "/priv/g")
	onlyPub := store.PeerLink{Paths: []string{"/pub"}}

	got, _, err := ask(t, a, onlyPub, store.FetchRequest{Kind: store.FetchChunk, Hash: pubChunk, Origin: pubOrigin}, 0, nil)
	if err != nil || !bytes.Equal(got, pubData[:len(got)]) {
		t.Fatalf("a chunk in the served path: %v", err)
	}
	for name, req := range map[string]store.FetchRequest{
		"file outside the paths":      {Kind: store.FetchChunk, Hash: privChunk, Origin: privOrigin},
		"chunk not in the named file": {Kind: store.FetchChunk, Hash: privChunk, Origin: pubOrigin},
		"no file named":               {Kind: store.FetchChunk, Hash: privChunk},
		"manifest of a file outside":  {Kind: store.FetchNode, Hash: privOrigin.Version, Origin: privOrigin},
	} {
		_, stats, err := ask(t, a, onlyPub, req, 0, nil)
		if !errors.Is(err, ErrRefused) || stats.FetchesRefused.Load() != 1 {
			t.Errorf("%s: %v (refused %d)", name, err, stats.FetchesRefused.Load())
		}
	}
	// The whole tree: anything the site has.
	if _, _, err := ask(t, a, store.PeerLink{}, store.FetchRequest{Kind: store.FetchChunk, Hash: privChunk}, 0, nil); err != nil {
		t.Fatalf("a link serving the whole tree: %v", err)
	}
	if _, _, err := ask(t, a, store.PeerLink{Direction: store.DirectionReceive}, store.FetchRequest{Kind: store.FetchChunk, Hash: privChunk}, 0, nil); !errors.Is(err, ErrRefused) {
		t.Fatalf("a receive-only link served a fetch: %v", err)
	}
	if _, _, err := ask(t, a, store.PeerLink{}, store.FetchRequest{Kind: store.FetchChunk, Hash: privChunk}, 1, []store.SiteID{a.Site()}); !errors.Is(err, ErrRefused) {
		t.Fatalf("a request that came through this site was served: %v", err)
	}
	if _, _, err := ask(t, a, store.PeerLink{}, store.FetchRequest{Kind: store.FetchChunk, Hash: store.Hash{7}}, maxHops, nil); !errors.Is(err, errPeerLacks) {
		t.Fatalf("a chunk the site lacks: %v", err)
	}
}

// pipePeer is a fetch.Peer that asks server over a pipe, as a link would.
func pipePeer(t *testing.T, server *store.Store) fetch.Peer {
	return fetch.Peer{Name: "pipe", Site: server.Site(), Fetch: func(ctx context.Context, req store.FetchRequest, hops uint8, visited []store.SiteID, part store.Partial) ([]byte, error) {
		b, _, err := ask(t, server, store.PeerLink{}, req, hops, visited)
		return b, err
	}}
}

func TestMetadataOnlyLinksThenReadsFetch(t *testing.T) {
	for _, mode := range []string{store.MetadataOnlyAll, store.MetadataOnlyVersions} {
		t.Run(mode, func(t *testing.T) {
			a, f := newSite(t), newSite(t)
			data := randomData(3, 3<<20)
			put(t, a, store.RootID, "big", data)
			ss := push(t, a, f, store.PeerLink{}, store.PeerLink{MetadataOnly: mode})
			waitSame(t, a, f)
			ss.stop()
			if got := modeName(uint8(ss.stats.peerMode.Load())); got != mode {
				t.Fatalf("the sender learnt mode %q", got)
			}
			hash, origin := chunkOf(t, a, "/big")
			v, _ := f.Version(origin.Version)
			if f.HasChunk(hash) || f.HasNode(v.Content) != (mode == store.MetadataOnlyAll) {
				t.Fatalf("mode %s: chunk here %v, manifest here %v", mode, f.HasChunk(hash), f.HasNode(v.Content))
			}
			if _, err := f.ReadAll(v); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("a read with no peer: %v", err)
			}
			f.SetPartial(true) // as config.yaml's metadata-only link makes it
			f.SetRemote(&fetch.Fetcher{Peers: func(store.FetchRequest) []fetch.Peer { return []fetch.Peer{pipePeer(t, a)} }, Log: slog.New(slog.DiscardHandler)}, 0)
			if got := content(t, f, "/big"); !bytes.Equal(got, data) {
				t.Fatal("fetched content differs")
			}
			if st := f.FetchStats(); st.Fetches == 0 || st.Bytes < uint64(len(data)) {
				t.Fatalf("fetch stats %+v", st)
			}
			if cs := f.CacheStats(); cs.Chunks == 0 || cs.Size < int64(len(data))/2 {
				t.Fatalf("cache stats %+v", cs)
			}
		})
	}
}

// TestManyFetchesOnOneConnection runs more fetches over one real QUIC
// connection than quic-go's limit of open streams (100): each fetch's
// stream must be closed in both directions at both ends, or the 101st
// waits forever.
func TestManyFetchesOnOneConnection(t *testing.T) {
	a := newSite(t)
	data := randomData(5, 4<<10)
	put(t, a, store.RootID, "f", data)
	hash, origin := chunkOf(t, a, "/f")
	ida, idf := newIdentity(t), newIdentity(t)
	l := listen(t, ida, idf.Site)
	cctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		c, err := l.Accept(cctx)
		if err != nil {
			return
		}
		link := store.PeerLink{Name: "test"}
		link.Normalize()
		srv := &FetchServer{Store: a, Peer: c.Peer, Link: link, Stats: &Stats{}, Log: slog.New(slog.DiscardHandler)}
		for {
			st, err := c.AcceptStream(cctx)
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				br, bw := bufio.NewReader(st), bufio.NewWriter(st)
				if h, err := readHello(br); err == nil {
					srv.serve(cctx, br, bw, h)
				}
			}()
		}
	}()
	c, err := Dial(cctx, l.Addr().String(), idf, ida.Site)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close("done")
	for i := range 250 {
		fctx, fcancel := context.WithTimeout(cctx, 5*time.Second)
		got, err := fetchFrom(fctx, c, store.FetchRequest{Kind: store.FetchChunk, Hash: hash, Origin: origin}, 0, nil, nil)
		fcancel()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch %d: %v", i, err)
		}
	}
}

// FuzzReceiveChunk feeds arbitrary answers to a chunk fetch: the reader
// must fail cleanly, and whatever it accepts must be the chunk asked for.
func FuzzReceiveChunk(f *testing.F) {
	data := randomData(7, 1_000)
	want := store.ChunkID(data)
	var good bytes.Buffer
	bw := bufio.NewWriter(&good)
	s := newSite(f)
	refs, err := s.PutChunks([][]byte{data})
	if err != nil {
		f.Fatal(err)
	}
	err = s.SendChunk(context.Background(), store.FetchRequest{Kind: store.FetchChunk, Hash: refs[0].Hash}, func(hdr []byte) error {
		return WriteFrame(bw, msgChunkH, hdr)
	}, func(i int, b []byte) error {
		c, out := compress(b)
		return writeFrameParts(bw, msgBlock, []byte{c}, out)
	})
	if err != nil {
		f.Fatal(err)
	}
	bw.Flush()
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:good.Len()/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReader(bytes.NewReader(b))
		typ, p, err := ReadFrame(br, MaxFrame)
		if err != nil || typ != msgChunkH {
			return
		}
		got, err := receiveChunk(br, store.FetchRequest{Kind: store.FetchChunk, Hash: want}, p, nil)
		if err == nil && store.ChunkID(got) != want {
			t.Fatal("accepted a chunk that is not the one asked for")
		}
	})
}
