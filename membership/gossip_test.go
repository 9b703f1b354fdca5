package membership

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// waitFor polls cond until it holds, failing the test if it does not within d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		<-tick.C
	}
}

// testLogger keeps a node's logs and prints them only if the test fails. Writes after the test
// (memberlist timers may still fire) go to the buffer only.
func testLogger(t *testing.T, name string) *slog.Logger {
	t.Helper()
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() { // registered before the node's Shutdown, so it runs after it
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("logs of %s:\n%s", name, buf.String())
		}
	})
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func testMeta(name string) Meta {
	return Meta{Name: name, ClientAddr: name + ":7101", PeerAddr: name + ":7201",
		Partitions: 64, Replicas: 3, BootNonce: uint64(len(name)) << 32}
}

// testLabel isolates the nodes of one test from other tests and test processes (go test runs
// packages in parallel) that reuse the same loopback ports and node names.
func testLabel(t *testing.T) string {
	return fmt.Sprintf("%d/%s", os.Getpid(), t.Name())
}

// startNode starts a node with TestConfig on a free loopback port; edit may change the config.
func startNode(t *testing.T, name string, edit func(*Config)) *Gossip {
	t.Helper()
	cfg := TestConfig()
	cfg.Name = name
	cfg.Label = testLabel(t)
	cfg.Meta = testMeta(name)
	cfg.Logger = testLogger(t, name)
	if edit != nil {
		edit(&cfg)
	}
	g, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

// startCluster starts n nodes named n1..nN, joins them through n1 and waits until every node
// sees every node alive.
func startCluster(t *testing.T, n int, edit func(*Config)) []*Gossip {
	t.Helper()
	nodes := make([]*Gossip, n)
	for i := range nodes {
		nodes[i] = startNode(t, fmt.Sprintf("n%d", i+1), edit)
		if i > 0 {
			if _, err := nodes[i].Join([]string{nodes[0].Local().Addr}); err != nil {
				t.Fatalf("n%d joins n1: %v", i+1, err)
			}
		}
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("every node sees %d alive", n), func() bool {
		for _, g := range nodes {
			if countStatus(g, StatusAlive) != n {
				return false
			}
		}
		return true
	})
	return nodes
}

func countStatus(g *Gossip, s Status) int {
	n := 0
	for _, m := range g.Members() {
		if m.Status == s {
			n++
		}
	}
	return n
}

func member(g *Gossip, name string) (Member, bool) {
	for _, m := range g.Members() {
		if m.Meta.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func TestJoinThreeNodes(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	for _, g := range nodes {
		ms := g.Members()
		names := []string{ms[0].Meta.Name, ms[1].Meta.Name, ms[2].Meta.Name}
		if !slices.Equal(names, []string{"n1", "n2", "n3"}) {
			t.Fatalf("%s: members %v, want sorted n1 n2 n3", g.Local().Meta.Name, names)
		}
		for i, m := range ms {
			want := testMeta(m.Meta.Name)
			want.GossipAddr = nodes[i].Local().Addr
			if !reflect.DeepEqual(m.Meta, want) || m.Addr != want.GossipAddr || m.Since.IsZero() {
				t.Fatalf("%s sees %+v, want meta %+v at %s", g.Local().Meta.Name, m, want, want.GossipAddr)
			}
		}
	}

	// UpdateMeta spreads, and Changes fires on the others.
	for _, g := range nodes {
		drain(g.Changes())
	}
	m := nodes[1].Local().Meta
	m.ClusterID, m.Leading, m.Draining = "c1", LeadingBitmap([]uint32{3, 17}), true
	if err := nodes[1].UpdateMeta(m); err != nil {
		t.Fatal(err)
	}
	for _, g := range nodes {
		waitFor(t, 5*time.Second, g.Local().Meta.Name+" sees n2's new meta", func() bool {
			got, _ := member(g, "n2")
			return reflect.DeepEqual(got.Meta, m) && got.Status == StatusAlive
		})
		// The table changes before Changes fires (notify runs after the
		// lock is released), so the notification may trail what waitFor saw.
		select {
		case <-g.Changes():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Changes did not fire on a meta update", g.Local().Meta.Name)
		}
	}
	if got := nodes[1].Local().Meta; !got.Leads(17) || got.Leads(4) {
		t.Fatalf("Local().Meta.Leading = %x", got.Leading)
	}
}

func TestFailureDetection(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	survivors, victim := nodes[:2], nodes[2]
	for _, g := range survivors {
		drain(g.Changes())
	}
	stopped := time.Now()
	if err := victim.Shutdown(); err != nil {
		t.Fatal(err)
	}

	// Record every status each survivor reports for n3 until both report it dead.
	seen := make([][]Status, len(survivors))
	waitFor(t, 10*time.Second, "both survivors report n3 dead", func() bool {
		done := true
		for i, g := range survivors {
			m, _ := member(g, "n3")
			if k := len(seen[i]); k == 0 || seen[i][k-1] != m.Status {
				seen[i] = append(seen[i], m.Status)
			}
			done = done && m.Status == StatusDead
		}
		return done
	})
	t.Logf("dead on both survivors %v after Shutdown", time.Since(stopped).Round(time.Millisecond))
	// The first survivor to suspect n3 stays suspect for at least
	// memberlist's shortest suspicion timeout (SuspicionMult probe
	// intervals: 600 ms with TestConfig), so the polling above sees it. The
	// other starts its suspicion timer on that node's word; its own failed
	// probe (which makes it report suspect) can come late in that timer, or
	// after n3 was declared dead, when memberlist is slow: it may go from
	// alive straight to dead, or be suspect too briefly to be polled.
	suspected := false
	for i, g := range survivors {
		switch {
		case slices.Equal(seen[i], []Status{StatusAlive, StatusSuspect, StatusDead}),
			slices.Equal(seen[i], []Status{StatusSuspect, StatusDead}):
			suspected = true
		case slices.Equal(seen[i], []Status{StatusAlive, StatusDead}):
		default:
			t.Errorf("n%d saw n3 go %v, want alive, suspect, dead", i+1, seen[i])
		}
		m, _ := member(g, "n3")
		if m.Since.Before(stopped) || m.Since.After(time.Now()) {
			t.Errorf("n%d: Since %v is not between Shutdown and now", i+1, m.Since)
		}
		select { // notify runs after the table changed: it may trail the poll
		case <-g.Changes():
		case <-time.After(5 * time.Second):
			t.Errorf("n%d: Changes did not fire", i+1)
		}
		// A loaded machine can make one survivor suspect the other for a
		// probe or two (100 ms probe timeout); it must see it alive again.
		waitFor(t, 5*time.Second, fmt.Sprintf("n%d sees n1 and n2 alive", i+1), func() bool {
			return countStatus(g, StatusAlive) == 2
		})
	}
	if !suspected {
		t.Errorf("no survivor reported n3 suspect before dead: %v", seen)
	}

	// Forget drops the dead node only.
	survivors[0].Forget("n3")
	survivors[0].Forget("n2")
	survivors[0].Forget("n1")
	if _, ok := member(survivors[0], "n3"); ok {
		t.Error("n3 still listed after Forget")
	}
	if got := len(survivors[0].Members()); got != 2 {
		t.Errorf("%d members after Forget, want 2 (alive and self kept)", got)
	}
}

func TestLeave(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	leaver := nodes[2]
	if err := leaver.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, g := range nodes[:2] {
		waitFor(t, 5*time.Second, g.Local().Meta.Name+" reports n3 left", func() bool {
			m, _ := member(g, "n3")
			return m.Status == StatusLeft
		})
	}
	if s := leaver.Local().Status; s != StatusLeft {
		t.Errorf("leaver reports itself %s, want left", s)
	}
	if err := leaver.UpdateMeta(testMeta("n3")); !errors.Is(err, ErrLeft) {
		t.Errorf("UpdateMeta after Leave = %v, want ErrLeft", err)
	}
	if err := leaver.Leave(time.Second); err != nil {
		t.Errorf("second Leave = %v, want nil", err)
	}
}

func TestRefusal(t *testing.T) {
	tests := []struct {
		name      string
		clusterID string // of the cluster, set with UpdateMeta after the nodes joined
		joiner    func(*Meta)
		wantErr   error // nil: the joiner is admitted
		wantText  string
	}{
		{"other cluster id", "c1", func(m *Meta) { m.ClusterID = "c2" }, ErrClusterMismatch, "--data-dir"},
		{"other partition count", "c1", func(m *Meta) { m.Partitions = 32 }, ErrPartitionMismatch, "start n4 with --partitions 64"},
		{"other partition count, no cluster ids", "", func(m *Meta) { m.Partitions = 128 }, ErrPartitionMismatch, "start n4 with --partitions 64"},
		{"empty cluster id joins", "c1", func(m *Meta) { m.ClusterID = "" }, nil, ""},
		{"cluster without id admits any id", "", func(m *Meta) { m.ClusterID = "c2" }, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nodes := startCluster(t, 3, nil)
			if tt.clusterID != "" {
				for _, g := range nodes {
					m := g.Local().Meta
					m.ClusterID = tt.clusterID
					if err := g.UpdateMeta(m); err != nil {
						t.Fatal(err)
					}
				}
			}
			joiner := startNode(t, "n4", func(c *Config) { tt.joiner(&c.Meta) })
			n, err := joiner.Join([]string{nodes[1].Local().Addr})
			if tt.wantErr == nil {
				if err != nil || n != 1 {
					t.Fatalf("Join = %d, %v; want 1, nil", n, err)
				}
				for _, g := range nodes {
					waitFor(t, 5*time.Second, g.Local().Meta.Name+" sees n4 alive", func() bool {
						m, _ := member(g, "n4")
						return m.Status == StatusAlive
					})
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || n != 0 {
				t.Fatalf("Join = %d, %v; want 0, %v", n, err, tt.wantErr)
			}
			t.Logf("Join error: %v", err)
			if !strings.Contains(err.Error(), nodes[1].Local().Addr) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not name the address and %q", err, tt.wantText)
			}
			// The cluster refuses it when it is the one joining, too.
			if _, err := nodes[0].Join([]string{joiner.Local().Addr}); !errors.Is(err, tt.wantErr) {
				t.Errorf("cluster node joining n4 = %v, want %v", err, tt.wantErr)
			}
			// Let gossip run: once an update from n1 reached every node, n4 would have too.
			m := nodes[0].Local().Meta
			m.Draining = true
			if err := nodes[0].UpdateMeta(m); err != nil {
				t.Fatal(err)
			}
			for _, g := range nodes {
				waitFor(t, 5*time.Second, "n1's update spreads", func() bool {
					got, _ := member(g, "n1")
					return got.Meta.Draining
				})
				if _, ok := member(g, "n4"); ok {
					t.Errorf("%s lists the refused node n4", g.Local().Meta.Name)
				}
			}
			if got := len(joiner.Members()); got != 1 {
				t.Errorf("refused node sees %d members, want only itself", got)
			}
		})
	}
}

// TestJoinErrors checks that failures name each address, and that one reachable address is enough.
func TestJoinErrors(t *testing.T) {
	g := startNode(t, "n1", nil)
	other := startNode(t, "n2", nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()

	n, err := g.Join([]string{closed, "256.0.0.1:1"})
	if err == nil || n != 0 || !strings.Contains(err.Error(), closed) || !strings.Contains(err.Error(), "256.0.0.1:1") {
		t.Fatalf("Join(unreachable) = %d, %v; want an error naming both addresses", n, err)
	}
	t.Logf("Join error: %v", err)
	if n, err := g.Join([]string{closed, other.Local().Addr}); err != nil || n != 1 {
		t.Fatalf("Join(closed, reachable) = %d, %v; want 1, nil", n, err)
	}
	if n, err := g.Join([]string{g.Local().Addr}); err != nil || n != 1 {
		t.Fatalf("Join(own address) = %d, %v; want 1, nil (a --join list may name the node itself)", n, err)
	}
	if n, err := g.Join(nil); err != nil || n != 0 {
		t.Fatalf("Join(nil) = %d, %v", n, err)
	}
}

func TestStartAndUpdateMetaErrors(t *testing.T) {
	cfg := TestConfig()
	cfg.Name = "n1"
	cfg.Meta = testMeta("n1")
	cfg.Meta.Leading = make([]byte, MetaMaxSize)
	if _, err := Start(cfg); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("Start with huge meta = %v, want ErrMetaTooLarge", err)
	}
	cfg.Name = ""
	if _, err := Start(cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Start without name = %v, want ErrInvalidConfig", err)
	}

	g := startNode(t, "n1", nil)
	before := g.Local().Meta
	big := before
	big.Leading = make([]byte, MetaMaxSize)
	if err := g.UpdateMeta(big); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("UpdateMeta(huge) = %v, want ErrMetaTooLarge", err)
	}
	other := before
	other.Name = "n2"
	if err := g.UpdateMeta(other); !errors.Is(err, ErrInvalidMeta) {
		t.Fatalf("UpdateMeta(other name) = %v, want ErrInvalidMeta", err)
	}
	if got := g.Local().Meta; !reflect.DeepEqual(got, before) {
		t.Fatalf("rejected updates changed the meta: %+v", got)
	}
}

func TestShutdown(t *testing.T) {
	g := startNode(t, "n1", nil)
	for range 2 {
		if err := g.Shutdown(); err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
	}
	if _, err := g.Join([]string{"127.0.0.1:1"}); !errors.Is(err, ErrShutdown) {
		t.Errorf("Join after Shutdown = %v", err)
	}
	if err := g.UpdateMeta(testMeta("n1")); !errors.Is(err, ErrShutdown) {
		t.Errorf("UpdateMeta after Shutdown = %v", err)
	}
	if err := g.Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Errorf("Leave after Shutdown = %v", err)
	}
	if got := g.Members(); len(got) != 1 || got[0].Meta.Name != "n1" {
		t.Errorf("Members after Shutdown = %+v", got)
	}
}

// TestStatusTransitions drives the table's handlers directly with an injected clock.
func TestStatusTransitions(t *testing.T) {
	var mu sync.Mutex
	clock := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	g := startNode(t, "n1", func(c *Config) { c.Now = now })
	node := func(name string, leaving bool) *memberlist.Node {
		return &memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 9), Port: 7301,
			Meta: encodeMeta(testMeta(name), leaving)}
	}
	status := func(name string) (Status, time.Time) {
		m, _ := member(g, name)
		return m.Status, m.Since
	}

	d := &delegate{g: g}
	leaving := append([]byte{msgLeaving}, "x"...)
	suspect := func() { g.observeLog("Suspect x has failed, no acks received") }
	steps := []struct {
		name  string
		do    func()
		x     Status // status of x afterwards
		moved bool   // whether Since moved to the current clock
	}{
		{"join", func() { d.NotifyJoin(node("x", false)) }, StatusAlive, true},
		{"own probe fails", suspect, StatusSuspect, true},
		{"suspected again", suspect, StatusSuspect, false},
		{"probe acked", func() { d.NotifyPingComplete(node("x", false), time.Millisecond, nil) }, StatusAlive, true},
		{"ack while alive", func() { g.markAlive("x") }, StatusAlive, false},
		{"suspect", suspect, StatusSuspect, true},
		{"young suspicion kept", func() { g.expireSuspicions(map[string]bool{"x": true}) }, StatusSuspect, false},
		{"old suspicion of a dead node kept", func() {
			advance(time.Hour)
			g.expireSuspicions(map[string]bool{})
		}, StatusSuspect, false},
		{"old suspicion of a live node ends", func() { g.expireSuspicions(map[string]bool{"x": true}) }, StatusAlive, true},
		{"dies", func() { d.NotifyLeave(node("x", false)) }, StatusDead, true},
		{"suspect line for a dead node", suspect, StatusDead, false},
		{"comes back", func() { d.NotifyJoin(node("x", false)) }, StatusAlive, true},
		{"leave flag in meta", func() { d.NotifyUpdate(node("x", true)) }, StatusAlive, false},
		{"goes", func() { d.NotifyLeave(node("x", true)) }, StatusLeft, true},
		{"new life", func() { d.NotifyJoin(node("x", false)) }, StatusAlive, true},
		{"leave message", func() { d.NotifyMsg(leaving) }, StatusAlive, false},
		{"update without flag keeps the announcement", func() { d.NotifyUpdate(node("x", false)) }, StatusAlive, false},
		{"goes after the message", func() { d.NotifyLeave(node("x", false)) }, StatusLeft, true},
		{"another life", func() { d.NotifyJoin(node("x", false)) }, StatusAlive, true},
		{"dies again", func() { d.NotifyLeave(node("x", false)) }, StatusDead, true},
		{"late leave message", func() { d.NotifyMsg(leaving) }, StatusLeft, true},
	}
	for _, s := range steps {
		drain(g.Changes())
		_, before := status("x")
		advance(time.Second)
		s.do()
		got, since := status("x")
		if got != s.x {
			t.Fatalf("%s: x is %s, want %s", s.name, got, s.x)
		}
		if moved := since != before; moved != s.moved || (moved && !since.Equal(now())) {
			t.Fatalf("%s: Since %v -> %v, want moved=%v to %v", s.name, before, since, s.moved, now())
		}
		if s.moved {
			select {
			case <-g.Changes():
			default:
				t.Fatalf("%s: no Changes notification", s.name)
			}
		}
	}
	if s, _ := status("n1"); s != StatusAlive {
		t.Fatalf("self is %s", s)
	}
	g.observeLog("Suspect n1 has failed, no acks received")
	d.NotifyMsg(append([]byte{msgLeaving}, "n1"...))
	if s, _ := status("n1"); s != StatusAlive {
		t.Fatalf("self became %s", s)
	}
}

