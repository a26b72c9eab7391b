package integration

// Tests of 'geofs link add|list|remove' against the real binary. They edit
// config.yaml only, so they need no FUSE (except TestLinkCLIOnMountpoint).

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// linkJSONOut is one entry of 'geofs link list --json' (docs/CLI.md).
type linkJSONOut struct {
	Name         string   `json:"name"`
	Peer         string   `json:"peer"`
	Remote       string   `json:"remote"`
	Direction    string   `json:"direction"`
	Replication  string   `json:"replication"`
	Paths        []string `json:"paths"`
	MetadataOnly string   `json:"metadata_only"`
	RateLimit    int64    `json:"rate_limit"`
	Coalesce     string   `json:"coalesce"`
}

// initStore makes a store with 'geofs init' (no FUSE needed) and returns
// its directory and site id.
func initStore(t *testing.T, name string) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	id := strings.TrimSpace(string(geofsStdout(t, "init", "--name", name, dir)))
	if !hexID.MatchString(id) {
		t.Fatalf("init printed %q", id)
	}
	return dir, id
}

func randomSiteID(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func linkList(t *testing.T, target string) []linkJSONOut {
	t.Helper()
	out := geofsStdout(t, "link", "list", "--json", target)
	var ls []linkJSONOut
	if err := json.Unmarshal(out, &ls); err != nil {
		t.Fatalf("link list --json: %v\n%s", err, out)
	}
	if ls == nil {
		t.Fatalf("link list --json printed %q, want an array", out)
	}
	return ls
}

func TestLinkCLI(t *testing.T) {
	a, aID := initStore(t, "a")
	_, bID := initStore(t, "b")
	cID := randomSiteID(t)

	// Every flag, after STORE.
	out := string(geofsStdout(t, "link", "add", a, "--name", "paris", "--remote", "127.0.0.1:7301", "--peer", bID,
		"--direction", "send", "--replication", "continuous", "--path", "/projects/x", "--path", "/shared",
		"--path", "/projects", "--metadata-only", "versions", "--rate-limit", "10MiB", "--coalesce", "200ms"))
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 ||
		!strings.Contains(out, `"paris"`) || !strings.Contains(out, bID) || !strings.Contains(out, aID) {
		t.Errorf("link add printed %q: want one line naming the link, the peer and this site's id", out)
	}
	paris := linkJSONOut{Name: "paris", Peer: bID, Remote: "127.0.0.1:7301", Direction: "send", Replication: "continuous",
		Paths: []string{"/projects", "/shared"}, MetadataOnly: "versions", RateLimit: 10 << 20, Coalesce: "200ms"}
	if got := linkList(t, a); len(got) != 1 || !linkEqual(got[0], paris) {
		t.Fatalf("link list --json = %+v, want [%+v]", got, paris)
	}

	// Defaults, flags before STORE, no --remote, a peer id in capitals.
	geofsStdout(t, "link", "add", "--name", "fog.1", "--peer", strings.ToUpper(cID), a)
	fog := linkJSONOut{Name: "fog.1", Peer: cID, Direction: "send+receive", Replication: "initial+continuous",
		Paths: []string{"/"}, Coalesce: "50ms"}
	if got := linkList(t, a); len(got) != 2 || !linkEqual(got[0], paris) || !linkEqual(got[1], fog) {
		t.Fatalf("link list --json = %+v, want [%+v %+v]", got, paris, fog)
	}
	table := string(geofsStdout(t, "link", "list", a))
	for _, want := range []string{"NAME", "PEER", "REMOTE", "DIRECTION", "REPLICATION", "PATHS", "METADATA-ONLY", "RATE",
		"paris", bID, "127.0.0.1:7301", "/projects,/shared", "versions", "10MiB/s", "fog.1", cID, "unlimited"} {
		if !strings.Contains(table, want) {
			t.Errorf("link list does not show %q:\n%s", want, table)
		}
	}

	// Usage errors: exit 2, one message, config.yaml untouched.
	before, err := os.ReadFile(filepath.Join(a, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"duplicate name", []string{"--name", "paris", "--peer", randomSiteID(t)}, "already exists"},
		{"duplicate peer", []string{"--name", "paris2", "--peer", bID}, `"paris" already links`},
		{"unknown direction", []string{"--name", "x", "--peer", randomSiteID(t), "--direction", "sideways"}, `--direction "sideways"`},
		{"bad peer id", []string{"--name", "x", "--peer", "0123456789abcdef"}, `--peer "0123456789abcdef": not a site id`},
		{"non-hex peer id", []string{"--name", "x", "--peer", strings.Repeat("g", 32)}, "not a site id"},
		{"own site id", []string{"--name", "x", "--peer", aID}, "own id"},
		{"no peer", []string{"--name", "x"}, "--peer"},
		{"no name", []string{"--peer", randomSiteID(t)}, "--name"},
		{"bad name", []string{"--name", "a/b", "--peer", randomSiteID(t)}, `--name "a/b"`},
		{"bad remote", []string{"--name", "x", "--peer", randomSiteID(t), "--remote", "host:port"}, "--remote"},
		{"unknown replication", []string{"--name", "x", "--peer", randomSiteID(t), "--replication", "once"}, "--replication"},
		{"relative path", []string{"--name", "x", "--peer", randomSiteID(t), "--path", "projects"}, `--path "projects"`},
		{"unknown metadata-only", []string{"--name", "x", "--peer", randomSiteID(t), "--metadata-only", "some"}, "--metadata-only"},
		{"bad rate", []string{"--name", "x", "--peer", randomSiteID(t), "--rate-limit", "fast"}, "--rate-limit"},
		{"negative rate", []string{"--name", "x", "--peer", randomSiteID(t), "--rate-limit", "-1"}, "--rate-limit"},
		{"long coalesce", []string{"--name", "x", "--peer", randomSiteID(t), "--coalesce", "1m"}, "--coalesce"},
		{"unknown flag", []string{"--name", "x", "--peer", randomSiteID(t), "--frob"}, "frob"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"link", "add", a}, c.args...)
			out, code := geofsExit(t, args...)
			if code != 2 {
				t.Fatalf("geofs %s: exit %d, want 2\n%s", strings.Join(args, " "), code, out)
			}
			checkUsageMessage(t, out, c.want)
		})
	}
	for _, args := range [][]string{{"link", "add", "--name", "x", "--peer", cID}, {"link", "list"}, {"link", "remove", a},
		{"link", "remove", a, "x", "y"}, {"link", "frob", a}} {
		out, code := geofsExit(t, args...)
		if code != 2 {
			t.Errorf("geofs %s: exit %d, want 2\n%s", strings.Join(args, " "), code, out)
		}
		checkUsageMessage(t, out, "")
	}
	if after, _ := os.ReadFile(filepath.Join(a, "config.yaml")); string(after) != string(before) {
		t.Errorf("refused link adds changed config.yaml:\n%s\nto\n%s", before, after)
	}

	// Remove.
	if out := string(geofsStdout(t, "link", "remove", a, "paris")); !strings.Contains(out, `removed link "paris"`) {
		t.Errorf("link remove printed %q", out)
	}
	if got := linkList(t, a); len(got) != 1 || !linkEqual(got[0], fog) {
		t.Fatalf("after remove: %+v, want [%+v]", got, fog)
	}
	// Removing a link that is not there fails (exit 1), naming it and the
	// links there are.
	out, code := geofsExit(t, "link", "remove", a, "paris")
	if code != 1 {
		t.Errorf("remove of an unknown link: exit %d, want 1\n%s", code, out)
	}
	checkFailureMessage(t, out, `link "paris": not found`)
	if !strings.Contains(out, "fog.1") {
		t.Errorf("message does not list the links there are: %s", out)
	}
	geofsStdout(t, "link", "remove", a, "fog.1")
	if got := linkList(t, a); len(got) != 0 {
		t.Fatalf("after removing both: %+v", got)
	}
	if out := string(geofsStdout(t, "link", "list", a)); !strings.Contains(out, "no links") {
		t.Errorf("link list with no links printed %q", out)
	}
	if b, _ := os.ReadFile(filepath.Join(a, "config.yaml")); strings.Contains(string(b), "links") {
		t.Errorf("config.yaml with no links still says links:\n%s", b)
	}

	// A missing store fails like every other command.
	missing := filepath.Join(t.TempDir(), "nonexistent")
	for _, args := range [][]string{{"link", "list", missing}, {"link", "add", missing, "--name", "x", "--peer", cID},
		{"link", "remove", missing, "x"}} {
		out, code := geofsExit(t, args...)
		if code != 1 {
			t.Errorf("geofs %s: exit %d, want 1\n%s", strings.Join(args, " "), code, out)
		}
		checkFailureMessage(t, out, "geofs init")
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("link add created %s", missing)
	}
}

