package fs

import (
	"context"
	"errors"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/geofs/geofs/store"
)

// errCopyBytes means a copy is not one made from chunks: the kernel then
// copies the bytes itself, through reads and writes (it does when
// COPY_FILE_RANGE answers EOPNOTSUPP).
var errCopyBytes = errors.New("copy needs the bytes")

// maxCopy is the most one COPY_FILE_RANGE reply can count (32 bits), in
// whole pages.
const maxCopy = 1<<32 - 1<<12

var _ = (gofs.NodeCopyFileRanger)((*Node)(nil))

// CopyFileRange makes a copy of a file out of the file's chunks, without
// reading or writing its bytes: the copy is one version (cp copies a file
// with copy_file_range), made in the time a metadata change takes,
// holes stay holes, and a peer that has the source has the copy's data.
//
// It does so for the copies cp makes: a file's bytes from its start, at
// the same offsets, into a file that holds nothing yet (or what an earlier
// such call copied, as cp copies in pieces of at most 4 GiB), with nothing
// buffered over the source. Each such call is a version and may store the
// chunk its end cuts, so a piece must reach the source's end or be as
// large as a write buffer (MaxDirty): a program copying in small pieces
// would otherwise make a version and a chunk of up to 4 MiB per piece. On
// a site that holds only some chunks (a fog node), every chunk copied must
// be stored here: the copy's version cannot name the source's to fetch
// them by, and pins would not fetch them. Any other copy is left to the
// kernel, which copies the bytes through reads and writes.
func (n *Node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	src, okIn := fhIn.(*handle)
	dst, okOut := fhOut.(*handle)
	if !okIn || !okOut || flags != 0 || offIn != offOut || src.of == dst.of {
		return 0, syscall.EOPNOTSUPP
	}
	// Setuid and setgid bits need no killing here, unlike in Write: the
	// kernel clears them with a SETATTR before it sends the copy
	// (file_modified), which it does not do before a write.
	done, err := n.fsys.copyPrefix(src.of, dst.of, offIn, min(length, maxCopy))
	if errors.Is(err, errCopyBytes) {
		return 0, syscall.EOPNOTSUPP
	}
	if err != nil {
		return 0, dst.errno(ctx, err, "copy_file_range")
	}
	return uint32(done), 0
}

// copyPrefix makes dst's content src's bytes up to at+n (or src's end) and
// returns how many bytes that added. dst must hold nothing, or exactly
// what an earlier copyPrefix from the same content made (it remembers
// that in dst.copied). Otherwise, with anything buffered over src, or with
// data buffered over dst, it returns errCopyBytes (a truncation and
// attribute changes buffered over dst go into the copy's version).
//
// The new content is src's, cut at the copy's end (store.Rewrite re-chunks
// only the chunk the cut falls in), so it is what writing the same bytes
// would have made, and dedup and peers see the same chunks.
func (f *FS) copyPrefix(src, dst *openFile, at, n uint64) (uint64, error) {
	src.mu.Lock()
	if src.dirtyLocked() {
		src.mu.Unlock()
		return 0, errCopyBytes
	}
	from, fromRoot, origin := src.base, src.root, src.origin
	src.mu.Unlock()
	if at >= from.Size || n == 0 {
		return 0, nil
	}
	end := at + min(n, from.Size-at)
	if end < from.Size && end-at < uint64(f.opts.MaxDirty) {
		return 0, errCopyBytes
	}
	if f.s.Partial() && !f.holdsAll(from, end) {
		return 0, errCopyBytes
	}

	dst.mu.Lock()
	defer dst.mu.Unlock()
	for dst.busy {
		dst.cond.Wait()
	}
	l := dst.cur
	if dst.pending != nil || len(l.patches) > 0 || l.size != at {
		return 0, errCopyBytes
	}
	s := f.s
	if at > 0 && (l.keep < at || dst.base.Size != at || dst.copied.from != fromRoot || dst.copied.root != dst.root) {
		return 0, errCopyBytes // not the continuation of a copy of this content
	}
	x, err := s.Rewrite(from, nil, end)
	if err != nil {
		return 0, err
	}
	root, err := s.PutManifest(x.Refs)
	if err != nil {
		return 0, err
	}
	alloc := x.Data()
	err = s.Update(store.OpCopy, func(tx *store.Tx) error {
		v, err := tx.Head(dst.id)
		if err != nil {
			return err
		}
		if v.Content != dst.root {
			return errBaseMoved
		}
		nv := v.Clone()
		nv.Content, nv.Size, nv.Alloc = root, end, alloc
		a := fileAttrs{mode: nv.Mode, uid: nv.UID, gid: nv.GID, atime: nv.Atime, mtime: nv.Mtime, ctime: nv.Ctime}
		l.apply(&a) // a truncation's times, killed bits, a chmod made while open
		a.mtime, a.ctime = tx.Wall(), tx.Wall()
		nv.Mode, nv.UID, nv.GID, nv.Atime, nv.Mtime, nv.Ctime = a.mode, a.uid, a.gid, a.atime, a.mtime, a.ctime
		_, err = tx.Put(nv)
		return err
	})
	if errors.Is(err, errBaseMoved) {
		return 0, errCopyBytes
	}
	if err != nil {
		return 0, err
	}
	l.recycle()
	// The copy's chunks are src's: fetch them in the name of src's
	// version until this one reaches the peers.
	dst.base, dst.origin, dst.cur = x, origin, newLayer(end)
	dst.setRoot(root)
	dst.copied.from, dst.copied.root = fromRoot, root
	dst.account()
	if alloc != end {
		f.notifyAttrs(dst.id) // see build
	}
	return end - at, nil
}

// holdsAll reports whether every data chunk of x before end is stored on
// this site for good (in a pack, not in the cache).
func (f *FS) holdsAll(x *store.Extents, end uint64) bool {
	for k, r := range x.Refs {
		if x.Offs[k] >= end {
			break
		}
		if !r.IsHole() && !f.s.HasChunk(r.Hash) {
			return false
		}
	}
	return true
}
