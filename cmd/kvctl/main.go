// Command kvctl talks to a RingKV cluster: get, put, del, cas, members,
// partitions, status, bench. See `kvctl --help` and package cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ringkv/ringkv/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cli.ExitCode(err))
}
