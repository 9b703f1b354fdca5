package storage

import (
	"sync/atomic"
	"time"
)

// busyCommitsPerSync is how many synced log commits the recent WAL syncs
// must have covered on average before syncPacer holds syncs back.
const busyCommitsPerSync = 4

// syncPacer tells Pebble, after each WAL sync, how long to wait before the
// next one (pebble.Options.WALMinSyncInterval, which Pebble's WAL flusher
// calls after every sync; writes continue meanwhile, only the fsync waits).
//
// Every partition's Raft log shares the node's one WAL, so concurrent log
// writes already share fsyncs. Under many concurrent writers, waiting a
// little longer makes each fsync cover more of them, which saves CPU and
// disk work per write; for a lone writer any wait is pure latency. So the
// pacer waits busy only while the recent syncs each covered, on average, at
// least busyCommitsPerSync synced commits (a moving average over about
// eight syncs), and fixed always. A commit is acknowledged only after the
// fsync that covers it either way: pacing trades latency, never durability.
type syncPacer struct {
	fixed, busy time.Duration
	commits     atomic.Uint64 // synced log commits so far (LogStore.StoreLogs)
	syncs       atomic.Uint64 // WAL syncs so far (calls of interval)

	// Written only by interval. Pebble calls it from a WAL's flusher
	// goroutine; while a WAL is being replaced, the old and the new one's
	// flushers may both call it, which can only blur the average.
	seen atomic.Uint64 // commits at the previous call
	avg  atomic.Uint64 // moving average of commits per sync, in 1/16ths
}

// committed counts one synced log commit.
func (p *syncPacer) committed() { p.commits.Add(1) }

// CountSyncedLogWrites tells the WAL sync pacer (Config.WALBusySyncDelay)
// that the caller is about to commit, synced, one batch that carries the
// log writes of n Raft groups. LogStore.StoreLogs counts its own writes; a
// writer that puts several groups' entries into one batch of its own (a
// node-level Raft engine, such as the prototype in bench/multiraft) calls
// this, so that the pacer sees the load the batch stands for: held back
// under load, each sync covers more of them.
func (s *Store) CountSyncedLogWrites(n int) {
	if n > 0 {
		s.pacer.commits.Add(uint64(n))
	}
}

// interval is pebble.Options.WALMinSyncInterval.
func (p *syncPacer) interval() time.Duration {
	p.syncs.Add(1)
	c := p.commits.Load()
	var n uint64
	if prev := p.seen.Swap(c); c > prev { // not so if another flusher swapped in a later count
		n = min(c-prev, 1<<20)
	}
	avg := p.avg.Load()
	avg = avg - avg/8 + n*16/8
	p.avg.Store(avg)
	if p.busy > 0 && avg >= busyCommitsPerSync*16 {
		return max(p.fixed, p.busy)
	}
	return p.fixed
}
