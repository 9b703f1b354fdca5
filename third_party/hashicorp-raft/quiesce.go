// RingKV addition (RINGKV.md): quiescence of idle groups.
//
// A node hosts hundreds of groups and most are idle at any moment. Upstream,
// every leader-follower pair of an idle group still exchanges a heartbeat
// every HeartbeatTimeout/10 and an empty append (the commit-index refresh)
// every CommitTimeout, each waking goroutines on both sides; with 256 groups
// on 3 nodes that was most of the cluster's idle CPU. With
// Config.QuiesceTimeout set:
//
//   - The commit-index refresh is armed only while the follower may not
//     know an entry or its commit: commitKnown, the lower of the last entry
//     and the leader commit index of the last append it acknowledged, is
//     below the leader's last index. A rejected append, a snapshot or a
//     refused quiet offer resets it.
//   - A heartbeat carries Quiesce when the group is calm for that follower:
//     the leader's log is all committed, the follower holds and knows all of
//     it, no entry was appended for HeartbeatTimeout, and no leadership
//     transfer runs. The follower accepts (AppendEntriesResponse.Quiescent)
//     only if its own commit index reaches its last index; it then stands
//     for election after QuiesceTimeout of silence instead of
//     HeartbeatTimeout. Once it has accepted, the leader heartbeats it every
//     QuiesceTimeout/4 to QuiesceTimeout/2 (at least two heartbeats in each
//     wait; the heartbeats are a safety net, the embedding application's
//     failure detector is the fast path) and counts it toward its lease for
//     QuiesceTimeout, checking the lease no more often than that needs. The
//     quiet lease applies from the offer on: a transport may hold the
//     offer for company longer than the normal lease.
//   - Anything else ends it. A new entry on the leader (wakeFollowers),
//     any append or heartbeat without Quiesce on the follower, a vote
//     request the leader refuses (wakeCandidate: a follower lost its leader,
//     e.g. it restarted), a failed heartbeat, and Wake (the embedding
//     application learned that the leader's node is down). On the leader,
//     the end of quiet counts as a contact, so a lease check right after a
//     write does not find the follower's last quiet heartbeat too old.
//
// Safety does not depend on any of this: terms, votes, log matching and
// commitment are unchanged, and a heartbeat (also VerifyLeader's) is still
// answered by a follower that has it. What changes is liveness: a quiet
// follower notices a silent leader after QuiesceTimeout, not
// HeartbeatTimeout, unless told sooner through Wake; and a leader cut off
// from quiet followers steps down after up to QuiesceTimeout.
package raft

import (
	"sync/atomic"
	"time"
)

// quiescence is a followerReplication's quiet state.
type quiescence struct {
	// commitKnown is what the follower is known to hold and know committed.
	commitKnown atomic.Uint64
	// quiet: the follower accepted a Quiesce heartbeat, and nothing woke
	// the pair since.
	quiet atomic.Bool
	// offering: a Quiesce heartbeat is on its way. A transport may hold
	// it for company longer than the lease (RingKV's heartbeat channel
	// lingers only heartbeats to followers already quiet, but nothing here
	// relies on that), and nothing else goes to a calm follower meanwhile;
	// so the follower's lease is the quiet one until the answer.
	offering atomic.Bool
	// quietEnded is when quiet last went false (Unix nanos).
	quietEnded atomic.Int64
	// wakeCh cuts the heartbeat goroutine's quiet wait short.
	wakeCh chan struct{}
	// lastNudge (heartbeat goroutine only) rate-limits the commit refresh
	// sent after a refused offer.
	lastNudge time.Time
}

func newQuiescence() quiescence {
	return quiescence{wakeCh: make(chan struct{}, 1)}
}

func (q *quiescence) wake() <-chan struct{} { return q.wakeCh }

func (q *quiescence) setQuiet(v bool) {
	if was := q.quiet.Swap(v); was && !v {
		q.quietEnded.Store(time.Now().UnixNano())
	}
}

func (q *quiescence) forgetCommitKnown() { q.commitKnown.Store(0) }

// appended records an acknowledged append.
func (q *quiescence) appended(req *AppendEntriesRequest) {
	known := req.PrevLogEntry
	if n := len(req.Entries); n > 0 {
		known = req.Entries[n-1].Index
	}
	q.commitKnown.Store(min(known, req.LeaderCommitIndex))
}

// commitTick is the replicate loops' commit-index refresh timer: nil (it
// never fires) while quiescence is on and the follower knows everything.
func (r *Raft) commitTick(s *followerReplication) <-chan time.Time {
	if r.config().QuiesceTimeout > 0 && s.commitKnown.Load() >= r.getLastIndex() {
		return nil
	}
	return randomTimeout(r.config().CommitTimeout)
}

// heartbeatInterval is the base of the wait before s's next heartbeat.
func (r *Raft) heartbeatInterval(s *followerReplication) time.Duration {
	if s.quiet.Load() {
		return r.config().QuiesceTimeout / 4
	}
	return r.config().HeartbeatTimeout / 10
}

