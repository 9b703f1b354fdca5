package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/client"
)

// drainWaitTimeout is --timeout for drain --wait when not given: moving
// every replica off a node takes as long as copying its data.
const drainWaitTimeout = 30 * time.Minute

// drainResult is the JSON output of drain and undrain; the counts only with
// --wait.
type drainResult struct {
	Node         string   `json:"node"`
	Draining     bool     `json:"draining"`
	ReplicasLeft *int     `json:"replicas_left,omitempty"`
	LeadersLeft  *int     `json:"leaders_left,omitempty"`
	Unreported   int      `json:"unreported,omitempty"`
	BytesMoved   *uint64  `json:"bytes_moved,omitempty"`
	Seconds      *float64 `json:"seconds,omitempty"`
	Error        string   `json:"error,omitempty"`
	Code         string   `json:"code,omitempty"`
}

func (a *app) drainCommand() *cobra.Command {
	var wait bool
	var poll time.Duration
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Move every replica and leadership off a node",
		Long: `Mark NODE as draining: it takes no new replicas, and the leaders of its
partitions move its replicas (add a replacement, let it catch up, promote
it, then remove NODE's replica) and its leaderships to other nodes. The
mark spreads by gossip and survives restarts; undrain reverses it. Only a
running node can be drained.

Without --wait, drain returns once the mark is set. With --wait it then
follows the drain, polling the partition table every --poll: replicas left
on NODE (partitions whose voters or nonvoters include it), partitions it
still leads, and the bytes Raft has sent since the start (summed over the
nodes). It ends when neither a replica nor a leadership is left, when NODE
can be stopped without any partition losing a replica. Progress lines go
to stdout (stderr with -o json), as one live line on a terminal.

With --wait, --timeout defaults to 30m. When it runs out (or on Ctrl-C)
kvctl exits 1 but the drain goes on in the cluster; run drain --wait again
to follow it, and kvctl plan to see what blocks it.

With -o json, one document: {node, draining}, and with --wait also
replicas_left, leaders_left, bytes_moved and seconds.`,
		Example: `  kvctl drain n4
  kvctl drain n4 --wait
  kvctl drain n4 --wait --poll 5s --timeout 2h -o json`,
		Args:              args(1, "NODE"),
		ValidArgsFunction: a.completeNodes,
	}
	f := cmd.Flags()
	f.BoolVar(&wait, "wait", false, "follow the drain until no replica and no leadership is left on NODE")
	f.DurationVar(&poll, "poll", time.Second, "with --wait: how often to look at the partitions")
	cmd.RunE = a.runRaw(func(cmd *cobra.Command, args []string) error {
		switch {
		case poll <= 0:
			return usagef("--poll must be positive, got %v", poll)
		case f.Changed("poll") && !wait:
			return usagef("--poll only applies with --wait")
		}
		timeout := a.timeout
		if wait && !cmd.Flags().Changed("timeout") {
			timeout = drainWaitTimeout
		}
		return a.withClient(cmd.Context(), timeout, args, func(ctx context.Context, c *client.Client, args []string) error {
			node := args[0]
			meter := newRaftMeter()
			if wait {
				// Bytes are counted from before the drain starts.
				a.sampleNodes(ctx, c, node, poll, meter)
			}
			if err := c.Drain(ctx, node); err != nil {
				return err
			}
			if wait {
				return a.drainWait(ctx, c, node, poll, timeout, meter)
			}
			if a.jsonMode() {
				return a.printJSON(drainResult{Node: node, Draining: true})
			}
			_, err := fmt.Fprintf(a.stdout, "%s draining: its replicas and leaderships are moving away (follow with: kvctl drain %s --wait)\n", node, node)
			return err
		})
	})
	return cmd
}

