package transport

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testHBConfig sends at once and gives up on a heartbeat after half of
// waitLimit, so a lost heartbeat fails a test instead of hanging it.
func testHBConfig(mutate func(*HeartbeatConfig)) HeartbeatConfig {
	cfg := HeartbeatConfig{Timeout: waitLimit / 2}
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

// newTestHeartbeats starts Heartbeats on m and closes them at cleanup,
// before m closes (cleanups run last-registered first).
func newTestHeartbeats(t *testing.T, m *Mux, cfg HeartbeatConfig) *Heartbeats {
	t.Helper()
	h, err := NewHeartbeats(m, cfg)
	if err != nil {
		t.Fatalf("NewHeartbeats: %v", err)
	}
	t.Cleanup(func() {
		closed := make(chan error, 1)
		go func() { closed <- h.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("Heartbeats.Close: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Heartbeats.Close did not return within %v", waitLimit)
		}
	})
	return h
}

// hbNode is a serving Mux on loopback with Heartbeats on it.
type hbNode struct {
	mux  *Mux
	hb   *Heartbeats
	addr string
}

func newHBNode(t *testing.T, cfg HeartbeatConfig) *hbNode {
	t.Helper()
	m := newTestMux(t, nil)
	return &hbNode{mux: m, hb: newTestHeartbeats(t, m, cfg), addr: m.Addr().String()}
}

// checkHeartbeatGoroutines fails the test if, once every other cleanup has
// run, a goroutine is still in Heartbeats code: a writer, reader or serve
// goroutine Close did not stop, or a Send that never returned. Call it
// first, so its cleanup runs last.
func checkHeartbeatGoroutines(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitLimit / 2)
		for {
			left := heartbeatGoroutines()
			if len(left) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d heartbeat goroutines left after Close:\n\n%s", len(left), strings.Join(left, "\n\n"))
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

func heartbeatGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var left []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "transport.(*Heartbeats).") || strings.Contains(g, "transport.(*hbPeer).") {
			left = append(left, g)
		}
	}
	return left
}

// leaderHeartbeat is the heartbeat a leader of pid sends in term.
func leaderHeartbeat(pid uint32, term uint64) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{
			ProtocolVersion: raft.ProtocolVersionMax,
			ID:              fmt.Appendf(nil, "leader-of-%d", pid),
			Addr:            []byte("10.1.1.1:7000"),
		},
		Term:   term,
		Leader: []byte("10.1.1.1:7000"),
	}
}

// followerAnswer is what the test followers answer to req: every field
// depends on the partition or the request, so a misrouted answer shows.
func followerAnswer(pid uint32, req *raft.AppendEntriesRequest) *raft.AppendEntriesResponse {
	return &raft.AppendEntriesResponse{
		RPCHeader: raft.RPCHeader{
			ProtocolVersion: raft.ProtocolVersionMax - 1,
			ID:              fmt.Appendf(nil, "follower-of-%d", pid),
			Addr:            fmt.Appendf(nil, "10.2.2.2:%d", pid%65536),
		},
		Term:           req.Term + 1,
		LastLog:        uint64(pid)<<20 + req.Term,
		Success:        pid%2 == 0,
		NoRetryBackoff: pid%3 == 0,
		Quiescent:      req.Quiesce, // a follower accepts quiet only when offered
	}
}

// gate holds heartbeat handlers until released (and with them the
// connection's reader, which answers heartbeats inline). Make it after the
// Heartbeats whose handlers it holds: its cleanup releases them before those
// Heartbeats close (Close waits for a handler in progress).
type gate struct {
	open    chan struct{}
	once    sync.Once
	entered chan uint32 // the partitions of held heartbeats, as they arrive
}

func newGate(t *testing.T) *gate {
	g := &gate{open: make(chan struct{}), entered: make(chan uint32, 100)}
	t.Cleanup(g.release)
	return g
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

func (g *gate) hold(pid uint32) {
	select {
	case g.entered <- pid:
	default:
	}
	<-g.open
}

// waitEntered returns the partition of the next heartbeat the gate holds.
func (g *gate) waitEntered(t *testing.T) uint32 {
	t.Helper()
	return recvWithin(t, g.entered, "no heartbeat reached the handler")
}

// follower plays raft.Raft for its partitions: a heartbeat handler that
// answers on rpc.RespChan before returning (raft's fast path), and a main
// loop that reads the partition's consume channel and answers there. It
// records what each path was given.
type follower struct {
	gate *gate // nil: answer heartbeats at once

	mu       sync.Mutex
	seen     map[uint32][]raft.AppendEntriesRequest // by the heartbeat handler
	consumed map[uint32][]raft.AppendEntriesRequest // by the main loop
}

// serveFollower registers a follower on h for pids.
func serveFollower(t *testing.T, h *Heartbeats, g *gate, pids ...uint32) *follower {
	t.Helper()
	f := &follower{
		gate:     g,
		seen:     make(map[uint32][]raft.AppendEntriesRequest),
		consumed: make(map[uint32][]raft.AppendEntriesRequest),
	}
	for _, pid := range pids {
		t.Cleanup(h.Handle(pid, f.handler(pid), mainLoop(t, f.consumer(pid))))
	}
	return f
}

func (f *follower) handler(pid uint32) func(raft.RPC) {
	return func(rpc raft.RPC) {
		req, ok := rpc.Command.(*raft.AppendEntriesRequest)
		if !ok {
			rpc.Respond(nil, fmt.Errorf("heartbeat handler given %T", rpc.Command))
			return
		}
		f.mu.Lock()
		f.seen[pid] = append(f.seen[pid], *req)
		f.mu.Unlock()
		if f.gate != nil {
			f.gate.hold(pid)
		}
		rpc.Respond(followerAnswer(pid, req), nil)
	}
}

func (f *follower) consumer(pid uint32) func(raft.RPC) {
	return func(rpc raft.RPC) {
		req, ok := rpc.Command.(*raft.AppendEntriesRequest)
		if !ok {
			rpc.Respond(nil, fmt.Errorf("main loop given %T", rpc.Command))
			return
		}
		f.mu.Lock()
		f.consumed[pid] = append(f.consumed[pid], *req)
		f.mu.Unlock()
		rpc.Respond(consumerAnswer(pid, req), nil)
	}
}

func (f *follower) requests(pid uint32) []raft.AppendEntriesRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]raft.AppendEntriesRequest(nil), f.seen[pid]...)
}

func (f *follower) consumedRequests(pid uint32) []raft.AppendEntriesRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]raft.AppendEntriesRequest(nil), f.consumed[pid]...)
}

// mainLoop returns a consume channel whose RPCs a goroutine hands to
// serve, one at a time, as raft's main loop reads Transport.Consumer(). The
// goroutine stops at cleanup, before the Heartbeats registered earlier close.
func mainLoop(t *testing.T, serve func(raft.RPC)) chan<- raft.RPC {
	ch := make(chan raft.RPC) // unbuffered, like raft.NetworkTransport's consumer
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case rpc := <-ch:
				if rpc.Reader != nil {
					rpc.Respond(nil, errors.New("main loop given an RPC with a Reader"))
					continue
				}
				if (rpc.RespChan == nil) == (rpc.Reply == nil) {
					t.Errorf("main loop given an RPC without exactly one of RespChan and Reply: %+v", rpc)
					continue
				}
				serve(rpc)
			case <-stop:
				return
			}
		}
	})
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
	return ch
}

// consumerAnswer is what the test main loops answer to req. Its version,
// ID, address and term differ from followerAnswer's, and it depends on the
// partition and every carried request field (the entries' too), so an
// answer from the wrong path, of the wrong partition or to a garbled
// request shows.
func consumerAnswer(pid uint32, req *raft.AppendEntriesRequest) *raft.AppendEntriesResponse {
	return &raft.AppendEntriesResponse{
		RPCHeader: raft.RPCHeader{
			ProtocolVersion: raft.ProtocolVersionMin,
			ID:              fmt.Appendf(nil, "main-loop-of-%d", pid),
			Addr:            fmt.Appendf(nil, "10.3.3.3:%d", req.PrevLogTerm%65536),
		},
		Term:           req.Term + 2,
		LastLog:        req.PrevLogEntry*3 + req.PrevLogTerm*5 + req.LeaderCommitIndex*7 + uint64(pid) + entriesDigest(req.Entries),
		Success:        req.PrevLogEntry%2 == 0,
		NoRetryBackoff: req.LeaderCommitIndex%2 == 1,
	}
}

// entriesDigest hashes every field of entries (the appended-at time as the
// instant it is), or is 0 for none.
func entriesDigest(entries []*raft.Log) uint64 {
	if len(entries) == 0 {
		return 0
	}
	h := fnv.New64a()
	var b []byte
	for _, e := range entries {
		b = binary.AppendUvarint(b[:0], e.Index)
		b = binary.AppendUvarint(b, e.Term)
		b = append(b, byte(e.Type))
		b = binary.AppendUvarint(b, uint64(len(e.Data)))
		b = append(b, e.Data...)
		b = binary.AppendUvarint(b, uint64(len(e.Extensions)))
		b = append(b, e.Extensions...)
		if e.AppendedAt.IsZero() {
			b = append(b, 0)
		} else {
			b = binary.AppendVarint(append(b, 1), e.AppendedAt.UnixNano())
		}
		_, _ = h.Write(b)
	}
	return h.Sum64()
}

// wantAnswer is the answer a follower gives req, by the path it must take.
func wantAnswer(pid uint32, req *raft.AppendEntriesRequest) *raft.AppendEntriesResponse {
	if IsHeartbeat(req) {
		return followerAnswer(pid, req)
	}
	return consumerAnswer(pid, req)
}

// emptyAppend is the append without entries a leader of pid sends to tell
// a follower the commit index (it is no heartbeat: raft's main loop answers
// it).
func emptyAppend(pid uint32, term, index uint64) *raft.AppendEntriesRequest {
	req := leaderHeartbeat(pid, term)
	req.PrevLogEntry = index
	req.PrevLogTerm = term - 1
	req.LeaderCommitIndex = index - 1
	return req
}

type sendResult struct {
	resp raft.AppendEntriesResponse
	err  error
	took time.Duration
}

// staleResponse pre-fills every response: Send must overwrite all of it.
var staleResponse = raft.AppendEntriesResponse{
	RPCHeader: raft.RPCHeader{ProtocolVersion: 99, ID: []byte("stale"), Addr: []byte("stale")},
	Term:      12345, LastLog: 67890, Success: true, NoRetryBackoff: true,
}

// sendAsync runs one Send in the background.
func sendAsync(h *Heartbeats, pid uint32, addr string, req *raft.AppendEntriesRequest, cancel <-chan struct{}) <-chan sendResult {
	ch := make(chan sendResult, 1)
	start := time.Now()
	go func() {
		resp := staleResponse
		err := h.Send(pid, addr, req, &resp, cancel)
		ch <- sendResult{resp, err, time.Since(start)}
	}()
	return ch
}

// waitSend waits up to within for a sendAsync.
func waitSend(t *testing.T, ch <-chan sendResult, within time.Duration) sendResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("Send did not return within %v", within)
		return sendResult{}
	}
}

// mustSend sends pid's heartbeat in term and checks the answer is exactly
// the follower's.
func mustSend(t *testing.T, h *Heartbeats, pid uint32, addr string, term uint64) {
	t.Helper()
	mustSendReq(t, h, pid, addr, leaderHeartbeat(pid, term))
}

// mustSendReq sends req and checks the answer is exactly the one the
// follower's path for it gives.
func mustSendReq(t *testing.T, h *Heartbeats, pid uint32, addr string, req *raft.AppendEntriesRequest) {
	t.Helper()
	r := waitSend(t, sendAsync(h, pid, addr, req, nil), waitLimit)
	if r.err != nil {
		t.Fatalf("Send(partition %d, %s): %v", pid, describeRequest(*req), r.err)
	}
	if want := wantAnswer(pid, req); !reflect.DeepEqual(r.resp, *want) {
		t.Fatalf("Send(partition %d, %s) answered\n %+v\nwant %+v", pid, describeRequest(*req), r.resp, *want)
	}
}

// sendErr sends pid's heartbeat and returns the error it must fail with.
func sendErr(t *testing.T, h *Heartbeats, pid uint32, addr string, cancel <-chan struct{}) error {
	t.Helper()
	r := waitSend(t, sendAsync(h, pid, addr, leaderHeartbeat(pid, 1), cancel), waitLimit)
	if r.err == nil {
		t.Fatalf("Send(partition %d) to %s succeeded with %+v, want an error", pid, addr, r.resp)
	}
	return r.err
}

