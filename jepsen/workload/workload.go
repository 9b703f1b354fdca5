package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/jepsen/history"
)

// Config configures the workloads.
type Config struct {
	// Endpoints are the client addresses of every node, by node name.
	Endpoints map[string]string
	// Workers is the number of register workers; GroupSize how many share a
	// key (at most 10).
	Workers, GroupSize int
	// OpsPerKey retires a key after this many operations.
	OpsPerKey int
	// Duration bounds the run; MaxOps bounds the operations of one worker.
	Duration time.Duration
	MaxOps   int
	// OpTimeout bounds one operation, retries included.
	OpTimeout time.Duration
	// DurableEvery paces the durability worker (0 disables it).
	DurableEvery time.Duration
	// PinnedEvery makes every PinnedEvery-th register worker (0: none) use
	// a client that knows one node only (round-robin over the nodes), like
	// an application configured with one endpoint: when that node is cut
	// off or paused, those clients keep trying it, so a node that comes
	// back from a pause finds requests waiting.
	PinnedEvery int
	// Seed makes the workers' choices reproducible.
	Seed uint64
	// Client is the template for every client (Endpoints is replaced).
	Client client.Config
	Log    *slog.Logger
}

// DefaultConfig: 12 workers in groups of 6, 200 operations per key.
func DefaultConfig() Config {
	cc := client.DefaultConfig()
	cc.RequestTimeout = 2500 * time.Millisecond
	cc.MaxAttempts = 8
	cc.BackoffBase = 20 * time.Millisecond
	cc.BackoffMax = 400 * time.Millisecond
	return Config{Workers: 12, GroupSize: 6, OpsPerKey: 200, Duration: time.Minute, MaxOps: 100_000,
		OpTimeout: 8 * time.Second, DurableEvery: 200 * time.Millisecond, PinnedEvery: 4, Client: cc}
}

// TestConfig is a short, small workload: 4 workers in groups of 2 for 10 s.
func TestConfig(endpoints map[string]string) Config {
	c := DefaultConfig()
	c.Endpoints, c.Workers, c.GroupSize, c.Duration = endpoints, 4, 2, 10*time.Second
	return c
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case len(c.Endpoints) == 0:
		return errors.New("workload: no endpoints")
	case c.Workers < 1:
		return fmt.Errorf("workload: Workers %d must be at least 1", c.Workers)
	case c.GroupSize < 1 || c.GroupSize > 10:
		return fmt.Errorf("workload: GroupSize %d outside 1..10 (at most 10 clients per key)", c.GroupSize)
	case c.OpsPerKey < 1 || c.MaxOps < 1:
		return errors.New("workload: OpsPerKey and MaxOps must be positive")
	case c.Duration <= 0 || c.OpTimeout <= 0:
		return errors.New("workload: Duration and OpTimeout must be positive")
	case c.PinnedEvery < 0:
		return errors.New("workload: PinnedEvery must not be negative")
	}
	return nil
}

// Workload runs the register and durability workers.
type Workload struct {
	cfg   Config
	ks    *Keyspace
	rec   *history.Recorder
	log   *slog.Logger
	names []string                  // node names, sorted
	node  map[string]*client.Client // one single-endpoint client per node, for eventual reads
	keys  *keyRotation
}

// New prepares the workers' clients.
func New(cfg Config, ks *Keyspace, rec *history.Recorder) (*Workload, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	w := &Workload{cfg: cfg, ks: ks, rec: rec, log: cfg.Log, node: map[string]*client.Client{}}
	w.names = sortedNames(cfg.Endpoints)
	for _, n := range w.names {
		cc := cfg.Client
		cc.Endpoints = []string{cfg.Endpoints[n]}
		cc.MaxAttempts = 2
		c, err := client.New(cc)
		if err != nil {
			w.Close()
			return nil, err
		}
		w.node[n] = c
	}
	groups := (cfg.Workers + cfg.GroupSize - 1) / cfg.GroupSize
	w.keys = newKeyRotation(groups, cfg.OpsPerKey, ks)
	return w, nil
}

// Close closes the clients.
func (w *Workload) Close() {
	for _, c := range w.node {
		c.Close()
	}
}

// DurableClient is the client number of the durability worker.
func (w *Workload) DurableClient() int { return w.cfg.Workers }

// Keys returns every key used so far.
func (w *Workload) Keys() []string { return w.keys.all() }

// Run runs every worker until Duration has passed (or ctx ends) and waits
// for their last operations.
func (w *Workload) Run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	all := w.all()
	for i := range w.cfg.Workers {
		endpoints := all
		if w.cfg.PinnedEvery > 0 && i%w.cfg.PinnedEvery == w.cfg.PinnedEvery-1 {
			endpoints = []string{all[(i/w.cfg.PinnedEvery)%len(all)]}
		}
		c, err := client.New(w.clientConfig(endpoints))
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		wg.Go(func() {
			defer c.Close()
			w.registerWorker(ctx, i, c)
		})
	}
	if w.cfg.DurableEvery > 0 {
		c, err := client.New(w.clientConfig(all))
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		wg.Go(func() {
			defer c.Close()
			w.durableWorker(ctx, c)
		})
	}
	wg.Wait()
	return nil
}

func (w *Workload) all() []string {
	var out []string
	for _, n := range w.names {
		out = append(out, w.cfg.Endpoints[n])
	}
	return out
}

