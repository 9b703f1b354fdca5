package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringkv/ringkv/raftfsm"
	"github.com/ringkv/ringkv/replica"
	"github.com/ringkv/ringkv/storage"
	"github.com/ringkv/ringkv/transport"
)

// hcSetupTimeout bounds each phase of newHashicorp that waits on Raft: first
// leaders, leaders moved to where they belong, setup entries applied.
const hcSetupTimeout = 60 * time.Second

// hcNode is one in-process kvd node as far as replication goes: its Pebble
// store, its peer port (one Mux shared by every partition), its heartbeat
// channel and its replica of every partition. Gossip, the client port and
// the controllers of package node are left out.
type hcNode struct {
	name  string // Raft server id: "n1", "n2", "n3"
	addr  string // advertised peer address
	store *storage.Store
	mux   *transport.Mux
	hb    *transport.Heartbeats
	serve chan error // Mux.Serve's result once it returns
	reps  []*replica.Replica

	// The byte counters kvd shares among a node's replicas and heartbeat
	// channel (node.Node.sentBytes, snapshotBytes): wired the same so that
	// every write pays what it pays in kvd.
	sentBytes     atomic.Uint64
	snapshotBytes atomic.Uint64
}

// hashicorpCluster is the cluster of RingKV's own engine: package replica,
// one hashicorp/raft group per partition.
type hashicorpCluster struct {
	nodes [3]*hcNode
}

// newHashicorp starts three in-process nodes of RingKV's own engine (package
// replica: one hashicorp/raft group per partition, the heartbeat channel,
// the Pebble log store), wired as kvd wires them, and elects leaders spread
// evenly: partition pid is led by node pid%3. It returns once every node has
// applied every entry of the setup (see settle).
//
// Every Raft setting is kvd's default (node.DefaultConfig, which kvd's flags
// default to), and it reaches the replicas and the heartbeat channel as
// node.New and node.Node.openReplica pass it on. kvd's defaults are those of
// replica.DefaultConfig and transport.DefaultHeartbeatConfig: the quiesce
// timeout, snapshot threshold and interval, trailing logs and heartbeat
// linger are taken from them, and the four Raft timeouts (heartbeat 1 s,
// election 1 s, leader lease 500 ms, commit 200 ms) are the same values. So
// both are used as they are; package node itself, with its gossip and API
// dependencies, stays out of this module.
func newHashicorp(cfg clusterConfig) (cluster, error) {
	if cfg.Partitions < 1 {
		return nil, fmt.Errorf("hashicorp: %d partitions", cfg.Partitions)
	}
	c := &hashicorpCluster{}
	fail := func(err error) (cluster, error) {
		return nil, errors.Join(err, c.Close())
	}
	for i := range c.nodes {
		var err error
		if c.nodes[i], err = startHCNode(cfg, i); err != nil {
			return fail(fmt.Errorf("hashicorp: node %d: %w", i+1, err))
		}
	}
	addrs := make(map[string]string, len(c.nodes))
	servers := make([]replica.Server, 0, len(c.nodes))
	for _, n := range c.nodes {
		addrs[n.name] = n.addr
		servers = append(servers, replica.Server{ID: n.name, Addr: n.addr, Voter: true})
	}
	for i, n := range c.nodes {
		if err := n.openReplicas(cfg, i, addrs); err != nil {
			return fail(fmt.Errorf("hashicorp: node %d: %w", i+1, err))
		}
	}
	for _, n := range c.nodes {
		for pid, r := range n.reps {
			if err := r.Bootstrap(servers); err != nil {
				return fail(fmt.Errorf("hashicorp: bootstrap partition %d on %s: %w", pid, n.name, err))
			}
		}
	}
	if err := waitFor(hcSetupTimeout, "hashicorp: a leader for every partition", func() bool {
		for pid := range cfg.Partitions {
			if c.leaderOf(uint32(pid)) < 0 {
				return false
			}
		}
		return true
	}); err != nil {
		return fail(err)
	}
	if err := c.balance(); err != nil {
		return fail(err)
	}
	if err := c.settle(); err != nil {
		return fail(err)
	}
	return c, nil
}

