package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ringkv/ringkv/raftfsm"
	"github.com/ringkv/ringkv/replica"
	"github.com/ringkv/ringkv/storage"
)

// The node-level engine: every Raft group of a node is a go.etcd.io/raft/v3
// RawNode (a state machine without goroutines), and one scheduler goroutine
// per node drives them all. Each pass of the scheduler steps every message
// and proposal that arrived into its group, finishes the log writes that
// became durable (land), and then handles every group with work ready that
// is not waiting for its previous write, together:
//
//   - the leaders' appends and heartbeats are queued to their peers at once
//     (a leader may replicate while its own log write is in flight, as etcd's
//     server does; raft counts the leader's own copy only after Advance);
//   - their new entries and changed hard states go into one Pebble batch,
//     applied at once and synced in the background (a syncer goroutine per
//     node waits for the fsync), so the next pass runs meanwhile;
//   - once the write is durable, the remaining messages (answers, votes) are
//     queued, committed entries go to the node's applier (raftfsm, one
//     Pebble batch per group, as RingKV applies today), which answers the
//     proposals, and Advance lets the group take its next Ready;
//   - each peer's queued messages leave in one frame, one write.
//
// It is a prototype to measure what such an engine costs per put next to
// RingKV's hashicorp/raft groups (see README.md). It has what a put needs
// and nothing else: no snapshots, no log truncation, no restart, no
// membership changes after bootstrap, no reads.

const (
	// tickInterval is one Raft tick. Heartbeats go every tick and an
	// election starts after 10-20 ticks of silence: 100 ms and 1-2 s, as
	// RingKV's groups heartbeat (HeartbeatTimeout/10) and time out.
	tickInterval  = 100 * time.Millisecond
	heartbeatTick = 1
	electionTick  = 10
)

// Keys, laid out as package storage lays out RingKV's Raft logs, so that the
// memtable sees the same key shapes: spacePartition, pid, kind, suffix.
const (
	kindLog   byte = 0x01
	kindState byte = 0x02
)

func logPrefix(pid uint32) []byte { return append(storage.PartitionPrefix(pid), kindLog) }

func stateKey(pid uint32) []byte {
	return append(append(storage.PartitionPrefix(pid), kindState), "hardstate"...)
}

// errNotLeader is returned for a put to a group whose leader is not known.
var errNotLeader = errors.New("multiraft: no leader known for the partition")

// mrCluster is three nodes of the engine.
type mrCluster struct {
	nodes [3]*mrNode
}

// mrNode is one node: its store, its groups, its peers and its scheduler.
type mrNode struct {
	id     uint64 // Raft id, 1..3
	store  *storage.Store
	db     *pebble.DB
	groups []*group
	peers  map[uint64]*peer
	links  *links

	mu     sync.Mutex
	inbox  []inbound
	props  []*proposal
	ops    []func()      // run by the scheduler at the start of its next pass
	landed []*flight     // synced log writes, from the syncer
	wake   chan struct{} // capacity 1: the scheduler has work

	nextTag atomic.Uint64
	started bool          // run was started (set before it is)
	syncs   atomic.Uint64 // log batches committed synced
	stop    chan struct{}
	done    chan struct{}

	flights chan *flight  // scheduler to syncer, in commit order
	synced  chan struct{} // closed when the syncer has stopped
	fault   error         // why the scheduler stopped, if it failed

	applyCh chan applyJob // scheduler to applier, in commit order
	applied chan struct{} // closed when the applier has stopped
}

// group is one partition's Raft group on a node.
type group struct {
	pid     uint32
	logKey  []byte // prefix of its log keys (the index follows)
	hsKey   []byte // its hard state's key
	hsTerm  uint64 // term and vote of the hard state last written
	hsVote  uint64
	rn      *raft.RawNode
	mem     *raft.MemoryStorage
	fsm     *raftfsm.FSM
	flush   *time.Timer // writes fsm's pending state
	leader  atomic.Bool
	flying  bool // its last Ready waits for a log write (scheduler only)
	pmu     sync.Mutex
	pending map[uint64]*proposal // by tag
}

type ready struct {
	g  *group
	rd raft.Ready
}

// inbound is a message received for a group, or to send for one.
type inbound struct {
	pid uint32
	m   raftpb.Message
}

// proposal is one put waiting for its entry to be applied.
type proposal struct {
	pid  uint32
	tag  uint64
	data []byte // tag (8 bytes) + raftfsm batch
	done chan error
}

func (p *proposal) finish(err error) { p.done <- err }

