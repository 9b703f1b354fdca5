package jepsen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/jepsen/cluster"
	"github.com/ringkv/ringkv/jepsen/history"
	"github.com/ringkv/ringkv/jepsen/workload"
)

// finalPhase runs after the final heal: a write to every partition, a strong
// read of every key, then eventual reads of every key from every replica
// until they all match the strong read or the limit passes. The writes and
// strong reads go into the history as operations of the final client.
func (r *run) finalPhase(ctx context.Context, c *cluster.Cluster, ks *workload.Keyspace, keys []string) (*history.Final, error) {
	f := &history.Final{FinalClient: r.finalClient, Partitions: ks.Partitions(), PartitionKeys: map[int]string{},
		Replicas: map[int][]string{}, ConvergeLimit: r.cfg.ConvergeLimit.Seconds()}
	cc := r.clientConfig(c)
	cl, err := client.New(cc)
	if err != nil {
		return f, err
	}
	defer cl.Close()

	for p := range ks.Partitions() {
		key := ks.Key("w/", p, 0)
		f.PartitionKeys[p] = key
		keys = append(keys, key)
		op := r.rec.Begin(r.finalClient, key, history.KindPut)
		op.Partition, op.Value = p, fmt.Sprintf("final-%d", p)
		octx, cancel := context.WithTimeout(ctx, 15*time.Second)
		ver, err := cl.Put(octx, []byte(key), []byte(op.Value))
		cancel()
		op.Version = ver
		r.rec.End(op, history.Classify(op.Kind, err), err)
	}

	final := map[string]*history.Op{}
	var mu sync.Mutex
	parallel(8, keys, func(key string) {
		op := r.rec.Begin(r.finalClient, key, history.KindGet)
		op.Partition = ks.Of(key)
		octx, cancel := context.WithTimeout(ctx, 15*time.Second)
		kv, err := cl.Get(octx, []byte(key))
		cancel()
		if err == nil {
			op.Found, op.Out, op.Version = true, string(kv.Value), kv.Version
			op.ServedBy, op.Leader, op.Applied = kv.Receipt.ServedBy, kv.Receipt.Leader, kv.Receipt.AppliedIndex
		}
		if errors.Is(err, client.ErrNotFound) {
			err = nil
		}
		r.rec.End(op, history.Classify(op.Kind, err), err)
		mu.Lock()
		final[key] = op
		mu.Unlock()
	})

	if err := r.replicaSets(ctx, cl, f); err != nil {
		return f, err
	}
	f.Reads, f.Converged, f.ConvergedAfter = r.converge(ctx, c, ks, final, f.Replicas)
	return f, nil
}

// replicaSets asks the cluster which nodes replicate each partition and
// keeps the answer in f.Replicas (what the convergence check reads) and
// f.Table.
func (r *run) replicaSets(ctx context.Context, cl *client.Client, f *history.Final) error {
	table, err := partitionTable(ctx, cl)
	if err != nil {
		return err
	}
	f.Table = table
	for _, row := range table {
		// Voters only: a nonvoter still catching up serves no eventual
		// reads (the node forwards them), so it cannot be asked.
		f.Replicas[row.ID] = row.Replicas
		if len(row.Voters) > 0 {
			f.Replicas[row.ID] = row.Voters
		}
	}
	return nil
}

// partitionTable fetches the partition table, retrying for up to 30 s.
func partitionTable(ctx context.Context, cl *client.Client) ([]history.PartitionState, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cl.Partitions(pctx)
		cancel()
		if err == nil {
			var out []history.PartitionState
			for _, p := range resp.GetPartitions() {
				row := history.PartitionState{ID: int(p.GetId()), Leader: p.GetLeader(), Replicas: p.GetReplicas(), Term: p.GetTerm(), Applied: p.GetAppliedIndex()}
				for _, d := range p.GetReplicaDetails() {
					if d.GetSuffrage() == "voter" {
						row.Voters = append(row.Voters, d.GetNode())
					} else {
						row.NonVoters = append(row.NonVoters, d.GetNode())
					}
				}
				out = append(out, row)
			}
			return out, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("jepsen: partition table: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// converge polls eventual reads from every replica of every key until each
// matches the key's final strong read, or the limit passes. It returns the
// last read of each (key, replica).
func (r *run) converge(ctx context.Context, c *cluster.Cluster, ks *workload.Keyspace, final map[string]*history.Op, replicas map[int][]string) ([]history.ReplicaRead, bool, float64) {
	clients := map[string]*client.Client{}
	for _, n := range c.Started() {
		cc := r.clientConfig(c)
		cc.Endpoints, cc.MaxAttempts = []string{n.ClientAddr()}, 2
		cl, err := client.New(cc)
		if err != nil {
			continue
		}
		defer cl.Close()
		clients[n.Name] = cl
	}
	type slot struct{ key, node string }
	last := map[slot]history.ReplicaRead{}
	var pending []slot
	for key, op := range final {
		if op.Outcome != history.OutcomeOK {
			continue // the checker reports the failed read
		}
		for _, node := range replicas[ks.Of(key)] {
			pending = append(pending, slot{key, node})
		}
	}
	start := time.Now()
	deadline := start.Add(r.cfg.ConvergeLimit)
	var mu sync.Mutex
	for len(pending) > 0 && ctx.Err() == nil {
		var still []slot
		parallel(8, pending, func(s slot) {
			rr := history.ReplicaRead{Key: s.key, Partition: ks.Of(s.key), Node: s.node}
			cl := clients[s.node]
			if cl == nil {
				rr.Err = "no client for node"
			} else {
				octx, cancel := context.WithTimeout(ctx, 5*time.Second)
				kv, err := cl.Get(octx, []byte(s.key), client.WithConsistency(client.Eventual))
				cancel()
				switch {
				case err == nil:
					rr.Found, rr.Value, rr.Version, rr.ServedBy = true, string(kv.Value), kv.Version, kv.Receipt.ServedBy
				case errors.Is(err, client.ErrNotFound):
					rr.ServedBy = s.node // a miss carries no receipt
				default:
					rr.Err = err.Error()
				}
			}
			fo := final[s.key]
			ok := rr.Err == "" && rr.ServedBy == s.node && rr.Found == fo.Found && rr.Value == fo.Out && (!fo.Found || rr.Version == fo.Version)
			mu.Lock()
			last[s] = rr
			if !ok {
				still = append(still, s)
			}
			mu.Unlock()
		})
		pending = still
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	out := make([]history.ReplicaRead, 0, len(last))
	for _, rr := range last {
		out = append(out, rr)
	}
	return out, len(pending) == 0, time.Since(start).Seconds()
}

// parallel runs fn on every item with n goroutines.
func parallel[T any](n int, items []T, fn func(T)) {
	ch := make(chan T)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for it := range ch {
				fn(it)
			}
		})
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
}
