package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(*usageError)):
		fmt.Fprintln(os.Stderr, "etcdbench:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "etcdbench:", err)
		os.Exit(1)
	}
}

// usageError is a problem with the command line (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// options are the command-line flags; the workload flags mirror kvctl bench.
type options struct {
	endpoints   string
	op          string
	ratio       float64
	consistency string
	clients     int
	conns       int
	duration    time.Duration
	count       int
	valueSize   int
	keys        int
	output      string
	timeout     time.Duration
	dialTimeout time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("etcdbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defEndpoints := os.Getenv("ETCD_ENDPOINTS")
	if defEndpoints == "" {
		defEndpoints = "127.0.0.1:2379"
	}
	fs.StringVar(&o.endpoints, "endpoints", defEndpoints, "etcd client addresses, comma-separated (or ETCD_ENDPOINTS)")
	fs.StringVar(&o.op, "op", "put", "operation: put, get or mixed")
	fs.Float64Var(&o.ratio, "ratio", 0.5, "fraction of reads in a mixed run (0 to 1)")
	fs.StringVar(&o.consistency, "consistency", "strong", "read consistency: strong (linearizable) or eventual (serializable)")
	fs.IntVar(&o.clients, "clients", 16, "concurrent clients (goroutines)")
	fs.IntVar(&o.conns, "conns", 1, "connections per member, shared by the clients")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run (ignored with -n)")
	fs.IntVar(&o.count, "n", 0, "run this many operations instead of for --duration")
	fs.IntVar(&o.count, "count", 0, "same as -n")
	fs.IntVar(&o.valueSize, "value-size", 100, "value size in bytes")
	fs.IntVar(&o.keys, "keys", 1000, "number of distinct keys")
	fs.StringVar(&o.output, "o", "table", "output: table or json")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "time limit of each operation, retries included")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 5*time.Second, "time limit for reaching the cluster at start")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: etcdbench [flags]

Run a closed-loop load against etcd, shaped like kvctl bench: --clients
goroutines each send one request at a time, sharing --conns connections per
member, for --duration or until -n operations are done. Keys are
"bench-%%08d" over --keys keys, chosen at random; get and mixed runs first
write every key once. strong reads are linearizable, eventual reads are
serializable.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return o, usagef("unexpected argument %q", fs.Arg(0))
	}
	return o, o.validate()
}

func (o *options) validate() error {
	switch o.op {
	case "put", "get", "mixed":
	default:
		return usagef("--op: unknown operation %q: use put, get or mixed", o.op)
	}
	switch {
	case o.consistency != "strong" && o.consistency != "eventual":
		return usagef("--consistency: unknown value %q: use strong or eventual", o.consistency)
	case o.output != "table" && o.output != "json":
		return usagef("-o: unknown output %q: use table or json", o.output)
	case len(o.endpointList()) == 0:
		return usagef("--endpoints: give at least one etcd client address (host:port)")
	case o.ratio < 0 || o.ratio > 1:
		return usagef("--ratio must be between 0 and 1, got %v", o.ratio)
	case o.clients < 1:
		return usagef("--clients must be at least 1, got %d", o.clients)
	case o.conns < 1:
		return usagef("--conns must be at least 1, got %d", o.conns)
	case o.count < 0:
		return usagef("-n must not be negative, got %d", o.count)
	case o.count == 0 && o.duration <= 0:
		return usagef("--duration must be positive, got %v", o.duration)
	case o.valueSize < 0:
		return usagef("--value-size must not be negative, got %d", o.valueSize)
	case o.keys < 1:
		return usagef("--keys must be at least 1, got %d", o.keys)
	case o.timeout <= 0 || o.dialTimeout <= 0:
		return usagef("--timeout and --dial-timeout must be positive")
	}
	o.conns = min(o.conns, o.clients)
	return nil
}

// endpointList splits --endpoints into URLs the etcd client accepts.
func (o *options) endpointList() []string {
	var eps []string
	for e := range strings.SplitSeq(o.endpoints, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if !strings.Contains(e, "://") {
			e = "http://" + e
		}
		eps = append(eps, e)
	}
	return eps
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	r, err := newRun(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer r.close()
	if o.op != "put" {
		if err := r.preload(ctx); err != nil {
			return err
		}
	}
	res, hist := r.run(ctx)
	if err := printResult(stdout, o.output, res, hist); err != nil {
		return err
	}
	if res.Ops == 0 && res.Errors > 0 {
		return fmt.Errorf("all %d operations failed; last error: %s", res.Errors, res.LastError)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted after %.1fs: %w", res.DurationS, ctx.Err())
	}
	return nil
}

// result is the JSON output; its fields are those of kvctl bench -o json.
type result struct {
	Op          string  `json:"op"`
	Consistency string  `json:"consistency"`
	Ratio       float64 `json:"ratio"`
	Clients     int     `json:"clients"`
	Conns       int     `json:"conns"`
	ValueSize   int     `json:"value_size"`
	Keys        int     `json:"keys"`
	Ops         uint64  `json:"ops"`
	Errors      uint64  `json:"errors"`
	DurationS   float64 `json:"duration_s"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50Ms       float64 `json:"p50_ms"`
	P90Ms       float64 `json:"p90_ms"`
	P99Ms       float64 `json:"p99_ms"`
	P999Ms      float64 `json:"p999_ms"`
	MaxMs       float64 `json:"max_ms"`
	MeanMs      float64 `json:"mean_ms"`
	LastError   string  `json:"last_error,omitempty"`
}

func printResult(w io.Writer, output string, res result, h *histogram) error {
	if output == "json" {
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	op := res.Op
	if op == "mixed" {
		op = fmt.Sprintf("mixed (%.0f%% reads)", res.Ratio*100)
	}
	rows := [][2]string{
		{"operation", op},
		{"consistency", res.Consistency},
		{"clients", fmt.Sprintf("%d over %d connection(s) per member", res.Clients, res.Conns)},
		{"values", fmt.Sprintf("%d bytes, %d keys", res.ValueSize, res.Keys)},
		{"operations", fmt.Sprintf("%d ok, %d errors in %.2fs", res.Ops, res.Errors, res.DurationS)},
		{"throughput", fmt.Sprintf("%.1f ops/s", res.OpsPerSec)},
	}
	if h.Count() > 0 {
		rows = append(rows, [2]string{"latency (ms)", fmt.Sprintf("p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f",
			res.P50Ms, res.P90Ms, res.P99Ms, res.P999Ms, res.MaxMs, res.MeanMs)})
	}
	if res.LastError != "" {
		rows = append(rows, [2]string{"last error", res.LastError})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}
