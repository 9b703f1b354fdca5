package jepsen

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ringkv/ringkv/jepsen/checker"
	"github.com/ringkv/ringkv/jepsen/nemesis"
)

// Main is the jepsen command: "run" (the default), "check RUNDIR" and
// "image". It returns the process exit code: 0 on success, 1 when a run
// broke a promise (or, with --expect-violations, when none was caught), 2 on
// usage or harness errors.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	code := 0
	switch cmd {
	case "run":
		code, err = mainRun(ctx, args, stdout, stderr)
	case "check":
		code, err = mainCheck(args, stdout, stderr)
	case "image":
		code, err = mainImage(ctx, args, stdout, stderr)
	default:
		err = fmt.Errorf("unknown command %q: use run, check RUNDIR or image", cmd)
		code = 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "jepsen:", err)
		if code == 0 {
			code = 2
		}
	}
	return code
}

func mainRun(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("jepsen run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", "smoke", "preset: smoke (3 nodes, 4 short runs), full (5 nodes, every nemesis, 10 x 120 s) or faulty (expects violations)")
	var (
		nodes, runs, partitions, workers, group, opsPerKey     int
		seed                                                   uint64
		duration, checkTimeout, converge                       time.Duration
		nemeses, tags, kvdBin, src, runsDir, kvdArgs, logLevel string
		race, expect, keepData, strictReady                    bool
		faultTime, gapTime                                     string
		clientTimeout, opTimeout                               time.Duration
		pinned                                                 int
	)
	fs.DurationVar(&opTimeout, "op-timeout", 0, "bound on one operation, retries included (0: the preset's)")
	fs.IntVar(&pinned, "pinned-every", -1, "every N-th worker uses a client that knows one node only (0: none; -1: the preset's)")
	fs.StringVar(&faultTime, "fault-time", "", "how long a fault lasts, MIN-MAX, e.g. 5s-12s (default: the preset's)")
	fs.StringVar(&gapTime, "gap-time", "", "healthy time between faults, MIN-MAX, e.g. 3s-6s (default: the preset's)")
	fs.DurationVar(&clientTimeout, "client-timeout", 0, "the clients' per-attempt timeout (0: the preset's)")
	fs.IntVar(&nodes, "nodes", 0, "nodes per cluster (0: the preset's)")
	fs.IntVar(&runs, "runs", 0, "number of runs (0: the preset's)")
	fs.IntVar(&partitions, "partitions", 0, "partitions P (0: the preset's, 16)")
	fs.IntVar(&workers, "workers", 0, "register workers (0: the preset's)")
	fs.IntVar(&group, "group-size", 0, "workers sharing one key, at most 10 (0: the preset's)")
	fs.IntVar(&opsPerKey, "ops-per-key", 0, "operations before a key is retired (0: the preset's)")
	fs.Uint64Var(&seed, "seed", 0, "seed of the first run; run i uses seed+i (0: derived from the clock)")
	fs.DurationVar(&duration, "duration", 0, "workload time per run (0: the preset's)")
	fs.DurationVar(&checkTimeout, "check-timeout", 0, "porcupine time limit per key; running out is a violation (0: the preset's)")
	fs.DurationVar(&converge, "converge", 0, "how long replicas may take to agree after the final heal (0: 30s)")
	fs.StringVar(&nemeses, "nemesis", "", "nemesis sets, ';' between runs' sets, ',' within, e.g. 'partition;kill,pause-leader' (kinds: "+strings.Join(kindNames(), ", ")+"; groups: all, partition, net, kill, pause, leader, none)")
	fs.StringVar(&tags, "kvd-tags", "", "extra Go build tags for the image's kvd, e.g. jepsen_fault_staleread")
	fs.BoolVar(&race, "race", true, "build the image's kvd with the race detector (statically linked)")
	fs.BoolVar(&keepData, "keep-data", false, "keep the nodes' data dirs of passing runs too (failed runs always keep them)")
	fs.BoolVar(&strictReady, "strict-ready", false, "fail a run whose nodes do not all say ready at the start and 60 s after the final heal (default: a warning)")
	fs.BoolVar(&expect, "expect-violations", false, "pass only if some run finds a linearizability violation (for broken builds)")
	fs.StringVar(&kvdBin, "kvd-bin", "", "use this static kvd instead of building one")
	fs.StringVar(&src, "src", "", "RingKV module root to build kvd from (default: the current module)")
	fs.StringVar(&runsDir, "runs-dir", "", "where run folders go (default: jepsen/runs under the module root)")
	fs.StringVar(&kvdArgs, "kvd-args", "", "extra kvd flags for every node, space-separated (replaces the preset's)")
	fs.StringVar(&logLevel, "log-level", "warn", "harness log level (debug, info, warn, error), on stderr")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	var cfg Config
	switch *mode {
	case "smoke":
		cfg = SmokeConfig()
	case "full":
		cfg = DefaultConfig()
	case "faulty":
		cfg = FaultyConfig()
	default:
		return 2, fmt.Errorf("unknown mode %q: use smoke, full or faulty", *mode)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	root, err := moduleRoot()
	if err != nil {
		return 2, err
	}
	cfg.Src = root
	if src != "" {
		if cfg.Src, err = filepath.Abs(src); err != nil {
			return 2, err
		}
	}
	cfg.Dockerfile = filepath.Join(root, "jepsen", "Dockerfile")
	cfg.RunsDir = filepath.Join(root, "jepsen", "runs")
	if runsDir != "" {
		cfg.RunsDir = runsDir
	}
	overrideInt(&cfg.Nodes, nodes)
	overrideInt(&cfg.Runs, runs)
	overrideInt(&cfg.Partitions, partitions)
	overrideInt(&cfg.Workload.Workers, workers)
	overrideInt(&cfg.Workload.GroupSize, group)
	overrideInt(&cfg.Workload.OpsPerKey, opsPerKey)
	if duration > 0 {
		cfg.Duration = duration
	}
	if checkTimeout > 0 {
		cfg.CheckTimeout = checkTimeout
	}
	if converge > 0 {
		cfg.ConvergeLimit = converge
	}
	if faultTime != "" {
		if cfg.Timing.MinFault, cfg.Timing.MaxFault, err = parseRange(faultTime); err != nil {
			return 2, fmt.Errorf("--fault-time: %w", err)
		}
	}
	if gapTime != "" {
		if cfg.Timing.MinGap, cfg.Timing.MaxGap, err = parseRange(gapTime); err != nil {
			return 2, fmt.Errorf("--gap-time: %w", err)
		}
	}
	if clientTimeout > 0 {
		cfg.Workload.Client.RequestTimeout = clientTimeout
	}
	if opTimeout > 0 {
		cfg.Workload.OpTimeout = opTimeout
	}
	if pinned >= 0 {
		cfg.Workload.PinnedEvery = pinned
	}
	cfg.Seed = seed
	if seed == 0 {
		cfg.Seed = uint64(time.Now().Unix())
	}
	if nemeses != "" {
		cfg.Nemeses = nil
		for _, part := range strings.Split(nemeses, ";") {
			ks, err := nemesis.ParseKinds(part)
			if err != nil {
				return 2, err
			}
			cfg.Nemeses = append(cfg.Nemeses, ks)
		}
	}
	if set["kvd-tags"] {
		cfg.KVDTags = strings.FieldsFunc(tags, func(r rune) bool { return r == ',' || r == ' ' })
	}
	if set["race"] {
		cfg.Race = race
	}
	if set["expect-violations"] {
		cfg.ExpectViolations = expect
	}
	if set["kvd-args"] {
		cfg.KVDArgs = strings.Fields(kvdArgs)
	}
	cfg.KVDBin, cfg.KeepData, cfg.StrictReady = kvdBin, keepData, strictReady
	cfg.Out = stdout
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		return 2, err
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	s, err := NewSuite(cfg)
	if err != nil {
		return 2, err
	}
	sum, err := s.Run(ctx)
	if err != nil {
		return 2, err
	}
	if !sum.Passed {
		if cfg.ExpectViolations {
			fmt.Fprintf(stderr, "jepsen: FAIL: the deliberately broken kvd (-tags %s) was caught in %d of %d runs; at least one must catch it\n",
				strings.Join(cfg.KVDTags, ","), sum.Caught, len(sum.Runs))
		}
		return 1, nil
	}
	return 0, nil
}

func mainCheck(args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("jepsen check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("check-timeout", 2*time.Minute, "porcupine time limit per key")
	html := fs.Bool("html", true, "rewrite history.html")
	// Accept the run folder before or after the flags.
	var dirs []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return 2, err
		}
		if fs.NArg() == 0 {
			break
		}
		dirs = append(dirs, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(dirs) != 1 {
		return 2, errors.New("usage: jepsen check [--check-timeout D] [--html=false] RUNDIR")
	}
	rep, err := CheckDir(dirs[0], checker.Config{Timeout: *timeout, Workers: 2}, *html)
	if err != nil {
		return 2, err
	}
	fmt.Fprintf(stdout, "%s: %d ops (ok %d, failed %d, unknown %d), %d keys, %d linearizable, checked in %v\n",
		dirs[0], rep.Ops.Total(), rep.Ops.OK, rep.Ops.Fail, rep.Ops.Unknown, rep.Keys, rep.Linearizable, rep.Took.Round(time.Millisecond))
	for _, v := range rep.Violations {
		fmt.Fprintln(stdout, " ", v)
	}
	if !rep.Valid() {
		fmt.Fprintf(stdout, "verdict: FAIL (%d violations)\n", len(rep.Violations))
		return 1, nil
	}
	fmt.Fprintln(stdout, "verdict: PASS")
	return 0, nil
}

// mainImage builds the image users run with docker-compose.
func mainImage(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("jepsen image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tag := fs.String("tag", "ringkv:dev", "image tag")
	race := fs.Bool("race", false, "build kvd with the race detector")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	root, err := moduleRoot()
	if err != nil {
		return 2, err
	}
	cfg := DefaultConfig()
	cfg.Src, cfg.Dockerfile, cfg.RunsDir = root, filepath.Join(root, "jepsen", "Dockerfile"), filepath.Join(root, "jepsen", "runs")
	cfg.Image, cfg.Race, cfg.Out = *tag, *race, stdout
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := NewSuite(cfg)
	if err != nil {
		return 2, err
	}
	unlock, err := lock(LockPath)
	if err != nil {
		return 2, err
	}
	defer unlock()
	daemon, err := ensureDaemonFor(ctx, s)
	if err != nil {
		return 2, err
	}
	defer daemon.Stop()
	if err := s.BuildImage(ctx); err != nil {
		return 2, err
	}
	fmt.Fprintf(stdout, "built %s\n", *tag)
	if daemon.Own() {
		fmt.Fprintln(stdout, "note: no docker daemon was running; the one started for the build is stopped again. Start dockerd yourself to keep the image at hand.")
	}
	return 0, nil
}

// parseRange parses "MIN-MAX" durations.
func parseRange(s string) (lo, hi time.Duration, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not MIN-MAX", s)
	}
	if lo, err = time.ParseDuration(a); err != nil {
		return 0, 0, err
	}
	if hi, err = time.ParseDuration(b); err != nil {
		return 0, 0, err
	}
	if lo <= 0 || hi < lo {
		return 0, 0, fmt.Errorf("%q: need 0 < MIN <= MAX", s)
	}
	return lo, hi, nil
}

func overrideInt(dst *int, v int) {
	if v > 0 {
		*dst = v
	}
}

func kindNames() []string {
	var out []string
	for _, k := range nemesis.AllKinds {
		out = append(out, string(k))
	}
	return out
}

// moduleRoot finds the RingKV module root: the nearest folder above the
// working directory with a go.mod.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s: run from the RingKV module or pass --src", wd)
		}
	}
}
