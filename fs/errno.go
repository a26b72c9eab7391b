package fs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	"github.com/geofs/geofs/store"
)

// toErrno is the one place where errors become errno. go-fuse's own
// ToErrno does not unwrap, so every error the mount returns passes here.
// Unexpected errors are logged and become EIO.
func (f *FS) toErrno(ctx context.Context, err error, op string, id store.FileID) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, store.ErrUnavailable): // before ErrNotFound: a missing chunk is not a missing file
		f.log.ErrorContext(ctx, "file data is not here and no peer served it: "+op+" failed", "path", f.s.PathOf(id), "file", id.String(), "err", err)
		return syscall.EIO
	case errors.Is(err, store.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, store.ErrExists):
		return syscall.EEXIST
	case errors.Is(err, store.ErrNotEmpty):
		return syscall.ENOTEMPTY
	case errors.Is(err, syscall.ENOSPC):
		f.log.WarnContext(ctx, "no space left for "+op, "path", f.s.PathOf(id), "err", err)
		return syscall.ENOSPC
	case errors.Is(err, store.ErrCorrupt):
		f.log.ErrorContext(ctx, "corrupt data: "+op+" failed", "path", f.s.PathOf(id), "file", id.String(), "err", err)
		return syscall.EIO
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	f.log.Log(ctx, slog.LevelError, op+" failed", "path", f.s.PathOf(id), "err", err)
	return syscall.EIO
}
