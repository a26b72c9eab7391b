package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/geofs/geofs/store"
)

func linkCommand() *cli.Command {
	return &cli.Command{
		Name:      "link",
		Usage:     "add, list or remove a site's links to other sites",
		ArgsUsage: "add|list|remove ...",
		Description: "A link connects this site to one peer site over QUIC. Both sites need a link naming the other's\n" +
			"site id ('geofs id STORE' prints it); at least one of the two gives --remote, the address to dial.\n" +
			"The commands edit the store's config.yaml, mounted or not; a running site picks up the change.\n\n" +
			"Examples:\n" +
			"   geofs link add /var/lib/geofs/site --name london --remote london.example.com:7300 --peer 3f2a9c1b7d04e5f60718293a4b5c6d7e\n" +
			"   geofs link list /var/lib/geofs/site\n" +
			"   geofs link remove /var/lib/geofs/site london",
		HideHelpCommand: true,
		OnUsageError:    onUsageError,
		Subcommands:     []*cli.Command{linkAddCommand(), linkListCommand(), linkRemoveCommand()},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("unknown link command %q (want add, list or remove)", c.Args().First())
			}
			return cli.ShowSubcommandHelp(c)
		},
	}
}

func linkAddCommand() *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "add a link to a peer site",
		ArgsUsage: "STORE|MOUNTPOINT --name NAME --peer SITE_ID [--remote HOST:PORT] [options]",
		Description: "Adds a link to config.yaml. Without --remote this site does not dial: the peer dials this site's\n" +
			"listen address. Options may come before or after STORE.\n\n" +
			"Examples:\n" +
			"   geofs link add /var/lib/geofs/site --name london --remote london.example.com:7300 --peer 3f2a9c1b7d04e5f60718293a4b5c6d7e\n" +
			"   geofs link add /mnt/geofs --name backup --peer 0c1d2e3f405162738495a6b7c8d9eafb --direction send --rate-limit 10MiB\n" +
			"   geofs link add /var/lib/geofs/site --name fog --remote 10.0.0.7:7300 --peer 9e8d7c6b5a4938271605f4e3d2c1b0a9 \\\n" +
			"       --path /projects --path /shared --metadata-only all --replication continuous --coalesce 200ms",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "the link's name: letters, digits, '.', '_', '-' (at most 64)"},
			&cli.StringFlag{Name: "peer", Usage: "the peer's site id, 32 hex digits ('geofs id STORE' on the peer prints it)"},
			&cli.StringFlag{Name: "remote", Usage: "HOST:PORT to dial (default: none, the peer dials this site)"},
			&cli.StringFlag{Name: "direction", Value: store.DirectionSendReceive, Usage: "send, receive or send+receive: which way changes go"},
			&cli.StringFlag{Name: "replication", Value: store.ReplicationInitialContinuous, Usage: "initial (reconcile on connect), continuous (push changes) or initial+continuous"},
			&cli.StringSliceFlag{Name: "path", Usage: "an absolute path in the tree to serve; repeat for more (default: /)"},
			&cli.StringFlag{Name: "metadata-only", Usage: "all (no file content travels) or versions (old versions as metadata only)"},
			&cli.StringFlag{Name: "rate-limit", Usage: "bytes per second, like 10MB, 10MiB or 1Gi (default: unlimited)"},
			&cli.StringFlag{Name: "coalesce", Value: store.DefaultCoalesce, Usage: "how long pushed changes gather before sending, 0 to 10s"},
		},
		OnUsageError: onUsageError,
		Action:       linkAdd,
	}
}

func linkAdd(c *cli.Context) error {
	a, err := argsAnywhere(c, "STORE|MOUNTPOINT")
	if err != nil || a == nil {
		return err
	}
	if c.String("name") == "" {
		return usagef("link add needs --name NAME")
	}
	if c.String("peer") == "" {
		return usagef("link add needs --peer SITE_ID (the peer's site id; 'geofs id STORE' on the peer prints it)")
	}
	var rate int64
	if s := c.String("rate-limit"); s != "" {
		if rate, err = store.ParseByteSize(s); err != nil {
			return usagef("--rate-limit: %v", err)
		}
	}
	l := store.PeerLink{
		Name:         c.String("name"),
		Remote:       c.String("remote"),
		Peer:         c.String("peer"),
		Direction:    c.String("direction"),
		Replication:  c.String("replication"),
		Paths:        c.StringSlice("path"),
		MetadataOnly: c.String("metadata-only"),
		RateLimit:    rate,
		Coalesce:     c.String("coalesce"),
	}
	if err := l.Validate(); err != nil {
		return linkUsage(err)
	}
	storeDir, err := siteFor(a[0])
	if err != nil {
		return err
	}
	var cfg *store.Config
	err = store.EditConfig(storeDir, func(cf *store.Config) error {
		if err := cf.AddLink(l); err != nil {
			return linkUsage(err)
		}
		cfg = cf
		return nil
	})
	if err != nil {
		return err
	}
	added, _ := cfg.Link(l.Name)
	fmt.Printf("added link %q to peer site %s (%s; %s, %s, %s); the peer must add a link back naming this site: geofs link add PEER_STORE --name NAME --peer %s%s\n",
		added.Name, added.Peer, dialing(added), added.Direction, added.Replication, strings.Join(added.Paths, ","),
		cfg.SiteID, backFlags(added, cfg.Listen))
	if added.Remote == "" && cfg.Listen == "" {
		fmt.Fprintf(os.Stderr, "geofs: warning: this site has no listen address (config.yaml 'listen'), so the peer cannot dial it; give --remote, or set listen\n")
	}
	return nil
}

