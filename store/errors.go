package store

import (
	"errors"
	"syscall"
)

// Errors callers classify with errors.Is. fs/ turns them into errno.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrNotEmpty = errors.New("directory not empty")
	// ErrCorrupt marks data whose bytes do not match their hash or cannot be
	// decoded: damage on disk, never a caller's mistake.
	ErrCorrupt = errors.New("corrupt data")
	// ErrLocked means another process has the store open.
	ErrLocked = errors.New("store is in use by another process")
	// ErrNoSpace means the store's disk is (nearly) full. It wraps
	// syscall.ENOSPC so that errors.Is(err, syscall.ENOSPC) holds.
	ErrNoSpace = noSpace{}
)

type noSpace struct{}

func (noSpace) Error() string        { return "no space left on the store's disk" }
func (noSpace) Is(target error) bool { return target == syscall.ENOSPC }
