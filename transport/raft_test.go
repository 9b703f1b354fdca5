package transport_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/transport"
)

// streamLayer is the adapter the replica package writes: a Layer as a
// raft.StreamLayer.
type streamLayer struct{ *transport.Layer }

func (s streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return s.Layer.Dial(string(addr), timeout)
}

var _ raft.StreamLayer = streamLayer{}

// listFSM records applied commands.
type listFSM struct {
	mu      sync.Mutex
	applied []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, string(l.Data))
	return len(f.applied)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, fmt.Errorf("not supported") }
func (f *listFSM) Restore(io.ReadCloser) error         { return fmt.Errorf("not supported") }

func (f *listFSM) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.applied...)
}

// syncBuffer is a log sink shared by raft goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type raftNode struct {
	r     *raft.Raft
	fsm   *listFSM
	trans *raft.NetworkTransport
}

// TestRaftGroupsShareOnePort runs two partitions' Raft groups across three
// nodes, each node with a single Mux: both groups elect a leader through
// pre-vote and replicate an Apply to every member, and neither group sees
// the other's entries.
func TestRaftGroupsShareOnePort(t *testing.T) {
	const nodes = 3
	partitions := []uint32{10, 11}
	logs := &syncBuffer{}

	muxes := make([]*transport.Mux, nodes)
	for i := range muxes {
		muxes[i] = startMux(t)
	}

	groups := map[uint32][]raftNode{}
	for _, p := range partitions {
		var servers []raft.Server
		for i, m := range muxes {
			l, err := m.Listen(p)
			if err != nil {
				t.Fatalf("Listen(%d): %v", p, err)
			}
			trans := raft.NewNetworkTransport(streamLayer{l}, 3, 2*time.Second, logs)
			var _ raft.WithPreVote = trans // pre-vote needs this capability

			conf := raft.DefaultConfig()
			conf.LocalID = raft.ServerID(fmt.Sprintf("node-%d", i))
			// Short enough for a quick election, long enough that a loaded
			// -race machine's stalls do not cost the leader its lease
			// between waitLeader and Apply.
			conf.HeartbeatTimeout = 500 * time.Millisecond
			conf.ElectionTimeout = 500 * time.Millisecond
			conf.LeaderLeaseTimeout = 250 * time.Millisecond
			conf.CommitTimeout = 10 * time.Millisecond
			conf.LogOutput = logs
			conf.LogLevel = "INFO"
			if conf.PreVoteDisabled {
				t.Fatal("raft.DefaultConfig disables pre-vote")
			}
			fsm := &listFSM{}
			store := raft.NewInmemStore()
			r, err := raft.NewRaft(conf, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
			if err != nil {
				t.Fatalf("NewRaft: %v", err)
			}
			t.Cleanup(func() {
				if err := r.Shutdown().Error(); err != nil {
					t.Errorf("raft shutdown: %v", err)
				}
				_ = trans.Close()
			})
			groups[p] = append(groups[p], raftNode{r, fsm, trans})
			servers = append(servers, raft.Server{ID: conf.LocalID, Address: trans.LocalAddr()})
		}
		if err := groups[p][0].r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			t.Fatalf("bootstrap partition %d: %v", p, err)
		}
	}

	for _, p := range partitions {
		t.Run(fmt.Sprint("partition ", p), func(t *testing.T) {
			leader := waitLeader(t, groups[p])
			cmd := fmt.Sprintf("partition %d says hello", p)
			if err := leader.r.Apply([]byte(cmd), 5*time.Second).Error(); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			for i, n := range groups[p] {
				waitUntil(t, fmt.Sprintf("node-%d applies %q", i, cmd), func() bool {
					got := n.fsm.list()
					return len(got) == 1 && got[0] == cmd
				})
			}
		})
	}

	out := logs.String()
	if strings.Contains(out, "pre-vote is disabled") {
		t.Errorf("raft disabled pre-vote:\n%s", out)
	}
	if !strings.Contains(out, "pre-vote successful") {
		t.Errorf("no election went through pre-vote:\n%s", out)
	}
}

func startMux(t *testing.T) *transport.Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := transport.NewMux(ln, transport.TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Serve() }()
	t.Cleanup(func() {
		_ = m.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return m
}

// waitLeader waits until every node of a group agrees on one leader.
func waitLeader(t *testing.T, group []raftNode) raftNode {
	t.Helper()
	var leader raftNode
	waitUntil(t, "a leader all nodes agree on", func() bool {
		var addr raft.ServerAddress
		for _, n := range group {
			a, _ := n.r.LeaderWithID()
			if a == "" || (addr != "" && a != addr) {
				return false
			}
			addr = a
			if n.r.State() == raft.Leader {
				leader = n
			}
		}
		return leader.r != nil
	})
	return leader
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
