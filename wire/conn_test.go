package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/internal/tcptest"
)

// acceptPreface reads the client's preface and answers it.
func acceptPreface(c net.Conn, r io.Reader) error {
	got := make([]byte, len(Preface))
	if _, err := io.ReadFull(r, got); err != nil {
		return err
	}
	if string(got) != Preface {
		return fmt.Errorf("client sent %q, not the preface", got)
	}
	_, err := c.Write([]byte(Preface))
	return err
}

type request struct {
	id        uint32
	m         Method
	timeoutMs uint32
	payload   []byte
}

// readRequest reads one request frame.
func readRequest(r io.Reader) (request, error) {
	hdr := make([]byte, requestHeader)
	n, err := readLength(r, hdr, requestHeader-4)
	if err != nil {
		return request{}, err
	}
	if _, err := io.ReadFull(r, hdr[4:]); err != nil {
		return request{}, err
	}
	payload := make([]byte, n-(requestHeader-4))
	if _, err := io.ReadFull(r, payload); err != nil {
		return request{}, err
	}
	return request{id: binary.BigEndian.Uint32(hdr[4:]), m: Method(hdr[8]), timeoutMs: binary.BigEndian.Uint32(hdr[9:]), payload: payload}, nil
}

// responseFrame builds a response frame.
func responseFrame(id uint32, code uint8, payload []byte) []byte {
	b, at := appendResponseHeader(nil, id, code)
	b = append(b, payload...)
	patchLength(b, at)
	return b
}

// scriptedServer speaks the protocol by hand: it answers each request with
// the bytes answer returns (nothing when nil).
func scriptedServer(t *testing.T, answer func(req request) []byte) string {
	t.Helper()
	return tcptest.Serve(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		if err := acceptPreface(c, r); err != nil {
			return
		}
		for {
			req, err := readRequest(r)
			if err != nil {
				return
			}
			if b := answer(req); b != nil {
				if _, err := c.Write(b); err != nil {
					return
				}
			}
		}
	})
}

// echoFrame answers a GetRequest with its key as the value.
func echoFrame(req request) []byte {
	var gr ringkvv1.GetRequest
	if err := proto.Unmarshal(req.payload, &gr); err != nil {
		return responseFrame(req.id, uint8(connect.CodeInvalidArgument), appendError(nil, connect.NewError(connect.CodeInvalidArgument, err)))
	}
	b, _ := proto.Marshal(&ringkvv1.GetResponse{Key: gr.Key, Value: gr.Key})
	return responseFrame(req.id, codeOK, b)
}

// notWireError asserts err is a failure of the connection, not an answer.
func notWireError(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("got no error")
	}
	if _, ok := errors.AsType[*connect.Error](err); ok || connect.IsWireError(err) {
		t.Fatalf("got %v, a Connect error; want a connection error", err)
	}
}

// Dial failures before the preface is answered are *net.OpError with Op
// "dial": nothing was sent.
func TestDialFailuresAreDialOpErrors(t *testing.T) {
	closed := listen(t)
	closedAddr := closed.Addr().String()
	_ = closed.Close()

	for _, tc := range []struct {
		name        string
		addr        string
		timeout     time.Duration
		wantTimeout bool // the error wraps context.DeadlineExceeded or os.ErrDeadlineExceeded
	}{
		{"closed port", closedAddr, testTimeout, false},
		{"server hangs up", tcptest.Serve(t, func(c net.Conn) { _ = c.Close() }), testTimeout, false},
		{"server answers the preface halfway", tcptest.Serve(t, func(c net.Conn) {
			_, _ = io.ReadFull(c, make([]byte, len(Preface)))
			_, _ = c.Write([]byte(Preface[:10]))
			_ = c.Close()
		}), testTimeout, false},
		{"server never answers", tcptest.Serve(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }), 200 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			c, err := Dial(ctx, &net.Dialer{}, tc.addr)
			if err == nil {
				_ = c.Close()
				t.Fatal("Dial succeeded")
			}
			if elapsed := time.Since(start); elapsed > tc.timeout+2*time.Second {
				t.Fatalf("Dial took %v", elapsed)
			}
			oe, ok := errors.AsType[*net.OpError](err)
			if !ok || oe.Op != "dial" {
				t.Fatalf("Dial error %T %v, want a *net.OpError with Op dial", err, err)
			}
			if errors.Is(err, ErrNotNative) {
				t.Fatalf("Dial error %v wraps ErrNotNative", err)
			}
			// The socket's deadline is ctx's, so either may report it first.
			timedOut := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
			if timedOut != tc.wantTimeout {
				t.Fatalf("Dial error %v: reports a timeout = %v, want %v", err, timedOut, tc.wantTimeout)
			}
		})
	}
}

