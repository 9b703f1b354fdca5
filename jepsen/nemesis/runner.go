package nemesis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ringkv/ringkv/jepsen/history"
)

// Cluster is what the nemesis needs from the nodes (package cluster
// implements it). Node indexes start at 0.
type Cluster interface {
	Size() int
	NodeName(i int) string
	Drop(ctx context.Context, to, from int, probability float64) error
	Kill(ctx context.Context, i int) error
	Pause(ctx context.Context, i int) error
	HealAll(ctx context.Context) error
}

// LeaderFunc names the node that currently leads a partition.
type LeaderFunc func(ctx context.Context, partition int) (string, error)

// MembershipHook runs the Membership fault: add, remove or drain nodes. It
// is nil until RingKV has elastic membership.
type MembershipHook interface {
	Apply(ctx context.Context, f Fault) (detail string, err error)
	Heal(ctx context.Context) error
}

// Runner applies a plan to a cluster.
type Runner struct {
	c          Cluster
	leaderOf   LeaderFunc
	now        func() int64
	log        *slog.Logger
	membership MembershipHook

	mu      sync.Mutex
	current string
	windows []history.Window
}

// NewRunner returns a Runner. now is the run's clock (nanoseconds since its
// start), the same the history uses.
func NewRunner(c Cluster, leaderOf LeaderFunc, now func() int64, log *slog.Logger) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{c: c, leaderOf: leaderOf, now: now, log: log, current: "none"}
}

// SetMembership installs the membership hook.
func (r *Runner) SetMembership(h MembershipHook) { r.membership = h }

// Current describes the fault in force ("none" between windows).
func (r *Runner) Current() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

// Windows returns the windows so far.
func (r *Runner) Windows() []history.Window {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]history.Window(nil), r.windows...)
}

// Run applies every fault of plan at its time and heals it when it ends. It
// returns when the plan is done or ctx ends; then the caller heals all.
func (r *Runner) Run(ctx context.Context, plan []Fault) []history.Window {
	for _, f := range plan {
		if !r.waitUntil(ctx, f.At) {
			break
		}
		w := history.Window{Nemesis: string(f.Kind), Start: r.now()}
		detail, err := r.apply(ctx, f)
		w.Detail = detail
		if err != nil {
			w.Err = err.Error()
			r.log.Warn("nemesis: fault not fully applied", "kind", f.Kind, "detail", detail, "err", err)
		}
		r.setCurrent(fmt.Sprintf("%s: %s", f.Kind, detail))
		r.log.Info("nemesis: start", "kind", f.Kind, "detail", detail, "for", f.For)
		interrupted := !r.waitUntil(ctx, f.At+f.For)
		hctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		herr := r.heal(hctx, f)
		cancel()
		w.End = r.now()
		if herr != nil {
			w.Err = strings.TrimPrefix(w.Err+"; heal: "+herr.Error(), "; ")
			r.log.Warn("nemesis: heal failed", "kind", f.Kind, "err", herr)
		}
		r.mu.Lock()
		r.windows = append(r.windows, w)
		r.current = "none"
		r.mu.Unlock()
		r.log.Info("nemesis: healed", "kind", f.Kind, "after", time.Duration(w.End-w.Start).Round(time.Millisecond))
		if interrupted {
			break
		}
	}
	return r.Windows()
}

func (r *Runner) setCurrent(s string) {
	r.mu.Lock()
	r.current = s
	r.mu.Unlock()
}

