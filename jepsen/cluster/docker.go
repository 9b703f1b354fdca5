package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
)

// Label marks every container and network this package creates.
const Label = "ringkv.jepsen=1"

// Docker runs the docker command-line client.
type Docker struct {
	// Bin is the docker client binary.
	Bin string
	// Env is added to the client's environment.
	Env []string
	Log *slog.Logger
}

// NewDocker returns a client that runs "docker" from PATH.
func NewDocker(log *slog.Logger) *Docker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Docker{Bin: "docker", Log: log}
}

// Run runs docker with args and returns its trimmed standard output. The
// error carries standard error.
func (d *Docker) Run(ctx context.Context, args ...string) (string, error) {
	return run(ctx, d.Env, d.Bin, args...)
}

// run runs a command and returns its trimmed standard output; a failure
// carries the command's standard error.
func run(ctx context.Context, env []string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		return strings.TrimSpace(out.String()), fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(out.String()), nil
}

// runIn is run with a working directory.
func runIn(ctx context.Context, dir string, env []string, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s (in %s): %w: %s", bin, strings.Join(args, " "), dir, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// logs copies a container's log, both streams, to w.
func (d *Docker) logs(ctx context.Context, container string, w io.Writer) error {
	cmd := exec.CommandContext(ctx, d.Bin, "logs", container)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("docker logs %s: %w", container, err)
	}
	return nil
}
