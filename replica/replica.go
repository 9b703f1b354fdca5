package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/raftfsm"
	"github.com/ringkv/ringkv/storage"
)

// StreamLayer is one partition's share of the node's peer port (see package
// transport): a listener for inbound Raft connections and a dialer that opens
// connections to the same partition on other nodes.
type StreamLayer interface {
	net.Listener
	Dial(address string, timeout time.Duration) (net.Conn, error)
}

// Config configures one partition's replica on this node.
type Config struct {
	Partition uint32
	// NodeID is this node's name; it is the Raft server ID.
	NodeID string
	// Store is the node's Pebble store, shared by every replica.
	Store *storage.Store
	// Layer carries this partition's Raft RPCs.
	Layer StreamLayer
	// SnapshotDir holds this partition's Raft snapshots.
	SnapshotDir string
	// AddressOf resolves a node's current peer address (from gossip), so a node
	// that restarts on another address is still reached. Nil: use the address
	// recorded in the Raft configuration.
	AddressOf func(nodeID string) (string, bool)
	// SentBytes, if set, counts the bytes this replica sends to its peers
	// (appends and snapshots); the node shares one counter among replicas.
	SentBytes *atomic.Uint64
	// SnapshotBytes, if set, counts the bytes of stored snapshots read to be
	// sent to followers.
	SnapshotBytes *atomic.Uint64
	// Heartbeats, if set, carries this replica's Raft heartbeats in frames
	// shared with the node's other partitions (transport.Heartbeats). Nil
	// sends one RPC per heartbeat.
	Heartbeats Heartbeater
	// OnLeaderChange is called (from the replica's own goroutine) whenever this
	// replica gains or loses leadership.
	OnLeaderChange func(partition uint32, isLeader bool)

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// QuiesceTimeout lets idle groups go quiet (raft.Config.QuiesceTimeout,
	// in the patched hashicorp/raft): a follower of an idle group is
	// heartbeated every QuiesceTimeout/4 to /2 and waits QuiesceTimeout
	// for its leader, unless fast failover (failover.go) wakes it first.
	// Zero turns it off; otherwise at least 2x HeartbeatTimeout.
	QuiesceTimeout    time.Duration
	MaxAppendEntries  int
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// LogCacheSize is how many recent log entries are kept in memory.
	LogCacheSize int
	// ApplyFlushDelay lets applied writes wait in memory for up to this long
	// (or until they hold ApplyWriteBack bytes) and reach Pebble together
	// (raftfsm.Config.WriteBack): a loaded group then writes its dedup
	// record and applied index once per flush instead of once per apply.
	// Zero writes every apply batch through.
	ApplyFlushDelay time.Duration
	ApplyWriteBack  int

	Logger *slog.Logger
	// RaftLogLevel filters hashicorp/raft's own log lines (it logs every
	// election of every partition at Info).
	RaftLogLevel slog.Level
	// LogThrottle, shared by a node's replicas, drops repeats of the same
	// Raft log line within its interval. Nil logs everything.
	LogThrottle *LogThrottle

	// For in-process tests: a transport and snapshot store to use instead of
	// Layer and SnapshotDir.
	transport raft.Transport
	snapshots raft.SnapshotStore
}

// DefaultConfig returns production timings: a failed leader is replaced in a
// few seconds, and idle groups send few heartbeats.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      200 * time.Millisecond,
		QuiesceTimeout:     10 * time.Second,
		MaxAppendEntries:   256,
		SnapshotInterval:   60 * time.Second,
		SnapshotThreshold:  16384,
		TrailingLogs:       10240,
		LogCacheSize:       512,
		ApplyFlushDelay:    200 * time.Millisecond,
		ApplyWriteBack:     128 << 10,
		Logger:             slog.Default(),
		RaftLogLevel:       slog.LevelWarn,
	}
}