// queuedCalls is the number of heartbeats to addr waiting to be written.
func queuedCalls(h *Heartbeats, addr string) int {
	h.mu.Lock()
	p := h.peers[addr]
	h.mu.Unlock()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

func TestHeartbeatsDeliverRequestsAndAnswers(t *testing.T) {
	checkHeartbeatGoroutines(t)
	var sentBytes atomic.Uint64
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.SentBytes = &sentBytes }))
	b := newHBNode(t, testHBConfig(nil))
	pids := []uint32{0, 1, 2, 3, 6, 1000, math.MaxUint32 - 1}
	f := serveFollower(t, b.hb, nil, pids...)

	// The first heartbeat alone: its frame is exactly what the codec makes.
	first := leaderHeartbeat(1, 3)
	mustSend(t, a.hb, 1, b.addr, 3)
	frameLen := uint64(len(encodeRequests(hbRequest{call: 1, partition: 1, req: *first})))
	waitFor(t, "SentBytes to count the first frame", func() bool { return sentBytes.Load() >= frameLen })
	if got := sentBytes.Load(); got != frameLen {
		t.Fatalf("SentBytes = %d after one heartbeat, want the frame's %d", got, frameLen)
	}

	// Then all partitions at once, several terms each.
	const terms = 3
	type call struct {
		pid  uint32
		req  *raft.AppendEntriesRequest
		sent raft.AppendEntriesRequest // a copy: Send must not change req
		res  <-chan sendResult
	}
	var calls []call
	for _, pid := range pids {
		for term := range uint64(terms) {
			req := leaderHeartbeat(pid, 10+term)
			calls = append(calls, call{pid, req, *req, sendAsync(a.hb, pid, b.addr, req, nil)})
		}
	}
	for _, c := range calls {
		r := waitSend(t, c.res, waitLimit)
		if r.err != nil {
			t.Fatalf("Send(partition %d, term %d): %v", c.pid, c.req.Term, r.err)
		}
		if want := followerAnswer(c.pid, c.req); !reflect.DeepEqual(r.resp, *want) {
			t.Errorf("partition %d term %d answered\n %+v\nwant %+v", c.pid, c.req.Term, r.resp, *want)
		}
		if !reflect.DeepEqual(*c.req, c.sent) {
			t.Errorf("Send changed its request: %+v, was %+v", *c.req, c.sent)
		}
	}

	// Each follower saw exactly its own requests, field for field.
	for _, pid := range pids {
		var want []raft.AppendEntriesRequest
		if pid == 1 {
			want = append(want, *first)
		}
		for term := range uint64(terms) {
			want = append(want, *leaderHeartbeat(pid, 10+term))
		}
		got := f.requests(pid)
		// Concurrent Sends of one partition may arrive in any order.
		byTerm := map[uint64]raft.AppendEntriesRequest{}
		for _, r := range got {
			byTerm[r.Term] = r
		}
		if len(got) != len(want) || len(byTerm) != len(want) {
			t.Errorf("partition %d handler saw %d requests %+v, want %d", pid, len(got), got, len(want))
			continue
		}
		for _, w := range want {
			if g := byTerm[w.Term]; !reflect.DeepEqual(g, w) {
				t.Errorf("partition %d handler saw\n %+v\nwant %+v", pid, g, w)
			}
		}
	}

	total := uint64(1 + len(pids)*terms)
	waitFor(t, "A's Sent to count every heartbeat", func() bool { return a.hb.Stats().Sent == total })
	if got := b.hb.Stats().Answered; got != total {
		t.Fatalf("B answered %d heartbeats, want %d", got, total)
	}
	if got := a.hb.Stats().Answered; got != 0 {
		t.Fatalf("A answered %d heartbeats, want 0 (B sent none)", got)
	}
	if s := a.hb.Stats(); s.Frames == 0 || s.Frames > s.Sent {
		t.Fatalf("A stats %+v: frames must be between 1 and the heartbeats sent", s)
	}
}

func TestHeartbeatsCoalesceIntoOneFrame(t *testing.T) {
	checkHeartbeatGoroutines(t)
	const linger = time.Second
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Linger = linger }))
	b := newHBNode(t, testHBConfig(nil))
	const n = 16
	var pids []uint32
	for pid := range uint32(n) {
		pids = append(pids, pid*11)
	}
	serveFollower(t, b.hb, nil, pids...)

	start := time.Now()
	var res []<-chan sendResult
	for _, pid := range pids {
		res = append(res, sendAsync(a.hb, pid, b.addr, leaderHeartbeat(pid, 4), nil))
	}
	for i, ch := range res {
		r := waitSend(t, ch, waitLimit)
		if r.err != nil {
			t.Fatalf("Send(partition %d): %v", pids[i], r.err)
		}
		if want := followerAnswer(pids[i], leaderHeartbeat(pids[i], 4)); !reflect.DeepEqual(r.resp, *want) {
			t.Fatalf("partition %d answered %+v, want %+v", pids[i], r.resp, *want)
		}
	}
	if took := time.Since(start); took < linger {
		t.Fatalf("heartbeats answered after %v, before the %v linger", took, linger)
	}
	waitFor(t, "Sent to count the heartbeats", func() bool { return a.hb.Stats().Sent >= n })
	if s := a.hb.Stats(); s.Sent != n || s.Frames != 1 {
		t.Fatalf("stats %+v, want %d heartbeats in 1 frame", s, n)
	}
	if got := b.hb.Stats().Answered; got != n {
		t.Fatalf("B answered %d, want %d", got, n)
	}
}

func TestHeartbeatsUrgentSkipsLinger(t *testing.T) {
	checkHeartbeatGoroutines(t)
	const linger = 5 * time.Second
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Linger = linger; c.Timeout = 5 * linger }))
	b := newHBNode(t, testHBConfig(nil))
	serveFollower(t, b.hb, nil, 1, 2)

	// A heartbeat of partition 2 lingers...
	lingering := sendAsync(a.hb, 2, b.addr, leaderHeartbeat(2, 1), nil)
	waitFor(t, "partition 2's heartbeat to be queued", func() bool { return queuedCalls(a.hb, b.addr) == 1 })

	// ...until an urgent one of partition 1 takes it along.
	done1, done2 := a.hb.Urgent(1), a.hb.Urgent(1)
	done1()
	done1() // once only: partition 1 stays urgent until done2
	urgent := sendAsync(a.hb, 1, b.addr, leaderHeartbeat(1, 1), nil)
	const bound = 2 * time.Second // well below the linger: not a performance bound
	for name, ch := range map[string]<-chan sendResult{"urgent": urgent, "lingering": lingering} {
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("%s Send: %v", name, r.err)
			}
		case <-time.After(bound):
			t.Fatalf("%s Send did not return within %v although partition 1 is urgent (linger %v)", name, bound, linger)
		}
	}
	waitFor(t, "Sent to count both heartbeats", func() bool { return a.hb.Stats().Sent >= 2 })
	if s := a.hb.Stats(); s.Sent != 2 || s.Frames != 1 {
		t.Fatalf("stats %+v, want both heartbeats in one frame", s)
	}

	// After done2 partition 1 lingers again.
	done2()
	cancel := make(chan struct{})
	again := sendAsync(a.hb, 1, b.addr, leaderHeartbeat(1, 2), cancel)
	select {
	case r := <-again:
		t.Fatalf("Send returned (%+v, %v) at once, though no Urgent is held any more", r.resp, r.err)
	case <-time.After(time.Second):
	}
	close(cancel)
	if r := waitSend(t, again, waitLimit); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("cancelled Send: %v, want ErrClosed", r.err)
	}
}

func TestHeartbeatsFollowerRefusals(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	serveFollower(t, b.hb, nil, 1)

	refuse := func(msg string) func(raft.RPC) {
		return func(rpc raft.RPC) { rpc.Respond(nil, errors.New(msg)) }
	}
	removed := b.hb.Handle(14, refuse("removed handler called"), mainLoop(t, refuse("removed consumer called")))
	removed()
	replaced := b.hb.Handle(15, refuse("replaced handler called"), mainLoop(t, refuse("replaced consumer called")))
	serveFollower(t, b.hb, nil, 15)
	replaced() // removes nothing: a later Handle replaced it

	long := []byte(strings.Repeat("r", maxFieldLen+1))
	tests := []struct {
		name   string
		pid    uint32
		answer func(raft.RPC) // the partition's heartbeat handler and main loop; nil: none registered
		want   string         // in the error; empty: the Send succeeds
		// wantHeartbeat, if set, replaces want for heartbeats.
		wantHeartbeat string
	}{
		{"no handler", 10, nil, "partition 10", ""},
		{"error answer", 12, refuse("follower exploded"), "follower exploded", ""},
		{"wrong answer type", 13, func(rpc raft.RPC) { rpc.Respond(&raft.RequestVoteResponse{}, nil) }, "RequestVoteResponse", ""},
		{"nil answer", 16, func(rpc raft.RPC) { rpc.Respond(nil, nil) }, "partition 16", ""},
		{"removed handler", 14, nil, "partition 14", ""},
		{"replaced handler", 15, nil, "", ""},
		{"answer with an id over the field limit", 17, func(rpc raft.RPC) {
			rpc.Respond(&raft.AppendEntriesResponse{RPCHeader: raft.RPCHeader{ID: long}, Term: 1}, nil)
		}, "partition 17", ""},
		{"answer with an address over the field limit", 18, func(rpc raft.RPC) {
			rpc.Respond(&raft.AppendEntriesResponse{RPCHeader: raft.RPCHeader{Addr: long}, Term: 1}, nil)
		}, "partition 18", ""},
		{"error with a message over the field limit", 19, refuse(strings.Repeat("m", 3*maxFieldLen)), strings.Repeat("m", maxFieldLen), ""},
		// raft.Raft's heartbeat handler returns without answering once it is
		// shut down. (A main loop that never answers is TestHeartbeatsConsumerStuck's.)
		{"no answer", 11, func(rpc raft.RPC) {
			if IsHeartbeat(rpc.Command.(*raft.AppendEntriesRequest)) {
				return
			}
			rpc.Respond(nil, errors.New("main loop refuses"))
		}, "main loop refuses", "partition 11 is shutting down"},
	}
	for _, tt := range tests {
		for _, path := range []string{"heartbeat", "empty append"} {
			t.Run(tt.name+"/"+path, func(t *testing.T) {
				if tt.answer != nil {
					t.Cleanup(b.hb.Handle(tt.pid, tt.answer, mainLoop(t, tt.answer)))
				}
				req, want := leaderHeartbeat(tt.pid, 2), tt.want
				if path == "empty append" {
					req = emptyAppend(tt.pid, 2, 9)
				} else if tt.wantHeartbeat != "" {
					want = tt.wantHeartbeat
				}
				if want == "" {
					mustSendReq(t, a.hb, tt.pid, b.addr, req)
				} else {
					r := waitSend(t, sendAsync(a.hb, tt.pid, b.addr, req, nil), waitLimit)
					if r.err == nil {
						t.Fatalf("Send succeeded with %+v, want an error containing %q", r.resp, want)
					}
					if !strings.Contains(r.err.Error(), want) {
						t.Fatalf("Send: %v, want an error containing %q", r.err, want)
					}
					if !strings.Contains(r.err.Error(), b.addr) {
						t.Fatalf("Send: %v does not name the peer %s", r.err, b.addr)
					}
					if errors.Is(r.err, ErrHeartbeatsUnsupported) || errors.Is(r.err, ErrClosed) || errors.Is(r.err, ErrBadFrame) {
						t.Fatalf("Send: %v: one request's refusal is none of the channel errors", r.err)
					}
				}
				// A refusal is one item's; the channel keeps working.
				mustSend(t, a.hb, 1, b.addr, 3)
				mustSendReq(t, a.hb, 1, b.addr, emptyAppend(1, 3, 4))
			})
		}
	}

	// Refusals and answers in one frame each reach their own caller.
	c := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Linger = 300 * time.Millisecond }))
	ok, refused := sendAsync(c.hb, 1, b.addr, leaderHeartbeat(1, 8), nil), sendAsync(c.hb, 10, b.addr, leaderHeartbeat(10, 8), nil)
	okAppend := sendAsync(c.hb, 1, b.addr, emptyAppend(1, 8, 80), nil)
	if r := waitSend(t, ok, waitLimit); r.err != nil || !reflect.DeepEqual(r.resp, *followerAnswer(1, leaderHeartbeat(1, 8))) {
		t.Fatalf("Send batched with a refused one: %+v, %v", r.resp, r.err)
	}
	if r := waitSend(t, okAppend, waitLimit); r.err != nil || !reflect.DeepEqual(r.resp, *consumerAnswer(1, emptyAppend(1, 8, 80))) {
		t.Fatalf("empty append batched with a refused one: %+v, %v", r.resp, r.err)
	}
	if r := waitSend(t, refused, waitLimit); r.err == nil || !strings.Contains(r.err.Error(), "partition 10") {
		t.Fatalf("refused Send batched with an answered one: %v", r.err)
	}
}

