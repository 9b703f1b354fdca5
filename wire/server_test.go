package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
)

// testTimeout bounds every wait in these tests: a test that needs it has
// failed.
const testTimeout = 10 * time.Second

// waitFor polls cond until it holds, failing the test after testTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", testTimeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// recv receives from ch within testTimeout.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatalf("gave up after %v waiting for %s", testTimeout, what)
		var zero T
		return zero
	}
}

// listen opens a TCP listener on a free loopback port, closed at cleanup.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// Test request keys select what testHandler does.
const (
	keyDeadline = "deadline" // answers Value "set" or "none", Version the deadline in unix ns
	keyNotFound = "notfound" // NotFound with metadata
	keyPlain    = "plain"    // a plain (non-Connect) error
	keyPanic    = "panic"    // panics
	keyBlock    = "block"    // reports on started, waits for release, echoes
	keyBadUTF8  = "badutf8"  // returns a message that cannot be encoded
	keyDeadErr  = "deaderr"  // returns a wrapped context.DeadlineExceeded
	keyCanceled = "canceled" // returns context.Canceled
)

const (
	leaderAddr  = "10.0.0.7:7101"
	notFoundMsg = "no such key: notfound"
)

// fixture is a Server beside an http.Server on one port, like the node's
// client port.
type fixture struct {
	addr    string
	srv     *Server
	started chan string   // the key of each blocking handler as it starts
	release chan struct{} // closed to let blocking handlers finish
	once    sync.Once
}

func (f *fixture) unblock() { f.once.Do(func() { close(f.release) }) }

func (f *fixture) handle(ctx context.Context, m Method, payload []byte) (proto.Message, error) {
	var req ringkvv1.GetRequest
	if err := proto.Unmarshal(payload, &req); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	key := string(req.Key)
	switch key {
	case keyDeadline:
		resp := &ringkvv1.GetResponse{Key: req.Key, Value: []byte("none")}
		if dl, ok := ctx.Deadline(); ok {
			resp.Value = []byte("set")
			resp.Version = uint64(dl.UnixNano())
		}
		return resp, nil
	case keyNotFound:
		ce := connect.NewError(connect.CodeNotFound, errors.New(notFoundMsg))
		ce.Meta().Set("Ringkv-Leader", leaderAddr)
		ce.Meta().Add("Ringkv-Refused", "true")
		ce.Meta().Add("Ringkv-Refused", "twice")
		return nil, ce
	case keyPlain:
		return nil, errors.New("plain failure")
	case keyPanic:
		panic("handler panic on purpose")
	case keyBlock:
		f.started <- key
		<-f.release
	case keyBadUTF8:
		return &ringkvv1.GetRequest{Consistency: "\xff\xfe"}, nil // proto3 strings must be UTF-8
	case keyDeadErr:
		return nil, fmt.Errorf("waiting for the leader: %w", context.DeadlineExceeded)
	case keyCanceled:
		return nil, context.Canceled
	}
	return &ringkvv1.GetResponse{Key: req.Key, Value: req.Key}, nil
}

// startFixture serves f.handle natively and an HTTP handler on the other
// connections of one port. Cleanup releases blocked handlers, closes the
// HTTP server (and so the listener), then closes the Server.
func startFixture(t *testing.T, cfg ServerConfig) *fixture {
	t.Helper()
	f := &fixture{started: make(chan string, 1024), release: make(chan struct{})}
	return startFixtureWith(t, cfg, f, f.handle)
}

func startFixtureWith(t *testing.T, cfg ServerConfig, f *fixture, h Handler) *fixture {
	t.Helper()
	ln := listen(t)
	srv, err := NewServer(cfg, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.addr, f.srv = ln.Addr().String(), srv
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello over %s", r.Proto)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: testTimeout, Protocols: new(http.Protocols)}
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(srv.Split(ln)) }()

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("Server.Close at cleanup: %v", err)
		}
	})
	t.Cleanup(func() {
		_ = hs.Close()
		if err := recv(t, served, "http.Server.Serve to return"); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("http.Server.Serve returned %v, want ErrServerClosed", err)
		}
	})
	t.Cleanup(f.unblock)
	return f
}

