package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/geofs/geofs/fs"
	"github.com/geofs/geofs/internal/admin"
	"github.com/geofs/geofs/store"
)

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount a site's tree",
		ArgsUsage: "STORE MOUNTPOINT",
		Description: "Without -f, returns once the mount is ready and keeps serving in the background\n" +
			"(logging to STORE/geofs.log). 'umount MOUNTPOINT' flushes, syncs and ends it.\n\n" +
			"Options (-o, comma-separated): allow_other (default when root), ro, nosuid, nodev, noexec;\n" +
			"generic fstab options (defaults, rw, _netdev, nofail, noauto, ...) are accepted and ignored.\n\n" +
			"Examples:\n   geofs mount /var/lib/geofs/site /mnt/geofs\n" +
			"   geofs mount -f -o ro /var/lib/geofs/site /mnt/geofs\n" +
			"   mount -t fuse.geofs /var/lib/geofs/site /mnt/geofs\n" +
			"   fstab: /var/lib/geofs/site /mnt/geofs fuse.geofs defaults,_netdev 0 0",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay in the foreground, logging to stderr"},
			&cli.StringSliceFlag{Name: "o", Usage: "mount options, e.g. -o ro,allow_other"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			a, err := args(c, "STORE", "MOUNTPOINT")
			if err != nil {
				return err
			}
			opts := strings.Join(c.StringSlice("o"), ",")
			if c.Bool("foreground") {
				return runMount(c.Context, a[0], a[1], opts)
			}
			return daemonize(a[0], a[1], opts, c.String("log-level"))
		},
	}
}

// helperMount is the form fuse3's mount helper runs:
// geofs STORE MOUNTPOINT [-o OPTS].
func helperMount(c *cli.Context) error {
	a := c.Args().Slice()
	if len(a) == 0 {
		return cli.ShowAppHelp(c)
	}
	var pos, opts []string
	for i := 0; i < len(a); i++ {
		switch {
		case a[i] == "-o" && i+1 < len(a):
			opts = append(opts, a[i+1])
			i++
		case strings.HasPrefix(a[i], "-o"):
			opts = append(opts, a[i][2:])
		case strings.HasPrefix(a[i], "-"):
			return usagef("unknown option %q", a[i])
		default:
			pos = append(pos, a[i])
		}
	}
	if len(pos) != 2 {
		return usagef("unknown command %q", a[0])
	}
	return daemonize(pos[0], pos[1], strings.Join(opts, ","), c.String("log-level"))
}

// mountConfig is what -o asks for.
type mountConfig struct {
	allowOther bool
	readOnly   bool
	extra      []string // passed to the kernel
}

var ignoredOptions = map[string]bool{"defaults": true, "rw": true, "auto": true, "noauto": true,
	"user": true, "users": true, "nouser": true, "_netdev": true, "nofail": true, "async": true,
	"atime": true, "noatime": true, "relatime": true, "nodiratime": true, "default_permissions": true}

func parseMountOptions(opts string) (mountConfig, error) {
	cfg := mountConfig{allowOther: os.Geteuid() == 0}
	for _, o := range strings.Split(opts, ",") {
		switch {
		case o == "" || ignoredOptions[o] || strings.HasPrefix(o, "x-") || strings.HasPrefix(o, "comment="):
		case o == "allow_other":
			cfg.allowOther = true
		case o == "ro":
			cfg.readOnly = true
		case o == "nosuid", o == "suid", o == "nodev", o == "dev", o == "noexec", o == "exec":
			cfg.extra = append(cfg.extra, o)
		default:
			return cfg, usagef("unknown mount option %q (see 'geofs mount --help')", o)
		}
	}
	return cfg, nil
}

// readyFD is the pipe on which a daemonized mount reports "ok" or an error.
const readyEnv = "GEOFS_READY_FD"

// daemonize starts 'geofs mount -f' in the background and waits until it
// reports the mount ready (or fails), like sshfs.
func daemonize(storeDir, mnt, opts, logLevel string) error {
	if _, err := parseMountOptions(opts); err != nil {
		return err
	}
	if _, err := store.LoadConfig(storeDir); err != nil {
		return err
	}
	logPath := filepath.Join(storeDir, "geofs.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	argv := []string{"--log-level", logLevel, "mount", "-f"}
	if opts != "" {
		argv = append(argv, "-o", opts)
	}
	cmd := exec.Command("/proc/self/exe", append(argv, storeDir, mnt)...)
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start mount process: %w", err)
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	if string(msg) == "ok" {
		return cmd.Process.Release()
	}
	cmd.Wait()
	if len(msg) == 0 {
		msg = []byte("the mount process died before the mount was ready; see " + logPath)
	}
	return exitError{exitFailure, string(msg)}
}

// signalReady tells a waiting parent (see daemonize) how the mount went.
func signalReady(err error) {
	if os.Getenv(readyEnv) == "" {
		return
	}
	f := os.NewFile(3, "ready")
	if err == nil {
		f.WriteString("ok")
	} else {
		f.WriteString(hint(err))
	}
	f.Close()
	os.Unsetenv(readyEnv)
}

// runMount serves storeDir at mnt until it is unmounted.
func runMount(ctx context.Context, storeDir, mnt, opts string) (err error) {
	defer func() { signalReady(err) }()
	cfg, err := parseMountOptions(opts)
	if err != nil {
		return err
	}
	absStore, err := filepath.Abs(storeDir)
	if err != nil {
		return err
	}
	if mnt, err = filepath.Abs(mnt); err != nil {
		return err
	}
	if st, err := os.Stat(mnt); err != nil || !st.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory (create it with 'mkdir -p %s')", mnt, mnt)
	}
	conf, log, s, err := openServing(absStore)
	if err != nil {
		return err
	}
	fsys := fs.New(s, fs.Options{Log: log})
	server, err := mountFS(fsys, absStore, mnt, cfg, log)
	if err != nil {
		fsys.Close()
		s.Close()
		return err
	}
	links, stopLinks, err := startLinks(ctx, absStore, s, log, fsys.Applied)
	if err != nil {
		server.Unmount()
		fsys.Close()
		s.Close()
		return err
	}
	adm, err := admin.Listen(admin.SocketPath(absStore), &admin.Local{S: s, Name: conf.Name, Mountpoint: mnt, Changed: fsys.Changed, Links: links.Status}, log)
	if err != nil {
		stopLinks()
		server.Unmount()
		fsys.Close()
		s.Close()
		return err
	}
	if path := os.Getenv("GEOFS_CPUPROFILE"); path != "" {
		stop, err := startCPUProfile(path)
		if err != nil {
			log.Error("cpu profile", "err", err)
		} else {
			defer stop()
		}
	}
	log.Info("mounted", "store", absStore, "mountpoint", mnt, "pid", os.Getpid(), "gomaxprocs", runtime.GOMAXPROCS(0))
	signalReady(nil)
	detached := make(chan struct{})
	go unmountOnSignal(server, mnt, log, detached)
	done := make(chan struct{})
	go func() { server.Wait(); close(done) }()
	select {
	case <-done:
	case <-detached:
		// The mount is gone from the namespace (umount -l) but the kernel
		// keeps the connection while files are open: stop serving anyway.
	}
	return shutdown(log, adm, stopLinks, fsys, s)
}