func dialing(l *store.PeerLink) string {
	if l.Remote == "" {
		return "the peer dials this site"
	}
	return "dialing " + l.Remote
}

// backFlags are the options of the peer's link back that follow from this
// one: where to dial this site, and the mirrored direction.
func backFlags(l *store.PeerLink, listen string) string {
	var b strings.Builder
	if l.Remote == "" && listen != "" {
		host, port, err := net.SplitHostPort(listen)
		if err == nil && (host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified()) {
			listen = net.JoinHostPort("THIS_HOST", port)
		}
		b.WriteString(" --remote " + listen)
	}
	switch l.Direction {
	case store.DirectionSend:
		b.WriteString(" --direction receive")
	case store.DirectionReceive:
		b.WriteString(" --direction send")
	}
	return b.String()
}

// linkUsage turns a *store.LinkError into a usage error naming the flag.
func linkUsage(err error) error {
	var le *store.LinkError
	if !errors.As(err, &le) {
		return err
	}
	flag := map[string]string{"paths": "path", "metadata_only": "metadata-only", "rate_limit": "rate-limit"}[le.Field]
	if flag == "" {
		flag = le.Field
	}
	if le.Value == "" {
		return usagef("--%s: %s", flag, le.Msg)
	}
	return usagef("--%s %q: %s", flag, le.Value, le.Msg)
}

func linkListCommand() *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "list a site's links",
		ArgsUsage: "STORE|MOUNTPOINT",
		Description: "One line per link: NAME PEER REMOTE DIRECTION REPLICATION PATHS METADATA-ONLY RATE.\n\n" +
			"Examples:\n   geofs link list /var/lib/geofs/site\n   geofs link list --json /mnt/geofs",
		Flags:        []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print a JSON array"}},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			a, err := argsAnywhere(c, "STORE|MOUNTPOINT")
			if err != nil || a == nil {
				return err
			}
			storeDir, err := siteFor(a[0])
			if err != nil {
				return err
			}
			cfg, err := store.LoadConfig(storeDir)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				out := cfg.Links
				if out == nil {
					out = []store.PeerLink{}
				}
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			if len(cfg.Links) == 0 {
				fmt.Printf("no links (add one with 'geofs link add %s --name NAME --peer SITE_ID ...')\n", a[0])
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPEER\tREMOTE\tDIRECTION\tREPLICATION\tPATHS\tMETADATA-ONLY\tRATE")
			for _, l := range cfg.Links {
				remote, meta, rate := l.Remote, l.MetadataOnly, "unlimited"
				if remote == "" {
					remote = "(peer dials)"
				}
				if meta == "" {
					meta = "-"
				}
				if l.RateLimit > 0 {
					rate = store.FormatByteSize(l.RateLimit) + "/s"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Name, l.Peer, remote, l.Direction, l.Replication,
					strings.Join(l.Paths, ","), meta, rate)
			}
			return tw.Flush()
		},
	}
}

func linkRemoveCommand() *cli.Command {
	return &cli.Command{
		Name:      "remove",
		Usage:     "remove a link",
		ArgsUsage: "STORE|MOUNTPOINT NAME",
		Description: "Removes the link NAME from config.yaml; a running site drops the connection. Removing a link\n" +
			"that does not exist fails with exit status 1.\n\n" +
			"Example:\n   geofs link remove /var/lib/geofs/site london",
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			a, err := argsAnywhere(c, "STORE|MOUNTPOINT", "NAME")
			if err != nil || a == nil {
				return err
			}
			storeDir, err := siteFor(a[0])
			if err != nil {
				return err
			}
			var removed store.PeerLink
			err = store.EditConfig(storeDir, func(cf *store.Config) error {
				if l, ok := cf.Link(a[1]); ok {
					removed = *l
				}
				return cf.RemoveLink(a[1])
			})
			if err != nil {
				return err
			}
			fmt.Printf("removed link %q to site %s\n", removed.Name, removed.Peer)
			return nil
		},
	}
}

// argsAnywhere is args for a command whose flags may also follow its
// arguments ('geofs link add STORE --name x'): urfave/cli stops at the
// first argument, so the flags among the rest are set here. It returns nil
// and no error when it printed help (-h or --help among them).
func argsAnywhere(c *cli.Context, names ...string) ([]string, error) {
	var pos []string
	in := c.Args().Slice()
	for i := 0; i < len(in); i++ {
		arg := in[i]
		if arg == "--" {
			pos = append(pos, in[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			pos = append(pos, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-"), "=")
		if name == "h" || name == "help" {
			cli.HelpPrinter(c.App.Writer, cli.CommandHelpTemplate, c.Command)
			return nil, nil
		}
		idx := slices.IndexFunc(c.Command.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), name) })
		if idx < 0 {
			return nil, usagef("flag provided but not defined: -%s", name)
		}
		if _, isBool := c.Command.Flags[idx].(*cli.BoolFlag); isBool {
			if !hasValue {
				value = "true"
			}
		} else if !hasValue {
			if i+1 >= len(in) {
				return nil, usagef("flag needs an argument: -%s", name)
			}
			i++
			value = in[i]
		}
		if err := c.Set(name, value); err != nil {
			return nil, usagef("invalid value %q for flag -%s: %v", value, name, err)
		}
	}
	if len(pos) != len(names) {
		return nil, usagef("%s takes %s (got %d argument(s))", strings.TrimPrefix(c.Command.HelpName, c.App.Name+" "), strings.Join(names, " "), len(pos))
	}
	return pos, nil
}
