package transport

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// HeartbeatChannel is the partition id reserved for the heartbeat channel in
// connection headers. Real partition ids stay below partition.MaxPartitions.
const HeartbeatChannel uint32 = math.MaxUint32

// HeartbeatChannelFlags is the heartbeat channel with a flags byte in every
// request and answer (Raft's quiescence: AppendEntriesRequest.Quiesce and
// AppendEntriesResponse.Quiescent). A dialer asks for it first and falls
// back to HeartbeatChannel, without the flags, for a peer of an older
// version; such a peer's groups never go quiet.
const HeartbeatChannelFlags uint32 = math.MaxUint32 - 1

// ErrHeartbeatsUnsupported means the peer runs a RingKV without the heartbeat
// channel (it answered the handshake with "unknown partition"). The caller
// sends that peer's heartbeats the old way, one RPC per partition.
var ErrHeartbeatsUnsupported = errors.New("transport: peer has no heartbeat channel (older version); send heartbeats per partition")

// HeartbeatConfig configures Heartbeats.
type HeartbeatConfig struct {
	// Linger is how long a heartbeat or empty append may wait for others to
	// the same node, so that one frame and one system call carry them all.
	// Appends with entries and heartbeats marked urgent (see
	// Heartbeats.Urgent) never wait; they still share a frame with whatever
	// is queued. Zero sends at once. It must stay under a quarter of Timeout.
	Linger time.Duration
	// QuietLinger is the longer wait of a heartbeat to a quiet follower (a
	// heartbeat with raft.AppendEntriesRequest.Quiesce whose partition's
	// last answer from that peer was Quiescent): its follower waits seconds
	// for it, so it can wait for more company. The first such heartbeat,
	// the offer, goes to a follower still on its heartbeat timeout and
	// lingers only Linger. Under a quarter of Timeout; below Linger, Linger
	// applies.
	QuietLinger time.Duration
	// Timeout bounds one heartbeat: connecting, writing and the answer.
	Timeout time.Duration
	// SentBytes, if set, counts the bytes written to peers.
	SentBytes *atomic.Uint64
	// Logger receives connection failures. Nil discards.
	Logger *slog.Logger
}

// DefaultHeartbeatConfig returns the production settings.
func DefaultHeartbeatConfig() HeartbeatConfig {
	return HeartbeatConfig{Linger: 40 * time.Millisecond, QuietLinger: 500 * time.Millisecond, Timeout: 10 * time.Second}
}

const (
	// heartbeatIdle is how long a peer without heartbeats keeps its
	// connection and goroutines.
	heartbeatIdle = time.Minute
	// unsupportedRetry is how long a peer without the heartbeat channel is
	// not asked again.
	unsupportedRetry = 10 * time.Second
)

// HeartbeatStats counts the channel's traffic since the start.
type HeartbeatStats struct {
	Sent     uint64 // requests (heartbeats and small appends) sent
	Frames   uint64 // frames they were sent in
	Answered uint64 // requests of peers answered here
}

// Heartbeats carries the Raft heartbeats of every partition between two
// nodes over one connection, many to a frame, and with them the other small
// appends: the empty ones an idle leader sends to tell followers its commit
// index, and those of steady-state writes. With hundreds of partitions a
// node pair exchanges thousands of these a second, and one RPC each (a
// msgpack frame, two system calls and two goroutine wake-ups on each side)
// was most of an idle cluster's CPU.
//
// Send is called by each partition's Raft transport for the requests Carried
// accepts. The peer's Heartbeats hands a heartbeat to the handler its
// partition registered with Handle (hashicorp/raft's fast path, answered at
// once) and any other request to the partition's consumer channel (raft's
// main loop), and sends the answers back as they come, many to a frame.
// Nothing else about these RPCs changes: each partition still sends its own
// at its own times, and each answer is its follower's.
type Heartbeats struct {
	cfg    HeartbeatConfig
	layer  *Layer // HeartbeatChannel
	layerF *Layer // HeartbeatChannelFlags
	log    *slog.Logger
	done   chan struct{}
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	handlers  map[uint32]*hbHandler
	peers     map[string]*hbPeer
	urgent    map[uint32]int
	nextCall  uint64
	sent      atomic.Uint64
	frames    atomic.Uint64
	answered  atomic.Uint64
	serveConn map[net.Conn]struct{}
	hangup    atomic.Pointer[func()] // see OnHangup
}

