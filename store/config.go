package store

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"gopkg.in/yaml.v3"

	"github.com/geofs/geofs/internal/bytesize"
)

// Files in a store directory besides the database.
const (
	ConfigFile = "config.yaml"
	KeyFile    = "site.key"
)

// Config is a store's config.yaml.
type Config struct {
	Name   string `yaml:"name"`
	Listen string `yaml:"listen,omitempty"`
	// SiteID is derived from site.key and written here for people to read;
	// LoadConfig checks that the two agree.
	SiteID SiteID `yaml:"-"`
	Site   string `yaml:"site"`
	// Cache holds the settings of the site's cache (see CacheSize).
	Cache CacheConfig `yaml:"cache,omitempty"`
	// Fetch holds the settings of fetching content from peers.
	Fetch FetchConfig `yaml:"fetch,omitempty"`
	// Links are the site's links to peer sites (see links.go); LoadConfig
	// normalizes them and refuses a config with a bad one.
	Links []PeerLink `yaml:"links,omitempty"`
}

// CacheConfig is config.yaml's "cache" section. A running site rereads it
// when config.yaml changes.
type CacheConfig struct {
	// Size bounds the cache, in bytes; written like "32MiB". 0 (or no
	// cache section at all) means DefaultCacheSize.
	Size bytesize.Size `yaml:"size,omitempty"`
}

// FetchConfig is config.yaml's "fetch" section. A running site rereads it.
type FetchConfig struct {
	// Timeout bounds a read's wait for content no peer serves (a Go
	// duration, e.g. "5s"); empty means DefaultFetchTimeout.
	Timeout string `yaml:"timeout,omitempty"`
}

// FetchTimeout is the configured fetch timeout, or DefaultFetchTimeout.
func (c *Config) FetchTimeout() time.Duration {
	if d, err := ParseFetchTimeout(c.Fetch.Timeout); err == nil && d > 0 {
		return d
	}
	return DefaultFetchTimeout
}

// ParseFetchTimeout checks a fetch timeout: a Go duration from 100ms to 10m.
func ParseFetchTimeout(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 100*time.Millisecond || d > 10*time.Minute {
		return 0, fmt.Errorf("%q is not a fetch timeout: want a duration from 100ms to 10m, like 5s", v)
	}
	return d, nil
}

// DefaultCacheSize is the cache size of a site whose config sets none.
const DefaultCacheSize = 1 << 30 // 1GiB

// CacheSize is the configured cache size in bytes, or DefaultCacheSize
// when config.yaml sets none.
func (c *Config) CacheSize() int64 {
	if c.Cache.Size > 0 {
		return int64(c.Cache.Size)
	}
	return DefaultCacheSize
}

// CheckListen checks a listen address: HOST:PORT, where HOST may be empty
// (every address, as in ":7300") and PORT is a number from 1 to 65535.
func CheckListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT, like 0.0.0.0:7300, :7300 or [::]:7300", addr)
	}
	if strings.ContainsAny(host, " \t\r\n\x00/") {
		return fmt.Errorf("%q: host %q is not a host name or address", addr, host)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
}

// InitOptions are the settings of a new site.
type InitOptions struct {
	Name      string // default: the host name
	Listen    string // HOST:PORT for links; may be empty
	CacheSize int64  // bytes; 0: DefaultCacheSize (and no cache section is written)
}

// Init creates a site in dir (which must be missing or empty): its key
// pair, config.yaml and database with the root directory.
func Init(dir string, opts InitOptions) (*Config, error) {
	if opts.CacheSize < 0 {
		return nil, fmt.Errorf("init %s: cache size %d is negative", dir, opts.CacheSize)
	}
	empty, err := dirEmpty(dir)
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", dir, err)
	}
	if !empty {
		return nil, fmt.Errorf("init %s: directory is not empty: %w", dir, ErrExists)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	site, err := writeKey(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	cfg := &Config{Name: opts.Name, Listen: opts.Listen, SiteID: site, Site: site.String(),
		Cache: CacheConfig{Size: bytesize.Size(opts.CacheSize)}}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if err := cfg.Save(dir); err != nil {
		return nil, err
	}
	if err := initDB(dir); err != nil {
		return nil, err
	}
	return cfg, nil
}

func writeKey(path string) (SiteID, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SiteID{}, fmt.Errorf("generate site key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return SiteID{}, fmt.Errorf("encode site key: %w", err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		return SiteID{}, fmt.Errorf("write site key: %w", err)
	}
	return SiteIDOf(pub), nil
}

// SiteIDOf derives a site id from a public key.
func SiteIDOf(pub ed25519.PublicKey) SiteID {
	sum := sha256.Sum256(pub)
	var id SiteID
	copy(id[:], sum[:])
	return id
}

// LoadKey reads the site's private key.
func LoadKey(dir string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("read site key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("site key %s: no PEM block: %w", KeyFile, ErrCorrupt)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("site key %s: %w: %w", KeyFile, ErrCorrupt, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("site key %s is not ed25519: %w", KeyFile, ErrCorrupt)
	}
	return priv, nil
}

// LoadConfig reads config.yaml and the site key of the store in dir.
func LoadConfig(dir string) (*Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is not a geofs store or mount (no %s; create a store with 'geofs init %s')", dir, ConfigFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg := &Config{}
	if err := yaml.Unmarshal(b, cfg); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	priv, err := LoadKey(dir)
	if err != nil {
		return nil, err
	}
	cfg.SiteID = SiteIDOf(priv.Public().(ed25519.PublicKey))
	if cfg.Site != cfg.SiteID.String() {
		return nil, fmt.Errorf("%s says site %s but %s belongs to site %s", ConfigFile, cfg.Site, KeyFile, cfg.SiteID)
	}
	if _, err := ParseFetchTimeout(cfg.Fetch.Timeout); err != nil {
		return nil, fmt.Errorf("%s: fetch.timeout: %w", filepath.Join(dir, ConfigFile), err)
	}
	if err := cfg.checkLinks(); err != nil {
		return nil, fmt.Errorf("%s: %w (fix or remove the link in the file)", filepath.Join(dir, ConfigFile), err)
	}
	return cfg, nil
}

// Save writes config.yaml atomically: a reader sees the old file or the
// new one, never a mix, and after a crash one of the two is there. To
// change a config that may be changed concurrently, use EditConfig.
func (c *Config) Save(dir string) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	f, err := os.CreateTemp(dir, ConfigFile+".tmp*")
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, ConfigFile))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write config: %w", err)
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable
		d.Sync()
		d.Close()
	}
	return nil
}

// RootVersion is the first version of the namespace root. It is the same
// at every site (zero stamp, fixed times), so that every site starts from
// the same namespace root hash.
func RootVersion() *Version {
	return &Version{ID: RootID, Kind: KindDir, Mode: 0o755}
}

func initDB(dir string) error {
	db, err := openBadger(filepath.Join(dir, DBDir), discardLogger())
	if err != nil {
		return err
	}
	s := &Store{db: db}
	root := RootVersion()
	h := root.Hash()
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(hashKey(pVersion, h), root.Encode()); err != nil {
			return err
		}
		if err := txn.Set(idKey(pHead, RootID), h[:]); err != nil {
			return err
		}
		xorInto(&s.buckets[RootID[0]], bucketTerm(RootID, h))
		return txn.Set([]byte{pBucket, RootID[0]}, s.buckets[RootID[0]][:])
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("init database: %w", err)
	}
	return db.Close()
}