func TestHeartbeatsUnsupportedPeer(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	old := newTestMux(t, nil) // a node of an older version: no heartbeat channel
	addr := old.Addr().String()

	err := sendErr(t, a.hb, 1, addr, nil)
	if !errors.Is(err, ErrHeartbeatsUnsupported) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Send to a peer without the channel: %v, want ErrHeartbeatsUnsupported naming %s", err, addr)
	}

	// The answer is remembered: even once the peer has the channel, the next
	// Send fails at once without asking it.
	hb := newTestHeartbeats(t, old, testHBConfig(nil))
	serveFollower(t, hb, nil, 1)
	start := time.Now()
	if err := sendErr(t, a.hb, 1, addr, nil); !errors.Is(err, ErrHeartbeatsUnsupported) {
		t.Fatalf("second Send: %v, want the cached ErrHeartbeatsUnsupported", err)
	}
	if got := hb.Stats().Answered; got != 0 {
		t.Fatalf("peer answered %d heartbeats: the second Send dialed it", got)
	}
	t.Logf("cached refusal took %v", time.Since(start))

	// The refusal is remembered for unsupportedRetry, not longer: move the
	// remembered time back instead of waiting.
	backdate := func(d time.Duration) {
		a.hb.mu.Lock()
		p := a.hb.peers[addr]
		a.hb.mu.Unlock()
		if p == nil {
			t.Fatalf("no peer for %s", addr)
		}
		p.mu.Lock()
		if p.unsupported.IsZero() {
			p.mu.Unlock()
			t.Fatalf("the peer is not remembered as unsupported")
		}
		p.unsupported = time.Now().Add(-d)
		p.mu.Unlock()
	}
	if unsupportedRetry < time.Second || unsupportedRetry > time.Minute {
		t.Fatalf("unsupportedRetry = %v: an upgraded peer would be asked again too often or too late", unsupportedRetry)
	}
	backdate(unsupportedRetry - time.Second)
	if err := sendErr(t, a.hb, 1, addr, nil); !errors.Is(err, ErrHeartbeatsUnsupported) {
		t.Fatalf("Send a second before the retry: %v, want the cached ErrHeartbeatsUnsupported", err)
	}
	backdate(unsupportedRetry + time.Millisecond)
	mustSend(t, a.hb, 1, addr, 2)
	mustSendReq(t, a.hb, 1, addr, emptyAppend(1, 2, 2))
	if got := hb.Stats().Answered; got != 2 {
		t.Fatalf("upgraded peer answered %d requests, want 2", got)
	}
}

func TestHeartbeatsCancel(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	g := newGate(t)
	serveFollower(t, b.hb, g, 1)

	cancel := make(chan struct{})
	res := sendAsync(a.hb, 1, b.addr, leaderHeartbeat(1, 1), cancel)
	g.waitEntered(t)
	select {
	case r := <-res:
		t.Fatalf("Send returned (%v) while its follower holds it", r.err)
	default:
	}
	close(cancel)
	if r := waitSend(t, res, waitLimit); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("cancelled Send: %v, want ErrClosed", r.err)
	}
	if err := sendErr(t, a.hb, 1, b.addr, cancel); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send with cancel already closed, follower held: %v, want ErrClosed", err)
	}

	// The cancelled heartbeats' late answers go nowhere: the next Send gets
	// its own.
	g.release()
	mustSend(t, a.hb, 1, b.addr, 5)
}

func TestHeartbeatsTimeout(t *testing.T) {
	checkHeartbeatGoroutines(t)
	const timeout = 300 * time.Millisecond
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Timeout = timeout }))
	b := newHBNode(t, testHBConfig(nil))
	g := newGate(t)
	f := serveFollower(t, b.hb, g, 1)

	r := waitSend(t, sendAsync(a.hb, 1, b.addr, leaderHeartbeat(1, 1), nil), 10*timeout)
	if r.err == nil || !strings.Contains(r.err.Error(), "not answered") {
		t.Fatalf("Send to a stuck follower: %v, want a \"not answered\" error", r.err)
	}
	if r.took < timeout {
		t.Fatalf("Send gave up after %v, before the %v timeout", r.took, timeout)
	}
	g.waitEntered(t)

	// The stuck connection was dropped; once the follower is back, the next
	// heartbeats go over a new one.
	g.release()
	for term := range uint64(3) {
		mustSend(t, a.hb, 1, b.addr, 10+term)
	}
	if n := len(f.requests(1)); n != 4 {
		t.Fatalf("follower saw %d heartbeats, want 4", n)
	}
}

func TestHeartbeatsPeerRestart(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	serveFollower(t, b.hb, nil, 1, 2)
	mustSend(t, a.hb, 1, b.addr, 1)

	if err := b.hb.Close(); err != nil {
		t.Fatalf("Heartbeats.Close: %v", err)
	}
	if err := b.mux.Close(); err != nil {
		t.Fatalf("Mux.Close: %v", err)
	}
	for _, pid := range []uint32{1, 2, 1} {
		err := sendErr(t, a.hb, pid, b.addr, nil)
		if errors.Is(err, ErrHeartbeatsUnsupported) {
			t.Fatalf("Send to a stopped peer: %v; it is down, not of an older version", err)
		}
		t.Logf("Send to the stopped peer: %v", err)
	}

	// The peer comes back on the same address.
	var ln net.Listener
	deadline := time.Now().Add(waitLimit)
	for {
		var err error
		if ln, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen again on %s: %v", b.addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	m := serveMux(t, ln, nil)
	hb := newTestHeartbeats(t, m, testHBConfig(nil))
	serveFollower(t, hb, nil, 1, 2)
	mustSend(t, a.hb, 1, b.addr, 2)
	mustSend(t, a.hb, 2, b.addr, 2)
	if got := hb.Stats().Answered; got != 2 {
		t.Fatalf("restarted peer answered %d heartbeats, want 2", got)
	}
}

func TestHeartbeatsClose(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	g := newGate(t)
	f := serveFollower(t, b.hb, g, 1, 2, 3)
	held := newHoldingLoop(t, b.hb, f, 4)
	t.Cleanup(b.hb.Handle(5, f.handler(5), make(chan raft.RPC))) // a main loop that never reads

	// Appends wait for B's main loops (one taken, one not)...
	var pending []<-chan sendResult
	for _, pid := range []uint32{4, 5} {
		pending = append(pending, sendAsync(a.hb, pid, b.addr, emptyAppend(pid, 1, 1), nil))
	}
	held.waitTaken(t)
	waitFor(t, "both appends to reach B", func() bool { return countGoroutines("(*Heartbeats).consume") == held.consumeGoroutines(1) })
	// ...and heartbeats for B's held heartbeat handler.
	for _, pid := range []uint32{1, 2, 3} {
		pending = append(pending, sendAsync(a.hb, pid, b.addr, leaderHeartbeat(pid, 1), nil))
	}
	g.waitEntered(t)

	closed := make(chan error, 1)
	go func() { closed <- a.hb.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("Close did not return within 2s with heartbeats in flight")
	}
	for i, ch := range pending {
		r := waitSend(t, ch, 2*time.Second)
		if !errors.Is(r.err, ErrClosed) {
			t.Fatalf("pending Send %d after Close: %+v, %v; want ErrClosed", i, r.resp, r.err)
		}
	}
	if err := a.hb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := sendErr(t, a.hb, 1, b.addr, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
	if _, err := a.mux.Listen(HeartbeatChannel); err != nil {
		t.Fatalf("Close left the heartbeat channel registered: %v", err)
	}
}

func TestHeartbeatsSendRejects(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	f := serveFollower(t, b.hb, nil, 1)
	over := []byte(strings.Repeat("x", 2000))
	half := MaxCarriedEntryBytes / 2

	tests := []struct {
		name        string
		mutate      func(*raft.AppendEntriesRequest)
		unsupported bool // the error wraps ErrHeartbeatsUnsupported: the caller sends it the old way
	}{
		{"1025 entries", func(r *raft.AppendEntriesRequest) { r.Entries = sizedEntries(maxCarriedEntries+1, 0) }, false},
		{"1025 entries of an empty append", func(r *raft.AppendEntriesRequest) {
			*r = *emptyAppend(1, 3, 5)
			r.Entries = sizedEntries(maxCarriedEntries+1, 1)
		}, false},
		{"entry data one byte over", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Term: 1, Data: make([]byte, MaxCarriedEntryBytes+1)}}
		}, false},
		{"entry extensions one byte over", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Term: 1, Extensions: make([]byte, MaxCarriedEntryBytes+1)}}
		}, false},
		{"data and extensions one byte over", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Term: 1, Data: make([]byte, half), Extensions: make([]byte, MaxCarriedEntryBytes-half+1)}}
		}, false},
		{"entries one byte over", func(r *raft.AppendEntriesRequest) { r.Entries = sizedEntries(10, MaxCarriedEntryBytes+1) }, false},
		{"a catch-up: 1 MiB in 1024 entries", func(r *raft.AppendEntriesRequest) { r.Entries = sizedEntries(maxCarriedEntries, 1<<20) }, false},
		{"nil entry", func(r *raft.AppendEntriesRequest) { r.Entries = []*raft.Log{nil} }, false},
		{"nil entry after others", func(r *raft.AppendEntriesRequest) { r.Entries = append(sizedEntries(2, 10), nil) }, false},
		{"term zero", func(r *raft.AppendEntriesRequest) { r.Term = 0 }, false},
		{"term zero empty append", func(r *raft.AppendEntriesRequest) { *r = *emptyAppend(1, 3, 5); r.Term = 0 }, false},
		{"term zero with entries", func(r *raft.AppendEntriesRequest) { r.Term = 0; r.Entries = sizedEntries(1, 1) }, false},
		{"2000-byte ID", func(r *raft.AppendEntriesRequest) { r.ID = over }, true},
		{"2000-byte Addr", func(r *raft.AppendEntriesRequest) { r.Addr = over }, true},
		{"2000-byte Leader", func(r *raft.AppendEntriesRequest) { r.Leader = over }, true},
		{"ID one byte over the field limit", func(r *raft.AppendEntriesRequest) { r.ID = over[:maxFieldLen+1] }, true},
		{"2000-byte ID of an empty append", func(r *raft.AppendEntriesRequest) { *r = *emptyAppend(1, 3, 5); r.ID = over }, true},
		{"2000-byte ID of an append with entries", func(r *raft.AppendEntriesRequest) {
			*r = *emptyAppend(1, 3, 5)
			r.ID, r.Entries = over, sizedEntries(1, 1)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := leaderHeartbeat(1, 1)
			tt.mutate(req)
			resp := staleResponse
			done := make(chan error, 1)
			go func() { done <- a.hb.Send(1, b.addr, req, &resp, nil) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(waitLimit):
				t.Fatalf("Send(%s) did not return within %v", describeRequest(*req), waitLimit)
			}
			if err == nil {
				t.Fatalf("Send(%s) succeeded", describeRequest(*req))
			}
			if got := errors.Is(err, ErrHeartbeatsUnsupported); got != tt.unsupported {
				t.Fatalf("Send: %v; errors.Is(err, ErrHeartbeatsUnsupported) = %v, want %v", err, got, tt.unsupported)
			}
			if errors.Is(err, ErrClosed) {
				t.Fatalf("Send: %v, which wraps ErrClosed: the caller would think the channel shut down", err)
			}
			if !reflect.DeepEqual(resp, staleResponse) {
				t.Fatalf("refused Send changed the response to %+v", resp)
			}
		})
	}
	// Nothing was sent, or even queued: no peer was made for them.
	if s := a.hb.Stats(); s != (HeartbeatStats{}) {
		t.Fatalf("stats %+v: refused requests were sent", s)
	}
	a.hb.mu.Lock()
	peers := len(a.hb.peers)
	a.hb.mu.Unlock()
	if peers != 0 {
		t.Fatalf("refused requests made %d peers", peers)
	}
	if n := len(f.requests(1)) + len(f.consumedRequests(1)); n != 0 {
		t.Fatalf("the follower was given %d refused requests", n)
	}

	// What Send accepts: every append with a term and entries within the
	// limits, whatever else it carries, with fields up to the limit.
	at := []byte(strings.Repeat("y", maxFieldLen))
	withEntries := func(term uint64, entries []*raft.Log) *raft.AppendEntriesRequest {
		r := emptyAppend(1, term, 100)
		r.Entries = entries
		return r
	}
	accepted := []*raft.AppendEntriesRequest{
		leaderHeartbeat(1, 1),
		emptyAppend(1, 1, 1),
		{Term: 1},                         // nothing else: raft's main loop decides
		{Term: 2, Entries: []*raft.Log{}}, // an empty, non-nil slice carries no entries
		{Term: 3, PrevLogEntry: 1 << 50},  // a probe
		{Term: 4, LeaderCommitIndex: 1<<64 - 1},
		{RPCHeader: raft.RPCHeader{ID: at, Addr: at}, Term: 5, Leader: at, PrevLogTerm: 4},
		{RPCHeader: raft.RPCHeader{ID: at, Addr: at}, Term: 6, Leader: at},
		withEntries(7, []*raft.Log{{Index: 101, Term: 7, Data: []byte("put k v"), AppendedAt: time.Now()}}),
		withEntries(8, sizedEntries(maxCarriedEntries, 0)),
		withEntries(9, sizedEntries(maxCarriedEntries, MaxCarriedEntryBytes)),
		withEntries(10, []*raft.Log{{Index: 101, Data: make([]byte, half), Extensions: make([]byte, MaxCarriedEntryBytes-half)}}),
		{RPCHeader: raft.RPCHeader{ID: at, Addr: at}, Term: 11, Leader: at, Entries: sizedEntries(3, MaxCarriedEntryBytes)},
	}
	for _, req := range accepted {
		mustSendReq(t, a.hb, 1, b.addr, req)
	}
	want := map[string]int{"heartbeat": 2, "consumer": len(accepted) - 2}
	if got := map[string]int{"heartbeat": len(f.requests(1)), "consumer": len(f.consumedRequests(1))}; !reflect.DeepEqual(got, want) {
		t.Fatalf("requests by path: %v, want %v", got, want)
	}
}