// dial connects to addr natively; the connection closes at cleanup.
func dial(t *testing.T, addr string) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := Dial(ctx, &net.Dialer{}, addr)
	if err != nil {
		t.Fatalf("Dial(%s): %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func get(ctx context.Context, c *Conn, key string) (*ringkvv1.GetResponse, error) {
	var resp ringkvv1.GetResponse
	err := c.Call(ctx, MethodGet, &ringkvv1.GetRequest{Key: []byte(key)}, &resp)
	return &resp, err
}

// getInBackground starts an echo call of key on c and returns where its
// result arrives: nil only if the call succeeded with key echoed back.
func getInBackground(t *testing.T, c *Conn, key string) <-chan error {
	t.Helper()
	ctx := testContext(t)
	result := make(chan error, 1)
	go func() {
		resp, err := get(ctx, c, key)
		if err == nil && string(resp.Value) != key {
			err = fmt.Errorf("answered %q", resp.Value)
		}
		result <- err
	}()
	return result
}

// mustEcho makes an echo call and checks its answer.
func mustEcho(t *testing.T, c *Conn, key string) {
	t.Helper()
	resp, err := get(testContext(t), c, key)
	if err != nil {
		t.Fatalf("echo %q: %v", key, err)
	}
	if string(resp.Key) != key || string(resp.Value) != key {
		t.Fatalf("echo %q: got key %q value %q", key, resp.Key, resp.Value)
	}
}

// wireError asserts that err is a *connect.Error from the server with code.
func wireError(t *testing.T, err error, code connect.Code) *connect.Error {
	t.Helper()
	ce, ok := errors.AsType[*connect.Error](err)
	if !ok {
		t.Fatalf("got %T %v, want a *connect.Error with code %v", err, err, code)
	}
	if ce.Code() != code {
		t.Fatalf("got code %v (%v), want %v", ce.Code(), err, code)
	}
	if !connect.IsWireError(err) {
		t.Fatalf("%v is not marked as a wire error", err)
	}
	return ce
}

func testConfig() ServerConfig {
	cfg := DefaultServerConfig()
	cfg.SniffTimeout = 2 * time.Second
	return cfg
}

func TestServerConfigValidate(t *testing.T) {
	good := DefaultServerConfig()
	if err := good.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*ServerConfig)
		want   string
	}{
		{"zero MaxRequestBytes", func(c *ServerConfig) { c.MaxRequestBytes = 0 }, "MaxRequestBytes"},
		{"negative MaxRequestBytes", func(c *ServerConfig) { c.MaxRequestBytes = -1 }, "MaxRequestBytes"},
		{"zero MaxInFlight", func(c *ServerConfig) { c.MaxInFlight = 0 }, "MaxInFlight"},
		{"zero SniffTimeout", func(c *ServerConfig) { c.SniffTimeout = 0 }, "SniffTimeout"},
		{"negative SniffTimeout", func(c *ServerConfig) { c.SniffTimeout = -time.Second }, "SniffTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.change(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.want)
			}
			if s, err := NewServer(cfg, nil, nil); err == nil || s != nil {
				t.Fatalf("NewServer accepted an invalid config: %v, %v", s, err)
			}
		})
	}
}

// One port serves native calls, HTTP/1.1 and cleartext HTTP/2.
func TestSplitServesNativeAndHTTPOnOnePort(t *testing.T) {
	f := startFixture(t, testConfig())
	c := dial(t, f.addr)
	mustEcho(t, c, "over the native protocol")

	for _, tc := range []struct {
		name  string
		proto func(*http.Protocols)
		want  string
	}{
		{"HTTP/1.1", func(p *http.Protocols) { p.SetHTTP1(true) }, "hello over HTTP/1.1"},
		{"h2c prior knowledge", func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }, "hello over HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tc.proto(tr.Protocols)
			t.Cleanup(tr.CloseIdleConnections)
			req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, "http://"+f.addr+"/hello", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || string(body) != tc.want {
				t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, tc.want)
			}
		})
	}
	// The native connection is unaffected by the HTTP traffic.
	mustEcho(t, c, "still native")
}

