package admin

import (
	"context"
	"fmt"
	"io"

	"github.com/geofs/geofs/store"
	gsync "github.com/geofs/geofs/sync"
)

// Local answers from an open store.
type Local struct {
	S          *store.Store
	Name       string
	Mountpoint string
	// Changed, when set, is told about files changed behind the kernel's
	// back (a restore), so that a mount can drop its caches.
	Changed func(id store.FileID)
	// Links, when set, reports the running links; without it Status lists
	// the configured ones as not connected.
	Links func() []gsync.LinkStatus
}

var _ Site = (*Local)(nil)

// Versions lists a file's versions, newest first.
func (l *Local) Versions(ctx context.Context, path string) ([]VersionInfo, error) {
	id, err := l.S.Resolve(path)
	if err != nil {
		return nil, err
	}
	vs, hs, err := l.S.History(id)
	if err != nil {
		return nil, err
	}
	out := make([]VersionInfo, len(vs))
	for i := range vs {
		out[i] = versionInfo(vs[i], hs[i])
	}
	return out, nil
}

// Cat writes the content of one version of a file.
func (l *Local) Cat(ctx context.Context, path, version string, w io.Writer) error {
	id, err := l.S.Resolve(path)
	if err != nil {
		return err
	}
	var v *store.Version
	if version == "" {
		v, err = l.S.Head(id)
	} else {
		v, _, err = findVersion(l.S, id, version)
	}
	if err != nil {
		return err
	}
	switch v.Kind {
	case store.KindLink:
		_, err := io.WriteString(w, v.Target)
		return err
	case store.KindDir:
		return fmt.Errorf("%s is a directory", path)
	}
	x, err := l.S.ContentOf(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := uint64(0); off < x.Size; {
		n, err := l.S.ReadAt(x, buf, off)
		if err != nil {
			return fmt.Errorf("%s at byte %d: %w", path, off, err)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		off += uint64(n)
	}
	return nil
}

// Restore makes an old version current again.
func (l *Local) Restore(ctx context.Context, path, version string) (VersionInfo, error) {
	id, err := l.S.Resolve(path)
	if err != nil {
		return VersionInfo{}, err
	}
	_, h, err := findVersion(l.S, id, version)
	if err != nil {
		return VersionInfo{}, err
	}
	if _, err := l.S.Restore(id, h); err != nil {
		return VersionInfo{}, err
	}
	if l.Changed != nil {
		l.Changed(id)
	}
	vs, hs, err := l.S.History(id)
	if err != nil {
		return VersionInfo{}, err
	}
	return versionInfo(vs[0], hs[0]), nil
}

// Log calls fn for each txlog entry from seq on.
func (l *Local) Log(ctx context.Context, from uint64, fn func(LogEntry) error) error {
	return l.S.Log(from, func(e *store.Entry) (bool, error) {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		le := LogEntry{Seq: e.Seq, Time: e.Time.Time().UTC(), Site: e.Site.String(),
			Op: e.Op.String(), File: e.File.String(), Version: e.Version.String()}
		if e.From != (store.SiteID{}) {
			le.From = e.From.String()
		}
		return true, fn(le)
	})
}

// Fsck checks the store.
func (l *Local) Fsck(ctx context.Context, repair bool) (FsckReport, error) {
	rep := FsckReport{Problems: []string{}, Repaired: []string{}}
	stats, err := l.S.FsckRepair(ctx, repair, func(p store.Problem) {
		if p.Repaired {
			rep.Repaired = append(rep.Repaired, p.String())
		} else {
			rep.Problems = append(rep.Problems, p.String())
		}
	})
	rep.Stats = stats
	return rep, err
}

// Pin fetches the subtree at path and keeps it out of cache eviction.
func (l *Local) Pin(ctx context.Context, path string) (store.PinResult, error) {
	return l.S.Pin(ctx, path)
}

// Unpin releases a pin.
func (l *Local) Unpin(ctx context.Context, path string) error {
	return l.S.Unpin(ctx, path)
}

// Status reports the site's identity and position.
func (l *Local) Status(ctx context.Context) (Status, error) {
	lsm, vlog := l.S.DBSize()
	st := Status{Site: l.S.Site().String(), Name: l.Name, Store: l.S.Dir(), Mountpoint: l.Mountpoint,
		NamespaceRoot: l.S.NamespaceRoot().String(), LastSeq: l.S.LastSeq(), LSMBytes: lsm, VlogBytes: vlog}
	if l.Links != nil {
		st.Links = l.Links()
	} else if cfg, err := store.LoadConfig(l.S.Dir()); err == nil {
		for _, k := range cfg.Links {
			ls := gsync.LinkStatus{Name: k.Name, Peer: k.Peer, Remote: k.Remote, Direction: k.Direction, LastError: "site not running"}
			if a := l.S.Acked(k.PeerID()); k.Sends() && a < st.LastSeq {
				ls.PendingEntries = st.LastSeq - a
			}
			st.Links = append(st.Links, ls)
		}
	}
	if st.Links == nil {
		st.Links = []gsync.LinkStatus{}
	}
	st.Cache = cacheStatus(l.S)
	return st, nil
}
