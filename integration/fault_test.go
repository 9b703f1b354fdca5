package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/partition"
)

// TestKillOneNode kills -9 the node that leads the most partitions under a
// running workload: writes and strong reads through a client that knows
// every node keep succeeding, gossip reports the node dead, and the node
// catches up after a restart.
func TestKillOneNode(t *testing.T) {
	c := newCluster(t, 3)
	cl := c.newClient(nil)
	victim := c.busiestLeader()
	var survivors []int
	for i := range c.nodes {
		if i != victim {
			survivors = append(survivors, i)
		}
	}
	name := c.nodes[victim].name

	w := startWorkload(t, cl, "fo")
	w.waitOps(t, 40, 30*time.Second)
	killedAt := time.Now()
	c.kill9(victim)

	// Gossip declares the node dead; kvctl on a survivor shows it.
	var members []map[string]any
	var deadAfter time.Duration
	detected := poll(30*time.Second, 200*time.Millisecond, func() bool {
		members = nil
		r := c.kvctlAt(c.endpoints(survivors...), "-o", "json", "members")
		if r.code != 0 || decodeOne(r.stdout, &members) != nil {
			return false
		}
		for _, m := range members {
			if m["name"] == name && m["status"] == "dead" {
				deadAfter = time.Since(killedAt)
				return true
			}
		}
		return false
	})
	switch {
	case !detected:
		t.Errorf("kvctl members on a survivor does not show %s dead 30 s after kill -9: %v", name, members)
	case deadAfter > 10*time.Second:
		t.Errorf("kvctl members showed %s dead only %v after kill -9; want within 10 s", name, deadAfter.Round(time.Millisecond))
	default:
		t.Logf("dead detection: kvctl members showed %s dead %v after kill -9", name, deadAfter.Round(time.Millisecond))
	}

	// Keep going well past the failover, then judge the workload.
	w.waitOps(t, w.count()+40, 60*time.Second)
	w.stop()
	t.Logf("failover: %d operations, longest gap between successes %v, slowest operation %v (client retries included)",
		w.count(), w.maxGap.Round(time.Millisecond), w.maxLatency.Round(time.Millisecond))
	for _, err := range w.errors() {
		t.Errorf("workload operation failed across the kill: %v", err)
	}
	if w.maxLatency > 8*time.Second {
		t.Errorf("an operation took %v across the failover; want every one within a few seconds", w.maxLatency.Round(time.Millisecond))
	}

	// Restarted, the node catches up: its own replicas serve every write
	// acknowledged while it was down.
	var whileDown []string
	latest := w.latest()
	for k, a := range latest {
		if a.at.After(killedAt) {
			whileDown = append(whileDown, k)
		}
	}
	if len(whileDown) == 0 {
		t.Fatal("no write was acknowledged while the node was down")
	}
	c.restart(victim)
	back := c.pinnedClient(victim)
	ctx := ctxFor(t, 2*time.Minute)
	for _, k := range whileDown {
		want := latest[k].value
		var kv client.KV
		var err error
		ok := poll(30*time.Second, 100*time.Millisecond, func() bool {
			kv, err = back.Get(ctx, []byte(k), client.WithConsistency(client.Eventual))
			return err == nil && kv.Receipt.ServedBy == name && bytes.Equal(kv.Value, want)
		})
		if !ok {
			t.Errorf("restarted %s: eventual read of %s = %q (receipt %+v, err %v); want %q served by %s itself",
				name, k, kv.Value, kv.Receipt, err, want, name)
		}
	}
	t.Logf("restarted %s serves all %d keys written while it was down", name, len(whileDown))
	c.waitFormed(formTimeout)
	for _, k := range whileDown {
		kv, err := back.Get(ctx, []byte(k))
		if err != nil || !bytes.Equal(kv.Value, latest[k].value) {
			t.Errorf("strong read of %s through the restarted %s = %q, %v; want %q", k, name, kv.Value, err, latest[k].value)
		}
	}
}

