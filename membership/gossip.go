package membership

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Status is a member's liveness as seen by this node.
type Status string

// Member statuses.
const (
	StatusAlive   Status = "alive"   // answers probes
	StatusSuspect Status = "suspect" // this node's probe failed; dead unless it refutes soon
	StatusDead    Status = "dead"    // declared failed by the cluster; may still come back
	StatusLeft    Status = "left"    // announced a graceful leave (Gossip.Leave) and is gone
)

// Member is one node as seen by this node.
type Member struct {
	Meta   Meta
	Status Status
	Since  time.Time // when it entered Status, by this node's clock (Config.Now)
	Addr   string    // gossip host:port
}

// msgLeaving tags the user message "NAME is leaving" (followed by the name).
const msgLeaving byte = 1

// refusalLogEvery bounds how often the refusal of one peer for one reason is logged.
const refusalLogEvery = time.Minute

// Gossip is this node's membership: a memberlist instance plus the table of every node seen.
// Its methods are safe for concurrent use.
type Gossip struct {
	cfg     Config
	log     *slog.Logger
	ml      *memberlist.Memberlist
	changes chan struct{}
	stop    chan struct{} // closed by Shutdown to stop refreshLoop
	stopped chan struct{} // closed when refreshLoop has returned
	isShut  atomic.Bool

	metaMu sync.Mutex // serializes UpdateMeta and Leave, so an update cannot revive a left node
	lifeMu sync.Mutex // serializes memberlist's Leave and Shutdown (Leave after Shutdown panics)
	joinMu sync.Mutex // one Join at a time, so refusals are attributed to the right call

	mu         sync.Mutex // guards the fields below
	local      Meta       // this node's metadata
	wire       []byte     // encodeMeta(local, leaving): what memberlist gossips; replaced, never mutated
	leaving    bool       // Leave has started
	left       bool       // Leave has finished
	members    map[string]*entry
	joining    bool    // a Join is in progress
	refusals   []error // refusals of merges during the current Join
	refusalLog map[string]time.Time
}

type entry struct {
	name    string
	meta    Meta
	status  Status
	since   time.Time
	addr    string
	leaving bool // its last metadata announced a graceful leave
}

func (e *entry) member() Member {
	return Member{Meta: e.meta.clone(), Status: e.status, Since: e.since, Addr: e.addr}
}

// Start validates cfg, binds the gossip port and starts gossiping as a cluster of one. Call Join
// to meet other nodes and Shutdown to stop.
func Start(cfg Config) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Meta = cfg.Meta.clone()
	cfg.Meta.Name = cfg.Name
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Gossip{
		cfg:        cfg,
		log:        cfg.Logger,
		changes:    make(chan struct{}, 1),
		stop:       make(chan struct{}),
		stopped:    make(chan struct{}),
		local:      cfg.Meta,
		wire:       encodeMeta(cfg.Meta, false),
		members:    make(map[string]*entry),
		refusalLog: make(map[string]time.Time),
	}
	mc := cfg.memberlistConfig()
	d := &delegate{g: g}
	mc.Delegate, mc.Events, mc.Alive, mc.Merge, mc.Ping = d, d, d, d, d
	mc.Logger = newLogBridge(g.log.With("component", "memberlist"), g.observeLog)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: start gossip on %s: %v",
			net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	g.ml = ml
	if cfg.Meta.GossipAddr == "" {
		m := cfg.Meta
		m.GossipAddr = ml.LocalNode().Address()
		if err := g.UpdateMeta(m); err != nil {
			_ = ml.Shutdown()
			return nil, err
		}
	}
	go g.refreshLoop()
	return g, nil
}

