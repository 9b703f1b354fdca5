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
	// Size counts every node, spares not started yet included; Active lists
	// the nodes faults may target now (members of the cluster, running or
	// not).
	Size() int
	Active() []int
	NodeName(i int) string
	Drop(ctx context.Context, to, from int, probability float64) error
	Kill(ctx context.Context, i int) error
	Pause(ctx context.Context, i int) error
	HealAll(ctx context.Context) error
}

// LeaderFunc names the node that currently leads a partition.
type LeaderFunc func(ctx context.Context, partition int) (string, error)

// MembershipHook runs the membership faults (IsMembership): add, drain or
// remove nodes. Apply may take longer than the window (a removal waits for
// the replicas to be replaced); the runner then shifts the rest of the
// plan. Heal runs at the window's end.
type MembershipHook interface {
	Apply(ctx context.Context, f Fault) (detail string, err error)
	Heal(ctx context.Context) error
}

// MembershipTimeout bounds one membership fault's Apply. It runs on past
// the end of the run if it must: a removal half done is worse than a run a
// little longer.
const MembershipTimeout = 3 * time.Minute

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

// Current describes the fault in force ("none" between windows; "KIND:
// applying" or "KIND: healing" while a fault is being applied or healed).
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
// returns when the plan is done or ctx ends; then the caller heals all. When
// applying a fault takes longer than its window (a membership fault can),
// the rest of the plan moves back by the overrun, so every later fault keeps
// its length and the healthy gap before it.
func (r *Runner) Run(ctx context.Context, plan []Fault) []history.Window {
	var shift time.Duration
	for _, f := range plan {
		f.At += shift
		if !r.waitUntil(ctx, f.At) {
			break
		}
		w := history.Window{Nemesis: string(f.Kind), Start: r.now()}
		// A membership fault can take many seconds to apply: say so
		// meanwhile rather than "none".
		r.setCurrent(fmt.Sprintf("%s: applying", f.Kind))
		detail, err := r.apply(ctx, f)
		w.Detail = detail
		if err != nil {
			w.Err = err.Error()
			r.log.Warn("nemesis: fault not fully applied", "kind", f.Kind, "detail", detail, "err", err)
		}
		r.setCurrent(fmt.Sprintf("%s: %s", f.Kind, detail))
		r.log.Info("nemesis: start", "kind", f.Kind, "detail", detail, "for", f.For)
		if over := time.Duration(r.now()) - (f.At + f.For); over > 0 {
			shift += over
			f.For += over
		}
		interrupted := !r.waitUntil(ctx, f.At+f.For)
		r.setCurrent(fmt.Sprintf("%s: healing", f.Kind))
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
	if IsMembership(f.Kind) && r.membership != nil {
		err = errors.Join(err, r.membership.Heal(ctx))
	}
	return err
}

// apply starts fault f and describes what it did. Shapes are drawn over the
// active nodes (Cluster.Active), in their order, so that a plan hits the
// same nodes on every machine as long as membership changed the same way.
func (r *Runner) apply(ctx context.Context, f Fault) (string, error) {
	if IsMembership(f.Kind) {
		if r.membership == nil {
			return "skipped", errors.New("nemesis: no membership hook installed")
		}
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), MembershipTimeout)
		defer cancel()
		return r.membership.Apply(mctx, f)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	act := r.c.Active()
	n := len(act)
	if n < 2 {
		return "skipped", fmt.Errorf("nemesis: %d active nodes", n)
	}
	v := view{r: r, act: act}
	rng := rand.New(rand.NewPCG(f.Seed, uint64(n)))
	switch f.Kind {
	case PartitionHalves:
		links, groups := halves(rng, n)
		return v.groupsDetail(groups), v.drop(ctx, links, 1)
	case IsolateNode:
		x := rng.IntN(n)
		return v.name(x) + " alone", v.drop(ctx, isolate(x, n), 1)
	case IsolateLeader:
		x, detail := v.leader(ctx, f, rng)
		return detail + " alone", v.drop(ctx, isolate(x, n), 1)
	case MajoritiesRing:
		links := ring(rng, n)
		return "cut " + v.linksDetail(links), v.drop(ctx, links, 1)
	case Bridge:
		links, b := bridge(rng, n)
		return fmt.Sprintf("bridge %s; cut %s", v.name(b), v.linksDetail(links)), v.drop(ctx, links, 1)
	case OneWay:
		x, deaf := rng.IntN(n), rng.IntN(2) == 0
		what := "mute (others drop what it sends)"
		if deaf {
			what = "deaf (drops what others send)"
		}
		return v.name(x) + " " + what, v.drop(ctx, oneWay(x, n, deaf), 1)
	case Lossy:
		return fmt.Sprintf("every link drops %.0f%%", LossProbability*100), v.drop(ctx, everyLink(n), LossProbability)
	case KillOne:
		return v.kill(ctx, []int{rng.IntN(n)})
	case KillMinority:
		return v.kill(ctx, minority(rng, n))
	case KillAll:
		return v.kill(ctx, rng.Perm(n))
	case PauseNode:
		x := rng.IntN(n)
		return "pause " + v.name(x), r.c.Pause(ctx, act[x])
	case PauseLeader:
		x, detail := v.leader(ctx, f, rng)
		return "pause " + detail, r.c.Pause(ctx, act[x])
	}
	return "", fmt.Errorf("nemesis: unknown fault %q", f.Kind)
}