// Many goroutines share one pipelined Conn; each gets its own answers.
func TestConcurrentCallsOnOneConnGetTheirOwnAnswers(t *testing.T) {
	f := startFixture(t, testConfig())
	c := dial(t, f.addr)
	const goroutines, calls = 200, 20
	ctx := testContext(t)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range calls {
				key := fmt.Sprintf("g%03d-call%02d", g, i)
				resp, err := get(ctx, c, key)
				if err != nil {
					t.Errorf("%s: %v", key, err)
					return
				}
				if string(resp.Key) != key || string(resp.Value) != key {
					t.Errorf("%s: answered key %q value %q", key, resp.Key, resp.Value)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := c.Err(); err != nil {
		t.Fatalf("connection broke: %v", err)
	}
}

// The caller's deadline reaches the handler; no deadline travels as none.
func TestDeadlineTravelsToHandler(t *testing.T) {
	f := startFixture(t, testConfig())
	c := dial(t, f.addr)

	t.Run("with deadline", func(t *testing.T) {
		for _, d := range []time.Duration{3 * time.Second, 250 * time.Millisecond, 1500 * time.Millisecond} {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			want, _ := ctx.Deadline()
			resp, err := get(ctx, c, keyDeadline)
			cancel()
			if err != nil {
				t.Fatalf("timeout %v: %v", d, err)
			}
			if string(resp.Value) != "set" {
				t.Fatalf("timeout %v: the handler saw no deadline", d)
			}
			got := time.Unix(0, int64(resp.Version))
			// The server starts its timer after the caller computed the
			// remaining time and rounds it up: never earlier, a little later.
			if diff := got.Sub(want); diff < -time.Millisecond || diff > time.Second {
				t.Fatalf("timeout %v: handler deadline %v, caller's %v (off by %v)", d, got, want, diff)
			}
		}
	})
	t.Run("without deadline", func(t *testing.T) {
		resp, err := get(context.Background(), c, keyDeadline)
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.Value) != "none" {
			t.Fatalf("the handler saw a deadline (%v) though the caller had none", time.Unix(0, int64(resp.Version)))
		}
	})
}

// ServerConfig.Budget sets the handler's one deadline from the timeout the
// request carried (none: 0), and BaseContext's values reach the handler.
func TestBudgetSetsTheHandlersDeadline(t *testing.T) {
	type mark struct{}
	cfg := testConfig()
	var asked sync.Map // timeouts Budget was called with
	cfg.Budget = func(timeout time.Duration) time.Duration {
		asked.Store(timeout > 0, timeout)
		if timeout == 0 {
			return 2 * time.Second // requests without a timeout get one
		}
		return timeout / 2
	}
	cfg.BaseContext = context.WithValue(context.Background(), mark{}, "base")
	f := &fixture{started: make(chan string, 1), release: make(chan struct{})}
	startFixtureWith(t, cfg, f, func(ctx context.Context, m Method, payload []byte) (proto.Message, error) {
		if ctx.Value(mark{}) != "base" {
			return nil, errors.New("the handler's context lacks BaseContext's value")
		}
		return f.handle(ctx, m, payload)
	})
	c := dial(t, f.addr)

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	resp, err := get(ctx, c, keyDeadline)
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Value) != "set" {
		t.Fatal("the handler saw no deadline")
	}
	// The budget is half the 4 s the request carried: about 2 s from now,
	// well before the caller's own 4 s.
	if got := time.Unix(0, int64(resp.Version)).Sub(start); got < 1900*time.Millisecond || got > 3*time.Second {
		t.Fatalf("handler deadline %v after the call started; want about 2s (half the 4s timeout)", got)
	}
	if v, ok := asked.Load(true); !ok || v.(time.Duration) <= 3*time.Second || v.(time.Duration) > 4*time.Second {
		t.Fatalf("Budget was asked about %v; want the request's timeout, a little under 4s", v)
	}

	resp, err = get(context.Background(), c, keyDeadline)
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Value) != "set" {
		t.Fatal("a request without a timeout got no deadline, though Budget gives it 2s")
	}
	if v, ok := asked.Load(false); !ok || v.(time.Duration) != 0 {
		t.Fatalf("Budget was asked about %v for a request without a timeout; want 0", v)
	}
}

