package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// errNotFound counts a read that found no value: after the pre-load every
// key exists, so it means the run is broken (kvctl bench counts it too).
var errNotFound = errors.New("key not found")

// benchRun is the shared state of one run; it follows kvctl bench's
// benchRun so that both sides do the same work per operation.
type benchRun struct {
	o       options
	clients []*clientv3.Client
	stderr  io.Writer
	ops     atomic.Uint64
	errs    atomic.Uint64
	lastErr atomic.Pointer[error]
}

// newRun opens o.conns etcd clients (each its own gRPC connection to every
// member) and checks that the cluster answers.
func newRun(ctx context.Context, o options, stderr io.Writer) (*benchRun, error) {
	r := &benchRun{o: o, stderr: stderr}
	for range o.conns {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   o.endpointList(),
			DialTimeout: o.dialTimeout,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			r.close()
			return nil, fmt.Errorf("connect to etcd at %s: %w", o.endpoints, err)
		}
		r.clients = append(r.clients, c)
	}
	// clientv3.New does not wait for a connection: ask once, so that an
	// unreachable cluster fails here with a clear message.
	probeCtx, cancel := context.WithTimeout(ctx, o.dialTimeout)
	defer cancel()
	if _, err := r.clients[0].Get(probeCtx, "bench-probe", clientv3.WithSerializable()); err != nil {
		r.close()
		return nil, fmt.Errorf("etcd at %s does not answer (is the cluster up?): %w", o.endpoints, err)
	}
	return r, nil
}

func (r *benchRun) close() {
	for _, c := range r.clients {
		_ = c.Close()
	}
}

func benchKey(i int) string { return fmt.Sprintf("bench-%08d", i) }

// preload writes every key once, so that reads find them.
func (r *benchRun) preload(ctx context.Context) error {
	var next, done atomic.Int64
	var failed atomic.Pointer[error]
	stop := r.progress(func(time.Duration) string {
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
				opCtx, cancel := context.WithTimeout(ctx, r.o.timeout)
				_, err := c.Put(opCtx, benchKey(int(i)), value)
				cancel()
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
		return fmt.Errorf("pre-loading key %d of %d failed: %w", done.Load()+1, r.o.keys, *p)
	}
	return ctx.Err()
}

// run drives the load until the count or the duration is reached.
func (r *benchRun) run(ctx context.Context) (result, *histogram) {
	var started atomic.Int64
	start := time.Now()
	deadline := start.Add(r.o.duration)
	stop := r.progress(func(elapsed time.Duration) string {
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
	res := result{
		Op: r.o.op, Consistency: r.o.consistency, Ratio: r.o.ratio, Clients: r.o.clients, Conns: r.o.conns,
		ValueSize: r.o.valueSize, Keys: r.o.keys,
		Ops: r.ops.Load(), Errors: r.errs.Load(), DurationS: math.Round(elapsed.Seconds()*1000) / 1000,
		OpsPerSec: round1(float64(r.ops.Load()) / elapsed.Seconds()),
		P50Ms:     ms(total.Quantile(0.5)), P90Ms: ms(total.Quantile(0.9)), P99Ms: ms(total.Quantile(0.99)),
		P999Ms: ms(total.Quantile(0.999)), MaxMs: ms(total.Max()), MeanMs: ms(total.Mean()),
	}
	if r.o.op != "mixed" {
		res.Ratio = map[string]float64{"put": 0, "get": 1}[r.o.op]
	}
	if p := r.lastErr.Load(); p != nil {
		res.LastError = (*p).Error()
	}
	return res, total
}

// worker sends one operation at a time while more() says so.
func (r *benchRun) worker(ctx context.Context, c *clientv3.Client, h *histogram, more func() bool) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	value := randomValue(r.o.valueSize)
	var readOpts []clientv3.OpOption
	if r.o.consistency == "eventual" {
		readOpts = append(readOpts, clientv3.WithSerializable())
	}
	for ctx.Err() == nil && more() {
		key := benchKey(rng.IntN(r.o.keys))
		read := r.o.op == "get" || (r.o.op == "mixed" && rng.Float64() < r.o.ratio)
		opCtx, cancel := context.WithTimeout(ctx, r.o.timeout)
		t0 := time.Now()
		var err error
		if read {
			var resp *clientv3.GetResponse
			resp, err = c.Get(opCtx, key, readOpts...)
			if err == nil && len(resp.Kvs) == 0 {
				err = fmt.Errorf("get %s: %w", key, errNotFound)
			}
		} else {
			_, err = c.Put(opCtx, key, value)
		}
		lat := time.Since(t0)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
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

func randomValue(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}

// progress prints line() on stderr once a second, overwriting itself, when
// stderr is a terminal; the returned stop ends it and clears the line.
func (r *benchRun) progress(line func(elapsed time.Duration) string) (stop func()) {
	f, ok := r.stderr.(*os.File)
	if !ok {
		return func() {}
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
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
				fmt.Fprint(r.stderr, "\r\033[K")
				return
			case now := <-t.C:
				fmt.Fprintf(r.stderr, "\r\033[K%s", line(now.Sub(start)))
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
