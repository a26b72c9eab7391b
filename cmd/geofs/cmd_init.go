package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/geofs/geofs/store"
)

func initCommand() *cli.Command {
	return &cli.Command{
		Name:      "init",
		Usage:     "create a site: its key pair, config.yaml and database",
		ArgsUsage: "STORE",
		Description: "Creates the directory STORE (it must be missing or empty) and prints the new site id.\n\n" +
			"Example:\n   geofs init --name paris --listen 0.0.0.0:7300 /var/lib/geofs/site",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "a name for people (default: the host name)"},
			&cli.StringFlag{Name: "listen", Usage: "HOST:PORT where links from other sites arrive"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			a, err := args(c, "STORE")
			if err != nil {
				return err
			}
			cfg, err := store.Init(a[0], store.InitOptions{Name: c.String("name"), Listen: c.String("listen")})
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
