package store

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/geofs/geofs/internal/codec"
	"github.com/geofs/geofs/store/cdc"
)

func newTestStore(t testing.TB) *Store {
	t.Helper()
	s := openTestSite(t, initTestSite(t))
	t.Cleanup(func() { s.Close() })
	return s
}

// initTestSite makes a site for a test that opens and closes it itself.
func initTestSite(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "site")
	if _, err := Init(dir, InitOptions{Name: "test"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// openTestSite opens the site in dir, keeping no free-space reserve.
func openTestSite(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	s.reserve = 0
	return s
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestInodeNumbers checks that inode numbers fit in a signed 64-bit
// integer, never collide with the root's or zero, and come from the id.
func TestInodeNumbers(t *testing.T) {
	if RootID.Ino() != 1 {
		t.Fatalf("root ino %d, want 1", RootID.Ino())
	}
	for _, c := range []struct {
		id   FileID
		want uint64
	}{
		{FileID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 9}, 1<<63 - 1},
		{FileID{0x80, 15: 7}, 2},      // top bit only: 0, moved off 0
		{FileID{0x80, 7: 1, 8: 3}, 3}, // 1 is the root's
		{FileID{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0}, 0x123456789abcdef0},
	} {
		if got := c.id.Ino(); got != c.want {
			t.Errorf("%s: ino %#x, want %#x", c.id, got, c.want)
		}
	}
	for range 10000 {
		if ino := NewFileID().Ino(); ino >= 1<<63 || ino <= 1 {
			t.Fatalf("ino %#x out of range", ino)
		}
	}
}

func TestVersionRoundTrip(t *testing.T) {
	v := &Version{ID: NewFileID(), Kind: KindFile, Links: []Link{{RootID, "b"}, {RootID, "a"}},
		Mode: 0o4755, UID: 1000, GID: 100, Size: 1 << 40, Alloc: 1 << 39, Mtime: -5, Ctime: 7,
		Content: Sum([]byte("x")), Xattrs: []Xattr{{"user.z", []byte{1}}, {"user.a", nil}},
		Prev: Sum([]byte("p")), Stamp: Stamp{Time: 99, Site: SiteID{1}}}
	v.Normalize()
	got, err := DecodeVersion(v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != v.Hash() || got.Links[0].Name != "a" || got.Xattrs[0].Name != "user.a" {
		t.Fatalf("round trip changed the record: %+v", got)
	}
}

func TestDecodeVersionRejectsDamage(t *testing.T) {
	v := RootVersion()
	enc := v.Encode()
	for i := range enc {
		if _, err := DecodeVersion(enc[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
	bad := append([]byte(nil), enc...)
	bad[18] = 9 // kind
	if _, err := DecodeVersion(bad); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

func FuzzDecodeVersion(f *testing.F) {
	f.Add(RootVersion().Encode())
	v := &Version{ID: NewFileID(), Kind: KindLink, Links: []Link{{RootID, "l"}}, Target: "/x", Xattrs: []Xattr{{"user.k", []byte("v")}}}
	f.Add(v.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeVersion(b)
		if err != nil {
			return
		}
		if !bytes.Equal(v.Encode(), b) {
			t.Fatalf("decode/encode not canonical")
		}
	})
}

func FuzzDecodeNode(f *testing.F) {
	f.Add(encodeNode(leafTag, []Ref{{Sum(nil), 5}, {Hash{}, 1 << 40}}))
	f.Add(encodeNode(interiorTag, []Ref{{Sum(nil), 5}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		refs, leaf, err := DecodeNode(b)
		if err != nil {
			return
		}
		tag := byte(interiorTag)
		if leaf {
			tag = leafTag
		}
		if !bytes.Equal(encodeNode(tag, refs), b) {
			t.Fatalf("decode/encode not canonical")
		}
	})
}

func FuzzDecodeEntry(f *testing.F) {
	e := &Entry{Seq: 3, Time: 4, Op: OpWrite, File: NewFileID(), Version: Sum(nil)}
	f.Add(e.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Encode(), b) {
			t.Fatalf("decode/encode not canonical")
		}
	})
}

func TestManifestSmallChangeRewritesFewNodes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	refs := make([]Ref, 5000)
	for i := range refs {
		refs[i] = Ref{Sum(randBytes(r, 8)), 1 << 20}
	}
	nodes := map[Hash]bool{}
	put := func(h Hash, _ []byte) error { nodes[h] = true; return nil }
	root1, _ := BuildManifest(refs, put)
	before := len(nodes)
	refs[2500].Hash = Sum([]byte("changed"))
	root2, _ := BuildManifest(refs, put)
	if root1 == root2 {
		t.Fatal("root did not change")
	}
	if added := len(nodes) - before; added > 4 {
		t.Fatalf("one changed chunk added %d nodes, want O(log n) <= 4", added)
	}
	get := func(h Hash) ([]byte, error) {
		var out []byte
		_, err := BuildManifest(refs, func(hh Hash, b []byte) error {
			if hh == h {
				out = b
			}
			return nil
		})
		return out, err
	}
	x, err := FlattenManifest(root2, get)
	if err != nil || len(x.Refs) != len(refs) || x.Refs[2500] != refs[2500] {
		t.Fatalf("flatten: %v, %d refs", err, len(x.Refs))
	}
}

// model applies patches and a size to plain bytes, for checking Rewrite.
func model(base []byte, patches []Patch, size uint64) []byte {
	out := make([]byte, max(uint64(len(base)), size))
	copy(out, base)
	for _, p := range patches {
		if p.End() > uint64(len(out)) {
			out = append(out, make([]byte, p.End()-uint64(len(out)))...)
		}
		copy(out[p.Off:], p.Data)
		clear(out[p.Off+uint64(len(p.Data)) : p.End()])
	}
	return out[:size]
}

func readAll(t *testing.T, s *Store, x *Extents) []byte {
	t.Helper()
	b := make([]byte, x.Size)
	if n, err := s.ReadAt(x, b, 0); err != nil || uint64(n) != x.Size {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	return b
}

func TestRewriteMatchesModel(t *testing.T) {
	old := chunkParams
	chunkParams = cdc.Params{Min: 2 << 10, Avg: 8 << 10, Max: 32 << 10}
	t.Cleanup(func() { chunkParams = old })
	s := newTestStore(t)
	r := rand.New(rand.NewPCG(7, 7))
	x, content := &Extents{}, []byte(nil)
	for round := range 300 {
		size := uint64(len(content))
		var patches []Patch
		off := uint64(0)
		for range r.IntN(4) {
			off += uint64(r.IntN(200_000))
			p := Patch{Off: off, Data: randBytes(r, 1+r.IntN(40_000))}
			switch r.IntN(5) {
			case 0:
				p.Data = make([]byte, len(p.Data)) // zeros, to mix with holes
			case 1:
				p = Patch{Off: off, Zeros: 1 + uint64(r.IntN(60_000))} // a punched hole
			}
			patches = append(patches, p)
			off = p.End() + 1
			size = max(size, p.End())
		}
		if r.IntN(5) == 0 {
			size = uint64(r.IntN(int(size) + 100_000)) // truncate or extend
		}
		next, err := s.Rewrite(x, patches, size)
		if err != nil {
			t.Fatal(err)
		}
		want := model(content, patches, size)
		if got := readAll(t, s, next); !bytes.Equal(got, want) {
			t.Fatalf("round %d: content differs from model (size %d vs %d)", round, len(got), len(want))
		}
		for i, ref := range next.Refs {
			if !ref.IsHole() && ref.Len > uint64(chunkParams.Max) {
				t.Fatalf("round %d: chunk %d is %d bytes", round, i, ref.Len)
			}
		}
		for _, p := range patches {
			// A patch of zeros is a hole, not stored zeros.
			for x := p.Off; p.Zeros > 0 && x < min(p.End(), size); {
				k := next.Find(x)
				if !next.Refs[k].IsHole() {
					t.Fatalf("round %d: zeros at %d are stored, not a hole", round, x)
				}
				x = next.Offs[k] + next.Refs[k].Len
			}
		}
		x, content = next, want
	}
}

// rewriteRandom stores n random bytes as new content in one patch.
func rewriteRandom(t *testing.T, s *Store, src rand.Source, n int) ([]byte, *Extents) {
	t.Helper()
	data := randBytes(rand.New(src), n)
	x, err := s.Rewrite(&Extents{}, []Patch{{Off: 0, Data: data}}, uint64(n))
	if err != nil {
		t.Fatal(err)
	}
	return data, x
}

func TestRewriteSmallWriteRechunksLittle(t *testing.T) {
	s := newTestStore(t)
	_, x := rewriteRandom(t, s, rand.NewPCG(3, 4), 64<<20)
	y, err := s.Rewrite(x, []Patch{{Off: 32 << 20, Data: []byte("hello")}}, x.Size)
	if err != nil {
		t.Fatal(err)
	}
	old := map[Hash]bool{}
	for _, r := range x.Refs {
		old[r.Hash] = true
	}
	changed := 0
	for _, r := range y.Refs {
		if !old[r.Hash] {
			changed++
		}
	}
	if changed == 0 || changed > 2 {
		t.Fatalf("a 5-byte write changed %d of %d chunks, want 1 or 2", changed, len(y.Refs))
	}
}

func TestAppendInPiecesChunksLikeOneWrite(t *testing.T) {
	s := newTestStore(t)
	data, whole := rewriteRandom(t, s, rand.NewPCG(5, 6), 24<<20)
	// The rewriter's cuts (candidates found ahead, in parallel) are the
	// chunker's.
	lens := chunkParams.Split(data)
	if len(lens) != len(whole.Refs) {
		t.Fatalf("rewrite made %d chunks, Split %d", len(whole.Refs), len(lens))
	}
	for i, n := range lens {
		if whole.Refs[i].Len != uint64(n) {
			t.Fatalf("chunk %d: %d bytes, Split says %d", i, whole.Refs[i].Len, n)
		}
	}
	x, err := &Extents{}, error(nil)
	for off := 0; off < len(data); off += 3 << 20 {
		piece := data[off:min(off+3<<20, len(data))]
		if x, err = s.Rewrite(x, []Patch{{Off: uint64(off), Data: piece}}, uint64(off+len(piece))); err != nil {
			t.Fatal(err)
		}
	}
	if len(x.Refs) != len(whole.Refs) {
		t.Fatalf("appending in pieces made %d chunks, one write %d", len(x.Refs), len(whole.Refs))
	}
	for i := range x.Refs {
		if x.Refs[i] != whole.Refs[i] {
			t.Fatalf("chunk %d differs: boundaries depend on commit timing", i)
		}
	}
}

// Chunks are cut the same whether the new bytes come in one patch (cut
// straight out of it) or in many (copied where a chunk spans two).
func TestPatchLayoutDoesNotMoveBoundaries(t *testing.T) {
	s := newTestStore(t)
	data, whole := rewriteRandom(t, s, rand.NewPCG(8, 9), 40<<20)
	for _, piece := range []int{1 << 20, 16 << 20, 333_333} {
		var patches []Patch
		for off := 0; off < len(data); off += piece {
			patches = append(patches, Patch{Off: uint64(off), Data: data[off:min(off+piece, len(data))]})
		}
		x, err := s.Rewrite(&Extents{}, patches, uint64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if len(x.Refs) != len(whole.Refs) {
			t.Fatalf("patches of %d bytes: %d chunks, one patch %d", piece, len(x.Refs), len(whole.Refs))
		}
		for i := range x.Refs {
			if x.Refs[i] != whole.Refs[i] {
				t.Fatalf("patches of %d bytes: chunk %d differs", piece, i)
			}
		}
	}
}

func TestChunkDedupAndCorruption(t *testing.T) {
	s := newTestStore(t)
	r := rand.New(rand.NewPCG(8, 9))
	data := append(bytes.Repeat([]byte("geofs "), 50_000), randBytes(r, 200_000)...)
	refs, err := s.PutChunks([][]byte{data, data})
	if err != nil || refs[0] != refs[1] {
		t.Fatalf("PutChunks: %v %v", refs, err)
	}
	h := refs[0].Hash
	if h != ChunkID(data) {
		t.Fatal("chunk id is not ChunkID of its bytes")
	}
	got, err := s.ReadChunk(h)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadChunk: %v", err)
	}
	// Damage one stored byte of the last block behind the store's back.
	b, _ := s.getValue(hashKey(pChunk, h))
	loc, _ := decodeLoc(b)
	f, err := os.OpenFile(s.packs.path(loc.Pack), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff, 0xfe}, int64(loc.Off)+int64(loc.HdrLen)+int64(loc.DataLen)-10)
	f.Close()
	s.bcache, s.headers = newBlockCache(1<<20), newLRU[Hash, headerAt](10)
	if _, err := s.ReadChunk(h); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt chunk read: err = %v, want ErrCorrupt", err)
	}
	// Blocks before the damage still read, and their bytes are right.
	p := make([]byte, 5000)
	if err := s.readLocal(h, p, 20_000); err != nil || !bytes.Equal(p, data[20_000:25_000]) {
		t.Fatalf("undamaged block: %v", err)
	}
	if err := s.readLocal(h, p, len(data)-5000); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged block: err = %v, want ErrCorrupt", err)
	}
}

func TestBlocksCompressPerBlock(t *testing.T) {
	s := newTestStore(t)
	text := bytes.Repeat([]byte("all work and no play makes a dull filesystem\n"), 20_000)
	refs, err := s.PutChunks([][]byte{text})
	if err != nil {
		t.Fatal(err)
	}
	ha, err := s.header(refs[0].Hash)
	if err != nil {
		t.Fatal(err)
	}
	if ha.hdr.dataLen() > len(text)/4 || ha.hdr.blocks[0].codec != codecZstd {
		t.Fatalf("text stored in %d bytes (of %d)", ha.hdr.dataLen(), len(text))
	}
	s.bcache = newBlockCache(1 << 20)
	p := make([]byte, 40_000)
	if err := s.readLocal(refs[0].Hash, p, 123_457); err != nil || !bytes.Equal(p, text[123_457:163_457]) {
		t.Fatalf("readRange: %v", err)
	}
}

func FuzzDecodeHeader(f *testing.F) {
	data := bytes.Repeat([]byte("x"), 40_000)
	leaves := blockHashes(data)
	hd := &chunkHeader{id: rootHash(len(data), leaves), size: len(data)}
	for _, l := range leaves {
		hd.blocks = append(hd.blocks, blockInfo{stored: BlockSize, hash: l})
	}
	hd.blocks[2].stored = uint32(len(data) - 2*BlockSize)
	f.Add(hd.encode(), hd.id[:])
	f.Fuzz(func(t *testing.T, b, want []byte) {
		var w Hash
		copy(w[:], want)
		got, err := decodeHeader(b, w)
		if err != nil {
			return
		}
		if got.id != w || !bytes.Equal(got.encode(), b) {
			t.Fatal("accepted header does not round-trip")
		}
	})
}

// A block's stored bytes come from a pack, the cache or a peer: whatever
// they are, decoding gives the plain block its header's hash names, or an
// error wrapping ErrCorrupt.
func FuzzDecodeBlock(f *testing.F) {
	s := newTestStore(f)
	plain := bytes.Repeat([]byte("geofs block "), BlockSize/12+1)[:BlockSize]
	hd := &chunkHeader{size: BlockSize, blocks: []blockInfo{{codec: codecZstd, hash: blockHash(plain)}}}
	f.Add(s.zenc.EncodeAll(plain, nil))
	f.Add(plain)
	f.Fuzz(func(t *testing.T, stored []byte) {
		got, err := s.decodeBlock(hd, 0, stored)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if !bytes.Equal(got, plain) {
			t.Fatal("decoded bytes that are not the block's")
		}
	})
}

func TestUpdateIndexesLogAndRoot(t *testing.T) {
	s := newTestStore(t)
	root0 := s.NamespaceRoot()
	id := NewFileID()
	err := s.Update(OpCreate, func(tx *Tx) error {
		_, err := tx.Put(&Version{ID: id, Kind: KindFile, Links: []Link{{RootID, "f"}}, Mode: 0o644})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, kind, err := s.Lookup(RootID, "f"); err != nil || got != id || kind != KindFile {
		t.Fatalf("Lookup: %v %v %v", got, kind, err)
	}
	root1 := s.NamespaceRoot()
	if root1 == root0 {
		t.Fatal("namespace root did not change")
	}
	err = s.Update(OpRename, func(tx *Tx) error {
		v, _ := tx.Head(id)
		v = v.Clone()
		v.Links = []Link{{RootID, "g"}}
		_, err := tx.Put(v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Lookup(RootID, "f"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old name still there: %v", err)
	}
	ents, _ := s.ReadDir(RootID)
	if len(ents) != 1 || ents[0].Name != "g" {
		t.Fatalf("ReadDir = %+v", ents)
	}
	// The entry's record decodes on demand, checked against its hash.
	head, _ := s.Head(id)
	if v, err := ents[0].Load(); err != nil || v.StoredHash() != head.StoredHash() || v.Links[0].Name != "g" {
		t.Fatalf("Load: %v, %+v", err, v)
	}
	bad := ents[0]
	bad.Version, bad.record = nil, bytes.Clone(bad.record)
	bad.record[len(bad.record)-1] ^= 1
	if _, err := bad.Load(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Load of a damaged record: %v, want ErrCorrupt", err)
	}
	vs, hs, err := s.History(id)
	if err != nil || len(vs) != 2 || vs[0].Prev != hs[1] {
		t.Fatalf("History: %d versions, %v", len(vs), err)
	}
	var ops []Op
	s.Log(0, func(e *Entry) (bool, error) { ops = append(ops, e.Op); return true, nil })
	if len(ops) != 2 || ops[0] != OpCreate || ops[1] != OpRename {
		t.Fatalf("txlog ops = %v", ops)
	}
	// A failed update commits nothing.
	wantErr := errors.New("stop")
	err = s.Update(OpUnlink, func(tx *Tx) error {
		v, _ := tx.Head(id)
		v = v.Clone()
		v.Links, v.Deleted = nil, true
		tx.Put(v)
		return wantErr
	})
	if !errors.Is(err, wantErr) {
		t.Fatal(err)
	}
	s.versions = newLRU[FileID, *Version](10)
	if v, _ := s.Head(id); v.Deleted || s.LastSeq() != 2 {
		t.Fatalf("failed update left changes: deleted=%v seq=%d", v.Deleted, s.LastSeq())
	}
}

func TestReopenKeepsLogAndRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "site")
	if _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	s.Update(OpMkdir, func(tx *Tx) error {
		_, err := tx.Put(&Version{ID: NewFileID(), Kind: KindDir, Links: []Link{{RootID, "d"}}, Mode: 0o755})
		return err
	})
	root, seq := s.NamespaceRoot(), s.LastSeq()
	s.Close()
	s, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.NamespaceRoot() != root || s.LastSeq() != seq {
		t.Fatal("reopen lost the namespace root or txlog position")
	}
	st, _ := s.DirState(RootID)
	if st.Subdirs != 1 {
		t.Fatalf("root subdirs = %d", st.Subdirs)
	}
}

func TestInitRefusesNonEmptyDir(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(dir, InitOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second init: %v", err)
	}
}

func FuzzDecodeDirent(f *testing.F) {
	v := &Version{ID: NewFileID(), Kind: KindFile, Links: []Link{{RootID, "a"}}, Mode: 0o644}
	enc := v.Encode()
	f.Add(encodeDirent(v, Sum(enc), enc))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDirent("a", b, true)
		if err != nil {
			return
		}
		enc := d.Version.Encode()
		if Sum(enc) != d.Hash || !bytes.Equal(encodeDirent(d.Version, d.Hash, enc), b) {
			t.Fatal("accepted entry does not round-trip")
		}
	})
}

func FuzzDecodeLoc(f *testing.F) {
	f.Add(chunkLoc{Pack: 1, Off: 99, HdrLen: recordFixed + recordPerBlock, DataLen: 5}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLoc(b)
		if err != nil {
			return
		}
		if !bytes.Equal(l.encode(), b) {
			t.Fatal("accepted location does not round-trip")
		}
	})
}

// Directory states are cached; the cache follows commits and ignores
// transactions that fail.
func TestDirStateCacheFollowsCommits(t *testing.T) {
	s := newTestStore(t)
	mkdir := func(name string, fail bool) error {
		return s.Update(OpMkdir, func(tx *Tx) error {
			if _, err := tx.Put(&Version{ID: NewFileID(), Kind: KindDir, Links: []Link{{RootID, name}}, Mode: 0o755}); err != nil {
				return err
			}
			if fail {
				return ErrCorrupt
			}
			return nil
		})
	}
	before, _ := s.DirState(RootID) // cached from here on
	if err := mkdir("a", false); err != nil {
		t.Fatal(err)
	}
	st, _ := s.DirState(RootID)
	if st.Subdirs != before.Subdirs+1 || st.Mtime <= before.Mtime {
		t.Fatalf("after mkdir: %+v (before %+v)", st, before)
	}
	if err := mkdir("b", true); err == nil {
		t.Fatal("failing update succeeded")
	}
	if again, _ := s.DirState(RootID); again != st {
		t.Fatalf("a failed update moved the cached state: %+v, want %+v", again, st)
	}
	// The cache agrees with the store, once written to Badger.
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	var stored DirState
	s.db.View(func(txn *badger.Txn) error {
		var err error
		stored, err = dirStateIn(txnGetter{txn}, RootID)
		return err
	})
	if stored != st {
		t.Fatalf("store has %+v, cache %+v", stored, st)
	}
	if err := mkdir("c", false); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.DirState(RootID); st.Subdirs != before.Subdirs+2 {
		t.Fatalf("after a second mkdir: %+v", st)
	}
}

// A record written before Alloc existed (format 1, bytes from the code of
// that time) still decodes, counts every byte as allocated, and encodes to
// the same bytes, so its hash, and every hash chained to it, stands. A
// change to it is written in the current format.
func TestFormat1VersionStillReads(t *testing.T) {
	const v1 = "56010102030000000000000000000000000001010000000000000000000000000000000106737061727365a403e807648080808014008080d0e2c6bfce972f8280d0e2c6bfce972f0d197521d9a48760576da1c87dfd828a60d397ea1e16f92a5b7c44b4f4060ce1000000000000000000000000000000000000000000000000000000000000000000000000002a09000000000000000000000000000000"
	b, _ := hex.DecodeString(v1)
	v, err := DecodeVersion(b)
	if err != nil {
		t.Fatal(err)
	}
	if v.Size != 5<<30 || v.Alloc != v.Size || v.Links[0].Name != "sparse" {
		t.Fatalf("decoded size %d, alloc %d, links %v", v.Size, v.Alloc, v.Links)
	}
	if !bytes.Equal(v.Encode(), b) || v.Hash() != Sum(b) {
		t.Fatal("a format 1 record does not encode to its own bytes")
	}
	c := v.Clone()
	c.Alloc = 0
	if e := c.Encode(); e[1] != formatVersion {
		t.Fatalf("a changed record is written in format %d", e[1])
	} else if d, err := DecodeVersion(e); err != nil || d.Alloc != 0 || d.Size != v.Size {
		t.Fatalf("format %d round trip: %+v, %v", formatVersion, d, err)
	}
}

func TestVersionRejectsImpossibleAlloc(t *testing.T) {
	for _, v := range []*Version{
		{ID: NewFileID(), Kind: KindFile, Size: 10, Alloc: 11},
		{ID: NewFileID(), Kind: KindDir, Alloc: 1},
	} {
		if _, err := DecodeVersion(v.Encode()); !errors.Is(err, codec.ErrMalformed) {
			t.Fatalf("%v with %d of %d allocated: err = %v", v.Kind, v.Alloc, v.Size, err)
		}
	}
}
