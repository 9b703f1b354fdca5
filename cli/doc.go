// Package cli is kvctl, the RingKV command line, as a library: Run parses
// the arguments, runs one command against the cluster and reports the
// outcome; ExitCode turns that outcome into the exit status. cmd/kvctl only
// wires Run to the process. Commands are built by constructors on each run
// (no package-level flags), so tests drive Run in-process.
//
// # Output contract
//
//   - Table mode (default) is for people: raw values for get, aligned
//     columns for members, partitions, status and plan, one line for
//     writes, drain, undrain and remove. drain --wait prints progress
//     lines (on stderr in JSON mode; one live line on a terminal).
//   - With -o json, exactly one JSON document goes to stdout, errors
//     included: {"error": "key not found", "code": "not_found"}. Codes:
//     not_found, invalid_argument, failed_precondition, unavailable,
//     outcome_unknown, timeout, usage, error.
//   - Keys and values are JSON strings when they are valid UTF-8, otherwise
//     the object {"base64": "<standard base64 with padding>"}.
//   - Errors also print one line on stderr, "kvctl: <reason>", with the
//     server's reason (for example "kvctl: invalid argument: key is 5000
//     bytes; the limit is 4096 bytes"); a missing key prints
//     "kvctl: key not found"; a refusal (failed_precondition) prints the
//     server's advice as it is, e.g. "kvctl: node n4 is alive: drain it
//     (kvctl drain n4 --wait), stop it, then remove it".
//   - Exit status: 0 on success (a compare-and-swap that did not swap and a
//     delete of a missing key are successes), 1 on errors, 2 on usage
//     errors.
//
// Example (a thin main):
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
//	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
//	stop()
//	os.Exit(cli.ExitCode(err))
package cli