func (a *app) undrainCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "undrain NODE",
		Short: "Make a drained node eligible for replicas again",
		Long: `Clear NODE's draining mark: it becomes eligible for replicas again, and the
cluster moves replicas back to it as the desired placement says (see
kvctl plan). Undraining a node that is not draining changes nothing.`,
		Example: `  kvctl undrain n4
  kvctl undrain n4 -o json`,
		Args:              args(1, "NODE"),
		ValidArgsFunction: a.completeNodes,
	}
	cmd.RunE = a.runE(func(ctx context.Context, c *client.Client, args []string) error {
		node := args[0]
		if err := c.Undrain(ctx, node); err != nil {
			return err
		}
		if a.jsonMode() {
			return a.printJSON(drainResult{Node: node, Draining: false})
		}
		_, err := fmt.Fprintf(a.stdout, "%s undrained: it is eligible for replicas again\n", node)
		return err
	})
	return cmd
}

func (a *app) removeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove NODE",
		Short: "Declare a stopped node gone for good",
		Long: `Declare NODE gone for good: every alive node records it, and the leaders
of its partitions replace its replicas at once instead of waiting for the
dead timeout. Prints the nodes that recorded it.

The cluster refuses to remove a node that is still alive: drain it first
(kvctl drain NODE --wait), stop it, then remove it. The refusal is printed
as the cluster gives it, and kvctl exits 1.`,
		Example: `  kvctl remove n4
  kvctl remove n4 -o json`,
		Args:              args(1, "NODE"),
		ValidArgsFunction: a.completeNodes,
	}
	cmd.RunE = a.runE(func(ctx context.Context, c *client.Client, args []string) error {
		node := args[0]
		by, err := c.Remove(ctx, node)
		if err != nil {
			return err
		}
		if a.jsonMode() {
			return a.printJSON(struct {
				Node       string   `json:"node"`
				RecordedBy []string `json:"recorded_by"`
			}{node, append([]string{}, by...)})
		}
		_, err = fmt.Fprintf(a.stdout, "%s removed: recorded by %s; its replicas are being replaced (follow with: kvctl plan)\n",
			node, strings.Join(by, ", "))
		return err
	})
	return cmd
}