// newMultiraft starts three nodes with every partition bootstrapped on all
// three, partition pid campaigning on node pid%3, and waits until each
// partition's leader is that node.
func newMultiraft(cfg clusterConfig) (cluster, error) {
	c := &mrCluster{}
	addrs := map[uint64]string{}
	for i := range c.nodes {
		n, err := openNode(cfg, i)
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		c.nodes[i] = n
		addrs[n.id] = n.links.addr()
	}
	for _, n := range c.nodes {
		for id, a := range addrs {
			if id != n.id {
				n.peers[id] = newPeer(a, n.stop)
			}
		}
	}
	peers := []raft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}
	for _, n := range c.nodes {
		for _, g := range n.groups {
			if err := g.rn.Bootstrap(peers); err != nil {
				_ = c.Close()
				return nil, fmt.Errorf("node %d partition %d: bootstrap: %w", n.id, g.pid, err)
			}
		}
	}
	for _, n := range c.nodes {
		n.started = true
		go n.run()
	}
	// Raft refuses to campaign while a committed configuration change is
	// not applied yet: wait for the bootstrap entries to be applied first.
	err := waitFor(10*time.Second, "bootstrap entries applied", func() bool {
		for _, n := range c.nodes {
			for _, g := range n.groups {
				if g.fsm.AppliedIndex() < uint64(len(peers)) {
					return false
				}
			}
		}
		return true
	})
	for _, n := range c.nodes {
		if err != nil {
			break
		}
		n.do(func() {
			for _, g := range n.groups {
				if int(g.pid)%3 == int(n.id-1) && err == nil {
					err = g.rn.Campaign()
				}
			}
		})
	}
	if err == nil {
		err = waitFor(60*time.Second, "partition pid led by node pid%3", func() bool {
			for _, n := range c.nodes {
				for _, g := range n.groups {
					if g.leader.Load() != (int(g.pid)%3 == int(n.id-1)) {
						return false
					}
				}
			}
			return true
		})
	}
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("multiraft: %w (leaders %v)", err, c.Leaders())
	}
	return c, nil
}

func openNode(cfg clusterConfig, i int) (*mrNode, error) {
	st, err := cfg.openStore(i)
	if err != nil {
		return nil, err
	}
	n := &mrNode{
		id:    uint64(i + 1),
		store: st,
		db:    st.DB(),
		peers: map[uint64]*peer{},
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),

		applyCh: make(chan applyJob, 4096),
		applied: make(chan struct{}),
		flights: make(chan *flight, 64),
		synced:  make(chan struct{}),
	}
	for pid := range cfg.Partitions {
		g, err := n.openGroup(uint32(pid))
		if err != nil {
			_ = st.Close()
			return nil, err
		}
		n.groups = append(n.groups, g)
	}
	if n.links, err = listenLinks(n.deliver); err != nil {
		_ = st.Close()
		return nil, err
	}
	return n, nil
}

func (n *mrNode) openGroup(pid uint32) (*group, error) {
	// Applied writes wait in memory as kvd's do (replica.Config.ApplyFlushDelay).
	rd := replica.DefaultConfig()
	fsm, flush, err := replica.NewFlushingFSM(raftfsm.Config{Partition: pid, DB: n.db, Logger: slog.New(slog.DiscardHandler),
		WriteBack: rd.ApplyWriteBack}, rd.ApplyFlushDelay)
	if err != nil {
		return nil, err
	}
	mem := raft.NewMemoryStorage()
	rn, err := raft.NewRawNode(&raft.Config{
		ID:              n.id,
		ElectionTick:    electionTick,
		HeartbeatTick:   heartbeatTick,
		Storage:         mem,
		MaxSizePerMsg:   64 << 10,
		MaxInflightMsgs: 256,
		CheckQuorum:     true,
		PreVote:         true,
		Logger:          quietLogger{},
	})
	if err != nil {
		fsm.Close()
		flush.Stop()
		return nil, err
	}
	return &group{pid: pid, logKey: logPrefix(pid), hsKey: stateKey(pid), rn: rn, mem: mem, fsm: fsm, flush: flush, pending: map[uint64]*proposal{}}, nil
}

// do runs f on the scheduler goroutine and waits for it.
func (n *mrNode) do(f func()) {
	done := make(chan struct{})
	n.mu.Lock()
	n.ops = append(n.ops, func() { f(); close(done) })
	n.mu.Unlock()
	n.signal()
	select {
	case <-done:
	case <-n.done:
	}
}

// deliver queues messages received from a peer (links' reader goroutines).
func (n *mrNode) deliver(in []inbound) {
	n.mu.Lock()
	n.inbox = append(n.inbox, in...)
	n.mu.Unlock()
	n.signal()
}

