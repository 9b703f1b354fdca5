package integration

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ringkv/ringkv/client"
)

// workload is one sequential writer-reader: put a key, then read it back
// strongly, over and over, timing every operation. One writer per key set
// makes the latest acknowledged write the only value a strong read may
// return.
type workload struct {
	prefix string
	cl     *client.Client
	stopCh chan struct{}
	done   chan struct{}

	mu         sync.Mutex
	ops        int
	lastOK     time.Time
	maxGap     time.Duration // longest time between two successful operations
	maxLatency time.Duration // longest single operation (client retries included)
	errs       []error
	acked      map[string]ackedWrite // key -> its latest acknowledged write
}

type ackedWrite struct {
	value []byte
	at    time.Time
}

const (
	workloadKeys    = 48               // spread over all 16 partitions
	workloadOpLimit = 15 * time.Second // bound of one operation
	workloadMaxOps  = 200000
	workloadMaxTime = 3 * time.Minute
)

// startWorkload runs a workload until stop is called.
func startWorkload(t *testing.T, cl *client.Client, prefix string) *workload {
	t.Helper()
	w := &workload{prefix: prefix, cl: cl, stopCh: make(chan struct{}), done: make(chan struct{}),
		lastOK: time.Now(), acked: map[string]ackedWrite{}}
	go w.run(t.Context())
	t.Cleanup(w.stop)
	return w
}

func (w *workload) run(ctx context.Context) {
	defer close(w.done)
	end := time.Now().Add(workloadMaxTime)
	for i := range workloadMaxOps {
		select {
		case <-w.stopCh:
			return
		default:
		}
		if time.Now().After(end) {
			return
		}
		key := fmt.Appendf(nil, "%s-%02d", w.prefix, i%workloadKeys)
		value := fmt.Appendf(nil, "%s-v%d", w.prefix, i)
		err := w.op(ctx, func(ctx context.Context) error {
			_, err := w.cl.Put(ctx, key, value)
			return err
		})
		if err != nil {
			w.fail(fmt.Errorf("put %s: %w", key, err))
			continue
		}
		w.mu.Lock()
		w.acked[string(key)] = ackedWrite{value: value, at: time.Now()}
		w.mu.Unlock()
		err = w.op(ctx, func(ctx context.Context) error {
			kv, err := w.cl.Get(ctx, key)
			if err == nil && !bytes.Equal(kv.Value, value) {
				return fmt.Errorf("strong read returned %q, want the acknowledged %q (receipt %+v)", kv.Value, value, kv.Receipt)
			}
			return err
		})
		if err != nil {
			w.fail(fmt.Errorf("get %s: %w", key, err))
		}
	}
}

// op runs one operation bounded by workloadOpLimit and records its timing.
func (w *workload) op(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, workloadOpLimit)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.maxLatency = max(w.maxLatency, now.Sub(start))
	if err == nil {
		w.ops++
		w.maxGap = max(w.maxGap, now.Sub(w.lastOK))
		w.lastOK = now
	}
	return err
}

func (w *workload) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

// count returns how many operations have succeeded.
func (w *workload) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ops
}

// waitOps waits until n operations have succeeded.
func (w *workload) waitOps(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	if !poll(timeout, 50*time.Millisecond, func() bool { return w.count() >= n }) {
		t.Fatalf("workload: %d operations succeeded within %v, want %d; errors: %v", w.count(), timeout, n, w.errors())
	}
}

// stop ends the workload and waits for its operation in flight.
func (w *workload) stop() {
	select {
	case <-w.stopCh:
	default:
		close(w.stopCh)
	}
	<-w.done
}

func (w *workload) errors() []error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]error(nil), w.errs...)
}

// latest returns every key's latest acknowledged value.
func (w *workload) latest() map[string]ackedWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]ackedWrite, len(w.acked))
	for k, v := range w.acked {
		out[k] = v
	}
	return out
}