// TestConfig returns fast timings for tests.
func TestConfig() Config {
	c := DefaultConfig()
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.QuiesceTimeout = 2 * time.Second
	c.SnapshotInterval = 5 * time.Second
	c.SnapshotThreshold = 1024
	c.TrailingLogs = 256
	return c
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("replica: NodeID is empty")
	case c.Store == nil:
		return errors.New("replica: Store is nil")
	case c.Layer == nil && c.transport == nil:
		return errors.New("replica: Layer is nil")
	case c.SnapshotDir == "" && c.snapshots == nil:
		return errors.New("replica: SnapshotDir is empty")
	case c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLeaseTimeout <= 0 || c.CommitTimeout <= 0:
		return errors.New("replica: Raft timeouts must be positive")
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("replica: LeaderLeaseTimeout %v exceeds HeartbeatTimeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.QuiesceTimeout < 0 || (c.QuiesceTimeout > 0 && c.QuiesceTimeout < 2*c.HeartbeatTimeout):
		return fmt.Errorf("replica: QuiesceTimeout %v must be 0 (off) or at least twice HeartbeatTimeout %v", c.QuiesceTimeout, c.HeartbeatTimeout)
	case c.MaxAppendEntries <= 0 || c.MaxAppendEntries > 1024:
		return fmt.Errorf("replica: MaxAppendEntries %d outside 1..1024", c.MaxAppendEntries)
	case c.LogCacheSize <= 0:
		return errors.New("replica: LogCacheSize must be positive")
	case c.ApplyFlushDelay < 0 || c.ApplyFlushDelay > MaxApplyFlushDelay:
		return fmt.Errorf("replica: ApplyFlushDelay %v outside 0..%v", c.ApplyFlushDelay, MaxApplyFlushDelay)
	case c.ApplyFlushDelay > 0 && (c.ApplyWriteBack <= 0 || c.ApplyWriteBack > raftfsm.MaxWriteBack):
		return fmt.Errorf("replica: ApplyWriteBack %d bytes outside 1..%d", c.ApplyWriteBack, raftfsm.MaxWriteBack)
	case c.Logger == nil:
		return errors.New("replica: Logger is nil")
	}
	return nil
}

// Server is one member of a partition's Raft configuration.
type Server struct {
	ID    string
	Addr  string
	Voter bool
}

// State is a point-in-time view of the replica.
type State struct {
	Partition    uint32
	Leader       bool
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	// LastIndex is the index of the last entry in this replica's log.
	LastIndex uint64
	Servers   []Server
}

// Replica is this node's member of one partition's Raft group.
type Replica struct {
	cfg    Config
	log    *slog.Logger
	raft   *raft.Raft
	fsm    *raftfsm.FSM
	flush  *time.Timer // writes the FSM's pending state; nil if it writes through
	logs   raft.LogStore
	trans  raft.Transport
	verify *verifier

	// readyTerm is the term in which this replica, as leader, has applied a
	// barrier: strong reads are served only while it equals the current term.
	readyTerm atomic.Uint64
	readyMu   sync.Mutex
	readyCh   chan struct{} // closed and replaced whenever readyTerm changes

	// Proposals (propose.go): queue waits for the next entry; handing says
	// a Propose call is handing it to Raft; slots bounds queue; pending
	// holds the entries not yet answered, by tag; inflight feeds them, in
	// order, to the completer.
	propMu   sync.Mutex
	queue    []*proposal
	handing  bool
	slots    chan struct{}
	pending  map[uint64]*inflight
	nextTag  uint64
	tagNonce uint64 // random: see entryTagLen
	inflight chan *inflight

	notifyCh  chan bool
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closed    atomic.Bool

	failingOver atomic.Bool // a fast failover is under way (failover.go)
}

