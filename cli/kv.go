package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/ringkv/ringkv/client"
)

// maxStdinValue bounds what `put KEY -` reads, so that a wrong pipe cannot
// eat the memory; the server's own limit (1 MiB by default) is lower.
const maxStdinValue = 64 << 20

func (a *app) getCommand() *cobra.Command {
	var consistency string
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Read a key",
		Long: `Read a key and print its value.

Strong reads (the default) are linearizable: the partition's leader answers
after confirming its leadership. Eventual reads are answered at once by any
replica, also while the partition has lost quorum, and may be stale; -o json
shows who served the read (served_by), how far it had applied the log
(applied_index) and whether it was the leader.

Table output is the raw value followed by a newline. A missing key prints
"key not found" on stderr and exits 1.`,
		Example: `  kvctl get greeting
  kvctl get greeting --consistency eventual -o json`,
		Args: args(1, "KEY"),
	}
	cmd.Flags().StringVar(&consistency, "consistency", "strong", "strong or eventual")
	cmd.RunE = a.runE(func(ctx context.Context, c *client.Client, args []string) error {
		cons, err := client.ParseConsistency(consistency)
		if err != nil {
			return usagef("--consistency: unknown value %q: use strong or eventual", consistency)
		}
		kv, err := c.Get(ctx, []byte(args[0]), client.WithConsistency(cons))
		if err != nil {
			return err
		}
		if a.jsonMode() {
			return a.printJSON(struct {
				Key          jsonBytes `json:"key"`
				Value        jsonBytes `json:"value"`
				Version      uint64    `json:"version"`
				ServedBy     string    `json:"served_by"`
				AppliedIndex uint64    `json:"applied_index"`
				Leader       bool      `json:"leader"`
				Partition    uint32    `json:"partition"`
			}{kv.Key, kv.Value, kv.Version, kv.Receipt.ServedBy, kv.Receipt.AppliedIndex, kv.Receipt.Leader, kv.Receipt.Partition})
		}
		if _, err := a.stdout.Write(kv.Value); err != nil {
			return err
		}
		_, err = io.WriteString(a.stdout, "\n")
		return err
	})
	return cmd
}

func (a *app) putCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Write a key",
		Long: `Write VALUE under KEY and print the key's new version.

VALUE "-" reads the value from stdin (all of it, byte for byte). The write is
retried safely until --timeout: the cluster applies it once. If kvctl cannot
learn whether it was applied (a timeout after sending), it exits 1 with
"outcome unknown": read the key to find out.`,
		Example: `  kvctl put greeting hello
  kvctl put config - < config.json
  kvctl put greeting hello -o json`,
		Args: args(2, "KEY VALUE"),
	}
	cmd.RunE = a.runE(func(ctx context.Context, c *client.Client, args []string) error {
		value, err := a.value(args[1])
		if err != nil {
			return err
		}
		version, err := c.Put(ctx, []byte(args[0]), value)
		if err != nil {
			return err
		}
		if a.jsonMode() {
			return a.printJSON(struct {
				Key     jsonBytes `json:"key"`
				Version uint64    `json:"version"`
			}{jsonBytes(args[0]), version})
		}
		_, err = fmt.Fprintf(a.stdout, "OK version %d\n", version)
		return err
	})
	return cmd
}

// value returns the argument, or stdin for "-".
func (a *app) value(arg string) ([]byte, error) {
	if arg != "-" {
		return []byte(arg), nil
	}
	b, err := io.ReadAll(io.LimitReader(a.stdin, maxStdinValue+1))
	if err != nil {
		return nil, fmt.Errorf("reading the value from stdin: %w", err)
	}
	if len(b) > maxStdinValue {
		return nil, usagef("the value on stdin is over %d bytes", maxStdinValue)
	}
	return b, nil
}

