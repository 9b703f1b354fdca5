package node

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
)

// testCluster is n in-process nodes on loopback with real Pebble, TCP and gossip.
type testCluster struct {
	t     *testing.T
	nodes []*Node
	cfgs  []Config
}

func startCluster(t *testing.T, size int, mods ...func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	var first string
	for i := range size {
		cfg := TestConfig(fmt.Sprintf("n%d", i+1), t.TempDir())
		cfg.Logger = slog.New(slog.DiscardHandler)
		cfg.BootstrapExpect = size
		for _, mod := range mods {
			mod(&cfg)
		}
		if first != "" {
			cfg.Join = []string{first}
		} else {
			cfg.Join = []string{"127.0.0.1:1"} // validated, never reached before others join us
		}
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopWithin(t, n, time.Minute) })
		if first == "" {
			first = n.gossip.Local().Addr
		}
		c.nodes = append(c.nodes, n)
		c.cfgs = append(c.cfgs, cfg)
	}
	c.waitReady()
	return c
}

func (c *testCluster) waitReady() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.nodes {
		for n.ready() != nil {
			if time.Now().After(deadline) {
				c.t.Fatalf("%s not ready: %v", n.Name(), n.ready())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// testHTTP bounds every test RPC, so a request that never ends fails the test
// with its name instead of hanging the package.
var testHTTP = &http.Client{Timeout: 30 * time.Second}

func kvClient(n *Node) ringkvv1connect.KVClient {
	return ringkvv1connect.NewKVClient(testHTTP, "http://"+n.ClientAddr())
}

func TestClusterServesFromEveryNode(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	for i, n := range c.nodes {
		key := []byte(fmt.Sprintf("key-%d", i))
		val := []byte(fmt.Sprintf("value-%d", i))
		put, err := kvClient(n).Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Key: key, Value: val,
			RequestId: &ringkvv1.RequestID{ClientId: 9, Seq: uint64(i + 1)}}))
		if err != nil {
			t.Fatalf("put via %s: %v", n.Name(), err)
		}
		for _, m := range c.nodes {
			got, err := kvClient(m).Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: key}))
			if err != nil {
				t.Fatalf("strong get via %s: %v", m.Name(), err)
			}
			if string(got.Msg.Value) != string(val) || got.Msg.Version != put.Msg.Version || !got.Msg.Receipt.Leader {
				t.Fatalf("strong get via %s = %+v, want %q version %d from the leader", m.Name(), got.Msg, val, put.Msg.Version)
			}
		}
	}
	_, err := kvClient(c.nodes[1]).Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: []byte("missing")}))
	if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "key not found") {
		t.Fatalf("missing key: %v", err)
	}
}

func TestBadInputIsInvalidArgument(t *testing.T) {
	c := startCluster(t, 1)
	ctx := context.Background()
	t.Run("connect", func(t *testing.T) { badInputCases(t, c, kvClient(c.nodes[0])) })
	t.Run("native", func(t *testing.T) { badInputCases(t, c, nativeKVClient(t, c.nodes[0])) })
	// Malformed JSON on the wire is a 400, and the node keeps serving.
	resp, err := http.Post("http://"+c.nodes[0].ClientAddr()+"/ringkv.v1.KV/Put", "application/json", strings.NewReader(`{"key":`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed JSON: HTTP %d %s", resp.StatusCode, body)
	}
	if _, err := kvClient(c.nodes[0]).Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Key: []byte("k"), Value: []byte("v")})); err != nil {
		t.Fatalf("node stopped serving after bad input: %v", err)
	}
}