type hbHandler struct {
	heartbeat func(raft.RPC)
	consume   chan<- raft.RPC
}

// NewHeartbeats registers the heartbeat channel on m and starts answering
// peers' heartbeats. Close it before closing m.
func NewHeartbeats(m *Mux, cfg HeartbeatConfig) (*Heartbeats, error) {
	if cfg.Timeout <= 0 || cfg.Linger < 0 || cfg.Linger >= cfg.Timeout/4 || cfg.QuietLinger >= cfg.Timeout/4 {
		return nil, fmt.Errorf("transport: heartbeat timeout %v must be positive, linger %v from 0 and quiet linger %v under a quarter of it",
			cfg.Timeout, cfg.Linger, cfg.QuietLinger)
	}
	layer, err := m.Listen(HeartbeatChannel)
	if err != nil {
		return nil, err
	}
	layerF, err := m.Listen(HeartbeatChannelFlags)
	if err != nil {
		_ = layer.Close()
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Heartbeats{
		cfg:       cfg,
		layer:     layer,
		layerF:    layerF,
		log:       cfg.Logger,
		done:      make(chan struct{}),
		handlers:  make(map[uint32]*hbHandler),
		peers:     make(map[string]*hbPeer),
		urgent:    make(map[uint32]int),
		serveConn: make(map[net.Conn]struct{}),
	}
	h.wg.Add(2)
	go h.accept(layer, false)
	go h.accept(layerF, true)
	return h, nil
}

// OnHangup sets f to be called, on a goroutine of its own, when a peer
// hangs up a heartbeat connection, in either direction: one it dialed here
// (see Layer.OnHangup), which is how the leaders of this node's followers
// send their heartbeats, or one this node dialed to send its own. Either
// is the first sign that the peer's process is gone; having both means
// one missed hangup (a connection that was being redialed, say) does not
// leave this node's followers waiting out their election timeout.
func (h *Heartbeats) OnHangup(f func()) {
	h.hangup.Store(&f)
	h.layer.OnHangup(f)
	h.layerF.OnHangup(f)
}

// Stats returns the traffic counters.
func (h *Heartbeats) Stats() HeartbeatStats {
	return HeartbeatStats{Sent: h.sent.Load(), Frames: h.frames.Load(), Answered: h.answered.Load()}
}

// Handle routes partition's incoming requests: heartbeats to heartbeat,
// which must answer on the RPC's RespChan before it returns (raft.Raft's
// heartbeat handler does), and other appends to consume, whose reader
// answers later with RPC.Respond (raft's main loop). The returned function
// removes them again, unless a later Handle replaced them.
func (h *Heartbeats) Handle(partition uint32, heartbeat func(raft.RPC), consume chan<- raft.RPC) (remove func()) {
	e := &hbHandler{heartbeat: heartbeat, consume: consume}
	h.mu.Lock()
	h.handlers[partition] = e
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		if h.handlers[partition] == e {
			delete(h.handlers, partition)
		}
		h.mu.Unlock()
	}
}

// Urgent marks partition's heartbeats as urgent until the returned function
// is called: they are sent at once instead of lingering, and so are those
// already waiting. A leader confirming its leadership for a strong read
// waits on these heartbeats.
func (h *Heartbeats) Urgent(partition uint32) (done func()) {
	h.mu.Lock()
	h.urgent[partition]++
	peers := make([]*hbPeer, 0, len(h.peers))
	for _, p := range h.peers {
		peers = append(peers, p)
	}
	h.mu.Unlock()
	for _, p := range peers {
		p.hurry(partition)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			if h.urgent[partition]--; h.urgent[partition] <= 0 {
				delete(h.urgent, partition)
			}
			h.mu.Unlock()
		})
	}
}

