package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/geofs/geofs/internal/bytesize"
	"github.com/geofs/geofs/store"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:      "init",
		Usage:     "create a site: its key pair, config.yaml and database",
		ArgsUsage: "STORE",
		Description: "Creates the directory STORE (it must be missing or empty) and prints the new site id.\n\n" +
			"Examples:\n" +
			"   geofs init --name paris --listen 0.0.0.0:7300 /var/lib/geofs/site\n" +
			"   geofs init --name fog1 --cache-size 32MiB /var/lib/geofs/fog1\n\n" +
			"The cache size can be changed later with 'geofs config STORE cache.size SIZE'.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "a name for people (default: the host name)"},
			&cli.StringFlag{Name: "listen", Usage: "HOST:PORT where links from other sites arrive"},
			&cli.StringFlag{Name: "cache-size", Usage: "the site's cache size, like 32MiB, 1GiB or 1.5G (default: 1GiB)"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			a, err := args(c, "STORE")
			if err != nil {
				return err
			}
			if l := c.String("listen"); l != "" {
				if err := store.CheckListen(l); err != nil {
					return usagef("--listen: %v", err)
				}
			}
			var cacheSize int64
			if c.IsSet("cache-size") {
				if cacheSize, err = parseCacheSize(c.String("cache-size")); err != nil {
					return usagef("--cache-size: %v", err)
				}
			}
			cfg, err := store.Init(a[0], store.InitOptions{Name: c.String("name"), Listen: c.String("listen"), CacheSize: cacheSize})
			if err != nil {
				return err
			}
			fmt.Println(cfg.SiteID)
			return nil
		},
	}
}

func idCommand() *cli.Command {
	return &cli.Command{
		Name:         "id",
		Usage:        "print a site's id",
		ArgsUsage:    "STORE",
		Description:  "Example:\n   geofs id /var/lib/geofs/site",
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			a, err := args(c, "STORE")
			if err != nil {
				return err
			}
			cfg, err := store.LoadConfig(a[0])
			if err != nil {
				return err
			}
			fmt.Println(cfg.SiteID)
			return nil
		},
	}
}

// parseCacheSize reads a cache size for init --cache-size and
// 'geofs config STORE cache.size': a size bytesize.Parse reads, above 0.
func parseCacheSize(s string) (int64, error) {
	n, err := bytesize.Parse(s)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("%q: the cache size must be more than 0 (the default is %s)", s, bytesize.Format(store.DefaultCacheSize))
	}
	return n, nil
}
