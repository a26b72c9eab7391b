// Package hlc is a hybrid logical clock: timestamps that follow the wall
// clock in nanoseconds but never go backwards and never repeat, even when the
// wall clock steps back or two events fall in the same nanosecond. Update
// merges a timestamp seen from another site, so that causally later events
// always get larger timestamps.
package hlc

import (
	"sync"
	"time"
)

// Timestamp is nanoseconds since the Unix epoch, bumped as needed to stay
// unique and monotonic.
type Timestamp uint64

// Time returns the wall-clock time the timestamp stands for.
func (t Timestamp) Time() time.Time { return time.Unix(0, int64(t)) }

// Clock issues timestamps. The zero value is ready to use.
type Clock struct {
	mu   sync.Mutex
	last Timestamp
	wall func() time.Time // nil means time.Now
}

// NewClock returns a clock that reads wall time from wall (nil: time.Now).
func NewClock(wall func() time.Time) *Clock { return &Clock{wall: wall} }

func (c *Clock) now() Timestamp {
	if c.wall == nil {
		return Timestamp(time.Now().UnixNano())
	}
	return Timestamp(c.wall().UnixNano())
}

// Now returns a timestamp larger than every one returned or observed before.
func (c *Clock) Now() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.now()
	if t <= c.last {
		t = c.last + 1
	}
	c.last = t
	return t
}

// Update records a timestamp observed elsewhere (a peer's, or one read back
// from disk at start-up), so that later Now calls exceed it.
func (c *Clock) Update(seen Timestamp) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seen > c.last {
		c.last = seen
	}
}
