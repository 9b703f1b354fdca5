package replica

import (
	"errors"
	"hash/fnv"
	"net"
	"slices"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// Fast failover. A hashicorp/raft follower starts an election only after
// its leader has been silent for a random HeartbeatTimeout to twice that,
// and a follower that still has a leader refuses to vote, so with the
// default 1 s a killed leader is replaced after 1.2 to 3 s. Shorter timeouts
// would mean more heartbeats from every group forever. Instead, when a
// follower learns that its leader's node is down, it lowers its own
// heartbeat timeout to LeaderLeaseTimeout (the lowest Raft accepts) for the
// one election, and restores it once a new leader is known.
//
// The hint only shortens a wait that Raft itself still checks: a follower
// becomes a candidate only if it has not heard from the leader for that
// long, so a wrong hint (a live leader) costs nothing; and an early election
// is as safe as any (pre-vote, terms and log checks are unchanged).
//
// The election timeout is lowered to the same value for the duration: the
// first candidate's pre-vote fails when the other follower has not yet
// noticed the silence, or when the other follower holds a longer log (it
// received the last append, the candidate did not) and must win instead;
// whoever is refused retries after one or two election timeouts.
//
// Two hints exist: the transport sees the leader hang up an inbound
// connection and a dial of its port is refused (the process died: its
// kernel closed its sockets), and the node's gossip declares the leader's
// node suspect or dead (the machine died or is cut off).
//
// The followers are staggered by a rank per partition (failoverStagger
// apart), so that they do not all stand at once and split the vote: the
// first candidate's pre-vote is refused by followers that still have a
// leader, and the next one's is granted by the first, which has none.

// failoverStagger returns the gap between the followers' early elections.
func (r *Replica) failoverStagger() time.Duration {
	return max(r.cfg.LeaderLeaseTimeout/5, 10*time.Millisecond)
}

// onHangup runs when a peer hung up an inbound connection of this
// partition: if it was our leader and its port now refuses connections,
// its process is gone.
func (r *Replica) onHangup() {
	if r.closed.Load() || r.raft.State() != raft.Follower {
		return
	}
	addr, id := r.raft.LeaderWithID()
	if id == "" || string(id) == r.cfg.NodeID {
		return
	}
	if PortRefuses(string(addr)) {
		r.LeaderGone(string(id), "its port refuses connections")
	}
}

// PortRefuses reports whether a dial of addr is refused: nothing listens
// there, so the process that did is gone (its kernel closed its sockets). A
// silent or slow address is not refused.
//
// It is asked right after a hangup, which can arrive a moment before the
// dying process's port is closed: the kernel closes a killed process's
// sockets one by one, in descriptor order, and a connection whose descriptor
// is lower than the listener's resets first. So a dial that is accepted is
// tried again, every portProbeGap, for up to portProbeWindow. (make
// failover, every group quiet at the kill: once in two runs the followers'
// only hangups came while the port still accepted, and they waited 4.7 s for
// gossip.) A live peer costs a few dials per hangup, which are rare.
func PortRefuses(addr string) bool {
	deadline := time.Now().Add(portProbeWindow)
	for {
		c, err := net.DialTimeout("tcp", addr, 250*time.Millisecond)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return true
		case errors.Is(err, syscall.ECONNRESET):
			// Accepted into a backlog the closing listener then dropped:
			// the port is going away; the next dial says for sure.
		case err != nil:
			return false
		default:
			_ = c.Close()
		}
		if time.Now().Add(portProbeGap).After(deadline) {
			return false
		}
		time.Sleep(portProbeGap) // the dying process's teardown, not a condition to poll
	}
}

// How long PortRefuses keeps trying an address that accepts, and how often.
const (
	portProbeWindow = 200 * time.Millisecond
	portProbeGap    = 20 * time.Millisecond
)

// LeaderGone tells the replica that node id, if it is this partition's
// leader, is down: a follower then stands for election as soon as the
// leader has been silent for LeaderLeaseTimeout (plus its stagger).
func (r *Replica) LeaderGone(id, why string) {
	if r.closed.Load() || r.raft.State() != raft.Follower || r.LeaderID() != id {
		return
	}
	if !r.failingOver.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer r.failingOver.Store(false)
		r.failover(id, why)
	}()
}

func (r *Replica) failover(id, why string) {
	normal := r.raft.ReloadableConfig()
	fast := normal
	fast.HeartbeatTimeout = r.cfg.LeaderLeaseTimeout
	if fast.HeartbeatTimeout >= normal.HeartbeatTimeout {
		return
	}
	// The election timeout too: when the first candidate's pre-vote fails
	// (the other follower still had the leader, or has a longer log and
	// must win instead), the retry comes after 1-2 election timeouts.
	fast.ElectionTimeout = min(normal.ElectionTimeout, r.cfg.LeaderLeaseTimeout)
	rank, ok := r.failoverRank(id)
	if !ok {
		return
	}
	wait := time.Until(r.raft.LastContact().Add(fast.HeartbeatTimeout)) + time.Duration(rank)*r.failoverStagger()
	if !r.sleep(wait) {
		return
	}
	if r.raft.State() != raft.Follower || r.LeaderID() != id {
		return // a new leader already, or we stand already
	}
	// A quiet follower waits QuiesceTimeout for its leader: back to the
	// heartbeat timeout, which the next line lowers.
	r.raft.Wake()
	if err := r.raft.ReloadConfig(fast); err != nil {
		r.log.Warn("fast failover: lowering the heartbeat and election timeouts", "error", err)
		return
	}
	r.log.Info("leader's node is down; standing for election early", "leader", id, "why", why, "rank", rank)
	deadline := time.Now().Add(2*normal.HeartbeatTimeout + 2*normal.ElectionTimeout)
	for time.Now().Before(deadline) {
		if l := r.LeaderID(); l != "" && l != id {
			break
		}
		if !r.sleep(20 * time.Millisecond) {
			break
		}
	}
	if err := r.raft.ReloadConfig(normal); err != nil {
		r.log.Error("fast failover: restoring the heartbeat and election timeouts", "error", err)
	}
}

// failoverRank is this replica's place among the voters other than the
// leader, in an order that differs per partition (so that the early
// candidates, and the new leaders, are spread over the nodes).
func (r *Replica) failoverRank(leader string) (int, bool) {
	f := r.raft.GetConfiguration()
	if f.Error() != nil {
		return 0, false
	}
	type voter struct {
		id  string
		key uint64
	}
	var vs []voter
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter || string(s.ID) == leader {
			continue
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte{byte(r.cfg.Partition), byte(r.cfg.Partition >> 8), byte(r.cfg.Partition >> 16), byte(r.cfg.Partition >> 24)})
		_, _ = h.Write([]byte(s.ID))
		vs = append(vs, voter{string(s.ID), h.Sum64()})
	}
	slices.SortFunc(vs, func(a, b voter) int {
		if a.key < b.key {
			return -1
		}
		if a.key > b.key {
			return 1
		}
		return 0
	})
	i := slices.IndexFunc(vs, func(v voter) bool { return v.id == r.cfg.NodeID })
	return i, i >= 0
}

// sleep waits d, or until the replica closes; it reports whether d passed.
func (r *Replica) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.stop:
		return false
	}
}
