package replica

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/raftfsm"
	"github.com/ringkv/ringkv/storage"
	"github.com/ringkv/ringkv/transport"
)

// netNode is one node of a real-network group: a peer port on loopback, a
// store, and (unless it plays an older version) the heartbeat channel.
type netNode struct {
	id  string
	mux *transport.Mux
	hb  *transport.Heartbeats // nil: a node without the heartbeat channel
	st  *storage.Store
	rep *Replica
}

func startNetNode(t *testing.T, id string, coalesce bool) *netNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux, err := transport.NewMux(ln, transport.TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = mux.Serve() }()
	n := &netNode{id: id, mux: mux}
	if coalesce {
		hc := transport.DefaultHeartbeatConfig()
		hc.Timeout = 2 * time.Second
		hc.QuietLinger = hc.Timeout / 20
		if n.hb, err = transport.NewHeartbeats(mux, hc); err != nil {
			t.Fatal(err)
		}
	}
	if n.st, err = storage.Open(storage.TestConfig()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n.rep != nil {
			_ = n.rep.Close()
		}
		_ = mux.Close()
		if n.hb != nil {
			_ = n.hb.Close()
		}
		_ = n.st.Close()
	})
	return n
}

func (n *netNode) open(t *testing.T, partition uint32) {
	t.Helper()
	layer, err := n.mux.Listen(partition)
	if err != nil {
		t.Fatal(err)
	}
	cfg := TestConfig()
	// Real TCP under -race on a loaded machine: a lease long enough that a
	// stall does not cost the leader its term between two steps of a test.
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	cfg.Partition = partition
	cfg.NodeID = n.id
	cfg.Store = n.st
	cfg.Layer = layer
	cfg.snapshots = raft.NewInmemSnapshotStore()
	cfg.Logger = slog.New(slog.DiscardHandler)
	if n.hb != nil {
		cfg.Heartbeats = n.hb
	}
	if n.rep, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
}

// A group whose nodes mix coalesced heartbeats with a node that has no
// heartbeat channel (a rolling upgrade) elects, replicates and serves strong
// reads whoever leads: the coalescing nodes fall back to per-partition RPCs
// for the old one, and still coalesce between themselves.
func TestHeartbeatsMixedVersions(t *testing.T) {
	nodes := []*netNode{startNetNode(t, "a", true), startNetNode(t, "b", true), startNetNode(t, "old", false)}
	var servers []Server
	for _, n := range nodes {
		n.open(t, 7)
		servers = append(servers, Server{ID: n.id, Addr: n.mux.Addr().String(), Voter: true})
	}
	for _, n := range nodes {
		if err := n.rep.Bootstrap(servers); err != nil {
			t.Fatal(err)
		}
	}
	leader := func() *netNode {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			for _, n := range nodes {
				if n.rep.IsLeader() {
					return n
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("no leader within 15s")
		return nil
	}
	seq := uint64(0)
	writeAndRead := func(l *netNode) {
		t.Helper()
		seq++
		key, val := fmt.Sprintf("k%d", seq), fmt.Sprintf("v%d", seq)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, _, err := l.rep.Propose(ctx, []raftfsm.Command{put(key, val, seq)}); err != nil {
			t.Fatalf("put via leader %s: %v", l.id, err)
		}
		rd, err := l.rep.ReadStrong(ctx, []byte(key))
		if err != nil || string(rd.Value) != val {
			t.Fatalf("strong read via %s = %q, %v; want %q", l.id, rd.Value, err, val)
		}
		for _, n := range nodes { // every follower applies it
			deadline := time.Now().Add(10 * time.Second)
			for {
				rd, err := n.rep.ReadEventual([]byte(key))
				if err == nil && string(rd.Value) == val {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s never applied %s (leader %s): %q, %v", n.id, key, l.id, rd.Value, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	for _, target := range []string{"old", "a", "b"} {
		l := leader()
		if l.id != target {
			var to *netNode
			for _, n := range nodes {
				if n.id == target {
					to = n
				}
			}
			if err := l.rep.TransferLeadership(to.id, to.mux.Addr().String()); err != nil {
				t.Fatalf("transfer %s -> %s: %v", l.id, target, err)
			}
			deadline := time.Now().Add(15 * time.Second)
			for !to.rep.IsLeader() {
				if time.Now().After(deadline) {
					t.Fatalf("%s did not take over from %s", target, l.id)
				}
				time.Sleep(20 * time.Millisecond)
			}
			l = to
		}
		writeAndRead(l)
	}
	// a and b coalesced between themselves: each answered the other's.
	for _, n := range nodes[:2] {
		if s := n.hb.Stats(); s.Sent == 0 || s.Answered == 0 {
			t.Errorf("%s: heartbeat channel unused between the new nodes: %+v", n.id, s)
		}
	}
}
