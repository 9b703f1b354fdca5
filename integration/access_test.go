package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ringkv/ringkv/client"
)

// How tests reach a cluster: kvctl, Go clients, raw HTTP, and polling.

// endpoints returns the client addresses of the given nodes (all when none
// is given).
func (c *cluster) endpoints(idx ...int) []string {
	if len(idx) == 0 {
		for i := range c.nodes {
			idx = append(idx, i)
		}
	}
	out := make([]string, 0, len(idx))
	for _, i := range idx {
		out = append(out, c.nodes[i].clientAddr)
	}
	return out
}

// kvctlResult is one run of kvctl.
type kvctlResult struct {
	stdout, stderr string
	code           int
}

func (r kvctlResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// kvctl runs kvctl against every node.
func (c *cluster) kvctl(args ...string) kvctlResult {
	c.t.Helper()
	return c.kvctlAt(c.endpoints(), args...)
}

// kvctlAt runs kvctl with --endpoints set to endpoints and returns its
// output and exit code.
func (c *cluster) kvctlAt(endpoints []string, args ...string) kvctlResult {
	c.t.Helper()
	return runKvctl(c.t, nil, append([]string{"--endpoints", strings.Join(endpoints, ",")}, args...)...)
}

// runKvctl runs the kvctl binary with args and optional stdin, bounded in time.
func runKvctl(t *testing.T, stdin []byte, args ...string) kvctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvctlBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KVCTL_ENDPOINTS=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "GORACE=halt_on_error=1 atexit_sleep_ms=0")
	err := cmd.Run()
	res := kvctlResult{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("kvctl %q: %v", args, err)
	}
	if strings.Contains(res.stderr, "DATA RACE") || strings.Contains(res.stderr, "panic:") {
		t.Errorf("kvctl %q: race or panic:\n%s", args, res.stderr)
	}
	if ctx.Err() != nil {
		t.Fatalf("kvctl %q did not finish within 60 s: %v", args, res)
	}
	return res
}

// kvctlJSON runs kvctl with -o json and decodes stdout into out. It fails
// the test unless kvctl exits 0 with one JSON document.
func (c *cluster) kvctlJSON(endpoints []string, out any, args ...string) {
	c.t.Helper()
	res := c.kvctlAt(endpoints, append([]string{"-o", "json"}, args...)...)
	if res.code != 0 {
		c.t.Fatalf("kvctl %q: %v", args, res)
	}
	if err := decodeOne(res.stdout, out); err != nil {
		c.t.Fatalf("kvctl %q: stdout is not one JSON document: %v\n%s", args, err, res.stdout)
	}
}

// decodeOne decodes exactly one JSON document from s.
func decodeOne(s string, out any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(out); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON document")
	}
	return nil
}

// newClient returns a Go client for endpoints (all nodes when none), closed
// when the test ends.
func (c *cluster) newClient(edit func(*client.Config), endpoints ...string) *client.Client {
	c.t.Helper()
	cfg := client.DefaultConfig()
	cfg.Endpoints = endpoints
	if len(endpoints) == 0 {
		cfg.Endpoints = c.endpoints()
	}
	if edit != nil {
		edit(&cfg)
	}
	cl, err := client.New(cfg)
	if err != nil {
		c.t.Fatalf("client.New: %v", err)
	}
	c.t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// pinnedClient returns a Go client configured with node i as its only
// endpoint whose every request, leader routing included, goes to node i:
// its transport rewrites the host of each request. It proves that node i
// serves any request itself or by forwarding.
func (c *cluster) pinnedClient(i int) *client.Client {
	c.t.Helper()
	addr := c.nodes[i].clientAddr
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	c.t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: pinTransport{addr: addr, next: tr}}
	return c.newClient(func(cfg *client.Config) { cfg.HTTPClient = hc }, addr)
}

type pinTransport struct {
	addr string
	next http.RoundTripper
}

func (p pinTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != p.addr {
		req = req.Clone(req.Context())
		req.URL.Host, req.Host = p.addr, p.addr
	}
	return p.next.RoundTrip(req)
}

// poll calls cond every interval until it returns true or timeout passes,
// and reports whether it did. It is the only way tests wait.
func poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for range int(timeout/interval) + 2 {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return false
}

// ctxFor returns a context bounded by d and the test.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// getHTTP fetches a path of node i's client port.
func (c *cluster) getHTTP(i int, path string) (int, string) {
	c.t.Helper()
	resp, err := c.http.Get("http://" + c.nodes[i].clientAddr + path)
	if err != nil {
		c.t.Fatalf("GET %s on %s: %v", path, c.nodes[i].name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("GET %s on %s: reading body: %v", path, c.nodes[i].name, err)
	}
	return resp.StatusCode, string(b)
}