// completeNodes completes a NODE argument with the members' names. It asks
// the cluster briefly and offers nothing when no node answers.
func (a *app) completeNodes(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	a.applyEndpointsEnv(cmd)
	c, err := a.newClient(func(cfg *client.Config) { cfg.MaxAttempts = 2 })
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer c.Close()
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, min(a.timeout, 2*time.Second))
	defer cancel()
	members, err := c.Members(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, m := range members {
		if strings.HasPrefix(m.GetName(), toComplete) {
			names = append(names, m.GetName())
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// drainWait polls until nothing is left on node or ctx ends, printing
// progress, then the summary.
func (a *app) drainWait(ctx context.Context, c *client.Client, node string, poll, timeout time.Duration, meter *raftMeter) error {
	start := time.Now()
	w := a.stdout
	if a.jsonMode() {
		w = a.stderr
	}
	p := &progressPrinter{w: w, live: a.isTerminal(w), every: 10 * time.Second}
	var left *drainLeft // nil until the partition table first arrives
	for {
		st, err := a.drainPoll(ctx, c, node, poll, meter)
		elapsed := time.Since(start)
		switch {
		// Drain set the mark on the node before it answered: if the node
		// now says it is not draining, someone undrained it.
		case err == nil && st.markKnown && !st.draining:
			p.done()
			return fmt.Errorf("drain %s: the node is no longer draining (was it undrained?); stopped waiting with %s", node, st.left)
		case err == nil && st.left.done():
			p.done()
			return a.drainDone(node, st.left, meter.total(), elapsed)
		case err == nil:
			left = &st.left
			p.show(fmt.Sprintf("draining %s: %s, %s sent by Raft", node, st.left, humanBytes(meter.total())), st.left.String(), elapsed)
		case ctx.Err() == nil:
			p.show(fmt.Sprintf("draining %s: waiting for the partition table: %s", node, errorMessage(err)), "error", elapsed)
		}
		if err := sleepCtx(ctx, poll); err != nil {
			p.done()
			return a.drainStopped(node, left, meter.total(), time.Since(start), timeout, err)
		}
	}
}

// drainLeft is what is still on the drained node.
type drainLeft struct {
	replicas, leaders int
	unreported        int // partitions nobody reported: they may be on it
}

func (l drainLeft) done() bool { return l.replicas == 0 && l.leaders == 0 && l.unreported == 0 }

func (l drainLeft) String() string {
	s := fmt.Sprintf("%s and %s left", plural(l.replicas, "replica"), plural(l.leaders, "leadership"))
	if l.unreported > 0 {
		s += fmt.Sprintf(", %s not reported by any node", plural(l.unreported, "partition"))
	}
	return s
}

// drainDone prints the final summary.
func (a *app) drainDone(node string, left drainLeft, sent uint64, elapsed time.Duration) error {
	if a.jsonMode() {
		return a.printJSON(drainDoc(node, left, sent, elapsed))
	}
	_, err := fmt.Fprintf(a.stdout, "%s drained: %s left; %s sent by Raft during the drain; took %s\n",
		node, plural(left.replicas, "replica"), humanBytes(sent), elapsed.Round(time.Second))
	return err
}

// drainStopped reports a wait that ended before the drain did; left is
// nil when the partition table never arrived.
func (a *app) drainStopped(node string, left *drainLeft, sent uint64, elapsed, timeout time.Duration, cause error) error {
	what := fmt.Sprintf("not finished after %s", timeout)
	if errors.Is(cause, context.Canceled) {
		what = "stopped waiting"
	}
	state := "the partition table did not arrive"
	if left != nil {
		state = left.String()
	}
	err := &waitError{cause: cause, msg: fmt.Sprintf(
		"drain %s: %s: %s; the drain goes on: follow it with 'kvctl drain %s --wait', see what blocks it with 'kvctl plan'",
		node, what, state, node)}
	if !a.jsonMode() {
		return err
	}
	doc := drainResult{Node: node, Draining: true}
	if left != nil {
		doc = drainDoc(node, *left, sent, elapsed)
	}
	doc.Code, doc.Error = describe(err)
	if perr := a.printJSON(doc); perr != nil {
		return perr
	}
	return &reportedError{err}
}

func drainDoc(node string, left drainLeft, sent uint64, elapsed time.Duration) drainResult {
	secs := math.Round(elapsed.Seconds()*10) / 10
	return drainResult{
		Node: node, Draining: true, ReplicasLeft: &left.replicas, LeadersLeft: &left.leaders,
		Unreported: left.unreported, BytesMoved: &sent, Seconds: &secs,
	}
}

// waitError ends a wait early: it says where the wait stopped and wraps
// the context's error (a timeout for describe) without its text.
type waitError struct {
	msg   string
	cause error
}

func (e *waitError) Error() string { return e.msg }
func (e *waitError) Unwrap() error { return e.cause }

// drainState is one poll's view of the drain.
type drainState struct {
	left      drainLeft
	draining  bool // the node's own mark
	markKnown bool // the node answered
}

// drainPoll reads the partition table, then samples the nodes.
func (a *app) drainPoll(ctx context.Context, c *client.Client, node string, poll time.Duration, meter *raftMeter) (drainState, error) {
	pctx, cancel := context.WithTimeout(ctx, pollBound(poll))
	parts, err := c.Partitions(pctx)
	cancel()
	if err != nil {
		return drainState{}, err
	}
	st := drainState{left: countOn(parts.GetPartitions(), node)}
	st.draining, st.markKnown = a.sampleNodes(ctx, c, node, poll, meter)
	return st, nil
}

// pollBound bounds the calls of one poll, so that a slow node delays the
// progress, not the end.
func pollBound(poll time.Duration) time.Duration { return max(2*poll, 5*time.Second) }

// sampleNodes asks every alive node for its status, feeds the Raft byte
// counters to meter, and returns node's own draining mark (known when node
// answered; unlike gossip, its own answer cannot lag behind the mark). A
// node that does not answer keeps its last count.
func (a *app) sampleNodes(ctx context.Context, c *client.Client, node string, poll time.Duration, meter *raftMeter) (draining, known bool) {
	ctx, cancel := context.WithTimeout(ctx, pollBound(poll))
	defer cancel()
	members, err := c.Members(ctx)
	if err != nil {
		return false, false
	}
	samples := make(chan *ringkvv1.StatusResponse, len(members))
	asked := 0
	for _, m := range members {
		if m.GetStatus() != "alive" || m.GetClientAddr() == "" {
			continue
		}
		asked++
		go func() {
			s, _ := c.Status(ctx, a.memberEndpoint(m.GetClientAddr()))
			samples <- s // nil on error
		}()
	}
	for range asked {
		s := <-samples
		if s == nil {
			continue
		}
		meter.observe(s.GetNode(), s.GetRaftBytesSent())
		if s.GetNode() == node {
			draining, known = s.GetDraining(), true
		}
	}
	return draining, known
}

// countOn counts the partitions that have a replica on node and those it
// leads. A partition no node reported (the answering node lists only its
// desired replicas) counts as unreported: it may still be on node.
func countOn(parts []*ringkvv1.Partition, node string) drainLeft {
	var l drainLeft
	for _, p := range parts {
		voters, nonvoters, known := replicaSets(p)
		if !known {
			l.unreported++
			continue
		}
		if slices.Contains(voters, node) || slices.Contains(nonvoters, node) {
			l.replicas++
		}
		if p.GetLeader() == node {
			l.leaders++
		}
	}
	return l
}

// raftMeter sums, over the nodes, the Raft bytes sent since it first saw
// each node. A counter that goes down belongs to a restarted node: what it
// had sent before is kept and counting starts again from zero.
type raftMeter struct {
	nodes map[string]*raftCounter
}

type raftCounter struct{ base, last, carried uint64 }

func newRaftMeter() *raftMeter { return &raftMeter{nodes: make(map[string]*raftCounter)} }

func (m *raftMeter) observe(node string, v uint64) {
	c, ok := m.nodes[node]
	switch {
	case !ok:
		m.nodes[node] = &raftCounter{base: v, last: v}
	case v < c.last:
		c.carried += c.last - c.base
		c.base, c.last = 0, v
	default:
		c.last = v
	}
}

func (m *raftMeter) total() uint64 {
	var t uint64
	for _, c := range m.nodes {
		t += c.carried + c.last - c.base
	}
	return t
}

// progressPrinter shows progress lines: on a terminal one live line,
// rewritten on every call; elsewhere a line when the state changes or
// every interval, so that logs stay short.
type progressPrinter struct {
	w         io.Writer
	live      bool
	every     time.Duration
	lastState string
	lastAt    time.Duration
	printed   bool
	onLine    bool // a live line is on screen
}

// show prints line; state is what must change for a non-live line to be
// printed before the interval.
func (p *progressPrinter) show(line, state string, elapsed time.Duration) {
	line += fmt.Sprintf(" (%s)", elapsed.Round(time.Second))
	if p.live {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.onLine = true
		return
	}
	if p.printed && state == p.lastState && elapsed-p.lastAt < p.every {
		return
	}
	fmt.Fprintln(p.w, line)
	p.printed, p.lastState, p.lastAt = true, state, elapsed
}

// done clears a live line.
func (p *progressPrinter) done() {
	if p.onLine {
		fmt.Fprint(p.w, "\r\033[K")
		p.onLine = false
	}
}

// sleepCtx waits for d or until ctx ends, and returns ctx's error if it did.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// errorMessage is err's text without the client's sentinel prefix.
func errorMessage(err error) string {
	_, msg := describe(err)
	return msg
}
