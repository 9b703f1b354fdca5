package main

import (
	"math"
	"math/bits"
	"time"
)

// This file is a copy of RingKV's cli/histogram.go, so that both load
// generators report percentiles the same way without this module importing
// RingKV. Keep the two in step.
//
// Histogram layout: log-linear buckets in the manner of HdrHistogram. Values
// (nanoseconds) below 2*subCount get a bucket each; above that, every power
// of two is split into subCount equal buckets, so a bucket's width is at
// most 1/subCount of its lower bound: every percentile is within 0.8% of
// the exact one. Memory is fixed (histBuckets counters), whatever the count.
const (
	subBits     = 7
	subCount    = 1 << subBits
	maxValBits  = 40 // values clamp to 2^40-1 ns, about 18 minutes
	maxValue    = 1<<maxValBits - 1
	histBuckets = (maxValBits-subBits-1)*subCount + 2*subCount
)

// histogram records durations. The zero value is not usable; use
// newHistogram. It is not safe for concurrent use: give each goroutine its
// own and merge them.
type histogram struct {
	counts   []uint64
	n        uint64
	sum      float64
	min, max uint64
}

func newHistogram() *histogram {
	return &histogram{counts: make([]uint64, histBuckets), min: math.MaxUint64}
}

// bucketOf returns the bucket index of v (v <= maxValue).
func bucketOf(v uint64) int {
	g := max(0, bits.Len64(v)-subBits-1)
	return g*subCount + int(v>>g)
}

// bucketBounds returns the smallest value of bucket i and its width.
func bucketBounds(i int) (lower, width uint64) {
	if i < 2*subCount {
		return uint64(i), 1
	}
	g := i/subCount - 1
	m := uint64(i - g*subCount)
	return m << g, 1 << g
}

// Record adds one duration (negative counts as 0).
func (h *histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	v = min(v, maxValue)
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

// Merge adds every value of o.
func (h *histogram) Merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count is the number of recorded values.
func (h *histogram) Count() uint64 { return h.n }

// Max is the largest recorded value (exact), 0 when empty.
func (h *histogram) Max() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.max)
}

// Mean is the mean of the recorded values, 0 when empty.
func (h *histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value of rank ceil(q*n) (the smallest value with at
// least a fraction q of all values at or below it), within the precision of
// its bucket: the middle of the bucket, kept inside [min, max] (the first
// and last ranks are exact). q is clamped
// to [0, 1]; an empty histogram returns 0.
func (h *histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := max(uint64(math.Ceil(q*float64(h.n))), 1)
	switch rank {
	case 1:
		return time.Duration(h.min) // exact
	case h.n:
		return time.Duration(h.max) // exact
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lower, width := bucketBounds(i)
			v := lower + (width-1)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
