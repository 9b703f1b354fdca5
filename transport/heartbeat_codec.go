package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"
)

// Wire format of the heartbeat channel (DESIGN.md, "Coalesced heartbeats").
// Every frame is
//
//	length  uint32, big endian: bytes after this field (kind + body)
//	kind    1 byte: frameRequests (dialer to acceptor) or frameResponses
//	body    uvarint item count, then the items
//
// A request item is: uvarint call id, uvarint partition, uvarint protocol
// version, bytes ID, bytes Addr, uvarint term, uvarint previous log index,
// uvarint previous log term, uvarint leader commit index, bytes Leader,
// uvarint entry count, then per entry uvarint index, uvarint term, type
// byte, data (bytes), extensions (bytes), appended-at: a byte 0 (zero time)
// or 1 and a varint of Unix nanoseconds (every field of a raft
// AppendEntriesRequest and raft.Log). A response item
// is: uvarint call id, one status byte; then for statusItemOK uvarint
// protocol version, bytes ID, bytes Addr, uvarint term, uvarint last log and
// a flags byte (bit 0 Success, bit 1 NoRetryBackoff); for statusItemError
// bytes message. "bytes" is a uvarint length and that many bytes.
//
// On HeartbeatChannelFlags, a request item ends with one more byte (bit 0
// Quiesce) and an answer's flags byte may also have bit 2 (Quiescent). On
// HeartbeatChannel neither exists: Quiesce is not sent.
const (
	frameRequests  byte = 1
	frameResponses byte = 2

	statusItemOK    byte = 0
	statusItemError byte = 1

	// maxFrameLen bounds one frame. Senders cut batches at frameTarget, so
	// a frame holds at most that plus one item.
	maxFrameLen = 4 << 20
	// frameTarget is the size at which a sender stops adding items to a frame.
	frameTarget = 512 << 10
	// maxBatchItems bounds the items in one frame.
	maxBatchItems = 1024
	// maxFieldLen bounds the small variable-length fields (server ids,
	// addresses, error messages).
	maxFieldLen = 1024
	// MaxCarriedEntryBytes bounds the entries of an append the channel
	// carries (data and extensions summed); larger appends, such as a
	// follower's catch-up, keep a connection of their own.
	MaxCarriedEntryBytes = 64 << 10
	// maxCarriedEntries bounds the entries of an append the channel carries.
	maxCarriedEntries = 1024
)

// ErrBadFrame means a peer sent a heartbeat frame this node cannot decode:
// the connection is closed, and no heartbeat of it is answered.
var ErrBadFrame = errors.New("transport: malformed heartbeat frame")

// Carried reports whether the heartbeat channel carries req: an
// AppendEntries whose entries are few and small (at most 1024, and at most
// MaxCarriedEntryBytes of data and extensions): heartbeats, the empty
// appends that tell a follower the commit index, and the appends of
// steady-state writes. Every field of such a request is encoded.
func Carried(req *raft.AppendEntriesRequest) bool {
	if req.Term == 0 || len(req.Entries) > maxCarriedEntries {
		return false
	}
	size := 0
	for _, e := range req.Entries {
		if e == nil {
			return false
		}
		size += len(e.Data) + len(e.Extensions)
		if size > MaxCarriedEntryBytes {
			return false
		}
	}
	return true
}

