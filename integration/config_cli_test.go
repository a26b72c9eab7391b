package integration

// Tests of 'geofs init --cache-size' and 'geofs config' against the real
// binary. They edit config.yaml only, so they need no FUSE (except
// TestConfigCLIOnMountpoint).

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// configJSONOut is 'geofs config --json' (docs/CLI.md).
type configJSONOut struct {
	CacheSize *int64  `json:"cache.size"`
	Listen    *string `json:"listen"`
	Name      *string `json:"name"`
}

func configJSON(t *testing.T, target string) configJSONOut {
	t.Helper()
	out := geofsStdout(t, "config", "--json", target)
	var c configJSONOut
	if err := json.Unmarshal(out, &c); err != nil {
		t.Fatalf("config --json: %v\n%s", err, out)
	}
	if c.CacheSize == nil || c.Listen == nil || c.Name == nil {
		t.Fatalf("config --json lacks a key: %s", out)
	}
	return c
}

// configGet runs 'geofs config TARGET KEY' and returns the one line it prints.
func configGet(t *testing.T, target, key string) string {
	t.Helper()
	out := string(geofsStdout(t, "config", target, key))
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("config %s printed %q, want one line", key, out)
	}
	return strings.TrimSuffix(out, "\n")
}

func TestConfigCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fog")
	geofsStdout(t, "init", "--name", "fog", "--cache-size", "32MiB", dir)
	cfgFile := filepath.Join(dir, "config.yaml")
	if b, _ := os.ReadFile(cfgFile); !strings.Contains(string(b), "size: 32MiB") {
		t.Errorf("init --cache-size 32MiB wrote:\n%s", b)
	}
	if got := configGet(t, dir, "cache.size"); got != "32MiB" {
		t.Errorf("config cache.size = %q, want 32MiB", got)
	}
	if got := configGet(t, dir, "name"); got != "fog" {
		t.Errorf("config name = %q, want fog", got)
	}
	if got := configGet(t, dir, "listen"); got != "" {
		t.Errorf("config listen = %q, want nothing", got)
	}
	list := string(geofsStdout(t, "config", dir))
	for _, want := range []string{"cache.size", "32MiB", "listen", "name", "fog"} {
		if !strings.Contains(list, want) {
			t.Errorf("config does not show %q:\n%s", want, list)
		}
	}
	if c := configJSON(t, dir); *c.CacheSize != 32<<20 || *c.Name != "fog" || *c.Listen != "" {
		t.Errorf("config --json = %d %q %q", *c.CacheSize, *c.Name, *c.Listen)
	}

	// Set, with --json after STORE too.
	out := string(geofsStdout(t, "config", dir, "cache.size", "1Gi"))
	if !strings.Contains(out, "1GiB") || !strings.Contains(out, "32MiB") || strings.Count(out, "\n") != 1 {
		t.Errorf("setting cache.size printed %q: want one line with the new and old sizes", out)
	}
	if c := configJSON(t, dir); *c.CacheSize != 1073741824 {
		t.Errorf("after cache.size 1Gi: config --json cache.size = %d, want 1073741824", *c.CacheSize)
	}
	if out := string(geofsStdout(t, "config", dir, "cache.size", "--json")); strings.TrimSpace(out) != "{\n  \"cache.size\": 1073741824\n}" {
		t.Errorf("config STORE cache.size --json printed %q", out)
	}
	if b, _ := os.ReadFile(cfgFile); !strings.Contains(string(b), "size: 1GiB") {
		t.Errorf("config.yaml after cache.size 1Gi:\n%s", b)
	}
	for _, c := range []struct{ in, want string }{
		{"1536KiB", "1536KiB"}, {"1.5GiB", "1536MiB"}, {"2G", "2GiB"}, {"1GB", "1000000000B"}, {"4096", "4KiB"}, {"512 MiB", "512MiB"},
	} {
		geofsStdout(t, "config", dir, "cache.size", c.in)
		if got := configGet(t, dir, "cache.size"); got != c.want {
			t.Errorf("after cache.size %q: %q, want %q", c.in, got, c.want)
		}
	}
	geofsStdout(t, "config", dir, "listen", "127.0.0.1:7300")
	geofsStdout(t, "config", dir, "name", "fog 2")
	if c := configJSON(t, dir); *c.Listen != "127.0.0.1:7300" || *c.Name != "fog 2" || *c.CacheSize != 512<<20 {
		t.Errorf("config --json = %d %q %q", *c.CacheSize, *c.Name, *c.Listen)
	}
	geofsStdout(t, "config", dir, "listen", "")
	if got := configGet(t, dir, "listen"); got != "" {
		t.Errorf("listen after clearing = %q", got)
	}

	// Refusals: exit 2, one message naming the key, config.yaml untouched.
	before, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"not a size", []string{"cache.size", "lots"}, `cache.size: "lots" is not a size`},
		{"negative", []string{"cache.size", "-1GiB"}, "negative"},
		{"zero", []string{"cache.size", "0"}, "more than 0"},
		{"unknown unit", []string{"cache.size", "1PB"}, `unknown unit "PB"`},
		{"fraction of a byte", []string{"cache.size", "1.5"}, "whole"},
		{"too large", []string{"cache.size", "9999999TiB"}, "too large"},
		{"empty", []string{"cache.size", ""}, "empty"},
		{"listen no port", []string{"listen", "localhost"}, `listen: "localhost": want HOST:PORT`},
		{"listen bad port", []string{"listen", "localhost:99999"}, "port"},
		{"empty name", []string{"name", ""}, "empty"},
		{"unknown key", []string{"cache.sise"}, `unknown setting "cache.sise" (the settings are cache.size, fetch.timeout, listen, name)`},
		{"unknown key set", []string{"frob", "1"}, "the settings are cache.size, fetch.timeout, listen, name"},
		{"too many", []string{"cache.size", "1G", "2G"}, "STORE|MOUNTPOINT [KEY [VALUE]]"},
		{"json set", []string{"--json", "cache.size", "1G"}, "--json"},
		{"unknown flag", []string{"--frob"}, "frob"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"config", dir}, c.args...)
			out, code := geofsExit(t, args...)
			if code != 2 {
				t.Fatalf("geofs %s: exit %d, want 2\n%s", strings.Join(args, " "), code, out)
			}
			checkUsageMessage(t, out, c.want)
		})
	}
	if out, code := geofsExit(t, "config"); code != 2 {
		t.Errorf("config without STORE: exit %d, want 2\n%s", code, out)
	}
	if after, _ := os.ReadFile(cfgFile); string(after) != string(before) {
		t.Errorf("refused config edits changed config.yaml:\n%s\nto\n%s", before, after)
	}

	// A missing store fails like every other command.
	missing := filepath.Join(t.TempDir(), "nonexistent")
	for _, args := range [][]string{{"config", missing}, {"config", missing, "cache.size"}, {"config", missing, "cache.size", "1G"}} {
		out, code := geofsExit(t, args...)
		if code != 1 {
			t.Errorf("geofs %s: exit %d, want 1\n%s", strings.Join(args, " "), code, out)
		}
		checkFailureMessage(t, out, "geofs init")
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("config created %s", missing)
	}

	// The help says what a running site does with a new size.
	if help := string(geofsStdout(t, "config", "--help")); !strings.Contains(help, "within a second") || !strings.Contains(help, "geofs config /var/lib/geofs/site cache.size 32MiB") {
		t.Errorf("config --help:\n%s", help)
	}
}

