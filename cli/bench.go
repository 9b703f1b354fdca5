package cli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/ringkv/ringkv/client"
)

type benchOptions struct {
	op          string
	ratio       float64
	consistency string
	clients     int
	conns       int
	duration    time.Duration
	count       int
	valueSize   int
	keys        int
}

// benchResult is the JSON output of bench.
type benchResult struct {
	Op          string  `json:"op"`
	Consistency string  `json:"consistency"`
	Ratio       float64 `json:"ratio"`
	Clients     int     `json:"clients"`
	Conns       int     `json:"conns"`
	Protocol    string  `json:"protocol"`
	ValueSize   int     `json:"value_size"`
	Keys        int     `json:"keys"`
	Ops         uint64  `json:"ops"`
	Errors      uint64  `json:"errors"`
	// CompareFailed counts --op cas operations whose condition did not
	// hold (another client wrote the key first): answers, not errors.
	CompareFailed uint64  `json:"compare_failed,omitempty"`
	DurationS     float64 `json:"duration_s"`
	OpsPerSec     float64 `json:"ops_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
	P90Ms         float64 `json:"p90_ms"`
	P99Ms         float64 `json:"p99_ms"`
	P999Ms        float64 `json:"p999_ms"`
	MaxMs         float64 `json:"max_ms"`
	MeanMs        float64 `json:"mean_ms"`
	LastError     string  `json:"last_error,omitempty"`
}

func (a *app) benchCommand() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput and latency",
		Long: `Run a closed-loop load: --clients goroutines each send one request at a time,
sharing --conns connections per node, for --duration or until -n operations
are done. Keys are "bench-%08d" over --keys keys, chosen at random; get,
mixed and cas runs first write every key once. A cas operation swaps the
key's value if its version is still the last one that client saw (at first,
the pre-load's); when another client got there first, the answer (counted
as "compare failed", not as an error) gives it the version for next time.

