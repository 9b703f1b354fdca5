package integration

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/client"
)

// Regression tests for bugs this suite found in kvd. Each TestBug* describes
// the bug as it was; all are fixed (see integration/README.md) and now guard
// against their return. A newly found bug gets a test here too, skipped with
// t.Skip("BUG: ...") only while it is open.

// TestBugClusterAPIBeforeGossip: kvd serves its client port before it has
// started gossip, so a Members call that arrives during startup dereferences
// a nil *membership.Gossip (a panic that net/http recovers, and a data race
// on Node.gossip under -race).
func TestBugClusterAPIBeforeGossip(t *testing.T) {
	// The window is a few milliseconds wide: try a few fresh starts, with
	// several callers each.
	for round := range 5 {
		c := newUnstarted(t, 1)
		c.args = append(c.args, "--bootstrap-expect", "3") // never forms: only startup matters
		members := ringkvv1connect.NewClusterClient(c.http, "http://"+c.nodes[0].clientAddr)
		c.launch(0)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				// The client port is bound before Start serves it, so calls
				// that connect early are answered the moment serving begins.
				answered := 0
				poll(10*time.Second, time.Millisecond, func() bool {
					ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
					defer cancel()
					if _, err := members.Members(ctx, connect.NewRequest(&ringkvv1.MembersRequest{})); err == nil {
						answered++
					}
					return answered >= 3
				})
			})
		}
		wg.Wait()
		c.waitLogLine(0, "node started")
		c.stop(0)
		log, _ := os.ReadFile(c.nodes[0].logPath)
		c.nodes = nil // judged here; nothing left for the cleanup scan
		if problems, _ := logProblems(log, false); len(problems) > 0 {
			t.Fatalf("start %d: Members calls during startup left %d problems in the node log; first:\n%s", round+1, len(problems), problems[0])
		}
	}
}

// TestBugGossipLeaveRace: a node stopped with SIGTERM announces its leave by
// sending to the *memberlist.Node values that Memberlist.Members returned,
// from other goroutines, while memberlist rewrites them on every alive
// message (hashicorp/memberlist#306): a data race on every clean stop that
// coincides with gossip, e.g. with leadership moving away.
func TestBugGossipLeaveRace(t *testing.T) {
	c := newCluster(t, 3)
	c.tolerateKnownBugs = false
	for round := range 3 {
		c.stopAll()
		for _, p := range c.nodes {
			log, _ := os.ReadFile(p.logPath)
			if problems, _ := logProblems(log, false); len(problems) > 0 {
				t.Fatalf("stop %d: %s's log: %s", round+1, p.name, problems[0])
			}
		}
		c.restartAll()
	}
}

// TestBugHugeValueNotInvalidArgument: a value far over the 1 MiB limit
// (3 MiB, above the node's read limit of 2 x value limit + key limit +
// 64 KiB) is refused by Connect's read limit as resource_exhausted (HTTP
// 429) with "message size N is larger than configured max 2166784", which
// does not name the value limit; the Go client classifies
// resource_exhausted as retryable, uploads the value MaxAttempts times and
// reports ErrUnavailable ("no node could serve it").
func TestBugHugeValueNotInvalidArgument(t *testing.T) {
	c := newCluster(t, 3)
	huge := bytes.Repeat([]byte("v"), 3<<20)
	body, err := proto.Marshal(&ringkvv1.PutRequest{Key: []byte("k"), Value: huge})
	if err != nil {
		t.Fatal(err)
	}
	status, code, msg := c.postRaw(t, 0, "/ringkv.v1.KV/Put", "application/proto", body)
	if status != http.StatusBadRequest || code != "invalid_argument" || !strings.Contains(msg, "1048576") {
		t.Errorf("put of a 3 MiB value: HTTP %d %s %q; want 400 invalid_argument naming the 1048576-byte limit", status, code, msg)
	}
	_, err = c.newClient(nil).Put(ctxFor(t, 30*time.Second), []byte("k"), huge)
	if e, ok := errors.AsType[*client.Error](err); !errors.Is(err, client.ErrInvalidArgument) || !ok || e.Attempts != 1 {
		t.Errorf("client put of a 3 MiB value: %v; want ErrInvalidArgument at the first attempt", err)
	}
}

