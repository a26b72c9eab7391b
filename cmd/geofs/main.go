// Command geofs runs and inspects geofs sites. See docs/CLI.md for the
// command and exit-code contract.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/geofs/geofs/store"
)

// Exit codes (docs/CLI.md).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitDamage  = 3
)

// usageError is a mistake in how the command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitError carries an exit code with a message already printed (or none).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func main() {
	app := newApp()
	err := app.Run(os.Args)
	os.Exit(report(err))
}

func report(err error) int {
	if err == nil {
		return exitOK
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "geofs: "+ee.msg)
		}
		return ee.code
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "geofs: %s\nRun 'geofs --help' for usage.\n", ue.msg)
		return exitUsage
	}
	fmt.Fprintln(os.Stderr, "geofs: "+hint(err))
	return exitFailure
}

// hint adds what to do for the errors people meet most.
func hint(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, store.ErrLocked):
		return msg + " (is it mounted? 'geofs status STORE' talks to a running site; unmount it first to use it directly)"
	}
	return msg
}

func newApp() *cli.App {
	app := &cli.App{
		Name:  "geofs",
		Usage: "a global-namespace filesystem: mount a site, inspect versions, check a store",
		UsageText: "geofs COMMAND [options] ARGS...\n" +
			"   geofs STORE MOUNTPOINT [-o OPTS]   (as run by 'mount -t fuse.geofs STORE MOUNTPOINT')",
		Description: "Examples:\n" +
			"   geofs init --name paris /var/lib/geofs/site\n" +
			"   geofs mount /var/lib/geofs/site /mnt/geofs\n" +
			"   geofs versions /mnt/geofs/report.txt\n" +
			"   umount /mnt/geofs",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"GEOFS_LOG_LEVEL"}},
		},
		Before: func(c *cli.Context) error { return setupLogging(c.String("log-level")) },
		Commands: []*cli.Command{
			initCommand(), idCommand(), mountCommand(), versionsCommand(), catCommand(),
			restoreCommand(), logCommand(), fsckCommand(), statusCommand(), serveCommand(), linkCommand(), configCommand(),
			pinCommand(), unpinCommand(),
		},
		Action:          helperMount,
		OnUsageError:    onUsageError,
		HideHelpCommand: true,
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(os.Stderr, "geofs: unknown command %q\nRun 'geofs --help' for usage.\n", name)
			os.Exit(exitUsage)
		},
	}
	hideHelpCommands(app.Commands)
	return app
}

// hideHelpCommands keeps urfave/cli from giving every command a "help"
// subcommand (alias "h"): 'geofs versions h' must list the versions of a
// file named h, not print help. --help still does.
func hideHelpCommands(cmds []*cli.Command) {
	for _, c := range cmds {
		c.HideHelpCommand = true
		hideHelpCommands(c.Subcommands)
	}
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	return usagef("%v", err)
}

func setupLogging(level string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", level)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})))
	return nil
}

// args checks the number of positional arguments.
func args(c *cli.Context, names ...string) ([]string, error) {
	a := c.Args().Slice()
	if len(a) != len(names) {
		return nil, usagef("%s takes %s (got %d argument(s))", c.Command.Name, strings.Join(names, " "), len(a))
	}
	return a, nil
}