// rawHeartbeatConn dials addr's heartbeat channel from a bare Mux, to speak
// the frame protocol by hand.
func rawHeartbeatConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	l := mustListen(t, newTestMux(t, nil), HeartbeatChannel)
	c, err := l.Dial(addr, waitLimit)
	if err != nil {
		t.Fatalf("dial the heartbeat channel of %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestHeartbeatsMalformedFrameClosesConnection(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	serveFollower(t, b.hb, nil, 1)
	valid := encodeRequestsOn(false, hbRequest{call: 42, partition: 1, req: *leaderHeartbeat(1, 6)})

	t.Run("valid frame is answered", func(t *testing.T) {
		c := rawHeartbeatConn(t, b.addr)
		if _, err := c.Write(valid); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(waitLimit))
		kind, body, _, err := readFrame(bufio.NewReader(c), nil)
		if err != nil || kind != frameResponses {
			t.Fatalf("answer: kind %d, %v", kind, err)
		}
		resps, err := decodeResponses(body, nil, false)
		want := []hbResponse{{call: 42, resp: *followerAnswer(1, leaderHeartbeat(1, 6))}}
		if err != nil || !reflect.DeepEqual(resps, want) {
			t.Fatalf("answer %+v, %v; want %+v", resps, err, want)
		}
	})

	trailing := append(append([]byte(nil), valid...), 0)
	trailing[3]++ // the length covers the extra byte
	tests := []struct {
		name      string
		in        []byte
		halfClose bool
	}{
		{"response frame on the request stream", encodeResponsesOn(false, hbResponse{call: 1, err: "x"}), false},
		{"unknown kind", []byte("\x00\x00\x00\x03\x07\x01\x00"), false},
		{"zero items", []byte("\x00\x00\x00\x02\x01\x00"), false},
		{"length zero", []byte("\x00\x00\x00\x00\x01"), false},
		{"length over maxFrameLen", []byte("\x00\x40\x00\x01\x01"), false},
		{"trailing bytes", trailing, false},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false},
		{"valid frame then garbage", append(append([]byte(nil), valid...), "\x00\x00\x00\x02\x01\xff"...), false},
		{"frame cut short", valid[:len(valid)-3], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawHeartbeatConn(t, b.addr)
			if _, err := c.Write(tt.in); err != nil {
				t.Fatal(err)
			}
			if tt.halfClose {
				if err := c.(*conn).Conn.(*net.TCPConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			br := bufio.NewReader(c)
			_ = c.SetReadDeadline(time.Now().Add(waitLimit))
			if strings.HasPrefix(tt.name, "valid frame") {
				// The answer to the valid frame may or may not be written
				// before the connection closes (answers are written by their
				// own goroutine); if it is, it is right.
				if kind, body, _, err := readFrame(br, nil); err == nil {
					resps, err := decodeResponses(body, nil, false)
					if want := []hbResponse{{call: 42, resp: *followerAnswer(1, leaderHeartbeat(1, 6))}}; kind != frameResponses || err != nil || !reflect.DeepEqual(resps, want) {
						t.Fatalf("answer to the valid frame: kind %d %+v, %v; want %+v", kind, resps, err, want)
					}
				} else if isTimeout(err) {
					t.Fatalf("read: %v, want the connection closed", err)
				}
			}
			if x, err := br.ReadByte(); err == nil || isTimeout(err) {
				t.Fatalf("read %#x, %v; want the connection closed", x, err)
			}
			// The node keeps serving everyone else.
			mustSend(t, a.hb, 1, b.addr, 7)
		})
	}
}

// fakeHeartbeatPeer serves the heartbeat channel of a bare Mux with serve,
// once per connection, and returns the Mux's address.
func fakeHeartbeatPeer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	m := newTestMux(t, nil)
	l := mustListen(t, m, HeartbeatChannel)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer func() { _ = c.Close() }()
				serve(c, bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	return m.Addr().String()
}

// readRequestFrame reads and decodes one request frame.
func readRequestFrame(br *bufio.Reader) ([]hbRequest, error) {
	kind, body, _, err := readFrame(br, nil)
	if err != nil {
		return nil, err
	}
	if kind != frameRequests {
		return nil, fmt.Errorf("frame kind %d", kind)
	}
	return decodeRequests(body, nil, false)
}

func TestHeartbeatsBadAnswers(t *testing.T) {
	checkHeartbeatGoroutines(t)
	const timeout = 500 * time.Millisecond
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Timeout = timeout }))

	tests := []struct {
		name      string
		answer    func(c net.Conn, reqs []hbRequest, frame []byte)
		wantErr   error // errors.Is, if set
		byTimeout bool  // the call must fail by the timeout, not before
	}{
		{"garbage", func(c net.Conn, _ []hbRequest, _ []byte) {
			_, _ = c.Write([]byte("\x00\x00\x00\x04\x02\xff\xff\xff"))
		}, ErrBadFrame, false},
		{"request frame as the answer", func(c net.Conn, _ []hbRequest, frame []byte) {
			_, _ = c.Write(frame)
		}, ErrBadFrame, false},
		{"length over maxFrameLen", func(c net.Conn, _ []hbRequest, _ []byte) {
			_, _ = c.Write([]byte("\xff\xff\xff\xff\x02"))
		}, ErrBadFrame, false},
		{"unknown flags", func(c net.Conn, reqs []hbRequest, _ []byte) {
			body := frameBuilder{}.uv(1).uv(reqs[0].call).raw("\x00").uv(3).field("i").field("a").uv(1).uv(1).raw("\x10")
			_, _ = c.Write(finishFrame(append([]byte{0, 0, 0, 0, frameResponses}, body...)))
		}, ErrBadFrame, false},
		{"hang up", func(net.Conn, []hbRequest, []byte) {}, nil, false},
		{"answer to another call", func(c net.Conn, reqs []hbRequest, _ []byte) {
			_, _ = c.Write(encodeResponsesOn(false, hbResponse{call: reqs[0].call + 1000, resp: raft.AppendEntriesResponse{Term: 1}}))
			_, _ = io.Copy(io.Discard, c) // and then nothing
		}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := fakeHeartbeatPeer(t, func(c net.Conn, br *bufio.Reader) {
				_ = c.SetReadDeadline(time.Now().Add(waitLimit))
				kind, body, _, err := readFrame(br, nil)
				if err != nil || kind != frameRequests {
					return
				}
				reqs, err := decodeRequests(body, nil, false)
				if err != nil {
					return
				}
				frame := finishFrame(append([]byte{0, 0, 0, 0, kind}, body...))
				tt.answer(c, reqs, frame)
			})
			r := waitSend(t, sendAsync(a.hb, 1, addr, leaderHeartbeat(1, 1), nil), waitLimit)
			err := r.err
			t.Logf("Send after %v: %v", r.took, err)
			if err == nil {
				t.Fatalf("Send succeeded with %+v", r.resp)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Send: %v, want %v", err, tt.wantErr)
			}
			if tt.byTimeout && (r.took < timeout || errors.Is(err, ErrBadFrame)) {
				t.Fatalf("Send failed after %v with %v; want it held until the %v timeout", r.took, err, timeout)
			}
			if !strings.Contains(err.Error(), addr) {
				t.Fatalf("Send: %v does not name the peer %s", err, addr)
			}
		})
	}
}

func TestHeartbeatsMatchAnswersByCallID(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Linger = 300 * time.Millisecond }))
	frames := make(chan int, 100)
	// The peer answers each frame's heartbeats in reverse order.
	addr := fakeHeartbeatPeer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			reqs, err := readRequestFrame(br)
			if err != nil {
				return
			}
			frames <- len(reqs)
			var resps []hbResponse
			for i := len(reqs) - 1; i >= 0; i-- {
				resps = append(resps, hbResponse{call: reqs[i].call, resp: *followerAnswer(reqs[i].partition, &reqs[i].req)})
			}
			if _, err := c.Write(encodeResponsesOn(false, resps...)); err != nil {
				return
			}
		}
	})

	var res []<-chan sendResult
	for pid := range uint32(8) {
		res = append(res, sendAsync(a.hb, pid, addr, leaderHeartbeat(pid, uint64(pid)+1), nil))
	}
	for pid, ch := range res {
		r := waitSend(t, ch, waitLimit)
		want := followerAnswer(uint32(pid), leaderHeartbeat(uint32(pid), uint64(pid)+1))
		if r.err != nil || !reflect.DeepEqual(r.resp, *want) {
			t.Fatalf("partition %d: %+v, %v; want %+v", pid, r.resp, r.err, *want)
		}
	}
	if n := <-frames; n < 2 {
		t.Logf("the first frame carried %d heartbeats; the reversal was not exercised", n)
	}
}

// shortWait bounds waits that must end well before any timeout of the
// test: a correctness bound for "not delayed by", not a performance one.
const shortWait = 2 * time.Second

// holdingLoop is a main loop that takes RPCs and holds each until released
// (all at once, by release). It reports each request it takes on taken.
type holdingLoop struct {
	taken   chan raft.AppendEntriesRequest
	open    chan struct{}
	once    sync.Once
	consume chan<- raft.RPC
	// waited counts the requests a goroutine handed over (the loop was
	// busy when they arrived), not the serve loop itself.
	waited atomic.Int32
}

// consumeGoroutines is how many goroutines B has waiting for main loops
// while the loop l holds what it took and `others` requests wait for
// loops that do not read.
func (l *holdingLoop) consumeGoroutines(others int) int { return others + int(l.waited.Load()) }

