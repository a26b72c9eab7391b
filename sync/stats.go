package sync

import (
	gosync "sync"
	"sync/atomic"
	"time"
)

// Stats counts what one link moved. Its methods are safe for concurrent use.
type Stats struct {
	BytesSent, BytesReceived    atomic.Int64
	ChunksSent, ChunksReceived  atomic.Int64
	ChunksRejected              atomic.Int64 // received chunks that did not match their hash
	ChunksDeduped               atomic.Int64 // chunks records referenced that the receiver had already
	RecordsSent, RecordsApplied atomic.Int64
	RecordsSkippedEqual         atomic.Int64 // log entries not sent: the peer's namespace bucket was equal
	RecordsOutOfScope           atomic.Int64

	// Fetches (fetchserve.go): asked of this site by the peer, and asked
	// of the peer by this site.
	FetchesServed, FetchesRefused, FetchesForwarded atomic.Int64
	Fetched, FetchBadAnswers, FetchFailures         atomic.Int64
	BytesFetched, BytesServed                       atomic.Int64

	peerMode atomic.Uint32 // the peer's metadata-only mode, from its start

	mu      gosync.Mutex
	recvSeq uint64    // the peer's last entry applied here
	recvEnd uint64    // the peer's last entry when it sent that batch
	recvAt  time.Time // when the peer read its log for that batch
}

func (s *Stats) add(c *atomic.Int64, n int64) {
	if s != nil {
		c.Add(n)
	}
}

// applied records that the peer's log up to seq (of end) is applied,
// as the peer read it at sentAt (Unix ns, its clock).
func (s *Stats) applied(seq, end uint64, sentAt int64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recvSeq, s.recvEnd, s.recvAt = seq, end, time.Unix(0, sentAt)
}

// received returns the peer's last entry applied here, its log end then,
// and when it read its log for that batch.
func (s *Stats) received() (seq, end uint64, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recvSeq, s.recvEnd, s.recvAt
}
