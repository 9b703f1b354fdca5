package node

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/partition"
)

// addNode starts one more node that joins the cluster through gossip.
func (c *testCluster) addNode(name string) *Node {
	c.t.Helper()
	cfg := TestConfig(name, c.t.TempDir())
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Join = []string{c.nodes[0].gossip.Local().Addr}
	n, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { stopWithin(c.t, n, time.Minute) })
	c.nodes = append(c.nodes, n)
	c.cfgs = append(c.cfgs, cfg)
	return n
}

// settled reports whether, as seen from n, every partition has exactly its
// desired voters, no nonvoter, and a leader.
func settled(ctx context.Context, n *Node) (bool, string) {
	resp, err := clusterService{n}.Plan(ctx, connect.NewRequest(&ringkvv1.PlanRequest{}))
	if err != nil {
		return false, err.Error()
	}
	for _, p := range resp.Msg.Partitions {
		if p.Moving || p.Leader == "" {
			return false, fmt.Sprintf("p%d voters=%v nonvoters=%v desired=%v leader=%q next=%q blocked=%q",
				p.Id, p.Voters, p.Nonvoters, p.Desired, p.Leader, p.Next, p.Blocked)
		}
	}
	return true, ""
}

func waitSettled(t *testing.T, n *Node, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(within)
	why := ""
	for time.Now().Before(deadline) {
		var ok bool
		if ok, why = settled(ctx, n); ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("placement did not settle within %v: %s", within, why)
}

func hosts(n *Node) []string {
	var out []string
	for _, r := range n.localReplicas() {
		if _, voter, _ := r.Membership(); voter {
			out = append(out, fmt.Sprint(r.Partition()))
		}
	}
	return out
}

func TestJoinDrainAndDeadNodeReplacement(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	kv := kvClient(c.nodes[0])
	const keys = 200
	for i := range keys {
		_, err := kv.Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Key: fmt.Appendf(nil, "k%03d", i), Value: fmt.Appendf(nil, "v%03d", i),
			RequestId: &ringkvv1.RequestID{ClientId: 77, Seq: uint64(i + 1), AckBelow: uint64(i + 1)}}))
		if err != nil {
			t.Fatal(err)
		}
	}
	checkKeys := func(via *Node, consistency string) {
		t.Helper()
		for i := range keys {
			// A partition may be between leaders (the balancer moves them
			// after a join): unavailable is retried, as the Go client
			// would, for a bounded time; any other answer is final.
			deadline := time.Now().Add(15 * time.Second)
			for {
				got, err := kvClient(via).Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: fmt.Appendf(nil, "k%03d", i), Consistency: consistency}))
				if err == nil && string(got.Msg.Value) == fmt.Sprintf("v%03d", i) {
					break
				}
				if connect.CodeOf(err) != connect.CodeUnavailable || time.Now().After(deadline) {
					t.Fatalf("%s read of k%03d via %s: %v %v", consistency, i, via.Name(), got, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}

	// Join: a fourth node receives about a quarter of the replicas.
	n4 := c.addNode("n4")
	waitFor(t, 20*time.Second, "n4 joined the cluster", func() bool {
		m, ok := c.nodes[0].member("n4")
		return ok && m.Meta.ClusterID == c.nodes[0].ident().ClusterID
	})
	waitSettled(t, c.nodes[0], 60*time.Second)
	if got, want := len(hosts(n4)), 8*3/4; got < want-3 || got > want+3 {
		t.Fatalf("n4 hosts %d replicas (%v), want about %d", got, hosts(n4), want)
	}
	for _, n := range c.nodes {
		checkKeys(n, "strong")
	}
	waitFor(t, 10*time.Second, "eventual reads on n4 see every key", func() bool {
		for i := range keys {
			k := fmt.Appendf(nil, "k%03d", i)
			if r := n4.replica(uint32(n4.ring.Of(k))); r != nil {
				if _, voter, _ := r.Membership(); voter {
					rd, err := r.ReadEventual(k)
					if err != nil || string(rd.Value) != fmt.Sprintf("v%03d", i) {
						return false
					}
				}
			}
		}
		return true
	})

	// Drain n4: its replicas and leaderships move away.
	if _, err := (clusterService{c.nodes[1]}).Drain(ctx, connect.NewRequest(&ringkvv1.DrainRequest{Node: "n4"})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "n4 drained", func() bool { return len(n4.localReplicas()) == 0 })
	waitSettled(t, c.nodes[0], 30*time.Second)
	checkKeys(c.nodes[2], "strong")

	// Undrain, then n2 dies: after the dead timeout its replicas are re-created.
	if _, err := (clusterService{c.nodes[0]}).Drain(ctx, connect.NewRequest(&ringkvv1.DrainRequest{Node: "n4", Undrain: true})); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, c.nodes[0], 60*time.Second)
	stopWithin(t, c.nodes[1], time.Minute)
	survivors := []*Node{c.nodes[0], c.nodes[2], n4}
	waitFor(t, 90*time.Second, "n2's replicas replaced", func() bool {
		for pid := range uint32(8) {
			var voters []string
			for _, n := range survivors {
				if r := n.replica(pid); r != nil && r.IsLeader() {
					for _, s := range r.State().Servers {
						if s.Voter {
							voters = append(voters, s.ID)
						}
					}
				}
			}
			if len(voters) != 3 || slices.Contains(voters, "n2") {
				return false
			}
		}
		return true
	})
	for _, n := range survivors {
		checkKeys(n, "strong")
	}
	_ = partition.ID(0)
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestJoinerLearnsRemovedNodes: a node that joins after `kvctl remove`
// knows the removed list before it acts (it could otherwise lead a
// partition and add the removed node back), and a node that was away
// learns it through gossip's push/pull.
func TestJoinerLearnsRemovedNodes(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	stopWithin(t, c.nodes[2], time.Minute)
	waitFor(t, 20*time.Second, "n3 gone by gossip", func() bool {
		m, ok := c.nodes[0].member("n3")
		return ok && m.Status != "alive"
	})
	if _, err := (clusterService{c.nodes[0]}).Remove(ctx, connect.NewRequest(&ringkvv1.RemoveRequest{Node: "n3"})); err != nil {
		t.Fatal(err)
	}
	n4 := c.addNode("n4")
	waitFor(t, 20*time.Second, "n4 joined", func() bool { return n4.bootstrapped.Load() })
	if !slices.Contains(n4.ident().Removed, "n3") {
		t.Fatalf("n4 joined and may act, but its removed list is %v; want n3 in it", n4.ident().Removed)
	}
}
