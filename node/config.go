package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/ringkv/ringkv/partition"
	"github.com/ringkv/ringkv/replica"
	"github.com/ringkv/ringkv/storage"
	"github.com/ringkv/ringkv/transport"
)

// Config is everything a kvd process needs. Flags map onto it one to one (see
// ParseFlags); tests build it directly from TestConfig.
type Config struct {
	Name    string // node name; unique in the cluster; the Raft server id
	DataDir string

	ClientAddr string // host:port of the API (Connect, gRPC, JSON), /metrics, /healthz, /readyz
	PeerAddr   string // host:port of the Raft port shared by every partition
	GossipAddr string // host:port of memberlist (TCP and UDP)
	// AdvertiseHost replaces the host of the three addresses in what other
	// nodes and clients are told (for containers and 0.0.0.0 binds).
	AdvertiseHost string

	Join            []string // gossip addresses of existing members
	BootstrapExpect int      // form a new cluster once this many nodes have met; 0 = join one
	Partitions      int      // P, fixed when the cluster is created
	Replicas        int      // R, copies of every partition
	DeadTimeout     time.Duration

	MaxKeySize     int
	MaxValueSize   int
	RequestTimeout time.Duration // server-side bound on one request, retries and forwarding included
	// LeaderBalanceInterval is how often this node checks that it does not
	// lead more than its share of partitions; 0 disables balancing.
	LeaderBalanceInterval time.Duration

	// ReconcileInterval is how often the placement controller runs (it also
	// runs on every gossip change).
	ReconcileInterval time.Duration
	// MaxMoves bounds the partitions led by this node that may be moving a
	// replica at once.
	MaxMoves int

	// Raft timings (see replica.Config).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// QuiesceTimeout lets idle Raft groups go quiet (replica.Config); 0 off.
	QuiesceTimeout time.Duration
	// HeartbeatLinger is how long a Raft heartbeat may wait for others to the
	// same node so that they share a frame (transport.HeartbeatConfig).
	// Zero sends each at once, still over the shared connection.
	HeartbeatLinger time.Duration
	// WALBusySyncDelay holds back each fsync of the node's write-ahead log
	// by up to this long while many log writes share each fsync
	// (storage.Config.WALBusySyncDelay); 0 never holds one back.
	WALBusySyncDelay time.Duration
	// WALFillAheadMiB keeps this many MiB of each write-ahead log file
	// written with zeros ahead of the log, so that synced log writes need no
	// journal commit of a new file size (storage.Config.WALFillAhead); 0 off.
	WALFillAheadMiB int
	// WALWriteBufferKiB holds the write-ahead log's writes in memory, up to
	// this many KiB, until its next fsync, so that they reach the file in
	// one system call (storage.Config.WALWriteBuffer); 0 off.
	WALWriteBufferKiB int
	// SnapshotThreshold is how many new Raft log entries make a partition
	// take a snapshot, after which its log is truncated down to the last
	// TrailingLogs entries; SnapshotInterval is how often (randomized up to
	// twice that) each partition checks the threshold (replica.Config).
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotInterval  time.Duration
	// ApplyFlushDelay is how long a partition's applied writes may wait in
	// memory before they reach Pebble together (replica.Config); 0 writes
	// every apply batch through.
	ApplyFlushDelay time.Duration

	// Gossip timings (see membership.Config); zero keeps its defaults.
	GossipProbeInterval time.Duration
	GossipProbeTimeout  time.Duration
	GossipSuspicionMult int

	// Pprof serves net/http/pprof under /debug/pprof/ on the client port.
	Pprof bool

	Logger       *slog.Logger
	RaftLogLevel slog.Level
}

// Limits that Validate enforces on the configuration itself.
const (
	MaxKeySizeLimit   = 64 << 10
	MaxValueSizeLimit = 64 << 20
)

