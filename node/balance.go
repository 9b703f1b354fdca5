package node

import (
	"math/rand/v2"
	"sort"
	"time"

	"github.com/ringkv/ringkv/membership"
)

// balanceLeaders keeps leadership spread: writes and strong reads cost the
// leader, so no node should lead more than ceil(P/N) partitions. Each node
// looks only at its own excess and hands one partition at a time to the
// voter that leads the fewest, so nodes never fight over the same partition.
func (n *Node) balanceLeaders() {
	defer n.ctrl.Done()
	if n.cfg.LeaderBalanceInterval <= 0 {
		return
	}
	for {
		// Jitter keeps the nodes from acting in lock step.
		wait := n.cfg.LeaderBalanceInterval/2 + rand.N(n.cfg.LeaderBalanceInterval)
		select {
		case <-n.stop:
			return
		case <-time.After(wait):
		}
		n.balanceOnce()
	}
}

// leaderCounts returns how many partitions each alive node leads, by gossip
// (and by the local replicas for this node, which gossip may lag).
func (n *Node) leaderCounts() map[string]int {
	counts := map[string]int{}
	for _, m := range n.aliveMembers() {
		if m.Meta.Name == n.cfg.Name {
			continue
		}
		c := 0
		for _, b := range m.Meta.Leading {
			for ; b != 0; b &= b - 1 {
				c++
			}
		}
		counts[m.Meta.Name] = c
	}
	own := 0
	for _, r := range n.localReplicas() {
		if r.IsLeader() {
			own++
		}
	}
	counts[n.cfg.Name] = own
	return counts
}

// mayLead reports whether the named node should lead partitions: not draining
// and not removed.
func (n *Node) mayLead(name string) bool {
	for _, s := range n.nodeStates() {
		if s.Name == name {
			return !s.Draining && !s.Removed
		}
	}
	return false
}

// balanceOnce moves at most one leadership away from this node.
func (n *Node) balanceOnce() {
	counts := n.leaderCounts()
	// Draining and removed nodes should lead nothing; the others share evenly.
	takers := 0
	for name := range counts {
		if n.mayLead(name) {
			takers++
		}
	}
	if takers == 0 || (takers < 2 && n.mayLead(n.cfg.Name)) {
		return
	}
	limit := (n.ring.Partitions() + takers - 1) / takers
	if !n.mayLead(n.cfg.Name) {
		limit = 0
	}
	if counts[n.cfg.Name] <= limit {
		return
	}
	type cand struct {
		name, addr string
		count      int
	}
	for _, r := range n.localReplicas() {
		if !r.IsLeader() {
			continue
		}
		var cands []cand
		for _, s := range r.State().Servers {
			if !s.Voter || s.ID == n.cfg.Name {
				continue
			}
			m, ok := n.member(s.ID)
			if !ok || m.Status != membership.StatusAlive || !n.mayLead(s.ID) || (limit > 0 && counts[s.ID] >= limit) {
				continue
			}
			cands = append(cands, cand{s.ID, s.Addr, counts[s.ID]})
		}
		if len(cands) == 0 {
			continue
		}
		sort.Slice(cands, func(i, j int) bool { return cands[i].count < cands[j].count })
		to := cands[0]
		n.log.Debug("transferring leadership to even out leaders", "partition", r.Partition(), "to", to.name,
			"leading", counts[n.cfg.Name], "limit", limit)
		if err := r.TransferLeadership(to.name, to.addr); err != nil {
			n.log.Debug("leadership transfer failed", "partition", r.Partition(), "to", to.name, "error", err)
		}
		return
	}
}
