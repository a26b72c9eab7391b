// Package admin is what the geofs command asks of a site: file versions,
// old content, restores, the txlog, fsck and status. Local answers from an
// open store; Server serves a Local on a unix socket in the store (for the
// mount process, which holds the store open); Client asks that socket. Both
// implement Site, so each command works the same mounted or not.
package admin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/geofs/geofs/store"
	gsync "github.com/geofs/geofs/sync"
)

// Site is what the CLI needs from a site.
type Site interface {
	Versions(ctx context.Context, path string) ([]VersionInfo, error)
	Cat(ctx context.Context, path, version string, w io.Writer) error
	Restore(ctx context.Context, path, version string) (VersionInfo, error)
	Log(ctx context.Context, from uint64, fn func(LogEntry) error) error
	Fsck(ctx context.Context, repair bool) (FsckReport, error)
	Pin(ctx context.Context, path string) (store.PinResult, error)
	Unpin(ctx context.Context, path string) error
	Status(ctx context.Context) (Status, error)
}

// VersionInfo describes one version of a file (JSON field names are part
// of the CLI contract, docs/CLI.md).
type VersionInfo struct {
	Version string    `json:"version"`
	Time    time.Time `json:"time"` // when it was committed (hybrid logical clock)
	Site    string    `json:"site"`
	Size    uint64    `json:"size"`
	Kind    string    `json:"kind"`
	Mode    string    `json:"mode"`
	Mtime   time.Time `json:"mtime"`
	Deleted bool      `json:"deleted,omitempty"`
	// Merged are the concurrent versions this one merged (a merge made
	// when sites changed the file at once, docs/REPLICATION.md).
	Merged []string `json:"merged,omitempty"`
}

// LogEntry is one txlog entry.
type LogEntry struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Site    string    `json:"site"`
	Op      string    `json:"op"`
	File    string    `json:"file"`
	Version string    `json:"version"`
	From    string    `json:"from,omitempty"` // the peer it arrived from; absent when made here
}

// FsckReport is the result of checking a store.
type FsckReport struct {
	Stats    store.FsckStats `json:"stats"`
	Problems []string        `json:"problems"` // damage left
	Repaired []string        `json:"repaired"` // damage fixed from peers (fsck --repair)
}

// Status describes a running or stored site.
type Status struct {
	Site          string `json:"site"`
	Name          string `json:"name"`
	Store         string `json:"store"`
	Mountpoint    string `json:"mountpoint,omitempty"`
	NamespaceRoot string `json:"namespace_root"`
	LastSeq       uint64 `json:"last_seq"`
	LSMBytes      int64  `json:"lsm_bytes"`
	VlogBytes     int64  `json:"vlog_bytes"`
	// Links are the site's links (see sync.LinkStatus).
	Links []gsync.LinkStatus `json:"links"`
	// Cache is the chunk cache and the fetches that fill it.
	Cache CacheStatus `json:"cache"`
}

// CacheStatus describes the chunk cache (chunks fetched from peers) and
// fetching. Hits and misses count reads of chunks that are not in a pack:
// a hit found the chunk in the cache, a miss had to fetch it.
type CacheStatus struct {
	store.CacheStats
	store.FetchStats
	Misses            uint64  `json:"misses"`
	HitRatio          float64 `json:"hit_ratio"`
	FetchLatencyP50Ms float64 `json:"fetch_latency_p50_ms"`
	FetchLatencyP99Ms float64 `json:"fetch_latency_p99_ms"`
}

// cacheStatus gathers s's cache and fetch counters.
func cacheStatus(s *store.Store) CacheStatus {
	c := CacheStatus{CacheStats: s.CacheStats(), FetchStats: s.FetchStats()}
	c.Misses = c.FetchStats.Misses
	if n := c.Hits + c.Misses; n > 0 {
		c.HitRatio = float64(c.Hits) / float64(n)
	}
	c.FetchLatencyP50Ms = float64(c.LatencyP50.Microseconds()) / 1000
	c.FetchLatencyP99Ms = float64(c.LatencyP99.Microseconds()) / 1000
	return c
}

func versionInfo(v *store.Version, h store.Hash) VersionInfo {
	vi := VersionInfo{Version: h.String(), Time: v.Stamp.Time.Time().UTC(), Site: v.Stamp.Site.String(),
		Size: v.Size, Kind: v.Kind.String(), Mode: fmt.Sprintf("%04o", v.Mode),
		Mtime: time.Unix(0, v.Mtime).UTC(), Deleted: v.Deleted}
	for _, m := range v.Merged {
		vi.Merged = append(vi.Merged, m.String())
	}
	return vi
}

// SocketPath is where a mounted store listens. Unix socket paths are
// limited to 108 bytes, so a store with a long path uses one in the
// temporary directory named after it.
func SocketPath(storeDir string) string {
	abs, err := filepath.Abs(storeDir)
	if err != nil {
		abs = storeDir
	}
	p := filepath.Join(abs, "admin.sock")
	if len(p) < 100 {
		return p
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(os.TempDir(), "geofs-"+hex.EncodeToString(sum[:8])+".sock")
}

// findVersion returns the version of id whose hash starts with prefix.
func findVersion(s *store.Store, id store.FileID, prefix string) (*store.Version, store.Hash, error) {
	prefix = strings.ToLower(prefix)
	if len(prefix) < 4 {
		return nil, store.Hash{}, fmt.Errorf("version %q: give at least 4 hex digits", prefix)
	}
	vs, hs, err := s.History(id)
	if err != nil {
		return nil, store.Hash{}, err
	}
	var found []int
	for i, h := range hs {
		if strings.HasPrefix(h.String(), prefix) {
			found = append(found, i)
		}
	}
	switch len(found) {
	case 0:
		return nil, store.Hash{}, fmt.Errorf("version %s: %w (see 'geofs versions')", prefix, store.ErrNotFound)
	case 1:
		return vs[found[0]], hs[found[0]], nil
	}
	return nil, store.Hash{}, fmt.Errorf("version %s is ambiguous: give more digits", prefix)
}
