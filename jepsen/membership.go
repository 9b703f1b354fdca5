package jepsen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/jepsen/cluster"
	"github.com/ringkv/ringkv/jepsen/history"
	"github.com/ringkv/ringkv/jepsen/nemesis"
	"github.com/ringkv/ringkv/jepsen/workload"
)

// What a membership fault does depends on the cluster at the time; the
// choice is pure (chooseMember) so it can be tested.

// memberState is what chooseMember looks at.
type memberState struct {
	// Eligible counts the active nodes that may hold replicas: neither
	// draining nor removed.
	Eligible int
	// Spares counts the spare nodes not started yet.
	Spares   int
	Replicas int
	// Draining counts drains not undone yet.
	Draining int
	// TimeLeft is the run's remaining workload time.
	TimeLeft time.Duration
}

// Membership actions.
const (
	actAdd    = "add"
	actDrain  = "drain"
	actRemove = "remove"
	actSkip   = "skip"
)

// memberPlan is what a membership fault will do: start a spare first
// (AddSpare), then Action.
type memberPlan struct {
	AddSpare bool
	Action   string
	Why      string
}

// removeNeeds is the run time a removal must have left: isolation, the
// removal, replacing the replicas and the checks after the heal take 20-60 s
// (the removal runs on past the run's end if it must).
const removeNeeds = 20 * time.Second

// chooseMember decides what fault k does in state s. Every action keeps R
// eligible nodes, so that placement can always keep R replicas: a drain or
// a removal that would leave fewer starts a spare first, and without one
// falls back to another action.
func chooseMember(k nemesis.Kind, s memberState) memberPlan {
	drain := func(why string) memberPlan {
		switch {
		case s.Draining > 0 && s.Spares > 0:
			return memberPlan{Action: actAdd, Why: strings.TrimPrefix(why+"; a drain is pending", "; ")}
		case s.Draining > 0:
			return memberPlan{Action: actSkip, Why: strings.TrimPrefix(why+"; a drain is pending", "; ")}
		case s.Eligible-1 >= s.Replicas:
			return memberPlan{Action: actDrain, Why: why}
		case s.Spares > 0:
			return memberPlan{AddSpare: true, Action: actDrain, Why: strings.TrimPrefix(why+"; a spare joins first so that R nodes stay eligible", "; ")}
		}
		return memberPlan{Action: actSkip, Why: strings.TrimPrefix(why+"; draining would leave fewer than R eligible nodes and no spare is left", "; ")}
	}
	add := func(why string) memberPlan {
		if s.Spares > 0 {
			return memberPlan{Action: actAdd, Why: why}
		}
		return drain(strings.TrimPrefix(why+"; no spare left", "; "))
	}
	switch k {
	case nemesis.MemberAdd:
		return add("")
	case nemesis.MemberDrain:
		return drain("")
	case nemesis.MemberRemove:
		switch {
		case s.TimeLeft < removeNeeds:
			return add(fmt.Sprintf("a removal needs %v of run left", removeNeeds))
		case s.Eligible-1 >= s.Replicas:
			return memberPlan{Action: actRemove}
		case s.Spares > 0:
			return memberPlan{AddSpare: true, Action: actRemove, Why: "a spare joins first so that R replicas can be kept"}
		}
		return drain("removing would leave fewer than R eligible nodes and no spare is left")
	}
	return memberPlan{Action: actSkip, Why: fmt.Sprintf("%s is no membership fault", k)}
}

// memberNemesis is the membership hook: it adds spares, drains and
// undrains, and removes isolated nodes through the real kvd operations
// (the Cluster API kvctl uses), and records what it did and the reads that
// check a removed node (membership.json, and operations of its own client
// in the history).
type memberNemesis struct {
	c        *cluster.Cluster
	rec      *history.Recorder
	ks       *workload.Keyspace
	cc       client.Config
	clientID int
	replicas int
	runEnd   time.Time
	log      *slog.Logger
	http     *http.Client

	mu       sync.Mutex
	draining map[string]bool
	removed  map[string]bool
	record   history.Membership
	seq      int
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newMemberNemesis(c *cluster.Cluster, rec *history.Recorder, ks *workload.Keyspace, cc client.Config, clientID, replicas int, runEnd time.Time, log *slog.Logger) *memberNemesis {
	cc.Endpoints = nil
	return &memberNemesis{c: c, rec: rec, ks: ks, cc: cc, clientID: clientID, replicas: replicas, runEnd: runEnd, log: log,
		http: &http.Client{Timeout: 5 * time.Second}, draining: map[string]bool{}, removed: map[string]bool{}, stop: make(chan struct{})}
}

// Heal does nothing: the runner heals the network; drains are undone on
// their own timer, and removals are final.
func (h *memberNemesis) Heal(context.Context) error { return nil }

// Finish undoes pending drains at once and waits for them; it returns the
// record.
func (h *memberNemesis) Finish() *history.Membership {
	h.stopOnce.Do(func() { close(h.stop) })
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.record
	return &out
}

func (h *memberNemesis) state() memberState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return memberState{Eligible: len(h.eligibleLocked(nil)), Spares: h.c.SparesLeft(), Replicas: h.replicas,
		Draining: len(h.draining), TimeLeft: time.Until(h.runEnd)}
}