// Send delivers req, an AppendEntries of partition that Carried accepts, to
// the node at address and fills resp with its answer. It fails with
// ErrHeartbeatsUnsupported for a peer of an older version, with an error
// naming the peer when the request could not be delivered or answered
// within the timeout, and with ErrClosed as soon as cancel is closed (the
// sending replica shuts down).
func (h *Heartbeats) Send(partition uint32, address string, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, cancel <-chan struct{}) error {
	c := &hbCall{done: make(chan error, 1)}
	if err := h.queueCall(c, partition, address, req); err != nil {
		return err
	}
	select {
	case err := <-c.done:
		if err != nil {
			return err
		}
		*resp = c.resp
		return nil
	case <-cancel:
		// The call stays queued or in flight; its answer, if any, is dropped.
		return fmt.Errorf("%w: heartbeat to %s cancelled", ErrClosed, address)
	}
}

// SendAsync is Send without the wait: it queues req and returns, and done
// runs once, with resp filled in or with Send's error, when the answer
// comes or the call fails. done runs on one of the channel's goroutines
// (most often the reader of the peer's connection), never with a lock of
// the channel held, so it may send again; it must not block. SendAsync
// returns an error, and never runs done, when req cannot be queued at all:
// it is not Carried, the channel is closed, or the peer is known to lack
// the channel (ErrHeartbeatsUnsupported).
func (h *Heartbeats) SendAsync(partition uint32, address string, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, done func(error)) error {
	return h.queueCall(&hbCall{cb: done, respTo: resp}, partition, address, req)
}

// queueCall queues c, carrying req, on the peer at address.
func (h *Heartbeats) queueCall(c *hbCall, partition uint32, address string, req *raft.AppendEntriesRequest) error {
	if !Carried(req) {
		return errors.New("transport: Heartbeats.Send or SendAsync given an AppendEntries without a term or with entries over the channel's limits (see Carried)")
	}
	if len(req.ID) > maxFieldLen || len(req.Addr) > maxFieldLen || len(req.Leader) > maxFieldLen {
		return fmt.Errorf("%w: server id or address over %d bytes", ErrHeartbeatsUnsupported, maxFieldLen)
	}
	c.req = hbRequest{partition: partition, req: *req}
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return fmt.Errorf("%w: heartbeats", ErrClosed)
		}
		h.nextCall++
		c.req.call = h.nextCall
		// Entries are writes a client waits for: they never linger.
		c.urgent = h.urgent[partition] > 0 || len(req.Entries) > 0
		p := h.peers[address]
		if p == nil {
			p = newHBPeer(h, address)
			h.peers[address] = p
		}
		h.mu.Unlock()
		if err := p.enqueue(c); err != nil {
			return err
		}
		if c.queued {
			return nil
		}
		// p was retiring; the next round finds or makes a new one.
	}
}

// Close stops the channel: calls in flight fail, connections close, and the
// goroutines end before it returns.
func (h *Heartbeats) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	close(h.done)
	conns := make([]net.Conn, 0, len(h.serveConn))
	for c := range h.serveConn {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	err := errors.Join(h.layer.Close(), h.layerF.Close())
	for _, c := range conns {
		_ = c.Close()
	}
	h.wg.Wait()
	return err
}

// accept serves the connections peers dial to send heartbeats here, on
// one of the two channels (flags: HeartbeatChannelFlags).
func (h *Heartbeats) accept(l *Layer, flags bool) {
	defer h.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return // closed
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			_ = c.Close()
			return
		}
		h.serveConn[c] = struct{}{}
		h.wg.Add(1)
		h.mu.Unlock()
		go h.serve(c, flags)
	}
}

