package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/raftfsm"
	"github.com/ringkv/ringkv/storage"
)

// group is a partition's Raft group of in-process replicas connected by
// hashicorp/raft's in-memory transport; each replica has its own in-memory
// Pebble store. Run inside a synctest bubble, its time is virtual.
type group struct {
	t       *testing.T
	ids     []string
	reps    map[string]*Replica
	trans   map[string]*raft.InmemTransport
	stores  map[string]*storage.Store
	snaps   map[string]raft.SnapshotStore
	servers []Server
	edit    func(*Config)
}

func newGroup(t *testing.T, ids ...string) *group {
	t.Helper()
	return newGroupWith(t, nil, ids...)
}

// newGroupWith is newGroup with every replica's config changed by edit.
func newGroupWith(t *testing.T, edit func(*Config), ids ...string) *group {
	t.Helper()
	g := &group{t: t, ids: ids, edit: edit, reps: map[string]*Replica{}, trans: map[string]*raft.InmemTransport{},
		stores: map[string]*storage.Store{}, snaps: map[string]raft.SnapshotStore{}}
	for _, id := range ids {
		st, err := storage.Open(storage.TestConfig())
		if err != nil {
			t.Fatal(err)
		}
		g.stores[id] = st
		g.snaps[id] = raft.NewInmemSnapshotStore()
		g.servers = append(g.servers, Server{ID: id, Addr: id, Voter: true})
	}
	g.newTransports()
	for _, id := range ids {
		g.start(id)
		if err := g.reps[id].Bootstrap(g.servers); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(g.close)
	return g
}

// newTransports gives every replica a fresh in-memory transport, all connected
// (a closed replica closes its transport).
func (g *group) newTransports() {
	for _, id := range g.ids {
		_, tr := raft.NewInmemTransport(raft.ServerAddress(id))
		g.trans[id] = tr
	}
	for _, a := range g.ids {
		for _, b := range g.ids {
			if a != b {
				g.trans[a].Connect(raft.ServerAddress(b), g.trans[b])
			}
		}
	}
}

func (g *group) start(id string) {
	g.t.Helper()
	cfg := TestConfig()
	cfg.Partition = 7
	cfg.NodeID = id
	cfg.Store = g.stores[id]
	cfg.transport = g.trans[id]
	cfg.snapshots = g.snaps[id]
	cfg.Logger = slog.New(slog.DiscardHandler)
	if g.edit != nil {
		g.edit(&cfg)
	}
	r, err := Open(cfg)
	if err != nil {
		g.t.Fatal(err)
	}
	g.reps[id] = r
}

func (g *group) close() {
	for _, r := range g.reps {
		_ = r.Close()
	}
	for _, s := range g.stores {
		_ = s.Close()
	}
}

// isolate cuts id off from every other replica, both ways.
func (g *group) isolate(id string) {
	g.trans[id].DisconnectAll()
	for _, other := range g.ids {
		if other != id {
			g.trans[other].Disconnect(raft.ServerAddress(id))
		}
	}
}

// heal reconnects id with every other replica.
func (g *group) heal(id string) {
	for _, other := range g.ids {
		if other != id {
			g.trans[id].Connect(raft.ServerAddress(other), g.trans[other])
			g.trans[other].Connect(raft.ServerAddress(id), g.trans[id])
		}
	}
}

// leader waits (virtual time) for exactly one replica among ids to lead and
// be ready for strong reads, and returns it.
func (g *group) leader(among ...string) *Replica {
	g.t.Helper()
	if len(among) == 0 {
		among = g.ids
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var leaders []*Replica
		for _, id := range among {
			if r := g.reps[id]; r.IsLeader() {
				leaders = append(leaders, r)
			}
		}
		if len(leaders) == 1 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := leaders[0].awaitReady(ctx)
			cancel()
			if err == nil {
				return leaders[0]
			}
		}
		time.Sleep(50 * time.Millisecond) // virtual time inside the bubble
	}
	g.t.Fatalf("no single leader among %v", among)
	return nil
}