// newHoldingLoop registers the loop as pid's consumer on h, with the
// follower f's heartbeat handler. Its cleanup releases it before its main
// loop stops.
func newHoldingLoop(t *testing.T, h *Heartbeats, f *follower, pid uint32) *holdingLoop {
	l := &holdingLoop{taken: make(chan raft.AppendEntriesRequest, 100), open: make(chan struct{})}
	l.consume = mainLoop(t, func(rpc raft.RPC) {
		req := rpc.Command.(*raft.AppendEntriesRequest)
		if rpc.Reply == nil {
			l.waited.Add(1)
		}
		l.taken <- *req
		<-l.open
		rpc.Respond(consumerAnswer(pid, req), nil)
	})
	t.Cleanup(l.release) // runs before mainLoop's cleanup, which waits for the loop
	t.Cleanup(h.Handle(pid, f.handler(pid), l.consume))
	return l
}

func (l *holdingLoop) release() { l.once.Do(func() { close(l.open) }) }

func (l *holdingLoop) waitTaken(t *testing.T) raft.AppendEntriesRequest {
	t.Helper()
	return recvWithin(t, l.taken, "the main loop was given no request")
}

// newFollower is a follower for handlers registered by hand.
func newFollower() *follower {
	return &follower{seen: make(map[uint32][]raft.AppendEntriesRequest), consumed: make(map[uint32][]raft.AppendEntriesRequest)}
}

func TestHeartbeatsEmptyAppendsGoToConsumer(t *testing.T) {
	checkHeartbeatGoroutines(t)
	cfg := testHBConfig(func(c *HeartbeatConfig) { c.Linger = 20 * time.Millisecond })
	a, b := newHBNode(t, cfg), newHBNode(t, cfg)
	pids := []uint32{0, 1, 2, 7, math.MaxUint32 - 1}
	followers := map[*hbNode]*follower{a: serveFollower(t, a.hb, nil, pids...), b: serveFollower(t, b.hb, nil, pids...)}

	// requests are the requests of one leader of pid, each with its own term
	// (so they can be told apart whatever order they arrive in).
	requests := func(pid uint32) []*raft.AppendEntriesRequest {
		hdr := leaderHeartbeat(pid, 1).RPCHeader
		return []*raft.AppendEntriesRequest{
			leaderHeartbeat(pid, 1),
			emptyAppend(pid, 2, 100+uint64(pid)%1000),
			{RPCHeader: hdr, Term: 3, PrevLogEntry: 7, Leader: hdr.Addr},
			{RPCHeader: hdr, Term: 4, PrevLogTerm: 3, Leader: hdr.Addr},
			{RPCHeader: hdr, Term: 5, LeaderCommitIndex: 1 << 40},
			{RPCHeader: hdr, Term: 6, PrevLogEntry: math.MaxUint64, PrevLogTerm: math.MaxUint64 - 1, LeaderCommitIndex: math.MaxUint64 - 2},
			{Term: 7}, // no leader address: raft gives it to its main loop
			{RPCHeader: raft.RPCHeader{ID: hdr.ID, Addr: []byte{}}, Term: 8, PrevLogEntry: 1},
			leaderHeartbeat(pid, 9),
		}
	}
	type call struct {
		from, to *hbNode
		pid      uint32
		req      *raft.AppendEntriesRequest
		sent     raft.AppendEntriesRequest // a copy: Send must not change req
		res      <-chan sendResult
	}
	var calls []call
	for _, dir := range [][2]*hbNode{{a, b}, {b, a}} { // both ways at once
		for _, pid := range pids {
			for _, req := range requests(pid) {
				calls = append(calls, call{dir[0], dir[1], pid, req, *req, sendAsync(dir[0].hb, pid, dir[1].addr, req, nil)})
			}
		}
	}
	for _, c := range calls {
		r := waitSend(t, c.res, waitLimit)
		if r.err != nil {
			t.Fatalf("Send(partition %d, %+v): %v", c.pid, c.sent, r.err)
		}
		if want := wantAnswer(c.pid, &c.sent); !reflect.DeepEqual(r.resp, *want) {
			t.Errorf("partition %d %+v (heartbeat %v) answered\n %+v\nwant %+v", c.pid, c.sent, IsHeartbeat(&c.sent), r.resp, *want)
		}
		if !reflect.DeepEqual(*c.req, c.sent) {
			t.Errorf("Send changed its request: %+v, was %+v", *c.req, c.sent)
		}
	}

	// Each path of each follower saw exactly its own requests, field for
	// field: heartbeats only on the heartbeat handler, the rest only on the
	// main loop.
	for node, f := range followers {
		for _, pid := range pids {
			var wantHB, wantConsumed []raft.AppendEntriesRequest
			for _, req := range requests(pid) {
				// The receiver decodes an empty field as nil.
				if len(req.Addr) == 0 {
					req.Addr = nil
				}
				if IsHeartbeat(req) {
					wantHB = append(wantHB, *req)
				} else {
					wantConsumed = append(wantConsumed, *req)
				}
			}
			for _, path := range []struct {
				name      string
				got, want []raft.AppendEntriesRequest
			}{
				{"heartbeat handler", f.requests(pid), wantHB},
				{"main loop", f.consumedRequests(pid), wantConsumed},
			} {
				sortByTerm := func(rs []raft.AppendEntriesRequest) {
					slices.SortFunc(rs, func(x, y raft.AppendEntriesRequest) int { return cmp.Compare(x.Term, y.Term) })
				}
				sortByTerm(path.got)
				if !reflect.DeepEqual(path.got, path.want) {
					t.Errorf("node %s partition %d: the %s saw\n %+v\nwant %+v", node.addr, pid, path.name, path.got, path.want)
				}
			}
		}
	}

	total := uint64(len(calls) / 2)
	for _, n := range []*hbNode{a, b} {
		waitFor(t, "Sent to count every request", func() bool { return n.hb.Stats().Sent == total })
		if s := n.hb.Stats(); s.Answered != total {
			t.Errorf("node %s stats %+v: answered %d, want %d", n.addr, s, s.Answered, total)
		}
	}
}

func TestHeartbeatsSlowConsumerDelaysNoOther(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	f := serveFollower(t, b.hb, nil, 2)
	slow := newHoldingLoop(t, b.hb, f, 1)

	// Partition 1's main loop takes an append and sits on it; a second one
	// waits for the loop.
	first := emptyAppend(1, 3, 10)
	firstRes := sendAsync(a.hb, 1, b.addr, first, nil)
	if got := slow.waitTaken(t); !reflect.DeepEqual(got, *first) {
		t.Fatalf("partition 1's main loop took %+v, want %+v", got, *first)
	}
	second := emptyAppend(1, 3, 11)
	secondRes := sendAsync(a.hb, 1, b.addr, second, nil)
	waitFor(t, "B to read the second append", func() bool { return countGoroutines("(*Heartbeats).consume") == slow.consumeGoroutines(1) })

	// Meanwhile partition 2's heartbeats and appends, and partition 1's
	// heartbeats, are answered, over the same connection.
	for i := range uint64(3) {
		for _, c := range []struct {
			pid uint32
			req *raft.AppendEntriesRequest
		}{
			{2, leaderHeartbeat(2, 10+i)},
			{2, emptyAppend(2, 10+i, 50+i)},
			{1, leaderHeartbeat(1, 20+i)},
		} {
			r := waitSend(t, sendAsync(a.hb, c.pid, b.addr, c.req, nil), shortWait)
			if want := wantAnswer(c.pid, c.req); r.err != nil || !reflect.DeepEqual(r.resp, *want) {
				t.Fatalf("partition %d %+v while partition 1's main loop is busy: %+v, %v; want %+v", c.pid, *c.req, r.resp, r.err, *want)
			}
		}
	}
	for name, ch := range map[string]<-chan sendResult{"first": firstRes, "second": secondRes} {
		select {
		case r := <-ch:
			t.Fatalf("partition 1's %s append returned (%+v, %v) before its main loop answered", name, r.resp, r.err)
		default:
		}
	}
	// (Sent counts a frame once written, which may be after its answers came.)
	waitFor(t, "A to count 11 requests sent", func() bool { return a.hb.Stats().Sent == 11 })

	// Then partition 1's loop answers, and its answers arrive too.
	slow.release()
	for _, c := range []struct {
		req *raft.AppendEntriesRequest
		res <-chan sendResult
	}{{first, firstRes}, {second, secondRes}} {
		r := waitSend(t, c.res, waitLimit)
		if want := consumerAnswer(1, c.req); r.err != nil || !reflect.DeepEqual(r.resp, *want) {
			t.Fatalf("partition 1 %+v: %+v, %v; want %+v", *c.req, r.resp, r.err, *want)
		}
	}
	if got := slow.waitTaken(t); !reflect.DeepEqual(got, *second) {
		t.Fatalf("partition 1's main loop took %+v second, want %+v", got, *second)
	}
	waitFor(t, "B to count its answers", func() bool { return b.hb.Stats().Answered == 11 })
}

// countGoroutines is the number of goroutines running fn (a substring of
// their stacks' function names, e.g. "(*Heartbeats).consume").
func countGoroutines(fn string) int {
	n := 0
	for _, g := range heartbeatGoroutines() {
		if strings.Contains(g, "transport."+fn+"(") {
			n++
		}
	}
	return n
}

// TestHeartbeatsWaitingLoopAnswersItself: an append for a main loop that
// is ready to take it goes to the loop at once, with a Reply that queues
// the answer, so no goroutine waits for it; the answer is the loop's, and
// a second answer to the same request is dropped.
func TestHeartbeatsWaitingLoopAnswersItself(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	f := serveFollower(t, b.hb, nil, 1)
	ready := make(chan raft.RPC, 1) // a loop waiting in its select, as far as a sender can tell
	t.Cleanup(b.hb.Handle(9, f.handler(9), ready))
	mustSend(t, a.hb, 1, b.addr, 1) // connected

	req := emptyAppend(9, 2, 5)
	res := sendAsync(a.hb, 9, b.addr, req, nil)
	var rpc raft.RPC
	select {
	case rpc = <-ready:
	case <-time.After(waitLimit):
		t.Fatalf("partition 9's loop was given nothing within %v", waitLimit)
	}
	if rpc.Reply == nil || rpc.RespChan != nil {
		t.Fatalf("the loop was given %+v; want a Reply and no RespChan", rpc)
	}
	if n := countGoroutines("(*Heartbeats).consume"); n != 0 {
		t.Fatalf("%d goroutines wait for a loop that took its append at once", n)
	}
	got := rpc.Command.(*raft.AppendEntriesRequest)
	if !reflect.DeepEqual(*got, *req) {
		t.Fatalf("the loop was given %+v, want %+v", *got, *req)
	}
	rpc.Respond(consumerAnswer(9, got), nil)
	if r := waitSend(t, res, shortWait); r.err != nil || !reflect.DeepEqual(r.resp, *consumerAnswer(9, req)) {
		t.Fatalf("Send: %+v, %v; want the loop's answer %+v", r.resp, r.err, *consumerAnswer(9, req))
	}
	rpc.Respond(nil, errors.New("a second answer")) // dropped
	waitFor(t, "B to count its answers", func() bool { return b.hb.Stats().Answered == 2 })
	mustSend(t, a.hb, 1, b.addr, 3)
	if s := b.hb.Stats(); s.Answered != 3 {
		t.Fatalf("B's stats %+v after a second answer to one request and a heartbeat: want 3 answered", s)
	}
}