// Join contacts each address (host:port of a member's gossip port) and merges its view of the
// cluster. It returns how many nodes were contacted. The error is nil when at least one was
// (failures of the others are logged at Warn); otherwise it names every address and why it
// failed, and wraps ErrClusterMismatch or ErrPartitionMismatch when a node refused this one or
// this node refused it. Joining an empty list does nothing.
func (g *Gossip) Join(addrs []string) (int, error) {
	if g.isShut.Load() {
		return 0, ErrShutdown
	}
	g.joinMu.Lock()
	defer g.joinMu.Unlock()
	joined := 0
	var failed []error
	for _, addr := range addrs {
		g.mu.Lock()
		g.joining, g.refusals = true, nil
		g.mu.Unlock()
		n, err := g.ml.Join([]string{addr})
		g.mu.Lock()
		refusals := g.refusals
		g.joining, g.refusals = false, nil
		g.mu.Unlock()
		if err == nil && n > 0 {
			joined += n
			continue
		}
		failed = append(failed, fmt.Errorf("%s: %w", addr, joinCause(err, refusals)))
	}
	if len(failed) == 0 {
		return joined, nil
	}
	jerr := &joinError{errs: failed}
	if joined > 0 {
		g.log.Warn("membership: joined the cluster, but some addresses failed", "joined", joined, "err", jerr)
		return joined, nil
	}
	return 0, jerr
}

// joinCause is why memberlist's Join of one address failed: the refusal of this node's merge
// delegate when memberlist's error carries its text (memberlist formats it with %v, losing the
// chain), else memberlist's error.
func joinCause(err error, refusals []error) error {
	if err == nil {
		return fmt.Errorf("the address resolved to no host")
	}
	for _, r := range refusals {
		if strings.Contains(err.Error(), r.Error()) {
			return r
		}
	}
	if me, ok := err.(interface{ WrappedErrors() []error }); ok { // go-multierror
		var parts []string
		for _, e := range me.WrappedErrors() {
			parts = append(parts, e.Error())
		}
		return fmt.Errorf("%s", strings.Join(parts, "; "))
	}
	return err
}

// joinError lists the failed addresses of a Join.
type joinError struct{ errs []error }

func (e *joinError) Error() string {
	parts := make([]string, len(e.errs))
	for i, err := range e.errs {
		parts[i] = err.Error()
	}
	return "membership: join failed: " + strings.Join(parts, "; ")
}

func (e *joinError) Unwrap() []error { return e.errs }

// Members returns every node seen since Start, this one included, sorted by name. Dead and left
// nodes stay until Forget. Each Member is a copy.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	out := make([]Member, 0, len(g.members))
	for _, e := range g.members {
		out = append(out, e.member())
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Meta.Name, b.Meta.Name) })
	return out
}

// Local returns this node.
func (g *Gossip) Local() Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.members[g.cfg.Name]; e != nil {
		return e.member()
	}
	return Member{Meta: g.local.clone(), Status: StatusAlive, Addr: g.local.GossipAddr}
}

// UpdateMeta replaces this node's metadata and gossips it. An empty m.Name means this node. It
// waits up to Config.BroadcastTimeout for the update to be sent; gossip keeps spreading it after
// that. It fails with ErrMetaTooLarge, ErrInvalidMeta (m names another node), ErrShutdown or
// ErrLeft.
func (g *Gossip) UpdateMeta(m Meta) error {
	if m.Name == "" {
		m.Name = g.cfg.Name
	}
	if m.Name != g.cfg.Name {
		return fmt.Errorf("%w: Meta.Name %q is not this node's name %q", ErrInvalidMeta, m.Name, g.cfg.Name)
	}
	if err := checkMetaSize(m); err != nil {
		return err
	}
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	if g.isShut.Load() {
		return ErrShutdown
	}
	g.mu.Lock()
	if g.left {
		g.mu.Unlock()
		return ErrLeft
	}
	g.local = m.clone()
	g.wire = encodeMeta(g.local, g.leaving)
	g.mu.Unlock()
	if err := g.ml.UpdateNode(g.cfg.BroadcastTimeout); err != nil {
		g.log.Debug("membership: metadata update still spreading", "err", err)
	}
	return nil
}

// Changes returns a channel that receives a value after the member table changed (joins,
// metadata updates, status changes, Forget). Notifications coalesce: one receive may stand for
// many changes, so read Members after it. The first one may come right after Start.
func (g *Gossip) Changes() <-chan struct{} { return g.changes }