// serve reads the request frames of one inbound connection. Heartbeats are
// answered on the spot; other requests go to their partition's main loop at
// once if it is waiting (handNow), or else wait for it on goroutines of
// their own, so one busy partition delays no other. A
// writer goroutine sends the answers as they come, as many per frame as
// are ready.
func (h *Heartbeats) serve(c net.Conn, flags bool) {
	defer h.wg.Done()
	sc := &serveConn{c: c, flags: flags, wake: make(chan struct{}, 1), gone: make(chan struct{})}
	h.wg.Add(1)
	go h.respond(sc)
	defer func() {
		close(sc.gone)
		h.mu.Lock()
		delete(h.serveConn, c)
		h.mu.Unlock()
		_ = c.Close()
	}()
	br := bufio.NewReaderSize(c, 16<<10)
	var (
		buf   []byte
		reqs  []hbRequest
		body  []byte
		err   error
		respC = make(chan raft.RPCResponse, 1)
	)
	for {
		body, buf, err = readFrameOf(br, frameRequests, buf)
		if err == nil {
			reqs, err = decodeRequests(body, reqs, flags)
		}
		if err != nil {
			if errors.Is(err, ErrBadFrame) {
				h.log.Warn("transport: closing heartbeat connection", "remote", remoteString(c), "err", err)
			}
			return
		}
		answers := make([]hbResponse, 0, len(reqs))
		for i := range reqs {
			r := &reqs[i]
			e := h.handler(r.partition)
			switch {
			case e == nil:
				answers = append(answers, hbResponse{call: r.call,
					err: fmt.Sprintf("partition %d has no replica on this node", r.partition)})
			case IsHeartbeat(&r.req) && e.heartbeat != nil:
				answers = append(answers, h.heartbeat(e, r, respC))
			case h.handNow(sc, e, r):
			default:
				h.wg.Add(1)
				go h.consume(sc, e, *r)
			}
		}
		sc.push(answers...)
	}
}

func (h *Heartbeats) handler(partition uint32) *hbHandler {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.handlers[partition]
}

// heartbeat answers one heartbeat through the partition's fast path.
func (h *Heartbeats) heartbeat(e *hbHandler, r *hbRequest, respC chan raft.RPCResponse) hbResponse {
	req := r.req
	e.heartbeat(raft.RPC{Command: &req, RespChan: respC})
	select {
	case res := <-respC:
		return h.result(r, res)
	default:
		// raft.Raft's handler returns without answering once it is shut down.
		return hbResponse{call: r.call, err: fmt.Sprintf("partition %d is shutting down on this node", r.partition)}
	}
}

// handNow hands one append to the partition's main loop if the loop is
// waiting for a request, and reports whether it did. The loop then queues
// the answer itself, on its own goroutine (raft.RPC.Reply), so no
// goroutine waits for it; a timer refuses the append if the loop has not
// answered within the same bound as consume's.
func (h *Heartbeats) handNow(sc *serveConn, e *hbHandler, r *hbRequest) bool {
	c := &handedAppend{h: h, sc: sc, r: *r}
	select {
	case e.consume <- raft.RPC{Command: &c.r.req, Reply: c.reply}:
	default:
		return false
	}
	c.mu.Lock()
	if !c.answered {
		c.timer = time.AfterFunc(h.cfg.Timeout/2, c.expire)
	}
	c.mu.Unlock()
	return true
}

// handedAppend is an append that a main loop took through handNow: the
// first of the loop's answer and the timer's refusal is queued.
type handedAppend struct {
	h  *Heartbeats
	sc *serveConn
	r  hbRequest

	mu       sync.Mutex
	answered bool
	timer    *time.Timer // nil until armed, and if answered before
}

// reply is the main loop's answer.
func (c *handedAppend) reply(res raft.RPCResponse) {
	if !c.answer() {
		return
	}
	c.sc.push(c.h.result(&c.r, res))
}

// expire refuses the append when the main loop took too long to answer.
func (c *handedAppend) expire() {
	if !c.answer() {
		return
	}
	c.sc.push(hbResponse{call: c.r.call,
		err: fmt.Sprintf("partition %d did not answer within %v", c.r.partition, c.h.cfg.Timeout/2)})
}

// answer reports whether the caller is the first to answer, and stops
// the timer if one is armed.
func (c *handedAppend) answer() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.answered {
		return false
	}
	c.answered = true
	if c.timer != nil {
		c.timer.Stop()
	}
	return true
}