func (n *mrNode) signal() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Put implements cluster.
func (c *mrCluster) Put(ctx context.Context, pid uint32, cmd raftfsm.Command) error {
	for _, n := range c.nodes {
		if n.groups[pid].leader.Load() {
			return n.propose(ctx, pid, cmd)
		}
	}
	return errNotLeader
}

func (n *mrNode) propose(ctx context.Context, pid uint32, cmd raftfsm.Command) error {
	tag := n.id<<56 | n.nextTag.Add(1)
	data := binary.BigEndian.AppendUint64(make([]byte, 0, 64+len(cmd.Key)+len(cmd.Value)), tag)
	p := &proposal{pid: pid, tag: tag, data: raftfsm.EncodeBatch(data, []raftfsm.Command{cmd}), done: make(chan error, 1)}
	n.mu.Lock()
	n.props = append(n.props, p)
	n.mu.Unlock()
	n.signal()
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return errors.New("multiraft: node stopped")
	}
}

// run is the node's scheduler.
func (n *mrNode) run() {
	defer close(n.done)
	defer close(n.applyCh)
	defer close(n.flights)
	go n.runApplier()
	go n.runSyncer()
	ticker := time.NewTicker(tickInterval)
	defer ticker.Stop()
	more := false
	for {
		if !more {
			select {
			case <-n.stop:
				return
			case <-n.wake:
			case <-ticker.C:
				for _, g := range n.groups {
					g.rn.Tick()
				}
			}
		}
		var err error
		more, err = n.pass()
		if err != nil {
			n.fault = err
			return
		}
	}
}

// pass steps in what arrived, finishes the log writes that landed, and
// starts one log write for every group with work ready that is not waiting
// for one. It reports whether a group may have more work ready already.
func (n *mrNode) pass() (more bool, err error) {
	n.mu.Lock()
	msgs, props, ops, landed := n.inbox, n.props, n.ops, n.landed
	n.inbox, n.props, n.ops, n.landed = nil, nil, nil, nil
	n.mu.Unlock()
	for _, op := range ops {
		op()
	}
	for i := range msgs {
		if int(msgs[i].pid) >= len(n.groups) {
			continue // not a partition of this cluster: dropped, as a lost message
		}
		// A stale or misdirected message is Raft's to judge; Step fails
		// only for local message types, which no peer sends.
		_ = n.groups[msgs[i].pid].rn.Step(msgs[i].m)
	}
	for _, p := range props {
		g := n.groups[p.pid]
		if err := g.rn.Propose(p.data); err != nil {
			p.finish(err)
			continue
		}
		g.pmu.Lock()
		g.pending[p.tag] = p
		g.pmu.Unlock()
	}
	for _, f := range landed {
		if err := n.land(f); err != nil {
			return false, err
		}
	}

	f := &flight{b: n.db.NewBatch()}
	for _, g := range n.groups {
		if g.flying || !g.rn.HasReady() {
			continue
		}
		rd := g.rn.Ready()
		if rd.SoftState != nil {
			g.setLeader(rd.SoftState.RaftState == raft.StateLeader)
		}
		if !raft.IsEmptySnap(rd.Snapshot) {
			return false, fmt.Errorf("partition %d: snapshots are not part of this prototype", g.pid)
		}
		// A leader's appends and heartbeats leave before its own log write;
		// everything else (answers, votes) only once it is synced.
		for _, m := range rd.Messages {
			if m.Type == raftpb.MsgApp || m.Type == raftpb.MsgHeartbeat {
				n.peers[m.To].queue(g.pid, &m)
			} else {
				f.late = append(f.late, inbound{g.pid, m})
			}
		}
		// The hard state is written when its term or vote changes, which
		// must be durable before any answer. A change of the commit index
		// alone is not written: it moves on nearly every pass, and a
		// restart can take max(stored commit, applied index), since only
		// committed entries are ever applied (as CockroachDB does).
		hsWrite := !raft.IsEmptyHardState(rd.HardState) && (rd.HardState.Term != g.hsTerm || rd.HardState.Vote != g.hsVote)
		if hsWrite {
			v, err := rd.HardState.Marshal()
			if err != nil {
				return false, err
			}
			if err := f.b.Set(g.hsKey, v, nil); err != nil {
				return false, err
			}
			g.hsTerm, g.hsVote = rd.HardState.Term, rd.HardState.Vote
		}
		for i := range rd.Entries {
			e := &rd.Entries[i]
			op := f.b.SetDeferred(len(g.logKey)+8, e.Size())
			binary.BigEndian.PutUint64(op.Key[copy(op.Key, g.logKey):], e.Index)
			if _, err := e.MarshalToSizedBuffer(op.Value); err != nil {
				return false, err
			}
			if err := op.Finish(); err != nil {
				return false, err
			}
		}
		if len(rd.Entries) > 0 || hsWrite {
			f.writes++
		}
		f.sync = f.sync || rd.MustSync
		g.flying = true
		f.rs = append(f.rs, ready{g, rd})
	}
	for _, p := range n.peers {
		p.flush()
	}
	switch {
	case len(f.rs) == 0:
		f.b.Close()
		return false, nil
	case f.sync:
		// Synced in the background: the next pass runs meanwhile, for the
		// groups not waiting on this write, and may start the next write.
		n.syncs.Add(1)
		// As StoreLogs counts each group's synced write, so that the WAL's
		// syncs are paced under load (storage.syncPacer).
		n.store.CountSyncedLogWrites(f.writes)
		if err := n.db.ApplyNoSyncWait(f.b, pebble.Sync); err != nil {
			return false, fmt.Errorf("log write: %w", err)
		}
		n.flights <- f
		return false, nil
	default: // nothing that must be durable: done at once
		if !f.b.Empty() {
			if err := f.b.Commit(pebble.NoSync); err != nil {
				return false, fmt.Errorf("log write: %w", err)
			}
		}
		f.sync = false
		return true, n.land(f)
	}
}

