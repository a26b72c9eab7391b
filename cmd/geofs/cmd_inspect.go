package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/geofs/geofs/internal/admin"
	"github.com/geofs/geofs/internal/bytesize"
)

// siteCall is a located site and a path in its tree.
type siteCall struct {
	c    *cli.Context
	site admin.Site
	path string
}

func logCommand() *cli.Command {
	return &cli.Command{
		Name:      "log",
		Usage:     "print a site's transaction log",
		ArgsUsage: "STORE|MOUNTPOINT",
		Description: "One line per committed version: sequence number, time, site, operation, file id, version.\n\n" +
			"Examples:\n   geofs log /var/lib/geofs/site\n   geofs log --json --from 100 /mnt/geofs",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object per line"},
			&cli.Uint64Flag{Name: "from", Usage: "start at this sequence number"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			return withStore(c, func(site admin.Site) error {
				enc := json.NewEncoder(os.Stdout)
				tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
				if !c.Bool("json") {
					fmt.Fprintln(tw, "SEQ\tTIME\tSITE\tOP\tFILE\tVERSION")
				}
				err := site.Log(c.Context, c.Uint64("from"), func(e admin.LogEntry) error {
					if c.Bool("json") {
						return enc.Encode(e)
					}
					_, err := fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Local().Format(time.RFC3339Nano), e.Site[:12], e.Op, e.File, e.Version[:12])
					return err
				})
				tw.Flush()
				return err
			})
		},
	}
}

func fsckCommand() *cli.Command {
	return &cli.Command{
		Name:      "fsck",
		Usage:     "check every record and chunk of a store against its hash",
		ArgsUsage: "STORE|MOUNTPOINT",
		Description: "Names the paths affected by any damage. Exit status: 0 clean (or every problem repaired),\n" +
			"3 damage found, 1 could not check. Works on a mounted store too (through the running process).\n" +
			"With --repair, each damaged or lost chunk or manifest node is replaced with a copy fetched from\n" +
			"the site's peers (a site that is not running connects its links for the time of the check).\n" +
			"On a site with metadata-only links, content that is fetched on read is counted, not reported.\n\n" +
			"Examples:\n   geofs fsck /var/lib/geofs/site\n   geofs fsck --repair /mnt/geofs",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print a JSON report"},
			&cli.BoolFlag{Name: "repair", Usage: "fetch good copies of damaged or lost content from peers"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			use := withStore
			if c.Bool("repair") {
				use = withOnlineStore
			}
			return use(c, func(site admin.Site) error {
				rep, err := site.Fsck(c.Context, c.Bool("repair"))
				if err != nil {
					return err
				}
				if c.Bool("json") {
					json.NewEncoder(os.Stdout).Encode(rep)
				} else {
					for _, p := range rep.Repaired {
						fmt.Println(p)
					}
					for _, p := range rep.Problems {
						fmt.Println(p)
					}
					st := rep.Stats
					fmt.Printf("checked %d files, %d versions, %d manifest nodes, %d chunks (%d bytes), %d directory entries\n",
						st.Files, st.Versions, st.Nodes, st.Chunks, st.ChunkBytes, st.Entries)
					if st.Remote > 0 {
						fmt.Printf("%d chunks or manifest nodes are held by peers (metadata-only links): fetched when read\n", st.Remote)
					}
					if st.Repaired > 0 {
						fmt.Printf("repaired %d from peers\n", st.Repaired)
					}
				}
				if len(rep.Problems) > 0 {
					return exitError{exitDamage, fmt.Sprintf("%d problem(s) found", len(rep.Problems))}
				}
				if !c.Bool("json") {
					fmt.Println("clean")
				}
				return nil
			})
		},
	}
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:         "status",
		Usage:        "show a site's identity, namespace root and log position",
		ArgsUsage:    "STORE|MOUNTPOINT",
		Description:  "Examples:\n   geofs status /mnt/geofs\n   geofs status --json /var/lib/geofs/site",
		Flags:        []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			return withStore(c, func(site admin.Site) error {
				st, err := site.Status(c.Context)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return json.NewEncoder(os.Stdout).Encode(st)
				}
				mp := st.Mountpoint
				if mp == "" {
					mp = "(not mounted)"
				}
				fmt.Printf("site:           %s (%s)\nstore:          %s\nmountpoint:     %s\nnamespace root: %s\nlast txlog seq: %d\ndatabase:       %d bytes LSM, %d bytes value log\n",
					st.Site, st.Name, st.Store, mp, st.NamespaceRoot, st.LastSeq, st.LSMBytes, st.VlogBytes)
				for _, l := range st.Links {
					state := "disconnected"
					if l.Connected {
						state = "connected"
					}
					fmt.Printf("link %s: peer %s, %s, %s, lag %.3fs, pending %d entries (%d bytes), sent %d bytes / %d chunks, received %d bytes / %d chunks, %d chunks deduped",
						l.Name, l.Peer, l.Direction, state, l.LagSeconds, l.PendingEntries, l.PendingBytes, l.BytesSent, l.ChunksSent, l.BytesReceived, l.ChunksReceived, l.ChunksDeduped)
					if l.MetadataOnly != "" {
						fmt.Printf(", metadata only (%s)", l.MetadataOnly)
					}
					if l.ChunksFetched+l.FetchesServed > 0 {
						fmt.Printf(", fetched %d chunks (%d bytes), served %d fetches", l.ChunksFetched, l.BytesFetched, l.FetchesServed)
					}
					if l.LastError != "" {
						fmt.Printf(", last error: %s", l.LastError)
					}
					fmt.Println()
				}
				c := st.Cache
				fmt.Printf("cache:          %s of %s in %d chunks (%s pinned), hit ratio %.2f (%d hits, %d misses), %d evictions\n",
					bytesize.Format(c.Size), bytesize.Format(c.Limit), c.Chunks, bytesize.Format(c.PinnedBytes), c.HitRatio, c.Hits, c.Misses, c.Evictions)
				if c.Fetches+c.Failures > 0 {
					fmt.Printf("fetches:        %d (%s), %d failed, %d repaired, latency p50 %.1f ms, p99 %.1f ms\n",
						c.Fetches, bytesize.Format(int64(c.Bytes)), c.Failures, c.Repaired, c.FetchLatencyP50Ms, c.FetchLatencyP99Ms)
				}
				return nil
			})
		},
	}
}