// consume hands one append to the partition's main loop when the loop is
// busy (handNow could not) and queues its answer, within the timeout.
func (h *Heartbeats) consume(sc *serveConn, e *hbHandler, r hbRequest) {
	defer h.wg.Done()
	respC := make(chan raft.RPCResponse, 1)
	// Half the timeout: the refusal must reach the sender before its own
	// timeout, which would take the whole connection for stuck.
	wait := h.cfg.Timeout / 2
	t := time.NewTimer(wait)
	defer t.Stop()
	ans := hbResponse{call: r.call}
	select {
	case e.consume <- raft.RPC{Command: &r.req, RespChan: respC}:
		select {
		case res := <-respC:
			ans = h.result(&r, res)
		case <-t.C:
			ans.err = fmt.Sprintf("partition %d did not answer within %v", r.partition, wait)
		case <-h.done:
			return
		case <-sc.gone:
			return
		}
	case <-t.C:
		ans.err = fmt.Sprintf("partition %d did not take the request within %v", r.partition, wait)
	case <-h.done:
		return
	case <-sc.gone:
		return
	}
	sc.push(ans)
}

func (h *Heartbeats) result(r *hbRequest, res raft.RPCResponse) hbResponse {
	out := hbResponse{call: r.call}
	if res.Error != nil {
		out.err = res.Error.Error()
		return out
	}
	ar, ok := res.Response.(*raft.AppendEntriesResponse)
	if !ok {
		out.err = fmt.Sprintf("partition %d answered an append with %T", r.partition, res.Response)
		return out
	}
	if len(ar.ID) > maxFieldLen || len(ar.Addr) > maxFieldLen {
		out.err = fmt.Sprintf("partition %d answered with a server id or address over %d bytes", r.partition, maxFieldLen)
		return out
	}
	out.resp = *ar
	return out
}

// serveConn is an inbound connection's queue of answers to send.
type serveConn struct {
	c     net.Conn
	flags bool          // HeartbeatChannelFlags
	wake  chan struct{} // capacity 1
	gone  chan struct{} // closed when the reader ends

	mu    sync.Mutex
	queue []hbResponse
}