func put(key, value string, seq uint64) raftfsm.Command {
	return raftfsm.Command{Kind: raftfsm.KindPut, Key: []byte(key), Value: []byte(value), ClientID: 1, Seq: seq}
}

func propose(t *testing.T, r *Replica, cmd raftfsm.Command) raftfsm.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, _, err := r.Propose(ctx, []raftfsm.Command{cmd})
	if err != nil {
		t.Fatalf("propose on %s: %v", r.cfg.NodeID, err)
	}
	return res[0]
}

func TestElectsOneLeaderAndReplicates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		l := g.leader()
		res := propose(t, l, put("k", "v1", 1))
		if res.Status != raftfsm.StatusOK || res.Version == 0 {
			t.Fatalf("put result %+v", res)
		}
		rd, err := l.ReadStrong(context.Background(), []byte("k"))
		if err != nil || !rd.Found || string(rd.Value) != "v1" || rd.Version != res.Version || !rd.Leader {
			t.Fatalf("strong read on leader: %+v, %v", rd, err)
		}
		// Eventual reads on every replica converge to the write.
		for _, id := range g.ids {
			r := g.reps[id]
			if err := r.fsm.WaitApplied(context.Background(), res.Version); err != nil {
				t.Fatal(err)
			}
			rd, err := r.ReadEventual([]byte("k"))
			if err != nil || string(rd.Value) != "v1" || rd.AppliedIndex < res.Version {
				t.Fatalf("eventual read on %s: %+v, %v", id, rd, err)
			}
			if rd.Leader != (r == l) {
				t.Fatalf("receipt on %s says leader=%v", id, rd.Leader)
			}
		}
	})
}

func TestFollowerRefusesWritesAndStrongReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		l := g.leader()
		for _, id := range g.ids {
			f := g.reps[id]
			if f == l {
				continue
			}
			_, _, err := f.Propose(context.Background(), []raftfsm.Command{put("k", "v", 1)})
			var nl *NotLeaderError
			if !errors.As(err, &nl) || nl.LeaderID != l.cfg.NodeID {
				t.Fatalf("propose on follower %s: %v, want NotLeaderError naming %s", id, err, l.cfg.NodeID)
			}
			if _, err := f.ReadStrong(context.Background(), []byte("k")); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("strong read on follower %s: %v", id, err)
			}
		}
	})
}

// TestStrongReadNeverStale: once a write is acknowledged by a new leader, the
// deposed leader (cut off, still believing it leads for a moment) must not
// answer a strong read with the older value.
func TestStrongReadNeverStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		old := g.leader()
		propose(t, old, put("k", "old", 1))
		g.isolate(old.cfg.NodeID)
		var rest []string
		for _, id := range g.ids {
			if id != old.cfg.NodeID {
				rest = append(rest, id)
			}
		}
		nl := g.leader(rest...)
		res := propose(t, nl, put("k", "new", 2))

		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		rd, err := old.ReadStrong(ctx, []byte("k"))
		if err == nil {
			t.Fatalf("deposed leader served a strong read: %q (version %d); acknowledged version is %d", rd.Value, rd.Version, res.Version)
		}
		rd, err = nl.ReadStrong(context.Background(), []byte("k"))
		if err != nil || string(rd.Value) != "new" {
			t.Fatalf("new leader strong read: %+v %v", rd, err)
		}
		// The old leader's eventual read still answers, and its receipt shows it is behind.
		ev, err := old.ReadEventual([]byte("k"))
		if err != nil || ev.AppliedIndex >= res.Version {
			t.Fatalf("eventual read on cut-off node: %+v %v", ev, err)
		}
		// After healing it catches up.
		g.heal(old.cfg.NodeID)
		if err := old.fsm.WaitApplied(context.Background(), res.Version); err != nil {
			t.Fatal(err)
		}
		ev, _ = old.ReadEventual([]byte("k"))
		if string(ev.Value) != "new" {
			t.Fatalf("healed node reads %q", ev.Value)
		}
	})
}

func TestFailoverKeepsAcknowledgedWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		l := g.leader()
		for i := range 20 {
			propose(t, l, put(fmt.Sprintf("k%02d", i), fmt.Sprintf("v%d", i), uint64(i+1)))
		}
		dead := l.cfg.NodeID
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		g.isolate(dead)
		var rest []string
		for _, id := range g.ids {
			if id != dead {
				rest = append(rest, id)
			}
		}
		nl := g.leader(rest...)
		for i := range 20 {
			rd, err := nl.ReadStrong(context.Background(), []byte(fmt.Sprintf("k%02d", i)))
			if err != nil || string(rd.Value) != fmt.Sprintf("v%d", i) {
				t.Fatalf("after failover k%02d: %+v %v", i, rd, err)
			}
		}
		propose(t, nl, put("after", "x", 100))
	})
}

// TestLeaderGoneElectsEarly: with production timings (1 s heartbeat
// timeout), a follower stands for election only after 1 to 2 s of silence;
// told that the leader's node is down (LeaderGone), the followers elect a
// new leader after LeaderLeaseTimeout (500 ms) plus their stagger, and then
// go back to the normal heartbeat timeout.
func TestLeaderGoneElectsEarly(t *testing.T) {
	production := func(c *Config) {
		d := DefaultConfig()
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = d.HeartbeatTimeout, d.ElectionTimeout, d.LeaderLeaseTimeout
	}
	failover := func(t *testing.T, hint bool) time.Duration {
		var took time.Duration
		synctest.Test(t, func(t *testing.T) {
			g := newGroupWith(t, production, "a", "b", "c")
			l := g.leader()
			dead := l.cfg.NodeID
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			g.isolate(dead)
			killed := time.Now()
			var rest []string
			for _, id := range g.ids {
				if id != dead {
					rest = append(rest, id)
					if hint {
						g.reps[id].LeaderGone(dead, "test")
					}
				}
			}
			g.leader(rest...)
			took = time.Since(killed)
			// The heartbeat timeout is back to normal once a leader is known.
			deadline := time.Now().Add(10 * time.Second)
			for _, id := range rest {
				for g.reps[id].raft.ReloadableConfig().HeartbeatTimeout != DefaultConfig().HeartbeatTimeout {
					if time.Now().After(deadline) {
						t.Fatalf("%s: heartbeat timeout %v, not restored to %v", id, g.reps[id].raft.ReloadableConfig().HeartbeatTimeout, DefaultConfig().HeartbeatTimeout)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
		return took
	}
	without, with := failover(t, false), failover(t, true)
	t.Logf("new leader ready %v after the leader died without the hint, %v with it", without, with)
	if without < DefaultConfig().HeartbeatTimeout {
		t.Errorf("without the hint a leader was elected after %v; Raft should wait at least the heartbeat timeout", without)
	}
	if with >= DefaultConfig().HeartbeatTimeout {
		t.Errorf("with the hint the new leader took %v; want under the %v heartbeat timeout", with, DefaultConfig().HeartbeatTimeout)
	}
}

func TestQuorumLossFailsFastButEventualReadsAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		l := g.leader()
		propose(t, l, put("k", "v", 1))
		for _, id := range g.ids {
			g.isolate(id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, _, werr := l.Propose(ctx, []raftfsm.Command{put("k", "w", 2)})
		if werr == nil {
			t.Fatal("write succeeded without a quorum")
		}
		if _, err := l.ReadStrong(ctx, []byte("k")); err == nil {
			t.Fatal("strong read succeeded without a quorum")
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("failing took %v, longer than the request deadline", time.Since(start))
		}
		for _, id := range g.ids {
			rd, err := g.reps[id].ReadEventual([]byte("k"))
			if err != nil {
				t.Fatalf("eventual read on %s without quorum: %v", id, err)
			}
			if rd.Found && !bytes.Equal(rd.Value, []byte("v")) && !bytes.Equal(rd.Value, []byte("w")) {
				t.Fatalf("eventual read on %s returned a value never written: %q", id, rd.Value)
			}
		}
	})
}

func TestRetriedWriteAppliesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		l := g.leader()
		first := propose(t, l, put("k", "v1", 5))
		again := propose(t, l, put("k", "v1", 5))
		if again.Version != first.Version {
			t.Fatalf("retry applied again: first version %d, retry version %d", first.Version, again.Version)
		}
	})
}

func TestRestartResumesFromStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		l := g.leader()
		res := propose(t, l, put("k", "v", 1))
		for _, id := range g.ids {
			if err := g.reps[id].Close(); err != nil {
				t.Fatal(err)
			}
		}
		g.newTransports()
		for _, id := range g.ids {
			g.start(id)
			if err := g.reps[id].Bootstrap(g.servers); !errors.Is(err, ErrBootstrapped) {
				t.Fatalf("second bootstrap on %s: %v, want ErrBootstrapped", id, err)
			}
		}
		l = g.leader()
		rd, err := l.ReadStrong(context.Background(), []byte("k"))
		if err != nil || string(rd.Value) != "v" || rd.Version != res.Version {
			t.Fatalf("after restart: %+v %v", rd, err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	base := TestConfig()
	base.NodeID = "a"
	st, err := storage.Open(storage.TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	base.Store = st
	base.SnapshotDir = t.TempDir()
	_, tr := raft.NewInmemTransport("a")
	base.transport = tr
	cases := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"valid", func(*Config) {}, true},
		{"no node id", func(c *Config) { c.NodeID = "" }, false},
		{"no store", func(c *Config) { c.Store = nil }, false},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout }, false},
		{"zero max append", func(c *Config) { c.MaxAppendEntries = 0 }, false},
		{"no logger", func(c *Config) { c.Logger = nil }, false},
		{"applies written through", func(c *Config) { c.ApplyFlushDelay = 0; c.ApplyWriteBack = 0 }, true},
		{"negative apply flush delay", func(c *Config) { c.ApplyFlushDelay = -time.Second }, false},
		{"apply flush delay too long", func(c *Config) { c.ApplyFlushDelay = 2 * MaxApplyFlushDelay }, false},
		{"write-back without a size", func(c *Config) { c.ApplyWriteBack = 0 }, false},
		{"write-back too large", func(c *Config) { c.ApplyWriteBack = raftfsm.MaxWriteBack + 1 }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestConcurrentProposals: many concurrent writes each get their own result
// and are all readable, however they were spread over Raft entries (they
// rarely share one: TestCoalescedProposalsGetTheirOwnResults forces that).
func TestConcurrentProposals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		l := g.leader()
		before := l.raft.LastIndex()
		const writers = 200
		type out struct {
			res raftfsm.Result
			err error
		}
		outs := make(chan out, writers)
		for i := range writers {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				res, _, err := l.Propose(ctx, []raftfsm.Command{put(fmt.Sprintf("c%03d", i), fmt.Sprint(i), uint64(1000+i))})
				var r raftfsm.Result
				if err == nil {
					r = res[0]
				}
				outs <- out{r, err}
			}()
		}
		versions := map[uint64]int{}
		for range writers {
			o := <-outs
			if o.err != nil || o.res.Status != raftfsm.StatusOK {
				t.Fatalf("write failed: %+v %v", o.res, o.err)
			}
			versions[o.res.Version]++
		}
		entries := l.raft.LastIndex() - before
		for i := range writers {
			rd, err := l.ReadStrong(context.Background(), []byte(fmt.Sprintf("c%03d", i)))
			if err != nil || string(rd.Value) != fmt.Sprint(i) {
				t.Fatalf("c%03d: %+v %v", i, rd, err)
			}
		}
		t.Logf("%d writes in %d entries (%d distinct versions)", writers, entries, len(versions))
	})
}