// DefaultConfig returns the documented defaults (DESIGN.md section 5).
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Name:                  host,
		DataDir:               "./data",
		ClientAddr:            "127.0.0.1:7101",
		PeerAddr:              "127.0.0.1:7201",
		GossipAddr:            "127.0.0.1:7301",
		Partitions:            64,
		Replicas:              3,
		DeadTimeout:           60 * time.Second,
		MaxKeySize:            4 << 10,
		MaxValueSize:          1 << 20,
		RequestTimeout:        5 * time.Second,
		LeaderBalanceInterval: 5 * time.Second,
		ReconcileInterval:     2 * time.Second,
		MaxMoves:              2,
		HeartbeatTimeout:      1000 * time.Millisecond,
		ElectionTimeout:       1000 * time.Millisecond,
		LeaderLeaseTimeout:    500 * time.Millisecond,
		CommitTimeout:         200 * time.Millisecond,
		QuiesceTimeout:        replica.DefaultConfig().QuiesceTimeout,
		HeartbeatLinger:       transport.DefaultHeartbeatConfig().Linger,
		WALBusySyncDelay:      storage.DefaultConfig().WALBusySyncDelay,
		WALFillAheadMiB:       int(storage.DefaultConfig().WALFillAhead >> 20),
		WALWriteBufferKiB:     storage.DefaultConfig().WALWriteBuffer >> 10,
		SnapshotThreshold:     replica.DefaultConfig().SnapshotThreshold,
		TrailingLogs:          replica.DefaultConfig().TrailingLogs,
		SnapshotInterval:      replica.DefaultConfig().SnapshotInterval,
		ApplyFlushDelay:       replica.DefaultConfig().ApplyFlushDelay,
		Logger:                slog.Default(),
		RaftLogLevel:          slog.LevelWarn,
	}
}

// minSnapshotThreshold, minTrailingLogs and minSnapshotInterval bound
// --raft-snapshot-threshold, --raft-trailing-logs and
// --raft-snapshot-interval from below: every snapshot copies the whole
// partition, and a follower that falls further behind than the trailing log
// is sent one.
const (
	minSnapshotThreshold = 128
	minTrailingLogs      = 64
	minSnapshotInterval  = time.Second
)

// maxWALBusySyncDelay bounds --wal-busy-sync-delay: every write under load
// may wait this long for its fsync.
const maxWALBusySyncDelay = 10 * time.Millisecond

// maxWALFillAheadMiB bounds --wal-fill-ahead-mib: each WAL file keeps up to
// that much disk beyond its log.
const maxWALFillAheadMiB = 1024

// TestConfig returns a fast configuration for in-process tests: loopback
// ports chosen by the kernel, few partitions, short timeouts.
func TestConfig(name, dataDir string) Config {
	c := DefaultConfig()
	c.Name = name
	c.DataDir = dataDir
	c.ClientAddr = "127.0.0.1:0"
	c.PeerAddr = "127.0.0.1:0"
	c.GossipAddr = "127.0.0.1:0"
	c.Partitions = 8
	c.DeadTimeout = 5 * time.Second
	c.RequestTimeout = 3 * time.Second
	c.LeaderBalanceInterval = time.Second
	c.ReconcileInterval = 300 * time.Millisecond
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.QuiesceTimeout = 3 * time.Second
	c.HeartbeatLinger = 10 * time.Millisecond
	c.GossipProbeInterval = 200 * time.Millisecond
	c.GossipProbeTimeout = 100 * time.Millisecond
	c.GossipSuspicionMult = 2
	return c
}