// TestConfigCLIInit: without --cache-size a site has the default, 1GiB,
// and no cache section; a bad --cache-size is refused and makes no store.
func TestConfigCLIInit(t *testing.T) {
	dir, _ := initStore(t, "plain")
	if b, _ := os.ReadFile(filepath.Join(dir, "config.yaml")); strings.Contains(string(b), "cache") {
		t.Errorf("init without --cache-size wrote a cache section:\n%s", b)
	}
	if got := configGet(t, dir, "cache.size"); got != "1GiB" {
		t.Errorf("default cache.size = %q, want 1GiB", got)
	}
	if c := configJSON(t, dir); *c.CacheSize != 1<<30 {
		t.Errorf("default cache.size in --json = %d", *c.CacheSize)
	}
	if list := string(geofsStdout(t, "config", dir)); !strings.Contains(list, "1GiB (default)") {
		t.Errorf("config does not say the size is the default:\n%s", list)
	}

	for _, c := range []struct{ size, want string }{{"lots", "--cache-size"}, {"0", "more than 0"}, {"-5M", "negative"}, {"1 XB", "unknown unit"}} {
		store := filepath.Join(t.TempDir(), "s")
		out, code := geofsExit(t, "init", "--cache-size", c.size, store)
		if code != 2 {
			t.Errorf("init --cache-size %q: exit %d, want 2\n%s", c.size, code, out)
		}
		checkUsageMessage(t, out, c.want)
		if _, err := os.Stat(store); err == nil {
			t.Errorf("init --cache-size %q created %s", c.size, store)
		}
	}
	for in, want := range map[string]int64{"512KiB": 512 << 10, "1.5GiB": 3 << 29, "2T": 2 << 40, "1GB": 1e9, "1048576": 1 << 20} {
		store := filepath.Join(t.TempDir(), "s")
		geofsStdout(t, "init", "--cache-size", in, store)
		if c := configJSON(t, store); *c.CacheSize != want {
			t.Errorf("init --cache-size %q: %d, want %d", in, *c.CacheSize, want)
		}
	}
}