// TestBugLeaderlessWriteOutcomeUnknown: while a partition has no leader, a
// node keeps a write waiting for one until its --request-timeout (5 s by
// default) or the caller's deadline, whichever is first, and only then
// answers Unavailable ("not applied"). The client's attempt timeout
// (client.DefaultConfig: 3 s) is never longer, so the client always gives
// up on the attempt first, counts it as "maybe applied", and a write that
// was certainly never proposed fails with ErrOutcomeUnknown instead of
// ErrUnavailable.
func TestBugLeaderlessWriteOutcomeUnknown(t *testing.T) {
	c := newCluster(t, 3, "--request-timeout", "5s") // kvd's default
	c.kill9(1)
	c.kill9(2)
	// Wait until the survivor knows no leader for any partition.
	if !poll(15*time.Second, 100*time.Millisecond, func() bool {
		st, err := c.status(0)
		return err == nil && st.GetPartitionsWithoutLeader() == 16
	}) {
		t.Fatal("the survivor still sees leaders 15 s after losing quorum")
	}
	cl := c.newClient(func(cfg *client.Config) { cfg.MaxAttempts = 2 }, c.endpoints(0)...)
	_, err := cl.Put(ctxFor(t, 30*time.Second), []byte("k"), []byte("v"))
	if !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("put with no leader anywhere (client defaults, 2 attempts): %v; want ErrUnavailable: no attempt was ever proposed", err)
	}
}

// TestBugStopHangsAfterElection: SIGTERM right after elections can hang
// kvd for good. replica.watchLeadership starts a raft Barrier on every
// election win and Replica.Close waits (r.wg) for that goroutine after
// raft.Shutdown. With BatchApplyCh the barrier's future can sit in raft's
// buffered applyCh when raft shuts down; nothing ever answers it and
// logFuture.Error has no shutdown case (hashicorp/raft#498), so Close, and
// the process, wait forever. The goroutine dump (SIGQUIT) shows main in
// Node.Stop -> Replica.Close -> WaitGroup.Wait and a goroutine of
// watchLeadership in logFuture.Error.
func TestBugStopHangsAfterElection(t *testing.T) {
	c := newCluster(t, 3)
	c.tolerateKnownBugs = false
	for round := range 10 {
		c.stopAll()
		if t.Failed() {
			t.Fatalf("round %d: a node did not stop on SIGTERM (goroutine dump in its log)", round+1)
		}
		c.restartIntoElections()
	}
	c.stopAll()
}

// TestBugSlowStopDuringElections: SIGTERM during elections takes about
// 11 s instead of about 1 s. Replica.Close calls raft.Shutdown, which waits
// for in-flight vote RPCs, before it closes the replica's transport; a peer
// that is stopping too has accepted the RPC but its raft no longer answers
// and its transport stays open until its own raft.Shutdown returns, so both
// wait for the NetworkTransport timeout (10 s, replica.go). The goroutine
// dump shows Replica.Close in shutdownFuture.Error and raft goroutines in
// NetworkTransport.genericRPC (RequestVote, RequestPreVote) and
// handleCommand.
func TestBugSlowStopDuringElections(t *testing.T) {
	c := newCluster(t, 3)
	for round := range 5 {
		c.restartIntoElections()
		start := time.Now()
		c.stopAll()
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("round %d: stopping the nodes during elections took %v; want a few seconds at most", round+1, took.Round(time.Millisecond))
		}
		c.restartAll()
	}
}

// restartIntoElections stops every node, starts them again and returns as
// soon as the first partition has a leader: all 16 partitions elect leaders
// within a few hundred milliseconds after a full restart, so the cluster is
// in the middle of a storm of elections (and post-election barriers).
func (c *cluster) restartIntoElections() {
	c.t.Helper()
	c.stopAll()
	for i := range c.nodes {
		c.launch(i)
	}
	for i := range c.nodes {
		c.waitLogLine(i, "node started") // see TestBugClusterAPIBeforeGossip
	}
	if !poll(60*time.Second, 2*time.Millisecond, func() bool {
		for i := range c.nodes {
			if st, err := c.status(i); err == nil && st.GetLeadersHosted() > 0 {
				return true
			}
		}
		return false
	}) {
		c.t.Fatal("no leader within 60 s of a full restart")
	}
}
