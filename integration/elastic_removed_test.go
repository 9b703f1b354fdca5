package integration

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ringkv/ringkv/client"
)

// TestElasticRemovedWhileCutOff checks safety rule 4 of issue 3: a node
// removed from its partitions while it was cut off from the cluster serves
// no read for them, strong or eventual, once it has learned so.
//
// SIGSTOP cuts the node off the way a network partition does, but keeps
// what a partitioned node keeps: its replicas run on, in memory, believing
// they are voters (and maybe leaders) of their old configurations. While it
// is stopped the cluster removes it (`kvctl remove`), re-creates its
// replicas on the other three nodes and overwrites keys of its partitions.
// After SIGCONT, readers pinned to the node run until it has deleted its
// stale replicas and for a while after:
//   - a strong read through it returns the new value at any time: its old
//     replicas cannot confirm leadership with a quorum that removed them;
//   - once it has deleted its stale replicas, every eventual read through
//     it returns the new value and is answered by another node;
//   - it learns that it was removed (gossip's push/pull) and then hosts
//     nothing and says so in /readyz.
func TestElasticRemovedWhileCutOff(t *testing.T) {
	c := newFourNodes(t)
	cl := c.newClient(nil)
	acked := loadKeys(t, cl, "rm", 1000, 32)
	const victim = 2
	name := c.nodes[victim].name
	before, err := c.fetchLayout()
	if err != nil {
		t.Fatal(err)
	}
	stale := sampleMap(keysHostedBy(acked, before.hosts(name)), 100)
	if len(stale) == 0 {
		t.Fatalf("%s hosts no sampled key: layout %v", name, before.hosts(name))
	}

	p := c.nodes[victim]
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	p.paused = true
	resume := func() {
		if p.paused {
			p.paused = false
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume) // the harness's shutdown needs it running
	if !poll(30*time.Second, 200*time.Millisecond, func() bool { return c.deadToAll(name) }) {
		t.Fatalf("the other nodes do not all see the stopped %s dead within 30 s", name)
	}
	if r := c.kvctlAt(c.endpoints(c.runningNodes()...), "remove", name); r.code != 0 {
		t.Fatalf("kvctl remove %s: %v", name, r)
	}
	c.waitSettled(settleTimeout, []string{name}, nil)

	others := c.newClient(nil, c.endpoints(c.runningNodes()...)...)
	fresh := map[string][]byte{}
	for k := range stale {
		v := fmt.Appendf(nil, "%s=after-removal", k)
		if _, err := others.Put(ctxFor(t, trafficOpLimit), []byte(k), v); err != nil {
			t.Fatalf("put %s while %s is cut off: %v", k, name, err)
		}
		fresh[k] = v
	}

	// Readers pinned to the victim, from the moment it runs again.
	type read struct {
		start  time.Time
		strong bool
		key    string
		kv     client.KV
		err    error
	}
	var (
		mu    sync.Mutex
		reads []read
		wg    sync.WaitGroup
	)
	ctx, stop := context.WithCancel(t.Context())
	pinned := c.pinnedClient(victim)
	keys := make([]string, 0, len(fresh))
	for k := range fresh {
		keys = append(keys, k)
	}
	for w := range 4 {
		wg.Go(func() {
			for i := 0; i < 20000 && ctx.Err() == nil; i++ {
				k := keys[(i*4+w)%len(keys)]
				strong := w%2 == 0
				opts := []client.ReadOption{client.WithConsistency(client.Eventual)}
				if strong {
					opts = nil
				}
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				r := read{start: time.Now(), strong: strong, key: k}
				r.kv, r.err = pinned.Get(rctx, []byte(k), opts...)
				cancel()
				mu.Lock()
				reads = append(reads, r)
				mu.Unlock()
			}
		})
	}
	resumedAt := time.Now()
	resume()
	// It has learned of its removal from a partition once it has deleted
	// its replica of it; its reads are judged from the moment it had
	// deleted every stale copy.
	stalePids := before.hosts(name)
	var learnedAt time.Time
	if !poll(time.Minute, 100*time.Millisecond, func() bool {
		log := c.lastAttemptLog(p)
		for pid := range stalePids {
			if !strings.Contains(log, fmt.Sprintf(`msg="deleted replica" node=%s partition=%d `, name, pid)) {
				return false
			}
		}
		learnedAt = time.Now()
		return true
	}) {
		stop()
		wg.Wait()
		t.Fatalf("%s has not deleted its stale replicas of %v a minute after it resumed:\n%s",
			name, stalePids, grepLines(c.lastAttemptLog(p), "replica", 30))
	}
	// Keep reading for a while after it learned.
	mu.Lock()
	atLearn := len(reads)
	mu.Unlock()
	poll(20*time.Second, 100*time.Millisecond, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reads) >= atLearn+400
	})
	stop()
	wg.Wait()

	var staleBefore, after, failed int
	for _, r := range reads {
		if r.err != nil {
			// A failed read returns nothing; only a read of an old value
			// breaks the rule. Reads may fail while the victim resumes.
			failed++
			continue
		}
		current := bytes.Equal(r.kv.Value, fresh[r.key])
		switch {
		case r.strong && !current:
			t.Errorf("strong read of %s through %s started %v after it resumed returned %q (receipt %+v); want %q",
				r.key, name, r.start.Sub(resumedAt).Round(time.Millisecond), r.kv.Value, r.kv.Receipt, fresh[r.key])
		case r.start.After(learnedAt) && (!current || r.kv.Receipt.ServedBy == name):
			t.Errorf("eventual read of %s through %s started %v after it learned of its removal returned %q served by %s; want %q from another node",
				r.key, name, r.start.Sub(learnedAt).Round(time.Millisecond), r.kv.Value, r.kv.Receipt.ServedBy, fresh[r.key])
		case r.start.After(learnedAt):
			after++
		case !current:
			staleBefore++
		}
	}
	if after < 100 {
		t.Errorf("only %d reads through %s succeeded after it learned of its removal; want at least 100", after, name)
	}
	t.Logf("%s removed while stopped; it learned %v after SIGCONT (deleted its replicas). Reads through it: %d in all, %d failed, "+
		"%d eventual reads returned its stale copy before it learned, %d reads after it learned, all current and none served by it",
		name, learnedAt.Sub(resumedAt).Round(time.Millisecond), len(reads), failed, staleBefore, after)

	// The removal itself reaches it through gossip's push/pull syncs: it
	// then hosts nothing (no empty replica waiting to be added) and says
	// why it is not ready.
	var why string
	if !poll(time.Minute, 250*time.Millisecond, func() bool {
		st, err := c.status(victim)
		code, body := c.getHTTP(victim, "/readyz")
		why = fmt.Sprintf("status %v (replicas hosted %d), /readyz %d %q", err, st.GetReplicasHosted(), code, body)
		return err == nil && st.GetReplicasHosted() == 0 && code == 503 && strings.Contains(body, "declared removed")
	}) {
		t.Errorf("%s does not know it was removed a minute after it resumed: %s", name, why)
	} else {
		t.Logf("%s knows it was removed %v after SIGCONT: %s", name, time.Since(resumedAt).Round(time.Millisecond), why)
	}
}
