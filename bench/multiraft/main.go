// Command multiraftbench measures what a Raft put costs in two engines
// under the same load, on three in-process nodes with real Pebble stores
// and loopback TCP:
//
//   - hashicorp: RingKV's own replicas (package replica: one hashicorp/raft
//     group per partition with its goroutines, the heartbeat channel, the
//     Pebble log store), wired as kvd wires them;
//   - multiraft: a prototype node-level engine (engine.go): every group a
//     go.etcd.io/raft/v3 RawNode, one scheduler per node handling all
//     groups with work ready in one pass, one synced log write and one
//     frame per peer per pass.
//
// Both apply through raftfsm onto the same Pebble. The load is closed-loop
// puts with dedup sessions, as kvctl bench sends them, but proposed in
// process: no client protocol, so the numbers are the Raft, storage and
// apply cost alone. It prints puts/s, latency, the process's CPU per put
// (load generator included) and puts per Raft entry. With several engines
// or rounds it runs each measurement in a fresh child process, alternating
// the engines' order every round (ABBA), and prints their means. See
// README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ringkv/ringkv/internal/seqtrack"
	"github.com/ringkv/ringkv/node"
	"github.com/ringkv/ringkv/partition"
	"github.com/ringkv/ringkv/raftfsm"
)

type options struct {
	engines    []string
	rounds     int
	partitions int
	clients    int
	duration   time.Duration
	warmup     time.Duration
	keys       int
	valueSize  int
	dir        string
	json       bool
	cpuProfile string
}

// result is one measured run.
type result struct {
	Engine        string  `json:"engine"`
	Partitions    int     `json:"partitions"`
	Clients       int     `json:"clients"`
	Puts          int64   `json:"puts"`
	Errors        int64   `json:"errors"`
	Seconds       float64 `json:"duration_s"`
	PutsPerSec    float64 `json:"ops_per_sec"`
	P50ms         float64 `json:"p50_ms"`
	P99ms         float64 `json:"p99_ms"`
	CPUPerPutUS   float64 `json:"cpu_us_per_put"`
	PutsPerEntry  float64 `json:"puts_per_entry"`
	PutsPerSync   float64 `json:"puts_per_sync,omitempty"` // multiraft: puts per synced log batch, over the three nodes (Pebble may cover several batches with one fsync)
	Leaders       [3]int  `json:"leaders"`
	SetupSeconds  float64 `json:"setup_s"`
	FirstErrorMsg string  `json:"first_error,omitempty"`
}

func main() {
	var o options
	engines := flag.String("engine", "multiraft", "engine: multiraft (the prototype) or hashicorp (RingKV's replicas); a comma-separated list compares them")
	flag.IntVar(&o.rounds, "rounds", 1, "rounds of every engine, each in its own process, the order reversed every round")
	flag.IntVar(&o.partitions, "partitions", 64, "Raft groups (partitions), each replicated on all three nodes")
	flag.IntVar(&o.clients, "clients", 64, "concurrent closed-loop writers")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured time")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before the measured time")
	flag.IntVar(&o.keys, "keys", 10000, "distinct keys")
	flag.IntVar(&o.valueSize, "value-size", 100, "value bytes")
	flag.StringVar(&o.dir, "dir", "", "data directory of a single run (default: a new temporary one, removed at exit)")
	flag.BoolVar(&o.json, "json", false, "print the result of a single run as one JSON object")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of a single run's measured time to this file")
	flag.Parse()
	o.engines = strings.Split(*engines, ",")
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(node.DefaultGOGC) // kvd's collector target, as kvd sets it
	}
	var err error
	if len(o.engines) == 1 && o.rounds == 1 {
		err = run(o)
	} else {
		err = compare(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "multiraftbench:", err)
		os.Exit(1)
	}
}

