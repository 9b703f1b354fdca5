package jepsen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/jepsen/checker"
	"github.com/ringkv/ringkv/jepsen/cluster"
	"github.com/ringkv/ringkv/jepsen/history"
	"github.com/ringkv/ringkv/jepsen/nemesis"
	"github.com/ringkv/ringkv/jepsen/workload"
)

// RunResult is one run's line in the suite table.
type RunResult struct {
	Index    int             `json:"index"`
	Seed     uint64          `json:"seed"`
	Dir      string          `json:"dir"`
	Nemeses  string          `json:"nemeses"`
	Windows  int             `json:"windows"`
	Ops      history.Counts  `json:"ops"`
	Keys     int             `json:"keys"`
	Report   *checker.Report `json:"report,omitempty"`
	Err      string          `json:"err,omitempty"`
	Took     time.Duration   `json:"took_ns"`
	Verdict  string          `json:"verdict"`
	ByKind   map[string]int  `json:"violations_by_kind,omitempty"`
	Converge float64         `json:"converged_after_s"`
	// Warnings are findings that break no checked promise (a node that
	// never said ready, for one).
	Warnings []string `json:"warnings,omitempty"`
}

// run is the state of one run.
type run struct {
	cfg         Config
	idx         int
	seed        uint64
	dir         string
	kinds       []nemesis.Kind
	duration    time.Duration
	rec         *history.Recorder
	finalClient int
}

// clientConfig is a control client on every node.
func (r *run) clientConfig(c *cluster.Cluster) client.Config {
	cc := r.cfg.Workload.Client
	cc.Endpoints = nil
	for _, n := range c.Started() {
		cc.Endpoints = append(cc.Endpoints, n.ClientAddr())
	}
	return cc
}

// runOne runs one cluster through its schedule and checks it. Errors of the
// harness itself (docker failing, the cluster never becoming ready) come
// back in RunResult.Err and fail the run.
func (s *Suite) runOne(ctx context.Context, idx int) RunResult {
	cfg := s.cfg
	seed := cfg.Seed + uint64(idx)
	r := &run{cfg: cfg, idx: idx, seed: seed, kinds: cfg.Nemeses[idx%len(cfg.Nemeses)]}
	r.dir = filepath.Join(cfg.RunsDir, fmt.Sprintf("%s-%d", time.Now().Format("20060102T150405"), seed))
	res := RunResult{Index: idx, Seed: seed, Dir: r.dir, Nemeses: kindsString(r.kinds)}
	start := time.Now()
	err := r.execute(ctx, s, &res)
	res.Took = time.Since(start)
	if err != nil {
		res.Err = err.Error()
	}
	res.Verdict = runVerdict(cfg, res)
	if (res.Verdict == VerdictPass || cfg.ExpectViolations) && !cfg.KeepData {
		// Pebble's WAL files make a node's dir ~200 MB; keep that for
		// runs that failed unexpectedly only.
		_ = os.RemoveAll(filepath.Join(r.dir, "data"))
	}
	_ = history.WriteJSON(filepath.Join(r.dir, "result.json"), res)
	return res
}

