package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/partition"
)

// The snapshot flags reach every partition's Raft: with a threshold of 128
// entries checked every 1-2 s and 64 trailing entries, a partition that took
// 400 writes snapshots and truncates its log within seconds. With the
// defaults (16,384 entries, checked every 60-120 s) it would keep it all.
func TestSnapshotFlagsTruncateTheLog(t *testing.T) {
	c := startCluster(t, 1, func(cfg *Config) {
		cfg.SnapshotThreshold, cfg.TrailingLogs, cfg.SnapshotInterval = 128, 64, time.Second
	})
	n := c.nodes[0]
	ring, err := partition.NewRing(c.cfgs[0].Partitions)
	if err != nil {
		t.Fatal(err)
	}
	pid := ring.Of([]byte("t-0"))
	kv := kvClient(n)
	ctx := context.Background()
	var keys []string
	for i := 0; len(keys) < 400; i++ {
		k := fmt.Sprintf("t-%d", i)
		if ring.Of([]byte(k)) != pid {
			continue
		}
		if _, err := kv.Put(ctx, connect.NewRequest(&ringkvv1.PutRequest{Key: []byte(k), Value: []byte(k),
			RequestId: &ringkvv1.RequestID{ClientId: 7, Seq: uint64(i + 1)}})); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		keys = append(keys, k)
	}
	log := n.store.Log(uint32(pid))
	waitFor(t, 20*time.Second, "the partition's Raft log truncated after a snapshot", func() bool {
		first, err := log.FirstIndex()
		return err == nil && first > 64
	})
	first, _ := log.FirstIndex()
	last, _ := log.LastIndex()
	if last-first+1 < 64 {
		t.Fatalf("the log keeps entries %d-%d: fewer than the 64 trailing entries asked for", first, last)
	}
	for _, k := range []string{keys[0], keys[len(keys)-1]} {
		got, err := kv.Get(ctx, connect.NewRequest(&ringkvv1.GetRequest{Key: []byte(k)}))
		if err != nil || string(got.Msg.Value) != k {
			t.Fatalf("get %s after truncation: %v %v", k, got, err)
		}
	}
}