// eligibleLocked lists the active nodes neither draining nor removed, minus
// exclude.
func (h *memberNemesis) eligibleLocked(exclude []int) []int {
	var out []int
	for _, i := range h.c.Active() {
		name := h.c.NodeName(i)
		if !h.draining[name] && !h.removed[name] && !slices.Contains(exclude, i) {
			out = append(out, i)
		}
	}
	return out
}

func (h *memberNemesis) act(a history.MemberAction) {
	h.mu.Lock()
	h.record.Actions = append(h.record.Actions, a)
	h.mu.Unlock()
}

// ctl is a client whose endpoints are the active nodes except those in
// exclude.
func (h *memberNemesis) ctl(exclude ...int) (*client.Client, error) {
	cc := h.cc
	for _, i := range h.c.Active() {
		if !slices.Contains(exclude, i) {
			cc.Endpoints = append(cc.Endpoints, h.c.Nodes[i].ClientAddr())
		}
	}
	return client.New(cc)
}

// Apply runs one membership fault.
func (h *memberNemesis) Apply(ctx context.Context, f nemesis.Fault) (string, error) {
	plan := chooseMember(f.Kind, h.state())
	rng := rand.New(rand.NewPCG(f.Seed, 0x6d656d))
	var parts []string
	if plan.Why != "" {
		parts = append(parts, "("+plan.Why+")")
	}
	var exclude []int
	if plan.AddSpare || plan.Action == actAdd {
		i, detail, err := h.add(ctx)
		parts = append(parts, detail)
		if err != nil {
			return strings.Join(parts, " "), err
		}
		exclude = append(exclude, i) // a node that just joined holds nothing yet
	}
	var detail string
	var err error
	switch plan.Action {
	case actDrain:
		detail, err = h.drain(ctx, rng, exclude)
	case actRemove:
		detail, err = h.remove(ctx, rng, exclude)
	case actSkip:
		detail = "skipped"
	}
	if detail != "" {
		parts = append(parts, detail)
	}
	return strings.Join(parts, "; "), err
}

// add starts a spare and waits until the cluster's gossip sees it alive.
func (h *memberNemesis) add(ctx context.Context) (int, string, error) {
	a := history.MemberAction{Action: actAdd, Start: h.rec.Now()}
	defer func() { a.End = h.rec.Now(); h.act(a) }()
	i, ok, err := h.c.StartSpare(ctx)
	if !ok {
		a.Err = "no spare left"
		return 0, "no spare left", errors.New(a.Err)
	}
	name := h.c.NodeName(i)
	a.Node = name
	if err != nil {
		a.Err = err.Error()
		return i, "start " + name + " failed", err
	}
	ctl, err := h.ctl(i)
	if err != nil {
		return i, name + " started", err
	}
	defer ctl.Close()
	err = retry(ctx, 30*time.Second, func(ctx context.Context) error {
		ms, err := ctl.Members(ctx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.GetName() == name && m.GetStatus() == "alive" {
				return nil
			}
		}
		return fmt.Errorf("%s is not an alive member yet", name)
	})
	if err != nil {
		a.Err = err.Error()
		return i, name + " started, never joined", err
	}
	a.Detail = fmt.Sprintf("joined after %.1fs", time.Duration(h.rec.Now()-a.Start).Seconds())
	return i, fmt.Sprintf("%s joins (--join, no --bootstrap-expect; alive after %.1fs)", name, time.Duration(h.rec.Now()-a.Start).Seconds()), nil
}

