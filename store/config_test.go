package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCacheDefault: a site made without a cache size, or a config
// written before there was one, has no cache section and the default size.
func TestConfigCacheDefault(t *testing.T) {
	dir, cfg := newConfigDir(t)
	if got := cfg.CacheSize(); got != DefaultCacheSize || DefaultCacheSize != 1<<30 {
		t.Errorf("CacheSize() = %d, want %d (1GiB)", got, DefaultCacheSize)
	}
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "cache") {
		t.Errorf("config.yaml without a cache size has a cache section:\n%s", b)
	}

	// An existing config, as the previous version wrote it, loads as before
	// and is rewritten unchanged by an edit that does not touch the cache.
	old := "name: test\nsite: " + cfg.Site + "\nlinks:\n    - name: paris\n      peer: " + randomPeer() +
		"\n      direction: send+receive\n      replication: initial+continuous\n      paths:\n        - /\n      coalesce: 50ms\n"
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cache.Size != 0 || got.CacheSize() != DefaultCacheSize || len(got.Links) != 1 {
		t.Errorf("old config loaded as %+v (cache size %d)", got, got.CacheSize())
	}
	if err := EditConfig(dir, func(*Config) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ConfigFile)); string(b) != old {
		t.Errorf("an edit changed an old config:\n%s\nto\n%s", old, b)
	}
}

func TestConfigCacheSize(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "site")
	cfg, err := Init(dir, InitOptions{Name: "fog", CacheSize: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CacheSize() != 32<<20 {
		t.Errorf("Init: CacheSize() = %d", cfg.CacheSize())
	}
	b, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	if !strings.Contains(string(b), "cache:\n    size: 32MiB\n") {
		t.Errorf("config.yaml does not say size: 32MiB:\n%s", b)
	}
	if got, err := LoadConfig(dir); err != nil || got.CacheSize() != 32<<20 {
		t.Fatalf("LoadConfig: %v, %v", got, err)
	}

	// Hand-written sizes: a number of bytes or a string bytesize reads.
	for _, c := range []struct {
		yaml string
		want int64
	}{
		{"size: 1073741824", 1 << 30},
		{"size: 1GiB", 1 << 30},
		{"size: 1.5Gi", 3 << 29},
		{"size: 512M", 512 << 20},
		{"size: 2GB", 2e9},
		{"size: 0", DefaultCacheSize},
		{"{}", DefaultCacheSize},
	} {
		text := "name: fog\nsite: " + cfg.Site + "\ncache:\n    " + c.yaml + "\n"
		if c.yaml == "{}" {
			text = "name: fog\nsite: " + cfg.Site + "\ncache: {}\n"
		}
		if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := LoadConfig(dir)
		if err != nil || got.CacheSize() != c.want {
			t.Errorf("cache %s: CacheSize() = %v, %v; want %d", c.yaml, got, err, c.want)
		}
	}
	for _, bad := range []string{"size: -1", "size: lots", "size: 1PB", "size: [1]"} {
		text := "name: fog\nsite: " + cfg.Site + "\ncache:\n    " + bad + "\n"
		if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(dir)
		if err == nil || !strings.Contains(err.Error(), ConfigFile) || !strings.Contains(err.Error(), "line 4") {
			t.Errorf("cache %s: LoadConfig error %v, want one naming %s and line 4", bad, err, ConfigFile)
		}
	}

	if _, err := Init(filepath.Join(t.TempDir(), "neg"), InitOptions{CacheSize: -1}); err == nil {
		t.Error("Init with a negative cache size succeeded")
	}
}

// TestConfigCacheEditKeepsLinks: setting the cache size through
// EditConfig keeps the links and the other settings.
func TestConfigCacheEditKeepsLinks(t *testing.T) {
	dir, _ := newConfigDir(t)
	peer := randomPeer()
	err := EditConfig(dir, func(c *Config) error {
		c.Listen = "127.0.0.1:7300"
		return c.AddLink(PeerLink{Name: "paris", Peer: peer, Remote: "paris.example.com:7300", RateLimit: 10 << 20})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := EditConfig(dir, func(c *Config) error { c.Cache.Size = 64 << 20; return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	l, ok := got.Link("paris")
	if got.CacheSize() != 64<<20 || got.Listen != "127.0.0.1:7300" || got.Name != "test" || !ok ||
		l.Peer != peer || l.Remote != "paris.example.com:7300" || l.RateLimit != 10<<20 || len(got.Links) != 1 {
		t.Errorf("after setting the cache size: %+v", got)
	}
}

func TestCheckListen(t *testing.T) {
	for _, ok := range []string{"0.0.0.0:7300", ":7300", "[::]:7300", "localhost:1", "geofs.example.com:65535", "[fe80::1%eth0]:7300"} {
		if err := CheckListen(ok); err != nil {
			t.Errorf("CheckListen(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "7300", "host", "host:", "host:port", "host:0", "host:65536", "a b:7300", "::1:7300", "host:-1"} {
		if err := CheckListen(bad); err == nil {
			t.Errorf("CheckListen(%q) = nil, want an error", bad)
		}
	}
}
