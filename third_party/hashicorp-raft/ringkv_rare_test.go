// Copyright (c) HashiCorp, Inc.
// SPDX-License-Identifier: MPL-2.0

package raft

import (
	"errors"
	"testing"
	"time"
)

// within runs f and fails the test if it has not returned after d.
func within(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s: no answer within %v", what, d)
		return nil
	}
}

// The main loops wait on few channels while no rare request is pending
// (rare.go). A rare request must still reach a loop that nothing else
// wakes: here every timer is 20 s or more and no RPC arrives, so without
// the bell each request below would wait for a timer.
func TestRingKVRareRequestsReachAWaitingLoop(t *testing.T) {
	conf := inmemConfig(t)
	conf.HeartbeatTimeout = 40 * time.Second
	conf.ElectionTimeout = 40 * time.Second
	conf.LeaderLeaseTimeout = 20 * time.Second
	conf.LocalID = "n1"
	store := NewInmemStore()
	addr, trans := NewInmemTransport("")
	r, err := NewRaft(conf, &MockFSM{}, store, store, NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Shutdown().Error() })
	const wait = 5 * time.Second
	// settle makes the loop pass through its top with nothing rare
	// pending, so that it waits on the few channels when the next request
	// comes: a leadership check travels on a hot channel and is answered
	// by the loop (ErrNotLeader on a follower).
	settle := func() {
		t.Helper()
		_ = within(t, wait, "a leadership check", func() error { return r.VerifyLeader().Error() })
	}

	// A follower waiting on its 40-80 s heartbeat timer: an unbuffered
	// request (bootstrap), a buffered one (leadership transfer) and a
	// notification (a shorter heartbeat timeout) must each reach it.
	settle()
	err = within(t, wait, "live bootstrap of a waiting follower", func() error {
		return r.BootstrapCluster(Configuration{Servers: []Server{{Suffrage: Voter, ID: "n1", Address: addr}}}).Error()
	})
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	settle()
	err = within(t, wait, "leadership transfer asked of a waiting follower", func() error {
		return r.LeadershipTransfer().Error()
	})
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("leadership transfer on a follower: %v, want %v", err, ErrNotLeader)
	}
	if r.State() != Follower {
		t.Fatalf("state %v before the reload, want Follower", r.State())
	}
	settle()
	// A shorter heartbeat timeout restarts the follower's timer at once;
	// it has never heard from a leader, so it stands and wins at once.
	if err := r.ReloadConfig(ReloadableConfig{
		TrailingLogs: conf.TrailingLogs, SnapshotInterval: conf.SnapshotInterval, SnapshotThreshold: conf.SnapshotThreshold,
		HeartbeatTimeout: 20 * time.Second, ElectionTimeout: 20 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for r.State() != Leader {
		if time.Now().After(deadline) {
			t.Fatalf("no leader within %v of a shorter heartbeat timeout: state %v", wait, r.State())
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A leader waiting on its 20 s lease timer, with no followers to hear
	// from: a configuration change and a read of it must reach it.
	settle()
	err = within(t, wait, "configuration change asked of a waiting leader", func() error {
		return r.AddNonvoter("n2", "n2-addr", 0, 0).Error()
	})
	if err != nil {
		t.Fatalf("add a non-voter: %v", err)
	}
	var cfg Configuration
	err = within(t, wait, "the latest configuration from a waiting leader", func() error {
		f := r.GetConfiguration()
		cfg = f.Configuration()
		return f.Error()
	})
	if err != nil || len(cfg.Servers) != 2 {
		t.Fatalf("configuration after adding n2: %+v, %v; want 2 servers", cfg, err)
	}
	if err := within(t, wait, "an apply", func() error { return r.Apply([]byte("x"), 0).Error() }); err != nil {
		t.Fatalf("apply: %v", err)
	}
	settle()
	// A snapshot asks the main loop for the configurations
	// (configurationsCh, a buffered request).
	err = within(t, wait, "a snapshot, which reads the configurations from a waiting leader", func() error {
		return r.Snapshot().Error()
	})
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
}