// run measures one engine in this process.
func run(o options) error {
	if err := o.validate(); err != nil {
		return err
	}
	engine := o.engines[0]
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "multiraftbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	cfg := clusterConfig{Dir: dir, Partitions: o.partitions}
	start := time.Now()
	var c cluster
	var err error
	switch engine {
	case "multiraft":
		c, err = newMultiraft(cfg)
	case "hashicorp":
		c, err = newHashicorp(cfg)
	}
	if err != nil {
		return err
	}
	setup := time.Since(start)
	r, err := measure(c, o)
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	r.SetupSeconds = setup.Seconds()
	if o.json {
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	r.print(os.Stdout)
	return nil
}

// print writes r as one line (and its first error, if any).
func (r result) print(w io.Writer) {
	fmt.Fprintf(w, "%s, %d partitions, %d clients: %.0f puts/s, p50 %.2f ms, p99 %.2f ms, CPU %.1f us per put, %.2f puts per entry",
		r.Engine, r.Partitions, r.Clients, r.PutsPerSec, r.P50ms, r.P99ms, r.CPUPerPutUS, r.PutsPerEntry)
	if r.PutsPerSync > 0 {
		fmt.Fprintf(w, ", %.2f puts per synced log batch", r.PutsPerSync)
	}
	fmt.Fprintf(w, ", %d errors, leaders %v (setup %.1f s)\n", r.Errors, r.Leaders, r.SetupSeconds)
	if r.FirstErrorMsg != "" {
		fmt.Fprintln(w, "first error:", r.FirstErrorMsg)
	}
}

func (o options) validate() error {
	for _, e := range o.engines {
		if e != "multiraft" && e != "hashicorp" {
			return fmt.Errorf("--engine %q: want multiraft, hashicorp or a comma-separated list of them", e)
		}
	}
	single := len(o.engines) == 1 && o.rounds == 1
	switch {
	case o.rounds < 1 || o.rounds > 20:
		return fmt.Errorf("--rounds %d: want 1..20", o.rounds)
	case !single && (o.dir != "" || o.json || o.cpuProfile != ""):
		return errors.New("--dir, --json and --cpuprofile apply to a single run (one engine, one round); each run of a comparison gets its own temporary directory")
	case o.partitions < 1 || o.partitions > 4096:
		return fmt.Errorf("--partitions %d: want 1..4096", o.partitions)
	case o.clients < 1 || o.clients > 4096:
		return fmt.Errorf("--clients %d: want 1..4096", o.clients)
	case o.duration <= 0 || o.duration > 10*time.Minute:
		return fmt.Errorf("--duration %v: want more than 0 and at most 10m", o.duration)
	case o.warmup < 0 || o.warmup > 10*time.Minute:
		return fmt.Errorf("--warmup %v: want 0..10m", o.warmup)
	case o.keys < 1:
		return fmt.Errorf("--keys %d: want at least 1", o.keys)
	case o.valueSize < 0 || o.valueSize > 1<<20:
		return fmt.Errorf("--value-size %d: want 0..1048576", o.valueSize)
	}
	return nil
}

// measure runs the warm-up and then the measured load.
func measure(c cluster, o options) (result, error) {
	ring, err := ringOf(o.partitions)
	if err != nil {
		return result{}, err
	}
	w := &writers{c: c, ring: ring, o: o}
	w.start()
	defer w.stop()
	if o.warmup > 0 {
		time.Sleep(o.warmup) // the writers run meanwhile; nothing is polled
	}
	applied0, syncs0 := c.Applied(), syncsOf(c)
	cpu0 := cpuTime()
	stopProfile, err := startProfile(o.cpuProfile)
	if err != nil {
		return result{}, err
	}
	w.record(true)
	t0 := time.Now()
	time.Sleep(o.duration)
	w.record(false)
	stopProfile()
	elapsed := time.Since(t0)
	cpu := cpuTime() - cpu0
	entries, syncs := c.Applied()-applied0, syncsOf(c)-syncs0
	lat, errs, first := w.collect()
	r := result{
		Engine:     o.engines[0],
		Partitions: o.partitions,
		Clients:    o.clients,
		Puts:       int64(len(lat)),
		Errors:     errs,
		Seconds:    elapsed.Seconds(),
		Leaders:    c.Leaders(),
	}
	if first != nil {
		r.FirstErrorMsg = first.Error()
	}
	if len(lat) == 0 {
		return r, fmt.Errorf("no put succeeded in %v (%d errors; first: %v)", o.duration, errs, first)
	}
	slices.Sort(lat)
	r.PutsPerSec = float64(len(lat)) / elapsed.Seconds()
	r.P50ms = float64(lat[len(lat)/2]) / 1e6
	r.P99ms = float64(lat[len(lat)*99/100]) / 1e6
	r.CPUPerPutUS = float64(cpu.Microseconds()) / float64(len(lat))
	if entries > 0 {
		r.PutsPerEntry = float64(len(lat)) / float64(entries)
	}
	if syncs > 0 {
		r.PutsPerSync = 3 * float64(len(lat)) / float64(syncs)
	}
	return r, nil
}

// syncsOf returns the synced log batches c's nodes committed so far, or 0 if c
// does not count them (only the multiraft engine does).
func syncsOf(c cluster) uint64 {
	if sc, ok := c.(interface{ Syncs() uint64 }); ok {
		return sc.Syncs()
	}
	return 0
}

// writers are the closed-loop clients: they share one dedup session, and
// each has one put in flight at a time.
type writers struct {
	c    cluster
	ring partition.Ring
	o    options

	recording atomic.Bool
	quit      chan struct{}
	wg        sync.WaitGroup

	mu    sync.Mutex
	lat   []int64 // nanoseconds of each recorded put, merged at exit
	errs  int64
	first error
}

func (w *writers) start() {
	w.quit = make(chan struct{})
	value := make([]byte, w.o.valueSize)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	s := newSession()
	for range w.o.clients {
		w.wg.Add(1)
		go w.client(s, value)
	}
}

// session numbers the writes of all clients as one RingKV client object
// does (kvctl bench shares one among its clients): one client id, and the
// client's own sequence tracker.
type session struct {
	id uint64
	*seqtrack.Tracker
}

func newSession() session { return session{id: rand.Uint64() | 1, Tracker: seqtrack.New()} }

func (w *writers) client(s session, value []byte) {
	defer w.wg.Done()
	var lat []int64
	var errs int64
	var first error
	defer func() {
		w.mu.Lock()
		w.lat = append(w.lat, lat...)
		w.errs += errs
		if w.first == nil {
			w.first = first
		}
		w.mu.Unlock()
	}()
	for {
		select {
		case <-w.quit:
			return
		default:
		}
		key := fmt.Appendf(nil, "bench-%08d", rand.IntN(w.o.keys))
		seq, ack := s.Begin()
		cmd := raftfsm.Command{Kind: raftfsm.KindPut, Key: key, Value: value, ClientID: s.id, Seq: seq, AckBelow: ack}
		on := w.recording.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t := time.Now()
		err := w.c.Put(ctx, uint32(w.ring.Of(key)), cmd)
		d := time.Since(t)
		cancel()
		s.Finish(seq)
		if !on || !w.recording.Load() {
			continue
		}
		if err != nil {
			errs++
			if first == nil {
				first = err
			}
			continue
		}
		lat = append(lat, d.Nanoseconds())
	}
}

func (w *writers) record(on bool) { w.recording.Store(on) }

// stop ends every client and waits for them.
func (w *writers) stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	w.wg.Wait()
}

// collect stops the clients and returns what they recorded.
func (w *writers) collect() (lat []int64, errs int64, first error) {
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lat, w.errs, w.first
}

// startProfile starts a CPU profile into path ("": none) and returns what
// stops it.
func startProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// cpuTime is the user and system CPU this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
