// Command loopref is the reference filesystem of the geofs benchmark: go-fuse's
// loopback filesystem (fs.NewLoopbackRoot) over ORIGINAL, mounted on
// MOUNTPOINT, with FUSE passthrough turned OFF so that every read and write
// goes through the daemon, as it does for geofs.
//
//	loopref [-debug] [-stats FILE] [-passthrough] ORIGINAL MOUNTPOINT
//
// It prints "ready" on stdout once the mount is usable, serves until the
// mount point is unmounted (umount MOUNTPOINT, or SIGTERM/SIGINT), then writes
// its I/O counters as JSON to -stats (if given) and exits 0.
//
// Passthrough: go-fuse's LoopbackFile implements fs.FilePassthroughFder, and
// when the kernel offers FUSE passthrough (Linux >= 6.9, CAP_SYS_ADMIN) go-fuse
// registers the backing fd and the kernel then reads and writes the backing
// file itself, never calling the daemon. The file handles returned by Open and
// Create are therefore wrapped in noPassthroughFile, whose PassthroughFd
// returns (0, false). The wrapper also counts the READ and WRITE requests it
// serves, which is how the benchmark checks that passthrough is really off.
// -passthrough disables the wrapper's veto (for checking that the counters do
// drop to ~0 when passthrough is on).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Stats are the I/O counters written to the -stats file on exit.
type Stats struct {
	Opens      int64 `json:"opens"`
	Reads      int64 `json:"reads"`
	ReadBytes  int64 `json:"read_bytes"`
	Writes     int64 `json:"writes"`
	WriteBytes int64 `json:"write_bytes"`
	// Passthrough is true if the daemon allowed passthrough (-passthrough).
	Passthrough bool `json:"passthrough"`
}

type counters struct {
	opens, reads, readBytes, writes, writeBytes atomic.Int64
}

func (c *counters) snapshot(passthrough bool) Stats {
	return Stats{
		Opens:       c.opens.Load(),
		Reads:       c.reads.Load(),
		ReadBytes:   c.readBytes.Load(),
		Writes:      c.writes.Load(),
		WriteBytes:  c.writeBytes.Load(),
		Passthrough: passthrough,
	}
}

// node is a LoopbackNode whose file handles refuse passthrough.
type node struct {
	*fs.LoopbackNode
	cfg *config
}

type config struct {
	passthrough bool
	counters    counters
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
)

// WrapChild makes every node created below the root a *node as well.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), cfg: n.cfg}
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.wrap(fh), fuseFlags, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	inode, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return inode, n.wrap(fh), fuseFlags, 0
}

func (n *node) wrap(fh fs.FileHandle) fs.FileHandle {
	n.cfg.counters.opens.Add(1)
	lf, ok := fh.(*fs.LoopbackFile)
	if !ok {
		// Cannot happen with go-fuse v2.12.1; fail loudly if it ever does,
		// since an unwrapped handle could silently enable passthrough.
		panic(fmt.Sprintf("loopref: unexpected file handle type %T", fh))
	}
	return &noPassthroughFile{LoopbackFile: lf, cfg: n.cfg}
}

// noPassthroughFile forwards everything to the LoopbackFile except
// PassthroughFd, and counts reads and writes.
type noPassthroughFile struct {
	*fs.LoopbackFile
	cfg *config
}

var (
	_ fs.FilePassthroughFder = (*noPassthroughFile)(nil)
	_ fs.FileReader          = (*noPassthroughFile)(nil)
	_ fs.FileWriter          = (*noPassthroughFile)(nil)
)

func (f *noPassthroughFile) PassthroughFd() (int, bool) {
	if f.cfg.passthrough {
		return f.LoopbackFile.PassthroughFd()
	}
	return 0, false
}

func (f *noPassthroughFile) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.cfg.counters.reads.Add(1)
	f.cfg.counters.readBytes.Add(int64(len(buf)))
	return f.LoopbackFile.Read(ctx, buf, off)
}

func (f *noPassthroughFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f.cfg.counters.writes.Add(1)
	f.cfg.counters.writeBytes.Add(int64(len(data)))
	return f.LoopbackFile.Write(ctx, data, off)
}

func newRoot(orig string, cfg *config) (fs.InodeEmbedder, error) {
	lb, err := fs.NewLoopbackRoot(orig)
	if err != nil {
		return nil, err
	}
	ln := lb.(*fs.LoopbackNode)
	root := &node{LoopbackNode: ln, cfg: cfg}
	ln.RootData.RootNode = root
	return root, nil
}

func main() {
	log.SetFlags(log.Lmicroseconds)
	log.SetPrefix("loopref: ")
	debug := flag.Bool("debug", false, "log every FUSE request")
	statsFile := flag.String("stats", "", "write I/O counters as JSON to this file on exit")
	passthrough := flag.Bool("passthrough", false, "allow FUSE passthrough (for verification only)")
	maxWrite := flag.Int("maxwrite", 1<<20, "fuse.MountOptions.MaxWrite")
	defaultPerms := flag.Bool("default-permissions", false, "let the kernel check permissions (as geofs does)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintf(os.Stderr, "usage: loopref [flags] ORIGINAL MOUNTPOINT\n")
		flag.PrintDefaults()
		os.Exit(2)
	}
	orig, mnt := flag.Arg(0), flag.Arg(1)

	cfg := &config{passthrough: *passthrough}
	root, err := newRoot(orig, cfg)
	if err != nil {
		log.Fatalf("NewLoopbackRoot(%s): %v", orig, err)
	}
	sec := time.Second
	opts := &fs.Options{
		// Same as go-fuse's example/loopback: libfuse-compatible timeouts.
		AttrTimeout:     &sec,
		EntryTimeout:    &sec,
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			MaxWrite:    *maxWrite,
			DirectMount: true,
			Debug:       *debug,
			FsName:      orig,
			Name:        "loopref",
		},
	}
	if *defaultPerms {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	server, err := fs.Mount(mnt, root, opts)
	if err != nil {
		log.Fatalf("mount %s: %v", mnt, err)
	}
	fmt.Println("ready")

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigc
		log.Printf("%v: unmounting %s", s, mnt)
		if err := server.Unmount(); err != nil {
			log.Printf("unmount: %v", err)
		}
	}()

	server.Wait()
	st := cfg.counters.snapshot(cfg.passthrough)
	log.Printf("exiting: %+v", st)
	if *statsFile != "" {
		b, _ := json.Marshal(st)
		if err := os.WriteFile(*statsFile, b, 0o644); err != nil {
			log.Fatalf("write stats: %v", err)
		}
	}
}
