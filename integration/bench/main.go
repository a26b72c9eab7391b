// Command bench compares a fresh geofs mount with a reference FUSE
// filesystem (go-fuse's loopback over a directory on the same disk, FUSE
// passthrough off, see ./loopref) on a fixed set of workloads, and prints a
// markdown report.
//
//	go run ./integration/bench -geofs /path/to/geofs [-dir /var/tmp/geofs-bench]
//	    [-size 2GiB] [-files 20000] [-only seq-write,seq-read,...] [-out results.md]
//
// The replication workloads (-only replication) instead link pairs of geofs
// sites over QUIC on loopback and compare with raw quic-go (./quicref) and
// rsync, measured in the same run (replication.go).
//
// The fog workload (-only fog) reads from a metadata-only fog site over an
// emulated WAN (the relay, -fog-rate and -fog-rtt) and compares with a raw
// quic-go stream through the same relay and with the full site (fog.go).
//
// It must run as root (mounting with /dev/fuse, dropping the page cache).
// Everything it mounts is unmounted on exit, including on error and SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

type config struct {
	geofsBin   string
	looprefBin string
	quicrefBin string
	dir        string
	size       int64
	files      int
	randReads  int
	runs       int
	dedupSize  int64
	only       []string
	out        string
	keep       bool
	refPerm    bool

	// Replication workloads.
	replCommits   int
	replFiles     int
	replDeltaSize int64
	replBigSize   int64

	fog fogConfig // the fog workload (fog.go)
}

// bench holds the state of one benchmark run.
type bench struct {
	cfg     config
	dir     string // absolute, symlinks resolved
	logDir  string
	tarPath string
	run     int // index of the current run (-runs)

	bigLabels    map[string]string // target label -> data label of its big.dat
	bigData      []byte            // pre-generated content of big.dat, if it fits in memory
	bigDataLabel string            // data label of bigData

	passthroughNoted bool

	ref     *refTarget
	geofs   *geofsTarget
	targets []target

	quicrefBin string      // the raw quic-go reference helper
	liveMu     sync.Mutex  // guards live
	live       []*replPair // replication sites not yet torn down

	report *report

	failed      bool // keep the logs if set
	cleanupOnce sync.Once
}

func (b *bench) notef(format string, args ...any) {
	b.report.notes = append(b.report.notes, fmt.Sprintf(format, args...))
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench: ")
	workloads = append(workloads, fogWorkloads...) // fog.go
	os.Exit(run())
}

