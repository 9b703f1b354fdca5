package node

import (
	"maps"
	"math/rand/v2"
	"time"

	"github.com/ringkv/ringkv/membership"
	"github.com/ringkv/ringkv/replica"
)

// balanceLeaders keeps leadership spread: writes and strong reads cost the
// leader, so no node should lead more than ceil(P/N) partitions. Each node
// looks only at its own excess and hands partitions, a few per pass, each to
// its voter that leads the fewest, so nodes never fight over a partition.
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

// maxLeaderMovesPerPass bounds the leaderships one balancing pass hands
// away. One per pass took 30-60 s after a cold start, where one node often
// wins 24-35 of 64 first elections and shed one every 2.5-7.5 s; a bound
// still keeps a pass from moving a whole node's leaders at once.
const maxLeaderMovesPerPass = 8

// leaderMove is one leadership handed away by a balancing pass.
type leaderMove struct {
	from *leaderChoice
	to   voterAddr
}

// balanceOnce hands leaderships away from this node while it leads more
// than its share, at most maxLeaderMovesPerPass of them.
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
	var leading []leaderChoice
	for _, r := range n.localReplicas() {
		if !r.IsLeader() {
			continue
		}
		c := leaderChoice{replica: r}
		for _, s := range r.State().Servers {
			if !s.Voter || s.ID == n.cfg.Name {
				continue
			}
			m, ok := n.member(s.ID)
			if !ok || m.Status != membership.StatusAlive || !n.mayLead(s.ID) {
				continue
			}
			c.voters = append(c.voters, voterAddr{s.ID, s.Addr})
		}
		leading = append(leading, c)
	}
	moves := planLeaderMoves(n.cfg.Name, counts, limit, leading, maxLeaderMovesPerPass)
	if len(moves) > 0 {
		n.log.Debug("evening out leaders", "leading", counts[n.cfg.Name], "limit", limit, "moves", len(moves))
	}
	for _, mv := range moves {
		p := mv.from.replica.Partition()
		n.log.Debug("transferring leadership", "partition", p, "to", mv.to.id)
		if err := mv.from.replica.TransferLeadership(mv.to.id, mv.to.addr); err != nil {
			n.log.Debug("leadership transfer failed", "partition", p, "to", mv.to.id, "error", err)
			return // the next pass looks again, with fresh counts
		}
	}
}

// leaderChoice is a partition this node leads and the voters that could
// take it (alive and allowed to lead).
type leaderChoice struct {
	replica *replica.Replica
	voters  []voterAddr
}

type voterAddr struct{ id, addr string }

// planLeaderMoves picks which leaderships self hands to whom: while self
// leads more than limit, the next partition goes to its voter that leads
// the fewest, among those below limit (any voter when limit is 0: self is
// draining). Counts are updated as it goes, so one pass never pushes a
// taker past the limit by its own moves. At most max moves.
func planLeaderMoves(self string, counts map[string]int, limit int, leading []leaderChoice, max int) []leaderMove {
	counts = maps.Clone(counts)
	var moves []leaderMove
	for i := range leading {
		c := &leading[i]
		if len(moves) == max || counts[self] <= limit {
			break
		}
		best := -1
		for i, v := range c.voters {
			if limit > 0 && counts[v.id] >= limit {
				continue
			}
			if best < 0 || counts[v.id] < counts[c.voters[best].id] {
				best = i
			}
		}
		if best < 0 {
			continue
		}
		to := c.voters[best]
		moves = append(moves, leaderMove{from: c, to: to})
		counts[self]--
		counts[to.id]++
	}
	return moves
}
