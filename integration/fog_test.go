package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/geofs/geofs/store"
	"github.com/geofs/geofs/store/cdc"
)

// Fog nodes: sites whose links are metadata-only, reading file data from
// their peers on demand into a bounded cache; and any site's repair of its
// damaged chunks from peers.
//
// TestFogPinnedChunksAreNeverEvicted ('geofs pin', 'geofs unpin') and
// TestFogFsckRepairFetchesFromAPeer ('geofs fsck --repair') were written
// against those commands' spec while they were being built.

type cacheStatusJSON struct {
	Cache struct {
		Size         int64   `json:"size"`
		Limit        int64   `json:"limit"`
		Chunks       int     `json:"chunks"`
		PinnedBytes  int64   `json:"pinned_bytes"`
		Hits         uint64  `json:"hits"`
		Misses       uint64  `json:"misses"`
		HitRatio     float64 `json:"hit_ratio"`
		Evictions    uint64  `json:"evictions"`
		Fetches      uint64  `json:"fetches"`
		FetchedBytes uint64  `json:"fetched_bytes"`
		Failures     uint64  `json:"fetch_failures"`
		Repaired     uint64  `json:"repaired"`
	} `json:"cache"`
	Links []fogLinkJSON `json:"links"`
}

type fogLinkJSON struct {
	Name             string `json:"name"`
	Connected        bool   `json:"connected"`
	ChunksReceived   int64  `json:"chunks_received"`
	ChunksFetched    int64  `json:"chunks_fetched"`
	BytesFetched     int64  `json:"bytes_fetched"`
	FetchBadAnswers  int64  `json:"fetch_bad_answers"`
	FetchFailures    int64  `json:"fetch_failures"`
	FetchesServed    int64  `json:"fetches_served"`
	FetchesRefused   int64  `json:"fetches_refused"`
	FetchesForwarded int64  `json:"fetches_forwarded"`
	MetadataOnly     string `json:"metadata_only"`
	PeerMetadataOnly string `json:"peer_metadata_only"`
}