// busiestLeader returns the index of the node that leads the most
// partitions.
func (c *cluster) busiestLeader() int {
	c.t.Helper()
	counts := c.leaderCounts()
	best := 0
	for i, p := range c.nodes {
		if counts[p.name] > counts[c.nodes[best].name] {
			best = i
		}
	}
	return best
}

// leaderCounts returns how many partitions each node leads, by the
// Partitions call (partitions without a leader count under "").
func (c *cluster) leaderCounts() map[string]int {
	c.t.Helper()
	cl := c.newClient(nil)
	resp, err := cl.Partitions(ctxFor(c.t, 10*time.Second))
	if err != nil {
		c.t.Fatalf("partitions: %v", err)
	}
	counts := map[string]int{}
	for _, p := range resp.GetPartitions() {
		counts[p.GetLeader()]++
	}
	return counts
}

// TestFullRestartDurability writes keys, restarts the whole cluster, and
// reads every acknowledged key back strongly: once after SIGTERM of every
// node, once after kill -9 of every node in the middle of the writes.
func TestFullRestartDurability(t *testing.T) {
	c := newCluster(t, 3)
	acked := &sync.Map{} // key -> value, acknowledged writes of both phases

	t.Run("sigterm", func(t *testing.T) {
		cl := c.newClient(nil)
		n, failed := writeKeys(t, cl, "dur-a", 500, acked, nil)
		if failed > 0 || n != 500 {
			t.Fatalf("%d of 500 writes acknowledged, %d failed, on a healthy cluster", n, failed)
		}
		c.stopAll()
		c.restartAll()
		c.waitFormed(formTimeout)
		checkAcked(t, c.newClient(nil), acked)
	})

	t.Run("kill -9", func(t *testing.T) {
		cl := c.newClient(func(cfg *client.Config) { cfg.MaxAttempts = 3 })
		var killed atomic.Bool
		done := make(chan struct{})
		var n, failed int
		go func() {
			defer close(done)
			n, failed = writeKeys(t, cl, "dur-b", 500, acked, &killed)
		}()
		// Kill every node at once while writes are in flight.
		if !poll(60*time.Second, 10*time.Millisecond, func() bool { return countPrefix(acked, "dur-b") >= 250 }) {
			t.Fatalf("fewer than 250 writes acknowledged within 60 s")
		}
		killed.Store(true)
		c.kill9All()
		<-done
		t.Logf("kill -9 of all nodes after %d acknowledged writes; %d writes failed or were cut short", n, failed)
		c.restartAll()
		c.waitFormed(formTimeout)
		checkAcked(t, c.newClient(nil), acked)
	})
}

// writeKeys writes count keys prefix-000... with 8 writers and records the
// acknowledged ones in acked. Writers stop early once stop is set. It
// returns how many writes were acknowledged and how many failed.
func writeKeys(t *testing.T, cl *client.Client, prefix string, count int, acked *sync.Map, stop *atomic.Bool) (n, failed int) {
	t.Helper()
	var next, okCount, failCount atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range count {
				i := int(next.Add(1)) - 1
				if i >= count || (stop != nil && stop.Load()) {
					return
				}
				key := fmt.Sprintf("%s-%03d", prefix, i)
				value := fmt.Appendf(nil, "%s=%016x", key, rand.Uint64())
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				_, err := cl.Put(ctx, []byte(key), value)
				cancel()
				if err != nil {
					failCount.Add(1)
					if stop == nil {
						t.Errorf("put %s: %v", key, err)
					}
					continue
				}
				acked.Store(key, value)
				okCount.Add(1)
			}
		})
	}
	wg.Wait()
	return int(okCount.Load()), int(failCount.Load())
}

func countPrefix(m *sync.Map, prefix string) int {
	n := 0
	m.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), prefix) {
			n++
		}
		return true
	})
	return n
}

