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

// longestOutage finds, over every partition, the longest streak of strong
// operations that all failed or ended unknown, taken in call order: from
// the first one's call to the last one's end (an unknown operation ends at
// its call). Idle time without operations does not count as an outage.
func longestOutage(ops []*history.Op) Outage {
	byP := map[int][]*history.Op{}
	for _, o := range ops {
		if o.Kind != history.KindEventualGet && o.Partition >= 0 && o.Outcome != "" {
			byP[o.Partition] = append(byP[o.Partition], o)
		}
	}
	var best Outage
	for p, list := range byP {
		sort.Slice(list, func(i, j int) bool { return list[i].Call < list[j].Call })
		var start, end int64
		n := 0
		closeStreak := func() {
			if n > 0 {
				if s := float64(end-start) / 1e9; s > best.Seconds {
					best = Outage{Partition: p, From: float64(start) / 1e9, To: float64(end) / 1e9, Seconds: s, Attempts: n}
				}
			}
			n = 0
		}
		for _, o := range list {
			if o.Outcome == history.OutcomeOK {
				closeStreak()
				continue
			}
			e := o.Return
			if e == 0 {
				e = o.Call
			}
			if n == 0 {
				start, end = o.Call, e
			}
			end = max(end, e)
			n++
		}
		closeStreak()
	}
	return best
}
