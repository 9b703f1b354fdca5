// Command jepsen runs RingKV's fault suite in Docker and re-checks saved
// runs. See jepsen/README.md.
//
//	go run ./jepsen/cmd/jepsen --mode smoke
//	go run ./jepsen/cmd/jepsen check jepsen/runs/20260101T120000-42
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ringkv/ringkv/jepsen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := jepsen.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
