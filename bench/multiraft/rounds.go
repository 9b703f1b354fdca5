package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"
)

// compare measures every engine o.rounds times, each run in a child process
// of its own (so no run inherits another's heap, goroutines or page cache
// warmth of its own making), the engines' order reversed every round
// (ABBA), and prints every run and then each engine's means.
func compare(o options) error {
	if err := o.validate(); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	runs := map[string][]result{}
	for round := 1; round <= o.rounds; round++ {
		order := slices.Clone(o.engines)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, e := range order {
			r, err := child(self, e, o)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, e, err)
			}
			fmt.Printf("round %d: ", round)
			r.print(os.Stdout)
			runs[e] = append(runs[e], r)
		}
	}
	fmt.Println()
	fmt.Println("| engine | puts/s | p50 ms | p99 ms | CPU us per put | puts per entry | runs |")
	fmt.Println("|---|---|---|---|---|---|---|")
	means := map[string]result{}
	for _, e := range o.engines {
		m := mean(runs[e])
		means[e] = m
		fmt.Printf("| %s | %.0f | %.2f | %.2f | %.1f | %.2f | %d |\n", e, m.PutsPerSec, m.P50ms, m.P99ms, m.CPUPerPutUS, m.PutsPerEntry, len(runs[e]))
	}
	if len(o.engines) == 2 {
		a, b := means[o.engines[0]], means[o.engines[1]]
		fmt.Printf("\n%s against %s: puts/s %.2fx, CPU per put %.2fx, p99 %.2fx\n",
			o.engines[0], o.engines[1], a.PutsPerSec/b.PutsPerSec, a.CPUPerPutUS/b.CPUPerPutUS, a.P99ms/b.P99ms)
	}
	return nil
}

// child runs one measurement of engine e in a new process and returns its
// result. The child gets a deadline well past its own run.
func child(self, e string, o options) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.warmup+o.duration+3*time.Minute)
	defer cancel()
	args := []string{
		"--engine", e, "--json",
		"--partitions", strconv.Itoa(o.partitions),
		"--clients", strconv.Itoa(o.clients),
		"--duration", o.duration.String(),
		"--warmup", o.warmup.String(),
		"--keys", strconv.Itoa(o.keys),
		"--value-size", strconv.Itoa(o.valueSize),
	}
	cmd := exec.CommandContext(ctx, self, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("%w: %s", err, bytes.TrimSpace(errOut.Bytes()))
	}
	var r result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return result{}, fmt.Errorf("reading its result %q: %w", out.String(), err)
	}
	return r, nil
}

// mean averages the rates, latencies and ratios of runs of one engine;
// CPU per put is total CPU over total puts.
func mean(runs []result) result {
	var m result
	if len(runs) == 0 {
		return m
	}
	var cpu float64
	for _, r := range runs {
		m.Puts += r.Puts
		m.PutsPerSec += r.PutsPerSec
		m.P50ms += r.P50ms
		m.P99ms += r.P99ms
		m.PutsPerEntry += r.PutsPerEntry
		cpu += r.CPUPerPutUS * float64(r.Puts)
	}
	n := float64(len(runs))
	m.PutsPerSec /= n
	m.P50ms /= n
	m.P99ms /= n
	m.PutsPerEntry /= n
	m.CPUPerPutUS = cpu / float64(m.Puts)
	return m
}
