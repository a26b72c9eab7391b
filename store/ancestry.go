package store

import (
	"bytes"
	"container/heap"
)

// Walking a file's ancestry, newest first.
//
// A version's stamp is never older than its parents' (Prev and Merged): a
// site's clock passes every stamp it has seen before it makes a version,
// records derived from a version (a name moved aside, a directory revived)
// keep its stamp, and a merge record takes the newest stamp it merges. So a
// walk that visits versions newest first can stop as soon as those left are
// older than what it looks for: it costs the versions made since, not the
// file's whole history, and it has no bound that two sites could hit at
// different points. The answers are functions of the records alone, as a
// merge needs (merge.go).

// stampBefore reports whether stamp a is older than b: by hybrid clock
// time, then site id.
func stampBefore(a, b Stamp) bool {
	if a.Time != b.Time {
		return a.Time < b.Time
	}
	return bytes.Compare(a.Site[:], b.Site[:]) < 0
}

// walkItem is a version waiting in a walk.
type walkItem struct {
	h Hash
	v *Version
}

// walkQueue is a heap of versions, newest on top (equal stamps by hash).
type walkQueue []walkItem

func (q walkQueue) Len() int { return len(q) }
func (q walkQueue) Less(i, j int) bool {
	a, b := q[i], q[j]
	if a.v.Stamp != b.v.Stamp {
		return stampBefore(b.v.Stamp, a.v.Stamp)
	}
	return bytes.Compare(a.h[:], b.h[:]) > 0
}
func (q walkQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *walkQueue) Push(x any)   { *q = append(*q, x.(walkItem)) }
func (q *walkQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

// walk visits the versions reachable from the versions from (themselves
// included) newest first, with the set of starting points each is reached
// from (bit i for from[i]), until visit returns false. A version reached
// again from more starting points after its visit (possible only between
// equal stamps) is visited again with the larger set.
func (tx *Tx) walk(from []Hash, visit func(h Hash, v *Version, sides uint) bool) error {
	var q walkQueue
	sides := map[Hash]uint{}
	queued := map[Hash]bool{}
	reach := func(h Hash, s uint) error {
		old, known := sides[h]
		if known && old|s == old {
			return nil
		}
		sides[h] = old | s
		if queued[h] {
			return nil // it carries the new sides when it comes up
		}
		v, err := versionIn(tx, h)
		if err != nil {
			return err
		}
		queued[h] = true
		heap.Push(&q, walkItem{h, v})
		return nil
	}
	for i, h := range from {
		if err := reach(h, 1<<i); err != nil {
			return err
		}
	}
	for q.Len() > 0 {
		it := heap.Pop(&q).(walkItem)
		queued[it.h] = false
		s := sides[it.h]
		if !visit(it.h, it.v, s) {
			return nil
		}
		for _, p := range append([]Hash{it.v.Prev}, it.v.Merged...) {
			if p.IsZero() {
				continue
			}
			if err := reach(p, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// descends reports whether version x descends from version y (or is y).
func (tx *Tx) descends(x, y Hash) (bool, error) {
	if x == y {
		return true, nil
	}
	yv, err := versionIn(tx, y)
	if err != nil {
		return false, err
	}
	found := false
	err = tx.walk([]Hash{x}, func(h Hash, v *Version, _ uint) bool {
		if h == y {
			found = true
			return false
		}
		return !stampBefore(v.Stamp, yv.Stamp) // older ones cannot lead to y
	})
	return found, err
}

// commonAncestor returns the newest version both a and b descend from, or
// nil when they share none.
func (tx *Tx) commonAncestor(a, b Hash) (*Version, error) {
	var base *Version
	err := tx.walk([]Hash{a, b}, func(h Hash, v *Version, sides uint) bool {
		if sides == 3 {
			base = v
			return false
		}
		return true
	})
	return base, err
}
