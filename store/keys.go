package store

import "encoding/binary"

// Badger key spaces. Each key starts with one prefix byte; docs/FORMAT.md
// describes the values.
const (
	pChunk    = 'c' // 'c' hash -> codec byte + chunk bytes
	pNode     = 'm' // 'm' hash -> manifest node
	pVersion  = 'v' // 'v' hash -> version record
	pHead     = 'h' // 'h' file id -> hash of the file's current version
	pDirent   = 'd' // 'd' parent id, name -> child id, kind byte, version hash, encoded version
	pLog      = 'l' // 'l' seq (8 bytes big endian) -> txlog entry
	pDirState = 't' // 't' dir id -> local directory times and subdir count
	pBucket   = 'n' // 'n' bucket byte -> namespace bucket accumulator
	pMeta     = 'M' // 'M' name -> site metadata
	pCursor   = 'k' // 'k' peer site id -> last seq of the peer's txlog applied here (u64 BE)
	pAcked    = 'K' // 'K' peer site id -> last seq of this txlog the peer acknowledged (u64 BE)
	pStamp    = 'S' // 'S' -> the newest stamp time recorded here, when newer than the last txlog entry's (u64 BE)
)

func cursorKey(prefix byte, peer SiteID) []byte {
	return append([]byte{prefix}, peer[:]...)
}

func hashKey(prefix byte, h Hash) []byte {
	return append([]byte{prefix}, h[:]...)
}

func idKey(prefix byte, id FileID) []byte {
	return append([]byte{prefix}, id[:]...)
}

func direntKey(parent FileID, name string) []byte {
	k := make([]byte, 0, 17+len(name))
	k = append(k, pDirent)
	k = append(k, parent[:]...)
	return append(k, name...)
}

func logKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{pLog}, seq)
}

func metaKey(name string) []byte { return append([]byte{pMeta}, name...) }
