package nemesis

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCluster records what the runner does.
type fakeCluster struct {
	mu     sync.Mutex
	n      int
	drops  []Link
	killed []int
	paused []int
	heals  int
	active []int
}

func (f *fakeCluster) Size() int { return f.n }
func (f *fakeCluster) Active() []int {
	if f.active != nil {
		return f.active
	}
	out := make([]int, f.n)
	for i := range out {
		out[i] = i
	}
	return out
}
func (f *fakeCluster) NodeName(i int) string { return fmt.Sprintf("n%d", i+1) }
func (f *fakeCluster) Drop(_ context.Context, to, from int, _ float64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drops = append(f.drops, Link{To: to, From: from})
	return nil
}
func (f *fakeCluster) Kill(_ context.Context, i int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killed = append(f.killed, i)
	return nil
}
func (f *fakeCluster) Pause(_ context.Context, i int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = append(f.paused, i)
	return nil
}
func (f *fakeCluster) HealAll(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heals++
	return nil
}

func TestRunnerLogsEveryWindowAndHeals(t *testing.T) {
	fc := &fakeCluster{n: 5}
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	leaderOf := func(_ context.Context, p int) (string, error) { return "n4", nil }
	r := NewRunner(fc, leaderOf, now, nil)
	ms := time.Millisecond
	plan := []Fault{
		{Kind: IsolateLeader, At: 0, For: 20 * ms, Partition: 3},
		{Kind: PauseLeader, At: 30 * ms, For: 20 * ms, Partition: 5},
		{Kind: KillMinority, At: 60 * ms, For: 20 * ms, Seed: 9},
		{Kind: Lossy, At: 90 * ms, For: 20 * ms},
	}
	ws := r.Run(context.Background(), plan)
	if len(ws) != len(plan) {
		t.Fatalf("%d windows for %d faults", len(ws), len(plan))
	}
	for i, w := range ws {
		if w.Nemesis != string(plan[i].Kind) || w.End <= w.Start || w.Err != "" {
			t.Errorf("window %d: %+v", i, w)
		}
		if i > 0 && w.Start < ws[i-1].End {
			t.Errorf("window %d starts before window %d ended", i, i-1)
		}
	}
	if fc.heals != len(plan) {
		t.Errorf("%d heals for %d faults", fc.heals, len(plan))
	}
	if !strings.Contains(ws[0].Detail, "n4 (leader of p3)") {
		t.Errorf("isolate-leader detail %q does not name the leader", ws[0].Detail)
	}
	for _, l := range fc.drops[:8] { // isolating n4 (index 3) cuts 4 links both ways
		if l.To != 3 && l.From != 3 {
			t.Errorf("isolate-leader cut %v, which does not touch the leader", l)
		}
	}
	if len(fc.paused) != 1 || fc.paused[0] != 3 {
		t.Errorf("pause-leader paused %v, want [3]", fc.paused)
	}
	if len(fc.killed) != 2 {
		t.Errorf("kill-minority of 5 killed %v, want 2 nodes", fc.killed)
	}
	if got := len(fc.drops) - 8; got != 20 {
		t.Errorf("lossy added %d rules, want 20", got)
	}
	if r.Current() != "none" {
		t.Errorf("Current() = %q after the plan", r.Current())
	}
}

