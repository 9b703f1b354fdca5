// Copyright (c) HashiCorp, Inc.
// SPDX-License-Identifier: MPL-2.0

package raft

// RingKV: the follower and leader loops wait on few channels while no rare
// request is pending (RINGKV.md, the eighth patch).
//
// Upstream's loops wait in one select over every channel the state reads:
// twelve for a follower, fifteen for a leader. A select locks each of its
// channels and queues a waiter on each, so its cost grows with the number
// of cases, and under load the two loops run it once per append, commit and
// proposal. Most of those channels carry requests that come seldom:
// configuration changes and reads of it, bootstraps, user restores,
// leadership transfers, step-downs, lease checks and timeout changes.
//
// While none of those is pending, the loops leave their channels nil, which
// a select skips at no cost, and wait on the hot ones and on rareBell.
// Whoever sends on a rare channel rings the bell, so the loop wakes and
// waits on every channel until the request is taken:
//   - a sender that may block (the unbuffered request channels, and
//     configurationsCh and leadershipTransferCh, whose buffers may be full)
//     counts itself in rareWaiting before it rings and stops counting once
//     its send returned, taken or not;
//   - a notification on a one-slot channel stays in its buffer until the
//     loop takes it, and the loop checks those buffers' lengths.
//
// A sender counts itself before it rings, and the loop checks rarePending
// before each wait: if the loop's check missed a sender, the sender's ring
// comes after the check, and the bell ends the wait that follows. A bell
// rung for a request the loop already took costs one extra pass.

// rareSend runs send, a send on one of the rare request channels, counted
// in rareWaiting, with the bell rung before it. send may block.
func (r *Raft) rareSend(send func()) {
	r.rareWaiting.Add(1)
	asyncNotifyCh(r.rareBell)
	send()
	r.rareWaiting.Add(-1)
}

// notifyRare notifies the one-slot channel ch and rings the bell.
func (r *Raft) notifyRare(ch chan struct{}) {
	asyncNotifyCh(ch)
	asyncNotifyCh(r.rareBell)
}

// rarePending reports whether the main loop must wait on every channel: a
// rare request is being sent or waits in a buffer. Main thread only (it
// reads leaderState).
func (r *Raft) rarePending() bool {
	return r.rareWaiting.Load() > 0 ||
		len(r.configurationsCh) > 0 || len(r.leadershipTransferCh) > 0 ||
		len(r.leaderNotifyCh) > 0 || len(r.followerNotifyCh) > 0 ||
		len(r.leaseCheckCh) > 0 || len(r.leaderState.stepDown) > 0
}