// TestRefusalIsLoggedOnce checks the rate limit of refusal logs.
func TestRefusalIsLoggedOnce(t *testing.T) {
	rec := &recorder{}
	g := startNode(t, "n1", func(c *Config) { c.Logger = slog.New(rec); c.Meta.ClusterID = "c1" })
	d := &delegate{g: g}
	foreign := testMeta("n9")
	foreign.ClusterID = "c9"
	peer := &memberlist.Node{Name: "n9", Addr: net.IPv4(127, 0, 0, 9), Port: 1, Meta: encodeMeta(foreign, false)}
	for range 5 {
		if err := d.NotifyAlive(peer); !errors.Is(err, ErrClusterMismatch) {
			t.Fatalf("NotifyAlive = %v", err)
		}
	}
	if err := d.NotifyMerge([]*memberlist.Node{peer}); !errors.Is(err, ErrClusterMismatch) {
		t.Fatalf("NotifyMerge = %v", err)
	}
	garbage := &memberlist.Node{Name: "x", Addr: net.IPv4(127, 0, 0, 9), Port: 2, Meta: []byte("{}")}
	if err := d.NotifyAlive(garbage); !errors.Is(err, ErrInvalidMeta) {
		t.Fatalf("NotifyAlive(garbage) = %v", err)
	}
	var warns []string
	for _, r := range rec.all() {
		if r.Level == slog.LevelWarn && r.Message == "membership: refusing node" {
			warns = append(warns, r.Message)
		}
	}
	if len(warns) != 2 {
		t.Fatalf("%d refusal warnings, want 2 (n9 once, x once)", len(warns))
	}
}

