package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"connectrpc.com/connect"
)

// Preface opens every native connection: the client sends it, the server
// answers with it. No HTTP/1.x request line or HTTP/2 client preface ("PRI *
// HTTP/2.0...") starts with it, so one port serves both. To a node that does
// not know it, it is a malformed HTTP/1.1 request line followed by the end of
// the headers, which net/http answers at once with "400 Bad Request": the
// client learns to use Connect without waiting for a timeout. It is longer
// than the 24-byte HTTP/2 preface because a server that accepts cleartext
// HTTP/2 reads that many bytes before it decides.
const Preface = "RINGKV/1 NATIVE PROTOCOL\r\n\r\n"

// Method names the KV call a request frame carries. The payload is the
// method's protobuf request message (ringkv.v1); the answer's payload is its
// response message.
type Method uint8

// Methods of the KV service. The numbers are the wire format: never reuse one.
const (
	MethodGet            Method = 1
	MethodPut            Method = 2
	MethodDelete         Method = 3
	MethodCompareAndSwap Method = 4
)

func (m Method) String() string {
	switch m {
	case MethodGet:
		return "Get"
	case MethodPut:
		return "Put"
	case MethodDelete:
		return "Delete"
	case MethodCompareAndSwap:
		return "CompareAndSwap"
	}
	return fmt.Sprintf("method(%d)", uint8(m))
}

// Frame layout (big-endian). Every frame starts with its length, which counts
// the bytes after the length field.
//
//	request:  length u32 | id u32 | method u8 | timeout_ms u32 | payload
//	response: length u32 | id u32 | code u8   | payload
//
// A response's code is 0 for success (the payload is the response message)
// or a Connect error code (the payload is an error body, see appendError).
// timeout_ms is the caller's remaining deadline, 0 for none.
const (
	requestHeader  = 4 + 4 + 1 + 4
	responseHeader = 4 + 4 + 1
	codeOK         = 0
)

// Limits on error bodies, so that a bad peer cannot make us allocate much.
const (
	maxErrorMessage = 64 << 10
	maxMetaPairs    = 32
	maxMetaString   = 4 << 10
)

// Sentinel errors.
var (
	// ErrNotNative: the server answered the preface with something else (an
	// HTTP reply): it does not speak this protocol. Use Connect instead.
	ErrNotNative = errors.New("wire: server does not speak the native protocol")
	// ErrClosed: the connection or server was closed.
	ErrClosed = errors.New("wire: connection closed")
	// ErrProtocol: the peer sent a frame that breaks the format.
	ErrProtocol = errors.New("wire: protocol error")
)

// appendRequestHeader appends a request frame's header for a payload of n bytes.
func appendRequestHeader(b []byte, id uint32, m Method, timeout time.Duration, n int) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(requestHeader-4+n))
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(b, byte(m))
	return binary.BigEndian.AppendUint32(b, timeoutMillis(timeout))
}

// timeoutMillis rounds a positive timeout up to whole milliseconds, so that a
// tiny remaining deadline is not sent as "none".
func timeoutMillis(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	ms := d / time.Millisecond // rounded up without adding, which could overflow
	if d%time.Millisecond != 0 {
		ms++
	}
	return uint32(min(ms, math.MaxUint32))
}

// appendResponseHeader appends a response frame's header for a payload of n
// bytes; lengthAt is where the length goes when n is not known yet (see
// patchLength).
func appendResponseHeader(b []byte, id uint32, code uint8) (out []byte, lengthAt int) {
	lengthAt = len(b)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, id)
	return append(b, code), lengthAt
}

// patchLength writes the length of the frame that starts at lengthAt and runs
// to the end of b.
func patchLength(b []byte, lengthAt int) {
	binary.BigEndian.PutUint32(b[lengthAt:], uint32(len(b)-lengthAt-4))
}

// appendError appends the body of an error answer:
//
//	message_len u32 | message | pairs u16 | (key_len u16 | key | value_len u16 | value)*
//
// The pairs are the error's metadata (Connect's error headers), which carry
// RingKV's hints: the leader's address, and whether the request was refused
// before it ran.
func appendError(b []byte, ce *connect.Error) []byte {
	msg := ce.Message()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	b = append(b, msg...)
	pairsAt := len(b)
	b = binary.BigEndian.AppendUint16(b, 0)
	pairs := 0
	for k, vs := range ce.Meta() {
		for _, v := range vs {
			if pairs == maxMetaPairs || len(k) > maxMetaString || len(v) > maxMetaString {
				continue
			}
			b = binary.BigEndian.AppendUint16(b, uint16(len(k)))
			b = append(b, k...)
			b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
			b = append(b, v...)
			pairs++
		}
	}
	binary.BigEndian.PutUint16(b[pairsAt:], uint16(pairs))
	return b
}

// parseError decodes an error body into the *connect.Error the server
// returned, marked as a wire error (connect.IsWireError reports true).
func parseError(code uint8, body []byte) (*connect.Error, error) {
	bad := fmt.Errorf("%w: malformed error body (%d bytes)", ErrProtocol, len(body))
	if code == codeOK || code > uint8(connect.CodeUnauthenticated) {
		return nil, fmt.Errorf("%w: unknown error code %d", ErrProtocol, code)
	}
	if len(body) < 4 {
		return nil, bad
	}
	n := binary.BigEndian.Uint32(body)
	body = body[4:]
	if uint64(n) > uint64(len(body)) {
		return nil, bad
	}
	ce := connect.NewWireError(connect.Code(code), errors.New(string(body[:n])))
	body = body[n:]
	if len(body) < 2 {
		return nil, bad
	}
	pairs := int(binary.BigEndian.Uint16(body))
	body = body[2:]
	for range pairs {
		var k, v string
		var ok bool
		if k, body, ok = cutString16(body); !ok {
			return nil, bad
		}
		if v, body, ok = cutString16(body); !ok {
			return nil, bad
		}
		ce.Meta().Add(k, v)
	}
	if len(body) != 0 {
		return nil, bad
	}
	return ce, nil
}

func cutString16(b []byte) (s string, rest []byte, ok bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

// readLength reads a frame's length field and checks it against the
// smallest frame (minLen bytes after the length).
func readLength(r io.Reader, hdr []byte, minLen int) (int, error) {
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if uint64(n) < uint64(minLen) {
		return 0, fmt.Errorf("%w: frame of %d bytes is shorter than its header", ErrProtocol, n)
	}
	if uint64(n) > math.MaxInt32 {
		return 0, fmt.Errorf("%w: frame of %d bytes", ErrProtocol, n)
	}
	return int(n), nil
}
