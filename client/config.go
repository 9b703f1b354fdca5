package client

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// Config configures a Client. Start from DefaultConfig and set Endpoints.
type Config struct {
	// Endpoints are client addresses (host:port) of some cluster nodes; at
	// least one. Any node serves any request, so one is enough; more give
	// the client somewhere to go when one is down. A scheme
	// ("http://host:port") is accepted and kept.
	Endpoints []string
	// DialTimeout bounds opening one connection.
	DialTimeout time.Duration
	// RequestTimeout bounds one attempt of a request; the caller's context
	// bounds the request as a whole, retries included.
	RequestTimeout time.Duration
	// MaxAttempts is how many times a request is tried at most (1 = no retry).
	MaxAttempts int
	// BackoffBase and BackoffMax shape the wait before retry n: a uniformly
	// random duration in [0, min(BackoffMax, BackoffBase*2^(n-1))) ("full
	// jitter"), always cut short by the caller's context.
	BackoffBase, BackoffMax time.Duration
	// HTTPClient sends the requests. Nil: the Client makes its own, with
	// connection reuse and HTTP/2 over cleartext (h2c), and closes its idle
	// connections in Close. A caller-supplied client must speak h2c or
	// HTTP/1.1 to the nodes and is left alone by Close.
	HTTPClient *http.Client
	// Logger receives retry and routing decisions at debug level. Nil: none.
	Logger *slog.Logger
	// Protocol chooses how key-value calls travel; the zero value is
	// ProtocolNative. Cluster calls (members, partitions, status, drain...)
	// always use Connect.
	Protocol Protocol
}

// Protocol is how a Client sends key-value calls (get, put, delete,
// compare-and-swap).
type Protocol int

const (
	// ProtocolNative uses RingKV's native protocol (package wire): one
	// pipelined TCP connection per node, binary frames, several calls per
	// write. It costs the nodes a fraction of the CPU of HTTP/2. Endpoints
	// given as https:// URLs, and nodes too old to speak it, get Connect.
	// The answers and errors are the same either way.
	ProtocolNative Protocol = iota
	// ProtocolConnect sends every call over Connect on HTTP/2 (h2c), through
	// HTTPClient.
	ProtocolConnect
)

func (p Protocol) String() string {
	switch p {
	case ProtocolNative:
		return "native"
	case ProtocolConnect:
		return "connect"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// ParseProtocol parses "native" or "connect".
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "native":
		return ProtocolNative, nil
	case "connect":
		return ProtocolConnect, nil
	}
	return 0, fmt.Errorf("%w: unknown protocol %q: use native or connect", ErrInvalidArgument, s)
}

// DefaultConfig returns the defaults, with Endpoints set to the default
// local node (127.0.0.1:7101).
func DefaultConfig() Config {
	return Config{
		Endpoints:      []string{"127.0.0.1:7101"},
		DialTimeout:    2 * time.Second,
		RequestTimeout: 3 * time.Second,
		MaxAttempts:    10,
		BackoffBase:    25 * time.Millisecond,
		BackoffMax:     1 * time.Second,
	}
}

// TestConfig returns a configuration with short timeouts for tests against
// in-process servers.
func TestConfig(endpoints ...string) Config {
	return Config{
		Endpoints:      endpoints,
		DialTimeout:    500 * time.Millisecond,
		RequestTimeout: 500 * time.Millisecond,
		MaxAttempts:    5,
		BackoffBase:    time.Millisecond,
		BackoffMax:     10 * time.Millisecond,
	}
}

// Validate reports the first problem with c, or nil. It has no side effects.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("%w: config: no endpoints: give at least one node's client address (host:port)", ErrInvalidArgument)
	}
	for _, e := range c.Endpoints {
		if err := validateEndpoint(e); err != nil {
			return err
		}
	}
	switch {
	case c.DialTimeout <= 0:
		return fmt.Errorf("%w: config: DialTimeout is %v; it must be positive", ErrInvalidArgument, c.DialTimeout)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("%w: config: RequestTimeout is %v; it must be positive", ErrInvalidArgument, c.RequestTimeout)
	case c.MaxAttempts < 1:
		return fmt.Errorf("%w: config: MaxAttempts is %d; it must be at least 1", ErrInvalidArgument, c.MaxAttempts)
	case c.BackoffBase <= 0:
		return fmt.Errorf("%w: config: BackoffBase is %v; it must be positive", ErrInvalidArgument, c.BackoffBase)
	case c.BackoffMax < c.BackoffBase:
		return fmt.Errorf("%w: config: BackoffMax (%v) is below BackoffBase (%v)", ErrInvalidArgument, c.BackoffMax, c.BackoffBase)
	case c.Protocol != ProtocolNative && c.Protocol != ProtocolConnect:
		return fmt.Errorf("%w: config: unknown Protocol %d: use ProtocolNative or ProtocolConnect", ErrInvalidArgument, int(c.Protocol))
	}
	return nil
}

func validateEndpoint(e string) error {
	hostport := e
	if i := strings.Index(e, "://"); i >= 0 {
		scheme := e[:i]
		if scheme != "http" && scheme != "https" {
			return fmt.Errorf("%w: config: endpoint %q: scheme must be http or https", ErrInvalidArgument, e)
		}
		hostport = strings.TrimSuffix(e[i+3:], "/")
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		return fmt.Errorf("%w: config: endpoint %q is not host:port: %v", ErrInvalidArgument, e, err)
	}
	return nil
}

// baseURL turns an endpoint into the URL prefix Connect wants.
func baseURL(endpoint string) string {
	if strings.Contains(endpoint, "://") {
		return strings.TrimSuffix(endpoint, "/")
	}
	return "http://" + endpoint
}

// endpointKey strips the scheme so that configured endpoints and the
// host:port addresses the cluster reports compare equal.
func endpointKey(endpoint string) string {
	if i := strings.Index(endpoint, "://"); i >= 0 {
		return strings.TrimSuffix(endpoint[i+3:], "/")
	}
	return endpoint
}

// newHTTPClient builds the default transport: HTTP/2 everywhere, cleartext
// with prior knowledge (h2c) for http endpoints, so that many requests share
// one connection per node; pings notice dead connections (a paused node
// never resets its sockets). HTTP1 stays off: with it on, net/http would
// speak HTTP/1.1 to http:// URLs.
func newHTTPClient(cfg Config) (*http.Client, *http.Transport) {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		Protocols:           &protocols,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: cfg.DialTimeout,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 5 * time.Second,
			PingTimeout:     3 * time.Second,
		},
	}
	return &http.Client{Transport: tr}, tr
}
