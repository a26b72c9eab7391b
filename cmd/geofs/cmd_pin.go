package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/geofs/geofs/internal/admin"
	"github.com/geofs/geofs/internal/bytesize"
)

// withOnlineSite is withSite with the site's links running (see
// useOnlineSite): pinning fetches from peers.
func withOnlineSite(c *cli.Context, fn func(site siteCall) error) error {
	storeDir, inTree, err := pathArg(c)
	if err != nil {
		return err
	}
	return useOnlineSite(c.Context, storeDir, func(site admin.Site) error {
		return fn(siteCall{c: c, site: site, path: inTree})
	})
}

func pinCommand() *cli.Command {
	return &cli.Command{
		Name:      "pin",
		Usage:     "fetch a file or directory tree fully and keep it out of cache eviction",
		ArgsUsage: "PATH",
		Description: "On a site with metadata-only links (a fog node), file data is fetched from peers when read\n" +
			"and kept in a cache bounded by cache.size. A pinned tree is fetched now, stays cached, and\n" +
			"changes that arrive under it later are fetched too. Pinned data counts against cache.size:\n" +
			"a pin that does not fit fails and pins nothing new. Pins survive restarts.\n" +
			"Exit status: 0 pinned, 1 a chunk could not be fetched or does not fit.\n\n" +
			"Examples:\n   geofs pin /mnt/geofs/projects/atlas\n   geofs pin --json --store /var/lib/geofs/fog /projects/atlas",
		Flags:        []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}, storeFlag},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			return withOnlineSite(c, func(sc siteCall) error {
				res, err := sc.site.Pin(c.Context, sc.path)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return json.NewEncoder(os.Stdout).Encode(res)
				}
				fmt.Printf("pinned %s: %d files, %d chunks (%s), %d fetched now\n",
					sc.path, res.Files, res.Chunks, bytesize.Format(res.Bytes), res.Fetched)
				return nil
			})
		},
	}
}

func unpinCommand() *cli.Command {
	return &cli.Command{
		Name:      "unpin",
		Usage:     "release a pin: the tree's cached data may be evicted again",
		ArgsUsage: "PATH",
		Description: "PATH must be a path given to 'geofs pin' (not a file under a pinned directory).\n" +
			"Exit status: 0 released, 1 PATH is not pinned.\n\n" +
			"Examples:\n   geofs unpin /mnt/geofs/projects/atlas\n   geofs unpin --store /var/lib/geofs/fog /projects/atlas",
		Flags:        []cli.Flag{storeFlag},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			return withSite(c, func(sc siteCall) error {
				if err := sc.site.Unpin(c.Context, sc.path); err != nil {
					return err
				}
				fmt.Printf("unpinned %s\n", sc.path)
				return nil
			})
		},
	}
}