// TestMeasureDeadDetection reports how long the survivors take to declare a crashed node dead.
// It is slow, so it runs only with MEMBERSHIP_MEASURE=1.
func TestMeasureDeadDetection(t *testing.T) {
	if os.Getenv("MEMBERSHIP_MEASURE") == "" {
		t.Skip("set MEMBERSHIP_MEASURE=1 to measure")
	}
	configs := []struct {
		name string
		cfg  func() Config
	}{
		{"DefaultConfig", func() Config { c := DefaultConfig(); c.BindPort = 0; return c }},
		{"TestConfig", TestConfig},
	}
	for _, c := range configs {
		for _, size := range []int{3, 5} {
			for run := range 3 {
				t.Run(fmt.Sprintf("%s/%d-nodes/run-%d", c.name, size, run), func(t *testing.T) {
					nodes := startCluster(t, size, func(cfg *Config) {
						meta, label := cfg.Meta, cfg.Label
						*cfg = c.cfg()
						cfg.Name, cfg.Meta, cfg.Label = meta.Name, meta, label
					})
					stopped := time.Now()
					_ = nodes[size-1].Shutdown()
					victim := fmt.Sprintf("n%d", size)
					var firstSuspect, firstDead time.Duration
					waitFor(t, 30*time.Second, "all survivors report the victim dead", func() bool {
						dead := true
						for _, g := range nodes[:size-1] {
							m, _ := member(g, victim)
							if m.Status == StatusSuspect && firstSuspect == 0 {
								firstSuspect = time.Since(stopped)
							}
							if m.Status == StatusDead && firstDead == 0 {
								firstDead = time.Since(stopped)
							}
							dead = dead && m.Status == StatusDead
						}
						return dead
					})
					r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
					t.Logf("first suspect %v, first dead %v, dead on all survivors %v",
						r(firstSuspect), r(firstDead), r(time.Since(stopped)))
				})
			}
		}
	}
}

