package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func randomPeer() string { return SiteID(NewFileID()).String() }

func newConfigDir(t *testing.T) (string, *Config) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "site")
	cfg, err := Init(dir, InitOptions{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

func TestPeerLinkNormalize(t *testing.T) {
	peer := randomPeer()
	l := PeerLink{Name: "a", Peer: strings.ToUpper(peer)}
	l.Normalize()
	want := PeerLink{Name: "a", Peer: peer, Direction: DirectionSendReceive, Replication: ReplicationInitialContinuous,
		Paths: []string{"/"}, Coalesce: "50ms"}
	if !linksEqual(l, want) {
		t.Fatalf("defaults: got %+v, want %+v", l, want)
	}
	if !l.Sends() || !l.Receives() || !l.Initial() || !l.Continuous() || l.CoalesceWindow() != 50*time.Millisecond {
		t.Errorf("default helpers: %+v", l)
	}
	if l.PeerID().String() != peer {
		t.Errorf("PeerID %s, want %s", l.PeerID(), peer)
	}

	// Set values stay.
	l = PeerLink{Name: "a", Peer: peer, Direction: DirectionSend, Replication: ReplicationContinuous, Coalesce: "0s"}
	l.Normalize()
	if l.Direction != DirectionSend || l.Replication != ReplicationContinuous || l.Coalesce != "0s" {
		t.Errorf("set values changed: %+v", l)
	}
	if !l.Sends() || l.Receives() || l.Initial() || !l.Continuous() || l.CoalesceWindow() != 0 {
		t.Errorf("helpers of send/continuous/0s: %+v", l)
	}

	for _, c := range []struct{ in, want []string }{
		{nil, []string{"/"}},
		{[]string{}, []string{"/"}},
		{[]string{"/a", "/a/b"}, []string{"/a"}},
		{[]string{"/a/b", "/a"}, []string{"/a"}},
		{[]string{"/a/", "/a//b/../c", "/a"}, []string{"/a"}},
		{[]string{"/b", "/a", "/b"}, []string{"/a", "/b"}},
		{[]string{"/a", "/a-b", "/a/b", "/ab"}, []string{"/a", "/a-b", "/ab"}},
		{[]string{"/x/y", "/", "/z"}, []string{"/"}},
		{[]string{"/p/./q/", "/p/q/r", "/p/qq"}, []string{"/p/q", "/p/qq"}},
		{[]string{"/a/../b"}, []string{"/b"}},
	} {
		l := PeerLink{Paths: slices.Clone(c.in)}
		l.Normalize()
		if !slices.Equal(l.Paths, c.want) {
			t.Errorf("Normalize paths %q: got %q, want %q", c.in, l.Paths, c.want)
		}
	}
}

func linksEqual(a, b PeerLink) bool {
	return a.Name == b.Name && a.Remote == b.Remote && a.Peer == b.Peer && a.Direction == b.Direction &&
		a.Replication == b.Replication && slices.Equal(a.Paths, b.Paths) && a.MetadataOnly == b.MetadataOnly &&
		a.RateLimit == b.RateLimit && a.Coalesce == b.Coalesce
}

func TestPeerLinkValidate(t *testing.T) {
	peer := randomPeer()
	good := PeerLink{Name: "paris-1.a_b", Remote: "paris.example.com:7300", Peer: peer, Direction: DirectionReceive,
		Replication: ReplicationInitial, Paths: []string{"/x", "/y/z"}, MetadataOnly: MetadataOnlyVersions,
		RateLimit: 10 << 20, Coalesce: "10s"}
	if err := good.Validate(); err != nil {
		t.Fatalf("good link: %v", err)
	}
	for _, ok := range []func(*PeerLink){
		func(l *PeerLink) { *l = PeerLink{Name: "n", Peer: peer} }, // all defaults
		func(l *PeerLink) { l.Remote = "" },
		func(l *PeerLink) { l.Remote = "10.0.0.1:1" },
		func(l *PeerLink) { l.Remote = "[::1]:65535" },
		func(l *PeerLink) { l.Name = strings.Repeat("x", 64) },
		func(l *PeerLink) { l.Peer = strings.ToUpper(peer) },
		func(l *PeerLink) { l.MetadataOnly = MetadataOnlyAll },
		func(l *PeerLink) { l.Coalesce = "0" },
		func(l *PeerLink) { l.Coalesce = "" },
		func(l *PeerLink) { l.RateLimit = 0 },
		func(l *PeerLink) { l.Paths = []string{"/"} },
	} {
		l := good
		ok(&l)
		if err := l.Validate(); err != nil {
			t.Errorf("%+v: %v", l, err)
		}
	}
	for _, c := range []struct {
		field string
		edit  func(*PeerLink)
	}{
		{"name", func(l *PeerLink) { l.Name = "" }},
		{"name", func(l *PeerLink) { l.Name = strings.Repeat("x", 65) }},
		{"name", func(l *PeerLink) { l.Name = "a b" }},
		{"name", func(l *PeerLink) { l.Name = "a/b" }},
		{"name", func(l *PeerLink) { l.Name = "é" }},
		{"name", func(l *PeerLink) { l.Name = ".." }},
		{"peer", func(l *PeerLink) { l.Peer = "" }},
		{"peer", func(l *PeerLink) { l.Peer = peer[:30] }},
		{"peer", func(l *PeerLink) { l.Peer = peer + "00" }},
		{"peer", func(l *PeerLink) { l.Peer = "zz" + peer[2:] }},
		{"remote", func(l *PeerLink) { l.Remote = "host" }},
		{"remote", func(l *PeerLink) { l.Remote = ":7300" }},
		{"remote", func(l *PeerLink) { l.Remote = "host:http" }},
		{"remote", func(l *PeerLink) { l.Remote = "host:0" }},
		{"remote", func(l *PeerLink) { l.Remote = "host:65536" }},
		{"remote", func(l *PeerLink) { l.Remote = "::1:7300" }},
		{"direction", func(l *PeerLink) { l.Direction = "both" }},
		{"replication", func(l *PeerLink) { l.Replication = "continuous+initial" }},
		{"paths", func(l *PeerLink) { l.Paths = []string{"/a", "b"} }},
		{"paths", func(l *PeerLink) { l.Paths = []string{""} }},
		{"paths", func(l *PeerLink) { l.Paths = []string{"/a\x00b"} }},
		{"paths", func(l *PeerLink) { l.Paths = []string{"/" + strings.Repeat("a", MaxPathLen)} }},
		{"metadata_only", func(l *PeerLink) { l.MetadataOnly = "none" }},
		{"rate_limit", func(l *PeerLink) { l.RateLimit = -1 }},
		{"coalesce", func(l *PeerLink) { l.Coalesce = "50" }},
		{"coalesce", func(l *PeerLink) { l.Coalesce = "-1ms" }},
		{"coalesce", func(l *PeerLink) { l.Coalesce = "10.001s" }},
	} {
		l := good
		l.Paths = slices.Clone(good.Paths)
		c.edit(&l)
		err := l.Validate()
		var le *LinkError
		if !errors.As(err, &le) {
			t.Errorf("%+v: got %v, want a *LinkError on %s", l, err, c.field)
			continue
		}
		if le.Field != c.field || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: error %q names field %q, want %q", l, err, le.Field, c.field)
		}
	}
}

func TestConfigAddRemoveLink(t *testing.T) {
	_, cfg := newConfigDir(t)
	p1, p2 := randomPeer(), randomPeer()
	if err := cfg.AddLink(PeerLink{Name: "a", Peer: p1, Paths: []string{"/x/y", "/x"}}); err != nil {
		t.Fatal(err)
	}
	l, ok := cfg.Link("a")
	if !ok || l.Direction != DirectionSendReceive || !slices.Equal(l.Paths, []string{"/x"}) {
		t.Fatalf("Link(a) = %+v, %v: want it normalized", l, ok)
	}
	if _, ok := cfg.Link("b"); ok {
		t.Error("Link(b) found a missing link")
	}

	for _, c := range []struct {
		l      PeerLink
		field  string
		exists bool
	}{
		{PeerLink{Name: "a", Peer: p2}, "name", true},
		{PeerLink{Name: "b", Peer: p1}, "peer", true},
		{PeerLink{Name: "b", Peer: strings.ToUpper(p1)}, "peer", true},
		{PeerLink{Name: "b", Peer: cfg.SiteID.String()}, "peer", false},
		{PeerLink{Name: "b", Peer: p2, Direction: "up"}, "direction", false},
	} {
		err := cfg.AddLink(c.l)
		var le *LinkError
		if !errors.As(err, &le) || le.Field != c.field || errors.Is(err, ErrExists) != c.exists {
			t.Errorf("AddLink(%+v) = %v; want a LinkError on %s (ErrExists %v)", c.l, err, c.field, c.exists)
		}
	}
	if len(cfg.Links) != 1 {
		t.Fatalf("refused AddLinks changed the links: %+v", cfg.Links)
	}

	if err := cfg.AddLink(PeerLink{Name: "b", Peer: p2}); err != nil {
		t.Fatal(err)
	}
	err := cfg.RemoveLink("c")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"c"`) || !strings.Contains(err.Error(), "a, b") {
		t.Errorf("RemoveLink(c) = %v", err)
	}
	if err := cfg.RemoveLink("a"); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Links) != 1 || cfg.Links[0].Name != "b" {
		t.Fatalf("after RemoveLink(a): %+v", cfg.Links)
	}
	if err := cfg.RemoveLink("b"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.RemoveLink("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveLink of a removed link = %v", err)
	}
}

func TestEditConfigRoundTrip(t *testing.T) {
	dir, cfg := newConfigDir(t)
	peer := randomPeer()
	want := PeerLink{Name: "paris", Remote: "paris:7300", Peer: peer, Direction: DirectionSend,
		Replication: ReplicationInitial, Paths: []string{"/b", "/a"}, MetadataOnly: MetadataOnlyAll,
		RateLimit: 1 << 30, Coalesce: "1s"}
	if err := EditConfig(dir, func(c *Config) error { return c.AddLink(want) }); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	want.Paths = []string{"/a", "/b"}
	if len(got.Links) != 1 || !linksEqual(got.Links[0], want) {
		t.Fatalf("loaded %+v, want %+v", got.Links, want)
	}
	if got.Name != cfg.Name || got.SiteID != cfg.SiteID {
		t.Errorf("EditConfig changed the site: %+v", got)
	}

	// fn's error is returned and nothing is saved.
	boom := errors.New("boom")
	if err := EditConfig(dir, func(c *Config) error { c.Links = nil; return boom }); err != boom {
		t.Fatalf("EditConfig returned %v, want fn's error", err)
	}
	// A bad link set directly by fn is refused, not saved.
	err = EditConfig(dir, func(c *Config) error {
		c.Links = append(c.Links, PeerLink{Name: "x", Peer: randomPeer(), Direction: "sideways"})
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "direction") {
		t.Fatalf("EditConfig with a bad link: %v", err)
	}
	if got, err := LoadConfig(dir); err != nil || len(got.Links) != 1 {
		t.Fatalf("after refused edits: %+v, %v", got, err)
	}
	if err := EditConfig(dir, func(c *Config) error { return c.RemoveLink("paris") }); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadConfig(dir); err != nil || len(got.Links) != 0 {
		t.Fatalf("after remove: %+v, %v", got, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	if strings.Contains(string(b), "links") {
		t.Errorf("config.yaml without links still says links:\n%s", b)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, ConfigFile+".tmp*")); len(tmps) > 0 {
		t.Errorf("temporary files left: %v", tmps)
	}

	// Not a store: the usual message, and no lock file made there.
	empty := t.TempDir()
	if err := EditConfig(empty, func(*Config) error { return nil }); err == nil || !strings.Contains(err.Error(), "geofs init") {
		t.Errorf("EditConfig on an empty directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, ConfigLockFile)); err == nil {
		t.Error("EditConfig made a lock file in a directory that is not a store")
	}
}

func TestEditConfigConcurrent(t *testing.T) {
	dir, _ := newConfigDir(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- EditConfig(dir, func(c *Config) error {
				time.Sleep(time.Millisecond) // widen the window a lost update needs
				return c.AddLink(PeerLink{Name: fmt.Sprintf("l%d", i), Peer: randomPeer()})
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, ok := cfg.Link(fmt.Sprintf("l%d", i)); !ok {
			t.Errorf("link l%d lost; links: %+v", i, cfg.Links)
		}
	}
	if len(cfg.Links) != n {
		t.Errorf("%d links, want %d", len(cfg.Links), n)
	}
}

func TestLoadConfigRejectsBadLink(t *testing.T) {
	dir, cfg := newConfigDir(t)
	base := fmt.Sprintf("name: test\nsite: %s\n", cfg.SiteID)
	peer, peer2 := randomPeer(), randomPeer()
	good := fmt.Sprintf("  - name: paris\n    peer: %s\n", peer)
	for _, c := range []struct {
		name, links string
		want        []string // in the error
	}{
		{"direction", good + "    direction: sideways\n", []string{`link "paris"`, `direction "sideways"`}},
		{"peer", "  - name: paris\n    peer: 1234\n", []string{`link "paris"`, `peer "1234"`}},
		{"no name", fmt.Sprintf("  - peer: %s\n", peer), []string{"link #1", "name"}},
		{"remote", good + "    remote: nohost\n", []string{`link "paris"`, "remote"}},
		{"relative path", good + "    paths: [/a, b]\n", []string{`link "paris"`, `paths "b"`}},
		{"coalesce", good + "    coalesce: 1h\n", []string{`link "paris"`, "coalesce"}},
		{"rate", good + "    rate_limit: -5\n", []string{`link "paris"`, "rate_limit"}},
		{"metadata", good + "    metadata_only: some\n", []string{`link "paris"`, "metadata_only"}},
		{"own site", fmt.Sprintf("  - name: self\n    peer: %s\n", cfg.SiteID), []string{`link "self"`, "own id"}},
		{"dup name", good + fmt.Sprintf("  - name: paris\n    peer: %s\n", peer2), []string{`link "paris"`, "already exists"}},
		{"dup peer", good + fmt.Sprintf("  - name: london\n    peer: %s\n", peer), []string{`link "london"`, `"paris" already links`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(base+"links:\n"+c.links), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(dir)
			if err == nil {
				t.Fatal("LoadConfig accepted a bad link")
			}
			for _, w := range append(c.want, ConfigFile) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if _, err := Open(dir, discardLogger()); err == nil {
				t.Error("Open accepted a bad link")
			}
			if err := EditConfig(dir, func(*Config) error { return nil }); err == nil {
				t.Error("EditConfig accepted a bad link")
			}
		})
	}

	// A good hand-written link loads normalized.
	text := base + "links:\n" + good + "    paths: [/a/b, /a/, /c]\n"
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Links) != 1 || !slices.Equal(got.Links[0].Paths, []string{"/a", "/c"}) || got.Links[0].Direction != DirectionSendReceive {
		t.Errorf("loaded %+v", got.Links)
	}
}

func TestParseByteSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"1", 1}, {"1234", 1234}, {"10B", 10},
		{"10k", 10e3}, {"10kB", 10e3}, {"10KB", 10e3}, {"10K", 10e3},
		{"10MB", 10e6}, {"10M", 10e6}, {"10mb", 10e6}, {"1GB", 1e9}, {"2TB", 2e12},
		{"10KiB", 10 << 10}, {"10Ki", 10 << 10}, {"10MiB", 10 << 20}, {"10Mi", 10 << 20},
		{"1Gi", 1 << 30}, {"1GiB", 1 << 30}, {"1gib", 1 << 30}, {"3Ti", 3 << 40},
		{"1.5MiB", 3 << 19}, {"1.5 MiB", 3 << 19}, {"0.5k", 500}, {"100kB/s", 100e3}, {" 7 ", 7},
		{"1.9", 1}, {"9223372036854775807", 1<<63 - 1},
	} {
		got, err := ParseByteSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "-1", "abc", "10XB", "10 M B", "1e6", "1.", ".5", "10Mb/sec", "9223372036854775808", "8Ei", "9000000Ti", "0x10"} {
		if got, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatByteSize(t *testing.T) {
	for _, c := range []struct {
		in   int64
		want string
	}{
		{0, "0B"}, {1, "1B"}, {999, "999B"}, {1000, "1kB"}, {1024, "1KiB"}, {1500, "1500B"},
		{1536, "1536B"}, {10 << 20, "10MiB"}, {10e6, "10MB"}, {1 << 30, "1GiB"}, {1500e3, "1500kB"},
		{1<<63 - 1, "9223372036854775807B"},
	} {
		got := FormatByteSize(c.in)
		if got != c.want {
			t.Errorf("FormatByteSize(%d) = %q, want %q", c.in, got, c.want)
		}
		if back, err := ParseByteSize(got); err != nil || back != c.in {
			t.Errorf("ParseByteSize(FormatByteSize(%d) = %q) = %d, %v", c.in, got, back, err)
		}
	}
}
