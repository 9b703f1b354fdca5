package jepsen

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/ringkv/ringkv/jepsen/nemesis"
	"github.com/ringkv/ringkv/jepsen/workload"
)

// Config configures a suite of runs.
type Config struct {
	// Name labels the suite in output ("smoke", "full", "faulty").
	Name string
	// Nodes, Partitions and Replicas shape each run's cluster. Spares are
	// extra nodes the membership faults may start (only in runs that have
	// membership faults).
	Nodes, Partitions, Replicas int
	Spares                      int
	// Runs is how many runs; run i uses seed Seed+i and the nemesis set
	// Nemeses[i % len(Nemeses)].
	Runs    int
	Seed    uint64
	Nemeses [][]nemesis.Kind
	// Duration is each run's workload time; Timing shapes its schedule.
	// Runs with membership faults last at least MembershipDuration (a
	// removal alone takes 20-60 s).
	Duration           time.Duration
	MembershipDuration time.Duration
	Timing             nemesis.Timing
	// Workload configures the clients (Endpoints, Duration and Seed are set
	// per run).
	Workload workload.Config
	// ConvergeLimit bounds how long replicas may take to agree after the
	// final heal.
	ConvergeLimit time.Duration
	// CheckTimeout bounds porcupine per key.
	CheckTimeout time.Duration
	// ExpectViolations inverts the verdict: the suite passes only if some
	// run found a linearizability violation (for deliberately broken builds).
	ExpectViolations bool

	// RunsDir receives one folder per run.
	RunsDir string
	// Src is the RingKV module root to build kvd from; KVDTags and Race
	// shape that build; KVDBin, when set, is a static kvd to use instead.
	Src     string
	KVDTags []string
	Race    bool
	KVDBin  string
	// KVDArgs are extra kvd flags for every node.
	KVDArgs []string
	// StrictReady fails a run whose nodes do not all answer /readyz at the
	// start or within 60 s of the final heal (otherwise that is a warning).
	StrictReady bool
	// KeepData keeps the data dirs of passing runs (they are always kept
	// for runs that fail: they are for post-mortems).
	KeepData bool
	// Subnet, Prefix and Image name the docker objects.
	Subnet, Prefix, Image string
	// Dockerfile is jepsen/Dockerfile.
	Dockerfile string

	// StatusEvery is how often progress is printed to Out.
	StatusEvery time.Duration
	Out         io.Writer
	Log         *slog.Logger
}

// DefaultConfig is the full suite: 5 nodes, 16 partitions, every nemesis, 10
// runs of 120 s.
func DefaultConfig() Config {
	wl := workload.DefaultConfig()
	return Config{
		Name: "full", Nodes: 5, Spares: 2, Partitions: 16, Replicas: 3,
		Runs: 10, Seed: 1, Nemeses: [][]nemesis.Kind{nemesis.AllKinds},
		Duration: 120 * time.Second, Timing: nemesis.DefaultTiming(), Workload: wl,
		ConvergeLimit: 30 * time.Second, CheckTimeout: 2 * time.Minute,
		RunsDir: "jepsen/runs", Src: ".", Race: true,
		KVDArgs: []string{"--request-timeout", "2s"},
		Subnet:  "10.77.4.0/24", Prefix: "ringkv-jepsen", Image: "ringkv-jepsen:dev",
		Dockerfile:  "jepsen/Dockerfile",
		StatusEvery: 5 * time.Second, Out: io.Discard,
	}
}

// SmokeConfig is the CI suite: 3 nodes, four 45 s runs covering partitions,
// crashes and pauses, and a 60 s run of membership faults (2 spares).
func SmokeConfig() Config {
	c := DefaultConfig()
	c.Name, c.Nodes, c.Runs, c.Duration = "smoke", 3, 4, 45*time.Second
	c.Runs = 5
	c.Nemeses = [][]nemesis.Kind{
		{nemesis.PartitionHalves, nemesis.IsolateLeader, nemesis.MajoritiesRing},
		{nemesis.KillOne, nemesis.KillAll, nemesis.IsolateNode},
		{nemesis.PauseLeader, nemesis.OneWay, nemesis.Lossy},
		{nemesis.Bridge, nemesis.KillMinority, nemesis.PauseNode},
		// 3 nodes and 2 spares: every removal or drain that would leave
		// fewer than R eligible nodes makes a spare join first.
		nemesis.MembershipKinds,
	}
	c.MembershipDuration = 60 * time.Second
	c.Workload.Workers, c.Workload.GroupSize = 8, 4
	c.Timing.MaxFault = 9 * time.Second
	return c
}