func linkEqual(a, b linkJSONOut) bool {
	return a.Name == b.Name && a.Peer == b.Peer && a.Remote == b.Remote && a.Direction == b.Direction &&
		a.Replication == b.Replication && slices.Equal(a.Paths, b.Paths) && a.MetadataOnly == b.MetadataOnly &&
		a.RateLimit == b.RateLimit && a.Coalesce == b.Coalesce
}

// TestLinkCLIConcurrentAdds runs 8 'geofs link add' processes at once on
// one store: none may lose another's link.
func TestLinkCLIConcurrentAdds(t *testing.T) {
	a, _ := initStore(t, "a")
	const n = 8
	var wg sync.WaitGroup
	outs := make([]string, n)
	codes := make([]int, n)
	peers := make([]string, n)
	for i := range n {
		peers[i] = randomSiteID(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], codes[i] = geofsExit(t, "link", "add", a, "--name", fmt.Sprintf("l%d", i), "--peer", peers[i],
				"--remote", fmt.Sprintf("10.0.0.%d:7300", i+1))
		}()
	}
	wg.Wait()
	for i := range n {
		if codes[i] != 0 {
			t.Errorf("link add l%d: exit %d\n%s", i, codes[i], outs[i])
		}
	}
	got := linkList(t, a)
	if len(got) != n {
		t.Fatalf("%d links after %d concurrent adds: %+v", len(got), n, got)
	}
	for i := range n {
		if !slices.ContainsFunc(got, func(l linkJSONOut) bool { return l.Name == fmt.Sprintf("l%d", i) && l.Peer == peers[i] }) {
			t.Errorf("link l%d lost", i)
		}
	}
}

