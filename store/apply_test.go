package store

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geofs/geofs/internal/hlc"
)

// These tests replicate between real stores in one process with pull, a
// plain copy of what the sync package sends: the txlog from the cursor, the
// manifest nodes and chunks the receiver lacks, then Apply.

// pull applies every record of from's txlog that to has not applied yet,
// in one batch.
func pull(t testing.TB, from, to *Store) ApplyResult {
	t.Helper()
	return pullEach(t, from, to, math.MaxInt)
}

// pullEach is pull in batches of n entries or fewer, as a link sends a
// log that grows while it pushes.
func pullEach(t testing.TB, from, to *Store, n int) ApplyResult {
	t.Helper()
	var res ApplyResult
	var recs []Incoming
	var last PeerCursor
	apply := func() {
		if last.Seq == 0 {
			return
		}
		r, err := to.Apply(from.site, last, recs)
		if err != nil {
			t.Fatalf("apply %s → %s: %v", from.site.String()[:4], to.site.String()[:4], err)
		}
		res.Applied += r.Applied
		res.Known += r.Known
		res.Changes = append(res.Changes, r.Changes...)
		recs, last = nil, PeerCursor{}
	}
	err := from.Log(to.Cursor(from.site).Seq+1, func(e *Entry) (bool, error) {
		last = PeerCursor{e.Seq, e.Version}
		if e.From != to.site { // else it came from there
			rec, err := from.VersionRecord(e.Version)
			if err != nil {
				return false, err
			}
			v, err := DecodeVersion(rec)
			if err != nil {
				return false, err
			}
			if err := copyContent(from, to, v.Content); err != nil {
				return false, err
			}
			recs = append(recs, Incoming{Op: e.Op, Rec: rec})
		}
		if len(recs) == n {
			apply()
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	apply()
	return res
}

func copyContent(from, to *Store, root Hash) error {
	if root.IsZero() || to.HasNode(root) {
		return nil
	}
	var nodes [][]byte
	var walk func(h Hash) error
	walk = func(h Hash) error {
		if to.HasNode(h) {
			return nil
		}
		b, err := from.ReadNode(h)
		if err != nil {
			return err
		}
		refs, leaf, err := DecodeNode(b)
		if err != nil {
			return err
		}
		for _, r := range refs {
			switch {
			case r.IsHole():
			case !leaf:
				if err := walk(r.Hash); err != nil {
					return err
				}
			case !to.HasChunk(r.Hash):
				data, err := from.ReadChunk(r.Hash)
				if err != nil {
					return err
				}
				if _, err := to.PutChunks([][]byte{data}); err != nil {
					return err
				}
			}
		}
		nodes = append(nodes, b) // children first
		return nil
	}
	if err := walk(root); err != nil {
		return err
	}
	return to.PutNodes(nodes)
}

// syncAll pulls between every pair until nothing moves.
func syncAll(t testing.TB, sites ...*Store) {
	t.Helper()
	for round := 0; ; round++ {
		if round > 20 {
			t.Fatal("replication does not settle")
		}
		moved := false
		for _, a := range sites {
			for _, b := range sites {
				if a == b {
					continue
				}
				if pull(t, a, b).Applied > 0 {
					moved = true
				}
			}
		}
		if !moved {
			return
		}
	}
}

func assertConverged(t testing.TB, sites ...*Store) {
	t.Helper()
	want := sites[0].NamespaceRoot()
	for _, s := range sites[1:] {
		if got := s.NamespaceRoot(); got != want {
			t.Errorf("roots differ after sync:\n%s\n%s", tree(t, sites[0]), tree(t, s))
		}
	}
}

// tree lists every path with its content, for comparisons and messages.
func tree(t testing.TB, s *Store) string {
	t.Helper()
	var b strings.Builder
	var walk func(dir FileID, prefix string)
	walk = func(dir FileID, prefix string) {
		if len(prefix) > 2000 {
			t.Fatalf("directory entries make a cycle: %s", prefix[:200])
		}
		ents, err := s.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ents {
			p := prefix + "/" + d.Name
			if d.Kind == KindDir {
				fmt.Fprintf(&b, "%s/\n", p)
				walk(d.ID, p)
				continue
			}
			fmt.Fprintf(&b, "%s %q\n", p, readFile(t, s, d.ID))
		}
	}
	walk(RootID, "")
	return b.String()
}

func readFile(t testing.TB, s *Store, id FileID) []byte {
	t.Helper()
	b, err := s.ReadAll(mustHead(t, s, id))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Local operations, as the mount makes them.

func mkfile(t testing.TB, s *Store, dir FileID, name string, data []byte) FileID {
	t.Helper()
	id := NewFileID()
	v := &Version{ID: id, Kind: KindFile, Links: []Link{{dir, name}}, Mode: 0o644}
	setContent(t, s, v, data)
	if err := s.Update(OpCreate, func(tx *Tx) error { _, err := tx.Create(v); return err }); err != nil {
		t.Fatal(err)
	}
	return id
}

func mkdir(t testing.TB, s *Store, dir FileID, name string) FileID {
	t.Helper()
	id := NewFileID()
	v := &Version{ID: id, Kind: KindDir, Links: []Link{{dir, name}}, Mode: 0o755}
	if err := s.Update(OpMkdir, func(tx *Tx) error { _, err := tx.Create(v); return err }); err != nil {
		t.Fatal(err)
	}
	return id
}

func setContent(t testing.TB, s *Store, v *Version, data []byte) {
	t.Helper()
	x, err := s.Rewrite(&Extents{}, []Patch{{Off: 0, Data: data}}, uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if v.Content, err = s.PutManifest(x.Refs); err != nil {
		t.Fatal(err)
	}
	v.Size, v.Alloc = uint64(len(data)), x.Data()
	s.async.wait()
}

func change(t testing.TB, s *Store, op Op, id FileID, fn func(v *Version)) {
	t.Helper()
	err := s.Update(op, func(tx *Tx) error {
		cur, err := tx.Head(id)
		if err != nil {
			return err
		}
		v := cur.Clone()
		fn(v)
		_, err = tx.Put(v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func write(t testing.TB, s *Store, id FileID, data []byte) {
	t.Helper()
	v := &Version{}
	setContent(t, s, v, data)
	change(t, s, OpWrite, id, func(n *Version) { n.Content, n.Size, n.Alloc = v.Content, v.Size, v.Alloc })
}

func move(t testing.TB, s *Store, id FileID, dir FileID, name string) {
	t.Helper()
	change(t, s, OpRename, id, func(v *Version) { v.Links = []Link{{dir, name}} })
}

func remove(t testing.TB, s *Store, id FileID) {
	t.Helper()
	change(t, s, OpUnlink, id, func(v *Version) { v.Links, v.Deleted = nil, true })
}

func lookupPath(t testing.TB, s *Store, path string) (FileID, bool) {
	t.Helper()
	id, err := s.Resolve(path)
	if errors.Is(err, ErrNotFound) {
		return FileID{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return id, true
}

func TestApplyCopiesNewFilesAndIsIdempotent(t *testing.T) {
	a, b := newTestStore(t), newTestStore(t)
	d := mkdir(t, a, RootID, "docs")
	f := mkfile(t, a, d, "a.txt", []byte("hello"))
	res := pull(t, a, b)
	if res.Applied != 2 || len(res.Changes) != 2 {
		t.Fatalf("applied %d records, %d changes; want 2, 2", res.Applied, len(res.Changes))
	}
	assertConverged(t, a, b)
	if got := readFile(t, b, f); string(got) != "hello" {
		t.Fatalf("b reads %q", got)
	}
	// Applying the same records again (a lost acknowledgement) does nothing.
	var recs []Incoming
	a.Log(1, func(e *Entry) (bool, error) {
		rec, _ := a.VersionRecord(e.Version)
		recs = append(recs, Incoming{e.Op, rec})
		return true, nil
	})
	seq := b.LastSeq()
	res, err := b.Apply(a.site, PeerCursor{Seq: 2}, recs)
	if err != nil || res.Known != 2 || res.Applied != 0 || b.LastSeq() != seq {
		t.Fatalf("second apply: %+v, %v, log grew %d → %d", res, err, seq, b.LastSeq())
	}
	// Nothing echoes back: b's entries from a are not sent to a.
	if res := pull(t, b, a); res.Applied != 0 || res.Known != 0 {
		t.Fatalf("echo: %+v", res)
	}
}

func TestApplyRefusesOrphansAndGarbage(t *testing.T) {
	a, b := newTestStore(t), newTestStore(t)
	f := mkfile(t, a, RootID, "f", nil)
	write(t, a, f, []byte("two"))
	var recs []Incoming
	a.Log(2, func(e *Entry) (bool, error) { // skip the create
		rec, _ := a.VersionRecord(e.Version)
		recs = append(recs, Incoming{e.Op, rec})
		return true, nil
	})
	copyContent(a, b, mustHead(t, a, f).Content)
	_, err := b.Apply(a.site, PeerCursor{Seq: 2}, recs)
	var me *MissingError
	if !errors.As(err, &me) || me.Content || me.Need != mustHead(t, a, f).Prev {
		t.Fatalf("apply without its parent: %v", err)
	}
	if b.Cursor(a.site).Seq != 0 || b.LastSeq() != 0 {
		t.Fatal("a failed apply moved the cursor or the log")
	}
	bad := slices.Clone(recs[0].Rec)
	bad[len(bad)-1] ^= 1
	if _, err := b.Apply(a.site, PeerCursor{Seq: 1}, []Incoming{{OpCreate, bad[:len(bad)-3]}}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated record: %v", err)
	}
	if _, err := b.Apply(a.site, PeerCursor{Seq: 1}, []Incoming{{99, recs[0].Rec}}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown op: %v", err)
	}
}

func mustHead(t testing.TB, s *Store, id FileID) *Version {
	t.Helper()
	v, err := s.Head(id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestConcurrentWritesKeepBoth(t *testing.T) {
	a, b := newTestStore(t), newTestStore(t)
	f := mkfile(t, a, RootID, "report.txt", []byte("v1"))
	syncAll(t, a, b)
	write(t, a, f, []byte("from a"))
	write(t, b, f, []byte("from b")) // later stamp: wins the name
	syncAll(t, a, b)
	assertConverged(t, a, b)
	if got := readFile(t, a, f); string(got) != "from b" {
		t.Fatalf("winner: %q", got)
	}
	ents, _ := a.ReadDir(RootID)
	if len(ents) != 2 || !strings.HasPrefix(ents[1].Name, "report.txt.conflict-"+a.site.String()[:8]+"-") {
		t.Fatalf("entries: %v", names(ents))
	}
	if got := readFile(t, b, ents[1].ID); string(got) != "from a" {
		t.Fatalf("conflict copy holds %q", got)
	}
	// Both versions are in the history at both sites.
	for _, s := range []*Store{a, b} {
		vs, _, err := s.History(f)
		if err != nil {
			t.Fatal(err)
		}
		var sizes []uint64
		for _, v := range vs {
			sizes = append(sizes, v.Size)
		}
		if len(vs) != 4 { // merge, from b, from a, v1
			t.Fatalf("history has %d versions (sizes %v)", len(vs), sizes)
		}
	}
	// Later edits at either site go on from the merge without new conflicts.
	write(t, a, f, []byte("after"))
	syncAll(t, a, b)
	assertConverged(t, a, b)
	if ents, _ := b.ReadDir(RootID); len(ents) != 2 {
		t.Fatalf("entries after a later edit: %v", names(ents))
	}
}

func names(ents []Dirent) []string {
	var out []string
	for _, d := range ents {
		out = append(out, d.Name)
	}
	return out
}

func TestModifyBeatsDelete(t *testing.T) {
	for _, deleterLater := range []bool{false, true} {
		a, b := newTestStore(t), newTestStore(t)
		f := mkfile(t, a, RootID, "f", []byte("v1"))
		syncAll(t, a, b)
		if deleterLater {
			write(t, a, f, []byte("kept"))
			remove(t, b, f)
		} else {
			remove(t, b, f)
			write(t, a, f, []byte("kept"))
		}
		syncAll(t, a, b)
		assertConverged(t, a, b)
		id, ok := lookupPath(t, b, "/f")
		if !ok || string(readFile(t, b, id)) != "kept" {
			t.Fatalf("deleter later %v: the modified file is gone:\n%s", deleterLater, tree(t, b))
		}
	}
}

func TestRenameAndWriteMerge(t *testing.T) {
	a, b := newTestStore(t), newTestStore(t)
	f := mkfile(t, a, RootID, "f", []byte("v1"))
	syncAll(t, a, b)
	move(t, a, f, RootID, "g")
	write(t, b, f, []byte("v2"))
	syncAll(t, a, b)
	assertConverged(t, a, b)
	if got := tree(t, a); got != "/g \"v2\"\n" {
		t.Fatalf("want the file renamed and written, no conflict copy:\n%s", got)
	}
}

func TestSameNameCreatedAtTwoSites(t *testing.T) {
	a, b := newTestStore(t), newTestStore(t)
	mkfile(t, a, RootID, "x", []byte("from a"))
	mkfile(t, b, RootID, "x", []byte("from b"))
	syncAll(t, a, b)
	assertConverged(t, a, b)
	ents, _ := a.ReadDir(RootID)
	if len(ents) != 2 || ents[0].Name != "x" || !strings.HasPrefix(ents[1].Name, "x.conflict-") {
		t.Fatalf("entries: %v", names(ents))
	}
	got := []string{string(readFile(t, a, ents[0].ID)), string(readFile(t, a, ents[1].ID))}
	slices.Sort(got)
	if got[0] != "from a" || got[1] != "from b" {
		t.Fatalf("contents: %q", got)
	}
}

func TestCreateInDirectoryDeletedElsewhere(t *testing.T) {
	a, b := newTestStore(t), newTestStore(t)
	d := mkdir(t, a, RootID, "d")
	syncAll(t, a, b)
	remove(t, a, d)
	mkfile(t, b, d, "new", []byte("data"))
	syncAll(t, a, b)
	assertConverged(t, a, b)
	if _, ok := lookupPath(t, a, "/d/new"); !ok {
		t.Fatalf("the new file is lost:\n%s", tree(t, a))
	}
}

func TestConcurrentMovesMakingACycle(t *testing.T) {
	a, b := newTestStore(t), newTestStore(t)
	x := mkdir(t, a, RootID, "x")
	y := mkdir(t, a, RootID, "y")
	mkfile(t, a, x, "in-x", []byte("1"))
	mkfile(t, a, y, "in-y", []byte("2"))
	syncAll(t, a, b)
	move(t, a, x, y, "x") // /y/x
	move(t, b, y, x, "y") // /x/y
	syncAll(t, a, b)
	assertConverged(t, a, b)
	got := tree(t, a)
	if !strings.Contains(got, "in-x") || !strings.Contains(got, "in-y") {
		t.Fatalf("a subtree was lost:\n%s", got)
	}
}

func TestChainForwardsAndMeshDoesNotEcho(t *testing.T) {
	a, b, c := newTestStore(t), newTestStore(t), newTestStore(t)
	f := mkfile(t, a, RootID, "f", []byte("x"))
	pull(t, a, b)
	pull(t, b, c) // A→B→C
	if got := readFile(t, c, f); string(got) != "x" {
		t.Fatalf("c reads %q", got)
	}
	syncAll(t, a, b, c)
	assertConverged(t, a, b, c)
	for _, s := range []*Store{a, b, c} {
		if n := s.LastSeq(); n != 1 {
			t.Fatalf("a site logged %d entries for one create (echo)", n)
		}
	}
}

// TestRandomConvergence runs random operations at several sites with
// random partial exchanges, then syncs everything: all roots must be equal
// and every version any site committed must be everywhere.
func TestRandomConvergence(t *testing.T) {
	seeds, ops := 20, 200
	if testing.Short() {
		seeds, ops = 3, 100
	}
	if os.Getenv("GEOFS_LONG") != "" { // make test-long
		seeds, ops = 300, 500
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			randomConvergence(t, uint64(seed), 3+seed%4, ops)
		})
	}
}

func randomConvergence(t *testing.T, seed uint64, nsites, nops int) {
	randomConvergenceSites(t, seed, nsites, nops)
}

func randomConvergenceSites(t *testing.T, seed uint64, nsites, nops int) []*Store {
	r := rand.New(rand.NewPCG(seed, 1))
	sites := make([]*Store, nsites)
	for i := range sites {
		sites[i] = newTestStore(t)
	}
	var committed []Hash
	for range nops {
		s := sites[r.IntN(nsites)]
		randomOp(t, r, s)
		if r.IntN(3) == 0 {
			from, to := sites[r.IntN(nsites)], sites[r.IntN(nsites)]
			if from != to {
				pull(t, from, to)
			}
		}
	}
	for _, s := range sites {
		s.Log(1, func(e *Entry) (bool, error) {
			committed = append(committed, e.Version)
			return true, nil
		})
	}
	syncAll(t, sites...)
	for _, h := range committed {
		for i, s := range sites {
			if !s.HasVersion(h) {
				t.Errorf("site %d lacks version %s", i, h.Short())
			}
		}
	}
	assertConverged(t, sites...)
	for i, s := range sites {
		if _, err := s.Fsck(func(p Problem) { t.Errorf("site %d: fsck: %v", i, p) }); err != nil {
			t.Fatal(err)
		}
	}
	return sites
}

// randomOp makes one random change at s, as a user of its mount could.
func randomOp(t *testing.T, r *rand.Rand, s *Store) {
	var files, dirs []Dirent
	dirs = append(dirs, Dirent{ID: RootID, Kind: KindDir})
	var walk func(FileID)
	walk = func(dir FileID) {
		ents, _ := s.ReadDir(dir)
		for _, d := range ents {
			if d.Kind == KindDir {
				dirs = append(dirs, d)
				walk(d.ID)
			} else {
				files = append(files, d)
			}
		}
	}
	walk(RootID)
	name := []string{"a", "b", "c", "d"}[r.IntN(4)]
	dir := dirs[r.IntN(len(dirs))].ID
	free := func() bool { _, _, err := s.Lookup(dir, name); return errors.Is(err, ErrNotFound) }
	switch k := r.IntN(8); {
	case k == 0 && free():
		mkdir(t, s, dir, name)
	case k <= 2 && free():
		mkfile(t, s, dir, name, fmt.Appendf(nil, "%d", r.Uint32()))
	case k == 3 && len(files) > 0:
		write(t, s, files[r.IntN(len(files))].ID, fmt.Appendf(nil, "w%d", r.Uint32()))
	case k == 4 && len(files) > 0 && free():
		move(t, s, files[r.IntN(len(files))].ID, dir, name)
	case k == 5 && len(dirs) > 1 && free():
		d := dirs[1+r.IntN(len(dirs)-1)]
		if !isUnder(t, s, dir, d.ID) {
			move(t, s, d.ID, dir, name)
		}
	case k == 6 && len(files) > 0:
		remove(t, s, files[r.IntN(len(files))].ID)
	case k == 7 && len(dirs) > 1:
		d := dirs[1+r.IntN(len(dirs)-1)]
		if ents, _ := s.ReadDir(d.ID); len(ents) == 0 {
			remove(t, s, d.ID)
		}
	}
}

// isUnder reports whether dir is d or inside it.
func isUnder(t *testing.T, s *Store, dir, d FileID) bool {
	for id := dir; ; {
		if id == d {
			return true
		}
		if id == RootID {
			return false
		}
		id = mustHead(t, s, id).Links[0].Parent
	}
}

// A restarted site's clock starts past every stamp it recorded, not only
// the last txlog entry's: here the last entry is a record from a peer with
// a slower clock, after one from a peer an hour ahead. A change made after
// the restart must be newer than the version it follows, or it loses to
// what it replaced wherever stamps decide (a merge's winner). The site's
// chmod back to 0600 must then hold at every site after a concurrent
// write from a third one, newer still, is merged in.
func TestRestartedClockStartsPastTheNewestStamp(t *testing.T) {
	dirA := initTestSite(t)
	a := openTestSite(t, dirA)
	b, c, d := newTestStore(t), newTestStore(t), newTestStore(t)
	f := mkfile(t, a, RootID, "f", []byte("base"))
	change(t, a, OpSetattr, f, func(v *Version) { v.Mode = 0o600 })
	syncAll(t, a, b, c, d)

	b.clock = hlc.NewClock(func() time.Time { return time.Now().Add(time.Hour) })
	d.clock = hlc.NewClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
	change(t, b, OpSetattr, f, func(v *Version) { v.Mode = 0o666 }) // an hour ahead
	mkfile(t, c, RootID, "g", []byte("g"))                          // now
	pull(t, b, a)
	pull(t, c, a) // a's last txlog entry: g's, an hour older than f's head
	y := mustHead(t, a, f)

	a.Close()
	a = openTestSite(t, dirA)
	defer a.Close()
	change(t, a, OpSetattr, f, func(v *Version) { v.Mode = 0o600 })
	if x := mustHead(t, a, f); x.Stamp.Time <= y.Stamp.Time {
		t.Fatalf("a version made after the restart (%d) is not newer than the version it follows (%d)", x.Stamp.Time, y.Stamp.Time)
	}
	write(t, d, f, []byte("from d")) // concurrent, two hours ahead
	pull(t, b, c)
	pull(t, d, c)
	pull(t, a, c)
	syncAll(t, a, b, c, d)
	assertConverged(t, a, b, c, d)
	for i, s := range []*Store{a, b, c, d} {
		if m := mustHead(t, s, f).Mode; m != 0o600 {
			t.Errorf("site %d: mode %#o, want 0600 (the chmod after the restart)", i, m)
		}
	}
}

// One writer rewrites four files and renames them over each other; a
// replica that receives its log, in batches of any size, must reach the
// same tree and make no record of its own. A record a later record of its
// batch descends from used to be integrated last, out of the log's order:
// a rename-over's move came after the next file took the name it freed,
// and the replica resolved a name clash the writer never had, then merged
// the writer's next version with that resolution (found by a stress run).
func TestOneWritersRenamesOverReachAReplicaAsTheyWere(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 50, 1 << 20} {
		a, b := newTestStore(t), newTestStore(t)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range 1000 {
			from, to := fmt.Sprintf("f%d", r.IntN(4)), fmt.Sprintf("f%d", r.IntN(4))
			id, ok := lookupPath(t, a, "/"+from)
			switch {
			case !ok:
				mkfile(t, a, RootID, from, fmt.Appendf(nil, "c%d", i))
			case r.IntN(2) == 0:
				write(t, a, id, fmt.Appendf(nil, "w%d", i))
			case from != to:
				renameOver(t, a, id, to)
			}
		}
		pullEach(t, a, b, n)
		assertConverged(t, a, b)
		own := 0
		err := b.Log(1, func(e *Entry) (bool, error) {
			if e.Op == OpMerge || e.Op == OpResolve {
				own++
			}
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if own > 0 {
			t.Errorf("batches of %d: the replica made %d merge and resolution records of its own", n, own)
		}
	}
}

// renameOver renames file id to name in the root, over a file there, as
// rename(2) does: one change that deletes the file replaced.
func renameOver(t testing.TB, s *Store, id FileID, name string) {
	t.Helper()
	err := s.Update(OpRename, func(tx *Tx) error {
		if dst, _, err := tx.Lookup(RootID, name); err == nil {
			v, err := tx.Head(dst)
			if err != nil {
				return err
			}
			nv := v.Clone()
			nv.Links, nv.Deleted = nil, true
			if _, err := tx.Put(nv); err != nil {
				return err
			}
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		v, err := tx.Head(id)
		if err != nil {
			return err
		}
		nv := v.Clone()
		nv.Links = []Link{{RootID, name}}
		_, err = tx.Put(nv)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A (content writer) and B (renamer) both descend from L, A's write; A's
// history also merged C's chmod q, which descends from O, L's parent. The
// merge of A's and B's heads must be taken against L: only A changed the
// content since, so there is nothing to keep as a conflict copy. The
// walk that went a level of each side in turn met at O first (B's walk
// reached O, which A's reached through q, before A's walk reached L) and
// kept B's content, which B never changed, as a conflict copy (found by
// review).
func TestMergeBaseIsTheNearestCommonAncestor(t *testing.T) {
	a, b, c := newTestStore(t), newTestStore(t), newTestStore(t)
	f := mkfile(t, a, RootID, "f", []byte("O")) // O
	pull(t, a, b)
	pull(t, a, c)
	change(t, c, OpSetattr, f, func(v *Version) { v.Mode = 0o600 }) // q
	write(t, a, f, []byte("L"))                                     // L
	pull(t, a, b)
	move(t, b, f, RootID, "g1") // b1..b3: B renames three times
	move(t, b, f, RootID, "g2")
	move(t, b, f, RootID, "g3")
	write(t, a, f, []byte("w1"))
	write(t, a, f, []byte("w2"))
	write(t, a, f, []byte("w3"))
	pull(t, c, a)               // m = merge(w3, q)
	write(t, a, f, []byte("a")) // a: the newest, wins
	pull(t, a, b)
	out := tree(t, b)
	if strings.Contains(out, "conflict") {
		t.Errorf("B made a conflict copy of content it never changed:\n%s", out)
	}
	if h := mustHead(t, b, f); len(h.Links) != 1 || h.Links[0].Name != "g3" || string(readFile(t, b, f)) != "a" || h.Mode != 0o600 {
		t.Errorf("merged head: %v %q %#o; want g3, \"a\", 0600", h.Links, readFile(t, b, f), h.Mode)
	}
}
