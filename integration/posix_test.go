package integration

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// notPOSIX lists posixtest cases that test something other than POSIX.
var notPOSIX = map[string]string{
	// It expects a lock taken through one descriptor to block the same
	// process through another. fcntl locks belong to the process, so ext4
	// fails this case too; it passes on go-fuse's loopback only because
	// that takes OFD locks on its backing files. geofs leaves fcntl and
	// flock locks to the kernel, which gives POSIX semantics on one site.
	"FcntlFlockLocksFile": "per-process fcntl locks (ext4 fails it too)",
}

// TestPosix runs go-fuse's POSIX suite against the mounted binary, each
// case in a fresh directory of one mount, then checks the store.
func TestPosix(t *testing.T) {
	s := newSite(t)
	s.mount()
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		if _, skip := notPOSIX[name]; !skip {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(s.mnt, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			posixtest.All[name](t, dir)
		})
	}
	s.unmount()
	s.fsck()
}
