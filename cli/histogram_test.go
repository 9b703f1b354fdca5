package cli

import (
	"math"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestBucketLayout(t *testing.T) {
	prevLower := uint64(0)
	for i := 1; i < histBuckets; i++ {
		lower, width := bucketBounds(i)
		pl, pw := bucketBounds(i - 1)
		if lower != pl+pw {
			t.Fatalf("bucket %d starts at %d; bucket %d ends at %d", i, lower, i-1, pl+pw-1)
		}
		if bucketOf(lower) != i || bucketOf(lower+width-1) != i {
			t.Fatalf("bucket %d: bounds [%d, %d] map to %d and %d", i, lower, lower+width-1, bucketOf(lower), bucketOf(lower+width-1))
		}
		if width > 1 && float64(width)/float64(lower) > 1.0/subCount {
			t.Fatalf("bucket %d: width %d is over 1/%d of %d", i, width, subCount, lower)
		}
		prevLower = lower
	}
	if last, w := bucketBounds(histBuckets - 1); last+w-1 != maxValue || prevLower != last {
		t.Fatalf("last bucket ends at %d, want %d", last+w-1, uint64(maxValue))
	}
}

// TestQuantileMatchesSortedModel checks percentiles against the exact value
// of the same rank in a sorted slice.
func TestQuantileMatchesSortedModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 2000).Draw(t, "n")
		scale := rapid.Int64Range(1, int64(10*time.Second)).Draw(t, "scale")
		h := newHistogram()
		other := newHistogram()
		vals := make([]int64, n)
		for i := range vals {
			vals[i] = rapid.Int64Range(0, scale).Draw(t, "v")
			if i%2 == 0 {
				h.Record(time.Duration(vals[i]))
			} else {
				other.Record(time.Duration(vals[i]))
			}
		}
		h.Merge(other)
		slices.Sort(vals)
		if h.Count() != uint64(n) || h.Max() != time.Duration(vals[n-1]) {
			t.Fatalf("count %d max %v; want %d and %v", h.Count(), h.Max(), n, time.Duration(vals[n-1]))
		}
		qs := []float64{0, 0.5, 0.9, 0.99, 0.999, 1, rapid.Float64Range(0, 1).Draw(t, "q")}
		for _, q := range qs {
			rank := max(int(math.Ceil(q*float64(n))), 1)
			exact := vals[rank-1]
			got := int64(h.Quantile(q))
			tolerance := exact / subCount
			if got < exact-tolerance || got > exact+tolerance {
				t.Fatalf("q=%v: got %d, exact %d (rank %d of %d), tolerance %d", q, got, exact, rank, n, tolerance)
			}
		}
	})
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
