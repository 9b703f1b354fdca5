package main

import (
	"runtime/debug"
	"testing"

	"github.com/ringkv/ringkv/node"
)

// gcPercent reads the collector's current target (SetGCPercent returns the
// previous one) and puts it back.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestGCDefaultAppliesWhenGOGCIsUnset(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	if !applyGCDefault(func(string) string { return "" }) {
		t.Fatal("applyGCDefault with GOGC unset reported no change")
	}
	if got := gcPercent(); got != node.DefaultGOGC {
		t.Fatalf("GC target = %d, want node.DefaultGOGC = %d", got, node.DefaultGOGC)
	}
}

func TestGCDefaultLeavesAnExplicitGOGCAlone(t *testing.T) {
	before := debug.SetGCPercent(150) // as if the runtime had applied GOGC=150
	t.Cleanup(func() { debug.SetGCPercent(before) })

	env := map[string]string{"GOGC": "150"}
	if applyGCDefault(func(k string) string { return env[k] }) {
		t.Fatal("applyGCDefault with GOGC=150 reported a change")
	}
	if got := gcPercent(); got != 150 {
		t.Fatalf("GC target = %d, want the explicit 150", got)
	}
}
