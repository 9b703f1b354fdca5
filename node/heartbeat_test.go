package node

import (
	"io"
	"strings"
	"testing"
	"time"
)

// Every replica's heartbeats and empty appends travel over the node's shared
// heartbeat channel, several partitions to a frame, and /metrics says so.
func TestHeartbeatsShareFrames(t *testing.T) {
	c := startCluster(t, 3)
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
	resp, err := testHTTP.Get("http://" + c.nodes[0].ClientAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ringkv_raft_coalesced_sent_total", "ringkv_raft_coalesced_frames_total", "ringkv_raft_coalesced_answered_total"} {
		if !strings.Contains(string(body), "\n"+name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}