// startHCNode opens node i's store and peer port and starts serving its
// peer port and heartbeat channel, as node.New and node.Node.Start do. On
// error it returns what it opened so far, for Close.
func startHCNode(cfg clusterConfig, i int) (*hcNode, error) {
	n := &hcNode{name: fmt.Sprintf("n%d", i+1)}
	var err error
	if n.store, err = cfg.openStore(i); err != nil {
		return nil, err
	}
	ln, err := listen()
	if err != nil {
		return n, err
	}
	n.addr = ln.Addr().String()
	tc := transport.DefaultConfig()
	tc.ClusterID = "bench"
	tc.AdvertiseAddr = n.addr
	tc.Logger = slog.New(slog.DiscardHandler)
	if n.mux, err = transport.NewMux(ln, tc); err != nil {
		_ = ln.Close()
		return n, err
	}
	n.serve = make(chan error, 1)
	go func() { n.serve <- n.mux.Serve() }()
	// Linger is kvd's --raft-heartbeat-linger default; QuietLinger is
	// derived from the quiesce timeout as node.New derives it.
	hc := transport.DefaultHeartbeatConfig()
	hc.QuietLinger = replica.DefaultConfig().QuiesceTimeout / 20
	hc.SentBytes = &n.sentBytes
	hc.Logger = tc.Logger
	n.hb, err = transport.NewHeartbeats(n.mux, hc)
	return n, err
}

// openReplicas opens node i's replica of every partition, configured as
// node.Node.openReplica configures it. addrs maps every node's name to its
// peer address (what kvd learns from gossip).
func (n *hcNode) openReplicas(cfg clusterConfig, i int, addrs map[string]string) error {
	dir, err := cfg.nodeDir(i)
	if err != nil {
		return err
	}
	for pid := range uint32(cfg.Partitions) {
		layer, err := n.mux.Listen(pid)
		if err != nil {
			return err
		}
		rc := replica.DefaultConfig() // kvd's Raft timings and snapshot settings
		rc.Partition = pid
		rc.NodeID = n.name
		rc.Store = n.store
		rc.Layer = layer
		rc.SnapshotDir = replica.SnapshotPath(dir, pid)
		rc.AddressOf = func(name string) (string, bool) {
			a, ok := addrs[name]
			return a, ok
		}
		rc.SentBytes = &n.sentBytes
		rc.SnapshotBytes = &n.snapshotBytes
		rc.Heartbeats = n.hb
		rc.Logger = slog.New(slog.DiscardHandler)
		// Above kvd's Warn: the handler discards anyway, and this spares
		// hashicorp/raft formatting the lines.
		rc.RaftLogLevel = slog.LevelError
		r, err := replica.Open(rc)
		if err != nil {
			_ = layer.Close()
			return fmt.Errorf("partition %d: %w", pid, err)
		}
		n.reps = append(n.reps, r)
	}
	return nil
}

// leaderOf returns the index of the one node whose replica of pid leads, or
// -1 if none does or, during a hand-over, more than one believes it does.
func (c *hashicorpCluster) leaderOf(pid uint32) int {
	leader := -1
	for i, n := range c.nodes {
		if n.reps[pid].IsLeader() {
			if leader >= 0 {
				return -1
			}
			leader = i
		}
	}
	return leader
}

// balance moves leaderships until partition pid is led by node pid%3 and
// only by it. Each poll (every 20 ms, see waitFor) asks the current leader
// of every misplaced partition with no transfer under way to hand it over;
// a transfer that fails, or that an election undoes later, is simply asked
// for again. Transfers still running when it returns are waited for.
func (c *hashicorpCluster) balance() error {
	parts := len(c.nodes[0].reps)
	busy := make([]atomic.Bool, parts)
	var wg sync.WaitGroup
	defer wg.Wait()
	return waitFor(hcSetupTimeout, "hashicorp: partition pid led by node pid%3", func() bool {
		done := true
		for pid := range uint32(parts) {
			want := int(pid % 3)
			cur := c.leaderOf(pid)
			if cur == want {
				continue
			}
			done = false
			if cur < 0 || !busy[pid].CompareAndSwap(false, true) {
				continue // no single leader to ask yet, or already asked
			}
			to := c.nodes[want]
			wg.Go(func() {
				defer busy[pid].Store(false)
				_ = c.nodes[cur].reps[pid].TransferLeadership(to.name, to.addr)
			})
		}
		return done
	})
}

