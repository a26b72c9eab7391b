package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/geofs/geofs/internal/bytesize"
	"github.com/geofs/geofs/store"
)

// setting is one config.yaml setting that 'geofs config' reads and sets.
type setting struct {
	key  string
	get  func(*store.Config) string        // the value as 'geofs config STORE KEY' prints it
	json func(*store.Config) any           // the value in --json
	set  func(*store.Config, string) error // checks value and sets it; errors are usage errors
	live bool                              // a running site picks up a new value (else at its next start)
}

// settings are the settable settings, in the order they are listed.
var settings = []setting{
	{
		key:  "cache.size",
		get:  func(c *store.Config) string { return bytesize.Format(c.CacheSize()) },
		json: func(c *store.Config) any { return c.CacheSize() },
		set: func(c *store.Config, v string) error {
			n, err := parseCacheSize(v)
			if err != nil {
				return err
			}
			c.Cache.Size = bytesize.Size(n)
			return nil
		},
		live: true,
	},
	{
		key:  "fetch.timeout",
		get:  func(c *store.Config) string { return c.FetchTimeout().String() },
		json: func(c *store.Config) any { return c.FetchTimeout().String() },
		set: func(c *store.Config, v string) error {
			if _, err := store.ParseFetchTimeout(v); err != nil || v == "" {
				return fmt.Errorf("fetch.timeout: %q: want a duration from 100ms to 10m, like 5s", v)
			}
			c.Fetch.Timeout = v
			return nil
		},
		live: true,
	},
	{
		key:  "listen",
		get:  func(c *store.Config) string { return c.Listen },
		json: func(c *store.Config) any { return c.Listen },
		set: func(c *store.Config, v string) error {
			if v != "" { // "" clears it: the site does not listen
				if err := store.CheckListen(v); err != nil {
					return err
				}
			}
			c.Listen = v
			return nil
		},
	},
	{
		key:  "name",
		get:  func(c *store.Config) string { return c.Name },
		json: func(c *store.Config) any { return c.Name },
		set: func(c *store.Config, v string) error {
			if strings.TrimSpace(v) == "" {
				return fmt.Errorf("%q: the name cannot be empty", v)
			}
			if strings.IndexFunc(v, unicode.IsControl) >= 0 {
				return fmt.Errorf("%q: the name cannot contain control characters", v)
			}
			c.Name = v
			return nil
		},
	},
}

func settingKeys() string {
	keys := make([]string, len(settings))
	for i, s := range settings {
		keys[i] = s.key
	}
	return strings.Join(keys, ", ")
}

func findSetting(key string) (*setting, error) {
	for i := range settings {
		if settings[i].key == key {
			return &settings[i], nil
		}
	}
	return nil, usagef("unknown setting %q (the settings are %s)", key, settingKeys())
}

func configCommand() *cli.Command {
	return &cli.Command{
		Name:      "config",
		Usage:     "print or change a site's settings (cache.size, fetch.timeout, listen, name)",
		ArgsUsage: "STORE|MOUNTPOINT [KEY [VALUE]]",
		Description: "Without KEY, prints every setting and its value; with KEY, prints that value; with KEY VALUE,\n" +
			"sets it in the store's config.yaml, mounted or not (under the same lock as 'geofs link').\n\n" +
			"Settings:\n" +
			"   cache.size  the site's cache size: bytes, or a size like 32MiB, 1GiB, 1.5G (K, M, G, T alone\n" +
			"               are powers of 1024, like KiB...TiB; KB, MB, GB, TB are powers of 1000). Default 1GiB.\n" +
			"               A running site picks up a new size within a second.\n" +
			"   fetch.timeout  how long a read waits for content no peer serves before it fails with EIO\n" +
			"               (a duration from 100ms to 10m, like 5s). Default 5s. Picked up within a second.\n" +
			"   listen      HOST:PORT where links from other sites arrive (\"\" for none). Used from the next start.\n" +
			"   name        a name for people. Used from the next start.\n\n" +
			"Examples:\n" +
			"   geofs config /var/lib/geofs/site\n" +
			"   geofs config --json /var/lib/geofs/site\n" +
			"   geofs config /var/lib/geofs/site cache.size\n" +
			"   geofs config /var/lib/geofs/site cache.size 32MiB\n" +
			"   geofs config /mnt/geofs listen 0.0.0.0:7300",
		Flags:        []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print a JSON object (cache.size in bytes)"}},
		OnUsageError: onUsageError,
		Action:       configAction,
	}
}