func TestHeartbeatsConsumerStuck(t *testing.T) {
	checkHeartbeatGoroutines(t)
	// B gives up on its main loops after half its timeout, so that B's
	// refusal is what A reports (TestHeartbeatsStuckConsumerKeepsConnection
	// checks the same with both alike). Half of it also bounds each
	// heartbeat sent meanwhile: a second, which a loaded machine's stalls
	// do not use up (A's timeout stays under waitLimit).
	const timeout = 2 * time.Second
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Timeout = 4 * timeout }))
	b := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Timeout = timeout }))
	f := serveFollower(t, b.hb, nil, 1)
	never := make(chan raft.RPC) // nobody reads it: the main loop is stuck elsewhere
	t.Cleanup(b.hb.Handle(7, f.handler(7), never))
	silent := make(chan raft.RPC, 1) // taken (buffered), never answered
	t.Cleanup(b.hb.Handle(8, f.handler(8), silent))
	mustSend(t, a.hb, 1, b.addr, 1) // connected

	r7 := sendAsync(a.hb, 7, b.addr, emptyAppend(7, 2, 2), nil)
	r8 := sendAsync(a.hb, 8, b.addr, emptyAppend(8, 2, 2), nil)

	// While B waits for the main loops: a check of the goroutine check, which
	// must see the goroutines waiting for main loops and the answer writer.
	waitFor(t, "both appends to wait for their main loops", func() bool {
		// Partition 8's loop took its append at once: nothing waits for it.
		return len(silent) == 1 && countGoroutines("(*Heartbeats).consume") == 1 && countGoroutines("(*Heartbeats).respond") == 1
	})
	// The partitions' heartbeats, and everyone else, are answered meanwhile.
	for _, pid := range []uint32{7, 8, 1} {
		r := waitSend(t, sendAsync(a.hb, pid, b.addr, leaderHeartbeat(pid, 3), nil), timeout/2)
		if r.err != nil {
			t.Fatalf("partition %d heartbeat while its main loop is stuck: %v", pid, r.err)
		}
	}

	for _, c := range []struct {
		pid  uint32
		res  <-chan sendResult
		want string
	}{{7, r7, "partition 7 did not take"}, {8, r8, "partition 8 did not answer"}} {
		r := waitSend(t, c.res, waitLimit)
		t.Logf("partition %d: Send after %v: %v", c.pid, r.took, r.err)
		if r.err == nil {
			t.Fatalf("partition %d: Send succeeded with %+v", c.pid, r.resp)
		}
		if !strings.Contains(r.err.Error(), c.want) || !strings.Contains(r.err.Error(), b.addr) {
			t.Errorf("partition %d: Send: %v; want B's refusal %q, naming %s", c.pid, r.err, c.want, b.addr)
		}
		if r.took < timeout/2 || r.took >= 4*timeout {
			t.Errorf("partition %d: Send failed after %v, want about half B's %v timeout (and before A's %v)", c.pid, r.took, timeout, 4*timeout)
		}
		if errors.Is(r.err, ErrHeartbeatsUnsupported) || errors.Is(r.err, ErrClosed) || errors.Is(r.err, ErrBadFrame) {
			t.Errorf("partition %d: Send: %v: one partition's refusal is none of the channel errors", c.pid, r.err)
		}
	}
	// The refused append was withdrawn: a main loop that reads now gets
	// nothing. The one taken can still be answered, to nobody.
	select {
	case rpc := <-never:
		t.Fatalf("partition 7's main loop was given %+v after it was refused", rpc.Command)
	case <-time.After(100 * time.Millisecond):
	}
	rpc := <-silent
	rpc.Respond(consumerAnswer(8, rpc.Command.(*raft.AppendEntriesRequest)), nil)
	// And the channel still carries everyone's requests.
	mustSend(t, a.hb, 1, b.addr, 4)
	mustSendReq(t, a.hb, 1, b.addr, emptyAppend(1, 4, 4))
	mustSend(t, a.hb, 7, b.addr, 4)
}

// TestHeartbeatsStuckConsumerKeepsConnection: with both nodes configured
// alike, a main loop stuck past the timeout must cost only its own
// partition's request: B refuses it, naming the partition. The sender must
// not take the missing answer for a stuck connection and drop it, failing
// the other partitions' requests in flight on it. B refuses after half the
// timeout, so its refusal arrives first even after the longest linger
// allowed (under a quarter of the timeout).
func TestHeartbeatsStuckConsumerKeepsConnection(t *testing.T) {
	checkHeartbeatGoroutines(t)
	// The schedule below leaves 0.3 to 0.5 of the timeout between events
	// that must come in order (B's refusal before A's own timeout of
	// partition 7, the release of partition 1 before its timeout): 0.6 s or
	// more, which a loaded machine's late wake-ups do not use up.
	const timeout = 2 * time.Second
	cfg := testHBConfig(func(c *HeartbeatConfig) { c.Timeout = timeout; c.Linger = timeout/4 - time.Millisecond })
	a, b := newHBNode(t, cfg), newHBNode(t, cfg)
	g := newGate(t)
	f := serveFollower(t, b.hb, g, 1)
	t.Cleanup(b.hb.Handle(7, f.handler(7), make(chan raft.RPC))) // never read

	start := time.Now()
	r7 := sendAsync(a.hb, 7, b.addr, emptyAppend(7, 2, 2), nil)
	// Later, an urgent heartbeat of partition 1, which B's handler holds
	// for a while, far less than the timeout.
	time.Sleep(start.Add(6 * timeout / 10).Sub(time.Now()))
	defer a.hb.Urgent(1)()
	r1 := sendAsync(a.hb, 1, b.addr, leaderHeartbeat(1, 2), nil)
	if pid := g.waitEntered(t); pid != 1 {
		t.Fatalf("handler of partition %d entered", pid)
	}
	time.Sleep(start.Add(13 * timeout / 10).Sub(time.Now()))
	g.release()

	r := waitSend(t, r1, waitLimit)
	t.Logf("partition 1: Send after %v: %v", r.took, r.err)
	if want := followerAnswer(1, leaderHeartbeat(1, 2)); r.err != nil || !reflect.DeepEqual(r.resp, *want) {
		t.Errorf("partition 1's heartbeat, in flight for %v: %+v, %v; want its answer %+v", r.took, r.resp, r.err, *want)
	}
	r = waitSend(t, r7, waitLimit)
	t.Logf("partition 7: Send after %v: %v", r.took, r.err)
	if r.err == nil || !strings.Contains(r.err.Error(), "partition 7") {
		t.Errorf("Send to a stuck main loop: %v, want B's refusal naming partition 7", r.err)
	}
}

func TestHeartbeatsUrgentHurriesQueued(t *testing.T) {
	checkHeartbeatGoroutines(t)
	const linger = 5 * time.Second
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Linger = linger; c.Timeout = 5 * linger }))
	b := newHBNode(t, testHBConfig(nil))
	serveFollower(t, b.hb, nil, 1, 2)

	// Partition 1's heartbeat and empty append linger...
	hb, app := leaderHeartbeat(1, 1), emptyAppend(1, 1, 3)
	hbRes, appRes := sendAsync(a.hb, 1, b.addr, hb, nil), sendAsync(a.hb, 1, b.addr, app, nil)
	waitFor(t, "partition 1's requests to be queued", func() bool { return queuedCalls(a.hb, b.addr) == 2 })

	// ...an urgent partition with nothing queued hurries nothing...
	done3 := a.hb.Urgent(3)
	select {
	case r := <-hbRes:
		t.Fatalf("Urgent(3) sent partition 1's heartbeat: %+v, %v", r.resp, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	done3()

	// ...and Urgent(1) sends them now, not after the linger.
	start := time.Now()
	done1 := a.hb.Urgent(1)
	defer done1()
	for _, c := range []struct {
		req *raft.AppendEntriesRequest
		res <-chan sendResult
	}{{hb, hbRes}, {app, appRes}} {
		select {
		case r := <-c.res:
			if want := wantAnswer(1, c.req); r.err != nil || !reflect.DeepEqual(r.resp, *want) {
				t.Fatalf("hurried Send %+v: %+v, %v; want %+v", *c.req, r.resp, r.err, *want)
			}
		case <-time.After(shortWait - time.Since(start)):
			t.Fatalf("Send %+v did not return within %v of Urgent(1) (linger %v): the queued request was not hurried", *c.req, shortWait, linger)
		}
	}
	waitFor(t, "Sent to count both requests", func() bool { return a.hb.Stats().Sent >= 2 })
	if s := a.hb.Stats(); s.Sent != 2 || s.Frames != 1 {
		t.Fatalf("stats %+v, want both requests in one frame", s)
	}
}

func TestHeartbeatsAnswersOutOfOrderAcrossFrames(t *testing.T) {
	checkHeartbeatGoroutines(t)
	b := newHBNode(t, testHBConfig(nil))
	f := serveFollower(t, b.hb, nil, 2)
	slow := newHoldingLoop(t, b.hb, f, 1)

	reqs := []hbRequest{
		{call: 10, partition: 1, req: *emptyAppend(1, 4, 40)}, // held by partition 1's main loop
		{call: 11, partition: 2, req: *leaderHeartbeat(2, 4)},
		{call: 12, partition: 2, req: *emptyAppend(2, 4, 41)},
		{call: 13, partition: 1, req: *leaderHeartbeat(1, 4)},
		{call: 14, partition: 99, req: *leaderHeartbeat(99, 4)}, // no replica
	}
	want := map[uint64]hbResponse{
		10: {call: 10, resp: *consumerAnswer(1, &reqs[0].req)},
		11: {call: 11, resp: *followerAnswer(2, &reqs[1].req)},
		12: {call: 12, resp: *consumerAnswer(2, &reqs[2].req)},
		13: {call: 13, resp: *followerAnswer(1, &reqs[3].req)},
		14: {call: 14, err: "partition 99 has no replica on this node"},
	}
	c := rawHeartbeatConn(t, b.addr)
	if _, err := c.Write(encodeRequestsOn(false, reqs...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	got := map[uint64]int{} // call id: the frame it came in
	readAnswers := func(frame int) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(waitLimit))
		kind, body, _, err := readFrame(br, nil)
		if err != nil || kind != frameResponses {
			t.Fatalf("answer frame %d: kind %d, %v", frame, kind, err)
		}
		resps, err := decodeResponses(body, nil, false)
		if err != nil {
			t.Fatalf("answer frame %d: %v", frame, err)
		}
		for _, r := range resps {
			if _, dup := got[r.call]; dup {
				t.Fatalf("call %d answered twice", r.call)
			}
			got[r.call] = frame
			if w, ok := want[r.call]; !ok || !reflect.DeepEqual(r, w) {
				t.Fatalf("answer frame %d: %+v, want %+v", frame, r, w)
			}
		}
	}
	slow.waitTaken(t)
	for frame := 0; len(got) < 4; frame++ {
		readAnswers(frame)
	}
	if _, ok := got[10]; ok {
		t.Fatalf("the held append was answered before its main loop answered it")
	}
	// Answered together, the heartbeats and the refusal share a frame.
	if got[11] != got[13] || got[11] != got[14] {
		t.Errorf("answers ready at once came in frames %v, want one frame", got)
	}
	// Nothing more until the main loop answers; then its answer comes alone.
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := br.Peek(1); !isTimeout(err) {
		t.Fatalf("read before partition 1 answered: %v, want a timeout", err)
	}
	slow.release()
	last := len(got) + 100
	readAnswers(last)
	if got[10] != last || len(got) != 5 {
		t.Fatalf("answers by frame %v, want call 10 in the last", got)
	}
	waitFor(t, "B to count its answers", func() bool { return b.hb.Stats().Answered == 5 })
}

func TestHeartbeatsCloseWithAppendsPending(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	f := serveFollower(t, b.hb, nil, 1)
	held := newHoldingLoop(t, b.hb, f, 2)
	never := make(chan raft.RPC)
	t.Cleanup(b.hb.Handle(3, f.handler(3), never))

	r2 := sendAsync(a.hb, 2, b.addr, emptyAppend(2, 1, 1), nil)
	r3 := sendAsync(a.hb, 3, b.addr, emptyAppend(3, 1, 1), nil)
	held.waitTaken(t)
	waitFor(t, "both appends to reach B", func() bool { return countGoroutines("(*Heartbeats).consume") == held.consumeGoroutines(1) })

	// B shuts down while its main loops hold the appends: Close does not
	// wait for them (nor for the timeout), and A's Sends fail.
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- b.hb.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(shortWait):
		t.Fatalf("Close did not return within %v with appends waiting for main loops", shortWait)
	}
	t.Logf("B closed in %v", time.Since(start))
	for pid, ch := range map[uint32]<-chan sendResult{2: r2, 3: r3} {
		r := waitSend(t, ch, shortWait)
		t.Logf("partition %d: %v", pid, r.err)
		if r.err == nil {
			t.Fatalf("partition %d: Send succeeded with %+v after the peer closed", pid, r.resp)
		}
		if errors.Is(r.err, ErrClosed) || errors.Is(r.err, ErrHeartbeatsUnsupported) {
			t.Fatalf("partition %d: Send: %v; the peer went away, this node's channel did not close", pid, r.err)
		}
	}
	// The held append's late answer goes nowhere.
	held.release()
	waitFor(t, "B's goroutines to end", func() bool { return countGoroutines("(*Heartbeats).consume") == 0 })
}