// TestLinkCLIHandEditedConfig: a bad link written into config.yaml by hand
// is refused with a message naming the link and the field.
func TestLinkCLIHandEditedConfig(t *testing.T) {
	a, aID := initStore(t, "a")
	text := fmt.Sprintf("name: a\nsite: %s\nlinks:\n  - name: paris\n    peer: %s\n    direction: sideways\n", aID, randomSiteID(t))
	if err := os.WriteFile(filepath.Join(a, "config.yaml"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"link", "list", a}, {"link", "add", a, "--name", "x", "--peer", randomSiteID(t)},
		{"link", "remove", a, "paris"}, {"id", a}} {
		out, code := geofsExit(t, args...)
		if code != 1 {
			t.Errorf("geofs %s: exit %d, want 1\n%s", strings.Join(args, " "), code, out)
		}
		checkFailureMessage(t, out, `link "paris": direction "sideways"`)
	}
}

// TestLinkCLIOnMountpoint: the link commands take a mountpoint too, and
// work while the site runs.
func TestLinkCLIOnMountpoint(t *testing.T) {
	s := newSite(t)
	s.mount()
	peer := randomSiteID(t)
	geofsStdout(t, "link", "add", s.mnt, "--name", "m", "--peer", peer, "--remote", "localhost:7300")
	if got := linkList(t, s.store); len(got) != 1 || got[0].Name != "m" || got[0].Peer != peer {
		t.Fatalf("link list of the store after adding through the mountpoint: %+v", got)
	}
	if got := linkList(t, s.mnt); len(got) != 1 || got[0].Name != "m" {
		t.Fatalf("link list of the mountpoint: %+v", got)
	}
	geofsStdout(t, "link", "remove", s.mnt, "m")
	if got := linkList(t, s.store); len(got) != 0 {
		t.Fatalf("after remove: %+v", got)
	}
	s.unmount()
	s.fsck()
}
