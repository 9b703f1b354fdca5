package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestQuantileMatchesSortedModel checks percentiles against the exact value
// of the same rank in a sorted slice (RingKV's cli tests the same copy with
// rapid; a seeded loop keeps this module's dependencies to the etcd client).
func TestQuantileMatchesSortedModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		n := 1 + rng.IntN(2000)
		scale := 1 + rng.Int64N(int64(10*time.Second))
		h, other := newHistogram(), newHistogram()
		vals := make([]int64, n)
		for i := range vals {
			vals[i] = rng.Int64N(scale + 1)
			if i%2 == 0 {
				h.Record(time.Duration(vals[i]))
			} else {
				other.Record(time.Duration(vals[i]))
			}
		}
		h.Merge(other)
		slices.Sort(vals)
		if h.Count() != uint64(n) || h.Max() != time.Duration(vals[n-1]) {
			t.Fatalf("trial %d: count %d max %v; want %d and %v", trial, h.Count(), h.Max(), n, time.Duration(vals[n-1]))
		}
		for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1, rng.Float64()} {
			rank := max(int(math.Ceil(q*float64(n))), 1)
			exact := vals[rank-1]
			got := int64(h.Quantile(q))
			if tol := exact / subCount; got < exact-tol || got > exact+tol {
				t.Fatalf("trial %d q=%v: got %d, exact %d (rank %d of %d)", trial, q, got, exact, rank, n)
			}
		}
	}
}

func TestHistogramEdges(t *testing.T) {
	h := newHistogram()
	if h.Quantile(0.5) != 0 || h.Mean() != 0 || h.Max() != 0 {
		t.Fatal("an empty histogram must report zeros")
	}
	h.Record(-time.Second)
	h.Record(time.Hour)
	if got := h.Quantile(0); got != 0 {
		t.Fatalf("negative durations count as 0, got %v", got)
	}
	if got := h.Quantile(1); got != time.Duration(maxValue) {
		t.Fatalf("values over the range clamp to %v, got %v", time.Duration(maxValue), got)
	}
}