// Leave announces that this node leaves the cluster, so peers report it "left" rather than
// "dead", and waits up to timeout (Config.BroadcastTimeout if <= 0) for the announcement to go
// out. Gossip keeps running until Shutdown; metadata can no longer change. Leaving twice is a
// no-op.
func (g *Gossip) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = g.cfg.BroadcastTimeout
	}
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	if g.isShut.Load() {
		return ErrShutdown
	}
	g.mu.Lock()
	if g.left {
		g.mu.Unlock()
		return nil
	}
	g.leaving = true
	g.wire = encodeMeta(g.local, true)
	g.mu.Unlock()
	start := time.Now()
	g.announceLeave(timeout / 2)

	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.isShut.Load() {
		return ErrShutdown
	}
	err := g.ml.Leave(max(timeout-time.Since(start), timeout/2))
	g.mu.Lock()
	g.left = true
	if e := g.members[g.cfg.Name]; e != nil {
		e.leaving = true
		g.setStatus(e, StatusLeft)
	}
	g.mu.Unlock()
	g.notify()
	if err != nil {
		return fmt.Errorf("membership: leave: %v: peers that miss the announcement report this node dead", err)
	}
	return nil
}

// announceLeave tells peers that this node is leaving, waiting up to d. memberlist hides whether
// a node left or died (hashicorp/memberlist#266), so peers that got the announcement report the
// departure that follows as "left". It goes two ways: a direct TCP message to every live peer
// (reliable), and the leave flag in the gossiped metadata (reaches peers through gossip).
func (g *Gossip) announceLeave(d time.Duration) {
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := g.ml.UpdateNode(d); err != nil {
			g.log.Debug("membership: leave flag still spreading", "err", err)
		}
	})
	msg := append([]byte{msgLeaving}, g.cfg.Name...)
	// Address peers from this package's own table: the *memberlist.Node
	// values memberlist hands out are rewritten by its own goroutines on
	// every alive message (hashicorp/memberlist#306), so reading them races.
	for _, m := range g.Members() {
		if m.Meta.Name == g.cfg.Name || (m.Status != StatusAlive && m.Status != StatusSuspect) {
			continue
		}
		host, portStr, err := net.SplitHostPort(m.Addr)
		port, perr := strconv.ParseUint(portStr, 10, 16)
		ip := net.ParseIP(host)
		if err != nil || perr != nil || ip == nil {
			continue
		}
		n := &memberlist.Node{Name: m.Meta.Name, Addr: ip, Port: uint16(port)}
		wg.Go(func() {
			if err := g.ml.SendReliable(n, msg); err != nil {
				g.log.Debug("membership: could not announce leave", "node", n.Name, "err", err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		g.log.Debug("membership: leave announcement still in flight", "after", d)
	}
}

// Shutdown stops gossip without announcing a leave (call Leave first for that); peers detect it
// by probing. It is idempotent. Members and Local keep answering from the last table.
func (g *Gossip) Shutdown() error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.isShut.Swap(true) {
		return nil
	}
	err := g.ml.Shutdown()
	close(g.stop)
	<-g.stopped
	if err != nil {
		return fmt.Errorf("membership: shutdown: %v", err)
	}
	return nil
}

// Forget drops a dead or left node from the member table. Other nodes and this node itself are
// kept. A forgotten node that comes back is added again.
func (g *Gossip) Forget(name string) {
	g.mu.Lock()
	e := g.members[name]
	forget := e != nil && name != g.cfg.Name && (e.status == StatusDead || e.status == StatusLeft)
	if forget {
		delete(g.members, name)
	}
	g.mu.Unlock()
	if forget {
		g.notify()
	}
}

func (g *Gossip) notify() {
	select {
	case g.changes <- struct{}{}:
	default:
	}
}

// setStatus moves e to s and reports whether that changed anything. g.mu must be held.
func (g *Gossip) setStatus(e *entry, s Status) bool {
	if e.status == s {
		return false
	}
	e.status, e.since = s, g.cfg.Now()
	return true
}

// entryLocked returns the entry for name, creating it. g.mu must be held.
func (g *Gossip) entryLocked(name string) *entry {
	e := g.members[name]
	if e == nil {
		e = &entry{name: name}
		g.members[name] = e
	}
	return e
}

// nodeAlive records a join (joined) or metadata update from memberlist. A join is a new life of
// the node, so it forgets an earlier leave announcement.
func (g *Gossip) nodeAlive(n *memberlist.Node, joined bool) {
	meta, leaving, err := decodeMeta(n.Meta)
	if err != nil { // cannot happen: the alive delegate refuses such nodes
		meta = Meta{}
	}
	meta.Name = n.Name
	addr := n.Address()
	g.mu.Lock()
	e := g.entryLocked(n.Name)
	e.meta, e.addr = meta, addr
	e.leaving = leaving || (e.leaving && !joined)
	g.setStatus(e, StatusAlive)
	g.mu.Unlock()
	g.notify()
}

// nodeGone records memberlist's NotifyLeave, which covers both death and a graceful leave.
func (g *Gossip) nodeGone(n *memberlist.Node) {
	meta, leaving, err := decodeMeta(n.Meta)
	addr := n.Address()
	g.mu.Lock()
	e := g.entryLocked(n.Name)
	if err == nil {
		meta.Name = n.Name
		e.meta = meta
		e.leaving = e.leaving || leaving
	}
	e.addr = addr
	if e.leaving {
		g.setStatus(e, StatusLeft)
	} else {
		g.setStatus(e, StatusDead)
	}
	g.mu.Unlock()
	g.notify()
}

// markLeaving records a peer's leave announcement. The announcement may arrive after the
// peer's departure was seen (it travels over TCP, the departure by gossip), which then was a leave.
func (g *Gossip) markLeaving(name string) {
	g.mu.Lock()
	e := g.members[name]
	changed := false
	if e != nil && name != g.cfg.Name {
		e.leaving = true
		changed = e.status == StatusDead && g.setStatus(e, StatusLeft)
	}
	g.mu.Unlock()
	if changed {
		g.notify()
	}
}

// markAlive ends this node's suspicion of name after evidence of life.
func (g *Gossip) markAlive(name string) {
	g.mu.Lock()
	e := g.members[name]
	changed := e != nil && e.status == StatusSuspect && g.setStatus(e, StatusAlive)
	g.mu.Unlock()
	if changed {
		g.notify()
	}
}

// observeLog watches memberlist's log for this node starting to suspect a peer.
func (g *Gossip) observeLog(msg string) {
	name, ok := suspectedBy(msg)
	if !ok || name == g.cfg.Name {
		return
	}
	g.mu.Lock()
	e := g.members[name]
	changed := e != nil && e.status == StatusAlive && g.setStatus(e, StatusSuspect)
	g.mu.Unlock()
	if changed {
		g.notify()
	}
}

// refreshLoop runs refresh every ProbeInterval until Shutdown.
func (g *Gossip) refreshLoop() {
	defer close(g.stopped)
	t := time.NewTicker(g.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			g.refresh()
		}
	}
}

// refresh reconciles suspicions with memberlist. A suspicion normally ends with a successful
// probe (markAlive) or with death (nodeGone); a node that refuted while this node did not probe
// it is still live in memberlist long after any suspicion would have expired, so it is alive.
func (g *Gossip) refresh() {
	live := make(map[string]bool)
	for _, n := range g.ml.Members() {
		live[n.Name] = true
	}
	g.expireSuspicions(live)
}

// expireSuspicions ends suspicions older than any memberlist suspicion of nodes in live.
func (g *Gossip) expireSuspicions(live map[string]bool) {
	now := g.cfg.Now()
	changed := false
	g.mu.Lock()
	bound := g.cfg.suspicionBound(len(g.members))
	for _, e := range g.members {
		if e.status == StatusSuspect && live[e.name] && now.Sub(e.since) > bound {
			changed = g.setStatus(e, StatusAlive) || changed
		}
	}
	g.mu.Unlock()
	if changed {
		g.notify()
	}
}

// admit decides whether the node name at addr with wire metadata may be a member (nil) or must
// be refused, and logs refusals, rate-limited per node and reason.
func (g *Gossip) admit(name, addr string, wire []byte, joining bool) error {
	meta, _, err := decodeMeta(wire)
	if err != nil {
		err = fmt.Errorf("%w (node %s at %s): run compatible RingKV versions on all nodes", err, name, addr)
	} else if meta.Name != name {
		err = fmt.Errorf("%w: node %s at %s gossips metadata of node %q", ErrInvalidMeta, name, addr, meta.Name)
	} else {
		g.mu.Lock()
		local := g.local
		g.mu.Unlock()
		err = checkPeer(local, meta, joining)
	}
	if err != nil {
		g.logRefusal(name, addr, err)
	}
	return err
}

func (g *Gossip) logRefusal(name, addr string, err error) {
	key := name + "\x00" + addr + "\x00" + err.Error()
	now := g.cfg.Now()
	g.mu.Lock()
	last, seen := g.refusalLog[key]
	due := !seen || now.Sub(last) >= refusalLogEvery
	if due {
		if len(g.refusalLog) >= 1024 { // bound memory against a flood of strangers
			clear(g.refusalLog)
		}
		g.refusalLog[key] = now
	}
	g.mu.Unlock()
	if due {
		g.log.Warn("membership: refusing node", "node", name, "addr", addr, "err", err)
	}
}

// delegate implements memberlist's delegate interfaces for a Gossip, keeping them out of the
// Gossip API.
type delegate struct{ g *Gossip }

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
	_ memberlist.AliveDelegate = (*delegate)(nil)
	_ memberlist.MergeDelegate = (*delegate)(nil)
	_ memberlist.PingDelegate  = (*delegate)(nil)
)