func parseFlags() (config, error) {
	cfg := config{}
	size, dedupSize := sizeFlag(2<<30), sizeFlag(1<<30)
	replDeltaSize, replBigSize := sizeFlag(256<<20), sizeFlag(2<<30)
	var only string
	flag.StringVar(&cfg.geofsBin, "geofs", "", "path to the geofs binary (required)")
	flag.StringVar(&cfg.dir, "dir", "/var/tmp/geofs-bench", "scratch directory for stores, mounts and data (same disk for both filesystems)")
	flag.Var(&size, "size", "size of the sequential/random I/O file")
	flag.IntVar(&cfg.files, "files", 20000, "number of files for the metadata workload")
	flag.IntVar(&cfg.randReads, "rand-reads", 20000, "number of 4 KiB random reads")
	flag.IntVar(&cfg.runs, "runs", 2, "independent runs on fresh stores, alternating which filesystem goes first (use an even number); the report shows medians")
	flag.Var(&dedupSize, "dedup-size", "size of the file copied by the dedup workload")
	flag.StringVar(&only, "only", "", "comma-separated workloads to run (default all): "+strings.Join(workloadNames(), ","))
	flag.StringVar(&cfg.out, "out", "", "also write the markdown report to this file")
	flag.StringVar(&cfg.looprefBin, "loopref", "", "prebuilt reference helper (default: go build ./integration/bench/loopref)")
	flag.StringVar(&cfg.quicrefBin, "quicref", "", "prebuilt raw quic-go reference helper (default: go build ./integration/bench/quicref)")
	flag.IntVar(&cfg.replCommits, "repl-commits", 1000, "repl-lag: small-file commits to time")
	flag.IntVar(&cfg.replFiles, "repl-files", 10000, "repl-small-files: 4 KiB files to sync to a new site")
	flag.Var(&replDeltaSize, "repl-delta-size", "repl-delta: size of the file in which one byte changes")
	flag.Var(&replBigSize, "repl-big-size", "repl-big-file: size of the file synced to a new site")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the scratch directory (stores, logs) after the run")
	cfg.fog.addFlags()
	flag.BoolVar(&cfg.refPerm, "ref-perm", false, "mount the reference with default_permissions, as geofs is (the kernel then checks permissions for both)")
	flag.Parse()
	cfg.size, cfg.dedupSize = int64(size), int64(dedupSize)
	cfg.replDeltaSize, cfg.replBigSize = int64(replDeltaSize), int64(replBigSize)

	if flag.NArg() != 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if cfg.geofsBin == "" {
		return cfg, errors.New("-geofs is required")
	}
	if cfg.size < pageSize || cfg.dedupSize < 1 || cfg.files < 1 || cfg.randReads < 1 || cfg.runs < 1 {
		return cfg, errors.New("-size must be >= 4KiB; -dedup-size, -files, -rand-reads and -runs must be positive")
	}
	if cfg.replCommits < 1 || cfg.replFiles < 1 || cfg.replDeltaSize < 2 || cfg.replBigSize < 1 {
		return cfg, errors.New("-repl-commits, -repl-files, -repl-delta-size (>= 2) and -repl-big-size must be positive")
	}
	if err := cfg.fog.check(); err != nil {
		return cfg, err
	}
	if only != "" {
		for _, name := range strings.Split(only, ",") {
			name = strings.TrimSpace(name)
			if !isWorkload(name) {
				return cfg, fmt.Errorf("-only: unknown workload %q (have %s)", name, strings.Join(workloadNames(), ", "))
			}
			cfg.only = append(cfg.only, name)
		}
	}
	return cfg, nil
}

// isWorkload reports whether name is a workload or a group of workloads.
func isWorkload(name string) bool {
	for _, w := range workloads {
		if w.name == name || w.group == name {
			return true
		}
	}
	return false
}

// selected reports whether the workload called name is to run: -only
// names it or its group.
func (c config) selected(name string) bool {
	if len(c.only) == 0 {
		return true
	}
	group := ""
	for _, w := range workloads {
		if w.name == name {
			group = w.group
		}
	}
	for _, n := range c.only {
		if n == name || (group != "" && n == group) {
			return true
		}
	}
	return false
}

// anySelected reports whether a selected workload satisfies pred.
func (c config) anySelected(pred func(workload) bool) bool {
	for _, w := range workloads {
		if c.selected(w.name) && pred(w) {
			return true
		}
	}
	return false
}

// perTarget reports whether a selected workload runs on the two mounted
// targets (ref and geofs); replication workloads make their own sites.
func (c config) perTarget() bool {
	return c.anySelected(func(w workload) bool { return w.run != nil })
}

// run is main without os.Exit, so that deferred cleanup always runs.
func run() int {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		flag.Usage()
		return 2
	}
	b, err := newBench(cfg)
	if err != nil {
		log.Printf("error: %v", err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopSignals := b.handleSignals(cancel)
	defer stopSignals()
	defer b.cleanup()

	if err := b.setup(ctx); err != nil {
		log.Printf("error: %v", err)
		b.failed = true
		return 1
	}
	failed := b.runWorkloads(ctx)

	// Unmount before reporting, so that the reference's counters are final.
	for _, t := range b.targets {
		if err := t.Unmount(context.Background()); err != nil {
			b.report.errorf("final unmount of %s: %v", t.Label(), err)
			failed = true
		}
	}
	b.finishReport()
	md := b.report.markdown()
	fmt.Print(md)
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(md), 0o644); err != nil {
			log.Printf("error: write %s: %v", cfg.out, err)
			failed = true
		} else {
			log.Printf("report written to %s", cfg.out)
		}
	}
	b.failed = failed || ctx.Err() != nil
	switch {
	case ctx.Err() != nil:
		return 130
	case failed:
		return 1
	}
	return 0
}