// TestConfigCLIKeepsLinks: editing settings keeps the links.
func TestConfigCLIKeepsLinks(t *testing.T) {
	a, _ := initStore(t, "a")
	p1, p2 := randomSiteID(t), randomSiteID(t)
	geofsStdout(t, "link", "add", a, "--name", "paris", "--remote", "127.0.0.1:7301", "--peer", p1,
		"--direction", "send", "--path", "/projects", "--rate-limit", "10MiB", "--coalesce", "200ms")
	geofsStdout(t, "link", "add", a, "--name", "fog", "--peer", p2, "--metadata-only", "all")
	before := linkList(t, a)
	geofsStdout(t, "config", a, "cache.size", "64MiB")
	geofsStdout(t, "config", a, "listen", "0.0.0.0:7300")
	geofsStdout(t, "config", a, "name", "a2")
	after := linkList(t, a)
	if len(after) != len(before) {
		t.Fatalf("links before %+v, after %+v", before, after)
	}
	for i := range before {
		if !linkEqual(before[i], after[i]) {
			t.Errorf("link %d changed: %+v to %+v", i, before[i], after[i])
		}
	}
	if c := configJSON(t, a); *c.CacheSize != 64<<20 || *c.Listen != "0.0.0.0:7300" || *c.Name != "a2" {
		t.Errorf("config --json = %d %q %q", *c.CacheSize, *c.Listen, *c.Name)
	}
	// And the links commands keep the settings.
	geofsStdout(t, "link", "remove", a, "fog")
	if got := configGet(t, a, "cache.size"); got != "64MiB" {
		t.Errorf("cache.size after link remove = %q", got)
	}
}

// TestConfigCLIOnMountpoint: config takes a mountpoint too, and sets the
// cache size while the site runs.
func TestConfigCLIOnMountpoint(t *testing.T) {
	s := newSiteWith(t, "--name", "it", "--cache-size", "16MiB")
	s.mount()
	if got := configGet(t, s.mnt, "cache.size"); got != "16MiB" {
		t.Errorf("config MOUNTPOINT cache.size = %q", got)
	}
	geofsStdout(t, "config", s.mnt, "cache.size", "48MiB")
	if got := configGet(t, s.store, "cache.size"); got != "48MiB" {
		t.Errorf("config STORE cache.size after setting it through the mountpoint = %q", got)
	}
	if err := os.WriteFile(s.path("f"), []byte("still works"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.unmount()
	s.fsck()
}