// Validate reports the first problem with c, in words an operator can act on.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Name == "" {
		bad("--name is empty")
	}
	if c.DataDir == "" {
		bad("--data-dir is empty")
	}
	for flag, a := range map[string]string{"--client-addr": c.ClientAddr, "--peer-addr": c.PeerAddr, "--gossip-addr": c.GossipAddr} {
		if _, port, err := net.SplitHostPort(a); err != nil {
			bad("%s %q: want host:port (%v)", flag, a, err)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			bad("%s %q: bad port", flag, a)
		}
	}
	if c.Partitions < 1 || c.Partitions > partition.MaxPartitions {
		bad("--partitions %d: must be between 1 and %d", c.Partitions, partition.MaxPartitions)
	}
	if c.Replicas < 1 || c.Replicas > 7 {
		bad("--replicas %d: must be between 1 and 7", c.Replicas)
	}
	if c.BootstrapExpect < 0 {
		bad("--bootstrap-expect %d: must not be negative", c.BootstrapExpect)
	}
	if c.BootstrapExpect == 0 && len(c.Join) == 0 {
		bad("neither --bootstrap-expect (to form a new cluster) nor --join (to join one) is set")
	}
	if c.DeadTimeout <= 0 {
		bad("--dead-timeout must be positive")
	}
	if c.MaxKeySize < 1 || c.MaxKeySize > MaxKeySizeLimit {
		bad("--max-key-size %d: must be between 1 and %d", c.MaxKeySize, MaxKeySizeLimit)
	}
	if c.MaxValueSize < 0 || c.MaxValueSize > MaxValueSizeLimit {
		bad("--max-value-size %d: must be between 0 and %d", c.MaxValueSize, MaxValueSizeLimit)
	}
	if c.ReconcileInterval <= 0 {
		bad("--reconcile-interval must be positive")
	}
	if c.MaxMoves < 1 {
		bad("--max-moves %d: must be at least 1", c.MaxMoves)
	}
	if c.RequestTimeout <= 0 {
		bad("--request-timeout must be positive")
	}
	if c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLeaseTimeout <= 0 || c.CommitTimeout <= 0 {
		bad("Raft timeouts must be positive")
	}
	if c.QuiesceTimeout < 0 || (c.QuiesceTimeout > 0 && c.QuiesceTimeout < 2*c.HeartbeatTimeout) {
		bad("--raft-quiesce-timeout %v: must be 0 (idle groups never go quiet) or at least twice --raft-heartbeat-timeout (%v)", c.QuiesceTimeout, c.HeartbeatTimeout)
	}
	if c.SnapshotThreshold < minSnapshotThreshold {
		bad("--raft-snapshot-threshold %d: must be at least %d entries", c.SnapshotThreshold, minSnapshotThreshold)
	}
	if c.SnapshotInterval < minSnapshotInterval {
		bad("--raft-snapshot-interval %v: must be at least %v", c.SnapshotInterval, minSnapshotInterval)
	}
	if c.TrailingLogs < minTrailingLogs {
		bad("--raft-trailing-logs %d: must be at least %d entries (a follower that falls further behind is sent a snapshot)", c.TrailingLogs, minTrailingLogs)
	}
	if c.WALBusySyncDelay < 0 || c.WALBusySyncDelay > maxWALBusySyncDelay {
		bad("--wal-busy-sync-delay %v: must be between 0 (never hold a sync back) and %v", c.WALBusySyncDelay, maxWALBusySyncDelay)
	}
	if c.ApplyFlushDelay < 0 || c.ApplyFlushDelay > replica.MaxApplyFlushDelay {
		bad("--apply-flush-delay %v: must be between 0 (write every apply through) and %v", c.ApplyFlushDelay, replica.MaxApplyFlushDelay)
	}
	if c.WALFillAheadMiB < 0 || c.WALFillAheadMiB > maxWALFillAheadMiB {
		bad("--wal-fill-ahead-mib %d: must be between 0 (off) and %d", c.WALFillAheadMiB, maxWALFillAheadMiB)
	}
	if c.WALWriteBufferKiB < 0 || c.WALWriteBufferKiB > storage.MaxWALWriteBuffer>>10 {
		bad("--wal-write-buffer-kib %d: must be between 0 (off) and %d", c.WALWriteBufferKiB, storage.MaxWALWriteBuffer>>10)
	}
	if c.HeartbeatLinger < 0 || c.HeartbeatLinger >= c.LeaderLeaseTimeout/4 {
		bad("--raft-heartbeat-linger %v: must be >= 0 and below a quarter of --raft-leader-lease-timeout (%v)", c.HeartbeatLinger, c.LeaderLeaseTimeout)
	}
	if c.Logger == nil {
		bad("Logger is nil")
	}
	return errors.Join(errs...)
}

// advertised returns addr with its host replaced by AdvertiseHost, if set.
func (c Config) advertised(addr string) string {
	if c.AdvertiseHost == "" {
		return addr
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return net.JoinHostPort(c.AdvertiseHost, port)
}