func newBench(cfg config) (*bench, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("must run as root (FUSE mounts, drop_caches)")
	}
	geofsBin, err := exec.LookPath(cfg.geofsBin)
	if err != nil {
		return nil, fmt.Errorf("-geofs: %w", err)
	}
	if cfg.geofsBin, err = filepath.Abs(geofsBin); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		return nil, err
	}
	b := &bench{
		cfg:    cfg,
		dir:    dir,
		logDir: filepath.Join(dir, "logs"),
		report: newReport(cfg),
	}
	return b, nil
}

// setup clears leftovers from earlier runs, builds the reference helper and
// prepares the data.
func (b *bench) setup(ctx context.Context) error {
	if err := unmountLeftovers(b.dir); err != nil {
		return err
	}
	for _, sub := range []string{"ref", "geofs", "logs", "repl"} {
		if err := os.RemoveAll(filepath.Join(b.dir, sub)); err != nil {
			return err
		}
	}
	for _, sub := range []string{"ref", "geofs", "logs", "bin", "repl"} {
		if err := os.MkdirAll(filepath.Join(b.dir, sub), 0o755); err != nil {
			return err
		}
	}
	var bin string
	if b.cfg.perTarget() {
		var err error
		if bin, err = b.helperBinary(ctx, b.cfg.looprefBin, "loopref"); err != nil {
			return err
		}
		b.report.goFuse = goFuseVersion(bin)
	}
	if b.cfg.anySelected(func(w workload) bool { return w.runPair != nil }) {
		var err error
		if b.quicrefBin, err = b.helperBinary(ctx, b.cfg.quicrefBin, "quicref"); err != nil {
			return err
		}
	}
	b.ref = newRefTarget(bin, filepath.Join(b.dir, "ref"), b.logDir)
	b.ref.defaultPerms = b.cfg.refPerm
	b.geofs = newGeofsTarget(b.cfg.geofsBin, filepath.Join(b.dir, "geofs"), b.logDir)
	b.targets = []target{b.ref, b.geofs}
	b.report.dirFS = fsInfo(b.dir)
	if b.cfg.selected("seq-write") {
		b.pregenerateBig()
	}
	return nil
}

// freshStart unmounts both filesystems, wipes their data, creates a new
// geofs site and mounts both. Every run starts from here, so runs are
// independent (geofs cannot deduplicate against an earlier run's data).
func (b *bench) freshStart(ctx context.Context) error {
	for _, t := range b.targets {
		if err := t.Unmount(ctx); err != nil {
			return err
		}
	}
	if left := mountsUnder(b.dir); len(left) > 0 {
		return fmt.Errorf("still mounted: %v", left)
	}
	for _, t := range b.targets {
		if err := os.RemoveAll(t.Store()); err != nil {
			return err
		}
	}
	log.Printf("geofs init %s", b.geofs.store)
	if err := b.geofs.Init(ctx); err != nil {
		return err
	}
	log.Printf("geofs site id: %s", b.geofs.siteID)
	b.report.siteIDs = append(b.report.siteIDs, b.geofs.siteID)
	for _, t := range b.targets {
		log.Printf("mounting %s on %s", t.Label(), t.Mountpoint())
		if err := t.Mount(ctx); err != nil {
			return err
		}
	}
	return nil
}