func TestTakeBatchRespectsLimits(t *testing.T) {
	mk := func(n, valueSize int) *proposal {
		cmds := make([]raftfsm.Command, n)
		for i := range cmds {
			cmds[i] = raftfsm.Command{Kind: raftfsm.KindPut, Key: []byte{byte(i)}, Value: make([]byte, valueSize)}
		}
		return &proposal{cmds: cmds}
	}
	cases := []struct {
		name                string
		queue               []*proposal
		wantBatch, wantCmds int
	}{
		{"alone", []*proposal{mk(1, 10)}, 1, 1},
		{"takes all waiting", []*proposal{mk(1, 10), mk(1, 10), mk(3, 10), mk(1, 10)}, 4, 6},
		{"stops at the command limit", []*proposal{mk(200, 1), mk(50, 1), mk(50, 1), mk(1, 1)}, 3, 300},
		{"stops at the byte limit", []*proposal{mk(1, maxBatchBytes/2), mk(1, maxBatchBytes/2), mk(1, 10)}, 2, 2},
		{"a first proposal over the limits goes alone", []*proposal{mk(300, 1), mk(1, 1)}, 1, 300},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, cmds := takeBatch(tc.queue)
			if k != tc.wantBatch || len(cmds) != tc.wantCmds {
				t.Fatalf("batch %d proposals, %d commands; want %d, %d", k, len(cmds), tc.wantBatch, tc.wantCmds)
			}
			// Commands keep proposal order, so results can be split back.
			off := 0
			for _, p := range tc.queue[:k] {
				for i := range p.cmds {
					if &cmds[off+i].Key[0] != &p.cmds[i].Key[0] {
						t.Fatalf("command %d out of order", off+i)
					}
				}
				off += len(p.cmds)
			}
		})
	}
}

