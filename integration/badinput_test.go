package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/client"
)

// Limits from DESIGN.md section 5 (kvd's defaults).
const (
	maxKey   = 4096
	maxValue = 1 << 20
)

// TestBadInput sends requests that break the API's rules over raw HTTP,
// JSON and binary protobuf, then through the Go client and kvctl: each is
// refused as invalid_argument (HTTP 400) with a message naming the problem,
// and the node keeps serving.
func TestBadInput(t *testing.T) {
	c := newCluster(t, 3)
	bigKey := bytes.Repeat([]byte("k"), maxKey+1)
	bigValue := bytes.Repeat([]byte("v"), maxValue+1)

	type rawCase struct {
		name      string
		procedure string
		msg       proto.Message // sent as JSON and as binary protobuf
		body      []byte        // sent as is with contentType, when msg is nil
		ctype     string
		want      []string // substrings of the error message
	}
	cases := []rawCase{
		{name: "put empty key", procedure: "KV/Put", msg: &ringkvv1.PutRequest{Value: []byte("v")}, want: []string{"key", "empty"}},
		{name: "get empty key", procedure: "KV/Get", msg: &ringkvv1.GetRequest{}, want: []string{"key", "empty"}},
		{name: "delete empty key", procedure: "KV/Delete", msg: &ringkvv1.DeleteRequest{}, want: []string{"key", "empty"}},
		{name: "put key over 4 KiB", procedure: "KV/Put", msg: &ringkvv1.PutRequest{Key: bigKey, Value: []byte("v")}, want: []string{"key", "4097", "4096"}},
		{name: "get key over 4 KiB", procedure: "KV/Get", msg: &ringkvv1.GetRequest{Key: bigKey}, want: []string{"key", "4096"}},
		{name: "put value over 1 MiB", procedure: "KV/Put", msg: &ringkvv1.PutRequest{Key: []byte("k"), Value: bigValue}, want: []string{"value", "1048577", "1048576"}},
		{name: "cas new value over 1 MiB", procedure: "KV/CompareAndSwap", msg: &ringkvv1.CompareAndSwapRequest{
			Key: []byte("k"), NewValue: bigValue, Expect: &ringkvv1.CompareAndSwapRequest_ExpectAbsent{ExpectAbsent: true}}, want: []string{"value", "1048576"}},
		{name: "unknown consistency", procedure: "KV/Get", msg: &ringkvv1.GetRequest{Key: []byte("k"), Consistency: "sometimes"}, want: []string{"consistency", "sometimes", "strong", "eventual"}},
		{name: "cas without expectation", procedure: "KV/CompareAndSwap", msg: &ringkvv1.CompareAndSwapRequest{Key: []byte("k"), NewValue: []byte("v")}, want: []string{"expected_value", "expected_version", "expect_absent"}},
		{name: "malformed JSON", procedure: "KV/Put", body: []byte(`{"key": "aGk=", "value": `), ctype: "application/json", want: []string{"unmarshal"}},
		{name: "JSON with a field of the wrong type", procedure: "KV/Put", body: []byte(`{"key": 42}`), ctype: "application/json", want: []string{"unmarshal"}},
		{name: "JSON key that is not base64", procedure: "KV/Put", body: []byte(`{"key": "!!!", "value": "dg=="}`), ctype: "application/json", want: []string{"unmarshal"}},
		{name: "malformed protobuf", procedure: "KV/Put", body: []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x99}, ctype: "application/proto", want: []string{"unmarshal"}},
	}
	var reqs []rawCase
	for _, tc := range cases {
		if tc.msg == nil {
			reqs = append(reqs, tc)
			continue
		}
		js, err := protojson.Marshal(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		pb, err := proto.Marshal(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		j, p := tc, tc
		j.name, j.body, j.ctype = tc.name+" (JSON)", js, "application/json"
		p.name, p.body, p.ctype = tc.name+" (proto)", pb, "application/proto"
		reqs = append(reqs, j, p)
	}
	for i, tc := range reqs {
		node := i % len(c.nodes) // spread over the nodes
		t.Run(tc.name, func(t *testing.T) {
			status, code, msg := c.postRaw(t, node, "/ringkv.v1."+tc.procedure, tc.ctype, tc.body)
			if status != http.StatusBadRequest || code != "invalid_argument" {
				t.Errorf("%s: HTTP %d, code %q, message %q; want 400 invalid_argument", tc.procedure, status, code, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%s: message %q does not name %q", tc.procedure, msg, w)
				}
			}
		})
	}

	t.Run("client", func(t *testing.T) {
		cl := c.newClient(nil)
		ctx := ctxFor(t, time.Minute)
		check := func(what string, err error, want ...string) {
			t.Helper()
			e, ok := errors.AsType[*client.Error](err)
			if !errors.Is(err, client.ErrInvalidArgument) || !ok || e.Attempts > 1 {
				t.Errorf("%s: %v; want ErrInvalidArgument at the first attempt", what, err)
				return
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %q does not name %q", what, err, w)
				}
			}
		}
		_, err := cl.Put(ctx, nil, []byte("v"))
		check("put empty key", err, "key", "empty")
		_, err = cl.Get(ctx, bigKey)
		check("get key over 4 KiB", err, "4096")
		_, err = cl.Put(ctx, []byte("k"), bigValue)
		check("put value over 1 MiB", err, "1048576")
		_, err = cl.CompareAndSwap(ctx, []byte("k"), client.IfValue([]byte("a")), bigValue)
		check("cas new value over 1 MiB", err, "1048576")
		_, err = cl.CompareAndSwap(ctx, []byte("k"), client.Condition{}, []byte("v"))
		check("cas without condition", err, "condition")
	})

	t.Run("kvctl", func(t *testing.T) {
		ep := "--endpoints=" + strings.Join(c.endpoints(), ",")
		r := runKvctl(t, nil, ep, "put", "", "v")
		if r.code != 1 || !strings.Contains(r.stderr, "key is empty") {
			t.Errorf("kvctl put with an empty key: %v; want exit 1 naming the empty key", r)
		}
		r = runKvctl(t, bigValue, ep, "put", "k", "-")
		if r.code != 1 || !strings.Contains(r.stderr, "1048576") {
			t.Errorf("kvctl put of 1 MiB + 1 from stdin: %v; want exit 1 naming the 1048576-byte limit", r)
		}
		r = runKvctl(t, nil, ep, "get", string(bigKey))
		if r.code != 1 || !strings.Contains(r.stderr, "4096") {
			t.Errorf("kvctl get of a 4097-byte key: exit %d, stderr %q; want exit 1 naming the 4096-byte limit", r.code, r.stderr)
		}
		r = runKvctl(t, nil, ep, "get", "k", "--consistency", "sometimes")
		if r.code != 2 || !strings.Contains(r.stderr, "sometimes") {
			t.Errorf("kvctl get --consistency sometimes: %v; want usage error (exit 2) naming the value", r)
		}
		r = runKvctl(t, nil, ep, "cas", "k", "v")
		if r.code != 2 {
			t.Errorf("kvctl cas without an expectation: %v; want usage error (exit 2)", r)
		}
		r = runKvctl(t, nil, ep, "-o", "json", "put", "", "v")
		var doc map[string]any
		if r.code != 1 || decodeOne(r.stdout, &doc) != nil || doc["code"] != "invalid_argument" {
			t.Errorf("kvctl -o json put with an empty key: %v; want one JSON document with code invalid_argument", r)
		}
	})

	// Every node still serves.
	for i := range c.nodes {
		cl := c.pinnedClient(i)
		ctx := ctxFor(t, 30*time.Second)
		key := []byte("after-bad-input-" + c.nodes[i].name)
		if _, err := cl.Put(ctx, key, []byte("fine")); err != nil {
			t.Errorf("put through %s after bad input: %v", c.nodes[i].name, err)
			continue
		}
		if kv, err := cl.Get(ctx, key); err != nil || string(kv.Value) != "fine" {
			t.Errorf("get through %s after bad input: %q, %v", c.nodes[i].name, kv.Value, err)
		}
		if status, _ := c.getHTTP(i, "/healthz"); status != http.StatusOK {
			t.Errorf("%s /healthz after bad input: %d", c.nodes[i].name, status)
		}
	}
}

// postRaw POSTs body to a procedure of node i over plain HTTP/1.1 and
// returns the status and, for an error, the Connect error code and message.
func (c *cluster) postRaw(t *testing.T, i int, path, contentType string, body []byte) (status int, code, msg string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+c.nodes[i].clientAddr+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("POST %s to %s: %v", path, c.nodes[i].name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s to %s: reading the answer: %v", path, c.nodes[i].name, err)
	}
	var e struct{ Code, Message string }
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Errorf("POST %s: error body is not Connect's JSON error: %v: %q", path, err, b)
		}
	}
	return resp.StatusCode, e.Code, e.Message
}