// NodeMeta returns the local metadata; checkMetaSize keeps it within limit.
func (d *delegate) NodeMeta(limit int) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	return d.g.wire
}

// NotifyMsg receives user messages: only leave announcements (see announceLeave).
func (d *delegate) NotifyMsg(buf []byte) {
	if len(buf) > 1 && buf[0] == msgLeaving {
		d.g.markLeaving(string(buf[1:]))
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState and MergeRemoteState carry Config.State through push/pull syncs.
func (d *delegate) LocalState(join bool) []byte {
	if d.g.cfg.State.Local == nil {
		return nil
	}
	return d.g.cfg.State.Local()
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	if d.g.cfg.State.Merge != nil && len(buf) > 0 {
		d.g.cfg.State.Merge(buf)
	}
}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.g.nodeAlive(n, true) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.g.nodeAlive(n, false) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.g.nodeGone(n) }

// NotifyAlive refuses foreign nodes: memberlist then ignores their alive messages, whether they
// arrive by gossip or push/pull.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	if n.Name == d.g.cfg.Name {
		return nil
	}
	return d.g.admit(n.Name, n.Address(), n.Meta, false)
}

// NotifyMerge refuses a join with a foreign cluster, on both sides of the join: the joining
// node's Join fails with the error, and the contacted node does not merge the joiner.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	d.g.mu.Lock()
	joining := d.g.joining
	d.g.mu.Unlock()
	for _, n := range peers {
		// Dead and left entries are never added by a merge, so only live ones matter.
		if n.Name == d.g.cfg.Name || n.State == memberlist.StateDead || n.State == memberlist.StateLeft {
			continue
		}
		if err := d.g.admit(n.Name, n.Address(), n.Meta, joining); err != nil {
			if joining {
				d.g.mu.Lock()
				d.g.refusals = append(d.g.refusals, err)
				d.g.mu.Unlock()
			}
			return err
		}
	}
	return nil
}

func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete reports a direct probe's ack: the peer is alive.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	d.g.markAlive(other.Name)
}
