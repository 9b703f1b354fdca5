package raft

import "sync/atomic"

// RingKV, the twelfth patch: the leader's fast path for new entries.
//
// Upstream, every new entry wakes each follower's replication goroutine
// (replicate) through its triggerCh; the goroutine builds the append, sends
// it and waits for the answer, which wakes it a second time. Under many
// groups with one write each in flight, those two hand-offs per follower
// and write are a large part of the leader's work. When the transport can
// send without waiting (WithAsyncAppend), the main loop now sends a
// caught-up follower's new entries itself, and the answer is handled on the
// transport's goroutine that received it; that goroutine also sends what
// was appended meanwhile. The replication goroutine stays for everything
// else: a follower that is behind, failed or refused an append, a snapshot,
// large appends the transport cannot send without waiting, the commit-index
// refresh and stopping.
//
// Only one append that carries entries is in flight to a follower at a
// time, as before (RingKV runs without pipelining): the fastPath token is
// the right to send one, and whoever holds it (the replication goroutine
// for one replicateTo, or the fast path for one append and its answer) is
// the only sender. The replication goroutine skips a trigger while the
// fast path holds the token; the fast path, after its answer, sends what is
// new itself, and after giving the token back looks once more, so that an
// entry appended while it held the token is never left waiting (the main
// loop stores the last index before it tries the token).
//
// Safety does not rest on this exclusion: an acknowledgement only ever
// raises a follower's match index to the last entry of the request it
// answers (commitment.match never lowers it), whichever goroutine sent it.

// fastPathHooks lets tests stop the fast path at the two points of its
// hardest race (ringkv_fastpath_test.go); nil outside tests.
type fastPathHooks struct {
	nothingToSend  func(*followerReplication) // fastAnswered found nothing new, still holding the token
	triggerSkipped func(*followerReplication) // the replication goroutine skipped a trigger: the token was held
}

var fastPathTestHooks atomic.Pointer[fastPathHooks]

// fastPath is a follower's state for the fast path.
type fastPath struct {
	// token is the right to send this follower an append with entries:
	// full (one element) while someone holds it.
	token chan struct{}
	// ok says the fast path may send: the last append to this follower
	// succeeded. A failure or refusal hands the follower back to the
	// replication goroutine, and its next success turns ok on again.
	ok atomic.Bool
	// stopped says replication to this follower has ended.
	stopped atomic.Bool
	// tickArmed says the replication goroutine waits with a commit-index
	// refresh due (commitTick not nil). A fast append leaves the follower
	// without the new commit index; when no refresh is due, the fast path
	// rings rearm, on which the goroutine only arms one.
	tickArmed atomic.Bool
	rearm     chan struct{}
}

func newFastPath() fastPath {
	return fastPath{token: make(chan struct{}, 1), rearm: make(chan struct{}, 1)}
}

// tryAcquire takes the token if it is free.
func (f *fastPath) tryAcquire() bool {
	select {
	case f.token <- struct{}{}:
		return true
	default:
		return false
	}
}

// acquire waits for the token. The fast path holds it for at most one
// append's round trip, which the transport bounds with its timeout.
func (f *fastPath) acquire() { f.token <- struct{}{} }

// release gives the token back.
func (f *fastPath) release() { <-f.token }

// replicated records how the replication goroutine's replicateTo ended and
// gives the token back: a follower whose last append succeeded may take
// the fast path again.
func (s *followerReplication) replicated(shouldStop bool) {
	s.ok.Store(!shouldStop && s.failures == 0)
	s.release()
}

// handBack closes the fast path to s after a failed or refused append and
// gives its replication goroutine the token and the work.
func (s *followerReplication) handBack() {
	s.ok.Store(false)
	s.release()
	asyncNotifyCh(s.triggerCh)
}

// fastResult is what sendFast did.
type fastResult int

const (
	fastSent    fastResult = iota // sent; the token stays with the append
	fastNothing                   // the follower has every entry
	fastCannot                    // not sent: the replication goroutine must
)

// replicateNew tells follower s that new entries are in the log: the main
// loop calls it after each append. It sends them at once when the fast
// path may, and otherwise triggers s's replication goroutine as upstream
// does.
func (r *Raft) replicateNew(s *followerReplication) {
	t, ok := r.trans.(WithAsyncAppend)
	if !ok || !s.ok.Load() || !s.tryAcquire() {
		asyncNotifyCh(s.triggerCh)
		return
	}
	switch r.sendFast(t, s) {
	case fastSent:
	case fastNothing:
		s.release()
	default:
		s.release()
		asyncNotifyCh(s.triggerCh)
	}
}

// sendFast sends s every entry from its next index to the last one in one
// append (up to MaxAppendEntries), whose answer fastAnswered handles. The
// caller holds the token; it passes to the append when this returns
// fastSent.
func (r *Raft) sendFast(t WithAsyncAppend, s *followerReplication) fastResult {
	if s.stopped.Load() || !s.ok.Load() {
		return fastCannot
	}
	next := atomic.LoadUint64(&s.nextIndex)
	last := r.getLastIndex()
	if next > last {
		return fastNothing
	}
	s.peerLock.RLock()
	peer := s.peer
	s.peerLock.RUnlock()
	req := new(AppendEntriesRequest)
	resp := new(AppendEntriesResponse)
	if err := r.setupAppendEntries(s, req, next, last); err != nil {
		return fastCannot // a snapshot is due, or the log failed: the slow path logs it
	}
	sent := s.sentAfter()
	if !t.AppendEntriesAsync(peer.ID, peer.Address, req, resp, func(err error) {
		r.fastAnswered(t, s, req, resp, sent, err)
	}) {
		return fastCannot
	}
	return fastSent
}

// fastAnswered handles the answer to a fast append, as replicateTo does
// for its own, then sends what was appended meanwhile or gives the token
// back. It runs on the transport's goroutine, holding the token.
func (r *Raft) fastAnswered(t WithAsyncAppend, s *followerReplication, req *AppendEntriesRequest, resp *AppendEntriesResponse, sent uint64, err error) {
	if err != nil {
		s.handBack() // it retries, with its backoff and logging
		return
	}
	if resp.Term > req.Term {
		s.ok.Store(false)
		s.release()
		r.handleStaleTerm(s)
		return
	}
	s.setLastContact()
	if !resp.Success {
		// As replicateTo: back off the next index, and let the replication
		// goroutine find where the logs agree.
		s.forgetCommitKnown()
		atomic.StoreUint64(&s.nextIndex, max(min(atomic.LoadUint64(&s.nextIndex)-1, resp.LastLog+1), 1))
		s.handBack()
		return
	}
	updateLastAppended(s, req, sent)
	for {
		switch r.sendFast(t, s) {
		case fastSent:
			return
		case fastCannot:
			s.release()
			if !s.stopped.Load() {
				asyncNotifyCh(s.triggerCh)
			}
			return
		}
		// Nothing to send. An entry appended after that look found the
		// token held and was left to this goroutine: look again once the
		// token is back.
		if h := fastPathTestHooks.Load(); h != nil && h.nothingToSend != nil {
			h.nothingToSend(s)
		}
		s.release()
		if s.stopped.Load() || atomic.LoadUint64(&s.nextIndex) > r.getLastIndex() || !s.tryAcquire() {
			break
		}
	}
	if !s.tickArmed.Load() {
		asyncNotifyCh(s.rearm) // so that it arms a commit-index refresh
	}
}