// view maps the shapes' node numbers (0..len(act)-1) to cluster indexes.
type view struct {
	r   *Runner
	act []int
}

func (v view) name(x int) string { return v.r.c.NodeName(v.act[x]) }

// leader finds the leader of f's partition among the active nodes; when
// nobody leads or the question fails, a random node stands in and the
// detail says so.
func (v view) leader(ctx context.Context, f Fault, rng *rand.Rand) (int, string) {
	r := v.r
	fallback := rng.IntN(len(v.act))
	if r.leaderOf == nil {
		return fallback, fmt.Sprintf("%s (no leader lookup; random)", v.name(fallback))
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	name, err := r.leaderOf(lctx, f.Partition)
	if err == nil {
		for x := range v.act {
			if v.name(x) == name {
				return x, fmt.Sprintf("%s (leader of p%d)", name, f.Partition)
			}
		}
		err = fmt.Errorf("leader %q is not an active node", name)
	}
	return fallback, fmt.Sprintf("%s (leader of p%d unknown: %v; random)", v.name(fallback), f.Partition, err)
}

func (v view) kill(ctx context.Context, nodes []int) (string, error) {
	sort.Ints(nodes)
	var errs []error
	var names []string
	for _, x := range nodes {
		names = append(names, v.name(x))
		errs = append(errs, v.r.c.Kill(ctx, v.act[x]))
	}
	return "kill -9 " + strings.Join(names, " "), errors.Join(errs...)
}

func (v view) drop(ctx context.Context, links []Link, p float64) error {
	var errs []error
	for _, l := range links {
		errs = append(errs, v.r.c.Drop(ctx, v.act[l.To], v.act[l.From], p))
	}
	return errors.Join(errs...)
}

func (v view) groupsDetail(groups [][]int) string {
	var parts []string
	for _, g := range groups {
		g = append([]int(nil), g...)
		sort.Ints(g)
		var names []string
		for _, x := range g {
			names = append(names, v.name(x))
		}
		parts = append(parts, strings.Join(names, " "))
	}
	return strings.Join(parts, " | ")
}

// linksDetail lists the undirected links cut, e.g. "n1-n3 n2-n4".
func (v view) linksDetail(links []Link) string {
	seen := map[[2]int]bool{}
	var out []string
	for _, l := range links {
		a, b := min(l.To, l.From), max(l.To, l.From)
		if seen[[2]int{a, b}] {
			continue
		}
		seen[[2]int{a, b}] = true
		out = append(out, v.name(a)+"-"+v.name(b))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
