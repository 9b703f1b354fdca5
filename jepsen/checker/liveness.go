package checker

import (
	"sort"

	"github.com/ringkv/ringkv/jepsen/history"
)

// Outage is the longest stretch in which a partition answered no strong
// operation although clients kept asking. It is a measure, not a violation:
// faults may make a partition unavailable; how long it stays so is worth
// watching.
type Outage struct {
	Partition int     `json:"partition"`
	From      float64 `json:"from_s"`
	To        float64 `json:"to_s"`
	Seconds   float64 `json:"seconds"`
	// Attempts is how many operations were tried in between.
	Attempts int `json:"attempts"`
}

// longestOutage finds, over every partition, the longest time between two
// successive successful strong operations with failed or unknown attempts
// in between.
func longestOutage(ops []*history.Op) Outage {
	byP := map[int][]*history.Op{}
	for _, o := range ops {
		if o.Kind != history.KindEventualGet && o.Partition >= 0 {
			byP[o.Partition] = append(byP[o.Partition], o)
		}
	}
	var best Outage
	for p, list := range byP {
		var oks []int64
		var bad []int64 // call times of operations that did not succeed
		for _, o := range list {
			if o.Outcome == history.OutcomeOK {
				oks = append(oks, o.Return)
			} else {
				bad = append(bad, o.Call)
			}
		}
		sort.Slice(oks, func(i, j int) bool { return oks[i] < oks[j] })
		sort.Slice(bad, func(i, j int) bool { return bad[i] < bad[j] })
		for i := 1; i < len(oks); i++ {
			from, to := oks[i-1], oks[i]
			lo := sort.Search(len(bad), func(k int) bool { return bad[k] > from })
			hi := sort.Search(len(bad), func(k int) bool { return bad[k] >= to })
			if hi <= lo {
				continue
			}
			if s := float64(to-from) / 1e9; s > best.Seconds {
				best = Outage{Partition: p, From: float64(from) / 1e9, To: float64(to) / 1e9, Seconds: s, Attempts: hi - lo}
			}
		}
	}
	return best
}
