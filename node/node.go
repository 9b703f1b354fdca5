package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ringkv/ringkv/membership"
	"github.com/ringkv/ringkv/partition"
	"github.com/ringkv/ringkv/replica"
	"github.com/ringkv/ringkv/storage"
	"github.com/ringkv/ringkv/transport"
	"github.com/ringkv/ringkv/wire"
)

// Node is one running kvd: its store, its replicas, its three ports and the
// controllers that keep it in shape.
type Node struct {
	cfg   Config
	log   *slog.Logger
	store *storage.Store
	ring  partition.Ring
	idMu  sync.Mutex
	id    identity // guarded by idMu; read with ident(), change with updateIdentity

	clientLn net.Listener
	peerLn   net.Listener
	mux      *transport.Mux
	// heartbeats carries every replica's Raft heartbeats, one connection per peer.
	heartbeats *transport.Heartbeats
	gossip     *membership.Gossip
	// gossipSince is when gossip started: a node that gossip has not
	// reported yet counts as dead since then (withUnknownMembers).
	gossipSince time.Time
	httpSrv     *http.Server
	native      *wire.Server // the native protocol on the client port (package wire)
	fwd         *forwarder
	reg         *prometheus.Registry
	metrics     *metrics

	mu       sync.RWMutex
	replicas map[uint32]*replica.Replica

	leadMu      sync.Mutex
	leading     []byte // bitmap of partitions this node leads
	leadChanged chan struct{}

	members       atomic.Pointer[memberSnapshot]
	removalsMu    sync.Mutex
	removals      map[uint32]removalSeen // see leaderDroppedUs
	bootstrapped  atomic.Bool
	sentBytes     atomic.Uint64 // bytes sent to Raft peers by every replica
	snapshotBytes atomic.Uint64 // bytes of snapshots read to send to followers
	logThrottle   *replica.LogThrottle
	stop          chan struct{}
	wg            sync.WaitGroup // the port servers
	ctrl          sync.WaitGroup // the controllers; Stop waits for them before closing replicas
	stopOnce      sync.Once
}

// New opens the node's store and binds its ports, checking that the data
// directory belongs to this configuration. Nothing is served until Start.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger,
		replicas:    make(map[uint32]*replica.Replica),
		leadChanged: make(chan struct{}, 1),
		stop:        make(chan struct{}),
		logThrottle: replica.NewLogThrottle(10 * time.Second),
		removals:    map[uint32]removalSeen{},
	}
	sc := storage.DefaultConfig()
	sc.Dir = filepath.Join(cfg.DataDir, "db")
	sc.Logger = cfg.Logger.With("component", "pebble")
	sc.WALBusySyncDelay = cfg.WALBusySyncDelay
	sc.WALFillAhead = int64(cfg.WALFillAheadMiB) << 20
	sc.WALWriteBuffer = cfg.WALWriteBufferKiB << 10
	store, err := storage.Open(sc)
	if err != nil {
		return nil, fmt.Errorf("open data dir %s: %w", cfg.DataDir, err)
	}
	n.store = store
	fail := func(err error) (*Node, error) {
		n.closeListeners()
		_ = store.Close()
		return nil, err
	}
	if n.id, err = loadIdentity(store, cfg); err != nil {
		return fail(err)
	}
	if n.ring, err = partition.NewRing(n.id.Partitions); err != nil {
		return fail(err)
	}
	n.leading = make([]byte, (n.id.Partitions+7)/8)
	if n.clientLn, err = net.Listen("tcp", cfg.ClientAddr); err != nil {
		return fail(fmt.Errorf("--client-addr %s: %w", cfg.ClientAddr, err))
	}
	if n.peerLn, err = net.Listen("tcp", cfg.PeerAddr); err != nil {
		return fail(fmt.Errorf("--peer-addr %s: %w", cfg.PeerAddr, err))
	}
	tc := transport.DefaultConfig()
	tc.ClusterID = n.id.ClusterID // no other goroutine runs yet
	tc.AdvertiseAddr = n.PeerAddr()
	tc.Logger = cfg.Logger.With("component", "transport")
	if n.mux, err = transport.NewMux(n.peerLn, tc); err != nil {
		return fail(err)
	}
	hc := transport.DefaultHeartbeatConfig()
	hc.Linger = cfg.HeartbeatLinger
	// Quiet heartbeats are QuiesceTimeout/4 to /2 apart. (The offer goes to
	// a follower still on HeartbeatTimeout; the channel lingers it only
	// Linger.)
	hc.QuietLinger = cfg.QuiesceTimeout / 20
	hc.SentBytes = &n.sentBytes
	hc.Logger = tc.Logger
	if n.heartbeats, err = transport.NewHeartbeats(n.mux, hc); err != nil {
		_ = n.mux.Close()
		return fail(err)
	}
	n.heartbeats.OnHangup(n.onPeerHangup)
	n.reg = prometheus.NewRegistry()
	n.metrics = newMetrics(n, n.reg)
	n.fwd = newForwarder()
	return n, nil
}

