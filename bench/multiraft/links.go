package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// The engine's node-to-node transport: one TCP connection per direction
// between two nodes carries the messages of every group. A frame is a
// 4-byte big-endian length and then records of partition id (4 bytes),
// message length (4 bytes) and the marshalled raftpb.Message. The
// scheduler queues a whole pass's messages for a peer and then wakes its
// writer, which sends them in one write.

// maxFrame bounds a frame a reader accepts.
const maxFrame = 64 << 20

// peer sends this node's messages to one other node.
type peer struct {
	addr string
	stop <-chan struct{}
	kick chan struct{} // capacity 1: a frame is waiting
	done chan struct{}

	mu    sync.Mutex
	buf   []byte // the frame being filled: length placeholder, then records
	spare []byte
	conn  net.Conn // dialled by run; closed by close
}

func newPeer(addr string, stop <-chan struct{}) *peer {
	p := &peer{addr: addr, stop: stop, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go p.run()
	return p
}

// queue appends m, for partition pid, to the next frame.
func (p *peer) queue(pid uint32, m *raftpb.Message) {
	size := m.Size()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) == 0 {
		p.buf = append(p.buf, 0, 0, 0, 0)
	}
	p.buf = binary.BigEndian.AppendUint32(p.buf, pid)
	p.buf = binary.BigEndian.AppendUint32(p.buf, uint32(size))
	at := len(p.buf)
	p.buf = slices.Grow(p.buf, size)[:at+size]
	if _, err := m.MarshalToSizedBuffer(p.buf[at:]); err != nil {
		// Size and MarshalToSizedBuffer come from the same generated code;
		// a mismatch is a bug, and the record would corrupt the frame.
		panic(fmt.Sprintf("multiraft: marshal %v: %v", m.Type, err))
	}
}

// flush wakes the writer if a frame is waiting.
func (p *peer) flush() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *peer) run() {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
		p.mu.Lock()
		out := p.buf
		p.buf, p.spare = p.spare[:0], nil
		conn := p.conn
		p.mu.Unlock()
		if len(out) == 0 {
			continue
		}
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		if conn == nil {
			c, err := net.DialTimeout("tcp", p.addr, time.Second)
			if err != nil {
				continue // dropped: Raft resends what matters
			}
			p.mu.Lock()
			p.conn, conn = c, c
			p.mu.Unlock()
		}
		if _, err := conn.Write(out); err != nil {
			p.mu.Lock()
			_ = conn.Close()
			p.conn = nil
			p.mu.Unlock()
		}
		p.mu.Lock()
		p.spare = out[:0]
		p.mu.Unlock()
	}
}

// close cuts the connection and waits for the writer; stop must be closed.
func (p *peer) close() {
	p.mu.Lock()
	if p.conn != nil {
		_ = p.conn.Close()
	}
	p.mu.Unlock()
	<-p.done
}

// links accepts the connections of the other nodes and reads their frames.
type links struct {
	ln      net.Listener
	deliver func([]inbound)
	wg      sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func listenLinks(deliver func([]inbound)) (*links, error) {
	ln, err := listen()
	if err != nil {
		return nil, err
	}
	l := &links{ln: ln, deliver: deliver, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

func (l *links) addr() string { return l.ln.Addr().String() }

func (l *links) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		l.wg.Add(1)
		go l.read(c)
	}
}

// read hands every frame's messages to deliver until the connection ends.
func (l *links) read(c net.Conn) {
	defer l.wg.Done()
	defer func() {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		_ = c.Close()
	}()
	br := bufio.NewReaderSize(c, 256<<10)
	var hdr [4]byte
	var body []byte
	var in []inbound
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		size := binary.BigEndian.Uint32(hdr[:])
		if size > maxFrame {
			return
		}
		body = slices.Grow(body[:0], int(size))[:size]
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		in = in[:0]
		for rest := body; len(rest) > 0; {
			if len(rest) < 8 {
				return
			}
			pid, n := binary.BigEndian.Uint32(rest), binary.BigEndian.Uint32(rest[4:])
			rest = rest[8:]
			if uint32(len(rest)) < n {
				return
			}
			var m raftpb.Message
			if err := m.Unmarshal(rest[:n]); err != nil { // copies what it keeps
				return
			}
			in = append(in, inbound{pid, m})
			rest = rest[n:]
		}
		l.deliver(in)
		clear(in)
	}
}

// close stops accepting, cuts every connection and waits for the readers.
func (l *links) close() error {
	err := l.ln.Close()
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return err
}