// IsHeartbeat reports whether req is a Raft heartbeat: an AppendEntries that
// carries only the leader's identity and term. These are the requests
// hashicorp/raft answers on its heartbeat fast path, outside its main loop;
// the test is the one raft's NetworkTransport applies.
func IsHeartbeat(req *raft.AppendEntriesRequest) bool {
	return req.Term != 0 && (len(req.Addr) > 0 || len(req.Leader) > 0) &&
		req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

// hbRequest is one heartbeat in a request frame.
type hbRequest struct {
	call      uint64
	partition uint32
	req       raft.AppendEntriesRequest
}

// hbResponse is one answer in a response frame.
type hbResponse struct {
	call uint64
	err  string // non-empty: the follower did not answer
	resp raft.AppendEntriesResponse
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// beginFrame starts a frame of kind in b (which it resets) and returns it.
// finishFrame fills in the length once the body is complete.
func beginFrame(b []byte, kind byte, items int) []byte {
	b = append(b[:0], 0, 0, 0, 0, kind)
	return binary.AppendUvarint(b, uint64(items))
}

func finishFrame(b []byte) []byte {
	binary.BigEndian.PutUint32(b[:4], uint32(len(b)-4))
	return b
}

func appendRequest(b []byte, r *hbRequest, flags bool) []byte {
	b = binary.AppendUvarint(b, r.call)
	b = binary.AppendUvarint(b, uint64(r.partition))
	b = binary.AppendUvarint(b, uint64(r.req.ProtocolVersion))
	b = appendBytes(b, r.req.ID)
	b = appendBytes(b, r.req.Addr)
	b = binary.AppendUvarint(b, r.req.Term)
	b = binary.AppendUvarint(b, r.req.PrevLogEntry)
	b = binary.AppendUvarint(b, r.req.PrevLogTerm)
	b = binary.AppendUvarint(b, r.req.LeaderCommitIndex)
	b = appendBytes(b, r.req.Leader)
	b = binary.AppendUvarint(b, uint64(len(r.req.Entries)))
	for _, e := range r.req.Entries {
		b = binary.AppendUvarint(b, e.Index)
		b = binary.AppendUvarint(b, e.Term)
		b = append(b, byte(e.Type))
		b = appendBytes(b, e.Data)
		b = appendBytes(b, e.Extensions)
		if e.AppendedAt.IsZero() {
			b = append(b, 0)
		} else {
			b = append(b, 1)
			b = binary.AppendVarint(b, e.AppendedAt.UnixNano())
		}
	}
	if flags {
		var f byte
		if r.req.Quiesce {
			f |= 1
		}
		b = append(b, f)
	}
	return b
}

// requestSize is about the encoded size of r, for cutting batches.
func requestSize(r *hbRequest) int {
	n := 64 + len(r.req.ID) + len(r.req.Addr) + len(r.req.Leader)
	for _, e := range r.req.Entries {
		n += 40 + len(e.Data) + len(e.Extensions)
	}
	return n
}

func appendResponse(b []byte, r *hbResponse, flagsChannel bool) []byte {
	b = binary.AppendUvarint(b, r.call)
	if r.err != "" {
		b = append(b, statusItemError)
		msg := r.err
		if len(msg) > maxFieldLen {
			msg = msg[:maxFieldLen]
		}
		return appendBytes(b, []byte(msg))
	}
	b = append(b, statusItemOK)
	b = binary.AppendUvarint(b, uint64(r.resp.ProtocolVersion))
	b = appendBytes(b, r.resp.ID)
	b = appendBytes(b, r.resp.Addr)
	b = binary.AppendUvarint(b, r.resp.Term)
	b = binary.AppendUvarint(b, r.resp.LastLog)
	var flags byte
	if r.resp.Success {
		flags |= 1
	}
	if r.resp.NoRetryBackoff {
		flags |= 2
	}
	if r.resp.Quiescent && flagsChannel {
		flags |= 4
	}
	return append(b, flags)
}

// readFrame reads one frame into buf (grown as needed) and returns its kind
// and body. I/O errors are returned as they are; a length over the limit
// wraps ErrBadFrame.
func readFrame(r *bufio.Reader, buf []byte) (byte, []byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 1 || n > maxFrameLen {
		return 0, nil, buf, fmt.Errorf("%w: frame of %d bytes, the limit is %d", ErrBadFrame, n, maxFrameLen)
	}
	if cap(buf) < int(n-1) {
		buf = make([]byte, n-1)
	}
	body := buf[:n-1]
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, buf, err
	}
	return hdr[4], body, buf, nil
}

// readFrameOf is readFrame for a stream that carries only frames of kind.
func readFrameOf(r *bufio.Reader, kind byte, buf []byte) ([]byte, []byte, error) {
	k, body, buf, err := readFrame(r, buf)
	if err == nil && k != kind {
		err = fmt.Errorf("%w: frame kind %d on a stream of kind %d", ErrBadFrame, k, kind)
	}
	return body, buf, err
}

// decoder reads the fields of one frame body; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrBadFrame, what)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong " + what)
		return 0
	}
	if n > 1 && d.b[n-1] == 0 {
		// A last byte of zero adds nothing: a padded, non-minimal encoding.
		d.fail("non-minimal " + what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("missing " + what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// bytes returns a copy of a field of at most maxFieldLen bytes: the frame
// buffer is reused for the next frame.
func (d *decoder) bytes(what string) []byte { return d.bytesUpTo(what, maxFieldLen) }

func (d *decoder) bytesUpTo(what string, limit uint64) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > limit || n > uint64(len(d.b)) {
		d.fail(fmt.Sprintf("%s of %d bytes (limit %d, %d left in frame)", what, n, limit, len(d.b)))
		return nil
	}
	if n == 0 {
		return nil
	}
	v := make([]byte, n)
	copy(v, d.b[:n])
	d.b = d.b[n:]
	return v
}

func (d *decoder) count() int {
	n := d.uvarint("item count")
	if d.err == nil && (n == 0 || n > maxBatchItems) {
		d.fail(fmt.Sprintf("%d items (limit %d)", n, maxBatchItems))
	}
	return int(n)
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	return d.err
}

func decodeRequests(body []byte, out []hbRequest, flags bool) ([]hbRequest, error) {
	d := decoder{b: body}
	n := d.count()
	out = out[:0]
	for i := 0; i < n && d.err == nil; i++ {
		var r hbRequest
		r.call = d.uvarint("call id")
		pid := d.uvarint("partition")
		if pid > uint64(^uint32(0)) {
			d.fail(fmt.Sprintf("partition %d", pid))
		}
		r.partition = uint32(pid)
		r.req.ProtocolVersion = raft.ProtocolVersion(d.uvarint("protocol version"))
		r.req.ID = d.bytes("server id")
		r.req.Addr = d.bytes("server address")
		r.req.Term = d.uvarint("term")
		r.req.PrevLogEntry = d.uvarint("previous log index")
		r.req.PrevLogTerm = d.uvarint("previous log term")
		r.req.LeaderCommitIndex = d.uvarint("leader commit index")
		r.req.Leader = d.bytes("leader")
		r.req.Entries = d.entries()
		if flags {
			f := d.byte("request flags")
			if f&^1 != 0 {
				d.fail(fmt.Sprintf("unknown request flags 0x%02x", f))
			}
			r.req.Quiesce = f&1 != 0
		}
		out = append(out, r)
	}
	return out, d.finish()
}

// entries decodes an append's entries, within the limits Carried applies.
func (d *decoder) entries() []*raft.Log {
	n := d.uvarint("entry count")
	if d.err != nil || n == 0 {
		return nil
	}
	if n > maxCarriedEntries {
		d.fail(fmt.Sprintf("%d entries (limit %d)", n, maxCarriedEntries))
		return nil
	}
	out := make([]*raft.Log, 0, n)
	size := 0
	for i := uint64(0); i < n && d.err == nil; i++ {
		e := &raft.Log{}
		e.Index = d.uvarint("entry index")
		e.Term = d.uvarint("entry term")
		e.Type = raft.LogType(d.byte("entry type"))
		e.Data = d.bytesUpTo("entry data", MaxCarriedEntryBytes)
		e.Extensions = d.bytesUpTo("entry extensions", MaxCarriedEntryBytes)
		if size += len(e.Data) + len(e.Extensions); size > MaxCarriedEntryBytes {
			d.fail(fmt.Sprintf("entries of %d bytes (limit %d)", size, MaxCarriedEntryBytes))
		}
		switch d.byte("entry time flag") {
		case 0:
		case 1:
			e.AppendedAt = time.Unix(0, d.varint("entry time"))
		default:
			d.fail("unknown entry time flag")
		}
		out = append(out, e)
	}
	return out
}

// varint decodes binary.AppendVarint's zigzag encoding, with uvarint's
// checks.
func (d *decoder) varint(what string) int64 {
	u := d.uvarint(what)
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func decodeResponses(body []byte, out []hbResponse, flagsChannel bool) ([]hbResponse, error) {
	d := decoder{b: body}
	n := d.count()
	out = out[:0]
	for i := 0; i < n && d.err == nil; i++ {
		var r hbResponse
		r.call = d.uvarint("call id")
		switch d.byte("status") {
		case statusItemOK:
			r.resp.ProtocolVersion = raft.ProtocolVersion(d.uvarint("protocol version"))
			r.resp.ID = d.bytes("server id")
			r.resp.Addr = d.bytes("server address")
			r.resp.Term = d.uvarint("term")
			r.resp.LastLog = d.uvarint("last log")
			flags := d.byte("flags")
			known := byte(3)
			if flagsChannel {
				known = 7
			}
			if flags&^known != 0 {
				d.fail(fmt.Sprintf("unknown flags 0x%02x", flags))
			}
			r.resp.Success = flags&1 != 0
			r.resp.NoRetryBackoff = flags&2 != 0
			r.resp.Quiescent = flags&4 != 0
		case statusItemError:
			r.err = string(d.bytes("error message"))
			if r.err == "" {
				d.fail("empty error message")
			}
		default:
			d.fail("unknown item status")
		}
		out = append(out, r)
	}
	return out, d.finish()
}