// A server without the protocol is recognized at once from its answer to
// the preface (net/http answers 400), not after a timeout.
func TestDialDetectsServerWithoutProtocol(t *testing.T) {
	httpOnly := func(h1, h2c bool) string {
		ln := listen(t)
		hs := &http.Server{
			Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "connect only") }),
			ReadHeaderTimeout: testTimeout,
			Protocols:         new(http.Protocols),
		}
		hs.Protocols.SetHTTP1(h1)
		hs.Protocols.SetUnencryptedHTTP2(h2c)
		done := make(chan struct{})
		go func() { defer close(done); _ = hs.Serve(ln) }()
		t.Cleanup(func() { _ = hs.Close(); <-done })
		return ln.Addr().String()
	}
	for _, tc := range []struct {
		name, addr, answer string
	}{
		{"net/http with HTTP/1.1 and h2c", httpOnly(true, true), "HTTP/1.1 400"},
		{"net/http with HTTP/1.1", httpOnly(true, false), "HTTP/1.1 400"},
		{"another protocol", tcptest.Serve(t, func(c net.Conn) {
			_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6 something else entirely\r\n"))
			_, _ = io.Copy(io.Discard, c)
		}), "SSH-2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			c, err := Dial(ctx, &net.Dialer{}, tc.addr)
			elapsed := time.Since(start)
			if err == nil {
				_ = c.Close()
				t.Fatal("Dial succeeded")
			}
			if !errors.Is(err, ErrNotNative) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Dial error %v, want ErrNotNative (and no timeout)", err)
			}
			if !strings.Contains(err.Error(), tc.answer) {
				t.Fatalf("Dial error %q does not quote the answer %q", err, tc.answer)
			}
			if elapsed > 2*time.Second {
				t.Fatalf("detecting the fallback took %v", elapsed)
			}
		})
	}
}

// A call that gets no frame at all before its context ends breaks the
// connection: the server is presumed gone.
func TestCallWithNoAnswerAtAllBreaksConn(t *testing.T) {
	f := startFixture(t, testConfig())
	silent := scriptedServer(t, func(request) []byte { return nil })
	for _, tc := range []struct {
		name, addr string
	}{
		{"server that never answers", silent},
		{"handler that does not return", f.addr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, tc.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := get(ctx, c, keyBlock)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("call = %v, want an error wrapping context.DeadlineExceeded", err)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Fatalf("call took %v with a 100ms deadline", elapsed)
			}
			if c.Err() == nil {
				t.Fatal("Conn.Err() is nil: a connection that answered nothing stays in use")
			}
			_, err = get(testContext(t), c, "next")
			notWireError(t, err)
		})
	}
}

// The converse: a call whose context ends is not held against the
// connection when another call was answered after it was sent.
func TestCallTimeoutAfterOtherAnswerKeepsConn(t *testing.T) {
	f := startFixture(t, testConfig())
	c := dial(t, f.addr)
	ctx, cancel := context.WithCancel(testContext(t))
	stuck := make(chan error, 1)
	go func() {
		_, err := get(ctx, c, keyBlock)
		stuck <- err
	}()
	recv(t, f.started, "the stuck request to reach its handler")
	mustEcho(t, c, "answered after the stuck request was sent")
	cancel()
	if err := recv(t, stuck, "the stuck call"); !errors.Is(err, context.Canceled) {
		t.Fatalf("stuck call = %v, want an error wrapping context.Canceled", err)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("the connection broke though it answered meanwhile: %v", err)
	}
	mustEcho(t, c, "after the stuck call gave up")
	f.unblock() // its late answer is dropped
	mustEcho(t, c, "after the late answer")
	if err := c.Err(); err != nil {
		t.Fatalf("the connection broke: %v", err)
	}
}