// checkAcked reads every acknowledged key strongly and compares its value.
func checkAcked(t *testing.T, cl *client.Client, acked *sync.Map) {
	t.Helper()
	type kv struct {
		key   string
		value []byte
	}
	var all []kv
	acked.Range(func(k, v any) bool {
		all = append(all, kv{k.(string), v.([]byte)})
		return true
	})
	var bad atomic.Int64
	var wg sync.WaitGroup
	work := make(chan kv)
	for range 8 {
		wg.Go(func() {
			for e := range work {
				ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
				got, err := cl.Get(ctx, []byte(e.key))
				cancel()
				if err != nil || !bytes.Equal(got.Value, e.value) {
					if bad.Add(1) <= 10 {
						t.Errorf("acknowledged %s = %q; read back %q, %v", e.key, e.value, got.Value, err)
					}
				}
			}
		})
	}
	for _, e := range all {
		work <- e
	}
	close(work)
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Errorf("%d of %d acknowledged keys did not read back", n, len(all))
	} else {
		t.Logf("all %d acknowledged keys read back strongly", len(all))
	}
}

// TestQuorumLoss kills -9 two of three nodes: strong reads and writes
// through the survivor fail with Unavailable in bounded time, eventual
// reads still answer, and a write that failed as Unavailable was not
// applied.
func TestQuorumLoss(t *testing.T) {
	c := newCluster(t, 3)
	// The survivor leads some partitions (balancing may still be moving
	// leaders), so that both a partition it led and one it did not are
	// tried.
	survivor := c.busiestLeader()
	var victims []int
	for i := range c.nodes {
		if i != survivor {
			victims = append(victims, i)
		}
	}
	name := c.nodes[survivor].name
	ctx := ctxFor(t, 3*time.Minute)
	cl := c.newClient(nil)

	// One key led by the survivor, one led by a node about to die.
	ring, _ := partition.NewRing(16)
	parts, err := cl.Partitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaderOf := map[partition.ID]string{}
	for _, p := range parts.GetPartitions() {
		leaderOf[partition.ID(p.GetId())] = p.GetLeader()
	}
	var keys []string
	for _, wantSurvivor := range []bool{true, false} {
		for i := range 1000 {
			k := fmt.Sprintf("q-%d", i)
			if (leaderOf[ring.Of([]byte(k))] == name) == wantSurvivor {
				keys = append(keys, k)
				break
			}
		}
	}
	if len(keys) != 2 {
		t.Logf("%s leads all or none of the partitions (%v); the keys' leaders are not mixed", name, leaderOf)
		keys = []string{"q-0", "q-1"}
	}
	for _, k := range keys {
		if _, err := cl.Put(ctx, []byte(k), []byte("before")); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}

	// The survivor must have applied them for its eventual reads to see
	// them later: a commit needs only two of the three replicas.
	pinned := c.pinnedClient(survivor)
	for _, k := range keys {
		if !poll(10*time.Second, 50*time.Millisecond, func() bool {
			kv, err := pinned.Get(ctx, []byte(k), client.WithConsistency(client.Eventual))
			return err == nil && string(kv.Value) == "before"
		}) {
			t.Fatalf("%s did not apply %s within 10 s", name, k)
		}
	}

	c.kill9(victims[0])
	c.kill9(victims[1])
	killedAt := time.Now()

	// Every operation runs at once, each bounded by a 15 s context. With
	// two attempts, each attempt is bounded by the client's RequestTimeout
	// (3 s) and the node's --request-timeout (3 s). With one attempt and a
	// client timeout above the node's, the node itself must answer.
	two := c.newClient(func(cfg *client.Config) { cfg.MaxAttempts = 2 }, c.endpoints(survivor)...)
	one := c.newClient(func(cfg *client.Config) {
		cfg.MaxAttempts = 1
		cfg.RequestTimeout = 12 * time.Second
	}, c.endpoints(survivor)...)
	type op struct {
		name  string
		key   string
		write bool
		bound time.Duration
		f     func(ctx context.Context) error
	}
	var ops []op
	for _, k := range keys {
		for _, cc := range []struct {
			name  string
			cl    *client.Client
			bound time.Duration
		}{{"2 attempts", two, 10 * time.Second}, {"1 attempt", one, serverRequestTimeout + 2*time.Second}} {
			ops = append(ops,
				op{fmt.Sprintf("strong get %s (%s)", k, cc.name), k, false, cc.bound, func(ctx context.Context) error {
					_, err := cc.cl.Get(ctx, []byte(k))
					return err
				}},
				op{fmt.Sprintf("put %s (%s)", k, cc.name), k, true, cc.bound, func(ctx context.Context) error {
					_, err := cc.cl.Put(ctx, []byte(k), []byte("lost"))
					return err
				}})
		}
	}
	errs := make([]error, len(ops))
	took := make([]time.Duration, len(ops))
	var wg sync.WaitGroup
	for i, o := range ops {
		wg.Go(func() { took[i], errs[i] = timed(ctx, o.f) })
	}
	wg.Wait()
	// Whether every write of "lost" to the key failed as ErrUnavailable,
	// which promises it was not applied.
	allUnavailable := map[string]bool{keys[0]: true, keys[1]: true}
	for i, o := range ops {
		err, elapsed := errs[i], took[i].Round(time.Millisecond)
		t.Logf("without quorum: %s: %v after %v", o.name, err, elapsed)
		ok := errors.Is(err, client.ErrUnavailable)
		if o.write {
			ok = ok || errors.Is(err, client.ErrOutcomeUnknown)
			allUnavailable[o.key] = allUnavailable[o.key] && errors.Is(err, client.ErrUnavailable)
		}
		if !ok || took[i] > o.bound {
			t.Errorf("without quorum: %s: %v after %v; want ErrUnavailable (or ErrOutcomeUnknown for a write) within %v", o.name, err, elapsed, o.bound)
		}
	}

	// kvctl says so too, within its --timeout (plus process start-up).
	start := time.Now()
	r := c.kvctlAt(c.endpoints(survivor), "--timeout", "4s", "get", keys[0])
	if r.code != 1 || !strings.Contains(r.stderr, "unavailable") || time.Since(start) > 8*time.Second {
		t.Errorf("kvctl get without quorum: %v after %v; want exit 1 saying unavailable", r, time.Since(start).Round(time.Millisecond))
	}

	// Eventual reads degrade gracefully: the survivor answers from its state.
	for _, k := range keys {
		kv, err := pinned.Get(ctx, []byte(k), client.WithConsistency(client.Eventual))
		if err != nil || string(kv.Value) != "before" || kv.Receipt.ServedBy != name || kv.Receipt.Leader {
			t.Errorf("eventual get %s on the survivor without quorum = %q (receipt %+v), %v; want \"before\" served by %s, not as leader",
				k, kv.Value, kv.Receipt, err, name)
		}
	}
	if r := c.kvctlAt(c.endpoints(survivor), "get", keys[1], "--consistency", "eventual"); r.code != 0 || r.stdout != "before\n" {
		t.Errorf("kvctl eventual get without quorum: %v; want \"before\"", r)
	}
	t.Logf("quorum lost at %s; all checks done %v later", killedAt.Format(time.TimeOnly), time.Since(killedAt).Round(time.Millisecond))

	// With quorum back, a write reported Unavailable was not applied.
	c.restart(victims[0])
	c.restart(victims[1])
	c.waitFormed(formTimeout)
	for _, k := range keys {
		kv, err := cl.Get(ctx, []byte(k))
		if err != nil {
			t.Errorf("strong get %s after quorum returned: %v", k, err)
			continue
		}
		if allUnavailable[k] && string(kv.Value) != "before" {
			t.Errorf("%s = %q after quorum returned, but every write of \"lost\" failed with ErrUnavailable (certainly not applied)", k, kv.Value)
		}
	}
}

// timed runs f with a 15 s context and returns how long it took.
func timed(ctx context.Context, f func(context.Context) error) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	return time.Since(start), err
}