func (w *Workload) clientConfig(endpoints []string) client.Config {
	cc := w.cfg.Client
	cc.Endpoints = endpoints
	return cc
}

// opCtx bounds one operation. Operations started before the run's end run
// to their own deadline, so the history never holds ops cut short by it.
func (w *Workload) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), w.cfg.OpTimeout)
}

// registerWorker is one client of the register workload.
func (w *Workload) registerWorker(ctx context.Context, id int, c *client.Client) {
	rng := rand.New(rand.NewPCG(w.cfg.Seed, uint64(id)+1))
	group := id / w.cfg.GroupSize
	seen := map[string]*string{} // key -> last value this worker saw (nil: absent)
	seq := 0
	for n := 0; n < w.cfg.MaxOps && ctx.Err() == nil; n++ {
		key, p := w.keys.take(group)
		r := rng.IntN(100)
		switch {
		case r < 45:
			w.get(id, c, key, p, seen)
		case r < 70:
			seq++
			v := fmt.Sprintf("%d-%d", id, seq)
			if w.put(id, c, key, p, v) == history.OutcomeOK {
				seen[key] = &v
			}
		case r < 90:
			seq++
			w.cas(id, c, key, p, seen, fmt.Sprintf("%d-%d", id, seq))
		default:
			node := w.names[rng.IntN(len(w.names))]
			w.eventualGet(id, w.node[node], node, key, p)
		}
	}
}

func (w *Workload) get(id int, c *client.Client, key string, p int, seen map[string]*string) {
	op := w.rec.Begin(id, key, history.KindGet)
	op.Partition = p
	ctx, cancel := w.opCtx()
	kv, err := c.Get(ctx, []byte(key))
	cancel()
	fillRead(op, kv, err)
	w.rec.End(op, history.Classify(op.Kind, err), errIfFailed(err))
	if op.Outcome == history.OutcomeOK {
		seen[key] = valuePtr(op.Found, op.Out)
	}
}

func (w *Workload) eventualGet(id int, c *client.Client, node, key string, p int) {
	op := w.rec.Begin(id, key, history.KindEventualGet)
	op.Partition, op.Node = p, node
	ctx, cancel := w.opCtx()
	kv, err := c.Get(ctx, []byte(key), client.WithConsistency(client.Eventual))
	cancel()
	fillRead(op, kv, err)
	w.rec.End(op, history.Classify(op.Kind, err), errIfFailed(err))
}

func (w *Workload) put(id int, c *client.Client, key string, p int, value string) history.Outcome {
	op := w.rec.Begin(id, key, history.KindPut)
	op.Partition, op.Value = p, value
	ctx, cancel := w.opCtx()
	ver, err := c.Put(ctx, []byte(key), []byte(value))
	cancel()
	op.Version = ver
	w.rec.End(op, history.Classify(op.Kind, err), err)
	return op.Outcome
}

func (w *Workload) cas(id int, c *client.Client, key string, p int, seen map[string]*string, value string) {
	op := w.rec.Begin(id, key, history.KindCAS)
	op.Partition, op.Value = p, value
	cond := client.IfAbsent()
	if v := seen[key]; v != nil {
		op.Expect = *v
		cond = client.IfValue([]byte(*v))
	} else {
		op.ExpectAbsent = true
	}
	ctx, cancel := w.opCtx()
	res, err := c.CompareAndSwap(ctx, []byte(key), cond, []byte(value))
	cancel()
	if err == nil {
		op.Succeeded, op.Version = res.Succeeded, res.Version
		if !res.Succeeded {
			op.CurExists, op.CurValue, op.Version = res.CurrentExists, string(res.CurrentValue), res.CurrentVersion
		}
	}
	w.rec.End(op, history.Classify(op.Kind, err), err)
	switch {
	case err != nil:
	case res.Succeeded:
		seen[key] = valuePtr(true, value)
	default:
		seen[key] = valuePtr(op.CurExists, op.CurValue)
	}
}

// durableWorker writes write-once keys round-robin over the partitions.
func (w *Workload) durableWorker(ctx context.Context, c *client.Client) {
	id := w.DurableClient()
	tick := time.NewTicker(w.cfg.DurableEvery)
	defer tick.Stop()
	for i := 0; i < w.cfg.MaxOps && ctx.Err() == nil; i++ {
		p := i % w.ks.Partitions()
		key := w.ks.Key("d/", p, i)
		w.keys.record(key)
		w.put(id, c, key, p, fmt.Sprintf("d-%d", i))
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// fillRead copies a read's answer into op.
func fillRead(op *history.Op, kv client.KV, err error) {
	if err != nil {
		return
	}
	op.Found, op.Out, op.Version = true, string(kv.Value), kv.Version
	op.ServedBy, op.Leader, op.Applied = kv.Receipt.ServedBy, kv.Receipt.Leader, kv.Receipt.AppliedIndex
	if int(kv.Receipt.Partition) != op.Partition && op.Partition >= 0 {
		op.Err = fmt.Sprintf("harness: receipt names partition %d, the keyspace says %d", kv.Receipt.Partition, op.Partition)
	}
}

// errIfFailed drops ErrNotFound: for a read it is an answer, not an error.
func errIfFailed(err error) error {
	if errors.Is(err, client.ErrNotFound) {
		return nil
	}
	return err
}

func valuePtr(found bool, v string) *string {
	if !found {
		return nil
	}
	return &v
}