// ClientAddr is the advertised address of the client API.
func (n *Node) ClientAddr() string { return n.cfg.advertised(n.clientLn.Addr().String()) }

// PeerAddr is the advertised address of the Raft port.
func (n *Node) PeerAddr() string { return n.cfg.advertised(n.peerLn.Addr().String()) }

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Start serves the ports, opens the replicas found in the store, joins the
// cluster and, for a new cluster, bootstraps it once enough nodes have met.
func (n *Node) Start() error {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.mux.Serve(); err != nil {
			n.log.Error("peer port stopped", "error", err)
		}
	}()
	// Gossip first: every API handler and /metrics reads the member table.
	if err := n.startGossip(); err != nil {
		return err
	}
	native, err := newNativeServer(n)
	if err != nil {
		return err
	}
	n.native = native
	n.httpSrv = newHTTPServer(n)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.httpSrv.Serve(n.native.Split(n.clientLn)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("client port stopped", "error", err)
		}
	}()
	id := n.ident()
	if id.Bootstrapped {
		if err := n.openExistingReplicas(); err != nil {
			return err
		}
		n.bootstrapped.Store(true)
	}
	n.ctrl.Add(4)
	go n.joinLoop()
	go n.publishLeadership()
	go n.balanceLeaders()
	go n.reconcile()
	if !id.Bootstrapped {
		n.ctrl.Add(1)
		go n.bootstrapWhenReady()
	}
	n.log.Info("node started", "client", n.ClientAddr(), "peer", n.PeerAddr(), "gossip", n.gossip.Local().Addr,
		"partitions", id.Partitions, "replicas", id.Replicas, "cluster", id.ClusterID)
	return nil
}

// Run starts the node and stops it when ctx ends.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(); err != nil {
		n.Stop()
		return err
	}
	<-ctx.Done()
	n.log.Info("stopping")
	n.Stop()
	return nil
}

// Stop shuts everything down: client port first (no new requests), then the
// replicas, gossip (leaving gracefully) and the store.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		close(n.stop)
		// Controllers open and close replicas: let them finish first (each of
		// their steps is bounded by the request timeout).
		n.ctrl.Wait()
		n.closeClientPort(2 * time.Second)
		n.handOffLeadership(2 * time.Second)
		n.mu.Lock()
		reps := n.replicas
		n.replicas = map[uint32]*replica.Replica{}
		n.mu.Unlock()
		var wg sync.WaitGroup
		for _, r := range reps {
			wg.Add(1)
			go func() { defer wg.Done(); _ = r.Close() }()
		}
		wg.Wait()
		if n.gossip != nil {
			_ = n.gossip.Leave(time.Second)
			_ = n.gossip.Shutdown()
		}
		// The mux first: a peer dialing the heartbeat channel in between would
		// take it for an older version without one.
		_ = n.mux.Close()
		_ = n.heartbeats.Close()
		n.closeListeners()
		n.wg.Wait()
		n.fwd.close()
		if err := n.store.Close(); err != nil {
			n.log.Warn("closing store", "error", err)
		}
		n.log.Info("stopped")
	})
}

// closeClientPort stops both protocols of the client port, letting the
// requests they already read finish within the given time.
func (n *Node) closeClientPort(within time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var wg sync.WaitGroup
	if n.httpSrv != nil {
		wg.Go(func() { _ = n.httpSrv.Shutdown(ctx) })
	}
	if n.native != nil {
		wg.Go(func() { _ = n.native.Close(ctx) })
	}
	wg.Wait()
}

// handOffLeadership asks every partition this node leads to elect another
// leader now, so a planned stop costs clients a transfer (milliseconds)
// rather than an election timeout. Bounded by within; failures are fine.
func (n *Node) handOffLeadership(within time.Duration) {
	var wg sync.WaitGroup
	for _, r := range n.localReplicas() {
		if !r.IsLeader() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = r.TransferLeadership("", "")
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
	}
}