// writeAppend is the append a leader of pid sends for a write in term: one
// command entry, stamped with the time it was appended.
func writeAppend(pid uint32, term uint64, data []byte) *raft.AppendEntriesRequest {
	r := emptyAppend(pid, term, 10*term)
	r.Entries = []*raft.Log{{Index: 10*term + 1, Term: term, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}}
	return r
}

// checkConsumed checks that the main loop of pid saw exactly want (in any
// order; the terms tell them apart), every field of every entry intact, and
// its heartbeat handler none of them.
func checkConsumed(t *testing.T, f *follower, pid uint32, want []*raft.AppendEntriesRequest) {
	t.Helper()
	got := f.consumedRequests(pid)
	slices.SortFunc(got, func(x, y raft.AppendEntriesRequest) int { return cmp.Compare(x.Term, y.Term) })
	want = slices.Clone(want)
	slices.SortFunc(want, func(x, y *raft.AppendEntriesRequest) int { return cmp.Compare(x.Term, y.Term) })
	if len(got) != len(want) {
		t.Errorf("partition %d: the main loop saw %d requests, want %d", pid, len(got), len(want))
		return
	}
	for i := range got {
		if d := requestDiff(got[i], *want[i]); d != "" {
			t.Errorf("partition %d: the main loop saw a request other than sent: %s", pid, d)
		}
	}
	for _, r := range f.requests(pid) {
		if len(r.Entries) > 0 {
			t.Errorf("partition %d: the heartbeat handler was given an append with entries: %s", pid, describeRequest(r))
		}
	}
}

// TestHeartbeatsEntriesGoToConsumer: appends with entries, as a leader sends
// them for steady-state writes, reach their partition's main loop, never the
// heartbeat fast path, with every field of every entry intact (the data
// bytes, the extensions, the type, the appended-at instant), and the main
// loop's answer comes back; both ways at once, among heartbeats and empty
// appends of the same partitions.
func TestHeartbeatsEntriesGoToConsumer(t *testing.T) {
	checkHeartbeatGoroutines(t)
	cfg := testHBConfig(func(c *HeartbeatConfig) { c.Linger = 20 * time.Millisecond })
	a, b := newHBNode(t, cfg), newHBNode(t, cfg)
	pids := []uint32{0, 3, 1000, math.MaxUint32 - 1}
	followers := map[*hbNode]*follower{a: serveFollower(t, a.hb, nil, pids...), b: serveFollower(t, b.hb, nil, pids...)}
	now := time.Now() // with nanoseconds and a monotonic reading

	// requests are those of one leader of pid, each with its own term.
	requests := func(pid uint32) []*raft.AppendEntriesRequest {
		data := func(n int) []byte {
			if n == 0 {
				return nil // the receiver decodes an empty field as nil
			}
			d := make([]byte, n)
			for i := range d {
				d[i] = byte(i*7 + int(pid))
			}
			return d
		}
		app := func(term uint64, entries ...*raft.Log) *raft.AppendEntriesRequest {
			r := emptyAppend(pid, term, 10*term)
			r.Entries = entries
			return r
		}
		var many []*raft.Log
		for i := range maxCarriedEntries {
			many = append(many, &raft.Log{Index: 61 + uint64(i), Term: 6, Type: raft.LogType(i % 7), Data: data(i % 64), AppendedAt: now.Add(time.Duration(i))})
		}
		hbShaped := leaderHeartbeat(pid, 7)
		hbShaped.Entries = []*raft.Log{{Index: 1, Term: 7, Data: []byte("a heartbeat's fields and an entry")}}
		return []*raft.AppendEntriesRequest{
			leaderHeartbeat(pid, 1),
			// A write, as raft's leader sends it.
			app(2, &raft.Log{Index: 21, Term: 2, Type: raft.LogCommand, Data: fmt.Appendf(nil, "put k%d v", pid), AppendedAt: now}),
			// Every field set, every byte value, a time in another zone.
			app(3, &raft.Log{Index: 1<<40 + 1, Term: 3, Type: raft.LogConfiguration, Data: data(256), Extensions: []byte("ext"),
				AppendedAt: time.Unix(1_700_000_000, 987_654_321).In(time.FixedZone("UTC+5:30", 19800))}),
			// A new leader's no-op: no data, no time.
			app(4, &raft.Log{Index: 41, Term: 4, Type: raft.LogNoop}),
			// Several entries, at the byte limit.
			app(5, &raft.Log{Index: 51, Term: 5, Data: data(MaxCarriedEntryBytes / 2)},
				&raft.Log{Index: 52, Term: 5, Type: raft.LogBarrier},
				&raft.Log{Index: 53, Term: 5, Extensions: data(MaxCarriedEntryBytes / 2), AppendedAt: time.Unix(-1, 1)}),
			// At the entry limit.
			app(6, many...),
			hbShaped,
			emptyAppend(pid, 8, 80),
			{Term: 9, Entries: []*raft.Log{{Index: 91, Term: 9, Data: []byte("no leader address")}}},
		}
	}
	type call struct {
		from, to *hbNode
		pid      uint32
		req      *raft.AppendEntriesRequest
		sent     raft.AppendEntriesRequest // a deep copy: Send must not change req
		res      <-chan sendResult
	}
	var calls []call
	for _, dir := range [][2]*hbNode{{a, b}, {b, a}} { // both ways at once
		for _, pid := range pids {
			for _, req := range requests(pid) {
				calls = append(calls, call{dir[0], dir[1], pid, req, cloneRequest(*req), sendAsync(dir[0].hb, pid, dir[1].addr, req, nil)})
			}
		}
	}
	for _, c := range calls {
		r := waitSend(t, c.res, waitLimit)
		if r.err != nil {
			t.Fatalf("Send(partition %d, %s): %v", c.pid, describeRequest(c.sent), r.err)
		}
		if want := wantAnswer(c.pid, &c.sent); !reflect.DeepEqual(r.resp, *want) {
			t.Errorf("partition %d %s (heartbeat %v) answered\n %+v\nwant %+v", c.pid, describeRequest(c.sent), IsHeartbeat(&c.sent), r.resp, *want)
		}
		if !reflect.DeepEqual(*c.req, c.sent) {
			t.Errorf("Send changed its request: %s, was %s", describeRequest(*c.req), describeRequest(c.sent))
		}
	}

	for node, f := range followers {
		for _, pid := range pids {
			var wantHB, wantConsumed []*raft.AppendEntriesRequest
			for _, req := range requests(pid) {
				if IsHeartbeat(req) {
					wantHB = append(wantHB, req)
				} else {
					wantConsumed = append(wantConsumed, req)
				}
			}
			checkConsumed(t, f, pid, wantConsumed)
			if got := f.requests(pid); len(got) != len(wantHB) {
				t.Errorf("node %s partition %d: the heartbeat handler saw %d requests, want %d", node.addr, pid, len(got), len(wantHB))
			}
		}
	}
	total := uint64(len(calls) / 2)
	for _, n := range []*hbNode{a, b} {
		waitFor(t, "Sent to count every request", func() bool { return n.hb.Stats().Sent == total })
		if s := n.hb.Stats(); s.Answered != total {
			t.Errorf("node %s stats %+v: answered %d, want %d", n.addr, s, s.Answered, total)
		}
	}
}

// TestHeartbeatsEntriesSkipLinger: an append with entries is a write a
// client waits for; it never lingers, and takes the requests lingering
// before it along. With the longest linger allowed (just under a quarter of
// the timeout), it is answered well before the linger.
func TestHeartbeatsEntriesSkipLinger(t *testing.T) {
	checkHeartbeatGoroutines(t)
	const timeout, linger = 16 * time.Second, 3900 * time.Millisecond
	const bound = 2 * time.Second // well below the linger: a correctness bound, not a performance one
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) { c.Timeout = timeout; c.Linger = linger }))
	b := newHBNode(t, testHBConfig(nil))
	f := serveFollower(t, b.hb, nil, 1, 2)

	// The first write, with nothing else queued, dialing included.
	first := writeAppend(1, 2, []byte("write 2"))
	r := waitSend(t, sendAsync(a.hb, 1, b.addr, first, nil), waitLimit)
	if want := consumerAnswer(1, first); r.err != nil || !reflect.DeepEqual(r.resp, *want) {
		t.Fatalf("write: %+v, %v; want %+v", r.resp, r.err, *want)
	}
	if r.took >= bound {
		t.Fatalf("write answered after %v (linger %v): it lingered", r.took, linger)
	}

	// A heartbeat of another partition lingers...
	lingering := sendAsync(a.hb, 2, b.addr, leaderHeartbeat(2, 3), nil)
	waitFor(t, "partition 2's heartbeat to be queued", func() bool { return queuedCalls(a.hb, b.addr) == 1 })
	// ...until a write comes, which takes it along.
	second := writeAppend(1, 3, bytes.Repeat([]byte("w"), 1000))
	start := time.Now()
	written := sendAsync(a.hb, 1, b.addr, second, nil)
	for _, c := range []struct {
		name string
		req  *raft.AppendEntriesRequest
		pid  uint32
		res  <-chan sendResult
	}{{"write", second, 1, written}, {"lingering heartbeat", leaderHeartbeat(2, 3), 2, lingering}} {
		select {
		case r := <-c.res:
			if want := wantAnswer(c.pid, c.req); r.err != nil || !reflect.DeepEqual(r.resp, *want) {
				t.Fatalf("%s: %+v, %v; want %+v", c.name, r.resp, r.err, *want)
			}
		case <-time.After(bound - time.Since(start)):
			t.Fatalf("%s not answered within %v of a write (linger %v)", c.name, bound, linger)
		}
	}
	waitFor(t, "Sent to count three requests", func() bool { return a.hb.Stats().Sent >= 3 })
	if s := a.hb.Stats(); s.Sent != 3 || s.Frames != 2 {
		t.Fatalf("stats %+v, want 3 requests in 2 frames (the second write with the heartbeat)", s)
	}
	checkConsumed(t, f, 1, []*raft.AppendEntriesRequest{first, second})
	if n := len(f.requests(2)); n != 1 {
		t.Fatalf("partition 2's heartbeat handler saw %d requests, want 1", n)
	}

	// Without a write, a heartbeat does linger: the bound above is not met
	// by chance.
	cancel := make(chan struct{})
	again := sendAsync(a.hb, 2, b.addr, leaderHeartbeat(2, 4), cancel)
	select {
	case r := <-again:
		t.Fatalf("heartbeat answered (%+v, %v) within %v, though it lingers %v", r.resp, r.err, bound, linger)
	case <-time.After(bound):
	}
	close(cancel)
	if r := waitSend(t, again, waitLimit); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("cancelled Send: %v, want ErrClosed", r.err)
	}
}

// holdingProxy forwards the connections it accepts to target, but each
// only once released: until then, a dialer waits for its handshake. It
// records the length of every frame the dialers send after the handshake.
type holdingProxy struct {
	addr, target string
	ln           net.Listener
	open         chan struct{}
	once         sync.Once
	accepted     chan struct{}
	wg           sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  []net.Conn
	frames []int // the length fields: kind and body
}

func newHoldingProxy(t *testing.T, target string) *holdingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &holdingProxy{addr: ln.Addr().String(), target: target, ln: ln, open: make(chan struct{}), accepted: make(chan struct{}, 100)}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !p.track(c) {
				return
			}
			p.accepted <- struct{}{}
			p.wg.Go(func() { p.forward(c) })
		}
	})
	t.Cleanup(func() {
		p.release()
		_ = ln.Close()
		p.mu.Lock()
		p.closed = true
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// track registers c to be closed at cleanup, or closes it if that is past.
func (p *holdingProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *holdingProxy) release() { p.once.Do(func() { close(p.open) }) }

func (p *holdingProxy) waitAccepted(t *testing.T) {
	t.Helper()
	select {
	case <-p.accepted:
	case <-time.After(waitLimit):
		t.Fatalf("nothing dialed the proxy within %v", waitLimit)
	}
}

func (p *holdingProxy) frameLens() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.frames)
}

func (p *holdingProxy) forward(c net.Conn) {
	defer func() { _ = c.Close() }()
	<-p.open
	u, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(u) {
		return
	}
	defer func() { _ = u.Close() }()
	p.wg.Go(func() {
		_, _ = io.Copy(c, u)
		_ = c.Close()
	})
	h, err := readHeader(c)
	if err != nil {
		return
	}
	if _, err := u.Write(appendHeader(nil, h)); err != nil {
		return
	}
	br := bufio.NewReader(c)
	for {
		var n [4]byte
		if _, err := io.ReadFull(br, n[:]); err != nil {
			return
		}
		p.mu.Lock()
		p.frames = append(p.frames, int(binary.BigEndian.Uint32(n[:])))
		p.mu.Unlock()
		if _, err := u.Write(n[:]); err != nil {
			return
		}
		if _, err := io.CopyN(u, br, int64(binary.BigEndian.Uint32(n[:]))); err != nil {
			return
		}
	}
}