func configAction(c *cli.Context) error {
	a, err := configArgs(c)
	if err != nil || a == nil {
		return err
	}
	var set *setting
	if len(a) > 1 {
		if set, err = findSetting(a[1]); err != nil {
			return err
		}
	}
	storeDir, err := siteFor(a[0])
	if err != nil {
		return err
	}
	if len(a) == 3 {
		if c.Bool("json") {
			return usagef("config --json prints settings; leave it out to set %s", a[1])
		}
		return configSet(storeDir, set, a[2])
	}
	cfg, err := store.LoadConfig(storeDir)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		out := map[string]any{}
		for _, s := range settings {
			if set == nil || s.key == set.key {
				out[s.key] = s.json(cfg)
			}
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if set != nil {
		fmt.Println(set.get(cfg))
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
	for _, s := range settings {
		v := s.get(cfg)
		switch {
		case s.key == "cache.size" && cfg.Cache.Size == 0, s.key == "fetch.timeout" && cfg.Fetch.Timeout == "":
			v += " (default)"
		case v == "":
			v = "(none)"
		}
		fmt.Fprintf(tw, "%s\t%s\n", s.key, v)
	}
	return tw.Flush()
}

// configSet sets one setting under EditConfig's lock and says what changed.
func configSet(storeDir string, s *setting, value string) error {
	var old, now string
	err := store.EditConfig(storeDir, func(cfg *store.Config) error {
		old = s.get(cfg)
		if err := s.set(cfg, value); err != nil {
			return usagef("%s: %v", s.key, err)
		}
		now = s.get(cfg)
		return nil
	})
	if err != nil {
		return err
	}
	if old == "" {
		old = "none"
	}
	if now == "" {
		now = `"" (none)`
	}
	when := "a running site picks it up within a second"
	if !s.live {
		when = "a running site uses it from its next start"
	}
	if old == now {
		fmt.Printf("%s: %s (unchanged)\n", s.key, now)
		return nil
	}
	fmt.Printf("%s: %s (was %s); %s\n", s.key, now, old, when)
	return nil
}

// configArgs returns STORE and the optional KEY and VALUE. --json may come
// anywhere (urfave/cli stops reading flags at STORE), and a VALUE such as
// "-1" is a value, so that its error names the setting. It returns nil and
// no error when it printed help.
func configArgs(c *cli.Context) ([]string, error) {
	var pos []string
	in := c.Args().Slice()
	for i, arg := range in {
		if arg == "--" {
			pos = append(pos, in[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" || len(arg) > 1 && (arg[1] >= '0' && arg[1] <= '9' || arg[1] == '.') {
			pos = append(pos, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		switch {
		case name == "h" || name == "help":
			cli.HelpPrinter(c.App.Writer, cli.CommandHelpTemplate, c.Command)
			return nil, nil
		case name == "json":
			if !hasValue {
				value = "true"
			}
			if err := c.Set("json", value); err != nil {
				return nil, usagef("invalid value %q for flag -json: %v", value, err)
			}
		default:
			return nil, usagef("flag provided but not defined: -%s", name)
		}
	}
	if len(pos) < 1 || len(pos) > 3 {
		return nil, usagef("config takes STORE|MOUNTPOINT [KEY [VALUE]] (got %d argument(s))", len(pos))
	}
	return pos, nil
}