// Open starts the replica: it loads the FSM and Raft state from the store and
// joins its Raft group (as a follower until an election makes it leader). A
// replica with no Raft state waits for Bootstrap or for a leader to add it.
func Open(cfg Config) (*Replica, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("partition", cfg.Partition)
	fsm, flushTimer, err := openFSM(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("replica %d: open state machine: %w", cfg.Partition, err)
	}
	hclog := newHCLogger(cfg.Logger, cfg.RaftLogLevel, cfg.LogThrottle, "partition", cfg.Partition)

	store := cfg.Store.Log(cfg.Partition)
	logs, err := raft.NewLogCache(cfg.LogCacheSize, store)
	if err != nil {
		fsm.Close()
		return nil, err
	}
	snaps := cfg.snapshots
	if snaps == nil {
		if err := os.MkdirAll(cfg.SnapshotDir, 0o755); err != nil {
			fsm.Close()
			return nil, fmt.Errorf("replica %d: snapshot dir: %w", cfg.Partition, err)
		}
		snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.SnapshotDir, 1, hclog)
		if err != nil {
			fsm.Close()
			return nil, fmt.Errorf("replica %d: snapshot store: %w", cfg.Partition, err)
		}
	}
	if cfg.SnapshotBytes != nil {
		snaps = countingSnapshots{snaps, cfg.SnapshotBytes}
	}
	trans := cfg.transport
	if trans == nil {
		nt := newNetworkTransport(cfg, hclog)
		trans = nt
		if cfg.Heartbeats != nil {
			trans = newCoalescingTransport(nt, cfg.Heartbeats, cfg.Partition, cfg.AddressOf)
		}
	}

	r := &Replica{
		cfg:      cfg,
		log:      log,
		fsm:      fsm,
		flush:    flushTimer,
		logs:     logs,
		trans:    trans,
		readyCh:  make(chan struct{}),
		notifyCh: make(chan bool, 8),
		slots:    make(chan struct{}, maxQueued),
		pending:  make(map[uint64]*inflight),
		tagNonce: rand.Uint64(),
		inflight: make(chan *inflight, maxQueued),
		stop:     make(chan struct{}),
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.QuiesceTimeout = cfg.QuiesceTimeout
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NotifyCh = r.notifyCh
	rc.Logger = hclog
	rc.NoLegacyTelemetry = true
	// The FSM is persistent: Restore of a snapshot no newer than what the FSM
	// already holds is a cheap no-op (see raftfsm.FSM.Restore), so letting
	// Raft restore on start costs only a header read.
	rc.ShutdownOnRemove = false

	ra, err := raft.NewRaft(rc, (*fsmAdapter)(r), logs, store, snaps, trans)
	if err != nil {
		fsm.Close()
		_ = trans.(interface{ Close() error }).Close()
		return nil, fmt.Errorf("replica %d: start raft: %w", cfg.Partition, err)
	}
	r.raft = ra
	r.verify = newVerifier(ra)
	if hb := cfg.Heartbeats; hb != nil {
		r.verify.urgent = func() func() { return hb.Urgent(cfg.Partition) }
	}
	if l, ok := cfg.Layer.(interface{ OnHangup(func()) }); ok {
		l.OnHangup(r.onHangup)
	}
	r.wg.Add(2)
	go r.watchLeadership()
	go r.runCompleter()
	return r, nil
}

// Partition returns the partition this replica serves.
func (r *Replica) Partition() uint32 { return r.cfg.Partition }

// Bootstrap writes the group's first configuration. Every initial member calls
// it with the same servers. It fails with ErrBootstrapped if the replica
// already has Raft state.
func (r *Replica) Bootstrap(servers []Server) error {
	cfg := raft.Configuration{}
	for _, s := range servers {
		suffrage := raft.Voter
		if !s.Voter {
			suffrage = raft.Nonvoter
		}
		cfg.Servers = append(cfg.Servers, raft.Server{ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Addr), Suffrage: suffrage})
	}
	err := r.raft.BootstrapCluster(cfg).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return ErrBootstrapped
	}
	return err
}

// Read is the answer to a read and the receipt that comes with it.
type Read struct {
	Value        []byte
	Version      uint64
	Found        bool
	AppliedIndex uint64
	Leader       bool
}

