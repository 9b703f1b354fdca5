package node

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/ringkv/ringkv/api/batch"
	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
)

// A Batch call is served operation by operation, as single calls would be:
// routed and forwarded to each partition's leader, validated and
// deduplicated, each with its own result or error, and counted under its own
// procedure.
func TestBatchServesEachOperation(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	kv := kvClient(c.nodes[1])
	const keys = 24 // over 64 partitions: most are led by another node
	key := func(i int) []byte { return fmt.Appendf(nil, "batch-%02d", i) }

	var ops []*ringkvv1.BatchOp
	for i := range keys {
		ops = append(ops, &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Put{Put: &ringkvv1.PutRequest{
			Key: key(i), Value: fmt.Appendf(nil, "v%d", i), RequestId: &ringkvv1.RequestID{ClientId: 7, Seq: uint64(i + 1)},
		}}})
	}
	// The same request id twice: applied once, both answered alike.
	dup := &ringkvv1.PutRequest{Key: []byte("dup"), Value: []byte("d"), RequestId: &ringkvv1.RequestID{ClientId: 7, Seq: 1000}}
	ops = append(ops,
		&ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Put{Put: dup}},
		&ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Put{Put: dup}},
		&ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Put{Put: &ringkvv1.PutRequest{Value: []byte("no key")}}},
		&ringkvv1.BatchOp{},
		&ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_CompareAndSwap{CompareAndSwap: &ringkvv1.CompareAndSwapRequest{
			Key: []byte("created"), NewValue: []byte("c"), Expect: &ringkvv1.CompareAndSwapRequest_ExpectAbsent{ExpectAbsent: true},
		}}},
		&ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Delete{Delete: &ringkvv1.DeleteRequest{Key: []byte("never-written")}}, TimeoutMs: 5000},
	)
	resp, err := kv.Batch(ctx, connect.NewRequest(&ringkvv1.BatchRequest{Ops: ops}))
	if err != nil {
		t.Fatalf("batch of writes: %v", err)
	}
	res := resp.Msg.Results
	if len(res) != len(ops) {
		t.Fatalf("%d results for %d operations", len(res), len(ops))
	}
	versions := make([]uint64, keys)
	for i := range keys {
		if res[i].GetPut() == nil || res[i].GetPut().Version == 0 {
			t.Fatalf("put %d: %v", i, res[i])
		}
		versions[i] = res[i].GetPut().Version
	}
	if a, b := res[keys].GetPut(), res[keys+1].GetPut(); a == nil || b == nil || a.Version != b.Version {
		t.Errorf("duplicate request id answered %v and %v; want one write, the same version twice", res[keys], res[keys+1])
	}
	for _, bad := range []struct {
		i    int
		want string
	}{{keys + 2, "key is empty"}, {keys + 3, "operation 27 names no operation"}} {
		err := batch.Error(res[bad.i])
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("operation %d: %v; want invalid_argument %q", bad.i, err, bad.want)
		}
	}
	if cas := res[keys+4].GetCompareAndSwap(); cas == nil || !cas.Succeeded {
		t.Errorf("create-if-absent: %v", res[keys+4])
	}
	if del := res[keys+5].GetDelete(); del == nil || del.Deleted {
		t.Errorf("delete of a missing key: %v; want deleted=false", res[keys+5])
	}

	// Reads, strong and eventual, and a miss, through another node.
	ops = ops[:0]
	for i := range keys {
		ops = append(ops, &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Get{Get: &ringkvv1.GetRequest{Key: key(i)}}})
	}
	ops = append(ops,
		&ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Get{Get: &ringkvv1.GetRequest{Key: []byte("created"), Consistency: "eventual"}}},
		&ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Get{Get: &ringkvv1.GetRequest{Key: []byte("never-written")}}},
	)
	resp, err = kvClient(c.nodes[2]).Batch(ctx, connect.NewRequest(&ringkvv1.BatchRequest{Ops: ops}))
	if err != nil {
		t.Fatalf("batch of reads: %v", err)
	}
	res = resp.Msg.Results
	for i := range keys {
		g := res[i].GetGet()
		if g == nil || string(g.Value) != fmt.Sprintf("v%d", i) || g.Version != versions[i] || !g.Receipt.GetLeader() {
			t.Fatalf("strong get %d = %v; want v%d at version %d from the leader", i, res[i], i, versions[i])
		}
	}
	// An eventual read may trail the write by a commit tick; it must not
	// fail any other way.
	if g := res[keys].GetGet(); g == nil && connect.CodeOf(batch.Error(res[keys])) != connect.CodeNotFound {
		t.Errorf("eventual get: %v", res[keys])
	}
	if err := batch.Error(res[keys+1]); connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "key not found") {
		t.Errorf("get of a missing key: %v; want not_found", err)
	}

	// Too many operations: the call fails whole, naming the limit.
	big := make([]*ringkvv1.BatchOp, batch.MaxOps+1)
	for i := range big {
		big[i] = &ringkvv1.BatchOp{Op: &ringkvv1.BatchOp_Get{Get: &ringkvv1.GetRequest{Key: []byte("k")}}}
	}
	_, err = kv.Batch(ctx, connect.NewRequest(&ringkvv1.BatchRequest{Ops: big}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "the limit is 1024") {
		t.Errorf("oversized batch: %v; want invalid_argument naming the limit", err)
	}

	// Every operation is counted under its own procedure.
	hr, err := testHTTP.Get("http://" + c.nodes[1].ClientAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	for _, want := range []string{
		`ringkv_requests_total{code="ok",procedure="/ringkv.v1.KV/Batch"} 1`,
		fmt.Sprintf(`ringkv_requests_total{code="ok",procedure="/ringkv.v1.KV/Put"} %d`, keys+2),
		`ringkv_requests_total{code="invalid_argument",procedure="/ringkv.v1.KV/Put"} 1`,
		`ringkv_requests_total{code="invalid_argument",procedure="/ringkv.v1.KV/Batch"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
