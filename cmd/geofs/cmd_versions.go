package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/geofs/geofs/internal/admin"
)

var storeFlag = &cli.StringFlag{Name: "store", Usage: "use this STORE, with PATH a path in its tree (e.g. /docs/a.txt)"}

// withSite locates PATH, opens its site and runs fn.
func withSite(c *cli.Context, fn func(site siteCall) error) error {
	storeDir, inTree, err := pathArg(c)
	if err != nil {
		return err
	}
	return useSite(storeDir, func(site admin.Site) error {
		return fn(siteCall{c: c, site: site, path: inTree})
	})
}

// pathArg locates the command's PATH argument: its store and its path in
// the store's tree.
func pathArg(c *cli.Context) (storeDir, inTree string, err error) {
	a, err := args(c, "PATH")
	if err != nil {
		return "", "", err
	}
	return locate(a[0], c.String("store"))
}

func versionsCommand() *cli.Command {
	return &cli.Command{
		Name:      "versions",
		Usage:     "list a file's versions, newest first",
		ArgsUsage: "PATH",
		Description: "Columns: version id, commit time, site, size. Use a version id (or its first digits) with\n" +
			"'geofs cat --version' and 'geofs restore --version'.\n\n" +
			"Examples:\n   geofs versions /mnt/geofs/report.txt\n   geofs versions --json --store /var/lib/geofs/site /report.txt",
		Flags:        []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}, storeFlag},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			return withSite(c, func(sc siteCall) error {
				vs, err := sc.site.Versions(c.Context, sc.path)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					return json.NewEncoder(os.Stdout).Encode(vs)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "VERSION\tTIME\tSITE\tSIZE\t")
				for _, v := range vs {
					var notes []string
					if v.Deleted {
						notes = append(notes, "deleted")
					}
					if len(v.Merged) > 0 {
						short := make([]string, len(v.Merged))
						for i, m := range v.Merged {
							short[i] = m[:12]
						}
						notes = append(notes, "merge with "+strings.Join(short, ", "))
					}
					note := strings.Join(notes, "; ")
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", v.Version[:12], v.Time.Local().Format(time.RFC3339Nano), v.Site[:12], v.Size, note)
				}
				return tw.Flush()
			})
		},
	}
}

func catCommand() *cli.Command {
	return &cli.Command{
		Name:      "cat",
		Usage:     "print a file's content, or one of its old versions",
		ArgsUsage: "PATH",
		Description: "Examples:\n   geofs cat --version 3f2a9c1b7d04 /mnt/geofs/report.txt > old.txt\n" +
			"   geofs cat --store /var/lib/geofs/site /report.txt",
		Flags:        []cli.Flag{&cli.StringFlag{Name: "version", Usage: "version id (at least 4 leading hex digits)"}, storeFlag},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			return withSite(c, func(sc siteCall) error {
				return sc.site.Cat(c.Context, sc.path, c.String("version"), os.Stdout)
			})
		},
	}
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "make an old version of a file current again (as a new version)",
		ArgsUsage: "PATH",
		Description: "Nothing is lost: the version being replaced stays in the history.\n\n" +
			"Example:\n   geofs restore --version 3f2a9c1b7d04 /mnt/geofs/report.txt",
		Flags:        []cli.Flag{&cli.StringFlag{Name: "version", Usage: "version id to restore (required)"}, storeFlag},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.String("version") == "" {
				return usagef("restore needs --version ID (see 'geofs versions PATH')")
			}
			return withSite(c, func(sc siteCall) error {
				v, err := sc.site.Restore(c.Context, sc.path, c.String("version"))
				if err != nil {
					return err
				}
				fmt.Printf("restored %s as new version %s\n", sc.path, v.Version[:12])
				return nil
			})
		},
	}
}
