package store

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PeerLink is one configured link to a peer site (config.yaml "links").
// (It is not called Link: store.Link is a directory entry of a Version.)
//
// Empty Direction, Replication, Paths and Coalesce mean their defaults;
// Normalize fills them in, and LoadConfig and AddLink normalize every link.
//
// The same names are used in 'geofs link list --json' (docs/CLI.md).
type PeerLink struct {
	Name         string   `yaml:"name" json:"name"`
	Remote       string   `yaml:"remote,omitempty" json:"remote"`               // HOST:PORT to dial; empty: the peer dials us
	Peer         string   `yaml:"peer" json:"peer"`                             // the peer's site id (32 hex digits)
	Direction    string   `yaml:"direction" json:"direction"`                   // "send", "receive" or "send+receive"
	Replication  string   `yaml:"replication" json:"replication"`               // "initial", "continuous" or "initial+continuous"
	Paths        []string `yaml:"paths" json:"paths"`                           // absolute, cleaned tree paths served; default ["/"]
	MetadataOnly string   `yaml:"metadata_only,omitempty" json:"metadata_only"` // "", "all" or "versions"
	RateLimit    int64    `yaml:"rate_limit,omitempty" json:"rate_limit"`       // bytes per second, 0 = unlimited
	Coalesce     string   `yaml:"coalesce,omitempty" json:"coalesce"`           // push coalescing window, Go duration; default "50ms"
}

// Values of PeerLink fields.
const (
	DirectionSend        = "send"
	DirectionReceive     = "receive"
	DirectionSendReceive = "send+receive" // the default

	ReplicationInitial           = "initial"
	ReplicationContinuous        = "continuous"
	ReplicationInitialContinuous = "initial+continuous" // the default

	MetadataOnlyNone     = ""         // file content travels (the default)
	MetadataOnlyAll      = "all"      // no file content travels, only metadata
	MetadataOnlyVersions = "versions" // old versions travel as metadata only

	DefaultCoalesce = "50ms"
	MaxCoalesce     = 10 * time.Second
	MaxLinkNameLen  = 64
)

// ConfigLockFile is the file in a store that EditConfig flocks.
const ConfigLockFile = "config.lock"

// LinkError is a link setting that is not valid, or that conflicts with
// another link of the same config.
type LinkError struct {
	Link  string // the link's name; "" when the name is missing (LoadConfig: "#N", its position)
	Field string // the config.yaml key: "name", "peer", "remote", "paths", ...
	Value string // the offending value, as written
	Msg   string // what is wrong, and where possible what to do
	Err   error  // ErrExists for a duplicate name or peer; else nil
}

func (e *LinkError) Error() string {
	link := "link"
	switch {
	case strings.HasPrefix(e.Link, "#"): // an unnamed link's position
		link = "link " + e.Link
	case e.Link != "":
		link = fmt.Sprintf("link %q", e.Link)
	}
	return fmt.Sprintf("%s: %s: %s", link, e.FieldValue(), e.Msg)
}

// FieldValue is the field and its value, as in `direction "sideways"`.
func (e *LinkError) FieldValue() string {
	if e.Value == "" {
		return e.Field
	}
	return fmt.Sprintf("%s %q", e.Field, e.Value)
}

func (e *LinkError) Unwrap() error { return e.Err }

func (l *PeerLink) fieldError(field, value, format string, args ...any) *LinkError {
	return &LinkError{Link: l.Name, Field: field, Value: value, Msg: fmt.Sprintf(format, args...)}
}