func (n *Node) closeListeners() {
	for _, ln := range []net.Listener{n.clientLn, n.peerLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

func (n *Node) startGossip() error {
	host, portStr, _ := net.SplitHostPort(n.cfg.GossipAddr)
	port, _ := strconv.Atoi(portStr)
	gc := membership.DefaultConfig()
	gc.Name = n.cfg.Name
	gc.BindAddr = host
	gc.BindPort = port
	if n.cfg.AdvertiseHost != "" {
		gc.AdvertiseAddr = n.cfg.AdvertiseHost
		gc.AdvertisePort = port
	}
	if n.cfg.GossipProbeInterval > 0 {
		gc.ProbeInterval = n.cfg.GossipProbeInterval
	}
	if n.cfg.GossipProbeTimeout > 0 {
		gc.ProbeTimeout = n.cfg.GossipProbeTimeout
	}
	if n.cfg.GossipSuspicionMult > 0 {
		gc.SuspicionMult = n.cfg.GossipSuspicionMult
	}
	gc.Logger = n.log.With("component", "gossip")
	gc.Meta = n.meta()
	gc.State = membership.StateExchange{Local: n.localRemovedState, Merge: n.mergeRemovedState}
	g, err := membership.Start(gc)
	if err != nil {
		return fmt.Errorf("--gossip-addr %s: %w", n.cfg.GossipAddr, err)
	}
	n.gossip = g
	n.gossipSince = time.Now()
	// With port 0 (tests) the real gossip port is known only now.
	if m := n.meta(); m.GossipAddr != gc.Meta.GossipAddr {
		return g.UpdateMeta(m)
	}
	return nil
}

// meta is what this node gossips about itself.
func (n *Node) meta() membership.Meta {
	gossipAddr := n.cfg.advertised(n.cfg.GossipAddr)
	if n.gossip != nil {
		gossipAddr = n.gossip.Local().Addr
	}
	n.leadMu.Lock()
	lead := append([]byte(nil), n.leading...)
	n.leadMu.Unlock()
	id := n.ident()
	return membership.Meta{
		Name:       n.cfg.Name,
		ClientAddr: n.ClientAddr(),
		PeerAddr:   n.PeerAddr(),
		GossipAddr: gossipAddr,
		ClusterID:  id.ClusterID,
		Partitions: uint32(id.Partitions),
		Replicas:   uint32(id.Replicas),
		BootNonce:  id.BootNonce,
		Draining:   id.Draining,
		Leading:    lead,
	}
}

// joinLoop keeps trying --join until a join has merged another node's view
// of the cluster, then keeps the node connected if it ever finds itself
// alone, and joins again while gossip lacks a node that a local replica's
// configuration names (keepJoined).
func (n *Node) joinLoop() {
	defer n.ctrl.Done()
	self := n.gossip.Local().Addr
	var addrs []string
	for _, a := range n.cfg.Join {
		if a != self && a != n.cfg.GossipAddr {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return
	}
	incomplete := func() bool {
		states := n.nodeStates()
		return len(n.withUnknownMembers(states)) > len(states)
	}
	keepJoined(n.stop, addrs, n.gossip.Join, func() int { return len(n.aliveMembers()) }, incomplete, n.log)
}

// keepJoined calls join until it succeeds, and again whenever alive (the
// alive members, self included) drops below 2, with a backoff from 200 ms to
// 5 s between attempts. Once joined, it also joins again, at that backoff,
// while incomplete reports that gossip lacks a node the node's replicas name.
//
// Seeing another member alive is not enough to stop trying: a restarted
// node hears from its peers by gossip before, or without, a join, and knows
// only the peers that spoke to it; a join (a push/pull of a whole view) tells
// it of the rest. Nor is one successful join always enough: the peer that
// answered may itself have suspected a third node at that moment, and a
// push/pull does not introduce a suspected node to a node that never knew
// it. Without the retries such a node waited for the next periodic
// push/pull (every 15 s, with a random peer) without an address for the
// nodes it had missed. A node that stays unknown (one that died long ago, so
// its peers forgot it) keeps one join per 5 s going until it is replaced
// and no configuration names it.
func keepJoined(stop <-chan struct{}, addrs []string, join func([]string) (int, error), alive func() int, incomplete func() bool, log *slog.Logger) {
	backoff := 200 * time.Millisecond
	joined := false
	for {
		switch {
		case !joined || alive() < 2:
			if _, err := join(addrs); err != nil {
				joined = false
				log.Warn("join failed; retrying", "join", addrs, "error", err)
			} else {
				joined = true
				backoff = 200 * time.Millisecond
			}
		case incomplete():
			if _, err := join(addrs); err != nil {
				log.Debug("join for members gossip does not know yet failed", "join", addrs, "error", err)
			}
		}
		select {
		case <-stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// aliveMembers returns the alive members (self included), sorted by name.
func (n *Node) aliveMembers() []membership.Member {
	var out []membership.Member
	for _, m := range n.memberView().list {
		if m.Status == membership.StatusAlive {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Meta.Name < out[j].Meta.Name })
	return out
}

// member returns what gossip knows of the named node.
func (n *Node) member(name string) (membership.Member, bool) {
	m, ok := n.memberView().byName[name]
	return m, ok
}

// memberSnapshot is gossip's member table at one moment.
type memberSnapshot struct {
	at     time.Time
	list   []membership.Member // sorted by name
	byName map[string]membership.Member
}

// memberView returns gossip's members as of at most memberViewTTL ago. Every
// Raft RPC resolves its peer's address through it, so it must not copy the
// gossip table each time; liveness moves in seconds, so a few milliseconds
// of staleness cost nothing.
func (n *Node) memberView() *memberSnapshot {
	if s := n.members.Load(); s != nil && time.Since(s.at) < memberViewTTL {
		return s
	}
	list := n.gossip.Members()
	s := &memberSnapshot{at: time.Now(), list: list, byName: make(map[string]membership.Member, len(list))}
	for _, m := range list {
		s.byName[m.Meta.Name] = m
	}
	n.members.Store(s)
	return s
}

const memberViewTTL = 50 * time.Millisecond

// replica returns the local replica of partition pid, if this node hosts one.
func (n *Node) replica(pid uint32) *replica.Replica {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.replicas[pid]
}

// localReplicas returns the hosted replicas sorted by partition.
func (n *Node) localReplicas() []*replica.Replica {
	n.mu.RLock()
	out := make([]*replica.Replica, 0, len(n.replicas))
	for _, r := range n.replicas {
		out = append(out, r)
	}
	n.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Partition() < out[j].Partition() })
	return out
}

// openReplica starts this node's replica of pid.
func (n *Node) openReplica(pid uint32) (*replica.Replica, error) {
	layer, err := n.mux.Listen(pid)
	if err != nil {
		return nil, err
	}
	rc := replica.DefaultConfig()
	rc.Partition = pid
	rc.NodeID = n.cfg.Name
	rc.Store = n.store
	rc.Layer = layer
	rc.SnapshotDir = replica.SnapshotPath(n.cfg.DataDir, pid)
	self := n.PeerAddr()
	rc.AddressOf = func(name string) (string, bool) {
		if name == n.cfg.Name {
			// Raft asks for its own address on every message it sends.
			return self, true
		}
		m, ok := n.member(name)
		return m.Meta.PeerAddr, ok && m.Meta.PeerAddr != ""
	}
	rc.OnLeaderChange = n.onLeaderChange
	rc.SentBytes = &n.sentBytes
	rc.SnapshotBytes = &n.snapshotBytes
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.CommitTimeout
	rc.QuiesceTimeout = n.cfg.QuiesceTimeout
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.TrailingLogs = n.cfg.TrailingLogs
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.ApplyFlushDelay = n.cfg.ApplyFlushDelay
	rc.Heartbeats = n.heartbeats
	rc.Logger = n.log
	rc.RaftLogLevel = n.cfg.RaftLogLevel
	rc.LogThrottle = n.logThrottle
	r, err := replica.Open(rc)
	if err != nil {
		_ = layer.Close()
		return nil, err
	}
	n.mu.Lock()
	n.replicas[pid] = r
	n.mu.Unlock()
	return r, nil
}

func (n *Node) openExistingReplicas() error {
	pids, err := n.store.Partitions()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if int(pid) >= n.ring.Partitions() {
			return fmt.Errorf("data dir holds partition %d but the cluster has %d partitions", pid, n.ring.Partitions())
		}
		if _, err := n.openReplica(pid); err != nil {
			return fmt.Errorf("open replica of partition %d: %w", pid, err)
		}
	}
	n.log.Info("reopened replicas", "count", len(pids))
	return nil
}

// onLeaderChange records leadership in the gossiped bitmap.
func (n *Node) onLeaderChange(pid uint32, isLeader bool) {
	n.leadMu.Lock()
	if isLeader {
		n.leading[pid/8] |= 1 << (pid % 8)
	} else {
		n.leading[pid/8] &^= 1 << (pid % 8)
	}
	n.leadMu.Unlock()
	select {
	case n.leadChanged <- struct{}{}:
	default:
	}
}

// publishLeadership gossips the leadership bitmap, at most every 100 ms.
func (n *Node) publishLeadership() {
	defer n.ctrl.Done()
	for {
		select {
		case <-n.stop:
			return
		case <-n.leadChanged:
		}
		select {
		case <-n.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
		if err := n.gossip.UpdateMeta(n.meta()); err != nil {
			n.log.Warn("gossiping leadership", "error", err)
		}
	}
}