// ReadStrong returns key's value as of a moment between the call and its
// return (linearizable). Only the leader serves it, after a ReadIndex round:
// a barrier applied in its current term, the commit index noted, leadership
// confirmed by a quorum (one round shared by all reads waiting), and the FSM
// caught up to the noted index. It never relies on a lease alone.
func (r *Replica) ReadStrong(ctx context.Context, key []byte) (Read, error) {
	if r.closed.Load() {
		return Read{}, ErrClosed
	}
	if faultStaleReads && r.IsLeader() {
		return r.readLocal(key, true)
	}
	term, err := r.awaitReady(ctx)
	if err != nil {
		return Read{}, err
	}
	readIndex := r.raft.CommitIndex()
	if err := r.verify.confirm(ctx); err != nil {
		return Read{}, r.translate(err, false)
	}
	// Leadership confirmed after the commit index was read; make sure both
	// happened in the term whose barrier we saw.
	if r.raft.CurrentTerm() != term || r.readyTerm.Load() != term {
		return Read{}, r.notLeader()
	}
	if err := r.waitApplied(ctx, readIndex); err != nil {
		return Read{}, err
	}
	return r.readLocal(key, true)
}

// ReadEventual answers at once from this replica's local state, leader or not,
// even when the partition has lost quorum. The receipt shows how current it is.
func (r *Replica) ReadEventual(key []byte) (Read, error) {
	if r.closed.Load() {
		return Read{}, ErrClosed
	}
	return r.readLocal(key, r.raft.State() == raft.Leader)
}

func (r *Replica) readLocal(key []byte, leader bool) (Read, error) {
	applied := r.fsm.AppliedIndex()
	v, ver, err := r.fsm.Get(key)
	switch {
	case errors.Is(err, raftfsm.ErrNotFound):
		return Read{AppliedIndex: applied, Leader: leader}, nil
	case err != nil:
		return Read{}, fmt.Errorf("replica %d: read: %w", r.cfg.Partition, err)
	}
	return Read{Value: v, Version: ver, Found: true, AppliedIndex: applied, Leader: leader}, nil
}

// LeaderID returns the node name of the leader this replica knows of, or "".
// The name can be stale: see LastContact.
func (r *Replica) LeaderID() string {
	_, id := r.raft.LeaderWithID()
	return string(id)
}

// LastContact is when this replica last heard from a leader (an append or
// snapshot it accepted, or a vote it granted), or stopped leading; zero if
// never. A follower that hears nothing stands for election after
// HeartbeatTimeout to twice that, and Raft then forgets the leader's name.
// But hashicorp/raft handles heartbeats outside its main goroutine
// (processHeartbeat), and a heartbeat that arrives as the follower turns
// candidate can record its sender as leader again: the candidate then names
// a leader that may never contact it again (one that removed it, say). Ask
// LastContact, not LeaderID, whether a leader is really followed.
func (r *Replica) LastContact() time.Time { return r.raft.LastContact() }

// Quiescent reports whether this follower's group has gone quiet: its
// leader heartbeats it only every QuiesceTimeout/4 to /2, and it waits
// QuiesceTimeout, not HeartbeatTimeout, before standing for election.
func (r *Replica) Quiescent() bool { return r.raft.Quiescent() }

// IsLeader reports whether this replica currently believes it leads.
func (r *Replica) IsLeader() bool { return r.raft.State() == raft.Leader }

// AppliedIndex is the index of the last entry applied to the state machine.
func (r *Replica) AppliedIndex() uint64 { return r.fsm.AppliedIndex() }

