package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ringkv/ringkv/client"
)

// EndpointsEnv names the environment variable that supplies --endpoints
// when the flag is not given.
const EndpointsEnv = "KVCTL_ENDPOINTS"

const defaultEndpoints = "127.0.0.1:7101"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// UsageError is a command line that kvctl cannot run: an unknown command or
// flag, a wrong number of arguments, a bad flag value. ExitCode maps it to 2.
type UsageError struct {
	Err error
	// Command is the command path for the "--help" hint, e.g. "kvctl get".
	Command string
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// reportedError is an error whose command already printed its JSON
// document; Run then only prints the message to stderr.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }

// runError marks an error returned by a command's own code, so that every
// other error from cobra (flag parsing, unknown commands) counts as usage.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// ExitCode maps Run's error to the process exit code: 0 for nil, 2 for a
// usage error, 1 for every other error (a missing key included).
func ExitCode(err error) int {
	if err == nil {
		return exitOK
	}
	if _, ok := errors.AsType[*UsageError](err); ok {
		return exitUsage
	}
	return exitError
}

// env is what a run of kvctl gets from its process; tests supply their own.
type env struct {
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	getenv     func(string) string
	isTerminal func(io.Writer) bool
}

// Run runs kvctl with args (without the program name), writing results to
// stdout and messages to stderr. It reports errors itself (a line on
// stderr, and in JSON mode one JSON document on stdout) and returns them for
// ExitCode.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return run(ctx, args, env{
		stdin:      os.Stdin,
		stdout:     stdout,
		stderr:     stderr,
		getenv:     os.Getenv,
		isTerminal: isTerminal,
	})
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func run(ctx context.Context, args []string, e env) error {
	a := &app{env: e, output: "table"}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return nil
	}
	if re, ok := errors.AsType[*runError](err); ok {
		err = re.err
	} else if _, ok := errors.AsType[*UsageError](err); !ok {
		err = &UsageError{Err: err}
	}
	if ue, ok := errors.AsType[*UsageError](err); ok && ue.Command == "" && cmd != nil {
		ue.Command = cmd.CommandPath()
	}
	a.report(err)
	return err
}

// app holds the global flags of one run.
type app struct {
	env
	endpoints string
	output    string
	timeout   time.Duration
	protocol  string
}

func (a *app) jsonMode() bool { return a.output == "json" }

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kvctl",
		Short: "Talk to a RingKV cluster",
		Long: `kvctl reads and writes keys of a RingKV cluster, shows its members,
partitions and status, and changes its shape: plan shows what the cluster
would do next, drain empties a node before it is stopped, remove retires a
stopped node for good.

Any node serves any request, so --endpoints needs only one reachable node;
list several so that kvctl can go elsewhere when one is down.

Exit status: 0 on success (a compare-and-swap that did not swap is a
success), 1 on errors (a missing key included), 2 on usage errors.

With -o json every command prints exactly one JSON document on stdout,
errors included ({"error": "...", "code": "not_found"}). Keys and values
print as JSON strings when they are valid UTF-8, else as {"base64": "..."}.`,
		Example: `  kvctl put greeting hello
  kvctl get greeting
  kvctl --endpoints 10.0.0.1:7101,10.0.0.2:7101 -o json members
  kvctl drain n4 --wait
  KVCTL_ENDPOINTS=10.0.0.1:7101 kvctl status`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: a.validateGlobals,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.endpoints, "endpoints", defaultEndpoints,
		"comma-separated client addresses (host:port) of cluster nodes; default from $"+EndpointsEnv)
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	pf.StringVar(&a.protocol, "protocol", "native", "how get, put, del and cas travel: native (RingKV's binary protocol; Connect for nodes without it) or connect (HTTP/2)")
	pf.DurationVar(&a.timeout, "timeout", 5*time.Second, "time limit of the whole command, retries included (bench: of each operation; drain --wait: 30m unless given)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &UsageError{Err: err, Command: c.CommandPath()}
	})
	root.AddCommand(
		a.getCommand(), a.putCommand(), a.delCommand(), a.casCommand(),
		a.membersCommand(), a.partitionsCommand(), a.statusCommand(),
		a.planCommand(), a.drainCommand(), a.undrainCommand(), a.removeCommand(),
		a.benchCommand(),
	)
	return root
}

// validateGlobals checks the global flags and applies $KVCTL_ENDPOINTS.
func (a *app) validateGlobals(cmd *cobra.Command, _ []string) error {
	switch a.output {
	case "table", "json":
	default:
		bad := a.output
		a.output = "table"
		return usagef("unknown output format %q: use table or json", bad)
	}
	a.applyEndpointsEnv(cmd)
	if len(a.endpointList()) == 0 {
		return usagef("no endpoints: give --endpoints host:port[,host:port...] or set $%s", EndpointsEnv)
	}
	if a.timeout <= 0 {
		return usagef("--timeout must be positive, got %v", a.timeout)
	}
	if _, err := client.ParseProtocol(a.protocol); err != nil {
		return usagef("--protocol: unknown protocol %q: use native or connect", a.protocol)
	}
	return nil
}

