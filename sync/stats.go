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

	mu        gosync.Mutex
	sendAcked uint64    // our last entry the peer acknowledged
	sendAt    time.Time // when we read the log for the newest acknowledged batch
	recvSeq   uint64    // the peer's last entry applied here
	recvEnd   uint64    // the peer's last entry when it sent that batch
	recvAt    time.Time // when the peer read its log for that batch
}

func (s *Stats) add(c *atomic.Int64, n int64) {
	if s != nil {
		c.Add(n)
	}
}

// acked records that the peer acknowledged our log up to seq, read at
// sentAt (Unix ns).
func (s *Stats) acked(seq uint64, sentAt int64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sendAcked, s.sendAt = seq, time.Unix(0, sentAt)
}

// received records that the peer's log up to seq (of end) is applied,
// as the peer read it at sentAt (Unix ns, its clock).
func (s *Stats) received(seq, end uint64, sentAt int64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recvSeq, s.recvEnd, s.recvAt = seq, end, time.Unix(0, sentAt)
}

// Positions returns the acknowledged send position and its time, and the
// receive position with the peer's log end and its time.
func (s *Stats) Positions() (sendAcked uint64, sendAt time.Time, recvSeq, recvEnd uint64, recvAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sendAcked, s.sendAt, s.recvSeq, s.recvEnd, s.recvAt
}
