package jepsen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ringkv/ringkv/jepsen/cluster"
	"github.com/ringkv/ringkv/jepsen/history"
	"github.com/ringkv/ringkv/jepsen/nemesis"
)

// LockPath serializes suites on one machine: they share the subnet, the
// container names and possibly the docker daemon.
const LockPath = "/tmp/ringkv-jepsen.lock"

// Suite runs a Config's runs.
type Suite struct {
	cfg    Config
	docker *cluster.Docker
}

// NewSuite checks cfg and returns a Suite.
func NewSuite(cfg Config) (*Suite, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Suite{cfg: cfg, docker: cluster.NewDocker(cfg.Log)}, nil
}

func (s *Suite) printf(format string, args ...any) {
	fmt.Fprintf(s.cfg.Out, format, args...)
}

// Summary is the outcome of a suite.
type Summary struct {
	Runs []RunResult
	// Passed applies the suite's expectation: no violation and no harness
	// error, or, with ExpectViolations, some linearizability violation.
	Passed bool
	// Caught counts the runs that found a linearizability violation (what
	// a deliberately broken kvd must produce).
	Caught int
	Took   time.Duration
}

// Run takes the machine lock, makes sure a docker daemon runs, builds the
// image, runs every run and prints the table. Everything it started or
// created is stopped and removed before it returns, also when ctx is
// cancelled.
func (s *Suite) Run(ctx context.Context) (*Summary, error) {
	start := time.Now()
	unlock, err := lock(LockPath)
	if err != nil {
		return nil, err
	}
	defer unlock()
	cfg := s.cfg
	if err := os.MkdirAll(cfg.RunsDir, 0o755); err != nil {
		return nil, err
	}
	stateDir := filepath.Join(cfg.RunsDir, ".dockerd", start.Format("20060102T150405"))
	daemon, err := cluster.EnsureDaemon(ctx, s.docker, stateDir, cfg.Log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := daemon.Stop(); err != nil {
			s.printf("warning: %v\n", err)
		}
	}()
	if daemon.Own() {
		s.printf("started dockerd (pid %d); it is stopped and the host's iptables restored at the end\n", daemon.PID())
	}
	if err := s.BuildImage(ctx); err != nil {
		return nil, err
	}
	sum := &Summary{}
	for i := range cfg.Runs {
		if ctx.Err() != nil {
			break
		}
		res := s.runOne(ctx, i)
		sum.Runs = append(sum.Runs, res)
		s.printRun(res)
	}
	sum.Took = time.Since(start)
	sum.Passed = passed(cfg, sum.Runs) && ctx.Err() == nil
	sum.Caught = caughtCount(sum.Runs)
	s.printTable(sum)
	_ = history.WriteJSON(filepath.Join(cfg.RunsDir, "last-"+cfg.Name+".json"), sum)
	return sum, ctx.Err()
}

// BuildImage builds the node image (static kvd, FROM scratch).
func (s *Suite) BuildImage(ctx context.Context) error {
	cfg := s.cfg
	s.printf("building kvd (race=%v tags=%s) and image %s...\n", cfg.Race, strings.Join(cfg.KVDTags, ","), cfg.Image)
	ctxDir := filepath.Join(cfg.RunsDir, ".image")
	if err := cluster.BuildImage(ctx, s.docker, cluster.ImageConfig{
		Src: cfg.Src, Dockerfile: cfg.Dockerfile, ContextDir: ctxDir,
		Tag: cfg.Image, BuildTags: cfg.KVDTags, Race: cfg.Race, Binary: cfg.KVDBin,
	}, cfg.Log); err != nil {
		return err
	}
	tags, err := cluster.BinaryTags(filepath.Join(ctxDir, "kvd"))
	if err != nil {
		return err
	}
	return checkFaultTag(cfg, tags, s.cfg.Out)
}

// FaultTag is the build tag of the deliberately broken kvd
// (replica/fault_staleread.go).
const FaultTag = "jepsen_fault_staleread"

// checkFaultTag makes sure a suite that expects violations really runs the
// broken kvd (a --kvd-bin or --kvd-tags override could swap it for a
// correct one, and the suite would then fail for the wrong reason), and
// warns when a suite that expects none runs it.
func checkFaultTag(cfg Config, tags []string, out io.Writer) error {
	has := slices.Contains(tags, FaultTag)
	switch {
	case cfg.ExpectViolations && !has:
		return fmt.Errorf("jepsen: this suite expects violations, but the image's kvd was not built with -tags %s (its tags: %s); "+
			"drop --kvd-tags/--kvd-bin or pass --expect-violations=false", FaultTag, strings.Join(tags, ","))
	case !cfg.ExpectViolations && has:
		fmt.Fprintf(out, "warning: kvd is built with -tags %s (strong reads skip ReadIndex) and no violation is expected\n", FaultTag)
	}
	return nil
}

// passed applies the suite's expectation to its runs: every run PASSes, or,
// for a deliberately broken kvd (ExpectViolations), no run had a harness
// error and at least one run was CAUGHT (found a linearizability
// violation). A broken kvd that no run catches fails the suite: the checker
// or the nemeses cannot see the bug they exist to see.
func passed(cfg Config, runs []RunResult) bool {
	if len(runs) < cfg.Runs {
		return false
	}
	caught := 0
	for _, r := range runs {
		switch r.Verdict {
		case VerdictError:
			return false
		case VerdictCaught:
			caught++
		case VerdictPass:
		default:
			if !cfg.ExpectViolations {
				return false
			}
		}
	}
	if cfg.ExpectViolations {
		return caught > 0
	}
	return true
}