// waitUntil waits until the run's clock reaches at; false if ctx ended.
func (r *Runner) waitUntil(ctx context.Context, at time.Duration) bool {
	d := at - time.Duration(r.now())
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (r *Runner) heal(ctx context.Context, f Fault) error {
	err := r.c.HealAll(ctx)
	if f.Kind == Membership && r.membership != nil {
		err = errors.Join(err, r.membership.Heal(ctx))
	}
	return err
}

// apply starts fault f and describes what it did.
func (r *Runner) apply(ctx context.Context, f Fault) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	n := r.c.Size()
	rng := rand.New(rand.NewPCG(f.Seed, uint64(n)))
	switch f.Kind {
	case PartitionHalves:
		links, groups := halves(rng, n)
		return r.groupsDetail(groups), r.drop(ctx, links, 1)
	case IsolateNode:
		x := rng.IntN(n)
		return r.name(x) + " alone", r.drop(ctx, isolate(x, n), 1)
	case IsolateLeader:
		x, detail := r.leader(ctx, f, rng)
		return detail + " alone", r.drop(ctx, isolate(x, n), 1)
	case MajoritiesRing:
		links := ring(rng, n)
		return "cut " + r.linksDetail(links), r.drop(ctx, links, 1)
	case Bridge:
		links, b := bridge(rng, n)
		return fmt.Sprintf("bridge %s; cut %s", r.name(b), r.linksDetail(links)), r.drop(ctx, links, 1)
	case OneWay:
		x, deaf := rng.IntN(n), rng.IntN(2) == 0
		what := "mute (others drop what it sends)"
		if deaf {
			what = "deaf (drops what others send)"
		}
		return r.name(x) + " " + what, r.drop(ctx, oneWay(x, n, deaf), 1)
	case Lossy:
		return fmt.Sprintf("every link drops %.0f%%", LossProbability*100), r.drop(ctx, everyLink(n), LossProbability)
	case KillOne:
		return r.kill(ctx, []int{rng.IntN(n)})
	case KillMinority:
		return r.kill(ctx, minority(rng, n))
	case KillAll:
		return r.kill(ctx, rng.Perm(n))
	case PauseNode:
		x := rng.IntN(n)
		return "pause " + r.name(x), r.c.Pause(ctx, x)
	case PauseLeader:
		x, detail := r.leader(ctx, f, rng)
		return "pause " + detail, r.c.Pause(ctx, x)
	case Membership:
		if r.membership == nil {
			return "skipped", errors.New("nemesis: membership faults need elastic membership; no hook installed")
		}
		return r.membership.Apply(ctx, f)
	}
	return "", fmt.Errorf("nemesis: unknown fault %q", f.Kind)
}

// leader finds the leader of f's partition; when nobody leads or the
// question fails, a random node stands in and the detail says so.
func (r *Runner) leader(ctx context.Context, f Fault, rng *rand.Rand) (int, string) {
	fallback := rng.IntN(r.c.Size())
	if r.leaderOf == nil {
		return fallback, fmt.Sprintf("%s (no leader lookup; random)", r.name(fallback))
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	name, err := r.leaderOf(lctx, f.Partition)
	if err == nil {
		for i := range r.c.Size() {
			if r.c.NodeName(i) == name {
				return i, fmt.Sprintf("%s (leader of p%d)", name, f.Partition)
			}
		}
		err = fmt.Errorf("leader %q is not a node", name)
	}
	return fallback, fmt.Sprintf("%s (leader of p%d unknown: %v; random)", r.name(fallback), f.Partition, err)
}

func (r *Runner) kill(ctx context.Context, nodes []int) (string, error) {
	sort.Ints(nodes)
	var errs []error
	var names []string
	for _, x := range nodes {
		names = append(names, r.name(x))
		errs = append(errs, r.c.Kill(ctx, x))
	}
	return "kill -9 " + strings.Join(names, " "), errors.Join(errs...)
}

func (r *Runner) drop(ctx context.Context, links []Link, p float64) error {
	var errs []error
	for _, l := range links {
		errs = append(errs, r.c.Drop(ctx, l.To, l.From, p))
	}
	return errors.Join(errs...)
}

func (r *Runner) name(i int) string { return r.c.NodeName(i) }

func (r *Runner) groupsDetail(groups [][]int) string {
	var parts []string
	for _, g := range groups {
		g = append([]int(nil), g...)
		sort.Ints(g)
		var names []string
		for _, x := range g {
			names = append(names, r.name(x))
		}
		parts = append(parts, strings.Join(names, " "))
	}
	return strings.Join(parts, " | ")
}

// linksDetail lists the undirected links cut, e.g. "n1-n3 n2-n4".
func (r *Runner) linksDetail(links []Link) string {
	seen := map[[2]int]bool{}
	var out []string
	for _, l := range links {
		a, b := min(l.To, l.From), max(l.To, l.From)
		if seen[[2]int{a, b}] {
			continue
		}
		seen[[2]int{a, b}] = true
		out = append(out, r.name(a)+"-"+r.name(b))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