// A call with an ended context is not sent and does not break the
// connection.
func TestCallWithEndedContext(t *testing.T) {
	var sent sync.Mutex
	var requests int
	addr := scriptedServer(t, func(req request) []byte {
		sent.Lock()
		requests++
		sent.Unlock()
		return echoFrame(req)
	})
	c := dial(t, addr)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tc := range []struct {
		ctx  context.Context
		want error
	}{{canceled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		if _, err := get(tc.ctx, c, "x"); !errors.Is(err, tc.want) {
			t.Fatalf("call = %v, want %v", err, tc.want)
		}
	}
	if err := c.Err(); err != nil {
		t.Fatalf("the connection broke: %v", err)
	}
	mustEcho(t, c, "y")
	sent.Lock()
	defer sent.Unlock()
	if requests != 1 {
		t.Fatalf("the server got %d requests, want 1", requests)
	}
}

// The peer hanging up fails every call in flight with a connection error.
func TestPeerHangUpFailsCallsInFlight(t *testing.T) {
	const inFlight = 5
	addr := tcptest.Serve(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		if acceptPreface(c, r) != nil {
			return
		}
		for range inFlight { // read them all, so that the close is clean
			if _, err := readRequest(r); err != nil {
				return
			}
		}
		_ = c.Close()
	})
	c := dial(t, addr)
	ctx := testContext(t)
	errs := make(chan error, inFlight)
	for i := range inFlight {
		go func() {
			_, err := get(ctx, c, fmt.Sprint(i))
			errs <- err
		}()
	}
	for range inFlight {
		err := recv(t, errs, "a call to fail")
		notWireError(t, err)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("call = %v, want an error wrapping io.EOF", err)
		}
	}
	if err := c.Err(); err == nil || !errors.Is(err, io.EOF) {
		t.Fatalf("Conn.Err() = %v, want the hang-up", err)
	}
}

// Frames that break the format break the connection with ErrProtocol.
func TestBadAnswersBreakConn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(req request) []byte
		limit  int // the Conn's maxResponse, when set
		breaks bool
	}{
		{"unknown code", func(req request) []byte {
			return responseFrame(req.id, 99, appendError(nil, connect.NewError(connect.CodeInternal, nil)))
		}, 0, true},
		{"garbage error body", func(req request) []byte {
			return responseFrame(req.id, uint8(connect.CodeInternal), []byte{1, 2, 3})
		}, 0, true},
		{"frame shorter than its header", func(request) []byte { return []byte{0, 0, 0, 2, 0, 0} }, 0, true},
		{"answer over the limit", echoFrame, 8, true},
		{"undecodable response", func(req request) []byte {
			return responseFrame(req.id, codeOK, []byte{0xff, 0xff, 0xff})
		}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := true
			var mu sync.Mutex
			addr := scriptedServer(t, func(req request) []byte {
				mu.Lock()
				defer mu.Unlock()
				if first {
					first = false
					return tc.answer(req)
				}
				return echoFrame(req)
			})
			c := dial(t, addr)
			if tc.limit > 0 {
				c.maxResponse = tc.limit // set before any answer is read
			}
			_, err := get(testContext(t), c, "key")
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("call = %v, want ErrProtocol", err)
			}
			notWireError(t, err)
			if !tc.breaks {
				if err := c.Err(); err != nil {
					t.Fatalf("the connection broke: %v", err)
				}
				mustEcho(t, c, "next")
				return
			}
			if err := c.Err(); !errors.Is(err, ErrProtocol) {
				t.Fatalf("Conn.Err() = %v, want ErrProtocol", err)
			}
		})
	}
}

// A request that cannot be encoded is not sent; the connection goes on.
func TestCallEncodingFailureKeepsConn(t *testing.T) {
	f := startFixture(t, testConfig())
	c := dial(t, f.addr)
	err := c.Call(testContext(t), MethodGet, &ringkvv1.GetRequest{Key: []byte("k"), Consistency: "\xff"}, &ringkvv1.GetResponse{})
	if err == nil || !strings.Contains(err.Error(), "encoding the Get request") {
		t.Fatalf("call = %v, want an encoding error", err)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("the connection broke: %v", err)
	}
	mustEcho(t, c, "after the encoding failure")
}

// Close fails the calls in flight and later ones with ErrClosed.
func TestConnCloseFailsCalls(t *testing.T) {
	f := startFixture(t, testConfig())
	c := dial(t, f.addr)
	result := getInBackground(t, c, keyBlock)
	recv(t, f.started, "the handler to start")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, result, "the call"); !errors.Is(err, ErrClosed) {
		t.Fatalf("call in flight = %v, want ErrClosed", err)
	}
	if _, err := get(testContext(t), c, "later"); !errors.Is(err, ErrClosed) {
		t.Fatalf("later call = %v, want ErrClosed", err)
	}
	if err := c.Err(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Conn.Err() = %v, want ErrClosed", err)
	}
}