// drain drains a random eligible node and undrains it 15-30 s later, while
// other faults run (or at once when the run ends).
func (h *memberNemesis) drain(ctx context.Context, rng *rand.Rand, exclude []int) (string, error) {
	h.mu.Lock()
	cands := h.eligibleLocked(exclude)
	h.mu.Unlock()
	if len(cands) == 0 {
		return "no node to drain", errors.New("nemesis: no eligible node to drain")
	}
	x := cands[rng.IntN(len(cands))]
	name := h.c.NodeName(x)
	after := 15*time.Second + time.Duration(rng.Int64N(int64(15*time.Second)))
	a := history.MemberAction{Action: actDrain, Node: name, Start: h.rec.Now()}
	ctl, err := h.ctl()
	if err != nil {
		return "", err
	}
	defer ctl.Close()
	err = retry(ctx, 20*time.Second, func(ctx context.Context) error { return ctl.Drain(ctx, name) })
	a.End = h.rec.Now()
	if err != nil {
		a.Err = err.Error()
		h.act(a)
		return "drain " + name + " failed", err
	}
	a.Detail = fmt.Sprintf("undrain after %v", after.Round(time.Second))
	h.act(a)
	h.mu.Lock()
	h.draining[name] = true
	h.mu.Unlock()
	h.wg.Go(func() {
		t := time.NewTimer(after)
		defer t.Stop()
		select {
		case <-t.C:
		case <-h.stop:
		}
		h.undrain(name)
	})
	return fmt.Sprintf("drain %s (undrain in %v)", name, after.Round(time.Second)), nil
}