func TestRunnerStopsOnCancel(t *testing.T) {
	fc := &fakeCluster{n: 3}
	start := time.Now()
	r := NewRunner(fc, nil, func() int64 { return int64(time.Since(start)) }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var ws []struct{}
	go func() {
		defer close(done)
		for range r.Run(ctx, []Fault{{Kind: IsolateNode, At: 0, For: time.Hour}, {Kind: KillOne, At: 2 * time.Hour, For: time.Hour}}) {
			ws = append(ws, struct{}{})
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for r.Current() == "none" {
		if time.Now().After(deadline) {
			t.Fatal("the first fault never started")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if len(ws) != 1 || fc.heals != 1 || len(fc.killed) != 0 {
		t.Fatalf("after cancel: %d windows, %d heals, killed %v; want 1, 1, none", len(ws), fc.heals, fc.killed)
	}
}

func TestLeaderFaultFallsBackWhenNobodyLeads(t *testing.T) {
	fc := &fakeCluster{n: 3}
	leaderOf := func(context.Context, int) (string, error) { return "", fmt.Errorf("p1 has no leader") }
	r := NewRunner(fc, leaderOf, func() int64 { return 0 }, nil)
	ws := r.Run(context.Background(), []Fault{{Kind: PauseLeader, Partition: 1}})
	if len(ws) != 1 || !strings.Contains(ws[0].Detail, "unknown") || len(fc.paused) != 1 {
		t.Fatalf("windows %+v, paused %v", ws, fc.paused)
	}
}

// slowHook is a membership hook whose Apply takes longer than its window.
type slowHook struct {
	took    time.Duration
	applied []Kind
	heals   int
}

func (h *slowHook) Apply(_ context.Context, f Fault) (string, error) {
	time.Sleep(h.took)
	h.applied = append(h.applied, f.Kind)
	return "slow " + string(f.Kind), nil
}

func (h *slowHook) Heal(context.Context) error { h.heals++; return nil }

func TestMembershipOverrunShiftsTheRestOfThePlan(t *testing.T) {
	fc := &fakeCluster{n: 5}
	start := time.Now()
	r := NewRunner(fc, nil, func() int64 { return int64(time.Since(start)) }, nil)
	h := &slowHook{took: 150 * time.Millisecond}
	r.SetMembership(h)
	ms := time.Millisecond
	plan := []Fault{
		{Kind: MemberRemove, At: 0, For: 20 * ms},
		{Kind: IsolateNode, At: 40 * ms, For: 30 * ms, Seed: 1},
	}
	ws := r.Run(context.Background(), plan)
	if len(ws) != 2 || len(h.applied) != 1 || h.heals != 1 {
		t.Fatalf("windows %+v, applied %v, heals %d", ws, h.applied, h.heals)
	}
	// The membership fault ends at least 150 ms after it started (its hook
	// sleeps that long), 130 ms past its window, so the isolation moves from
	// 40-70 ms to at least 170-200 ms: the 20 ms gap and its 30 ms length
	// are kept. Bounds are measured from the plan's times, which timers
	// never undershoot; a loaded machine may only make them later, so the
	// test does not depend on how promptly a goroutine wakes.
	if start := time.Duration(ws[1].Start - ws[0].Start); start < 170*ms {
		t.Errorf("the fault after an overrun started %v into the run; want at least 170 ms (150 ms overrun + its 20 ms gap)", start)
	}
	if end := time.Duration(ws[1].End - ws[0].Start); end < 200*ms {
		t.Errorf("the fault after an overrun ended %v into the run; want at least 200 ms (its planned 30 ms after a 170 ms start)", end)
	}
}

// gateHook is a membership hook whose Apply and Heal wait for the test.
type gateHook struct {
	applying, healing chan struct{} // closed by the hook on entry
	apply, heal       chan struct{} // closed by the test to let it return
}

func (h *gateHook) Apply(context.Context, Fault) (string, error) {
	close(h.applying)
	<-h.apply
	return "removed n5", nil
}

func (h *gateHook) Heal(context.Context) error {
	close(h.healing)
	<-h.heal
	return nil
}

func TestCurrentNamesAFaultWhileItIsAppliedAndHealed(t *testing.T) {
	fc := &fakeCluster{n: 5}
	start := time.Now()
	r := NewRunner(fc, nil, func() int64 { return int64(time.Since(start)) }, nil)
	h := &gateHook{applying: make(chan struct{}), healing: make(chan struct{}), apply: make(chan struct{}), heal: make(chan struct{})}
	r.SetMembership(h)
	done := make(chan struct{})
	go func() {
		r.Run(context.Background(), []Fault{{Kind: MemberRemove, At: 0, For: time.Millisecond}})
		close(done)
	}()
	<-h.applying
	if got, want := r.Current(), "member-remove: applying"; got != want {
		t.Errorf("Current() while the fault is applied = %q, want %q", got, want)
	}
	close(h.apply)
	<-h.healing
	if got, want := r.Current(), "member-remove: healing"; got != want {
		t.Errorf("Current() while the fault is healed = %q, want %q", got, want)
	}
	close(h.heal)
	<-done
	if got := r.Current(); got != "none" {
		t.Errorf("Current() after the plan = %q, want none", got)
	}
}

func TestShapesUseOnlyActiveNodes(t *testing.T) {
	// Node 2 was retired and nodes 5, 6 are spares (6 not started).
	fc := &fakeCluster{n: 7, active: []int{0, 1, 3, 4, 5}}
	r := NewRunner(fc, nil, func() int64 { return 0 }, nil)
	for seed := range uint64(10) {
		fc.drops, fc.killed = nil, nil
		r.Run(context.Background(), []Fault{{Kind: PartitionHalves, Seed: seed}, {Kind: KillAll, Seed: seed}})
		for _, l := range fc.drops {
			if l.To == 2 || l.From == 2 || l.To == 6 || l.From == 6 {
				t.Fatalf("seed %d: cut %v touches a node that is not active", seed, l)
			}
		}
		if len(fc.killed) != 5 {
			t.Fatalf("seed %d: kill-all killed %v, want the 5 active nodes", seed, fc.killed)
		}
	}
}

func TestMembershipWithoutHookIsAnError(t *testing.T) {
	fc := &fakeCluster{n: 3}
	r := NewRunner(fc, nil, func() int64 { return 0 }, nil)
	ws := r.Run(context.Background(), []Fault{{Kind: MemberAdd}})
	if len(ws) != 1 || ws[0].Err == "" {
		t.Fatalf("windows %+v", ws)
	}
}