// Handler errors arrive with their code, message and metadata; panics and
// encoding failures as Internal; the connection keeps working after each.
func TestHandlerErrorsArriveAsConnectErrors(t *testing.T) {
	f := startFixture(t, testConfig())
	c := dial(t, f.addr)
	for _, tc := range []struct {
		key     string
		code    connect.Code
		message string
		meta    map[string][]string
	}{
		{keyNotFound, connect.CodeNotFound, notFoundMsg, map[string][]string{
			"Ringkv-Leader":  {leaderAddr},
			"Ringkv-Refused": {"true", "twice"},
		}},
		{keyPlain, connect.CodeUnknown, "plain failure", nil},
		{keyPanic, connect.CodeInternal, "the node failed serving Get; see its log", nil},
		{keyBadUTF8, connect.CodeInternal, "encoding the Get response", nil},
		// Context errors get the codes Connect's handlers give them.
		{keyDeadErr, connect.CodeDeadlineExceeded, "waiting for the leader: context deadline exceeded", nil},
		{keyCanceled, connect.CodeCanceled, "context canceled", nil},
	} {
		t.Run(tc.key, func(t *testing.T) {
			_, err := get(testContext(t), c, tc.key)
			ce := wireError(t, err, tc.code)
			if !strings.Contains(ce.Message(), tc.message) {
				t.Fatalf("message %q, want it to contain %q", ce.Message(), tc.message)
			}
			for k, want := range tc.meta {
				if got := ce.Meta().Values(k); !equalStrings(got, want) {
					t.Fatalf("meta %s = %q, want %q", k, got, want)
				}
			}
			if tc.meta == nil && len(ce.Meta()) != 0 {
				t.Fatalf("unexpected meta %v", ce.Meta())
			}
			if err := c.Err(); err != nil {
				t.Fatalf("the connection broke after a %s answer: %v", tc.key, err)
			}
			mustEcho(t, c, "after "+tc.key)
		})
	}
	// The server still takes new connections too.
	mustEcho(t, dial(t, f.addr), "new connection")
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A request over MaxRequestBytes is answered with ResourceExhausted naming
// both sizes; one at the limit is served; the connection stays usable.
func TestOversizedRequestIsRefusedAndConnSurvives(t *testing.T) {
	cfg := testConfig()
	cfg.MaxRequestBytes = 100
	f := startFixture(t, cfg)
	c := dial(t, f.addr)
	for _, tc := range []struct {
		keyLen  int
		refused bool
	}{
		{keyLen: 98, refused: false}, // 1 tag + 1 length + 98 = 100 bytes
		{keyLen: 99, refused: true},  // 101 bytes
		{keyLen: 5000, refused: true},
	} {
		t.Run(fmt.Sprint(tc.keyLen), func(t *testing.T) {
			key := strings.Repeat("k", tc.keyLen)
			size := proto.Size(&ringkvv1.GetRequest{Key: []byte(key)})
			resp, err := get(testContext(t), c, key)
			if !tc.refused {
				if err != nil || string(resp.Value) != key {
					t.Fatalf("request of %d bytes (the limit): %v", size, err)
				}
				return
			}
			ce := wireError(t, err, connect.CodeResourceExhausted)
			for _, want := range []string{fmt.Sprintf("request is %d bytes", size), "the limit is 100 bytes"} {
				if !strings.Contains(ce.Message(), want) {
					t.Fatalf("message %q does not contain %q", ce.Message(), want)
				}
			}
			if err := c.Err(); err != nil {
				t.Fatalf("connection broke: %v", err)
			}
			mustEcho(t, c, "small")
		})
	}
}

// Close waits for the running handler's answer to reach the client, then
// returns nil; later dials fail.
func TestServerCloseIsGraceful(t *testing.T) {
	f := startFixture(t, testConfig())
	c := dial(t, f.addr)
	result := getInBackground(t, c, keyBlock)
	recv(t, f.started, "the handler to start")

	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		closed <- f.srv.Close(ctx)
	}()
	waitFor(t, "Close to begin", func() bool {
		f.srv.mu.Lock()
		defer f.srv.mu.Unlock()
		return f.srv.closed
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v while a handler was running", err)
	case err := <-result:
		t.Fatalf("call returned %v before its handler finished", err)
	default:
	}

	f.unblock()
	if err := recv(t, result, "the call"); err != nil {
		t.Fatalf("call running during a graceful Close: %v", err)
	}
	if err := recv(t, closed, "Close"); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	// The server hung up on the client afterwards.
	waitFor(t, "the client to see the hang-up", func() bool { return c.Err() != nil })

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if c2, err := Dial(ctx, &net.Dialer{}, f.addr); err == nil {
		_ = c2.Close()
		t.Fatal("Dial succeeded after Close")
	}
}

// Close whose context has ended cuts running calls off: they fail with a
// connection error, not an answer, and the Conn is broken.
func TestServerForcedCloseBreaksCallsInFlight(t *testing.T) {
	f := startFixture(t, testConfig())
	c := dial(t, f.addr)
	result := getInBackground(t, c, keyBlock) // its handler ignores the context: only release ends it
	recv(t, f.started, "the handler to start")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	closed := make(chan error, 1)
	go func() { closed <- f.srv.Close(ctx) }()

	err := recv(t, result, "the call to fail")
	if err == nil {
		t.Fatal("call succeeded though the server was closed under it")
	}
	if _, ok := errors.AsType[*connect.Error](err); ok || connect.IsWireError(err) {
		t.Fatalf("call failed with %v, want a connection error, not a server answer", err)
	}
	if c.Err() == nil {
		t.Fatal("Conn.Err() is nil after the server hung up")
	}
	if err2 := c.Call(testContext(t), MethodGet, &ringkvv1.GetRequest{}, &ringkvv1.GetResponse{}); err2 == nil {
		t.Fatal("a call on the broken Conn succeeded")
	}
	f.unblock() // Close waits for the handler goroutine itself
	if err := recv(t, closed, "Close"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
}

// At most MaxInFlight handlers of one connection run at once; the next
// request starts when one finishes.
func TestMaxInFlightBoundsRunningHandlers(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 2
	f := &fixture{started: make(chan string, 16), release: make(chan struct{})}
	var mu sync.Mutex
	var running, peak int
	startFixtureWith(t, cfg, f, func(ctx context.Context, m Method, payload []byte) (proto.Message, error) {
		mu.Lock()
		running++
		peak = max(peak, running)
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		return f.handle(ctx, m, payload)
	})
	c := dial(t, f.addr)
	ctx := testContext(t)
	results := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := get(ctx, c, keyBlock)
			results <- err
		}()
	}
	recv(t, f.started, "the first handler")
	recv(t, f.started, "the second handler")
	select {
	case <-f.started:
		t.Fatal("a third handler started while MaxInFlight (2) were running")
	case <-time.After(100 * time.Millisecond):
	}
	f.unblock()
	for range 3 {
		if err := recv(t, results, "a call"); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if peak != 2 {
		t.Fatalf("at most %d handlers ran at once, want 2", peak)
	}
}

// fakeKV serves Get and refuses Put; Delete and CompareAndSwap are
// unimplemented.
type fakeKV struct {
	ringkvv1connect.UnimplementedKVHandler
}

func (fakeKV) Get(_ context.Context, req *connect.Request[ringkvv1.GetRequest]) (*connect.Response[ringkvv1.GetResponse], error) {
	return connect.NewResponse(&ringkvv1.GetResponse{Key: req.Msg.Key, Value: []byte("value of " + string(req.Msg.Key)), Version: 7}), nil
}

func (fakeKV) Put(context.Context, *connect.Request[ringkvv1.PutRequest]) (*connect.Response[ringkvv1.PutResponse], error) {
	return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("read only"))
}