// calm reports whether the next heartbeat to s offers quiet.
func (r *Raft) calm(s *followerReplication) bool {
	c := r.config()
	if c.QuiesceTimeout <= 0 || r.getLeadershipTransferInProgress() {
		return false
	}
	last := r.getLastIndex()
	if r.getCommitIndex() < last || s.commitKnown.Load() < last {
		return false
	}
	return time.Since(time.Unix(0, r.lastDispatch.Load())) >= c.HeartbeatTimeout
}

// quiesceAnswered updates s after a heartbeat it answered.
func (r *Raft) quiesceAnswered(s *followerReplication, req *AppendEntriesRequest, resp *AppendEntriesResponse) {
	switch {
	case !req.Quiesce:
		s.setQuiet(false)
	case resp.Success && resp.Quiescent:
		// Unless a write came while the offer was on its way (it may have
		// lingered): the follower has been woken by its append since.
		s.setQuiet(r.calm(s))
	default:
		// Refused: the follower has not learned the commit index (it
		// restarted) or does not quiesce (an older version). Refresh its
		// commit index, at most once per heartbeat timeout.
		s.setQuiet(false)
		if time.Since(s.lastNudge) >= r.config().HeartbeatTimeout {
			s.lastNudge = time.Now()
			s.forgetCommitKnown()
			asyncNotifyCh(s.triggerCh)
		}
	}
}

// quietFollowerLost ends s's quiet after a failed heartbeat; if it was
// quiet, or the heartbeat was an offer (which put s on the quiet lease while
// it was on its way), the leader checks its lease at once, so that a leader
// that lost its quorum steps down a lease after it learns so, not up to
// QuiesceTimeout after a check that counted s as quiet.
func (r *Raft) quietFollowerLost(s *followerReplication, offered bool) {
	if s.quiet.Load() || offered {
		s.setQuiet(false)
		r.notifyRare(r.leaseCheckCh)
	}
}

// wakeFollowers ends every follower's quiet: the leader is appending.
// Main thread only.
func (r *Raft) wakeFollowers(now time.Time) {
	r.lastDispatch.Store(now.UnixNano())
	if r.config().QuiesceTimeout <= 0 {
		return
	}
	woke := false
	for _, s := range r.leaderState.replState {
		if s.quiet.Load() {
			s.setQuiet(false)
			asyncNotifyCh(s.wakeCh)
			woke = true
		}
	}
	if woke {
		// The next lease check may be a quiet lease away: bring it back to
		// the normal cadence, or a follower lost after this write would be
		// noticed only then.
		r.notifyRare(r.leaseCheckCh)
	}
}

// wakeCandidate ends the quiet of a follower that asked this leader for a
// vote: it lost track of the leader (it restarted, or its quiet wait ran
// out), so it is heartbeated and sent the commit index at once. Main thread
// only.
func (r *Raft) wakeCandidate(id ServerID) {
	if r.config().QuiesceTimeout <= 0 || r.getState() != Leader || r.leaderState.replState == nil {
		return
	}
	if s, ok := r.leaderState.replState[id]; ok {
		s.setQuiet(false)
		s.forgetCommitKnown()
		asyncNotifyCh(s.wakeCh)
		asyncNotifyCh(s.triggerCh)
	}
}

// leaseOf returns how long ago f was last in contact for the leader lease
// (the end of its quiet counts as a contact) and how long it may be.
// Main thread only.
func (r *Raft) leaseOf(f *followerReplication, now time.Time, lease time.Duration) (diff, allowed time.Duration) {
	last := f.LastContact()
	if ended := f.quietEnded.Load(); ended > last.UnixNano() {
		last = time.Unix(0, ended)
	}
	allowed = lease
	if q := r.config().QuiesceTimeout; (f.quiet.Load() || f.offering.Load()) && q > allowed {
		allowed = q
	}
	return now.Sub(last), allowed
}

// quiesceFollower is the follower's answer to a successful append or
// heartbeat a: it accepts a Quiesce offer if it holds its leader's commit
// index for its whole log, and any other request ends its quiet.
func (r *Raft) quiesceFollower(a *AppendEntriesRequest) bool {
	if a.Quiesce && len(a.Entries) == 0 && r.config().QuiesceTimeout > 0 &&
		r.getState() == Follower && r.getCommitIndex() >= r.getLastIndex() {
		r.quiescent.Store(true)
		return true
	}
	if r.quiescent.Swap(false) {
		r.notifyRare(r.followerNotifyCh) // re-arm the election timer at HeartbeatTimeout
	}
	return false
}

// followerTimeout is how long a follower waits for its leader.
func (r *Raft) followerTimeout() time.Duration {
	if r.quiescent.Load() {
		if q := r.config().QuiesceTimeout; q > 0 {
			return q
		}
	}
	return r.config().HeartbeatTimeout
}

// Quiescent reports whether this follower is quiet: its group is idle, and
// it will stand for election only after QuiesceTimeout of silence.
func (r *Raft) Quiescent() bool { return r.quiescent.Load() }

// Wake ends this follower's quiet: it stands for election once its leader
// has been silent for HeartbeatTimeout, as usual. For an application that
// learned that the leader's node is down. A no-op when not quiet.
func (r *Raft) Wake() {
	if r.quiescent.Swap(false) {
		r.notifyRare(r.followerNotifyCh)
	}
}
