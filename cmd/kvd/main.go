// Command kvd runs one RingKV node. See `kvd --help` and the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/ringkv/ringkv/node"
)

func main() {
	applyGCDefault(os.Getenv)
	cfg, err := node.ParseFlags(os.Args[1:], os.Stderr, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvd:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvd:", err)
		os.Exit(1)
	}
	if err := n.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "kvd:", err)
		os.Exit(1)
	}
}

// applyGCDefault sets the garbage collector's target to node.DefaultGOGC
// unless the GOGC environment variable is set (then Go has already applied
// it). It reports whether it changed the target.
func applyGCDefault(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(node.DefaultGOGC)
	return true
}