type observation struct {
	procedure string
	start     time.Time
	err       error
}

type observer struct {
	mu  sync.Mutex
	got []observation
}

func (o *observer) observe(procedure string, start time.Time, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, observation{procedure, start, err})
}

func (o *observer) take() []observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	got := o.got
	o.got = nil
	return got
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ServeKV routes each method to the service, reports it under Connect's
// procedure name with its error, and refuses unknown methods.
func TestServeKVObservesProcedures(t *testing.T) {
	var o observer
	h := ServeKV(fakeKV{}, o.observe)
	for _, tc := range []struct {
		name     string
		m        Method
		payload  []byte
		proc     string // "" when observe must not be called
		code     connect.Code
		contains string
	}{
		{"get", MethodGet, mustMarshal(t, &ringkvv1.GetRequest{Key: []byte("k")}), ringkvv1connect.KVGetProcedure, 0, ""},
		{"put refused", MethodPut, mustMarshal(t, &ringkvv1.PutRequest{Key: []byte("k")}), ringkvv1connect.KVPutProcedure, connect.CodeFailedPrecondition, "read only"},
		{"delete", MethodDelete, nil, ringkvv1connect.KVDeleteProcedure, connect.CodeUnimplemented, ""},
		{"compare-and-swap", MethodCompareAndSwap, nil, ringkvv1connect.KVCompareAndSwapProcedure, connect.CodeUnimplemented, ""},
		{"undecodable get", MethodGet, []byte{0xff, 0xff, 0xff}, ringkvv1connect.KVGetProcedure, connect.CodeInvalidArgument, "cannot decode the Get request"},
		{"unknown method", Method(99), nil, "", connect.CodeUnimplemented, "unknown method 99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now()
			resp, err := h(context.Background(), tc.m, tc.payload)
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				gr, ok := resp.(*ringkvv1.GetResponse)
				if !ok || string(gr.Value) != "value of k" || gr.Version != 7 {
					t.Fatalf("response %T %v", resp, resp)
				}
			} else if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("error %v, want code %v containing %q", err, tc.code, tc.contains)
			}
			got := o.take()
			if tc.proc == "" {
				return
			}
			if len(got) != 1 {
				t.Fatalf("observed %d calls, want 1: %v", len(got), got)
			}
			if got[0].procedure != tc.proc {
				t.Fatalf("observed procedure %q, want %q", got[0].procedure, tc.proc)
			}
			if connect.CodeOf(got[0].err) != connect.CodeOf(err) || (got[0].err == nil) != (err == nil) {
				t.Fatalf("observed error %v, the handler returned %v", got[0].err, err)
			}
			if got[0].start.Before(before) || got[0].start.After(time.Now()) {
				t.Fatalf("observed start %v outside the call", got[0].start)
			}
		})
	}
}

