// Package seqtrack numbers a client's writes for exactly-once application:
// one sequence of numbers per client id, and with each write the lowest
// number still in flight (ack_below), below which the cluster may forget
// the results it keeps for deduplication (raftfsm's dedup records).
package seqtrack

import "sync"

// Tracker hands out write sequence numbers and knows the lowest one still
// in flight. It is safe for concurrent use; the zero value is not ready,
// use New.
type Tracker struct {
	mu   sync.Mutex
	next uint64              // next sequence number to hand out
	low  uint64              // lowest sequence number not finished
	done map[uint64]struct{} // finished numbers above low
}

// New returns a tracker whose first sequence number is 1.
func New() *Tracker {
	return &Tracker{next: 1, low: 1, done: make(map[uint64]struct{})}
}

// Begin returns a new sequence number and the ack_below to send with it.
func (t *Tracker) Begin() (seq, ackBelow uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seq = t.next
	t.next++
	return seq, t.low
}

// Finish marks seq answered (or abandoned).
func (t *Tracker) Finish(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq != t.low {
		t.done[seq] = struct{}{}
		return
	}
	t.low++
	for {
		if _, ok := t.done[t.low]; !ok {
			return
		}
		delete(t.done, t.low)
		t.low++
	}
}