// TestPipelineReplicationOff pins the fix for the hang we hit in
// Replica.Close (see newNetworkTransport): the transport must refuse
// pipelining, so Raft replicates with plain, synchronous appends.
func TestPipelineReplicationOff(t *testing.T) {
	cfg := TestConfig()
	cfg.Layer = nopLayer{done: make(chan struct{})}
	tr := newNetworkTransport(cfg, hclog.NewNullLogger())
	defer tr.Close()
	if _, err := tr.AppendEntriesPipeline("n2", "127.0.0.1:1"); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v; want ErrPipelineReplicationNotSupported (hashicorp/raft#612)", err)
	}
}

// nopLayer is a StreamLayer that never connects.
type nopLayer struct{ done chan struct{} }

func (l nopLayer) Accept() (net.Conn, error) { <-l.done; return nil, net.ErrClosed }
func (l nopLayer) Close() error              { close(l.done); return nil }
func (nopLayer) Addr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (nopLayer) Dial(string, time.Duration) (net.Conn, error) {
	return nil, errors.New("nopLayer does not dial")
}

// TestAppliedWritesReachTheStore: with ApplyFlushDelay, an applied write
// waits in memory (reads see it) and the flush timer writes it to every
// replica's store within the delay, where a fresh state machine on the same
// store finds it.
func TestAppliedWritesReachTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGroup(t, "a", "b", "c")
		res := propose(t, g.leader(), put("k", "v", 1))
		time.Sleep(TestConfig().ApplyFlushDelay + 10*time.Millisecond)
		synctest.Wait()
		for _, id := range g.ids {
			cfg := raftfsm.DefaultConfig()
			cfg.Partition, cfg.DB = 7, g.stores[id].DB()
			f, err := raftfsm.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			v, ver, err := f.Get([]byte("k"))
			if f.AppliedIndex() < res.Version || err != nil || string(v) != "v" || ver != res.Version {
				t.Fatalf("%s's store after the flush delay: applied %d, k = %q@%d, %v; want v@%d",
					id, f.AppliedIndex(), v, ver, err, res.Version)
			}
			f.Close()
		}
	})
}

func TestNewFlushingFSMNeedsWriteBackAndDelay(t *testing.T) {
	st, err := storage.Open(storage.TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fc := raftfsm.DefaultConfig()
	fc.DB = st.DB()
	for _, tc := range []struct {
		writeBack int
		delay     time.Duration
	}{{0, time.Second}, {1 << 10, 0}} {
		fc.WriteBack = tc.writeBack
		if _, _, err := NewFlushingFSM(fc, tc.delay); err == nil || !strings.Contains(err.Error(), "needs WriteBack and delay above 0") {
			t.Fatalf("NewFlushingFSM(WriteBack %d, delay %v) = %v, want a refusal", tc.writeBack, tc.delay, err)
		}
	}
}