// TestConfig is one 30 s run on 3 nodes (the Docker tests use it).
func TestConfig() Config {
	c := SmokeConfig()
	c.Name, c.Runs, c.Duration = "test", 1, 30*time.Second
	c.Nemeses = c.Nemeses[:4]
	return c
}

// FaultyConfig runs leader pauses against a kvd built with the
// jepsen_fault_staleread tag (strong reads answered from local state by any
// replica that believes it leads, without the ReadIndex round) and expects
// the checker to find stale reads. A partitioned leader steps down on its
// Raft leader lease before a new one is elected, so partitions alone rarely
// expose the fault. Two windows do:
//
//   - a paused leader, when it resumes, still believes it leads until its
//     lease check runs, and requests that waited for it are answered from its
//     old state: clients that know only that node (every worker is pinned)
//     and short operation timeouts keep fresh requests waiting at every
//     resume;
//   - a new leader believes it leads before it has committed an entry of its
//     own term, so before it knows the commit index of its predecessor's
//     last writes: every pause elects new leaders, and a short leader-balance
//     interval hands leaderships back right after each resume (more
//     elections, each one a window).
//
// Many short pauses (2.5-4 s, just above an election) give each run about 15
// chances; see jepsen/README.md for how often a run catches the bug.
func FaultyConfig() Config {
	c := SmokeConfig()
	c.Name, c.Runs, c.Duration = "faulty", 4, 60*time.Second
	c.Nemeses = [][]nemesis.Kind{{nemesis.PauseLeader}}
	c.Spares = 0
	c.Timing.MinFault, c.Timing.MaxFault = 2500*time.Millisecond, 4*time.Second
	c.Timing.MinGap, c.Timing.MaxGap = time.Second, 2*time.Second
	c.Workload.Workers, c.Workload.GroupSize, c.Workload.PinnedEvery = 24, 2, 1
	c.Workload.OpTimeout = time.Second
	c.Workload.Client.RequestTimeout = 300 * time.Millisecond
	c.KVDArgs = append(c.KVDArgs, "--leader-balance-interval", "1s")
	c.KVDTags = []string{FaultTag}
	c.ExpectViolations = true
	c.Race = false
	return c
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Nodes < 3:
		return fmt.Errorf("jepsen: %d nodes; the faults need at least 3", c.Nodes)
	case c.Partitions < 16:
		return fmt.Errorf("jepsen: %d partitions; use at least 16", c.Partitions)
	case c.Replicas != 3:
		return fmt.Errorf("jepsen: replicas %d; the suite checks R=3", c.Replicas)
	case c.Runs < 1:
		return fmt.Errorf("jepsen: Runs %d must be at least 1", c.Runs)
	case len(c.Nemeses) == 0:
		return errors.New("jepsen: no nemesis set")
	case c.Duration < 10*time.Second:
		return fmt.Errorf("jepsen: Duration %v is too short for a fault window", c.Duration)
	case c.ConvergeLimit <= 0 || c.CheckTimeout <= 0:
		return errors.New("jepsen: ConvergeLimit and CheckTimeout must be positive")
	case c.RunsDir == "" || c.Src == "" || c.Dockerfile == "":
		return errors.New("jepsen: RunsDir, Src and Dockerfile are required")
	case c.Out == nil:
		return errors.New("jepsen: Out is nil")
	}
	return nil
}

// kindsString names a nemesis set.
func kindsString(ks []nemesis.Kind) string {
	if len(ks) == 0 {
		return "none"
	}
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}