// Normalize fills in defaults (send+receive, initial+continuous, paths
// ["/"], coalesce "50ms"), lower-cases the peer id, and cleans the paths:
// path.Clean, sorted, without repeats or paths inside another ("/a" and
// "/a/b" become "/a"). Validate first: a bad path inside another is
// dropped here unseen.
func (l *PeerLink) Normalize() {
	if l.Direction == "" {
		l.Direction = DirectionSendReceive
	}
	if l.Replication == "" {
		l.Replication = ReplicationInitialContinuous
	}
	if l.Coalesce == "" {
		l.Coalesce = DefaultCoalesce
	}
	l.Peer = strings.ToLower(l.Peer)
	if len(l.Paths) == 0 {
		l.Paths = []string{"/"}
		return
	}
	ps := make([]string, len(l.Paths))
	for i, p := range l.Paths {
		ps[i] = path.Clean(p)
	}
	slices.Sort(ps)
	ps = slices.Compact(ps)
	// An ancestor sorts before its descendants, and a dropped path's
	// ancestor is itself kept, so checking the kept ones suffices.
	kept := ps[:0]
	for _, p := range ps {
		if !slices.ContainsFunc(kept, func(q string) bool { return pathWithin(p, q) }) {
			kept = append(kept, p)
		}
	}
	l.Paths = kept
}

// pathWithin reports whether p is dir or inside it (both cleaned).
func pathWithin(p, dir string) bool {
	return p == dir || dir == "/" && strings.HasPrefix(p, "/") || strings.HasPrefix(p, dir+"/")
}

var linkNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Validate checks each field on its own (empty fields that have defaults
// are valid). Whether the peer is the local site, and whether the name or
// peer repeats another link's, depend on the config: AddLink and
// LoadConfig check those. Errors are *LinkError.
func (l *PeerLink) Validate() error {
	switch {
	case l.Name == "":
		return l.fieldError("name", "", "missing")
	case len(l.Name) > MaxLinkNameLen:
		return l.fieldError("name", l.Name, "longer than %d characters", MaxLinkNameLen)
	case !linkNameRE.MatchString(l.Name):
		return l.fieldError("name", l.Name, "use only letters, digits, '.', '_' and '-'")
	case l.Name == "." || l.Name == "..":
		return l.fieldError("name", l.Name, "not a usable name")
	}
	if l.Peer == "" {
		return l.fieldError("peer", "", "missing: give the peer site's id ('geofs id STORE' there prints it)")
	}
	if _, err := ParseSiteID(l.Peer); err != nil {
		return l.fieldError("peer", l.Peer, "not a site id: want 32 hex digits, as 'geofs id STORE' prints on the peer")
	}
	if l.Remote != "" {
		if err := checkHostPort(l.Remote); err != nil {
			return l.fieldError("remote", l.Remote, "%v", err)
		}
	}
	switch l.Direction {
	case "", DirectionSend, DirectionReceive, DirectionSendReceive:
	default:
		return l.fieldError("direction", l.Direction, "want %s, %s or %s", DirectionSend, DirectionReceive, DirectionSendReceive)
	}
	switch l.Replication {
	case "", ReplicationInitial, ReplicationContinuous, ReplicationInitialContinuous:
	default:
		return l.fieldError("replication", l.Replication, "want %s, %s or %s", ReplicationInitial, ReplicationContinuous, ReplicationInitialContinuous)
	}
	for _, p := range l.Paths {
		switch {
		case strings.IndexByte(p, 0) >= 0:
			return l.fieldError("paths", p, "contains a NUL byte")
		case !strings.HasPrefix(p, "/"):
			return l.fieldError("paths", p, "not absolute: give a path in the tree, like /projects")
		case len(p) > MaxPathLen:
			return l.fieldError("paths", p[:32]+"...", "longer than %d bytes", MaxPathLen)
		}
	}
	switch l.MetadataOnly {
	case MetadataOnlyNone, MetadataOnlyAll, MetadataOnlyVersions:
	default:
		return l.fieldError("metadata_only", l.MetadataOnly, "want %s or %s (or nothing)", MetadataOnlyAll, MetadataOnlyVersions)
	}
	if l.RateLimit < 0 {
		return l.fieldError("rate_limit", strconv.FormatInt(l.RateLimit, 10), "negative (0 means unlimited)")
	}
	if l.Coalesce != "" {
		d, err := time.ParseDuration(l.Coalesce)
		if err != nil {
			return l.fieldError("coalesce", l.Coalesce, "not a duration: want a Go duration like 50ms or 1s")
		}
		if d < 0 || d > MaxCoalesce {
			return l.fieldError("coalesce", l.Coalesce, "want a duration from 0 to %v", MaxCoalesce)
		}
	}
	return nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want HOST:PORT (a host name or address and a port number; [ADDR]:PORT for IPv6)")
	}
	if host == "" {
		return errors.New("no host: want HOST:PORT")
	}
	if strings.ContainsAny(host, " \t\r\n\x00/") {
		return fmt.Errorf("host %q is not a host name or address", host)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// PeerID is the peer's site id (zero when Peer does not parse).
func (l *PeerLink) PeerID() SiteID {
	id, err := ParseSiteID(l.Peer)
	if err != nil {
		return SiteID{}
	}
	return id
}

// Sends reports whether this site sends its changes over the link.
func (l *PeerLink) Sends() bool { return l.Direction != DirectionReceive }

// Receives reports whether this site takes the peer's changes over the link.
func (l *PeerLink) Receives() bool { return l.Direction != DirectionSend }

// Initial reports whether the link reconciles the whole served tree when it
// connects.
func (l *PeerLink) Initial() bool { return l.Replication != ReplicationContinuous }

// Continuous reports whether the link pushes changes as they are committed.
func (l *PeerLink) Continuous() bool { return l.Replication != ReplicationInitial }

// CoalesceWindow is how long pushed changes gather before they are sent
// (the default, 50ms, when Coalesce is empty or not valid).
func (l *PeerLink) CoalesceWindow() time.Duration {
	if d, err := time.ParseDuration(l.Coalesce); err == nil && d >= 0 && d <= MaxCoalesce {
		return d
	}
	d, _ := time.ParseDuration(DefaultCoalesce)
	return d
}

// Link returns the link named name; the pointer is into c.Links.
func (c *Config) Link(name string) (*PeerLink, bool) {
	for i := range c.Links {
		if c.Links[i].Name == name {
			return &c.Links[i], true
		}
	}
	return nil, false
}

// localSite is the site's own id (from SiteID, or the config's site key
// for a Config not made by LoadConfig).
func (c *Config) localSite() SiteID {
	if c.SiteID != (SiteID{}) {
		return c.SiteID
	}
	id, _ := ParseSiteID(c.Site)
	return id
}

// checkAgainst checks l (valid on its own) against the site and the links
// in others.
func (c *Config) checkAgainst(l *PeerLink, others []PeerLink) error {
	if local := c.localSite(); local != (SiteID{}) && l.PeerID() == local {
		return l.fieldError("peer", l.Peer, "this is this site's own id; give the peer site's id ('geofs id STORE' there prints it)")
	}
	for i := range others {
		o := &others[i]
		if o.Name == l.Name {
			e := l.fieldError("name", l.Name, "a link with this name already exists (remove it first to change it)")
			e.Err = ErrExists
			return e
		}
		if o.PeerID() == l.PeerID() {
			e := l.fieldError("peer", l.Peer, "link %q already links to this site (one link per peer site; remove it first to change it)", o.Name)
			e.Err = ErrExists
			return e
		}
	}
	return nil
}

// AddLink validates and normalizes l and appends it. It refuses a name or
// a peer that another link has (errors wrapping ErrExists), and a link to
// this site itself. Errors are *LinkError.
func (c *Config) AddLink(l PeerLink) error {
	if err := l.Validate(); err != nil {
		return err
	}
	l.Paths = slices.Clone(l.Paths)
	l.Normalize()
	if err := c.checkAgainst(&l, c.Links); err != nil {
		return err
	}
	c.Links = append(c.Links, l)
	return nil
}

// RemoveLink removes the link named name (an error wrapping ErrNotFound
// when there is none).
func (c *Config) RemoveLink(name string) error {
	for i := range c.Links {
		if c.Links[i].Name == name {
			c.Links = slices.Delete(c.Links, i, i+1)
			return nil
		}
	}
	if len(c.Links) == 0 {
		return fmt.Errorf("link %q: %w (the site has no links)", name, ErrNotFound)
	}
	names := make([]string, len(c.Links))
	for i := range c.Links {
		names[i] = c.Links[i].Name
	}
	return fmt.Errorf("link %q: %w (the site's links are %s)", name, ErrNotFound, strings.Join(names, ", "))
}

// checkLinks checks every link on its own, normalizes it, and checks it
// against the site and the links before it.
func (c *Config) checkLinks() error {
	for i := range c.Links {
		l := &c.Links[i]
		if err := l.Validate(); err != nil {
			var le *LinkError
			if errors.As(err, &le) && le.Link == "" {
				le.Link = fmt.Sprintf("#%d", i+1)
			}
			return err
		}
		l.Normalize()
		if err := c.checkAgainst(l, c.Links[:i]); err != nil {
			return err
		}
	}
	return nil
}

// EditConfig changes the config of the store in dir: under an exclusive
// flock on dir/config.lock it loads config.yaml, applies fn, checks the
// links and saves it atomically. Concurrent EditConfigs (in any processes)
// run one after another, so none loses another's edit. fn's error is
// returned as it is, and nothing is saved.
func EditConfig(dir string, fn func(*Config) error) error {
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err != nil {
		if _, lerr := LoadConfig(dir); lerr != nil {
			return lerr // says what dir is not
		}
		return fmt.Errorf("edit config: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ConfigLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("lock config: %w", err)
	}
	defer f.Close() // releases the lock
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("lock config %s: %w", f.Name(), err)
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		return err
	}
	if err := fn(cfg); err != nil {
		return err
	}
	if err := cfg.checkLinks(); err != nil {
		return fmt.Errorf("edit config: %w", err)
	}
	return cfg.Save(dir)
}

// Units ParseByteSize accepts (lower case): k, M, G, T are powers of 1000;
// Ki, Mi, Gi, Ti (or KiB...) powers of 1024.
var byteUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
	"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20,
	"gi": 1 << 30, "gib": 1 << 30, "ti": 1 << 40, "tib": 1 << 40,
}

var byteSizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]*)(?:/s)?$`)

// ParseByteSize parses a byte count (or a rate in bytes per second): a
// plain integer, or a number with a unit, case-insensitive: k/kB, M/MB,
// G/GB, T/TB are powers of 1000; Ki/KiB, Mi/MiB, Gi/GiB, Ti/TiB powers of
// 1024; B is 1. "10MB", "10MiB", "1Gi", "1.5 MiB" and "100kB/s" are all
// valid. A fraction of a byte is dropped.
func ParseByteSize(s string) (int64, error) {
	m := byteSizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size: want a whole number of bytes or a size like 10MB, 10MiB or 1Gi", s)
	}
	mult, ok := byteUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q: want B, kB, MB, GB, TB, KiB, MiB, GiB or TiB", s, m[2])
	}
	r, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, fmt.Errorf("%q is too large (at most %d bytes)", s, int64(math.MaxInt64))
	}
	return n.Int64(), nil
}

// FormatByteSize writes n so that ParseByteSize reads it back exactly, in
// the largest unit that divides it ("10MiB", "1500kB", "1234B").
func FormatByteSize(n int64) string {
	if n == 0 {
		return "0B"
	}
	best := strconv.FormatInt(n, 10) + "B"
	for _, u := range []struct {
		name string
		size int64
	}{{"kB", 1e3}, {"KiB", 1 << 10}, {"MB", 1e6}, {"MiB", 1 << 20}, {"GB", 1e9}, {"GiB", 1 << 30}, {"TB", 1e12}, {"TiB", 1 << 40}} {
		if n%u.size == 0 {
			if s := strconv.FormatInt(n/u.size, 10) + u.name; len(s) <= len(best) {
				best = s
			}
		}
	}
	return best
}