// badInputCases checks that each rule broken gets invalid_argument with a
// message naming it, whichever protocol kv speaks.
func badInputCases(t *testing.T, c *testCluster, kv ringkvv1connect.KVClient) {
	ctx := context.Background()
	big := make([]byte, c.cfgs[0].MaxValueSize+1)
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"empty key", func() error {
			_, err := kv.Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Value: []byte("v")}))
			return err
		}, "key is empty"},
		{"key too long", func() error {
			_, err := kv.Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: make([]byte, 4097)}))
			return err
		}, "the limit is 4096 bytes"},
		{"value too long", func() error {
			_, err := kv.Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Key: []byte("k"), Value: big}))
			return err
		}, fmt.Sprintf("the limit is %d bytes", len(big)-1)},
		{"unknown consistency", func() error {
			_, err := kv.Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: []byte("k"), Consistency: "sometimes"}))
			return err
		}, `unknown consistency "sometimes"`},
		{"cas without expectation", func() error {
			_, err := kv.CompareAndSwap(ctx, connect.NewRequest(&ringkvv1.CompareAndSwapRequest{Key: []byte("k")}))
			return err
		}, "needs one of"},
		{"zero request id", func() error {
			_, err := kv.Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Key: []byte("k"), RequestId: &ringkvv1.RequestID{}}))
			return err
		}, "non-zero client_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want invalid_argument containing %q", err, tc.want)
			}
		})
	}
}