// flight is one pass's log write on its way to disk, and what waits for it:
// the groups' Readies (their entries are appended to the MemoryStorage,
// their committed entries staged and Advance called only once it is
// durable) and the messages that must not leave before.
type flight struct {
	b      *pebble.Batch
	sync   bool // b was applied with ApplyNoSyncWait; SyncWait before landing
	writes int  // groups with entries or a hard state in b
	rs     []ready
	late   []inbound
	err    error // from SyncWait
}

// runSyncer waits for each flight's sync, in order, and hands it back to
// the scheduler.
func (n *mrNode) runSyncer() {
	defer close(n.synced)
	for f := range n.flights {
		f.err = f.b.SyncWait()
		n.mu.Lock()
		n.landed = append(n.landed, f)
		n.mu.Unlock()
		n.signal()
	}
}

// land finishes a flight whose log write is durable: the entries go to the
// groups' MemoryStorage, the held-back messages leave, committed entries
// go to the applier, and the groups may take their next Ready.
func (n *mrNode) land(f *flight) error {
	if f.err != nil {
		return fmt.Errorf("log write: %w", f.err)
	}
	if err := f.b.Close(); err != nil {
		return err
	}
	for _, r := range f.rs {
		if !raft.IsEmptyHardState(r.rd.HardState) {
			if err := r.g.mem.SetHardState(r.rd.HardState); err != nil {
				return err
			}
		}
		if err := r.g.mem.Append(r.rd.Entries); err != nil {
			return err
		}
	}
	for i := range f.late {
		n.peers[f.late[i].m.To].queue(f.late[i].pid, &f.late[i].m)
	}
	for _, p := range n.peers {
		p.flush()
	}
	for _, r := range f.rs {
		if err := n.stage(r.g, r.rd.CommittedEntries); err != nil {
			return err
		}
		r.g.rn.Advance(r.rd)
		r.g.flying = false
	}
	return nil
}

// applyJob is a group's committed entries, handed to the node's applier.
type applyJob struct {
	g         *group
	committed []raftpb.Entry
}

// stage prepares a group's committed entries for the applier: it applies
// configuration changes to the RawNode here, on the scheduler, and hands
// the rest over in order.
func (n *mrNode) stage(g *group, committed []raftpb.Entry) error {
	if len(committed) == 0 {
		return nil
	}
	for i := range committed {
		e := &committed[i]
		switch e.Type {
		case raftpb.EntryNormal:
		case raftpb.EntryConfChange:
			var cc raftpb.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				return fmt.Errorf("partition %d: entry %d: %w", g.pid, e.Index, err)
			}
			g.rn.ApplyConfChange(cc)
		default:
			return fmt.Errorf("partition %d: entry %d: type %v is not part of this prototype", g.pid, e.Index, e.Type)
		}
	}
	n.applyCh <- applyJob{g, committed}
	return nil
}