func (r *run) execute(ctx context.Context, s *Suite, res *RunResult) error {
	cfg := r.cfg
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.dir, "seed"), fmt.Appendf(nil, "%d\n", r.seed), 0o644); err != nil {
		return err
	}
	spares := 0
	if slices.ContainsFunc(r.kinds, nemesis.IsMembership) {
		spares = cfg.Spares
	}
	cc := cluster.Config{Prefix: cfg.Prefix, Image: cfg.Image, Nodes: cfg.Nodes, Spares: spares, Subnet: cfg.Subnet,
		Partitions: cfg.Partitions, Replicas: cfg.Replicas, DataDir: filepath.Join(r.dir, "data"), ExtraArgs: cfg.KVDArgs, Log: cfg.Log}
	r.duration = cfg.Duration
	if spares > 0 || slices.ContainsFunc(r.kinds, nemesis.IsMembership) {
		r.duration = max(r.duration, cfg.MembershipDuration)
	}
	plan := nemesis.Plan(r.seed, r.kinds, r.duration, cfg.Timing, cfg.Partitions)
	if err := history.WriteJSON(filepath.Join(r.dir, "run.json"), map[string]any{
		"suite": cfg.Name, "seed": r.seed, "nodes": cfg.Nodes, "spares": spares, "partitions": cfg.Partitions, "replicas": cfg.Replicas,
		"duration_s": r.duration.Seconds(), "nemeses": r.kinds, "plan": plan, "kvd_tags": cfg.KVDTags, "race": cfg.Race,
		"kvd_args": cfg.KVDArgs, "subnet": cfg.Subnet, "workers": cfg.Workload.Workers, "group_size": cfg.Workload.GroupSize,
		"ops_per_key": cfg.Workload.OpsPerKey,
	}); err != nil {
		return err
	}
	s.printf("run %d/%d seed %d: %d nodes (%d spares), nemeses %s, %v\n", r.idx+1, cfg.Runs, r.seed, cfg.Nodes, spares, kindsString(r.kinds), r.duration)

	c, err := cluster.Start(ctx, s.docker, cc)
	logsCollected := false
	defer func() {
		if c == nil {
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_ = c.HealAll(dctx)
		if !logsCollected {
			if err := c.CollectLogs(dctx, filepath.Join(r.dir, "logs")); err != nil {
				cfg.Log.Warn("collect logs", "err", err)
			}
		}
		if err := c.Destroy(dctx); err != nil {
			cfg.Log.Warn("destroy cluster", "err", err)
		}
	}()
	if err != nil {
		return err
	}
	ctl, err := client.New(r.clientConfig(c))
	if err != nil {
		return err
	}
	defer ctl.Close()
	if err := c.WaitReady(ctx, 90*time.Second); err != nil {
		// /readyz is a promise of its own; the run can still test the
		// data path if every partition has a leader.
		if lerr := everyPartitionLed(ctx, ctl, cfg.Partitions); lerr != nil {
			return fmt.Errorf("%v; %v", err, lerr)
		}
		res.Warnings = append(res.Warnings, "not ready at start (every partition has a leader, so the run went on): "+err.Error())
		s.printf("  warning: %s\n", res.Warnings[len(res.Warnings)-1])
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	table, err := ctl.Partitions(pctx)
	cancel()
	if err != nil {
		return fmt.Errorf("jepsen: partition table: %w", err)
	}
	ks, err := workload.NewKeyspace(table)
	if err != nil {
		return err
	}

	r.rec = history.NewRecorder(time.Now())
	wc := cfg.Workload
	wc.Endpoints = map[string]string{}
	for _, n := range c.Nodes {
		wc.Endpoints[n.Name] = n.ClientAddr()
	}
	wc.Duration, wc.Seed, wc.Log = r.duration, r.seed, cfg.Log
	wl, err := workload.New(wc, ks, r.rec)
	if err != nil {
		return err
	}
	defer wl.Close()
	// Client numbers: the register workers, the durability worker, the
	// membership nemesis's probes, the final phase.
	memberClient := wc.Workers + 1
	r.finalClient = wc.Workers + 2

	leaderOf := func(ctx context.Context, p int) (string, error) {
		resp, err := ctl.Partitions(ctx)
		if err != nil {
			return "", err
		}
		for _, pt := range resp.GetPartitions() {
			if int(pt.GetId()) == p {
				if pt.GetLeader() == "" {
					return "", fmt.Errorf("p%d has no leader", p)
				}
				return pt.GetLeader(), nil
			}
		}
		return "", fmt.Errorf("no partition %d", p)
	}
	nem := nemesis.NewRunner(c, leaderOf, r.rec.Now, cfg.Log)
	runCtx, stopRun := context.WithTimeout(ctx, r.duration)
	defer stopRun()
	var members *memberNemesis
	if slices.ContainsFunc(r.kinds, nemesis.IsMembership) {
		members = newMemberNemesis(c, r.rec, ks, r.clientConfig(c), memberClient, cfg.Replicas, time.Now().Add(r.duration), cfg.Log)
		nem.SetMembership(members)
	}
	var wg sync.WaitGroup
	var windows []history.Window
	wg.Go(func() { windows = nem.Run(runCtx, plan) })
	stopStatus := s.status(r, nem)
	werr := wl.Run(runCtx)
	stopRun()
	wg.Wait()
	stopStatus()
	var membership *history.Membership
	if members != nil {
		membership = members.Finish() // undrains what is still drained
		if err := history.WriteJSON(filepath.Join(r.dir, "membership.json"), membership); err != nil {
			return err
		}
		for _, rm := range membership.Removals {
			if len(rm.Rehosted) > 0 {
				res.Warnings = append(res.Warnings, fmt.Sprintf("removed node %s hosts replicas of partitions it was removed from again after its restart: %v", rm.Node, rm.Rehosted))
			}
		}
		for _, a := range membership.Actions {
			if a.Err != "" {
				res.Warnings = append(res.Warnings, fmt.Sprintf("membership %s %s: %s", a.Action, a.Node, a.Err))
			}
		}
	}
	if werr != nil {
		return werr
	}

	// Final heal, then the after-heal checks' observations.
	hctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	herr := c.HealAll(hctx)
	cancel()
	healed := r.rec.Now()
	windows = append(windows, history.Window{Nemesis: "final-heal", Detail: "heal everything", Start: healed, End: healed})
	if herr != nil {
		windows[len(windows)-1].Err = herr.Error()
	}
	readyStart := time.Now()
	rerr := c.WaitReady(ctx, 60*time.Second)
	s.printf("  final heal: ready=%v after %.1fs; final reads and convergence...\n", rerr == nil, time.Since(readyStart).Seconds())
	readyAfter := time.Since(readyStart).Seconds()
	if rerr != nil {
		res.Warnings = append(res.Warnings, "not ready 60s after the final heal: "+rerr.Error())
		s.printf("  warning: %s\n", res.Warnings[len(res.Warnings)-1])
	}
	if membership != nil {
		// Replicas still moving (a drain just undone, a node just added)
		// are nonvoters that serve no eventual reads yet: let placement
		// settle before the convergence check.
		settleStart := time.Now()
		serr := settle(ctx, ctl, 45*time.Second)
		s.printf("  membership: placement settled=%v after %.1fs\n", serr == nil, time.Since(settleStart).Seconds())
		if serr != nil {
			res.Warnings = append(res.Warnings, "placement still moving 45s after the final heal: "+serr.Error())
		}
	}
	keys := wl.Keys()
	if membership != nil {
		for _, rm := range membership.Removals {
			for _, k := range rm.Keys {
				keys = append(keys, k)
			}
		}
	}
	final, ferr := r.finalPhase(ctx, c, ks, keys)
	final.Healed, final.Ready, final.ReadyAt = healed, rerr == nil, readyAfter
	if rerr != nil {
		final.ReadyErr = rerr.Error()
	}
	// The table once more, after the convergence checks had their time.
	tctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	if table, err := partitionTable(tctx, ctl); err == nil {
		final.Table = table
	} else {
		cfg.Log.Warn("partition table at the end", "err", err)
	}
	cancel()

	// Records, then the verdict.
	ops := r.rec.Ops()
	if err := history.WriteDir(filepath.Join(r.dir, "history"), ops); err != nil {
		return err
	}
	if err := history.WriteWindows(filepath.Join(r.dir, "nemesis.jsonl"), windows); err != nil {
		return err
	}
	if err := history.WriteJSON(filepath.Join(r.dir, "final.json"), final); err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	lerr := c.CollectLogs(dctx, filepath.Join(r.dir, "logs"))
	cancel()
	if lerr != nil {
		return lerr
	}
	logsCollected = true
	res.Windows = len(windows) - 1
	res.Converge = final.ConvergedAfter
	rep, err := CheckDir(r.dir, checker.Config{Timeout: cfg.CheckTimeout, Workers: 2}, true)
	res.Report = rep
	if rep != nil {
		res.Ops, res.Keys = rep.Ops, rep.Keys
		res.ByKind = map[string]int{}
		for _, v := range rep.Violations {
			res.ByKind[v.Kind]++
		}
	}
	if err != nil {
		return err
	}
	return ferr
}

// Run verdicts. A normal run PASSes or FAILs; a run of a deliberately
// broken kvd (Config.ExpectViolations) is CAUGHT when the checker found a
// linearizability violation and MISSED otherwise. ERROR is a harness failure.
const (
	VerdictPass   = "PASS"
	VerdictFail   = "FAIL"
	VerdictCaught = "CAUGHT"
	VerdictMissed = "MISSED"
	VerdictError  = "ERROR"
)

// runVerdict judges one run.
func runVerdict(cfg Config, res RunResult) string {
	switch {
	case res.Err != "" || res.Report == nil:
		return VerdictError
	case cfg.ExpectViolations && res.ByKind[checkerNotLinearizable] > 0:
		return VerdictCaught
	case cfg.ExpectViolations:
		return VerdictMissed
	case cfg.StrictReady && len(res.Warnings) > 0:
		return VerdictFail
	case res.Report.Valid():
		return VerdictPass
	}
	return VerdictFail
}

// settle waits until no partition is moving a replica and every one has a
// leader and R voters, as the cluster reports it.
func settle(ctx context.Context, cl *client.Client, limit time.Duration) error {
	return retry(ctx, limit, func(ctx context.Context) error {
		resp, err := cl.Partitions(ctx)
		if err != nil {
			return err
		}
		var busy []string
		for _, p := range resp.GetPartitions() {
			if p.GetMoving() || p.GetLeader() == "" || len(p.GetNonvoters()) > 0 {
				busy = append(busy, fmt.Sprintf("p%d", p.GetId()))
			}
		}
		if len(busy) > 0 {
			return fmt.Errorf("moving or leaderless: %s", strings.Join(busy, " "))
		}
		return nil
	})
}

// everyPartitionLed reports an error unless the partition table names a
// leader for each of the p partitions (it retries for up to 30 s).
func everyPartitionLed(ctx context.Context, cl *client.Client, p int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		table, err := partitionTable(ctx, cl)
		var missing []string
		if err == nil {
			for _, row := range table {
				if row.Leader == "" {
					missing = append(missing, fmt.Sprintf("p%d", row.ID))
				}
			}
			if len(table) != p {
				err = fmt.Errorf("the table lists %d of %d partitions", len(table), p)
			} else if len(missing) > 0 {
				err = fmt.Errorf("no leader for %s", strings.Join(missing, " "))
			}
		}
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// CheckDir checks a saved run folder, writes report.json and
// violations.txt into it and, with html, history.html (and one page per
// key that is not linearizable under violations/).
func CheckDir(dir string, cfg checker.Config, html bool) (*checker.Report, error) {
	ops, err := history.ReadDir(filepath.Join(dir, "history"))
	if err != nil {
		return nil, err
	}
	var final history.Final
	fp := &final
	if err := history.ReadJSON(filepath.Join(dir, "final.json"), &final); err != nil {
		if !os.IsNotExist(err) {
			return nil, err
		}
		fp = nil
	}
	windows, err := history.ReadWindows(filepath.Join(dir, "nemesis.jsonl"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	logDir := filepath.Join(dir, "logs")
	if _, err := os.Stat(logDir); err != nil {
		logDir = ""
	}
	var mem *history.Membership
	var m history.Membership
	if err := history.ReadJSON(filepath.Join(dir, "membership.json"), &m); err == nil {
		mem = &m
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	rep := checker.Check(checker.Input{Ops: ops, Final: fp, LogDir: logDir, Membership: mem}, cfg)
	if err := history.WriteJSON(filepath.Join(dir, "report.json"), rep); err != nil {
		return rep, err
	}
	var b strings.Builder
	for _, v := range rep.Violations {
		b.WriteString(v.String() + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "violations.txt"), []byte(b.String()), 0o644); err != nil {
		return rep, err
	}
	if html {
		if err := checker.Visualize(filepath.Join(dir, "history.html"), ops, windows, nil, cfg.Timeout); err != nil {
			return rep, err
		}
		if len(rep.Illegal) > 0 {
			vdir := filepath.Join(dir, "violations")
			if err := os.MkdirAll(vdir, 0o755); err != nil {
				return rep, err
			}
			for _, k := range rep.Illegal {
				name := strings.NewReplacer("/", "_", ".", "_").Replace(k) + ".html"
				if err := checker.Visualize(filepath.Join(vdir, name), ops, windows, []string{k}, cfg.Timeout); err != nil {
					return rep, err
				}
			}
		}
	}
	return rep, nil
}

// sortedKinds lists a count map's keys.
func sortedKinds(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