// ServeKV behind a Server: the same answers over the wire.
func TestServeKVOverTheWire(t *testing.T) {
	var o observer
	f := &fixture{started: make(chan string, 1), release: make(chan struct{})}
	startFixtureWith(t, testConfig(), f, ServeKV(fakeKV{}, o.observe))
	c := dial(t, f.addr)
	ctx := testContext(t)

	var resp ringkvv1.GetResponse
	if err := c.Call(ctx, MethodGet, &ringkvv1.GetRequest{Key: []byte("a")}, &resp); err != nil {
		t.Fatal(err)
	}
	if string(resp.Value) != "value of a" || resp.Version != 7 {
		t.Fatalf("Get answered %v", &resp)
	}
	err := c.Call(ctx, MethodPut, &ringkvv1.PutRequest{Key: []byte("a")}, &ringkvv1.PutResponse{})
	if ce := wireError(t, err, connect.CodeFailedPrecondition); ce.Message() != "read only" {
		t.Fatalf("Put message %q", ce.Message())
	}
	err = c.Call(ctx, Method(42), &ringkvv1.GetRequest{}, &ringkvv1.GetResponse{})
	if ce := wireError(t, err, connect.CodeUnimplemented); !strings.Contains(ce.Message(), "unknown method 42") {
		t.Fatalf("unknown method message %q", ce.Message())
	}
	got := o.take()
	if len(got) != 2 || got[0].procedure != ringkvv1connect.KVGetProcedure || got[0].err != nil ||
		got[1].procedure != ringkvv1connect.KVPutProcedure || connect.CodeOf(got[1].err) != connect.CodeFailedPrecondition {
		t.Fatalf("observed %+v", got)
	}
	mustEchoKV(t, c)
}

func mustEchoKV(t *testing.T, c *Conn) {
	t.Helper()
	var resp ringkvv1.GetResponse
	if err := c.Call(testContext(t), MethodGet, &ringkvv1.GetRequest{Key: []byte("z")}, &resp); err != nil || string(resp.Value) != "value of z" {
		t.Fatalf("Get after the errors: %v, %v", err, &resp)
	}
}

