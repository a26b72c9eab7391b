package hlc

import (
	"testing"
	"time"
)

func TestMonotonicWhenWallStepsBack(t *testing.T) {
	wall := time.Unix(1000, 0)
	c := NewClock(func() time.Time { return wall })
	a := c.Now()
	wall = wall.Add(-time.Hour)
	b := c.Now()
	if b <= a {
		t.Fatalf("timestamp went backwards: %d then %d", a, b)
	}
}

func TestUpdateMovesPastObserved(t *testing.T) {
	c := NewClock(func() time.Time { return time.Unix(1000, 0) })
	seen := Timestamp(time.Unix(5000, 0).UnixNano())
	c.Update(seen)
	if got := c.Now(); got <= seen {
		t.Fatalf("Now() = %d, want > %d", got, seen)
	}
}

func TestFollowsWallClock(t *testing.T) {
	var c Clock
	before := time.Now()
	got := c.Now().Time()
	if got.Before(before) || got.Sub(before) > time.Minute {
		t.Fatalf("Now() = %v, wall clock %v", got, before)
	}
}