func TestDataDirRefusesOtherIdentity(t *testing.T) {
	dir := t.TempDir()
	cfg := TestConfig("n1", dir)
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.BootstrapExpect = 1
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Stop()
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"other name", func(c *Config) { c.Name = "n2" }, `belongs to node "n1"`},
		{"other partition count", func(c *Config) { c.Partitions = 32 }, "restart with --partitions 8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.mod(&c)
			n, err := New(c)
			if err == nil {
				n.Stop()
				t.Fatal("started with a contradicting data dir")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestGossipRefusesOtherPartitionCount(t *testing.T) {
	c := startCluster(t, 1)
	cfg := TestConfig("stranger", t.TempDir())
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Partitions = 4
	cfg.Join = []string{c.nodes[0].gossip.Local().Addr}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	_, err = n.gossip.Join(cfg.Join)
	if err == nil || !strings.Contains(err.Error(), "partition") {
		t.Fatalf("join with another partition count: %v", err)
	}
	for _, m := range c.nodes[0].gossip.Members() {
		if m.Meta.Name == "stranger" {
			t.Fatal("cluster admitted a node with another partition count")
		}
	}
}

func TestConfigValidate(t *testing.T) {
	base := TestConfig("n1", "/tmp/x")
	base.BootstrapExpect = 1
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"valid", func(*Config) {}, ""},
		{"no name", func(c *Config) { c.Name = "" }, "--name"},
		{"bad client addr", func(c *Config) { c.ClientAddr = "nope" }, "--client-addr"},
		{"zero partitions", func(c *Config) { c.Partitions = 0 }, "--partitions 0"},
		{"too many replicas", func(c *Config) { c.Replicas = 9 }, "--replicas 9"},
		{"neither bootstrap nor join", func(c *Config) { c.BootstrapExpect = 0 }, "--join"},
		{"key limit too large", func(c *Config) { c.MaxKeySize = 1 << 20 }, "--max-key-size"},
		{"linger near the lease", func(c *Config) { c.HeartbeatLinger = c.LeaderLeaseTimeout / 4 }, "--raft-heartbeat-linger"},
		{"negative linger", func(c *Config) { c.HeartbeatLinger = -time.Millisecond }, "--raft-heartbeat-linger"},
		{"negative WAL sync delay", func(c *Config) { c.WALBusySyncDelay = -time.Millisecond }, "--wal-busy-sync-delay"},
		{"WAL sync delay too long", func(c *Config) { c.WALBusySyncDelay = time.Second }, "--wal-busy-sync-delay"},
		{"quiesce timeout under twice the heartbeat timeout", func(c *Config) { c.QuiesceTimeout = c.HeartbeatTimeout }, "--raft-quiesce-timeout"},
		{"negative quiesce timeout", func(c *Config) { c.QuiesceTimeout = -time.Second }, "--raft-quiesce-timeout"},
		{"quiescence off", func(c *Config) { c.QuiesceTimeout = 0 }, ""},
		{"snapshot threshold too low", func(c *Config) { c.SnapshotThreshold = 10 }, "--raft-snapshot-threshold 10: must be at least 128"},
		{"trailing logs too few", func(c *Config) { c.TrailingLogs = 0 }, "--raft-trailing-logs 0: must be at least 64"},
		{"snapshot checks too often", func(c *Config) { c.SnapshotInterval = time.Millisecond }, "--raft-snapshot-interval 1ms: must be at least 1s"},
		{"negative WAL fill", func(c *Config) { c.WALFillAheadMiB = -1 }, "--wal-fill-ahead-mib -1: must be between 0 (off) and 1024"},
		{"WAL fill too far ahead", func(c *Config) { c.WALFillAheadMiB = 4096 }, "--wal-fill-ahead-mib 4096"},
		{"WAL fill off", func(c *Config) { c.WALFillAheadMiB = 0 }, ""},
		{"negative WAL write buffer", func(c *Config) { c.WALWriteBufferKiB = -1 }, "--wal-write-buffer-kib -1: must be between 0 (off) and 16384"},
		{"WAL write buffer too large", func(c *Config) { c.WALWriteBufferKiB = 1 << 20 }, "--wal-write-buffer-kib 1048576"},
		{"WAL write buffer off", func(c *Config) { c.WALWriteBufferKiB = 0 }, ""},
		{"negative apply flush delay", func(c *Config) { c.ApplyFlushDelay = -time.Millisecond }, "--apply-flush-delay -1ms: must be between 0 (write every apply through) and 1s"},
		{"apply flush delay too long", func(c *Config) { c.ApplyFlushDelay = 2 * time.Second }, "--apply-flush-delay 2s"},
		{"apply writes through", func(c *Config) { c.ApplyFlushDelay = 0 }, ""},
		{"prompt truncation", func(c *Config) { c.SnapshotThreshold, c.TrailingLogs, c.SnapshotInterval = 1024, 512, 5*time.Second }, ""},
		{"default linger with the default lease", func(c *Config) {
			d := DefaultConfig()
			c.HeartbeatLinger, c.LeaderLeaseTimeout, c.HeartbeatTimeout = d.HeartbeatLinger, d.LeaderLeaseTimeout, d.HeartbeatTimeout
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := ParseFlags([]string{"--name", "a", "--bootstrap-expect", "3", "--join", "h1:1, h2:2", "--partitions", "16",
		"--raft-snapshot-threshold", "2048", "--raft-trailing-logs", "1024", "--raft-snapshot-interval", "5s",
		"--wal-fill-ahead-mib", "16", "--apply-flush-delay", "20ms", "--wal-write-buffer-kib", "64"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "a" || cfg.BootstrapExpect != 3 || cfg.Partitions != 16 || len(cfg.Join) != 2 || cfg.Join[1] != "h2:2" ||
		cfg.SnapshotThreshold != 2048 || cfg.TrailingLogs != 1024 || cfg.SnapshotInterval != 5*time.Second ||
		cfg.WALFillAheadMiB != 16 || cfg.ApplyFlushDelay != 20*time.Millisecond || cfg.WALWriteBufferKiB != 64 {
		t.Fatalf("parsed %+v", cfg)
	}
	for _, args := range [][]string{
		{"--name", "a", "--bootstrap-expect", "1", "--log-level", "loud"},
		{"--name", "a", "--bootstrap-expect", "1", "extra"},
		{"--name", "a"},
		{"--name", "a", "--bootstrap-expect", "1", "--raft-trailing-logs", "-1"},
	} {
		if _, err := ParseFlags(args, io.Discard, io.Discard); err == nil {
			t.Errorf("ParseFlags(%q) accepted", args)
		}
	}
	var usage strings.Builder
	if _, err := ParseFlags([]string{"--help"}, io.Discard, &usage); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
	for _, want := range []string{"-wal-busy-sync-delay", "GOGC", fmt.Sprintf("kvd uses %d", DefaultGOGC), "GOMEMLIMIT"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("--help does not mention %q:\n%s", want, usage.String())
		}
	}
}