func (s *linkedSite) cacheStatus() cacheStatusJSON {
	s.t.Helper()
	st, err := fogStatus(s.store)
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// waitStatus polls s's status until ok holds and returns it; it fails with
// the last status after 20 s. Counters may trail the reads they count: a
// reader gets a chunk's blocks as they arrive, before the fetch that
// brings them has kept the chunk and counted it.
func (s *linkedSite) waitStatus(what string, ok func(st cacheStatusJSON) bool) cacheStatusJSON {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := s.cacheStatus()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s at %s: cache %+v, links %+v", what, s.mnt, st.Cache, st.Links)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fogStatus is cacheStatus for use off the test's goroutine.
func fogStatus(storeDir string) (cacheStatusJSON, error) {
	var st cacheStatusJSON
	out, err := runGeofs("status", "--json", storeDir)
	if err != nil {
		return st, fmt.Errorf("geofs status: %v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("geofs status: %v\n%s", err, out)
	}
	return st, nil
}

// link returns the status of the link to peer.
func (st cacheStatusJSON) link(t *testing.T, peer *linkedSite) fogLinkJSON {
	t.Helper()
	for _, l := range st.Links {
		if l.Name == "to-"+peer.id[:8] {
			return l
		}
	}
	t.Fatalf("no link to %s in %+v", peer.id[:8], st.Links)
	return fogLinkJSON{}
}

// newFog makes a full site a and a fog site f that receives a's tree as
// metadata only (mode "all" or "versions"), with a cache of cacheSize.
func newFog(t *testing.T, mode, cacheSize string) (a, f *linkedSite) {
	a = newLinkedSite(t, "a")
	f = newFogSite(t, "f", cacheSize)
	fogLink(f, a, mode)
	return a, f
}

func newFogSite(t *testing.T, name, cacheSize string) *linkedSite {
	s := newLinkedSite(t, name)
	s.geofs("config", s.store, "cache.size", cacheSize)
	return s
}

// fogLink links fog site f to peer: peer sends, f receives metadata only
// (mode) and dials.
func fogLink(f, peer *linkedSite, mode string) {
	peer.link(f, "")
	f.link(peer, peer.addr, "--direction", "receive", "--metadata-only", mode)
}

// fullLink links a and b both ways, with content; a dials b at remote
// (b's own address when remote is "").
func fullLink(a, b *linkedSite, remote string) {
	if remote == "" {
		remote = b.addr
	}
	a.link(b, remote)
	b.link(a, "")
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// maxChunkRecord is the most bytes one chunk takes in the cache: the
// chunker's largest chunk (store/cdc) and its record header (store/blocks.go:
// 40 bytes and 37 per 16 KiB block).
var maxChunkRecord = int64(cdc.Default.Max + 40 + 37*(cdc.Default.Max/store.BlockSize))

// putFiles writes files (path relative to s's mount -> content) at s.
func putFiles(t *testing.T, s *linkedSite, files map[string][]byte) {
	t.Helper()
	for name, b := range files {
		if err := os.MkdirAll(filepath.Dir(s.path(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.path(name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// randomFiles returns n files of size random bytes named dir/NN.
func randomFiles(t *testing.T, dir string, n, size int) map[string][]byte {
	files := map[string][]byte{}
	for i := range n {
		files[fmt.Sprintf("%s/%02d", dir, i)] = randomBytes(t, size)
	}
	return files
}

// waitMetadata waits until every file of files is at s with its size.
func waitMetadata(t *testing.T, s *linkedSite, files map[string][]byte) {
	t.Helper()
	eventually(t, "the files' metadata at "+s.mnt, func() bool {
		for name, b := range files {
			if st, err := os.Stat(s.path(name)); err != nil || st.Size() != int64(len(b)) {
				return false
			}
		}
		return true
	})
}

// readFresh reads a file after dropping its pages from the kernel's page
// cache, so that the read reaches geofs.
func readFresh(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// readUncached reads a file that must fail, with O_DIRECT: one read(2)
// makes one read request to geofs. (Through the page cache the kernel
// retries a failed readahead with a second request, and each waits for
// the fetch timeout.)
func readUncached(path string) (int, time.Duration, error) {
	start := time.Now()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return 0, time.Since(start), err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return len(b), time.Since(start), err
}

// connected reports whether st shows a connected link to peer.
func (st cacheStatusJSON) connected(peer *linkedSite) bool {
	for _, l := range st.Links {
		if l.Name == "to-"+peer.id[:8] {
			return l.Connected
		}
	}
	return false
}

// checkFiles reads every file of files at s (fresh) and fails unless each
// is byte-exact.
func checkFiles(t *testing.T, s *linkedSite, files map[string][]byte) {
	t.Helper()
	for name, want := range files {
		got, err := readFresh(s.path(name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %s at %s: %v (%d bytes, want %d, equal %v)", name, s.mnt, err, len(got), len(want), bytes.Equal(got, want))
		}
	}
}

// flipInPacks flips one byte of every copy of needle in the store's pack
// files (the store must not be running) and returns how many it flipped.
func flipInPacks(t *testing.T, storeDir string, needle []byte) int {
	t.Helper()
	packs, err := filepath.Glob(filepath.Join(storeDir, "packs", "*.pack"))
	if err != nil || len(packs) == 0 {
		t.Fatalf("no pack files in %s: %v", storeDir, err)
	}
	n := 0
	for _, p := range packs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; ; {
			i := bytes.Index(b[off:], needle)
			if i < 0 {
				break
			}
			at := int64(off + i + len(needle)/2)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{b[at] ^ 0xff}, at); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			n++
			off += i + len(needle)
		}
	}
	return n
}

// fsckExit runs geofs fsck and returns its exit status and output.
func fsckExit(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := runGeofs(append([]string{"fsck"}, args...)...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out
	case errors.As(err, &ee):
		return ee.ExitCode(), out
	}
	t.Fatalf("geofs fsck: %v\n%s", err, out)
	return 0, ""
}

// cachePoller polls a site's status while a workload runs and checks the
// cache size against a bound at every poll.
type cachePoller struct {
	stop  chan struct{}
	done  chan struct{}
	polls int
	max   int64
	bad   []string
}

func pollCache(storeDir string, bound int64) *cachePoller {
	p := &cachePoller{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			st, err := fogStatus(storeDir)
			if err != nil {
				p.bad = append(p.bad, err.Error())
			} else {
				p.polls++
				p.max = max(p.max, st.Cache.Size)
				if st.Cache.Size > bound {
					p.bad = append(p.bad, fmt.Sprintf("cache size %d > bound %d: %+v", st.Cache.Size, bound, st.Cache))
				}
			}
			select {
			case <-p.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return p
}

// finish stops polling and fails the test if a poll broke the bound.
func (p *cachePoller) finish(t *testing.T) {
	t.Helper()
	close(p.stop)
	<-p.done
	if len(p.bad) > 0 {
		t.Fatalf("%d of %d status polls: %s", len(p.bad), p.polls+len(p.bad), strings.Join(p.bad, "\n"))
	}
	t.Logf("%d status polls during the workload, largest cache size %d", p.polls, p.max)
}

// readAllBothWays reads every file of files at s, fresh, in order and in reverse
// at once, and returns the first wrong read.
func readAllBothWays(s *linkedSite, names []string, files map[string][]byte) error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range names {
				name := names[i]
				if r == 1 {
					name = names[len(names)-1-i]
				}
				got, err := readFresh(s.path(name))
				if err != nil || !bytes.Equal(got, files[name]) {
					errs[r] = fmt.Errorf("read %s: %v (%d bytes, want %d)", name, err, len(got), len(files[name]))
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func sortedNames(files map[string][]byte) []string {
	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func TestFogReadsFetchFromThePeer(t *testing.T) {
	for _, mode := range []string{"all", "versions"} {
		t.Run(mode, func(t *testing.T) {
			a, f := newFog(t, mode, "64MiB")
			a.mount()
			f.mount()
			big := randomBytes(t, 24<<20)
			small := []byte("hello from a\n")
			if err := os.MkdirAll(a.path("d/e"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(a.path("d/e/big"), big, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(a.path("d/small"), small, 0o644); err != nil {
				t.Fatal(err)
			}
			eventually(t, "metadata at f", func() bool {
				st, err := os.Stat(f.path("d/e/big"))
				return err == nil && st.Size() == int64(len(big))
			})
			st := f.cacheStatus()
			if st.Links[0].ChunksReceived != 0 || st.Cache.Fetches != 0 {
				t.Fatalf("metadata-only link moved data: %+v", st)
			}
			if got := a.cacheStatus().Links[0].PeerMetadataOnly; got != mode {
				t.Fatalf("a sees the peer's mode as %q, want %q", got, mode)
			}
			got, err := os.ReadFile(f.path("d/e/big"))
			if err != nil || !bytes.Equal(got, big) {
				t.Fatalf("read at f: %v, equal %v", err, bytes.Equal(got, big))
			}
			if got, err := os.ReadFile(f.path("d/small")); err != nil || !bytes.Equal(got, small) {
				t.Fatalf("small read at f: %q %v", got, err)
			}
			st = f.waitStatus("the fetches counted", func(st cacheStatusJSON) bool { return st.Cache.Fetches > 0 && st.Cache.Size > 0 })
			if st.Cache.Size > st.Cache.Limit {
				t.Fatalf("cache after reads: %+v", st.Cache)
			}
			// A second read comes from the cache.
			fetches := st.Cache.Fetches
			f.unmount()
			f.mount()
			if got, err := os.ReadFile(f.path("d/e/big")); err != nil || !bytes.Equal(got, big) {
				t.Fatalf("re-read at f: %v", err)
			}
			if st := f.cacheStatus(); st.Cache.Fetches != 0 || st.Cache.Hits == 0 {
				t.Fatalf("re-read fetched again (before: %d fetches): %+v", fetches, st.Cache)
			}
		})
	}
}

// treeFile is the content of file k of the large tree: at least 100 bytes,
// unique (it starts with its name), of a size that varies with k.
func treeFile(name string, k int) []byte {
	line := fmt.Sprintf("%s %05d\n", name, k)
	return bytes.Repeat([]byte(line), 4200/len(line)+1)[:100+(k*37)%4000]
}

// A fog node lists a 10,000-file tree, every size right, before any file
// data moves; reads then fetch it byte-exact.
func TestFogListsALargeTreeBeforeAnyDataMoves(t *testing.T) {
	a, f := newFog(t, "all", "64MiB")
	a.mount()
	f.mount()
	want := map[string]int{}
	for d := range 100 {
		dir := fmt.Sprintf("d%02d", d)
		if err := os.Mkdir(a.path(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			name := fmt.Sprintf("%s/f%02d", dir, i)
			b := treeFile(name, d*100+i)
			if err := os.WriteFile(a.path(name), b, 0o644); err != nil {
				t.Fatal(err)
			}
			want[name] = len(b)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for !converged(a, f)() {
		if time.Now().After(deadline) {
			t.Fatalf("f did not converge with a in 60 s: %+v", f.status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	nothingMoved := func(when string) {
		t.Helper()
		st := f.cacheStatus()
		l := st.link(t, a)
		if st.Cache.Fetches != 0 || st.Cache.FetchedBytes != 0 || st.Cache.Size != 0 || st.Cache.Chunks != 0 ||
			l.ChunksFetched != 0 || l.ChunksReceived != 0 {
			t.Fatalf("%s, f has data: cache %+v, link %+v", when, st.Cache, l)
		}
	}
	nothingMoved("once the tree's metadata arrived")
	seen, dirs := 0, 0
	err := filepath.WalkDir(f.mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if p == f.mnt {
			return nil
		}
		rel, _ := filepath.Rel(f.mnt, p)
		if fi.IsDir() {
			dirs++
			return nil
		}
		n, ok := want[rel]
		if !ok || !fi.Mode().IsRegular() || fi.Size() != int64(n) {
			return fmt.Errorf("%s at f: mode %v size %d, want a file of %d bytes (known: %v)", rel, fi.Mode(), fi.Size(), n, ok)
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(want) || dirs != 100 {
		t.Fatalf("f lists %d files in %d directories, want %d in 100", seen, dirs, len(want))
	}
	nothingMoved("after listing and lstat of every file")
	read := 0
	for d := range 100 {
		for _, i := range []int{d % 100, (d*7 + 3) % 100} {
			name := fmt.Sprintf("d%02d/f%02d", d, i)
			got, err := os.ReadFile(f.path(name))
			if wantB := treeFile(name, d*100+i); err != nil || !bytes.Equal(got, wantB) {
				st := f.cacheStatus()
				t.Fatalf("read %s at f, after %d files read right: %v (%q)\nf's cache: %+v\nf's links: %+v\na's links: %+v",
					name, read, err, got, st.Cache, st.Links, a.cacheStatus().Links)
			}
			read++
		}
	}
	f.waitStatus(fmt.Sprintf("%d fetches counted", read), func(st cacheStatusJSON) bool {
		return st.Cache.Fetches >= uint64(read) && st.Cache.Size > 0
	})
}

// A read workload three times the cache keeps the cache within its limit
// plus one chunk at every status poll, and every read is byte-exact.
func TestFogCacheStaysWithinItsLimit(t *testing.T) {
	for _, mode := range []string{"all", "versions"} {
		t.Run(mode, func(t *testing.T) {
			a, f := newFog(t, mode, "8MiB")
			a.mount()
			f.mount()
			files := randomFiles(t, "set", 24, 1<<20)
			putFiles(t, a, files)
			waitMetadata(t, f, files)
			names := sortedNames(files)
			st := f.cacheStatus()
			if st.Cache.Limit != 8<<20 {
				t.Fatalf("cache limit %d, want 8MiB", st.Cache.Limit)
			}
			bound := st.Cache.Limit + maxChunkRecord
			// Each pass runs on a fresh mount, so that neither the kernel's
			// pages nor geofs's in-memory blocks serve it: the disk cache
			// and the peer do.
			for pass := range 3 {
				if pass > 0 {
					f.mount()
				}
				p := pollCache(f.store, bound)
				err := readAllBothWays(f, names, files)
				p.finish(t)
				if err != nil {
					t.Fatalf("pass %d: %v", pass, err)
				}
				st := f.waitStatus("evictions", func(st cacheStatusJSON) bool { return st.Cache.Evictions > 0 && st.Cache.Fetches > 0 })
				if st.Cache.Size > bound {
					t.Fatalf("pass %d: cache after the workload (bound %d): %+v", pass, bound, st.Cache)
				}
				f.unmount()
			}
			st = f.cacheStatus() // from the store, not running
			if st.Cache.Size > bound {
				t.Fatalf("cache after the workload, unmounted (bound %d): %+v", bound, st.Cache)
			}
		})
	}
}

// Pinned files ('geofs pin') keep their chunks through a workload three
// times the cache, and read with their peer gone, after restarts too (one
// with a smaller cache that still holds them); 'geofs unpin' releases them.
func TestFogPinnedChunksAreNeverEvicted(t *testing.T) {
	a, f := newFog(t, "all", "8MiB")
	a.mount()
	f.mount()
	pinned := randomFiles(t, "pinned", 3, 1<<20)
	other := randomFiles(t, "other", 24, 1<<20)
	putFiles(t, a, pinned)
	putFiles(t, a, other)
	waitMetadata(t, f, pinned)
	waitMetadata(t, f, other)
	f.geofs("pin", f.path("pinned"))
	st := f.cacheStatus()
	pinnedBytes := st.Cache.PinnedBytes
	if pinnedBytes < 3<<20 || st.Cache.Fetches == 0 {
		t.Fatalf("after pinning 3 MiB of files: %+v", st.Cache)
	}
	bound := st.Cache.Limit + maxChunkRecord
	p := pollCache(f.store, bound)
	err := readAllBothWays(f, sortedNames(other), other)
	p.finish(t)
	if err != nil {
		t.Fatal(err)
	}
	st = f.waitStatus("evictions", func(st cacheStatusJSON) bool { return st.Cache.Evictions > 0 })
	if st.Cache.PinnedBytes != pinnedBytes || st.Cache.Size > bound {
		t.Fatalf("after reading 24 MiB of other files: pinned %d bytes, was %d: %+v", st.Cache.PinnedBytes, pinnedBytes, st.Cache)
	}
	// With the peer gone and f restarted (no page cache, no blocks in
	// memory), the pinned files read from f's disk, fetching nothing, and
	// the pins hold again ('geofs pin --help': pins survive restarts).
	a.unmount()
	restart := func(when string) {
		t.Helper()
		f.unmount()
		f.mount()
		for name, want := range pinned {
			if got, err := readFresh(f.path(name)); err != nil || !bytes.Equal(got, want) {
				st := f.cacheStatus()
				t.Fatalf("%s: read of pinned file %s with the peer gone: %v (equal %v)\nf's cache: %+v", when, name, err, bytes.Equal(got, want), st.Cache)
			}
		}
		if st := f.cacheStatus(); st.Cache.Fetches != 0 || st.Cache.Failures != 0 {
			t.Fatalf("%s: reading pinned files with the peer gone: %+v", when, st.Cache)
		}
		eventually(t, when+": the pins held again", func() bool { return f.cacheStatus().Cache.PinnedBytes == pinnedBytes })
	}
	restart("after a restart")
	// A smaller cache that still holds the pinned data: the restart must
	// evict other chunks, not pinned ones.
	f.unmount()
	f.geofs("config", f.store, "cache.size", "4MiB")
	restart("after a restart with cache.size lowered to 4MiB")
	if st := f.cacheStatus(); st.Cache.Size > 4<<20+maxChunkRecord {
		t.Fatalf("cache above its new limit: %+v", st.Cache)
	}
	f.geofs("unpin", f.path("pinned"))
	if st := f.cacheStatus(); st.Cache.PinnedBytes != 0 {
		t.Fatalf("after unpin: %+v", st.Cache)
	}
}

// With two full peers, a fog node's reads stay byte-exact while the peer
// serving them is SIGKILLed in the middle of a read.
func TestFogReadSurvivesAPeerKilledMidRead(t *testing.T) {
	for _, mode := range []string{"all", "versions"} {
		t.Run(mode, func(t *testing.T) {
			a, b := newLinkedSite(t, "a"), newLinkedSite(t, "b")
			f := newFogSite(t, "f", "64MiB")
			fullLink(a, b, "")
			fogLink(f, a, mode)
			fogLink(f, b, mode)
			a.mount()
			b.mount()
			f.mount()
			long := randomBytes(t, 16<<20)
			files := randomFiles(t, "more", 6, 2<<20)
			files["long"] = long
			putFiles(t, a, files)
			for name, want := range files {
				eventually(t, name+" at b", hasContent(b.path(name), want))
			}
			waitMetadata(t, f, files)
			eventually(t, "f connected to both", func() bool {
				st := f.cacheStatus()
				return st.link(t, a).Connected && st.link(t, b).Connected
			})

			fd, err := os.Open(f.path("long"))
			if err != nil {
				t.Fatal(err)
			}
			defer fd.Close()
			head := make([]byte, 2<<20)
			if _, err := io.ReadFull(fd, head); err != nil || !bytes.Equal(head, long[:len(head)]) {
				t.Fatalf("first 2 MiB at f: %v", err)
			}
			// The peer f fetched most from dies, while another reader is
			// fetching other files.
			st := f.waitStatus("the first fetches counted", func(st cacheStatusJSON) bool {
				return st.link(t, a).ChunksFetched+st.link(t, b).ChunksFetched > 0
			})
			victim, survivor := a, b
			if st.link(t, b).ChunksFetched > st.link(t, a).ChunksFetched {
				victim, survivor = b, a
			}
			before := st.link(t, survivor).ChunksFetched
			delete(files, "long")
			other := make(chan error, 1)
			go func() { other <- readAllBothWays(f, sortedNames(files), files) }()
			time.Sleep(20 * time.Millisecond)
			victim.kill()
			rest, err := io.ReadAll(fd)
			if err != nil || !bytes.Equal(rest, long[len(head):]) {
				t.Fatalf("the rest of the file after the peer died: %v (%d bytes, want %d)", err, len(rest), len(long)-len(head))
			}
			if err := <-other; err != nil {
				t.Fatalf("the other reader: %v", err)
			}
			st = f.waitStatus("fetches from the surviving peer after the kill", func(st cacheStatusJSON) bool {
				return st.link(t, survivor).ChunksFetched > before
			})
			for _, l := range st.Links {
				if l.FetchBadAnswers != 0 {
					t.Fatalf("bad answers: %+v", st.Links)
				}
			}
		})
	}
}

// With no peer reachable, a read of data f has not cached fails with EIO
// within a bounded time, while listing, stat and cached files still work,
// after a restart of f too. In mode "all" the peer is SIGKILLed (f's
// connection to it is left dangling); in "versions" it unmounts cleanly.
// fogWithOneFileCached makes a full site a and a mounted fog site f
// (metadata mode), with two 3 MiB files at a, d/cached and d/uncached, of
// which f has read d/cached.
func fogWithOneFileCached(t *testing.T, mode string) (a, f *linkedSite, files map[string][]byte) {
	t.Helper()
	a, f = newFog(t, mode, "64MiB")
	a.mount()
	f.mount()
	files = map[string][]byte{"d/cached": randomBytes(t, 3<<20), "d/uncached": randomBytes(t, 3<<20)}
	putFiles(t, a, files)
	waitMetadata(t, f, files)
	checkFiles(t, f, map[string][]byte{"d/cached": files["d/cached"]})
	return a, f, files
}

func TestFogWithoutPeersFailsUncachedReadsWithEIO(t *testing.T) {
	for _, mode := range []string{"all", "versions"} {
		t.Run(mode, func(t *testing.T) {
			a, f, files := fogWithOneFileCached(t, mode)
			cached := files["d/cached"]
			if mode == "all" {
				a.kill()
			} else {
				a.unmount()
			}
			n, took, err := readUncached(f.path("d/uncached"))
			if !errors.Is(err, syscall.EIO) || took > 30*time.Second {
				t.Fatalf("reading uncached data with no peer: %d bytes, err %v after %v; want EIO within 30 s", n, err, took)
			}
			t.Logf("EIO after %v", took.Round(time.Millisecond))
			f.waitStatus("the failed fetch counted", func(st cacheStatusJSON) bool { return st.Cache.Failures > 0 })
			log, _ := os.ReadFile(filepath.Join(f.store, "geofs.log"))
			if !strings.Contains(string(log), "/d/uncached") {
				t.Fatalf("no log line names /d/uncached:\n%s", log)
			}
			for _, when := range []string{"with no peer", "after f restarted with no peer"} {
				if ents, err := os.ReadDir(f.path("d")); err != nil || len(ents) != 2 {
					t.Fatalf("%s: listing: %v %v", when, ents, err)
				}
				for name, b := range files {
					if st, err := os.Stat(f.path(name)); err != nil || st.Size() != int64(len(b)) {
						t.Fatalf("%s: stat %s: %v %v", when, name, st, err)
					}
				}
				checkFiles(t, f, map[string][]byte{"d/cached": cached})
				if when == "with no peer" {
					// A restart drops the kernel's pages and geofs's blocks
					// in memory: the cached file comes from f's disk.
					f.unmount()
					f.mount()
				}
			}
			if st := f.cacheStatus(); st.Cache.Fetches != 0 || st.Cache.Hits == 0 || st.Cache.Failures != 0 {
				t.Fatalf("after the restart the cached file was not read from the cache: %+v", st.Cache)
			}
		})
	}
}

// On a fog node whose peer is gone, an open that waits for the file's
// manifest from peers holds up no other open or close: acquire used to
// hold the mount's table of open files for the whole fetch.
func TestFogOpenWaitingForAPeerHoldsUpNothingElse(t *testing.T) {
	a, f, files := fogWithOneFileCached(t, "versions")
	cached := files["d/cached"]
	a.unmount()
	done := make(chan error, 1)
	go func() {
		_, _, err := readUncached(f.path("d/uncached"))
		done <- err
	}()
	time.Sleep(500 * time.Millisecond) // its open waits for peers by now (fetch timeout 5 s)
	checkFiles(t, f, map[string][]byte{"d/cached": cached})
	select {
	case err := <-done:
		t.Fatalf("the uncached open ended (%v) before an open of a cached file: that open waited for its fetch", err)
	default:
	}
	if err := <-done; !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading uncached data with no peer: %v, want EIO", err)
	}
}

// repairPair makes full sites a and b linked both ways, with a 2 MiB file
// at both, a unmounted and one block of the file damaged in a's packs.
func repairPair(t *testing.T) (a, b *linkedSite, want []byte) {
	a, b = newLinkedSite(t, "a"), newLinkedSite(t, "b")
	fullLink(a, b, "")
	a.mount()
	b.mount()
	want = randomBytes(t, 2<<20)
	putFiles(t, a, map[string][]byte{"doc/file": want})
	eventually(t, "the file at b", hasContent(b.path("doc/file"), want))
	eventually(t, "equal roots", converged(a, b))
	a.unmount()
	if n := flipInPacks(t, a.store, want[1<<20:1<<20+64]); n != 1 {
		t.Fatalf("flipped %d copies of the needle in a's packs, want 1", n)
	}
	if code, out := fsckExit(t, a.store); code != 3 || !strings.Contains(out, "/doc/file") {
		t.Fatalf("fsck of the damaged store: exit %d\n%s", code, out)
	}
	return a, b, want
}

// A chunk damaged at a full site is repaired from its peer while an
// application reads it: the read is right and error-free, fsck clean.
func TestFogDamagedChunkIsRepairedFromAPeerOnRead(t *testing.T) {
	a, b, want := repairPair(t)
	a.mount()
	got, err := readFresh(a.path("doc/file"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read of the damaged file at a: %v (equal %v)", err, bytes.Equal(got, want))
	}
	a.waitStatus("the repair counted", func(st cacheStatusJSON) bool {
		return st.Cache.Repaired >= 1 && st.link(t, b).ChunksFetched >= 1
	})
	b.waitStatus("the fetch served", func(st cacheStatusJSON) bool { return st.link(t, a).FetchesServed >= 1 })
	a.unmount()
	a.fsck()
	a.mount()
	if got, err := readFresh(a.path("doc/file")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after the repair: %v", err)
	}
	if st := a.cacheStatus(); st.Cache.Repaired != 0 || st.Cache.Fetches != 0 {
		t.Fatalf("a fetched again after the repair: %+v", st.Cache)
	}
}

// 'geofs fsck --repair' on a running site fetches a damaged chunk from a
// peer, after which fsck is clean and the file reads with the peer gone.
func TestFogFsckRepairFetchesFromAPeer(t *testing.T) {
	a, b, want := repairPair(t)
	a.mount()
	if code, out := fsckExit(t, "--repair", a.store); code != 0 {
		t.Fatalf("fsck --repair: exit %d\n%s", code, out)
	}
	a.waitStatus("the repair counted", func(st cacheStatusJSON) bool { return st.Cache.Repaired >= 1 })
	b.waitStatus("the fetch served", func(st cacheStatusJSON) bool { return st.link(t, a).FetchesServed >= 1 })
	if code, out := fsckExit(t, a.store); code != 0 || !strings.Contains(out, "clean") {
		t.Fatalf("fsck after the repair: exit %d\n%s", code, out)
	}
	b.unmount() // the file now reads at a alone
	if got, err := readFresh(a.path("doc/file")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after the repair: %v", err)
	}
	a.unmount()
	a.fsck()
}

// A peer whose copy is damaged never serves it: with no other copy
// reachable the fog node's read fails with EIO, and once a peer with an
// intact copy is linked, its answer is used.
//
// A peer answering with wrong bytes (fetch_bad_answers) cannot be made
// from real parts: every site verifies each block it reads, its own
// included, before it serves it; only a modified binary could lie.
func TestFogDamagedPeerNeverServesWrongBytes(t *testing.T) {
	a, b := newLinkedSite(t, "a"), newLinkedSite(t, "b")
	f := newFogSite(t, "f", "64MiB")
	fullLink(b, a, "")
	a.mount()
	b.mount()
	f.mount()
	want := randomBytes(t, 2<<20)
	putFiles(t, a, map[string][]byte{"file": want})
	eventually(t, "the file at b", hasContent(b.path("file"), want))
	b.unmount()
	if n := flipInPacks(t, b.store, want[1<<20:1<<20+64]); n != 1 {
		t.Fatalf("flipped %d copies in b's packs, want 1", n)
	}
	b.geofs("link", "remove", b.store, "to-"+a.id[:8]) // b cannot reach a
	b.mount()
	fogLink(f, b, "all") // linked now, so that f's connection is to the b that runs
	waitMetadata(t, f, map[string][]byte{"file": want})

	// f's only peer is b, whose copy is damaged and which cannot reach a.
	n, took, err := readUncached(f.path("file"))
	if !errors.Is(err, syscall.EIO) || took > 30*time.Second {
		t.Fatalf("read at f with only a damaged copy reachable: %d bytes, err %v after %v; want EIO", n, err, took)
	}
	t.Logf("EIO after %v", took)
	// b was asked, and failed f (it may have served the file's intact
	// chunks).
	st := f.waitStatus("b asked", func(st cacheStatusJSON) bool { return st.link(t, b).FetchFailures > 0 })
	if l := st.link(t, b); l.FetchBadAnswers != 0 {
		t.Fatalf("f's link to b: %+v", l)
	}
	// f is linked to a too (b still cannot reach a): a's answer is used.
	fogLink(f, a, "all")
	eventually(t, "f connected to a", func() bool { return f.cacheStatus().connected(a) })
	if got, err := readFresh(f.path("file")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read at f with a linked: %v (equal %v)", err, bytes.Equal(got, want))
	}
	st = f.waitStatus("fetches from a", func(st cacheStatusJSON) bool { return st.link(t, a).ChunksFetched > 0 })
	for _, l := range st.Links {
		if l.FetchBadAnswers != 0 {
			t.Fatalf("bad answers: %+v", st.Links)
		}
	}
	if st := b.cacheStatus(); st.Cache.Repaired != 0 {
		t.Fatalf("b repaired without reaching a: %+v", st.Cache)
	}
	// Once b reaches a, b repairs its copy when read.
	b.link(a, a.addr)
	eventually(t, "the file at b, repaired", hasContent(b.path("file"), want))
	b.waitStatus("b's repair", func(st cacheStatusJSON) bool { return st.Cache.Repaired >= 1 })
	b.unmount()
	b.fsck()
}

// A link that serves only /pub: the fog node sees and reads /pub, nothing
// else, and nothing is refused; a fog node that asks the same site for a
// chunk outside /pub (its own end of the link serving everything, the
// metadata coming from another peer) is refused.
func TestFogFetchesOutsideTheServedPathsAreRefused(t *testing.T) {
	a, b := newLinkedSite(t, "a"), newLinkedSite(t, "b")
	f := newFogSite(t, "f", "64MiB")
	g := newFogSite(t, "g", "64MiB")
	fullLink(a, b, "")
	a.link(f, "", "--path", "/pub")
	f.link(a, a.addr, "--direction", "receive", "--metadata-only", "all", "--path", "/pub")
	// g's end serves everything; a's end only /pub.
	a.link(g, "", "--path", "/pub")
	g.link(a, a.addr, "--direction", "receive", "--metadata-only", "all")
	fogLink(g, b, "all")
	for _, s := range []*linkedSite{a, b, f, g} {
		s.mount()
	}
	pub, priv := randomBytes(t, 1<<20), randomBytes(t, 1<<20)
	files := map[string][]byte{"pub/x": pub, "priv/y": priv}
	putFiles(t, a, files)
	eventually(t, "the files at b", func() bool { return hasContent(b.path("pub/x"), pub)() && hasContent(b.path("priv/y"), priv)() })
	waitMetadata(t, f, map[string][]byte{"pub/x": pub})
	waitMetadata(t, g, files)
	checkFiles(t, f, map[string][]byte{"pub/x": pub})
	if _, err := os.Stat(f.path("priv")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("f sees /priv: %v", err)
	}
	if _, err := os.Stat(f.path("priv/y")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("f sees /priv/y: %v", err)
	}
	sa := a.waitStatus("a's fetches served", func(st cacheStatusJSON) bool { return st.link(t, f).FetchesServed > 0 })
	if l := sa.link(t, f); l.FetchesRefused != 0 {
		t.Fatalf("a's link to f after a legitimate read: %+v", l)
	}
	sf := f.waitStatus("f's fetches", func(st cacheStatusJSON) bool { return st.link(t, a).ChunksFetched > 0 })
	if l := sf.link(t, a); l.FetchFailures != 0 {
		t.Fatalf("f's link to a after a legitimate read: %+v", l)
	}

	// g reads /priv/y with b gone: a is the only peer it can ask.
	b.unmount()
	n, took, err := readUncached(g.path("priv/y"))
	if !errors.Is(err, syscall.EIO) || took > 30*time.Second {
		t.Fatalf("read of /priv/y at g through a: %d bytes, err %v after %v; want EIO", n, err, took)
	}
	t.Logf("EIO after %v", took)
	sa = a.waitStatus("the refusal counted", func(st cacheStatusJSON) bool { return st.link(t, g).FetchesRefused > 0 })
	if l := sa.link(t, g); l.FetchesServed != 0 {
		t.Fatalf("a's link to g after a request outside /pub: %+v", l)
	}
	log, _ := os.ReadFile(filepath.Join(a.store, "geofs.log"))
	if !strings.Contains(string(log), "refused a fetch request") {
		t.Fatalf("a did not log the refusal:\n%s", log)
	}
	// g still reads /pub/x through a.
	checkFiles(t, g, map[string][]byte{"pub/x": pub})
	if l := a.cacheStatus().link(t, f); l.FetchesRefused != 0 {
		t.Fatalf("a refused f: %+v", l)
	}
}

// A fog node linked to a running site before that site names it back (the
// usual order when a fog node joins: each end runs 'geofs link add') is
// refused until the site's link exists, and redials at a bounded rate
// meanwhile, not in a loop that floods both sites; then it works.
func TestFogLinkedBeforeThePeerKnowsItRedialsCalmly(t *testing.T) {
	a := newLinkedSite(t, "a")
	f := newFogSite(t, "f", "64MiB")
	a.mount()
	f.mount()
	f.link(a, a.addr, "--direction", "receive", "--metadata-only", "all")
	time.Sleep(2 * time.Second) // a refuses f all this while
	a.link(f, "")
	f.waitStatus("f connected to a", func(st cacheStatusJSON) bool { return st.connected(a) })
	alog, _ := os.ReadFile(filepath.Join(a.store, "geofs.log"))
	flog, _ := os.ReadFile(filepath.Join(f.store, "geofs.log"))
	// The dial loop waits 2 s between attempts (sync/links.go redial):
	// about two in these 2-3 s; 20 allows for any retry policy but a loop.
	refused, connects := strings.Count(string(alog), "refused a connection"), strings.Count(string(flog), "link connected")
	if refused > 20 || connects > 20 {
		t.Fatalf("in ~2 s of a refusing f, a logged %d refusals and f %d connections", refused, connects)
	}
	want := []byte("after the link\n")
	putFiles(t, a, map[string][]byte{"x": want})
	eventually(t, "x read at f", hasContent(f.path("x"), want))
}
