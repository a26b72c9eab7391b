package main

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/geofs/geofs/internal/admin"
	"github.com/geofs/geofs/store"
)

// openSite returns the site in storeDir: through the running process's
// admin socket when one holds the store, else by opening it directly.
func openSite(storeDir string) (admin.Site, func(), error) {
	sock := admin.SocketPath(storeDir)
	s, err := openWhenFree(storeDir, discardLog())
	if errors.Is(err, store.ErrLocked) {
		if _, serr := os.Stat(sock); serr == nil {
			return admin.Dial(sock), func() {}, nil
		}
		return nil, nil, fmt.Errorf("%s is in use by another process that has no admin socket (%s)", storeDir, sock)
	}
	if err != nil {
		return nil, nil, err
	}
	cfg, _ := store.LoadConfig(storeDir)
	return &admin.Local{S: s, Name: cfg.Name}, func() { s.Close() }, nil
}

// openWhenFree opens the store in dir. Just after an unmount the mount
// process may still be closing the store (its admin socket already gone;
// a large store can take seconds), so while no socket is there it tries
// again: for 10 s, and longer, up to closeWait, while the process the
// database's LOCK file names is alive. With a socket, a site is running:
// it returns store.ErrLocked at once.
func openWhenFree(dir string, log *slog.Logger) (*store.Store, error) {
	start, told := time.Now(), false
	s, err := store.Open(dir, log)
	for errors.Is(err, store.ErrLocked) {
		if _, serr := os.Stat(admin.SocketPath(dir)); serr == nil {
			return nil, err
		}
		waited, holder := time.Since(start), lockHolder(dir)
		if waited > closeWait || waited > 10*time.Second && holder == 0 {
			break
		}
		if !told && waited > 2*time.Second && holder != 0 {
			fmt.Fprintf(os.Stderr, "geofs: waiting for process %d to finish closing %s\n", holder, dir)
			told = true
		}
		time.Sleep(100 * time.Millisecond)
		s, err = store.Open(dir, log)
	}
	if errors.Is(err, store.ErrLocked) { // the holder may have gone just now
		s, err = store.Open(dir, log)
	}
	return s, err
}

// closeWait bounds openWhenFree's wait for a live process to let go.
const closeWait = 2 * time.Minute

// lockHolder returns the live process that the store's database names as
// its holder, or 0.
func lockHolder(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, store.DBDir, "LOCK"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0
	}
	return pid
}

// mount is one geofs mount from /proc/self/mountinfo.
type mount struct{ store, point string }

func geofsMounts() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fields) || fields[sep+1] != "fuse.geofs" {
			continue
		}
		out = append(out, mount{store: unescape(fields[sep+2]), point: unescape(fields[4])})
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// locate turns a path inside a geofs mount into its store and its path in
// the tree. With storeFlag set, path is already a path in that store's tree.
func locate(path, storeFlag string) (storeDir, inTree string, err error) {
	if storeFlag != "" {
		return storeFlag, "/" + strings.TrimPrefix(path, "/"), nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", err
	}
	mounts, err := geofsMounts()
	if err != nil {
		return "", "", err
	}
	best := mount{}
	for _, m := range mounts {
		if (abs == m.point || strings.HasPrefix(abs, m.point+"/") || m.point == "/") && len(m.point) > len(best.point) {
			best = m
		}
	}
	if best.point == "" {
		return "", "", usagef("%s is not inside a geofs mount (or give --store STORE and a path in its tree)", path)
	}
	rel := strings.TrimPrefix(abs, best.point)
	return best.store, "/" + strings.TrimPrefix(rel, "/"), nil
}

// siteFor resolves a STORE or MOUNTPOINT argument to a store directory.
func siteFor(arg string) (string, error) {
	if _, err := os.Stat(filepath.Join(arg, store.ConfigFile)); err == nil {
		return arg, nil
	}
	storeDir, inTree, err := locate(arg, "")
	if err != nil {
		_, cerr := store.LoadConfig(arg) // it says how to create a store
		return "", cerr
	}
	if inTree != "/" {
		return "", usagef("%s is inside a mount; give the mountpoint or the store", arg)
	}
	return storeDir, nil
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
