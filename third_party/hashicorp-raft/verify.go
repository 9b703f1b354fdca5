// RingKV addition (RINGKV.md): leadership checks count only acknowledgements
// of requests sent after they started.
//
// VerifyLeader (what a ReadIndex read relies on) registers a future with every
// follower's replication and triggers a heartbeat to each; the leader is
// confirmed once a quorum acknowledged it. Upstream counted any successful
// response that arrived after the registration, including one to a request
// that was already on its way before it. Such a response proves that the
// follower followed this leader when it handled the request, which may be
// before the read noted its commit index: if a new leader was elected and
// committed a write in between, a read could miss that write.
//
// So each registration takes a number (notifySeq), each request records the
// number reached when it is sent (sentAfter), and its acknowledgement votes
// only for registrations up to that number (notifySent). A false vote (the
// follower has a newer term) still goes to every registration: it only
// fails the check. Pipelined appends record nothing and resolve no check; the
// heartbeat that every check triggers does, and a heartbeat in flight at
// registration is followed by another one at once (notifyCh stays set).
package raft

// register records v as waiting for this follower's acknowledgement of a
// request sent from now on.
func (s *followerReplication) register(v *verifyFuture) {
	s.notifyLock.Lock()
	s.notifySeq++
	s.notify[v] = s.notifySeq
	s.notifyLock.Unlock()
}

// sentAfter is called just before a request is sent: an acknowledgement of
// it may resolve the checks registered up to the number it returns.
func (s *followerReplication) sentAfter() uint64 {
	s.notifyLock.Lock()
	defer s.notifyLock.Unlock()
	return s.notifySeq
}

// notifySent votes leader for the checks registered before the acknowledged
// request was sent (number up to sent), or false for every check.
func (s *followerReplication) notifySent(leader bool, sent uint64) {
	if !leader {
		s.notifyAll(false)
		return
	}
	if sent == 0 { // a pipelined append, or nothing registered yet
		return
	}
	var resolved []*verifyFuture
	s.notifyLock.Lock()
	for v, seq := range s.notify {
		if seq <= sent {
			resolved = append(resolved, v)
			delete(s.notify, v)
		}
	}
	s.notifyLock.Unlock()
	for _, v := range resolved {
		v.vote(true)
	}
}