// runApplier applies committed entries, group by group in the order the
// scheduler staged them, and answers the proposals this node made. Raft is
// told they are applied when they are staged (as etcd's server does): the
// log is durable by then, and nothing here reads raft's applied index.
func (n *mrNode) runApplier() {
	defer close(n.applied)
	var ents []raftfsm.Entry
	for job := range n.applyCh {
		g := job.g
		ents = ents[:0]
		for i := range job.committed {
			e := &job.committed[i]
			fe := raftfsm.Entry{Index: e.Index}
			if e.Type == raftpb.EntryNormal && len(e.Data) >= 8 { // else a configuration change or a new leader's empty entry
				fe.Data = e.Data[8:]
			}
			ents = append(ents, fe)
		}
		results := g.fsm.ApplyBatch(ents)
		clear(ents)
		g.pmu.Lock()
		for i := range job.committed {
			e := &job.committed[i]
			if e.Type != raftpb.EntryNormal || len(e.Data) < 8 {
				continue
			}
			tag := binary.BigEndian.Uint64(e.Data)
			p, ok := g.pending[tag]
			if !ok {
				continue
			}
			delete(g.pending, tag)
			switch {
			case len(results[i]) != 1:
				p.finish(fmt.Errorf("partition %d: entry %d: %d results for one command", g.pid, e.Index, len(results[i])))
			case results[i][0].Status != raftfsm.StatusOK:
				p.finish(fmt.Errorf("partition %d: entry %d: %v %s", g.pid, e.Index, results[i][0].Status, results[i][0].Err))
			default:
				p.finish(nil)
			}
		}
		g.pmu.Unlock()
	}
}

// setLeader records whether this node leads g; a leader that steps down
// fails the proposals it still waits for (they may or may not commit).
func (g *group) setLeader(leader bool) {
	g.leader.Store(leader)
	if leader {
		return
	}
	g.pmu.Lock()
	defer g.pmu.Unlock()
	for tag, p := range g.pending {
		p.finish(fmt.Errorf("partition %d: leadership lost; the write may or may not have happened", g.pid))
		delete(g.pending, tag)
	}
}

// Applied implements cluster.
func (c *mrCluster) Applied() uint64 {
	var sum uint64
	for _, g := range c.nodes[0].groups {
		sum += g.fsm.AppliedIndex()
	}
	return sum
}

// Syncs returns how many log batches the nodes committed synced, summed:
// over a run, puts per synced batch says how many puts share one (on every
// node they pass through).
func (c *mrCluster) Syncs() uint64 {
	var syncs uint64
	for _, n := range c.nodes {
		syncs += n.syncs.Load()
	}
	return syncs
}

// Get implements cluster.
func (c *mrCluster) Get(i int, pid uint32, key []byte) ([]byte, bool, error) {
	v, _, err := c.nodes[i].groups[pid].fsm.Get(key)
	if errors.Is(err, raftfsm.ErrNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}

// Leaders implements cluster.
func (c *mrCluster) Leaders() [3]int {
	var out [3]int
	for i, n := range c.nodes {
		if n == nil {
			continue
		}
		for _, g := range n.groups {
			if g.leader.Load() {
				out[i]++
			}
		}
	}
	return out
}

// Close implements cluster: it stops the schedulers, then the links, then
// the stores.
func (c *mrCluster) Close() error {
	var errs []error
	for _, n := range c.nodes {
		if n == nil {
			continue
		}
		close(n.stop)
		if n.links != nil {
			errs = append(errs, n.links.close())
		}
	}
	for _, n := range c.nodes {
		if n == nil {
			continue
		}
		if !n.started {
			for _, p := range n.peers {
				<-p.done // stop is closed: the writer returns
			}
			errs = append(errs, n.store.Close())
			continue
		}
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("node %d: scheduler did not stop", n.id))
			continue
		}
		<-n.applied
		<-n.synced
		if n.fault != nil {
			errs = append(errs, fmt.Errorf("node %d: %w", n.id, n.fault))
		}
		for _, p := range n.peers {
			p.close()
		}
		for _, g := range n.groups {
			g.fsm.Close()
			g.flush.Stop()
		}
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

// quietLogger drops etcd raft's log lines except panics (raft.Logger).
type quietLogger struct{}

func (quietLogger) Debug(...any)                   {}
func (quietLogger) Debugf(string, ...any)          {}
func (quietLogger) Error(...any)                   {}
func (quietLogger) Errorf(string, ...any)          {}
func (quietLogger) Info(...any)                    {}
func (quietLogger) Infof(string, ...any)           {}
func (quietLogger) Warning(...any)                 {}
func (quietLogger) Warningf(string, ...any)        {}
func (quietLogger) Fatal(v ...any)                 { panic(fmt.Sprint(v...)) }
func (quietLogger) Fatalf(format string, v ...any) { panic(fmt.Sprintf(format, v...)) }
func (quietLogger) Panic(v ...any)                 { panic(fmt.Sprint(v...)) }
func (quietLogger) Panicf(format string, v ...any) { panic(fmt.Sprintf(format, v...)) }
