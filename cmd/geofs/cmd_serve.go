package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/geofs/geofs/fetch"
	"github.com/geofs/geofs/internal/admin"
	"github.com/geofs/geofs/store"
	gsync "github.com/geofs/geofs/sync"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "run a site's links without a mount (a relay or gateway)",
		ArgsUsage: "STORE",
		Description: "Serves the site's links in the foreground until SIGTERM or SIGINT: it listens on the\n" +
			"'listen' address of config.yaml, dials the links that name a remote, and relays changes.\n" +
			"Link changes made with 'geofs link' are picked up while it runs.\n\n" +
			"Examples:\n" +
			"   geofs init --name relay --listen 0.0.0.0:7400 /var/lib/geofs/relay\n" +
			"   geofs link add /var/lib/geofs/relay --name paris --remote paris.example:7400 --peer 3fa2c1d0...\n" +
			"   geofs serve /var/lib/geofs/relay",
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			a, err := args(c, "STORE")
			if err != nil {
				return err
			}
			return runServe(c.Context, a[0])
		},
	}
}

// runServe runs a headless site until a signal.
func runServe(ctx context.Context, storeDir string) error {
	absStore, err := filepath.Abs(storeDir)
	if err != nil {
		return err
	}
	conf, log, s, err := openServing(absStore)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	links, stopLinks, err := startLinks(ctx, absStore, s, log, nil)
	if err != nil {
		s.Close()
		return err
	}
	adm, err := admin.Listen(admin.SocketPath(absStore), &admin.Local{S: s, Name: conf.Name, Links: links.Status}, log)
	if err != nil {
		stopLinks()
		s.Close()
		return err
	}
	log.Info("serving", "store", absStore, "pid", os.Getpid())
	<-ctx.Done()
	log.Info("stopping")
	adm.Close()
	stopLinks()
	return s.Close()
}

// openServing opens the store a long-running process (mount or serve)
// holds, with a logger that names the site.
func openServing(absStore string) (*store.Config, *slog.Logger, *store.Store, error) {
	conf, err := store.LoadConfig(absStore)
	if err != nil {
		return nil, nil, nil, err
	}
	log := slog.Default().With("site", conf.Name)
	s, err := openWhenFree(absStore, log)
	if err != nil {
		return nil, nil, nil, err
	}
	return conf, log, s, nil
}

// startLinks runs the site's links until stop is called (or ctx ends).
// onChange is told about heads moved by peers (the mount's invalidation).
func startLinks(ctx context.Context, absStore string, s *store.Store, log *slog.Logger, onChange func([]store.Change)) (*gsync.Links, func(), error) {
	key, err := store.LoadKey(absStore)
	if err != nil {
		return nil, nil, err
	}
	id, err := gsync.NewIdentity(key)
	if err != nil {
		return nil, nil, err
	}
	links := &gsync.Links{Store: s, Dir: absStore, Identity: id, Log: log, OnChange: onChange}
	// What this site lacks (a fog node's data, a damaged chunk) is fetched
	// from the peers these links reach.
	cfg, err := store.LoadConfig(absStore)
	if err != nil {
		return nil, nil, err
	}
	s.SetRemote(&fetch.Fetcher{Peers: links.FetchPeers, Log: log}, cfg.FetchTimeout())
	ctx, cancel := context.WithCancel(ctx)
	ready := make(chan error, 1)
	done := make(chan error, 1)
	go func() { done <- links.Run(ctx, ready) }()
	if err := <-ready; err != nil {
		cancel()
		<-done
		return nil, nil, fmt.Errorf("links: %w", err)
	}
	return links, func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			log.Error("links", "err", err)
		}
	}, nil
}