func mountFS(fsys *fs.FS, absStore, mnt string, cfg mountConfig, log *slog.Logger) (*fuse.Server, error) {
	opts := fsys.MountOptions(absStore, cfg.allowOther, cfg.extra)
	opts.MountOptions.Debug = os.Getenv("GEOFS_FUSE_DEBUG") != "" // logs every FUSE request
	if cfg.readOnly {
		opts.MountOptions.DirectMountFlags = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV
	}
	server, err := fsys.Mount(mnt, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mnt, err)
	}
	if err := setReadAhead(mnt, readAheadKiB); err != nil {
		log.Warn("could not raise the kernel's read-ahead for the mount; sequential reads will be slower", "err", err)
	}
	spareProcs()
	return server, nil
}

// spareProcs gives the Go runtime a P for each go-fuse request reader on
// top of one per CPU, unless GOMAXPROCS is set in the environment. A
// reader waits for the next request in a read(2) on /dev/fuse and keeps
// its P while it waits; with GOMAXPROCS = CPUs, two idle readers hold
// every P of a 2-core machine, and the goroutines that finish a request
// (Badger's writer and commit watermark) wait for the runtime's monitor to
// take a P back, tens of microseconds per metadata operation
// (docs/DECISIONS.md). go-fuse sizes its readers from GOMAXPROCS when the
// server is made, so this runs after the mount.
func spareProcs() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	cpus := runtime.GOMAXPROCS(0)        // the runtime's default: CPUs, or the cgroup's limit
	readers := min(max(cpus, 2), 16) + 1 // go-fuse: maxReaders, and one over it
	runtime.GOMAXPROCS(cpus + readers)
}

// readAheadKiB is the kernel's read-ahead for a geofs mount. FUSE caps it
// at the block device default, 128 KiB, whatever the daemon asks for at
// INIT; with one 128 KiB request in flight at a time a cold sequential
// read waits on each. At 4 MiB the kernel keeps several 1 MiB requests in
// flight (docs/DECISIONS.md).
const readAheadKiB = 4096

// setReadAhead sets the read-ahead of the mount at mnt, through the
// backing device info of its anonymous device (needs root, like the
// mount itself).
func setReadAhead(mnt string, kib int) error {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return fmt.Errorf("read-ahead: %w", err)
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(path, []byte(strconv.Itoa(kib)), 0); err != nil {
		return fmt.Errorf("read-ahead: %w", err)
	}
	return nil
}

// unmountOnSignal unmounts on SIGTERM, SIGINT or SIGHUP. If the mountpoint
// is no longer mounted (detached with umount -l), it closes detached.
func unmountOnSignal(server *fuse.Server, mnt string, log *slog.Logger, detached chan<- struct{}) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for s := range sig {
		log.Info("unmounting on signal", "signal", s.String())
		err := server.Unmount()
		if err == nil {
			continue
		}
		if !mounted(mnt) {
			log.Warn("mount was detached; shutting down", "mountpoint", mnt)
			close(detached)
			return
		}
		log.Error("unmount failed: close files using the mount, then run umount", "mountpoint", mnt, "err", err)
	}
}

// mounted reports whether a geofs mount is at mnt in this namespace.
func mounted(mnt string) bool {
	ms, _ := geofsMounts()
	for _, m := range ms {
		if m.point == mnt {
			return true
		}
	}
	return false
}

// startCPUProfile writes a CPU profile of the mount process to path until
// stop is called (GEOFS_CPUPROFILE=path, for benchmarks).
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func shutdown(log *slog.Logger, adm *admin.Server, stopLinks func(), fsys *fs.FS, s *store.Store) error {
	start := time.Now()
	adm.Close()
	stopLinks()
	errs := []error{fsys.Close(), s.Close()}
	if err := errors.Join(errs...); err != nil {
		log.Error("unmounted with errors", "err", err)
		return err
	}
	log.Info("unmounted cleanly", "took", time.Since(start).Round(time.Millisecond))
	return nil
}