// withStore opens the site named by a STORE or MOUNTPOINT argument.
func withStore(c *cli.Context, fn func(admin.Site) error) error {
	storeDir, err := storeArg(c)
	if err != nil {
		return err
	}
	return useSite(storeDir, fn)
}

// withOnlineStore is withStore for commands that fetch from peers: a site
// that is not running gets its links connected for the command's time.
func withOnlineStore(c *cli.Context, fn func(admin.Site) error) error {
	storeDir, err := storeArg(c)
	if err != nil {
		return err
	}
	return useOnlineSite(c.Context, storeDir, fn)
}

// storeArg resolves the command's STORE or MOUNTPOINT argument.
func storeArg(c *cli.Context) (string, error) {
	a, err := args(c, "STORE|MOUNTPOINT")
	if err != nil {
		return "", err
	}
	return siteFor(a[0])
}

// useOnlineSite opens the site in storeDir for fn, with its links running.
func useOnlineSite(ctx context.Context, storeDir string, fn func(admin.Site) error) error {
	return useSite(storeDir, func(site admin.Site) error {
		local, ok := site.(*admin.Local)
		if !ok {
			return fn(site) // the running site has its links
		}
		absStore, err := filepath.Abs(storeDir)
		if err != nil {
			return err
		}
		_, stop, err := startLinks(ctx, absStore, local.S, slog.Default(), nil)
		if err != nil {
			return err
		}
		defer stop()
		return fn(site)
	})
}

// useSite opens the site in storeDir for fn.
func useSite(storeDir string, fn func(admin.Site) error) error {
	site, closeSite, err := openSite(storeDir)
	if err != nil {
		return err
	}
	defer closeSite()
	return fn(site)
}