// settle makes Applied a true baseline. The FSM's applied index moves only
// with the entries it is handed (commands and configurations): the no-ops
// and barriers that the elections and transfers above appended, about three
// per partition, would otherwise be counted by the first put of each
// partition, long after setup. So in every partition settle waits until the
// leader applied its post-election barrier (ReadStrong does), then commits
// an entry of no commands after it (it writes only the applied index), and
// waits until every node applied that entry.
func (c *hashicorpCluster) settle() error {
	parts := len(c.nodes[0].reps)
	last := make([]uint64, parts) // index of each partition's empty entry; 0 until committed
	return waitFor(hcSetupTimeout, "hashicorp: setup entries applied on every node", func() bool {
		var wg sync.WaitGroup
		for pid := range uint32(parts) {
			if last[pid] == 0 {
				wg.Go(func() { last[pid], _ = c.commitEmpty(pid) }) // retried next poll
			}
		}
		wg.Wait()
		for pid, idx := range last {
			if idx == 0 {
				return false
			}
			for _, n := range c.nodes {
				if n.reps[pid].AppliedIndex() < idx {
					return false
				}
			}
		}
		return true
	})
}

// commitEmpty has the leader of pid, once its post-election barrier is
// applied, commit an entry of no commands, and returns the entry's index.
func (c *hashicorpCluster) commitEmpty(pid uint32) (uint64, error) {
	l := c.leaderOf(pid)
	if l < 0 {
		return 0, fmt.Errorf("hashicorp: partition %d has no leader", pid)
	}
	r := c.nodes[l].reps[pid]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.ReadStrong(ctx, nil); err != nil { // any key: only the wait matters
		return 0, err
	}
	_, idx, err := r.Propose(ctx, nil)
	return idx, err
}

// Put proposes cmd to the leader of partition pid, as kvd's write path does
// (replica.Replica.Propose), and waits until the leader applied it.
func (c *hashicorpCluster) Put(ctx context.Context, pid uint32, cmd raftfsm.Command) error {
	for _, n := range c.nodes {
		r := n.reps[pid]
		if !r.IsLeader() {
			continue
		}
		res, _, err := r.Propose(ctx, []raftfsm.Command{cmd})
		switch {
		case err != nil:
			return fmt.Errorf("hashicorp: put to partition %d on %s: %w", pid, n.name, err)
		case len(res) != 1:
			return fmt.Errorf("hashicorp: put to partition %d on %s: %d results for 1 command", pid, n.name, len(res))
		case res[0].Status != raftfsm.StatusOK:
			return fmt.Errorf("hashicorp: put to partition %d on %s: %v: %s", pid, n.name, res[0].Status, res[0].Err)
		}
		return nil
	}
	return fmt.Errorf("hashicorp: partition %d has no leader", pid)
}

// Applied returns the sum of every partition's applied index on node 1.
func (c *hashicorpCluster) Applied() uint64 {
	var sum uint64
	for _, r := range c.nodes[0].reps {
		sum += r.AppliedIndex()
	}
	return sum
}

// Get reads key from node i's replica of pid (replica.ReadEventual).
func (c *hashicorpCluster) Get(i int, pid uint32, key []byte) ([]byte, bool, error) {
	r, err := c.nodes[i].reps[pid].ReadEventual(key)
	return r.Value, r.Found, err
}

// Leaders returns how many partitions each node's replicas believe they
// lead.
func (c *hashicorpCluster) Leaders() [3]int {
	var out [3]int
	for i, n := range c.nodes {
		for _, r := range n.reps {
			if r.IsLeader() {
				out[i]++
			}
		}
	}
	return out
}

// Close stops every node in node.Node.Stop's order: every replica of every
// node at once (so none waits out a timeout on a peer that stopped first),
// then each node's Mux, heartbeat channel and store. It tolerates a cluster
// that newHashicorp built only in part.
func (c *hashicorpCluster) Close() error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, n := range c.nodes {
		if n == nil {
			continue
		}
		for _, r := range n.reps {
			wg.Go(func() {
				if err := r.Close(); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: close partition %d: %w", n.name, r.Partition(), err))
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	for _, n := range c.nodes {
		if n == nil {
			continue
		}
		// The Mux before the heartbeat channel, as node.Node.Stop does.
		if n.mux != nil {
			errs = append(errs, n.mux.Close())
			errs = append(errs, <-n.serve)
		}
		if n.hb != nil {
			errs = append(errs, n.hb.Close())
		}
		if n.store != nil {
			errs = append(errs, n.store.Close())
		}
	}
	return errors.Join(errs...)
}