--conns is how many Clients the goroutines share, each with one connection
to every node (native protocol, or HTTP/2 with --protocol connect). One is
what an application should do (share one Client), and it served as much as
eight or more in our measurements (docs/PERFORMANCE.md, "Connections per
node").

Latency is measured per successful operation (retries included) and
reported as percentiles from a log-bucket histogram (within 1%). Errors are
counted, not timed. Here --timeout bounds each operation, not the run.

A live line with ops/s and errors is shown on stderr once a second when
stderr is a terminal.`,
		Example: `  kvctl bench --op put --duration 30s
  kvctl bench --op mixed --ratio 0.9 --consistency eventual --clients 64
  kvctl bench --op get -n 100000 -o json
  kvctl bench --op cas --keys 100 --clients 32`,
		Args: args(0, ""),
	}
	f := cmd.Flags()
	f.StringVar(&o.op, "op", "put", "operation: put, get, mixed or cas")
	f.Float64Var(&o.ratio, "ratio", 0.5, "fraction of reads in a mixed run (0 to 1)")
	f.StringVar(&o.consistency, "consistency", "strong", "read consistency: strong or eventual")
	f.IntVar(&o.clients, "clients", 16, "concurrent clients (goroutines)")
	f.IntVar(&o.conns, "conns", 1, "connections per node, shared by the clients")
	f.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run (ignored with -n)")
	f.IntVarP(&o.count, "count", "n", 0, "run this many operations instead of for --duration")
	f.IntVar(&o.valueSize, "value-size", 100, "value size in bytes")
	f.IntVar(&o.keys, "keys", 1000, "number of distinct keys")
	cmd.RunE = a.runRaw(func(cmd *cobra.Command, _ []string) error {
		cons, err := o.validate()
		if err != nil {
			return err
		}
		return a.bench(cmd.Context(), o, cons)
	})
	return cmd
}

func (o *benchOptions) validate() (client.Consistency, error) {
	switch o.op {
	case "put", "get", "mixed", "cas":
	default:
		return 0, usagef("--op: unknown operation %q: use put, get, mixed or cas", o.op)
	}
	cons, err := client.ParseConsistency(o.consistency)
	switch {
	case err != nil:
		return 0, usagef("--consistency: unknown value %q: use strong or eventual", o.consistency)
	case o.ratio < 0 || o.ratio > 1:
		return 0, usagef("--ratio must be between 0 and 1, got %v", o.ratio)
	case o.clients < 1:
		return 0, usagef("--clients must be at least 1, got %d", o.clients)
	case o.conns < 1:
		return 0, usagef("--conns must be at least 1, got %d", o.conns)
	case o.count < 0:
		return 0, usagef("-n must not be negative, got %d", o.count)
	case o.count == 0 && o.duration <= 0:
		return 0, usagef("--duration must be positive, got %v", o.duration)
	case o.valueSize < 0:
		return 0, usagef("--value-size must not be negative, got %d", o.valueSize)
	case o.keys < 1:
		return 0, usagef("--keys must be at least 1, got %d", o.keys)
	}
	o.conns = min(o.conns, o.clients)
	return cons, nil
}

// benchRun is the shared state of one bench run.
type benchRun struct {
	o        benchOptions
	cons     client.Consistency
	protocol string
	clients  []*client.Client
	timeout  time.Duration
	ops      atomic.Uint64
	errs     atomic.Uint64
	casFail  atomic.Uint64
	// loaded is each key's version after the pre-load: a cas worker's
	// first swap of a key expects it.
	loaded  []uint64
	lastErr atomic.Pointer[error]
}

func benchKey(i int) []byte { return fmt.Appendf(nil, "bench-%08d", i) }

func (a *app) bench(ctx context.Context, o benchOptions, cons client.Consistency) error {
	r := &benchRun{o: o, cons: cons, protocol: a.protocol, timeout: a.timeout}
	for range o.conns {
		// Each Client has its own connections, one to each node.
		c, err := a.newClient(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		r.clients = append(r.clients, c)
	}
	if o.op != "put" {
		if err := r.preload(ctx, a); err != nil {
			return err
		}
	}
	res, hist := r.run(ctx, a)
	if err := a.printBench(res, hist); err != nil {
		return err
	}
	if res.Ops == 0 && res.Errors > 0 {
		return &reportedError{fmt.Errorf("bench: all %d operations failed; last error: %s", res.Errors, res.LastError)}
	}
	if ctx.Err() != nil {
		return &reportedError{fmt.Errorf("bench: interrupted after %.1fs: %w", res.DurationS, ctx.Err())}
	}
	return nil
}

// preload writes every key once, so that reads find them.
func (r *benchRun) preload(ctx context.Context, a *app) error {
	r.loaded = make([]uint64, r.o.keys)
	var next, done atomic.Int64
	var failed atomic.Pointer[error]
	stop := a.progress(func(elapsed time.Duration) string {
		return fmt.Sprintf("pre-loading keys: %d/%d", done.Load(), r.o.keys)
	})
	var wg sync.WaitGroup
	for w := range r.o.clients {
		wg.Go(func() {
			c := r.clients[w%len(r.clients)]
			value := randomValue(r.o.valueSize)
			for ctx.Err() == nil && failed.Load() == nil {
				i := next.Add(1) - 1
				if i >= int64(r.o.keys) {
					return
				}
				opCtx, cancel := context.WithTimeout(ctx, r.timeout)
				v, err := c.Put(opCtx, benchKey(int(i)), value)
				cancel()
				r.loaded[i] = v
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	stop()
	if p := failed.Load(); p != nil {
		return fmt.Errorf("bench: pre-loading key %d of %d failed: %w", done.Load()+1, r.o.keys, *p)
	}
	return ctx.Err()
}

// run drives the load until the count or the duration is reached.
func (r *benchRun) run(ctx context.Context, a *app) (benchResult, *histogram) {
	var started atomic.Int64
	start := time.Now()
	deadline := start.Add(r.o.duration)
	stop := a.progress(func(elapsed time.Duration) string {
		return fmt.Sprintf("%.0f ops/s, %d errors, %s", float64(r.ops.Load())/elapsed.Seconds(), r.errs.Load(), elapsed.Round(time.Second))
	})
	hists := make([]*histogram, r.o.clients)
	var wg sync.WaitGroup
	for w := range r.o.clients {
		hists[w] = newHistogram()
		wg.Go(func() {
			r.worker(ctx, r.clients[w%len(r.clients)], hists[w], func() bool {
				if r.o.count > 0 {
					return started.Add(1) <= int64(r.o.count)
				}
				return time.Now().Before(deadline)
			})
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stop()
	total := newHistogram()
	for _, h := range hists {
		total.Merge(h)
	}
	// Microsecond precision is all a histogram within 1% can back.
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }
	round1 := func(f float64) float64 { return math.Round(f*10) / 10 }
	res := benchResult{
		Op: r.o.op, Consistency: r.cons.String(), Ratio: r.o.ratio, Clients: r.o.clients, Conns: r.o.conns,
		Protocol:  r.protocol,
		ValueSize: r.o.valueSize, Keys: r.o.keys,
		Ops: r.ops.Load(), Errors: r.errs.Load(), CompareFailed: r.casFail.Load(), DurationS: math.Round(elapsed.Seconds()*1000) / 1000,
		OpsPerSec: round1(float64(r.ops.Load()) / elapsed.Seconds()),
		P50Ms:     ms(total.Quantile(0.5)), P90Ms: ms(total.Quantile(0.9)), P99Ms: ms(total.Quantile(0.99)),
		P999Ms: ms(total.Quantile(0.999)), MaxMs: ms(total.Max()), MeanMs: ms(total.Mean()),
	}
	if r.o.op != "mixed" {
		res.Ratio = map[string]float64{"put": 0, "get": 1, "cas": 0}[r.o.op]
	}
	if p := r.lastErr.Load(); p != nil {
		_, res.LastError = describe(*p)
	}
	return res, total
}

// worker sends one operation at a time while more() says so.
func (r *benchRun) worker(ctx context.Context, c *client.Client, h *histogram, more func() bool) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	value := randomValue(r.o.valueSize)
	versions := make(map[int]uint64) // --op cas: the last version seen per key, if not the pre-load's
	for ctx.Err() == nil && more() {
		k := rng.IntN(r.o.keys)
		key := benchKey(k)
		read := r.o.op == "get" || (r.o.op == "mixed" && rng.Float64() < r.o.ratio)
		opCtx, cancel := context.WithTimeout(ctx, r.timeout)
		t0 := time.Now()
		var err error
		switch {
		case r.o.op == "cas":
			err = r.cas(opCtx, c, key, value, versions, k)
		case read:
			_, err = c.Get(opCtx, key, client.WithConsistency(r.cons))
		default:
			_, err = c.Put(opCtx, key, value)
		}
		lat := time.Since(t0)
		cancel()
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return // interrupted, not failed
			}
			r.errs.Add(1)
			r.lastErr.Store(&err)
			continue
		}
		h.Record(lat)
		r.ops.Add(1)
	}
}

// cas swaps key's value on the condition that its version is still the
// last one this worker saw (a read-modify-write without the read); a failed
// comparison tells it the current version for next time.
func (r *benchRun) cas(ctx context.Context, c *client.Client, key, value []byte, versions map[int]uint64, k int) error {
	v, ok := versions[k]
	if !ok {
		v = r.loaded[k]
	}
	res, err := c.CompareAndSwap(ctx, key, client.IfVersion(v), value)
	if err != nil {
		return err
	}
	if res.Succeeded {
		versions[k] = res.Version
	} else {
		versions[k] = res.CurrentVersion
		r.casFail.Add(1)
	}
	return nil
}

func randomValue(n int) []byte {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return b
}

// progress prints line() on stderr once a second, overwriting itself, when
// stderr is a terminal; the returned stop ends it and clears the line.
func (a *app) progress(line func(elapsed time.Duration) string) (stop func()) {
	if !a.isTerminal(a.stderr) {
		return func() {}
	}
	start := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(a.stderr, "\r\033[K")
				return
			case now := <-t.C:
				fmt.Fprintf(a.stderr, "\r\033[K%s", line(now.Sub(start)))
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

func (a *app) printBench(res benchResult, h *histogram) error {
	if a.jsonMode() {
		return a.printJSON(res)
	}
	op := res.Op
	if op == "mixed" {
		op = fmt.Sprintf("mixed (%.0f%% reads)", res.Ratio*100)
	}
	rows := [][2]string{
		{"operation", op},
		{"consistency", res.Consistency},
		{"clients", fmt.Sprintf("%d over %d %s connection(s) per node", res.Clients, res.Conns, res.Protocol)},
		{"values", fmt.Sprintf("%d bytes, %d keys", res.ValueSize, res.Keys)},
		{"operations", fmt.Sprintf("%d ok, %d errors in %.2fs", res.Ops, res.Errors, res.DurationS)},
		{"throughput", fmt.Sprintf("%.1f ops/s", res.OpsPerSec)},
	}
	if res.Op == "cas" {
		rows = append(rows, [2]string{"compare failed", fmt.Sprintf("%d of %d (another client wrote the key first)", res.CompareFailed, res.Ops)})
	}
	if h.Count() > 0 {
		rows = append(rows, [2]string{"latency (ms)", fmt.Sprintf("p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f",
			res.P50Ms, res.P90Ms, res.P99Ms, res.P999Ms, res.MaxMs, res.MeanMs)})
	}
	if res.LastError != "" {
		rows = append(rows, [2]string{"last error", res.LastError})
	}
	return fields(a.stdout, rows)
}