// TestStateExchange: Config.State travels in push/pull syncs both ways, on
// join and then periodically, so state set after the join still arrives.
func TestStateExchange(t *testing.T) {
	var mu sync.Mutex
	local := map[string]string{}
	got := map[string][]string{}
	edit := func(name string) func(*Config) {
		return func(c *Config) {
			c.PushPullInterval = 200 * time.Millisecond
			c.State = StateExchange{
				Local: func() []byte { mu.Lock(); defer mu.Unlock(); return []byte(local[name]) },
				Merge: func(b []byte) { mu.Lock(); defer mu.Unlock(); got[name] = append(got[name], string(b)) },
			}
		}
	}
	mu.Lock()
	local["a"] = "from a"
	mu.Unlock()
	a := startNode(t, "a", edit("a"))
	b := startNode(t, "b", edit("b"))
	if _, err := b.Join([]string{a.Local().Addr}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	local["b"] = "from b" // set after the join: only a periodic sync carries it
	mu.Unlock()
	waitFor(t, 10*time.Second, "each side merged the other's state", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(got["b"], "from a") && slices.Contains(got["a"], "from b")
	})
	mu.Lock()
	defer mu.Unlock()
	for _, s := range append(got["a"], got["b"]...) {
		if s == "" {
			t.Fatalf("an empty state was merged: %q", got)
		}
	}
}