func (sc *serveConn) push(answers ...hbResponse) {
	if len(answers) == 0 {
		return
	}
	sc.mu.Lock()
	sc.queue = append(sc.queue, answers...)
	sc.mu.Unlock()
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

// respond writes the queued answers of sc, up to maxBatchItems a frame,
// until the connection goes.
func (h *Heartbeats) respond(sc *serveConn) {
	defer h.wg.Done()
	var (
		out   []byte
		batch []hbResponse
	)
	for {
		select {
		case <-sc.gone:
			return
		case <-h.done:
			return
		case <-sc.wake:
		}
		runtime.Gosched() // as in hbPeer.write: answers ready together share a frame
		for {
			sc.mu.Lock()
			n := min(len(sc.queue), maxBatchItems)
			batch = append(batch[:0], sc.queue[:n]...)
			sc.queue = append(sc.queue[:0], sc.queue[n:]...)
			sc.mu.Unlock()
			if n == 0 {
				break
			}
			out = beginFrame(out, frameResponses, n)
			for i := range batch {
				out = appendResponse(out, &batch[i], sc.flags)
			}
			h.answered.Add(uint64(n))
			if err := sc.c.SetWriteDeadline(time.Now().Add(h.cfg.Timeout)); err != nil {
				_ = sc.c.Close()
				return
			}
			if _, err := sc.c.Write(finishFrame(out)); err != nil {
				_ = sc.c.Close()
				return
			}
		}
	}
}

// hbCall is one heartbeat on its way.
type hbCall struct {
	req    hbRequest
	urgent bool
	queued bool      // taken by a peer (set by enqueue)
	at     time.Time // when it was queued
	due    time.Time // when it has lingered enough (see linger)
	resp   raft.AppendEntriesResponse
	done   chan error // Send: receives exactly one value

	// SendAsync: cb runs once instead, after the answer is copied to respTo.
	cb     func(error)
	respTo *raft.AppendEntriesResponse
	err    error // for a cb run after the peer's lock is released
}

// finish completes c with err: it wakes the waiting Send, or runs the
// callback of a SendAsync. Call it without the peer's lock held.
func (c *hbCall) finish(err error) {
	if c.cb == nil {
		c.done <- err
		return
	}
	if err == nil {
		*c.respTo = c.resp
	}
	c.cb(err)
}

// hbPeer is the sending side towards one node: a queue, one connection, a
// writer goroutine (which also dials) and a reader goroutine per connection.
type hbPeer struct {
	h    *Heartbeats
	addr string
	wake chan struct{} // capacity 1: the queue changed

	mu          sync.Mutex
	queue       []*hbCall
	urgent      bool            // an urgent call is queued
	due         time.Time       // the earliest due time of the queued calls (see linger)
	quiet       map[uint32]bool // partitions whose last heartbeat answer was Quiescent
	conn        *hbConn
	retiring    bool
	unsupported time.Time // the peer has no heartbeat channel; checked again after unsupportedRetry
}

// hbConn is one outbound connection and the calls written on it.
type hbConn struct {
	c       net.Conn
	flags   bool // dialed on HeartbeatChannelFlags
	pending map[uint64]*hbCall
	dead    bool      // dropped: nothing more is registered on it
	active  time.Time // when it was dialed or last delivered a frame
}

func newHBPeer(h *Heartbeats, addr string) *hbPeer {
	p := &hbPeer{h: h, addr: addr, wake: make(chan struct{}, 1), quiet: make(map[uint32]bool)}
	h.wg.Add(1)
	go p.write()
	return p
}

// enqueue queues c, or fails it at once when the peer is known to lack the
// channel. It leaves c.queued false if the peer is retiring.
func (p *hbPeer) enqueue(c *hbCall) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retiring {
		return nil
	}
	if !p.unsupported.IsZero() && time.Since(p.unsupported) < unsupportedRetry {
		c.queued = true
		return fmt.Errorf("%w (%s)", ErrHeartbeatsUnsupported, p.addr)
	}
	c.queued = true
	c.at = time.Now()
	linger := p.h.cfg.Linger
	if c.req.req.Quiesce && p.quiet[c.req.partition] {
		linger = max(linger, p.h.cfg.QuietLinger)
	}
	c.due = c.at.Add(linger)
	if len(p.queue) == 0 || c.due.Before(p.due) {
		p.due = c.due
	}
	p.queue = append(p.queue, c)
	p.urgent = p.urgent || c.urgent
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// hurry sends partition's queued calls without further lingering.
func (p *hbPeer) hurry(partition uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.queue {
		if c.req.partition == partition {
			c.urgent = true
			p.urgent = true
		}
	}
	if p.urgent {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// write is the peer's writer: it waits for heartbeats, lets them linger,
// dials when needed and writes each batch as one frame. It also fails calls
// that outlive the timeout and retires the peer after a quiet minute.
func (p *hbPeer) write() {
	h := p.h
	defer h.wg.Done()
	tick := time.NewTicker(max(h.cfg.Timeout/4, 10*time.Millisecond))
	defer tick.Stop()
	lastUse := time.Now()
	var buf []byte
	for {
		select {
		case <-h.done:
			p.shutdown(fmt.Errorf("%w: heartbeats", ErrClosed))
			return
		case <-tick.C:
			p.expire()
			if time.Since(lastUse) > heartbeatIdle && p.retire() {
				return
			}
			continue
		case <-p.wake:
		}
		if !p.linger() {
			p.shutdown(fmt.Errorf("%w: heartbeats", ErrClosed))
			return
		}
		// Let the goroutines that are ready to run go first: under load
		// they are mostly other partitions' replicators about to queue
		// their appends, which then share this frame (1.1 requests per
		// frame under 64-client puts without it, 2.7 with it). On an idle
		// node nothing else is ready and this returns at once.
		runtime.Gosched()
		p.mu.Lock()
		n, size := 0, 0
		for n < len(p.queue) && n < maxBatchItems && size < frameTarget {
			size += requestSize(&p.queue[n].req)
			n++
		}
		batch := make([]*hbCall, n)
		copy(batch, p.queue)
		p.queue = append(p.queue[:0], p.queue[n:]...)
		p.urgent = false
		for i, c := range p.queue {
			p.urgent = p.urgent || c.urgent
			if i == 0 || c.due.Before(p.due) {
				p.due = c.due
			}
		}
		if len(p.queue) > 0 {
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
		p.mu.Unlock()
		if n == 0 {
			continue
		}
		lastUse = time.Now()
		buf = p.send(batch, buf)
	}
}

// linger waits until the earliest due time of the queued calls (when the
// first of them has lingered its Linger, or QuietLinger for quiet
// heartbeats), or until an urgent call arrives or the batch is full. It
// reports false if the channel closed.
func (p *hbPeer) linger() bool {
	var (
		t   *time.Timer
		due time.Time // what t waits for
	)
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		p.mu.Lock()
		if len(p.queue) == 0 || p.urgent || len(p.queue) >= maxBatchItems {
			p.mu.Unlock()
			return true
		}
		next := p.due
		p.mu.Unlock()
		wait := time.Until(next)
		if wait <= 0 {
			return true
		}
		switch {
		case t == nil:
			t = time.NewTimer(wait)
		case next.Before(due):
			t.Reset(wait) // a call due sooner came
		}
		due = next
		select {
		case <-p.h.done:
			return false
		case <-t.C:
			return true
		case <-p.wake: // look again: urgent, full, or due sooner
		}
	}
}

// send writes batch as one frame on the peer's connection, dialing first
// if there is none. Calls that cannot be written fail at once.
func (p *hbPeer) send(batch []*hbCall, buf []byte) []byte {
	hc, err := p.connect()
	if err != nil {
		for _, c := range batch {
			c.finish(err)
		}
		return buf
	}
	buf = beginFrame(buf, frameRequests, len(batch))
	p.mu.Lock()
	if hc.dead {
		// The reader dropped it since connect: nothing would answer.
		p.mu.Unlock()
		err := fmt.Errorf("transport: heartbeats to %s: connection lost", p.addr)
		for _, c := range batch {
			c.finish(err)
		}
		return buf
	}
	for _, c := range batch {
		hc.pending[c.req.call] = c
		buf = appendRequest(buf, &c.req, hc.flags)
	}
	p.mu.Unlock()
	buf = finishFrame(buf)
	_ = hc.c.SetWriteDeadline(time.Now().Add(p.h.cfg.Timeout))
	n, err := hc.c.Write(buf)
	if s := p.h.cfg.SentBytes; s != nil {
		s.Add(uint64(n))
	}
	if err != nil {
		p.drop(hc, fmt.Errorf("transport: heartbeats to %s: %w", p.addr, err))
		return buf
	}
	p.h.sent.Add(uint64(len(batch)))
	p.h.frames.Add(1)
	return buf
}

// connect returns the peer's connection, dialing it if needed.
func (p *hbPeer) connect() (*hbConn, error) {
	p.mu.Lock()
	hc := p.conn
	p.mu.Unlock()
	if hc != nil {
		return hc, nil
	}
	flags := true
	c, err := p.h.layerF.Dial(p.addr, p.h.cfg.Timeout)
	if errors.Is(err, ErrUnknownPartition) {
		flags = false // an older version: no quiescence
		c, err = p.h.layer.Dial(p.addr, p.h.cfg.Timeout)
	}
	if err != nil {
		if errors.Is(err, ErrUnknownPartition) {
			p.mu.Lock()
			p.unsupported = time.Now()
			p.mu.Unlock()
			p.h.log.Info("transport: peer has no heartbeat channel; sending it per-partition heartbeats", "peer", p.addr)
			return nil, fmt.Errorf("%w (%s)", ErrHeartbeatsUnsupported, p.addr)
		}
		return nil, fmt.Errorf("transport: heartbeats to %s: %w", p.addr, err)
	}
	hc = &hbConn{c: c, flags: flags, pending: make(map[uint64]*hbCall), active: time.Now()}
	p.mu.Lock()
	p.conn = hc
	p.unsupported = time.Time{}
	p.mu.Unlock()
	p.h.wg.Add(1)
	go p.read(hc)
	return hc, nil
}

// read delivers the answers arriving on hc until it fails.
func (p *hbPeer) read(hc *hbConn) {
	defer p.h.wg.Done()
	br := bufio.NewReaderSize(hc.c, 16<<10)
	var (
		buf   []byte
		resps []hbResponse
		body  []byte
		err   error
		async []*hbCall // SendAsync calls answered by this frame
	)
	for {
		body, buf, err = readFrameOf(br, frameResponses, buf)
		if err == nil {
			resps, err = decodeResponses(body, resps, hc.flags)
		}
		if err != nil {
			if hungUp(err) {
				if f := p.h.hangup.Load(); f != nil {
					go (*f)()
				}
			}
			p.drop(hc, fmt.Errorf("transport: heartbeats to %s: %w", p.addr, err))
			return
		}
		p.mu.Lock()
		hc.active = time.Now()
		for i := range resps {
			r := &resps[i]
			c := hc.pending[r.call]
			if c == nil {
				continue // timed out already
			}
			delete(hc.pending, r.call)
			c.err = nil
			if r.err != "" {
				c.err = fmt.Errorf("transport: heartbeat to %s refused: %s", p.addr, r.err)
			} else {
				c.resp = r.resp
				if IsHeartbeat(&c.req.req) && p.quiet[c.req.partition] != r.resp.Quiescent {
					p.quiet[c.req.partition] = r.resp.Quiescent
				}
			}
			if c.cb != nil {
				async = append(async, c) // run once the lock is released
				continue
			}
			c.done <- c.err
		}
		p.mu.Unlock()
		for i, c := range async {
			c.finish(c.err)
			async[i] = nil
		}
		async = async[:0]
	}
}

// drop closes hc and fails the calls written on it with err (ErrClosed
// once the channel is closing). The calls are detached before the close, so
// the reader, which fails when hc closes, cannot answer them with its own
// error first.
func (p *hbPeer) drop(hc *hbConn, err error) {
	select {
	case <-p.h.done:
		err = fmt.Errorf("%w: heartbeats", ErrClosed)
	default:
	}
	p.mu.Lock()
	if p.conn == hc {
		p.conn = nil
	}
	hc.dead = true
	pending := hc.pending
	hc.pending = make(map[uint64]*hbCall)
	p.mu.Unlock()
	_ = hc.c.Close()
	for _, c := range pending {
		c.finish(err)
	}
}

// expire fails calls older than the timeout, each on its own: the peer
// refuses a request its partition does not take within half the timeout,
// so a late call is that partition's problem. Only a connection that has
// delivered nothing for a whole timeout while calls wait on it is stuck,
// and dropped.
func (p *hbPeer) expire() {
	timeout := p.h.cfg.Timeout
	err := fmt.Errorf("transport: heartbeat to %s not answered within %v", p.addr, timeout)
	p.mu.Lock()
	var late []*hbCall
	kept := p.queue[:0]
	for _, c := range p.queue {
		if time.Since(c.at) > timeout {
			late = append(late, c)
		} else {
			kept = append(kept, c)
		}
	}
	p.queue = kept
	hc := p.conn
	stuck := false
	if hc != nil {
		for id, c := range hc.pending {
			if time.Since(c.at) > timeout {
				delete(hc.pending, id)
				late = append(late, c)
			}
		}
		stuck = len(late) > 0 && time.Since(hc.active) > timeout
	}
	p.mu.Unlock()
	for _, c := range late {
		c.finish(err)
	}
	if stuck {
		p.drop(hc, err)
	}
}

// retire removes an idle peer and reports whether it did.
func (p *hbPeer) retire() bool {
	h := p.h
	h.mu.Lock()
	p.mu.Lock()
	idle := len(p.queue) == 0 && (p.conn == nil || len(p.conn.pending) == 0)
	if idle {
		p.retiring = true
		if h.peers[p.addr] == p {
			delete(h.peers, p.addr)
		}
	}
	hc := p.conn
	p.mu.Unlock()
	h.mu.Unlock()
	if idle && hc != nil {
		p.drop(hc, nil)
	}
	return idle
}

// shutdown fails everything queued or in flight.
func (p *hbPeer) shutdown(err error) {
	p.mu.Lock()
	queue := p.queue
	p.queue = nil
	p.retiring = true
	hc := p.conn
	p.mu.Unlock()
	for _, c := range queue {
		c.finish(err)
	}
	if hc != nil {
		p.drop(hc, err)
	}
}

// hungUp reports whether a read error means the peer closed or reset the
// connection (not this node's own close, a deadline or a bad frame).
func hungUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}