// helperBinary builds the reference helper ./integration/bench/NAME into
// the scratch directory, unless prebuilt (-loopref, -quicref) names one.
func (b *bench) helperBinary(ctx context.Context, prebuilt, name string) (string, error) {
	if prebuilt != "" {
		return filepath.Abs(prebuilt)
	}
	bin := filepath.Join(b.dir, "bin", name)
	pkg := "github.com/geofs/geofs/integration/bench/" + name
	log.Printf("building %s", pkg)
	if _, err := runCmd(ctx, 5*time.Minute, "go", "build", "-o", bin, pkg); err != nil {
		return "", fmt.Errorf("%w (run from within the geofs module, or pass -%s)", err, name)
	}
	return bin, nil
}

// unmountLeftovers unmounts anything mounted below dir by a crashed run.
func unmountLeftovers(dir string) error {
	for _, mp := range mountsUnder(dir) {
		log.Printf("unmounting leftover mount %s", mp)
		if err := unmountDir(context.Background(), mp); err != nil {
			lazyUnmount(mp)
		}
	}
	if left := mountsUnder(dir); len(left) > 0 {
		return fmt.Errorf("cannot unmount leftover mounts %v", left)
	}
	return nil
}

// runWorkloads runs all selected workloads on both targets, -runs times,
// each run on fresh stores. It records the results and reports whether
// anything failed.
func (b *bench) runWorkloads(ctx context.Context) (failed bool) {
	for run := 0; run < b.cfg.runs; run++ {
		b.run = run
		if b.cfg.runs > 1 {
			log.Printf("=== run %d of %d", run+1, b.cfg.runs)
		}
		if b.cfg.perTarget() {
			if err := b.freshStart(ctx); err != nil {
				b.report.errorf("run %d: setting up fresh mounts: %v", run+1, err)
				return true
			}
		}
		if b.runOnce(ctx) {
			failed = true
		}
		if ctx.Err() != nil {
			return true
		}
	}
	return failed
}

// runOnce runs every selected workload once on every target.
func (b *bench) runOnce(ctx context.Context) (failed bool) {
	dead := map[string]bool{}
	for _, w := range workloads {
		if !b.cfg.selected(w.name) {
			continue
		}
		if w.runPair != nil {
			if ctx.Err() != nil {
				return true
			}
			if !b.runPair(ctx, w) {
				failed = true
			}
			continue
		}
		for _, t := range b.order(b.run) {
			if ctx.Err() != nil {
				return true
			}
			if w.geofsOnly && t != target(b.geofs) {
				continue
			}
			if dead[t.Label()] {
				b.report.add(w, t.Label(), nil, errors.New("skipped: mount unusable after an earlier failure"))
				continue
			}
			ms, err := b.runOne(ctx, w, t)
			b.report.add(w, t.Label(), ms, err)
			if err == nil {
				continue
			}
			failed = true
			if ctx.Err() != nil {
				return true
			}
			if !b.recover(ctx, t) {
				dead[t.Label()] = true
			}
		}
	}
	return failed
}

// order returns the targets in the order to use for the given run: the
// reference first on even runs, geofs first on odd ones.
func (b *bench) order(run int) []target {
	if run%2 == 1 {
		return []target{b.geofs, b.ref}
	}
	return []target{b.ref, b.geofs}
}