// applyEndpointsEnv takes the endpoints from $KVCTL_ENDPOINTS unless
// --endpoints was given.
func (a *app) applyEndpointsEnv(cmd *cobra.Command) {
	if !cmd.Flags().Changed("endpoints") {
		if v := strings.TrimSpace(a.getenv(EndpointsEnv)); v != "" {
			a.endpoints = v
		}
	}
}

func (a *app) endpointList() []string {
	var out []string
	for _, e := range strings.Split(a.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// newClient builds a client for the global flags.
func (a *app) newClient(edit func(*client.Config)) (*client.Client, error) {
	cfg := client.DefaultConfig()
	cfg.Endpoints = a.endpointList()
	cfg.RequestTimeout = min(cfg.RequestTimeout, a.timeout)
	cfg.Protocol, _ = client.ParseProtocol(a.protocol) // checked by validateGlobals
	if edit != nil {
		edit(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, &UsageError{Err: fmt.Errorf("--endpoints: %w", err)}
	}
	return c, nil
}

// clientBody is a command body that talks to the cluster.
type clientBody func(ctx context.Context, c *client.Client, args []string) error

// runE adapts a command body: it bounds it by --timeout, hands it a client,
// and marks its errors as the command's own.
func (a *app) runE(body clientBody) func(*cobra.Command, []string) error {
	return a.runRaw(func(cmd *cobra.Command, args []string) error {
		return a.withClient(cmd.Context(), a.timeout, args, body)
	})
}

// withClient runs body with a new client, bounded by timeout.
func (a *app) withClient(ctx context.Context, timeout time.Duration, args []string, body clientBody) error {
	c, err := a.newClient(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return body(ctx, c, args)
}

// memberEndpoint turns a client address the cluster reported into an
// endpoint, with the scheme of the configured endpoints.
func (a *app) memberEndpoint(hostport string) string {
	for _, e := range a.endpointList() {
		if strings.HasPrefix(e, "https://") {
			return "https://" + hostport
		}
	}
	return hostport
}

// runRaw marks a command body's errors as its own (not usage errors unless
// it says so).
func (a *app) runRaw(body func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := body(cmd, args)
		if err == nil {
			return nil
		}
		if ue, ok := errors.AsType[*UsageError](err); ok {
			if ue.Command == "" {
				ue.Command = cmd.CommandPath()
			}
			return &runError{err: ue}
		}
		return &runError{err: err}
	}
}

// args returns a cobra argument check that reports usage errors.
func args(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, got []string) error {
		if len(got) != n {
			want := fmt.Sprintf("%d arguments (%s)", n, names)
			switch n {
			case 0:
				want = "no arguments"
			case 1:
				want = "1 argument (" + names + ")"
			}
			return &UsageError{Err: fmt.Errorf("%s takes %s, got %d: %q", cmd.Name(), want, len(got), got), Command: cmd.CommandPath()}
		}
		return nil
	}
}

// report prints err: one line on stderr, and in JSON mode one JSON document
// on stdout unless the command printed its own.
func (a *app) report(err error) {
	code, msg := describe(err)
	line := "kvctl: " + msg
	// A refusal says what to do in the server's words: show them as they are.
	if code != "not_found" && code != "usage" && code != "error" && code != "failed_precondition" {
		line = "kvctl: " + strings.ReplaceAll(code, "_", " ") + ": " + msg
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		line += fmt.Sprintf(" (is kvd running at %s? set --endpoints or $%s)", a.endpoints, EndpointsEnv)
	}
	fmt.Fprintln(a.stderr, line)
	if ue, ok := errors.AsType[*UsageError](err); ok && ue.Command != "" {
		fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", ue.Command)
	}
	if _, done := errors.AsType[*reportedError](err); done || !a.jsonMode() {
		return
	}
	_ = a.printJSON(struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}{msg, code})
}

// describe returns the JSON error code and the message of err.
func describe(err error) (code, msg string) {
	if _, ok := errors.AsType[*UsageError](err); ok {
		return "usage", err.Error()
	}
	if re, ok := errors.AsType[*reportedError](err); ok {
		err = re.err
	}
	ce, ok := errors.AsType[*client.Error](err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return "timeout", err.Error()
		}
		return "error", err.Error()
	}
	switch {
	case errors.Is(err, client.ErrNotFound):
		code = "not_found"
	case errors.Is(err, client.ErrInvalidArgument):
		code = "invalid_argument"
	case errors.Is(err, client.ErrFailedPrecondition):
		code = "failed_precondition"
	case errors.Is(err, client.ErrOutcomeUnknown):
		code = "outcome_unknown"
	case errors.Is(err, client.ErrUnavailable):
		code = "unavailable"
	default:
		code = "error"
	}
	// Keep the context an outer wrapper added, without the sentinel's text.
	return code, strings.Replace(err.Error(), ce.Error(), ce.Message, 1)
}

// printJSON writes v as one JSON document on one line (for jq, and for
// scripts that collect one line per run).
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