// TestHeartbeatsBatchBySize: appends queued together go in frames of about
// frameTarget bytes, not all in one (which would pass maxFrameLen with
// enough of them, and hold up the heartbeats behind them) nor one each.
// A proxy holds the connection's handshake while 40 appends of 60 KiB and
// a few heartbeats queue behind the first append; then they all go, to a
// real receiver, which drops a connection with a frame over maxFrameLen.
func TestHeartbeatsBatchBySize(t *testing.T) {
	checkHeartbeatGoroutines(t)
	const n, size, heartbeats = 40, 60 << 10, 5
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	var pids []uint32
	for pid := range uint32(n) {
		pids = append(pids, pid)
	}
	f := serveFollower(t, b.hb, nil, pids...)
	proxy := newHoldingProxy(t, b.addr)

	reqs := make([]*raft.AppendEntriesRequest, n)
	for i, pid := range pids {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(j*31 + i)
		}
		reqs[i] = writeAppend(pid, 5, data)
	}
	itemLen := len(appendRequest(nil, &hbRequest{call: 1 << 20, partition: n, req: *reqs[0]}, true))

	// A's writer takes the first append and dials; the proxy holds the
	// handshake while the rest queue.
	res := []<-chan sendResult{sendAsync(a.hb, pids[0], proxy.addr, reqs[0], nil)}
	proxy.waitAccepted(t)
	for i := 1; i < n; i++ {
		res = append(res, sendAsync(a.hb, pids[i], proxy.addr, reqs[i], nil))
	}
	var hbRes []<-chan sendResult
	for _, pid := range pids[:heartbeats] {
		hbRes = append(hbRes, sendAsync(a.hb, pid, proxy.addr, leaderHeartbeat(pid, 5), nil))
	}
	waitFor(t, "the appends and heartbeats to queue", func() bool { return queuedCalls(a.hb, proxy.addr) == n-1+heartbeats })
	proxy.release()

	for i, ch := range res {
		r := waitSend(t, ch, waitLimit)
		if want := consumerAnswer(pids[i], reqs[i]); r.err != nil || !reflect.DeepEqual(r.resp, *want) {
			t.Fatalf("append of partition %d: %+v, %v; want %+v", pids[i], r.resp, r.err, *want)
		}
	}
	for i, ch := range hbRes {
		r := waitSend(t, ch, waitLimit)
		if want := followerAnswer(pids[i], leaderHeartbeat(pids[i], 5)); r.err != nil || !reflect.DeepEqual(r.resp, *want) {
			t.Fatalf("heartbeat of partition %d: %+v, %v; want %+v", pids[i], r.resp, r.err, *want)
		}
	}
	for i, pid := range pids {
		checkConsumed(t, f, pid, reqs[i:i+1])
	}

	waitFor(t, "Sent to count every request", func() bool { return a.hb.Stats().Sent == n+heartbeats })
	s := a.hb.Stats()
	waitFor(t, "the proxy to see every frame", func() bool { return uint64(len(proxy.frameLens())) == s.Frames })
	lens := proxy.frameLens()
	t.Logf("stats %+v; frames of %v bytes (an append is %d)", s, lens, itemLen)
	// They cannot fit in fewer frames...
	if minFrames := (n*size + frameTarget - 1) / frameTarget; s.Frames < uint64(minFrames) {
		t.Errorf("%d frames carried %d appends of %d bytes, want at least %d of at most about %d bytes", s.Frames, n, size, minFrames, frameTarget)
	}
	// ...nor did they go one or two a frame: the first alone, the rest cut
	// at frameTarget.
	if maxFrames := 2 + (n-1+frameTarget/itemLen-1)/(frameTarget/itemLen); s.Frames > uint64(maxFrames) {
		t.Errorf("%d frames carried %d appends of %d bytes, want at most %d: batches were cut short", s.Frames, n, size, maxFrames)
	}
	// Each frame holds appends estimated under frameTarget, and one more.
	for i, l := range lens {
		if limit := 1 + binary.MaxVarintLen64 + frameTarget + itemLen; l > limit {
			t.Errorf("frame %d of %d bytes, over frameTarget %d and one append (limit %d)", i, l, frameTarget, limit)
		}
		if l > maxFrameLen {
			t.Errorf("frame %d of %d bytes, over maxFrameLen", i, l)
		}
	}
	if got := b.hb.Stats().Answered; got != n+heartbeats {
		t.Errorf("B answered %d requests, want %d", got, n+heartbeats)
	}
}

// TestHeartbeatsQuiesceNeedsTheFlagsChannel: Raft's quiet offer and its
// acceptance cross the channel only where both ends speak
// HeartbeatChannelFlags. A peer of an older version, which listens on
// HeartbeatChannel alone, still gets its heartbeats, without the offer, so
// its groups never go quiet (a quiet leader would let its followers time
// out).
func TestHeartbeatsQuiesceNeedsTheFlagsChannel(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	f := serveFollower(t, b.hb, nil, 2)

	offer := leaderHeartbeat(2, 5)
	offer.Quiesce = true
	r := waitSend(t, sendAsync(a.hb, 2, b.addr, offer, nil), waitLimit)
	if r.err != nil || !r.resp.Quiescent {
		t.Fatalf("quiet offer to a current peer: %+v, %v; want the follower's acceptance", r.resp, r.err)
	}
	if seen := f.requests(2); len(seen) != 1 || !seen[0].Quiesce {
		t.Fatalf("the current peer's follower saw %+v; want one heartbeat with Quiesce", seen)
	}

	// An older peer: its node has no HeartbeatChannelFlags.
	old := newHBNode(t, testHBConfig(nil))
	if err := old.hb.layerF.Close(); err != nil {
		t.Fatal(err)
	}
	g := serveFollower(t, old.hb, nil, 2)
	r = waitSend(t, sendAsync(a.hb, 2, old.addr, offer, nil), waitLimit)
	if r.err != nil {
		t.Fatalf("heartbeat to an older peer: %v", r.err)
	}
	if r.resp.Quiescent {
		t.Fatalf("an older peer answered Quiescent: %+v", r.resp)
	}
	if seen := g.requests(2); len(seen) != 1 || seen[0].Quiesce {
		t.Fatalf("the older peer's follower saw %+v; want one heartbeat without Quiesce", seen)
	}
}

// TestHeartbeatsOnHangupBothWays: the hook runs when a peer's process goes,
// seen from either end of the heartbeat connection: the node it dialed
// (an inbound hangup) and the node that dialed it (its outbound heartbeats
// fail with a reset or EOF). Closing our own Heartbeats reports nothing.
func TestHeartbeatsOnHangupBothWays(t *testing.T) {
	checkHeartbeatGoroutines(t)
	for _, tt := range []struct {
		name string
		goes func(dialer, acceptor *hbNode) (gone, watcher *hbNode)
	}{
		{"the dialer goes", func(d, a *hbNode) (*hbNode, *hbNode) { return d, a }},
		{"the acceptor goes", func(d, a *hbNode) (*hbNode, *hbNode) { return a, d }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dialer := newHBNode(t, testHBConfig(nil))
			acceptor := newHBNode(t, testHBConfig(nil))
			serveFollower(t, acceptor.hb, nil, 1)
			mustSend(t, dialer.hb, 1, acceptor.addr, 2)

			gone, watcher := tt.goes(dialer, acceptor)
			hangups := make(chan struct{}, 10)
			watcher.hb.OnHangup(func() { hangups <- struct{}{} })
			gone.hb.OnHangup(func() { t.Error("hangup reported by the node that closed its own channel") })
			if err := gone.hb.Close(); err != nil {
				t.Fatal(err)
			}
			if err := gone.mux.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-hangups:
			case <-time.After(waitLimit):
				t.Fatal("the peer's hangup was not reported")
			}
		})
	}
}

// TestHeartbeatsQuietLinger: a heartbeat to a quiet follower (its last
// answer was Quiescent) waits QuietLinger for company, not Linger; the
// offer before it, to a follower not yet quiet, waits only Linger; and a
// heartbeat queued after a lingering one with a shorter linger takes it
// along.
func TestHeartbeatsQuietLinger(t *testing.T) {
	checkHeartbeatGoroutines(t)
	const quietLinger = 2 * time.Second
	a := newHBNode(t, testHBConfig(func(c *HeartbeatConfig) {
		c.Linger, c.QuietLinger, c.Timeout = 20*time.Millisecond, quietLinger, 10*time.Second
	}))
	b := newHBNode(t, testHBConfig(nil))
	serveFollower(t, b.hb, nil, 1, 2)
	quiet := func(pid uint32) *raft.AppendEntriesRequest {
		req := leaderHeartbeat(pid, 3)
		req.Quiesce = true
		return req
	}

	// The offer goes to a follower not yet quiet: only Linger.
	r := waitSend(t, sendAsync(a.hb, 1, b.addr, quiet(1), nil), waitLimit)
	if r.err != nil || !r.resp.Quiescent {
		t.Fatalf("offer: %+v, %v; want it accepted", r.resp, r.err)
	}
	if r.took >= quietLinger {
		t.Fatalf("the offer to a follower not yet quiet waited %v; want only Linger", r.took)
	}

	// To the follower that accepted, alone, it lingers its whole QuietLinger.
	r = waitSend(t, sendAsync(a.hb, 1, b.addr, quiet(1), nil), waitLimit)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.took < quietLinger {
		t.Fatalf("a quiet heartbeat alone was answered after %v; want it to linger %v first", r.took, quietLinger)
	}

	// With company due sooner, it goes with it.
	slow := sendAsync(a.hb, 1, b.addr, quiet(1), nil)
	waitFor(t, "the quiet heartbeat queued", func() bool { return queuedCalls(a.hb, b.addr) == 1 })
	fast := waitSend(t, sendAsync(a.hb, 2, b.addr, leaderHeartbeat(2, 3), nil), waitLimit)
	r = waitSend(t, slow, waitLimit)
	if fast.err != nil || r.err != nil {
		t.Fatalf("answers: %v, %v", fast.err, r.err)
	}
	if r.took >= quietLinger {
		t.Fatalf("the quiet heartbeat waited %v although a heartbeat due sooner was queued after it", r.took)
	}
}

// Requests that do not linger (appends with entries, or Linger 0 as here)
// still share a frame with those queued by goroutines that were ready to
// run when the writer woke: the writer yields to them first. Without that,
// under load each append went in a frame of its own. One processor makes
// the order of the goroutines deterministic enough to see it.
func TestHeartbeatsReadySendersShareAFrame(t *testing.T) {
	checkHeartbeatGoroutines(t)
	a := newHBNode(t, testHBConfig(nil))
	b := newHBNode(t, testHBConfig(nil))
	const n = 32
	var pids []uint32
	for pid := range uint32(n) {
		pids = append(pids, pid+1)
	}
	serveFollower(t, b.hb, nil, pids...)
	mustSend(t, a.hb, pids[0], b.addr, 1) // dial first: a new connection's goroutines would run in between
	waitFor(t, "Sent to count the first heartbeat", func() bool { return a.hb.Stats().Sent == 1 })
	before := a.hb.Stats()

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var res []<-chan sendResult
	for _, pid := range pids {
		res = append(res, sendAsync(a.hb, pid, b.addr, leaderHeartbeat(pid, 2), nil))
	}
	for i, ch := range res {
		if r := waitSend(t, ch, waitLimit); r.err != nil {
			t.Fatalf("Send(partition %d): %v", pids[i], r.err)
		}
	}
	waitFor(t, "Sent to count the heartbeats", func() bool { return a.hb.Stats().Sent >= before.Sent+n })
	after := a.hb.Stats()
	sent, frames := after.Sent-before.Sent, after.Frames-before.Frames
	if sent != n {
		t.Fatalf("sent %d heartbeats, want %d", sent, n)
	}
	if frames > n/4 {
		t.Fatalf("%d heartbeats ready together went in %d frames, want at most %d", n, frames, n/4)
	}
}