// caughtCount is how many runs caught the broken kvd.
func caughtCount(runs []RunResult) int {
	n := 0
	for _, r := range runs {
		if r.Verdict == VerdictCaught {
			n++
		}
	}
	return n
}

const checkerNotLinearizable = "not-linearizable"

func (s *Suite) printRun(r RunResult) {
	s.printf("  run %d seed %d: %s in %v: %d ops (ok %d, failed %d, unknown %d), %d keys",
		r.Index+1, r.Seed, r.Verdict, r.Took.Round(time.Second), r.Ops.Total(), r.Ops.OK, r.Ops.Fail, r.Ops.Unknown, r.Keys)
	if r.Report != nil {
		s.printf(", %d violations", len(r.Report.Violations))
	}
	s.printf("\n    folder: %s\n", r.Dir)
	if r.Err != "" {
		s.printf("    error: %s\n", r.Err)
	}
	for _, w := range r.Warnings {
		s.printf("    warning: %s\n", truncate(w, 400))
	}
	if r.Report != nil {
		for i, v := range r.Report.Violations {
			if i == 10 {
				s.printf("    ... %d more in %s\n", len(r.Report.Violations)-10, filepath.Join(r.Dir, "violations.txt"))
				break
			}
			s.printf("    %s\n", truncate(v.String(), 400))
		}
	}
}

func (s *Suite) printTable(sum *Summary) {
	s.printf("\n%s suite: %d runs in %v\n", s.cfg.Name, len(sum.Runs), sum.Took.Round(time.Second))
	tw := tabwriter.NewWriter(s.cfg.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tseed\tnemeses\twindows\tops\tok\tfailed\tunknown\tkeys\tviolations\tlongest outage\tconverged\twarnings\tverdict")
	for _, r := range sum.Runs {
		viol := "-"
		if r.Report != nil {
			viol = fmt.Sprint(len(r.Report.Violations))
			if len(r.ByKind) > 0 {
				var parts []string
				for _, k := range sortedKinds(r.ByKind) {
					parts = append(parts, fmt.Sprintf("%s:%d", k, r.ByKind[k]))
				}
				viol += " (" + strings.Join(parts, " ") + ")"
			}
		}
		outage := "-"
		if r.Report != nil && r.Report.Outage.Seconds > 0 {
			outage = fmt.Sprintf("%.1fs p%d", r.Report.Outage.Seconds, r.Report.Outage.Partition)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%.1fs\t%d\t%s\n", r.Index+1, r.Seed, truncate(r.Nemeses, 48), r.Windows,
			r.Ops.Total(), r.Ops.OK, r.Ops.Fail, r.Ops.Unknown, r.Keys, viol, outage, r.Converge, len(r.Warnings), r.Verdict)
	}
	tw.Flush()
	switch {
	case s.cfg.ExpectViolations && sum.Passed:
		s.printf("deliberately broken kvd (tags %s): stale reads caught in %d of %d runs: PASS\n",
			strings.Join(s.cfg.KVDTags, ","), sum.Caught, len(sum.Runs))
	case s.cfg.ExpectViolations:
		s.printf("deliberately broken kvd (tags %s): FAIL: %d of %d runs found a linearizability violation%s; "+
			"the suite must catch this build, so its nemeses, workload or checker no longer expose stale reads\n",
			strings.Join(s.cfg.KVDTags, ","), sum.Caught, len(sum.Runs), harnessNote(sum.Runs))
	case sum.Passed:
		s.printf("verdict: PASS\n")
	default:
		s.printf("verdict: FAIL\n")
	}
}

// harnessNote mentions runs that ended in a harness error.
func harnessNote(runs []RunResult) string {
	n := 0
	for _, r := range runs {
		if r.Verdict == VerdictError {
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d runs ended in a harness error)", n)
}

// status prints the current nemesis, ops/s and errors every StatusEvery
// until the returned stop is called.
func (s *Suite) status(r *run, nem *nemesis.Runner) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(s.cfg.StatusEvery)
		defer t.Stop()
		prev, prevT := 0, time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				c := r.rec.Counts()
				rate := float64(c.Total()-prev) / now.Sub(prevT).Seconds()
				prev, prevT = c.Total(), now
				s.printf("  [%s %d/%d t=%3.0fs] %6.0f ops/s  ok %d  failed %d  unknown %d  | nemesis %s\n",
					s.cfg.Name, r.idx+1, s.cfg.Runs, time.Duration(r.rec.Now()).Seconds(), rate, c.OK, c.Fail, c.Unknown, truncate(nem.Current(), 90))
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// lock takes an exclusive, non-blocking lock on path.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("jepsen: another suite holds %s; wait for it to finish", path)
		}
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func ensureDaemonFor(ctx context.Context, s *Suite) (*cluster.Daemon, error) {
	stateDir := filepath.Join(s.cfg.RunsDir, ".dockerd", time.Now().Format("20060102T150405"))
	return cluster.EnsureDaemon(ctx, s.docker, stateDir, s.cfg.Log)
}
