// Package clienttest runs fake RingKV nodes in-process for tests of code
// that talks to a cluster (the client, kvctl). A fake node serves the real
// KV and Cluster services over Connect on an h2c httptest server (and the KV
// service over the native protocol on the same port), keeps keys
// in one map shared by the fake cluster, deduplicates writes by request id
// like the real state machine, and lets a test intercept every call with a
// Hook (to fail it, delay it, or record it). Like a real node, any fake node
// accepts strong reads and writes and answers them as the partition's leader
// would (the receipt names the leader); without a leader they fail with
// Unavailable. It has no Raft and no persistence: it checks the wire
// contract, not the cluster.
//
// Placement is a simple model: each partition has voters and nonvoters
// (every node a voter at first), each node a draining and a removed flag,
// and the real planner (partition.Plan) says what should happen next.
// Nothing moves by itself: a test calls Step to apply one configuration
// step per partition, the way leaders would, for example from a Hook on
// Partitions calls so that the cluster converges while a tool polls it.
package clienttest

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/partition"
	"github.com/ringkv/ringkv/wire"
)

// Limits the fake enforces, the real defaults.
const (
	MaxKeyBytes   = 4096
	MaxValueBytes = 1 << 20
)

// LeaderHeader is the header that names the leader's client address.
const LeaderHeader = "Ringkv-Leader"

// Call is one request a fake node received.
type Call struct {
	Node      string
	Procedure string // e.g. ringkvv1connect.KVPutProcedure
	Msg       proto.Message
	Header    http.Header
	// Seq orders the calls of the whole fake cluster: Cluster.Calls
	// returns them by it.
	Seq uint64
}

// Hook sees every call before the fake serves it. A non-nil error is
// returned to the caller instead of the normal answer; a hook may block
// until ctx ends to simulate a hung node.
type Hook func(ctx context.Context, c Call) error

// Cluster is a set of fake nodes sharing one key space.
type Cluster struct {
	Nodes []*Node
	Ring  partition.Ring

	mu        sync.Mutex
	data      map[string]entry
	index     uint64
	dedup     map[[2]uint64]proto.Message
	leaders   []int // partition -> node index, -1: none
	members   []*ringkvv1.Member
	replicas  int        // R
	voters    [][]string // partition -> voter names
	nonvoters [][]string // partition -> nonvoter names
	sent      []uint64   // node index -> Raft bytes sent
	seq       atomic.Uint64
}

type entry struct {
	value   []byte
	version uint64
}

// Node is one fake node.
type Node struct {
	// Cluster methods the fake does not model answer CodeUnimplemented.
	ringkvv1connect.UnimplementedClusterHandler

	Name string
	Addr string // host:port of its client port
	URL  string

	cluster *Cluster
	srv     *httptest.Server
	native  *wire.Server // nil with ConnectOnly

	mu    sync.Mutex
	hook  Hook
	calls []Call
}

// Option changes how NewCluster builds the fake nodes.
type Option func(*options)

type options struct{ connectOnly bool }

// ConnectOnly makes the fake nodes serve Connect alone, like nodes older
// than the native protocol (package wire): its preface gets an HTTP 400.
func ConnectOnly() Option { return func(o *options) { o.connectOnly = true } }

// NewCluster starts n fake nodes with p partitions, all led by node 0 and
// replicated on every node (R = n), and stops them when the test ends. Like
// real nodes they serve the KV service over Connect and the native protocol
// on one port, unless ConnectOnly is given.
func NewCluster(t testing.TB, n, p int, opts ...Option) *Cluster {
	t.Helper()
	ring, err := partition.NewRing(p)
	if err != nil {
		t.Fatalf("clienttest: %v", err)
	}
	c := &Cluster{
		Ring:      ring,
		data:      make(map[string]entry),
		dedup:     make(map[[2]uint64]proto.Message),
		leaders:   make([]int, p),
		replicas:  n,
		voters:    make([][]string, p),
		nonvoters: make([][]string, p),
		sent:      make([]uint64, n),
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	for i := range n {
		node := &Node{Name: fmt.Sprintf("node%d", i+1), cluster: c}
		mux := http.NewServeMux()
		mux.Handle(ringkvv1connect.NewKVHandler(node))
		mux.Handle(ringkvv1connect.NewClusterHandler(node))
		srv := httptest.NewUnstartedServer(mux)
		var protocols http.Protocols
		protocols.SetHTTP1(true)
		protocols.SetUnencryptedHTTP2(true)
		srv.Config.Protocols = &protocols
		if !o.connectOnly {
			native, err := wire.NewServer(wire.DefaultServerConfig(), wire.ServeKV(node, nil), nil)
			if err != nil {
				t.Fatalf("clienttest: %v", err)
			}
			srv.Listener = native.Split(srv.Listener)
			node.native = native
			t.Cleanup(func() { _ = native.Close(context.Background()) })
		}
		srv.Start()
		t.Cleanup(srv.Close)
		node.srv, node.URL = srv, srv.URL
		node.Addr = strings.TrimPrefix(srv.URL, "http://")
		c.Nodes = append(c.Nodes, node)
		c.members = append(c.members, &ringkvv1.Member{
			Name: node.Name, Status: "alive", ClientAddr: node.Addr,
			PeerAddr: fmt.Sprintf("127.0.0.1:%d", 7201+i), GossipAddr: fmt.Sprintf("127.0.0.1:%d", 7301+i),
		})
	}
	for id := range c.voters {
		for _, node := range c.Nodes {
			c.voters[id] = append(c.voters[id], node.Name)
		}
	}
	return c
}

// Endpoints returns the nodes' client addresses.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// SetLeader makes node i (-1: none) the leader of every partition.
func (c *Cluster) SetLeader(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := range c.leaders {
		c.leaders[p] = i
	}
}

// SetPartitionLeader makes node i (-1: none) the leader of partition id.
func (c *Cluster) SetPartitionLeader(id partition.ID, i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leaders[id] = i
}

// SetMemberStatus changes the status Members reports for node i.
func (c *Cluster) SetMemberStatus(i int, status string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members[i].Status = status
}

// Set stores a key directly, as if written earlier.
func (c *Cluster) Set(key, value []byte) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index++
	c.data[string(key)] = entry{value: append([]byte(nil), value...), version: c.index}
	return c.index
}

