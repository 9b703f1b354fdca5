package seqtrack

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestAckBelow checks ack_below against a model: the smallest sequence
// number still in flight, or the next one when none is.
func TestAckBelow(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tr := New()
		var inflight []uint64
		next := uint64(1)
		for range rapid.IntRange(1, 200).Draw(t, "steps") {
			if len(inflight) == 0 || rapid.Bool().Draw(t, "begin") {
				want := next
				if len(inflight) > 0 {
					want = slices.Min(inflight)
				}
				seq, ack := tr.Begin()
				if seq != next || ack != want {
					t.Fatalf("Begin = (%d, %d), want (%d, %d); in flight %v", seq, ack, next, want, inflight)
				}
				inflight = append(inflight, seq)
				next++
				continue
			}
			i := rapid.IntRange(0, len(inflight)-1).Draw(t, "finish")
			tr.Finish(inflight[i])
			inflight = slices.Delete(inflight, i, i+1)
		}
		if len(tr.done) > len(inflight)+int(next) {
			t.Fatalf("done set grew to %d", len(tr.done))
		}
	})
}