func (b *bench) runOne(ctx context.Context, w workload, t target) ([]metric, error) {
	log.Printf("[%s] %s ...", t.Label(), w.name)
	if !isMounted(t.Mountpoint()) {
		if err := t.Mount(ctx); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	ms, err := w.run(ctx, b, t)
	if err != nil {
		log.Printf("[%s] %s FAILED after %v: %v", t.Label(), w.name, time.Since(start).Round(time.Millisecond), err)
		return nil, err
	}
	for _, m := range ms {
		log.Printf("[%s] %s: %s = %s %s", t.Label(), w.name, m.name, fmtValue(m.value, m.unit), m.unit)
	}
	return ms, nil
}

// runPair runs a replication workload once and records geofs's figures
// and its reference's; it reports whether both succeeded.
func (b *bench) runPair(ctx context.Context, w workload) bool {
	log.Printf("[replication] %s ...", w.name)
	start := time.Now()
	res, err := w.runPair(ctx, b)
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		log.Printf("[replication] %s FAILED after %v: %v", w.name, took, err)
		b.report.add(w, "geofs", nil, err)
		return false
	}
	log.Printf("[replication] %s done in %v", w.name, took)
	b.notef("%s (run %d) took %v in all (setup, data, reference, teardown).", w.name, b.run+1, took)
	b.report.add(w, "geofs", res.geofs, nil)
	if res.refErr != nil {
		b.report.add(w, "ref", nil, res.refErr)
	} else {
		b.report.add(w, "ref", res.ref, nil)
	}
	for _, m := range res.geofs {
		ref := "—"
		if i := slices.IndexFunc(res.ref, func(r metric) bool { return r.name == m.name }); i >= 0 {
			ref = fmtValue(res.ref[i].value, m.unit)
		}
		log.Printf("[replication] %s: %s: geofs %s %s, ref %s", w.name, m.name, fmtValue(m.value, m.unit), m.unit, ref)
	}
	return res.refErr == nil
}

// recover tries to bring a target back to a mounted state after a failed
// workload; it reports whether that worked.
func (b *bench) recover(ctx context.Context, t target) bool {
	log.Printf("[%s] remounting after failure", t.Label())
	if err := t.Unmount(ctx); err != nil {
		log.Printf("[%s] unmount: %v; giving up on %s", t.Label(), err, t.Label())
		t.ForceUnmount()
		return false
	}
	if err := t.Mount(ctx); err != nil {
		log.Printf("[%s] mount: %v; giving up on %s", t.Label(), err, t.Label())
		return false
	}
	return true
}

// handleSignals cancels ctx on the first SIGINT/SIGTERM, letting the run
// unwind and unmount normally; on a second signal, or if unwinding takes
// more than 30 s, it force-unmounts everything and exits.
func (b *bench) handleSignals(cancel context.CancelFunc) (stop func()) {
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigc:
			log.Printf("%v: stopping, unmounting (send again to force)", s)
			cancel()
		case <-done:
			return
		}
		select {
		case <-sigc:
		case <-time.After(30 * time.Second):
		case <-done:
			return
		}
		log.Printf("forcing unmount and exit")
		for _, t := range b.targets {
			t.ForceUnmount()
		}
		b.forceCloseLive()
		os.Exit(130)
	}()
	return func() { signal.Stop(sigc); close(done) }
}

// cleanup unmounts everything and removes the scratch data (unless -keep).
// It never removes anything while a mount below the scratch dir remains.
func (b *bench) cleanup() {
	b.cleanupOnce.Do(func() {
		b.closeLive()
		for _, t := range b.targets {
			if err := t.Unmount(context.Background()); err != nil {
				log.Printf("cleanup: %v; forcing", err)
				t.ForceUnmount()
			}
		}
		if err := unmountLeftovers(b.dir); err != nil {
			log.Printf("cleanup: %v; NOT removing %s", err, b.dir)
			return
		}
		if b.cfg.keep {
			log.Printf("keeping %s", b.dir)
			return
		}
		for _, sub := range []string{"ref", "geofs", "repl", "logs", "bin", "gosrc.tar"} {
			if sub == "logs" && b.failed {
				continue
			}
			if err := os.RemoveAll(filepath.Join(b.dir, sub)); err != nil {
				log.Printf("cleanup: %v", err)
			}
		}
		os.Remove(b.dir) // only if empty: never delete what we did not create
		if b.failed {
			log.Printf("cleaned up %s, except the daemon logs in %s", b.dir, b.logDir)
		} else {
			log.Printf("cleaned up %s", b.dir)
		}
	})
}