// Value returns a key's stored value.
func (c *Cluster) Value(key []byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.data[string(key)]
	return e.value, ok
}

// Calls returns the calls every node received for procedure ("" = all).
func (c *Cluster) Calls(procedure string) []Call {
	var out []Call
	for _, n := range c.Nodes {
		out = append(out, n.Calls(procedure)...)
	}
	slices.SortFunc(out, func(a, b Call) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// SetHook sets the hook of every node.
func (c *Cluster) SetHook(h Hook) {
	for _, n := range c.Nodes {
		n.SetHook(h)
	}
}

// SetHook sets the node's hook (nil: none).
func (n *Node) SetHook(h Hook) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hook = h
}

// Calls returns the calls the node received for procedure ("" = all).
func (n *Node) Calls(procedure string) []Call {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Call
	for _, c := range n.calls {
		if procedure == "" || c.Procedure == procedure {
			out = append(out, c)
		}
	}
	return out
}

// Stop shuts the node's server down: its address then refuses connections,
// and its native connections are closed.
func (n *Node) Stop() {
	n.srv.Close()
	if n.native != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = n.native.Close(ctx)
	}
}

// NotLeader returns the error a real node gives when it is not the leader
// and cannot forward, with the leader hint when leaderAddr is not empty.
func NotLeader(leaderAddr string) error {
	err := connect.NewError(connect.CodeUnavailable, fmt.Errorf("not leader: leader is %s", leaderAddr))
	if leaderAddr != "" {
		err.Meta().Set(LeaderHeader, leaderAddr)
	}
	return err
}

// enter records a call and runs the hook.
func (n *Node) enter(ctx context.Context, procedure string, msg proto.Message, h http.Header) error {
	call := Call{Node: n.Name, Procedure: procedure, Msg: proto.Clone(msg), Header: h.Clone(), Seq: n.cluster.seq.Add(1)}
	n.mu.Lock()
	n.calls = append(n.calls, call)
	hook := n.hook
	n.mu.Unlock()
	if hook != nil {
		return hook(ctx, call)
	}
	return nil
}

func (c *Cluster) leaderOf(key []byte) (int, partition.ID) {
	id := c.Ring.Of(key)
	return c.leaders[id], id
}

func checkKey(key []byte) error {
	switch {
	case len(key) == 0:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("key is empty"))
	case len(key) > MaxKeyBytes:
		return connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("key is %d bytes; the limit is %d bytes", len(key), MaxKeyBytes))
	}
	return nil
}

func checkValue(v []byte) error {
	if len(v) > MaxValueBytes {
		return connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("value is %d bytes; the limit is %d bytes", len(v), MaxValueBytes))
	}
	return nil
}

// write applies fn once per request id, like the real state machine. As a
// real node forwards writes to the leader, any node accepts them while the
// key's partition has a leader; without one they fail with Unavailable.
func (c *Cluster) write(key []byte, id *ringkvv1.RequestID, fn func() proto.Message) (proto.Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if leader, pid := c.leaderOf(key); leader < 0 {
		return nil, noLeader(pid)
	}
	k := [2]uint64{id.GetClientId(), id.GetSeq()}
	if k[0] != 0 {
		if prev, ok := c.dedup[k]; ok {
			return prev, nil
		}
	}
	c.index++
	out := fn()
	if k[0] != 0 {
		c.dedup[k] = out
	}
	return out, nil
}

func noLeader(id partition.ID) error {
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("partition %d has no leader", id))
}

func partitionID(i int) partition.ID { return partition.ID(i) }
