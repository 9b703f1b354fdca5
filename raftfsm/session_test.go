package raftfsm

import (
	"testing"

	"pgregory.net/rapid"
)

// A session answers lookups as a plain map of the results recorded and not
// yet acknowledged would, and keeps its results sorted by seq, whatever the
// order the seqs arrive in (concurrent clients of one session reach a
// partition out of order).
func TestSessionMatchesAModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := &session{}
		model := map[uint64]uint64{} // seq -> the Version recorded with it
		seq := rapid.Uint64Range(0, 40)
		for i := range rapid.IntRange(0, 60).Draw(t, "ops") {
			switch rapid.IntRange(0, 2).Draw(t, "op") {
			case 0:
				q := seq.Draw(t, "record")
				if _, ok := model[q]; ok || q < s.low {
					continue // record is only ever called for a new seq at or above low
				}
				s.record(q, Result{Status: StatusOK, Version: uint64(i)})
				model[q] = uint64(i)
			case 1:
				below := seq.Draw(t, "ack")
				s.ack(below)
				for q := range model {
					if q < below {
						delete(model, q)
					}
				}
			}
			q := seq.Draw(t, "lookup")
			res, ok := s.lookup(q)
			want, wantOK := model[q]
			if ok != wantOK || (ok && res.Version != want) {
				t.Fatalf("lookup(%d) = %v, %v; want %v, %v (results %v)", q, res.Version, ok, want, wantOK, s.results)
			}
			if len(s.results) != len(model) {
				t.Fatalf("%d results, want %d", len(s.results), len(model))
			}
			for j := 1; j < len(s.results); j++ {
				if s.results[j-1].seq >= s.results[j].seq {
					t.Fatalf("results not sorted: %v", s.results)
				}
			}
		}
	})
}