func (a *app) delCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete", "rm"},
		Short:   "Delete a key",
		Long: `Delete KEY. Deleting a key that does not exist is not an error: kvctl
says so and exits 0 ("deleted": false in JSON).`,
		Example: `  kvctl del greeting
  kvctl del greeting -o json`,
		Args: args(1, "KEY"),
	}
	cmd.RunE = a.runE(func(ctx context.Context, c *client.Client, args []string) error {
		deleted, err := c.Delete(ctx, []byte(args[0]))
		if err != nil {
			return err
		}
		if a.jsonMode() {
			return a.printJSON(struct {
				Key     jsonBytes `json:"key"`
				Deleted bool      `json:"deleted"`
			}{jsonBytes(args[0]), deleted})
		}
		msg := "deleted"
		if !deleted {
			msg = "nothing deleted: no such key"
		}
		_, err = fmt.Fprintln(a.stdout, msg)
		return err
	})
	return cmd
}

func (a *app) casCommand() *cobra.Command {
	var (
		expectVersion uint64
		create        bool
	)
	cmd := &cobra.Command{
		Use:   "cas KEY [EXPECTED] NEW",
		Short: "Compare and swap a key",
		Long: `Atomically write NEW under KEY if the key's current state is as expected:
its value equals EXPECTED (the default), its version equals N
(--expect-version N; EXPECTED is then omitted), or it does not exist
(--create; EXPECTED is then omitted).

A swap that does not happen is a normal answer, not an error: kvctl prints
"not swapped" with the current state and exits 0 ("succeeded": false in
JSON).`,
		Example: `  kvctl cas counter 41 42
  kvctl cas counter 42 --expect-version 7
  kvctl cas lock me --create -o json`,
	}
	cmd.Flags().Uint64Var(&expectVersion, "expect-version", 0, "swap only if the key's version is `N`")
	cmd.Flags().BoolVar(&create, "create", false, "swap only if the key does not exist (create-if-absent)")
	cmd.Args = func(cmd *cobra.Command, got []string) error {
		byVersion := cmd.Flags().Changed("expect-version")
		switch {
		case byVersion && create:
			return &UsageError{Err: fmt.Errorf("--expect-version and --create exclude each other"), Command: cmd.CommandPath()}
		case byVersion || create:
			return args(2, "KEY NEW")(cmd, got)
		default:
			return args(3, "KEY EXPECTED NEW")(cmd, got)
		}
	}
	cmd.RunE = a.runE(func(ctx context.Context, c *client.Client, args []string) error {
		key, newValue := []byte(args[0]), []byte(args[len(args)-1])
		var cond client.Condition
		switch {
		case cmd.Flags().Changed("expect-version"):
			cond = client.IfVersion(expectVersion)
		case create:
			cond = client.IfAbsent()
		default:
			cond = client.IfValue([]byte(args[1]))
		}
		res, err := c.CompareAndSwap(ctx, key, cond, newValue)
		if err != nil {
			return err
		}
		if a.jsonMode() {
			out := struct {
				Key            jsonBytes  `json:"key"`
				Succeeded      bool       `json:"succeeded"`
				Version        uint64     `json:"version,omitempty"`
				CurrentExists  *bool      `json:"current_exists,omitempty"`
				CurrentValue   *jsonBytes `json:"current_value,omitempty"`
				CurrentVersion *uint64    `json:"current_version,omitempty"`
			}{Key: key, Succeeded: res.Succeeded, Version: res.Version}
			if !res.Succeeded {
				cv := jsonBytes(res.CurrentValue)
				out.CurrentExists, out.CurrentValue, out.CurrentVersion = &res.CurrentExists, &cv, &res.CurrentVersion
				if !res.CurrentExists {
					out.CurrentValue = nil
				}
			}
			return a.printJSON(out)
		}
		switch {
		case res.Succeeded:
			_, err = fmt.Fprintf(a.stdout, "swapped (version %d)\n", res.Version)
		case res.CurrentExists:
			_, err = fmt.Fprintf(a.stdout, "not swapped: current value %s version %d\n",
				strconv.Quote(string(res.CurrentValue)), res.CurrentVersion)
		default:
			_, err = fmt.Fprintln(a.stdout, "not swapped: the key does not exist")
		}
		return err
	})
	return cmd
}