// KVClient and CallKV give the KV service over a Conn the Connect client's
// shape: the same messages and the same (wire) errors.
func TestKVClientOverServeKV(t *testing.T) {
	f := &fixture{started: make(chan string, 1), release: make(chan struct{})}
	startFixtureWith(t, testConfig(), f, ServeKV(fakeKV{}, nil))
	kv := KVClient(dial(t, f.addr))
	ctx := testContext(t)

	resp, err := kv.Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: []byte("b")}))
	if err != nil || string(resp.Msg.Value) != "value of b" || resp.Msg.Version != 7 {
		t.Fatalf("Get: %v, %v", resp, err)
	}
	_, err = kv.Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Key: []byte("b")}))
	wireError(t, err, connect.CodeFailedPrecondition)
	_, err = kv.Delete(ctx, connect.NewRequest(&ringkvv1.DeleteRequest{Key: []byte("b")}))
	wireError(t, err, connect.CodeUnimplemented)
	_, err = kv.CompareAndSwap(ctx, connect.NewRequest(&ringkvv1.CompareAndSwapRequest{Key: []byte("b")}))
	wireError(t, err, connect.CodeUnimplemented)
}

// DESIGN.md: "beyond [MaxInFlight] the reader waits, so a client cannot make
// the node queue without bound". The reader waits for running handlers only:
// a client that pipelines requests and reads no answers makes the server
// queue answers in its batchWriter without limit.
func TestUnreadAnswersDoNotQueueWithoutBound(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlight = 4
	f := startFixture(t, cfg)
	c := rawDial(t, f.addr)
	write(t, c, []byte(Preface))
	if got := readN(t, c, len(Preface)); string(got) != Preface {
		t.Fatalf("preface %q", got)
	}
	payload, _ := proto.Marshal(&ringkvv1.GetRequest{Key: make([]byte, 4<<10)})
	var frames []byte
	for id := range uint32(64) {
		frames = appendRequestHeader(frames, id, MethodGet, 0, len(payload))
		frames = append(frames, payload...)
	}
	go func() { // 64 MiB of requests, every answer as big, none read
		for range 256 {
			if _, err := c.Write(frames); err != nil {
				return
			}
		}
	}()
	const limit = 4 << 20
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		queued := 0
		f.srv.mu.Lock()
		for sc := range f.srv.conns {
			sc.w.mu.Lock()
			queued += len(sc.w.queued)
			sc.w.mu.Unlock()
		}
		f.srv.mu.Unlock()
		if queued > limit {
			t.Fatalf("the server queued %d bytes of answers nobody reads (MaxInFlight %d)", queued, cfg.MaxInFlight)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// goroutineID is the number the runtime's stack dump gives the calling
// goroutine ("goroutine 42 [running]:"): tests only.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

// Requests run on reused workers, whose stacks stay grown, not each on a
// fresh goroutine: 100 calls one after another see a few goroutines, not 100.
func TestRequestsRunOnReusedWorkers(t *testing.T) {
	f := &fixture{started: make(chan string, 16), release: make(chan struct{})}
	var mu sync.Mutex
	seen := map[string]int{}
	startFixtureWith(t, testConfig(), f, func(ctx context.Context, m Method, payload []byte) (proto.Message, error) {
		mu.Lock()
		seen[goroutineID()]++
		mu.Unlock()
		return f.handle(ctx, m, payload)
	})
	c := dial(t, f.addr)
	for i := range 100 {
		mustEcho(t, c, fmt.Sprint("k", i))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) > 10 {
		t.Fatalf("100 sequential requests ran on %d goroutines, want a few reused workers", len(seen))
	}
}

// After a burst, at most maxIdleWorkers wait for work; the others exit. Close
// ends the waiting ones.
func TestIdleWorkersAreBoundedAndEndAtClose(t *testing.T) {
	const burst = maxIdleWorkers + 44
	f := &fixture{started: make(chan string, burst), release: make(chan struct{})}
	fx := startFixtureWith(t, testConfig(), f, f.handle)
	c := dial(t, f.addr)
	results := make([]<-chan error, burst)
	for i := range results {
		results[i] = getInBackground(t, c, keyBlock)
	}
	for range burst {
		recv(t, f.started, "a blocking handler")
	}
	srv := fx.srv
	if n := srv.idle.Load(); n != 0 {
		t.Fatalf("%d workers idle while all %d run a request", n, burst)
	}
	f.unblock()
	for _, r := range results {
		if err := recv(t, r, "a call"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the workers to finish", func() bool { return srv.idle.Load() == maxIdleWorkers })
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the idle workers to exit", func() bool { return srv.idle.Load() == 0 })
	waitFor(t, "their goroutines to end", func() bool { return runtime.NumGoroutine() <= before-maxIdleWorkers })
}
