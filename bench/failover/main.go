// Command failover measures how long writes to a partition stop when the
// node leading it is killed (issue 5: "writes resume within 2 s after the
// leader of a partition is killed").
//
// It runs one writer per partition (keys chosen to land in that partition),
// each a closed loop of puts through the Go client, kills the node that
// leads the most partitions with SIGKILL, and reports for every partition
// the victim led the time from the kill to the first acknowledged write
// started after it (and, for the other partitions, the longest gap between
// acknowledgements). With --idle-before-kill the writers stop after the
// warm-up and start again at the kill, so the kill finds every group idle
// (quiet, with Raft's quiescence on): the case where the followers have
// not heard from their leader for a while already. bench/failover.sh starts the cluster and passes the
// node PIDs; `make failover` runs it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ringkv/ringkv/client"
	"github.com/ringkv/ringkv/partition"
)

type result struct {
	Victim          string    `json:"victim"`
	LedPartitions   int       `json:"led_partitions"`
	ResumeMs        []float64 `json:"resume_ms"` // per partition the victim led, sorted
	ResumeP50Ms     float64   `json:"resume_p50_ms"`
	ResumeMaxMs     float64   `json:"resume_max_ms"`
	OtherMaxGapMs   float64   `json:"other_max_gap_ms"`
	Writes          int       `json:"writes"`
	FailedAttempts  int       `json:"failed_attempts"`
	UnresumedBefore string    `json:"unresumed,omitempty"`
}

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated client addresses of the nodes")
	pids := flag.String("pids", "", "node=pid,... of the running kvd processes")
	partitions := flag.Int("partitions", 64, "the cluster's partition count")
	warmup := flag.Duration("warmup", 3*time.Second, "writing before the kill")
	after := flag.Duration("after", 15*time.Second, "writing after the kill")
	opTimeout := flag.Duration("op-timeout", 10*time.Second, "bound on one put, client retries included")
	idle := flag.Duration("idle-before-kill", 0, "stop writing this long before the kill (0: write through it)")
	jsonOut := flag.String("json", "", "also write the result as one JSON document to this file")
	flag.Parse()
	if err := run(*endpoints, *pids, *partitions, *warmup, *after, *opTimeout, *idle, *jsonOut); err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

func run(endpoints, pidList string, parts int, warmup, after, opTimeout, idle time.Duration, jsonOut string) error {
	if endpoints == "" || pidList == "" {
		return errors.New("--endpoints and --pids are required")
	}
	pids := map[string]int{}
	for _, kv := range strings.Split(pidList, ",") {
		name, p, ok := strings.Cut(kv, "=")
		pid, err := strconv.Atoi(p)
		if !ok || err != nil || pid <= 0 {
			return fmt.Errorf("--pids: %q is not node=pid", kv)
		}
		pids[name] = pid
	}
	ring, err := partition.NewRing(parts)
	if err != nil {
		return err
	}
	cfg := client.DefaultConfig()
	cfg.Endpoints = strings.Split(endpoints, ",")
	cl, err := client.New(cfg)
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, cancel := context.WithTimeout(context.Background(), warmup+idle+after+3*opTimeout+30*time.Second)
	defer cancel()
	pr, err := cl.Partitions(ctx)
	if err != nil {
		return fmt.Errorf("listing partitions: %w", err)
	}
	led := map[string][]uint32{}
	for _, p := range pr.GetPartitions() {
		led[p.GetLeader()] = append(led[p.GetLeader()], p.GetId())
	}
	victim := ""
	for name, ps := range led {
		if name != "" && (victim == "" || len(ps) > len(led[victim])) {
			victim = name
		}
	}
	if _, ok := pids[victim]; !ok {
		return fmt.Errorf("the busiest leader is %q, which --pids does not name", victim)
	}

	// One key per partition.
	keys := make([][]byte, parts)
	for i, found := 0, 0; found < parts; i++ {
		k := fmt.Appendf(nil, "failover-%d", i)
		if p := ring.Of(k); keys[p] == nil {
			keys[p] = k
			found++
		}
	}

	type ack struct{ start, end time.Time }
	var (
		mu     sync.Mutex
		acks   = make([][]ack, parts)
		failed int
		stop   = make(chan struct{})
		wg     sync.WaitGroup
	)
	// write starts one closed-loop writer per partition, until stop closes.
	write := func(stop <-chan struct{}, wg *sync.WaitGroup) {
		for p := range parts {
			wg.Go(func() {
				for i := 0; i < 1_000_000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					octx, ocancel := context.WithTimeout(ctx, opTimeout)
					start := time.Now()
					_, err := cl.Put(octx, keys[p], fmt.Appendf(nil, "v%d", i))
					ocancel()
					mu.Lock()
					if err == nil {
						acks[p] = append(acks[p], ack{start, time.Now()})
					} else {
						failed++
					}
					mu.Unlock()
					if err != nil {
						time.Sleep(10 * time.Millisecond) // the client already retried; do not spin
					}
				}
			})
		}
	}
	if idle > 0 {
		var warm sync.WaitGroup
		warmStop := make(chan struct{})
		write(warmStop, &warm)
		time.Sleep(warmup)
		close(warmStop)
		warm.Wait()
		time.Sleep(idle)
	} else {
		write(stop, &wg)
		time.Sleep(warmup)
	}
	killedAt := time.Now()
	if err := syscall.Kill(pids[victim], syscall.SIGKILL); err != nil {
		close(stop)
		wg.Wait()
		return fmt.Errorf("kill %s (pid %d): %w", victim, pids[victim], err)
	}
	if idle > 0 {
		write(stop, &wg)
	}
	time.Sleep(after)
	close(stop)
	wg.Wait()

	res := result{Victim: victim, LedPartitions: len(led[victim]), FailedAttempts: failed}
	var unresumed []string
	for _, p := range led[victim] {
		resumed := false
		for _, a := range acks[p] {
			// The first write started after the kill that was acknowledged.
			if a.start.After(killedAt) {
				res.ResumeMs = append(res.ResumeMs, ms(a.end.Sub(killedAt)))
				resumed = true
				break
			}
		}
		if !resumed {
			unresumed = append(unresumed, strconv.Itoa(int(p)))
		}
	}
	for p := range parts {
		res.Writes += len(acks[p])
		if slices.Contains(led[victim], uint32(p)) {
			continue
		}
		prev := killedAt
		for _, a := range acks[p] {
			if a.end.After(killedAt) {
				res.OtherMaxGapMs = max(res.OtherMaxGapMs, ms(a.end.Sub(prev)))
				prev = a.end
			}
		}
	}
	slices.Sort(res.ResumeMs)
	if n := len(res.ResumeMs); n > 0 {
		res.ResumeP50Ms, res.ResumeMaxMs = res.ResumeMs[n/2], res.ResumeMs[n-1]
	}
	if len(unresumed) > 0 {
		res.UnresumedBefore = fmt.Sprintf("partitions %s had no acknowledged write within %v of the kill", strings.Join(unresumed, ","), after)
	}
	if jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("killed %s (leader of %d of %d partitions) with SIGKILL\n", victim, res.LedPartitions, parts)
	fmt.Printf("writes to its partitions resumed after: p50 %.0f ms, max %.0f ms (all: %v)\n", res.ResumeP50Ms, res.ResumeMaxMs, res.ResumeMs)
	fmt.Printf("other partitions: longest gap between acknowledged writes %.0f ms\n", res.OtherMaxGapMs)
	fmt.Printf("%d writes acknowledged, %d attempts failed after the client's retries\n", res.Writes, failed)
	if res.UnresumedBefore != "" {
		return errors.New(res.UnresumedBefore)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
