package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/geofs/geofs/internal/relay"
)

// Linked sites: real processes with real mounts, linked over QUIC on
// 127.0.0.x, some through the fault-injecting relay.

// linkedSite is a site that listens on its own loopback address.
type linkedSite struct {
	*site
	addr string
	id   string
}

var nextHost = 10

func newLinkedSite(t *testing.T, name string) *linkedSite {
	t.Helper()
	requireFUSE(t)
	nextHost++
	addr := freeUDP(t, fmt.Sprintf("127.0.0.%d", nextHost))
	s := newSiteWith(t, "--name", name, "--listen", addr)
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(s.store, "geofs.log"))
			t.Logf("log of site %s:\n%s", name, log)
		}
	})
	return &linkedSite{site: s, addr: addr, id: strings.TrimSpace(s.geofs("id", s.store))}
}

// mountedPair returns two mounted sites, a and b, linked both ways: a
// dials b, b waits for a.
func mountedPair(t *testing.T) (a, b *linkedSite) {
	t.Helper()
	a, b = newLinkedSite(t, "a"), newLinkedSite(t, "b")
	a.link(b, b.addr)
	b.link(a, "")
	a.mount()
	b.mount()
	return a, b
}

func freeUDP(t *testing.T, host string) string {
	c, err := net.ListenPacket("udp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// link configures a link at s to peer, reached at remote ("" to let the
// peer dial).
func (s *linkedSite) link(peer *linkedSite, remote string, flags ...string) {
	s.t.Helper()
	args := []string{"link", "add", s.store, "--name", "to-" + peer.id[:8], "--peer", peer.id}
	if remote != "" {
		args = append(args, "--remote", remote)
	}
	s.geofs(append(args, flags...)...)
}

type linkStatusJSON struct {
	NamespaceRoot string `json:"namespace_root"`
	Links         []struct {
		Name           string  `json:"name"`
		Connected      bool    `json:"connected"`
		LagSeconds     float64 `json:"lag_seconds"`
		PendingEntries uint64  `json:"pending_entries"`
		ChunksSent     int64   `json:"chunks_sent"`
		ChunksReceived int64   `json:"chunks_received"`
		LastError      string  `json:"last_error"`
	} `json:"links"`
}

func (s *linkedSite) status() linkStatusJSON {
	s.t.Helper()
	var st linkStatusJSON
	if err := json.Unmarshal([]byte(s.geofs("status", "--json", s.store)), &st); err != nil {
		s.t.Fatal(err)
	}
	return st
}

// eventually polls cond for up to 20 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasContent(path string, want []byte) func() bool {
	return func() bool {
		got, err := os.ReadFile(path)
		return err == nil && bytes.Equal(got, want)
	}
}

func converged(sites ...*linkedSite) func() bool {
	return func() bool {
		root := sites[0].status().NamespaceRoot
		for _, s := range sites[1:] {
			if s.status().NamespaceRoot != root {
				return false
			}
		}
		return true
	}
}

func TestLinkedSitesReplicateBothWays(t *testing.T) {
	a, b := newLinkedSite(t, "a"), newLinkedSite(t, "b")
	a.link(b, b.addr)
	b.link(a, a.addr)
	a.mount()
	b.mount()
	os.WriteFile(a.path("hello.txt"), []byte("from a"), 0o644)
	eventually(t, "a's file at b", hasContent(b.path("hello.txt"), []byte("from a")))
	// b's kernel has the file's pages, attributes and name cached (for an
	// hour): a new version from a must replace them at once.
	os.WriteFile(a.path("hello.txt"), []byte("from a, second version"), 0o644)
	eventually(t, "the new version at b", hasContent(b.path("hello.txt"), []byte("from a, second version")))
	if _, err := os.Stat(b.path("later")); !os.IsNotExist(err) { // a negative entry
		t.Fatal(err)
	}
	os.WriteFile(a.path("later"), []byte("x"), 0o644)
	eventually(t, "a name b had looked up before it existed", hasContent(b.path("later"), []byte("x")))
	// b keeps its listing of / for the lookups after it; it must not answer
	// for a name a peer created since.
	if _, err := os.ReadDir(b.path(".")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(a.path("after-listing"), []byte("y"), 0o644)
	eventually(t, "a name created after b listed its directory", hasContent(b.path("after-listing"), []byte("y")))
	os.MkdirAll(b.path("dir/sub"), 0o755)
	big := make([]byte, 5<<20)
	rand.Read(big)
	os.WriteFile(b.path("dir/sub/big"), big, 0o600)
	eventually(t, "b's file at a", hasContent(a.path("dir/sub/big"), big))
	if st, err := os.Stat(a.path("dir/sub/big")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode at a: %v %v", st, err)
	}
	// A rename of a directory arrives as a rename.
	if err := os.Rename(a.path("dir"), a.path("moved")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rename at b", hasContent(b.path("moved/sub/big"), big))
	if _, err := os.Stat(b.path("dir")); !os.IsNotExist(err) {
		t.Fatalf("old name still at b: %v", err)
	}
	// A delete arrives.
	os.Remove(b.path("hello.txt"))
	eventually(t, "the delete at a", func() bool { _, err := os.Stat(a.path("hello.txt")); return os.IsNotExist(err) })
	eventually(t, "equal roots", converged(a, b))
	st := a.status()
	if len(st.Links) != 1 || !st.Links[0].Connected || st.Links[0].LastError != "" {
		t.Fatalf("a's link status: %+v", st.Links)
	}
	eventually(t, "an idle link with no lag and nothing pending", func() bool {
		l := a.status().Links[0]
		return l.LagSeconds == 0 && l.PendingEntries == 0
	})
	a.unmount()
	b.unmount()
	a.fsck()
	b.fsck()
}

func TestPartitionThenHealKeepsBothVersions(t *testing.T) {
	a, b := newLinkedSite(t, "a"), newLinkedSite(t, "b")
	toB, err := relay.New("127.0.0.1:0", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer toB.Close()
	toA, err := relay.New("127.0.0.1:0", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer toA.Close()
	a.link(b, toB.Addr())
	b.link(a, toA.Addr())
	a.mount()
	b.mount()
	os.WriteFile(a.path("f"), []byte("v1"), 0o644)
	os.WriteFile(a.path("g"), []byte("g1"), 0o644)
	os.MkdirAll(a.path("x/inside"), 0o755)
	eventually(t, "the tree at b", func() bool { _, err := os.Stat(b.path("x/inside")); return err == nil })
	eventually(t, "f at b", hasContent(b.path("f"), []byte("v1")))
	toB.Partition(true)
	toA.Partition(true)
	os.WriteFile(a.path("f"), []byte("from a, during the partition"), 0o644)
	time.Sleep(20 * time.Millisecond)
	os.WriteFile(b.path("f"), []byte("from b, during the partition"), 0o644)
	os.WriteFile(a.path("only-a"), []byte("a"), 0o644)
	os.Remove(a.path("g")) // a deletes g while b modifies it: the modification wins
	os.WriteFile(b.path("g"), []byte("g2 from b"), 0o644)
	os.Rename(a.path("x"), a.path("y")) // both rename x: one name wins, the subtree stays
	os.Rename(b.path("x"), b.path("z"))
	time.Sleep(time.Second)
	toB.Partition(false)
	toA.Partition(false)
	eventually(t, "convergence after the heal", converged(a, b))
	for _, s := range []*linkedSite{a, b} {
		if got, _ := os.ReadFile(s.path("f")); string(got) != "from b, during the partition" {
			t.Fatalf("f at %s: %q", s.mnt, got)
		}
		ents, _ := os.ReadDir(s.mnt)
		var copies []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "f.conflict-") {
				copies = append(copies, e.Name())
			}
		}
		if len(copies) != 1 {
			t.Fatalf("conflict copies at %s: %v", s.mnt, copies)
		}
		if got, _ := os.ReadFile(filepath.Join(s.mnt, copies[0])); string(got) != "from a, during the partition" {
			t.Fatalf("conflict copy holds %q", got)
		}
		if _, err := os.Stat(s.path("only-a")); err != nil {
			t.Fatal(err)
		}
		var versions []struct {
			Size   int      `json:"size"`
			Merged []string `json:"merged"`
		}
		if err := json.Unmarshal([]byte(s.geofs("versions", "--json", s.path("f"))), &versions); err != nil {
			t.Fatal(err)
		}
		// a's write, b's write and their merge (which holds b's content).
		merges, written := 0, 0
		for _, v := range versions {
			if len(v.Merged) > 0 {
				merges++
			}
			if v.Size == len("from a, during the partition") {
				written++
			}
		}
		if merges == 0 || written < 3 {
			t.Fatalf("f's history at %s lacks the merge or a's version: %+v", s.mnt, versions)
		}
		if got, _ := os.ReadFile(s.path("g")); string(got) != "g2 from b" {
			t.Fatalf("g at %s: %q (a modification must beat a concurrent delete)", s.mnt, got)
		}
		_, ey := os.Stat(s.path("y/inside"))
		_, ez := os.Stat(s.path("z/inside"))
		if (ey == nil) == (ez == nil) {
			t.Fatalf("x renamed to y at one site and z at the other: want exactly one at %s (y: %v, z: %v)", s.mnt, ey, ez)
		}
	}
}

func TestChainForwards(t *testing.T) {
	a, b, c := newLinkedSite(t, "a"), newLinkedSite(t, "b"), newLinkedSite(t, "c")
	a.link(b, b.addr)
	b.link(a, "")
	b.link(c, c.addr)
	c.link(b, "")
	for _, s := range []*linkedSite{a, b, c} {
		s.mount()
	}
	os.WriteFile(a.path("x"), []byte("through b"), 0o644)
	eventually(t, "a's file at c", hasContent(c.path("x"), []byte("through b")))
	os.WriteFile(c.path("y"), []byte("back"), 0o644)
	eventually(t, "c's file at a", hasContent(a.path("y"), []byte("back")))
	eventually(t, "equal roots", converged(a, b, c))
}

func TestWrongPeerKeyIsRefused(t *testing.T) {
	a, b, impostor := newLinkedSite(t, "a"), newLinkedSite(t, "b"), newLinkedSite(t, "impostor")
	a.link(b, "")
	// The impostor dials a, but a expects b's key.
	impostor.link(a, a.addr)
	impostor.mount()
	a.mount()
	os.WriteFile(impostor.path("evil"), []byte("x"), 0o644)
	eventually(t, "the impostor to see the refusal", func() bool {
		st := impostor.status()
		return len(st.Links) == 1 && !st.Links[0].Connected && st.Links[0].LastError != ""
	})
	time.Sleep(500 * time.Millisecond)
	if _, err := os.Stat(a.path("evil")); !os.IsNotExist(err) {
		t.Fatalf("a took a file from a site it does not trust: %v", err)
	}
	log, _ := os.ReadFile(filepath.Join(a.store, "geofs.log"))
	if !strings.Contains(string(log), "refused a connection from a site no link names") {
		t.Fatalf("a did not log the refusal:\n%s", log)
	}
}

// SIGKILL of either site in the middle of a transfer, then a restart: the
// transfer completes, the next change follows, and both stores are clean.
func TestKilledSiteResumes(t *testing.T) {
	for _, victim := range []string{"receiver", "sender"} {
		t.Run(victim, func(t *testing.T) {
			a, b := newLinkedSite(t, "a"), newLinkedSite(t, "b")
			a.link(b, b.addr)
			b.link(a, "")
			a.mount()
			big := make([]byte, 96<<20)
			rand.Read(big)
			os.WriteFile(a.path("big"), big, 0o644)
			os.WriteFile(a.path("small"), []byte("after the big one"), 0o644)
			b.mount()
			eventually(t, "the transfer to start", func() bool {
				st := b.statusQuiet()
				return len(st.Links) == 1 && st.Links[0].ChunksReceived > 0
			})
			killed := b
			if victim == "sender" {
				killed = a
			}
			killed.kill()
			killed.fsck()
			killed.mount()
			eventually(t, "the file at b after the restart", hasContent(b.path("big"), big))
			eventually(t, "the next file too", hasContent(b.path("small"), []byte("after the big one")))
			eventually(t, "equal roots", converged(a, b))
			b.unmount()
			b.fsck()
		})
	}
}

// statusQuiet is status that returns a zero value while the site starts.
func (s *linkedSite) statusQuiet() linkStatusJSON {
	var st linkStatusJSON
	out, err := runGeofs("status", "--json", s.store)
	if err == nil {
		json.Unmarshal([]byte(out), &st)
	}
	return st
}

// A reader holding a file open at b keeps reading the version it opened
// while a new version arrives from a; a new open reads the new one.
func TestOpenReaderKeepsItsVersion(t *testing.T) {
	a, b := mountedPair(t)
	v1, v2 := bytes.Repeat([]byte("1"), 8<<20), bytes.Repeat([]byte("2"), 8<<20)
	os.WriteFile(a.path("f"), v1, 0o644)
	eventually(t, "v1 at b", hasContent(b.path("f"), v1))
	fd, err := os.Open(b.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	first := make([]byte, 4<<20)
	if _, err := io.ReadFull(fd, first); err != nil || !bytes.Equal(first, v1[:4<<20]) {
		t.Fatalf("first half: %v", err)
	}
	os.WriteFile(a.path("f"), v2, 0o644)
	eventually(t, "v2 for a new open at b", hasContent(b.path("f"), v2))
	rest, err := io.ReadAll(fd)
	if err != nil || !bytes.Equal(rest, v1[4<<20:]) {
		t.Fatalf("the open reader saw a mix of versions (%d bytes, err %v)", len(rest), err)
	}
}

// Three sites linked in a triangle converge, with no echo: each change is
// logged once per site.
func TestTriangleConverges(t *testing.T) {
	a, b, c := newLinkedSite(t, "a"), newLinkedSite(t, "b"), newLinkedSite(t, "c")
	a.link(b, b.addr)
	b.link(a, "")
	b.link(c, c.addr)
	c.link(b, "")
	c.link(a, a.addr)
	a.link(c, "")
	sites := []*linkedSite{a, b, c}
	for _, s := range sites {
		s.mount()
	}
	for i, s := range sites {
		os.WriteFile(s.path(fmt.Sprintf("from-%d", i)), []byte{byte(i)}, 0o644)
	}
	for _, s := range sites {
		for i := range sites {
			eventually(t, "every file everywhere", hasContent(s.path(fmt.Sprintf("from-%d", i)), []byte{byte(i)}))
		}
	}
	eventually(t, "equal roots", converged(a, b, c))
	// Every site logged every version once: a record that arrived again by
	// the other way round the triangle was not logged (or applied) twice.
	var made int
	counts := make([]int, len(sites))
	for i, s := range sites {
		out := s.geofs("log", "--json", s.store)
		counts[i] = strings.Count(out, `"seq"`)
		made += strings.Count(out, `"seq"`) - strings.Count(out, `"from"`)
	}
	for i, n := range counts {
		if n != made {
			t.Fatalf("site %d logged %d entries; the sites made %d versions in all (%v)", i, n, made, counts)
		}
	}
}

// Renaming a directory of 1,000 files sends one record.
func TestRenamingALargeDirectorySendsOneRecord(t *testing.T) {
	a, b := mountedPair(t)
	os.Mkdir(a.path("big"), 0o755)
	for i := range 1000 {
		os.WriteFile(a.path(fmt.Sprintf("big/f%04d", i)), nil, 0o644)
	}
	eventually(t, "the directory at b", hasContent(b.path("big/f0999"), nil))
	eventually(t, "equal roots", converged(a, b))
	sentBefore := a.recordsSent()
	if err := os.Rename(a.path("big"), a.path("renamed")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rename at b", hasContent(b.path("renamed/f0999"), nil))
	eventually(t, "equal roots", converged(a, b))
	if n := a.recordsSent() - sentBefore; n != 1 {
		t.Fatalf("renaming a directory of 1,000 files sent %d records", n)
	}
}

func (s *linkedSite) recordsSent() int64 {
	var st struct {
		Links []struct {
			RecordsSent int64 `json:"records_sent"`
		} `json:"links"`
	}
	if err := json.Unmarshal([]byte(s.geofs("status", "--json", s.store)), &st); err != nil || len(st.Links) != 1 {
		s.t.Fatalf("status: %v", err)
	}
	return st.Links[0].RecordsSent
}

// Links added while both sites run (no restart), through a headless relay
// site (geofs serve): a → r → b.
func TestLinksAddedWhileRunningThroughAServedRelay(t *testing.T) {
	a, r, b := newLinkedSite(t, "a"), newLinkedSite(t, "relay"), newLinkedSite(t, "b")
	a.mount()
	b.mount()
	serve := exec.Command(geofsBin, "serve", r.store)
	var out bytes.Buffer
	serve.Stdout, serve.Stderr = &out, &out
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		serve.Process.Signal(syscall.SIGTERM)
		if err := serve.Wait(); err != nil {
			t.Errorf("geofs serve: %v\n%s", err, out.String())
		}
	}()
	os.WriteFile(a.path("before-links"), []byte("1"), 0o644)
	a.link(r, r.addr)
	r.link(a, "")
	r.link(b, "")
	b.link(r, r.addr)
	eventually(t, "a's file at b through the relay", hasContent(b.path("before-links"), []byte("1")))
	os.WriteFile(b.path("back"), []byte("2"), 0o644)
	eventually(t, "b's file at a", hasContent(a.path("back"), []byte("2")))
	eventually(t, "equal roots", converged(a, r, b))
	// Removing a link stops it.
	b.geofs("link", "remove", b.store, "to-"+r.id[:8])
	eventually(t, "b's link gone", func() bool { return len(b.status().Links) == 0 })
	os.WriteFile(a.path("after-removal"), []byte("3"), 0o644)
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Stat(b.path("after-removal")); !os.IsNotExist(err) {
		t.Fatalf("a removed link still carried a change: %v", err)
	}
}

// Replication through a link that drops, delays and reorders packets and
// has a rate limit still converges, byte-exact.
func TestLossyLinkConverges(t *testing.T) {
	a, b := newLinkedSite(t, "a"), newLinkedSite(t, "b")
	wan, err := relay.NewWithSeed("127.0.0.1:0", b.addr, 42)
	if err != nil {
		t.Fatal(err)
	}
	defer wan.Close()
	wan.Set(relay.Both(relay.Faults{Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.005, Reorder: 0.05, Rate: 20 << 20}))
	a.link(b, wan.Addr())
	b.link(a, "")
	a.mount()
	b.mount()
	data := make([]byte, 2<<20)
	rand.Read(data)
	os.WriteFile(a.path("blob"), data, 0o644)
	for i := range 50 {
		os.WriteFile(a.path(fmt.Sprint("small-", i)), []byte(fmt.Sprint(i)), 0o644)
	}
	eventually(t, "the blob at b", hasContent(b.path("blob"), data))
	eventually(t, "equal roots", converged(a, b))
	if st := wan.Stats(); st.Up.Dropped+st.Down.Dropped == 0 {
		t.Fatalf("the relay dropped nothing: %+v", st)
	}
}

// TestPeersCapabilitiesGoOnWrite: a write drops a file's capabilities even
// when they came from a peer after this kernel had found the file without
// any (and stopped asking, S_NOSEC): the mount drops them (fs/killpriv.go).
func TestPeersCapabilitiesGoOnWrite(t *testing.T) {
	a, b := mountedPair(t)
	os.WriteFile(a.path("bin"), []byte("v1"), 0o755)
	eventually(t, "the file at b", hasContent(b.path("bin"), []byte("v1")))
	f, err := os.OpenFile(b.path("bin"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The first write makes b's kernel look for capabilities, find none
	// and mark the inode.
	if _, err := f.Write([]byte("+")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b's write at a", hasContent(a.path("bin"), []byte("v1+")))
	if err := unix.Setxattr(a.path("bin"), "security.capability", testCapability, 0); err != nil {
		t.Fatal(err)
	}
	hasCaps := func(s *linkedSite) func() bool {
		return func() bool {
			_, err := unix.Getxattr(s.path("bin"), "security.capability", make([]byte, 64))
			return err == nil
		}
	}
	eventually(t, "the capabilities at b", hasCaps(b))
	if _, err := f.Write([]byte("+")); err != nil {
		t.Fatal(err)
	}
	if hasCaps(b)() {
		t.Error("b's file kept its capabilities through a write")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the write at a", hasContent(a.path("bin"), []byte("v1++")))
	eventually(t, "the capabilities gone at a", func() bool { return !hasCaps(a)() })
	eventually(t, "equal roots", converged(a, b))
}

// kill ends the site's process with SIGKILL, waits until it is gone (its
// store unlocked) and detaches its dead mount.
func (s *site) kill() {
	s.t.Helper()
	pids := s.pids()
	if len(pids) == 0 {
		s.t.Fatal("no process to kill")
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				s.t.Fatalf("process %d outlived SIGKILL", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	syscall.Unmount(s.mnt, syscall.MNT_DETACH)
}