// The request frame carries the id, the method and the remaining deadline
// in milliseconds (0 for none).
func TestCallSendsDocumentedFrames(t *testing.T) {
	reqs := make(chan request, 4)
	addr := scriptedServer(t, func(req request) []byte {
		reqs <- req
		return echoFrame(req)
	})
	c := dial(t, addr)
	if _, err := get(context.Background(), c, "no deadline"); err != nil {
		t.Fatal(err)
	}
	// Made just before the call it bounds, so that the 1 s of slack below
	// covers only the time to send it, not the call before.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := get(ctx, c, "deadline"); err != nil {
		t.Fatal(err)
	}
	var resp ringkvv1.PutResponse
	err := c.Call(context.Background(), MethodPut, &ringkvv1.PutRequest{Key: []byte("p")}, &resp)
	if err != nil {
		t.Fatal(err) // the echo answer decodes as an empty-enough PutResponse
	}
	first, second, third := recv(t, reqs, "request 1"), recv(t, reqs, "request 2"), recv(t, reqs, "request 3")
	if first.m != MethodGet || first.timeoutMs != 0 {
		t.Fatalf("first request: method %v, timeout %dms; want Get, 0", first.m, first.timeoutMs)
	}
	if second.timeoutMs == 0 || second.timeoutMs > 3000 || second.timeoutMs < 2000 {
		t.Fatalf("second request's timeout %dms, want about 3000", second.timeoutMs)
	}
	if third.m != MethodPut {
		t.Fatalf("third request's method %v, want Put", third.m)
	}
	if ids := []uint32{first.id, second.id, third.id}; ids[0] == ids[1] || ids[1] == ids[2] || ids[0] == ids[2] {
		t.Fatalf("request ids %v are not distinct", ids)
	}
	var gr ringkvv1.GetRequest
	if err := proto.Unmarshal(second.payload, &gr); err != nil || string(gr.Key) != "deadline" {
		t.Fatalf("second payload decodes as %v, %v", &gr, err)
	}
}

// answerThenHangUp answers the first request with frame(id), then closes
// the connection at once, as a server does when it closes gracefully.
func answerThenHangUp(t *testing.T, frame func(id uint32) []byte) string {
	t.Helper()
	return tcptest.Serve(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		if acceptPreface(c, r) != nil {
			return
		}
		req, err := readRequest(r)
		if err != nil {
			return
		}
		_, _ = c.Write(frame(req.id))
		_ = c.Close()
	})
}

// An answer that arrived just before the connection broke is the call's
// result, not the break.
func TestAnswerJustBeforeHangUpIsKept(t *testing.T) {
	ok, _ := proto.Marshal(&ringkvv1.GetResponse{Value: []byte("v")})
	addr := answerThenHangUp(t, func(id uint32) []byte { return responseFrame(id, codeOK, ok) })
	for i := range 200 {
		c := dial(t, addr)
		resp, err := get(testContext(t), c, "k")
		if err != nil || string(resp.Value) != "v" {
			t.Fatalf("call %d: %v, %v; want the answer sent before the hang-up", i, resp, err)
		}
		_ = c.Close()
	}
}

// The same for an error answer: a refusal (Unavailable: not applied, safe
// to retry) received before a graceful hang-up must not turn into a
// connection error (outcome unknown). Conn.Call's "answered just before the
// break" branch (conn.go, case <-c.broken) keeps only successful answers;
// which branch select takes is up to chance when both are ready, so it takes
// many tries (about 1 in 100 under -race with GOMAXPROCS 8).
func TestErrorAnswerJustBeforeHangUpIsKept(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	addr := answerThenHangUp(t, func(id uint32) []byte {
		return responseFrame(id, uint8(connect.CodeUnavailable), appendError(nil, connect.NewError(connect.CodeUnavailable, errors.New("refused"))))
	})
	lost := 0
	var example error
	const calls = 2000
	for range calls {
		c := dial(t, addr)
		if _, err := get(testContext(t), c, "k"); connect.CodeOf(err) != connect.CodeUnavailable {
			lost++
			example = err
		}
		_ = c.Close()
	}
	if lost > 0 {
		t.Fatalf("%d of %d calls lost the Unavailable answer read before the hang-up; e.g. %v", lost, calls, example)
	}
}
