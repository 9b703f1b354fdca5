package node

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
)

// Every replica's heartbeats and empty appends travel over the node's shared
// heartbeat channel, several partitions to a frame, and /metrics says so.
// Quiet groups are off: they would send a heartbeat every second or so.
func TestHeartbeatsShareFrames(t *testing.T) {
	c := startCluster(t, 3, func(c *Config) { c.QuiesceTimeout = 0 })
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range c.nodes {
		for {
			s := n.heartbeats.Stats()
			// 8 partitions, 3 nodes: every node leads some and follows the rest.
			if s.Sent > 100 && s.Answered > 100 && s.Frames > 0 && s.Frames < s.Sent {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: heartbeat channel stats %+v; want >100 sent and answered, fewer frames than requests", n.Name(), s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	body := metricsOf(t, c.nodes[0])
	for _, name := range []string{"ringkv_raft_coalesced_sent_total", "ringkv_raft_coalesced_frames_total", "ringkv_raft_coalesced_answered_total"} {
		if !strings.Contains(string(body), "\n"+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// metricsOf returns n's /metrics page.
func metricsOf(t *testing.T, n *Node) []byte {
	t.Helper()
	resp, err := testHTTP.Get("http://" + n.ClientAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// quietReplicas reads ringkv_partitions_quiet from n's /metrics.
func quietReplicas(t *testing.T, n *Node) int {
	t.Helper()
	body := metricsOf(t, n)
	m := regexp.MustCompile(`(?m)^ringkv_partitions_quiet (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("%s: /metrics lacks ringkv_partitions_quiet", n.Name())
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatalf("%s: ringkv_partitions_quiet %q: %v", n.Name(), m[1], err)
	}
	return int(v)
}

// An idle cluster's groups go quiet: every follower replica reports it in
// /metrics. A write then reaches every replica's copy (an eventual read on
// each node finds it), though the followers had stopped getting
// commit-index refreshes while quiet.
func TestIdlePartitionsGoQuiet(t *testing.T) {
	c := startCluster(t, 3)
	followers := func() int { // replicas that do not lead: 8 partitions x 3 replicas - 8 leaders
		n := 0
		for _, nd := range c.nodes {
			for _, r := range nd.localReplicas() {
				if !r.IsLeader() {
					n++
				}
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		quiet := 0
		for _, n := range c.nodes {
			quiet += quietReplicas(t, n)
		}
		if f := followers(); quiet == f && f == 16 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d follower replicas quiet after 30 s of an idle cluster; want all 16", quiet, followers())
		}
		time.Sleep(100 * time.Millisecond)
	}

	ctx := context.Background()
	key, val := []byte("after-quiet"), []byte("v")
	if _, err := kvClient(c.nodes[0]).Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Key: key, Value: val})); err != nil {
		t.Fatalf("put to a quiet partition: %v", err)
	}
	for _, n := range c.nodes {
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := kvClient(n).Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: key,
				Consistency: "eventual"}))
			if err == nil && string(got.Msg.Value) == string(val) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("eventual get via %s after a write to a quiet partition: %v", n.Name(), fmt.Sprint(got, err))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