// State returns the replica's current view of its group.
func (r *Replica) State() State {
	addr, id := r.raft.LeaderWithID()
	st := State{
		Partition:    r.cfg.Partition,
		Leader:       r.raft.State() == raft.Leader,
		LeaderID:     string(id),
		LeaderAddr:   string(addr),
		Term:         r.raft.CurrentTerm(),
		CommitIndex:  r.raft.CommitIndex(),
		AppliedIndex: r.fsm.AppliedIndex(),
	}
	if f := r.raft.GetConfiguration(); f.Error() == nil {
		st.LastIndex = r.raft.LastIndex()
		for _, s := range f.Configuration().Servers {
			st.Servers = append(st.Servers, Server{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
		}
	}
	return st
}

// TransferLeadership asks the leader to hand leadership to the named voter,
// or to the most up-to-date one when id is empty.
func (r *Replica) TransferLeadership(id, addr string) error {
	var f raft.Future
	if id == "" {
		f = r.raft.LeadershipTransfer()
	} else {
		f = r.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	}
	if err := f.Error(); err != nil {
		return r.translate(err, false)
	}
	return nil
}

// Close stops the replica's Raft group on this node. Its data stays in the
// store; the partition keeps running on the other replicas.
func (r *Replica) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		// Close the transport first: Raft RPCs in flight then fail at once
		// instead of waiting out the transport timeout while peers stop too.
		if c, ok := r.trans.(interface{ Close() error }); ok {
			_ = c.Close()
		}
		err = r.raft.Shutdown().Error()
		close(r.stop)
		r.wg.Wait()
		r.fsm.Close()
		if r.flush != nil {
			r.flush.Stop()
		}
	})
	return err
}

// notLeader builds the error for a request this replica cannot serve.
func (r *Replica) notLeader() error {
	addr, id := r.raft.LeaderWithID()
	if string(id) == r.cfg.NodeID {
		// Raft still names us, but we are not (or no longer) able to serve.
		id, addr = "", ""
	}
	return &NotLeaderError{Partition: r.cfg.Partition, LeaderID: string(id), LeaderAddr: string(addr)}
}

// translate maps hashicorp/raft errors to this package's. write says whether
// the error ended a proposal (whose outcome may then be unknown).
func (r *Replica) translate(err error, write bool) error {
	switch {
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return r.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		if write {
			return fmt.Errorf("%w: leadership lost before the entry was known to commit", ErrOutcomeUnknown)
		}
		return r.notLeader()
	case errors.Is(err, raft.ErrEnqueueTimeout):
		if write {
			return fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
		}
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("replica %d: %w", r.cfg.Partition, err)
}

type streamAdapter struct {
	StreamLayer
	sent *atomic.Uint64
}

func (s streamAdapter) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.StreamLayer.Dial(string(addr), timeout)
	if err != nil || s.sent == nil {
		return c, err
	}
	return countingConn{c, s.sent}, nil
}

// newNetworkTransport is the replica's Raft transport over its Layer.
//
// Pipelined replication is off (MaxRPCsInFlight 1): hashicorp/raft v1.8's
// pipeline can wedge for good when a follower answers an append with
// Success=false (hashicorp/raft#612): pipelineDecode returns, the send loop
// parks on a full in-flight channel, and from then on the leader sends that
// follower heartbeats but never another entry, and Raft.Shutdown waits
// forever for the stuck goroutine. We hit it as a node test that hung in
// Replica.Close. HashiCorp measured pipelining to bring little with batching
// (hashicorp/raft#541); every append is synchronous instead.
func newNetworkTransport(cfg Config, logger hclog.Logger) *raft.NetworkTransport {
	tc := &raft.NetworkTransportConfig{
		Stream:          streamAdapter{cfg.Layer, cfg.SentBytes},
		MaxPool:         4,
		MaxRPCsInFlight: 1,
		Timeout:         10 * time.Second,
		Logger:          logger,
	}
	if cfg.AddressOf != nil {
		tc.ServerAddressProvider = addressProvider(cfg.AddressOf)
	}
	return raft.NewNetworkTransportWithConfig(tc)
}

type addressProvider func(string) (string, bool)

func (p addressProvider) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if a, ok := p(string(id)); ok {
		return raft.ServerAddress(a), nil
	}
	return "", fmt.Errorf("replica: no known address for node %q", id)
}

// snapshotPath is where a partition keeps its snapshots under a node's data dir.
func SnapshotPath(dataDir string, partition uint32) string {
	return filepath.Join(dataDir, "snapshots", fmt.Sprintf("p%05d", partition))
}
