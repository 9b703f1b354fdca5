package integration

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/partition"
)

// TestClientReadsThroughEveryNode writes through each node in turn and reads
// strongly through every node, with Go clients that each talk to one node
// only: a strong read through any node must return the latest acknowledged
// write, whichever node took it. Eventual reads then converge on every node,
// and their receipts name the node that answered.
func TestClientReadsThroughEveryNode(t *testing.T) {
	c := newCluster(t, 3)
	ctx := ctxFor(t, 2*time.Minute)
	ring, err := partition.NewRing(16)
	if err != nil {
		t.Fatal(err)
	}
	// pinned[i] sends every request to node i, which must serve it or
	// forward it; single[i] has node i as its only endpoint but routes
	// writes and strong reads to leaders from its routing table.
	var pinned, single []*client.Client
	for i := range c.nodes {
		pinned = append(pinned, c.pinnedClient(i))
		single = append(single, c.newClient(nil, c.endpoints(i)...))
	}
	names := c.names()

	// Keys over several partitions, so that each node leads some of them.
	keys := make([][]byte, 8)
	for k := range keys {
		keys[k] = fmt.Appendf(nil, "rt-%d", k)
	}
	final := map[string][]byte{}
	for _, key := range keys {
		var lastVersion uint64
		for i := range c.nodes {
			for _, kind := range []string{"pinned", "single"} {
				writer := pinned[i]
				if kind == "single" {
					writer = single[i]
				}
				value := fmt.Appendf(nil, "%s by %s client of %s", key, kind, c.nodes[i].name)
				version, err := writer.Put(ctx, key, value)
				if err != nil {
					t.Fatalf("put %s through %s (%s): %v", key, c.nodes[i].name, kind, err)
				}
				if version <= lastVersion {
					t.Errorf("put %s through %s: version %d not above the previous write's %d", key, c.nodes[i].name, version, lastVersion)
				}
				lastVersion = version
				final[string(key)] = value
				for j := range c.nodes {
					for _, reader := range []*client.Client{pinned[j], single[j]} {
						kv, err := reader.Get(ctx, key)
						if err != nil {
							t.Fatalf("strong get %s through %s after a put through %s: %v", key, c.nodes[j].name, c.nodes[i].name, err)
						}
						if !bytes.Equal(kv.Value, value) || kv.Version != version {
							t.Fatalf("strong get %s through %s = %q@%d; want the write just acknowledged through %s, %q@%d",
								key, c.nodes[j].name, kv.Value, kv.Version, c.nodes[i].name, value, version)
						}
						r := kv.Receipt
						if !r.Leader || !slices.Contains(names, r.ServedBy) || r.AppliedIndex < version || r.Partition != uint32(ring.Of(key)) {
							t.Errorf("strong get %s through %s: receipt %+v; want served by a leader of partition %d that applied %d",
								key, c.nodes[j].name, r, ring.Of(key), version)
						}
					}
				}
			}
		}
	}

	// Every node hosts every partition, so an eventual read sent to node j
	// is served by node j, from its own state, which converges.
	for j := range c.nodes {
		for _, key := range keys {
			want := final[string(key)]
			var kv client.KV
			var err error
			ok := poll(10*time.Second, 50*time.Millisecond, func() bool {
				kv, err = pinned[j].Get(ctx, key, client.WithConsistency(client.Eventual))
				return err == nil && bytes.Equal(kv.Value, want)
			})
			if !ok {
				t.Errorf("eventual get %s on %s did not converge to %q within 10 s: last %q, %v", key, c.nodes[j].name, want, kv.Value, err)
				continue
			}
			if kv.Receipt.ServedBy != c.nodes[j].name || kv.Receipt.Partition != uint32(ring.Of(key)) || kv.Receipt.AppliedIndex < kv.Version {
				t.Errorf("eventual get %s through %s only: receipt %+v; want served by %s, partition %d, applied index >= version %d",
					key, c.nodes[j].name, kv.Receipt, c.nodes[j].name, ring.Of(key), kv.Version)
				_, m := c.getHTTP(j, "/metrics")
				for _, l := range strings.Split(m, "\n") {
					if strings.HasPrefix(l, "ringkv_forwarded") || strings.HasPrefix(l, "ringkv_requests_total") {
						t.Log(l)
					}
				}
				st, err := pinned[j].Status(ctx, c.nodes[j].clientAddr)
				t.Logf("status: %v %v", st, err)
			}
		}
	}
}