func (h *memberNemesis) undrain(name string) {
	a := history.MemberAction{Action: "undrain", Node: name, Start: h.rec.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ctl, err := h.ctl()
	if err == nil {
		err = retry(ctx, 90*time.Second, func(ctx context.Context) error { return ctl.Undrain(ctx, name) })
		ctl.Close()
	}
	a.End = h.rec.Now()
	if err != nil {
		a.Err = err.Error()
		h.log.Warn("membership: undrain failed", "node", name, "err", err)
	}
	h.act(a)
	h.mu.Lock()
	delete(h.draining, name)
	h.mu.Unlock()
}

// remove is remove-while-isolated; see nemesis.MemberRemove. It records a
// history.Removal that the checker judges.
func (h *memberNemesis) remove(ctx context.Context, rng *rand.Rand, exclude []int) (string, error) {
	h.mu.Lock()
	cands := h.eligibleLocked(exclude)
	h.seq++
	seq := h.seq
	h.mu.Unlock()
	if len(cands) == 0 {
		return "no node to remove", errors.New("nemesis: no eligible node to remove")
	}
	x := cands[rng.IntN(len(cands))]
	name := h.c.NodeName(x)
	rm := history.Removal{Node: name, Keys: map[int]string{}, Dropped: map[int]int64{}}
	a := history.MemberAction{Action: actRemove, Node: name, Start: h.rec.Now()}
	var steps []string
	defer func() {
		if rm.Err != "" {
			a.Err = rm.Err
		}
		rm.End = h.rec.Now()
		a.End, a.Detail = h.rec.Now(), strings.Join(steps, "; ")
		h.mu.Lock()
		h.record.Removals = append(h.record.Removals, rm)
		h.removed[name] = true
		h.mu.Unlock()
		h.c.Retire(x)
		h.act(a)
	}()
	fail := func(err error) (string, error) {
		rm.Err = err.Error()
		hctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = h.c.HealNetwork(hctx)
		cancel()
		return strings.Join(steps, "; "), err
	}
	ctl, err := h.ctl(x)
	if err != nil {
		return fail(err)
	}
	defer ctl.Close()
	kv := ringkvv1connect.NewKVClient(h.http, "http://"+h.c.Nodes[x].ClientAddr())
	cl := ringkvv1connect.NewClusterClient(h.http, "http://"+h.c.Nodes[x].ClientAddr())

	// The partitions name's replicas belong to, one probe key each, a first
	// value written and read back from name's own replica.
	table, err := partitionTable(ctx, ctl)
	if err != nil {
		return fail(err)
	}
	for _, row := range table {
		if slices.Contains(row.Replicas, name) {
			rm.Partitions = append(rm.Partitions, row.ID)
			rm.Keys[row.ID] = h.ks.Key(fmt.Sprintf("m/%d/", seq), row.ID, 0)
		}
	}
	sort.Ints(rm.Partitions)
	if len(rm.Partitions) == 0 {
		return fail(fmt.Errorf("%s hosts no partition", name))
	}
	value := func(round int) string { return fmt.Sprintf("%s-rm%d-%d", name, seq, round) }
	h.writeProbes(ctx, ctl, rm, value(0))
	_ = retry(ctx, 10*time.Second, func(ctx context.Context) error {
		n := 0
		for _, p := range rm.Partitions {
			if o := h.readVia(ctx, kv, name, rm.Keys[p], p, false); o.ServedBy == name && o.Out == value(0) {
				n++
			}
		}
		if n < len(rm.Partitions) {
			return fmt.Errorf("%s serves the first value of %d of %d probe keys", name, n, len(rm.Partitions))
		}
		return nil
	})

	// Cut it off and remove it through the majority.
	rm.Isolated = h.rec.Now()
	if err := h.c.Isolate(ctx, x); err != nil {
		return fail(fmt.Errorf("isolate %s: %w", name, err))
	}
	var via []string
	err = retry(ctx, 60*time.Second, func(ctx context.Context) error {
		var err error
		via, err = ctl.Remove(ctx, name)
		return err
	})
	if err != nil {
		return fail(fmt.Errorf("kvctl remove %s: %w", name, err))
	}
	rm.Removed = h.rec.Now()
	steps = append(steps, fmt.Sprintf("%s cut off, removed after %.1fs (recorded by %s)", name, secsSince(rm.Isolated, rm.Removed), strings.Join(via, " ")))
	h.writeProbes(ctx, ctl, rm, value(1))

	// Wait until every partition it was in has R voters without it.
	err = retry(ctx, 100*time.Second, func(ctx context.Context) error {
		table, err := partitionTable(ctx, ctl)
		if err != nil {
			return err
		}
		var pending []string
		for _, row := range table {
			if !slices.Contains(rm.Partitions, row.ID) {
				continue
			}
			if row.Leader == "" || slices.Contains(row.Replicas, name) || len(row.Voters) < h.replicas {
				pending = append(pending, fmt.Sprintf("p%d", row.ID))
			}
		}
		if len(pending) > 0 {
			return fmt.Errorf("not replaced yet: %s", strings.Join(pending, " "))
		}
		return nil
	})
	if err != nil {
		return fail(fmt.Errorf("replicas of %s: %w", name, err))
	}
	rm.Replaced = h.rec.Now()
	steps = append(steps, fmt.Sprintf("%d partitions replaced after %.1fs", len(rm.Partitions), secsSince(rm.Removed, rm.Replaced)))
	h.writeProbes(ctx, ctl, rm, value(2))

	// Heal, then watch it learn: poll its own replicas, reading the probe
	// keys through it meanwhile.
	if err := h.c.HealNetwork(ctx); err != nil {
		return fail(fmt.Errorf("heal: %w", err))
	}
	rm.Healed = h.rec.Now()
	_ = retry(ctx, 60*time.Second, func(ctx context.Context) error {
		hosted, err := localPartitions(ctx, cl)
		now := h.rec.Now()
		if err != nil {
			return err
		}
		var still []string
		for _, p := range rm.Partitions {
			if _, done := rm.Dropped[p]; done {
				continue
			}
			if !hosted[p] {
				rm.Dropped[p] = now
				continue
			}
			still = append(still, fmt.Sprintf("p%d", p))
			if o := h.readVia(ctx, kv, name, rm.Keys[p], p, false); o.ServedBy == name {
				rm.ReadsBefore++
				if o.Out != value(2) {
					rm.StaleBefore++
				}
			}
		}
		if len(still) > 0 {
			return fmt.Errorf("%s still hosts %s", name, strings.Join(still, " "))
		}
		return nil
	})
	if len(rm.Dropped) > 0 {
		var last int64
		for _, t := range rm.Dropped {
			last = max(last, t)
		}
		steps = append(steps, fmt.Sprintf("healed; %s dropped %d of %d copies within %.1fs (%d of %d reads it served before were stale)",
			name, len(rm.Dropped), len(rm.Partitions), secsSince(rm.Healed, last), rm.StaleBefore, rm.ReadsBefore))
	} else {
		steps = append(steps, fmt.Sprintf("healed; %s kept every copy for 60s", name))
	}

	// Reads through it, eventual and strong, then once more after a
	// restart, which must not bring the copies back.
	rounds := func(n int) {
		for range n {
			for _, p := range rm.Partitions {
				h.readVia(ctx, kv, name, rm.Keys[p], p, false)
				h.readVia(ctx, kv, name, rm.Keys[p], p, true)
				rm.ReadsAfter += 2
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	rounds(3)
	rm.Restarted = h.rec.Now()
	if err := h.c.RestartGracefully(ctx, x); err != nil {
		return fail(fmt.Errorf("restart %s: %w", name, err))
	}
	err = retry(ctx, 30*time.Second, func(ctx context.Context) error {
		hosted, err := localPartitions(ctx, cl)
		if err != nil {
			return err
		}
		noteRehosted(&rm, hosted)
		return nil
	})
	if err != nil {
		return fail(fmt.Errorf("%s after its restart: %w", name, err))
	}
	time.Sleep(2 * time.Second) // placement runs once more
	if hosted, err := localPartitions(ctx, cl); err == nil {
		noteRehosted(&rm, hosted)
	}
	rounds(2)
	steps = append(steps, fmt.Sprintf("%d reads through %s after; restarted (copies back: %v)", rm.ReadsAfter, name, rm.Rehosted))
	return strings.Join(steps, "; "), nil
}

// noteRehosted notes the partitions of rm that a restarted node hosts again.
// It hosted none of them before the restart, so the restart is when this
// can have begun.
func noteRehosted(rm *history.Removal, hosted map[int]bool) {
	for _, p := range rm.Partitions {
		if hosted[p] && !slices.Contains(rm.Rehosted, p) {
			rm.Rehosted = append(rm.Rehosted, p)
			rm.RehostedAt = rm.Restarted
		}
	}
}

// writeProbes writes v (suffixed with the partition) to every probe key
// through the majority, recording each write.
func (h *memberNemesis) writeProbes(ctx context.Context, ctl *client.Client, rm history.Removal, v string) {
	for _, p := range rm.Partitions {
		key := rm.Keys[p]
		op := h.rec.Begin(h.clientID, key, history.KindPut)
		op.Partition, op.Value = p, v
		octx, cancel := context.WithTimeout(ctx, 8*time.Second)
		ver, err := ctl.Put(octx, []byte(key), []byte(v))
		cancel()
		op.Version = ver
		h.rec.End(op, history.Classify(op.Kind, err), err)
	}
}

// readVia reads key through node name (which answers from its own replica
// or forwards), eventual or strong, recording the read with its receipt.
func (h *memberNemesis) readVia(ctx context.Context, kv ringkvv1connect.KVClient, name, key string, p int, strong bool) *history.Op {
	kind, consistency := history.KindEventualGet, "eventual"
	if strong {
		kind, consistency = history.KindGet, "strong"
	}
	op := h.rec.Begin(h.clientID, key, kind)
	op.Partition, op.Node = p, name
	octx, cancel := context.WithTimeout(ctx, 3*time.Second)
	resp, err := kv.Get(octx, connect.NewRequest(&ringkvv1.GetRequest{Key: []byte(key), Consistency: consistency}))
	cancel()
	if err == nil {
		m := resp.Msg
		op.Found, op.Out, op.Version = true, string(m.GetValue()), m.GetVersion()
		if r := m.GetReceipt(); r != nil {
			op.ServedBy, op.Leader, op.Applied = r.GetServedBy(), r.GetLeader(), r.GetAppliedIndex()
		}
	}
	if connect.CodeOf(err) == connect.CodeNotFound {
		err = nil // found stays false; a miss carries no receipt
	}
	outcome := history.OutcomeOK
	if err != nil {
		outcome = history.OutcomeFail
	}
	h.rec.End(op, outcome, err)
	return op
}

// localPartitions asks one node which partitions it hosts.
func localPartitions(ctx context.Context, cl ringkvv1connect.ClusterClient) (map[int]bool, error) {
	octx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := cl.Partitions(octx, connect.NewRequest(&ringkvv1.PartitionsRequest{LocalOnly: true}))
	if err != nil {
		return nil, err
	}
	out := map[int]bool{}
	for _, p := range resp.Msg.GetPartitions() {
		out[int(p.GetId())] = true
	}
	return out, nil
}

// retry calls f every 500 ms until it succeeds or limit passes, and returns
// its last error.
func retry(ctx context.Context, limit time.Duration, f func(context.Context) error) error {
	deadline := time.Now().Add(limit)
	for {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(octx)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func secsSince(from, to int64) float64 { return float64(to-from) / 1e9 }
