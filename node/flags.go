package node

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/ringkv/ringkv/replica"
)

// DefaultGOGC is kvd's garbage collector target (the GOGC percentage) when
// the GOGC environment variable is unset. At Go's 100, a loaded node with its
// ~40 MB live heap collected about once a second, and requests caught in a
// mark phase made up the slowest percent: 400 cut put and strong-get p99 by
// 12-20% in side-by-side runs, for about twice the memory (112 → 237 MB per
// node under 64 writers; docs/PERFORMANCE.md, "Garbage collection"). It is set by kvd's main, not by New, because it is
// process-wide and a program embedding nodes owns its own runtime.
const DefaultGOGC = 400

// ParseFlags turns kvd's command line into a Config. The Logger is built from
// --log-level and --log-format and writes to logOut.
func ParseFlags(args []string, logOut, usageOut io.Writer) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("kvd", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	fs.Usage = func() {
		fmt.Fprintf(usageOut, "kvd: one RingKV node.\n\nUsage:\n  kvd --name n1 --bootstrap-expect 3 --join 127.0.0.1:7301,127.0.0.1:7302,127.0.0.1:7303 [flags]\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(usageOut, "\nEnvironment:\n"+
			"  GOGC\n    \tGo's garbage collector target; kvd uses %d when it is unset (docs/PERFORMANCE.md, \"Garbage collection\")\n"+
			"  GOMEMLIMIT\n    \tGo's soft memory limit; unset by default. Set it to cap the heap that GOGC=%d lets grow\n",
			DefaultGOGC, DefaultGOGC)
	}
	var join, logLevel, logFormat, raftLogLevel string
	fs.StringVar(&c.Name, "name", c.Name, "node name, unique in the cluster")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for this node's data (Pebble store, snapshots)")
	fs.StringVar(&c.ClientAddr, "client-addr", c.ClientAddr, "host:port serving the API (Connect, gRPC, JSON), /metrics, /healthz, /readyz")
	fs.StringVar(&c.PeerAddr, "peer-addr", c.PeerAddr, "host:port for Raft traffic of every partition")
	fs.StringVar(&c.GossipAddr, "gossip-addr", c.GossipAddr, "host:port for gossip (TCP and UDP)")
	fs.StringVar(&c.AdvertiseHost, "advertise-host", "", "host other nodes and clients should use to reach this node (for containers)")
	fs.StringVar(&join, "join", "", "comma-separated gossip addresses of nodes to join")
	fs.IntVar(&c.BootstrapExpect, "bootstrap-expect", 0, "form a new cluster once this many nodes have met (0: join an existing cluster)")
	fs.IntVar(&c.Partitions, "partitions", c.Partitions, "number of partitions P, fixed when the cluster is created; more partitions spread data and leaders over more nodes, fewer batch writes more deeply (README, \"Choosing the partition count\")")
	fs.IntVar(&c.Replicas, "replicas", c.Replicas, "replicas R of every partition")
	fs.DurationVar(&c.DeadTimeout, "dead-timeout", c.DeadTimeout, "how long a node must be dead before its replicas are replaced")
	fs.IntVar(&c.MaxKeySize, "max-key-size", c.MaxKeySize, "largest key accepted, in bytes")
	fs.IntVar(&c.MaxValueSize, "max-value-size", c.MaxValueSize, "largest value accepted, in bytes")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", c.RequestTimeout, "server-side bound on one request (forwarding and waiting for a leader included)")
	fs.DurationVar(&c.LeaderBalanceInterval, "leader-balance-interval", c.LeaderBalanceInterval, "how often to even out partition leaders across nodes (0 disables)")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", c.ReconcileInterval, "how often to check replica placement and take the next move step")
	fs.IntVar(&c.MaxMoves, "max-moves", c.MaxMoves, "partitions led by this node that may move a replica at once")
	fs.DurationVar(&c.HeartbeatTimeout, "raft-heartbeat-timeout", c.HeartbeatTimeout, "Raft heartbeat timeout")
	fs.DurationVar(&c.ElectionTimeout, "raft-election-timeout", c.ElectionTimeout, "Raft election timeout")
	fs.DurationVar(&c.LeaderLeaseTimeout, "raft-leader-lease-timeout", c.LeaderLeaseTimeout, "Raft leader lease timeout (a leader that cannot reach a quorum for this long steps down)")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go profiles under /debug/pprof/ on the client port")
	fs.DurationVar(&c.CommitTimeout, "raft-commit-timeout", c.CommitTimeout, "how long an idle Raft leader waits before telling followers the commit index (bounds how far eventual reads on followers trail when there is no write traffic)")
	fs.DurationVar(&c.QuiesceTimeout, "raft-quiesce-timeout", c.QuiesceTimeout, "idle Raft groups go quiet: their leader heartbeats each follower every quarter to half of this instead of every tenth to fifth of --raft-heartbeat-timeout, and a quiet follower waits this long for its leader unless gossip or a hangup says the leader's node is down (0: never quiet)")
	fs.DurationVar(&c.HeartbeatLinger, "raft-heartbeat-linger", c.HeartbeatLinger, "how long a Raft heartbeat may wait for others to the same node so one frame carries them all (0: send each at once; heartbeats of strong reads never wait)")
	fs.DurationVar(&c.WALBusySyncDelay, "wal-busy-sync-delay", c.WALBusySyncDelay, "while many Raft log writes share each fsync of the write-ahead log (4 or more on average), hold the next fsync back up to this long so that it covers more of them: less CPU per write under load; a lone writer never waits (0: never hold back)")
	fs.IntVar(&c.WALFillAheadMiB, "wal-fill-ahead-mib", c.WALFillAheadMiB, "keep this many MiB of each write-ahead log file written with zeros ahead of the log, so that a synced log write overwrites instead of growing the file and its fdatasync skips the filesystem journal (0: off)")
	fs.IntVar(&c.WALWriteBufferKiB, "wal-write-buffer-kib", c.WALWriteBufferKiB, "hold the write-ahead log's writes in memory, up to this many KiB, until its next fsync, so that the writes between two fsyncs reach the file in one system call; an acknowledged write is always synced first, while an unacknowledged one may be lost to a kill -9 as to a power loss (0: write each at once)")
	fs.Uint64Var(&c.SnapshotThreshold, "raft-snapshot-threshold", c.SnapshotThreshold, "a partition snapshots its state machine once this many Raft log entries were added since its last snapshot, and then truncates its log (a snapshot copies the whole partition: lower it for prompter truncation of small partitions under sustained writes)")
	fs.DurationVar(&c.SnapshotInterval, "raft-snapshot-interval", c.SnapshotInterval, "how often each partition checks --raft-snapshot-threshold (randomized between this and twice this), so also how soon after reaching it a partition snapshots")
	fs.Uint64Var(&c.TrailingLogs, "raft-trailing-logs", c.TrailingLogs, "Raft log entries a partition keeps after a snapshot, so that a follower that fell behind by fewer catches up from the log instead of a snapshot")
	fs.DurationVar(&c.ApplyFlushDelay, "apply-flush-delay", c.ApplyFlushDelay, fmt.Sprintf("a partition's applied writes may wait in memory (where every read sees them) up to this long, or until they hold %d KiB, and reach the store together with its dedup records and applied index: less CPU per write under load; a crash loses none of it, since the synced Raft log replays it (0: write every apply through)", replica.DefaultConfig().ApplyWriteBack>>10))
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&raftLogLevel, "raft-log-level", "warn", "level of hashicorp/raft's own log lines: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	for _, j := range strings.Split(join, ",") {
		if j = strings.TrimSpace(j); j != "" {
			c.Join = append(c.Join, j)
		}
	}
	lvl, err := parseLevel(logLevel)
	if err != nil {
		return Config{}, fmt.Errorf("--log-level: %w", err)
	}
	if c.RaftLogLevel, err = parseLevel(raftLogLevel); err != nil {
		return Config{}, fmt.Errorf("--raft-log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch logFormat {
	case "text":
		c.Logger = slog.New(slog.NewTextHandler(logOut, opts))
	case "json":
		c.Logger = slog.New(slog.NewJSONHandler(logOut, opts))
	default:
		return Config{}, fmt.Errorf("--log-format %q: use text or json", logFormat)
	}
	c.Logger = c.Logger.With("node", c.Name)
	return c, c.Validate()
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q: use debug, info, warn or error", s)
	}
	return l, nil
}
