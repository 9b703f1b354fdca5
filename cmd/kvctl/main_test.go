package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the test binary act as kvctl when re-executed, so that the
// exit-code wiring of main is tested on a real process.
func TestMain(m *testing.M) {
	if os.Getenv("KVCTL_TEST_AS_MAIN") == "1" {
		os.Args = append([]string{"kvctl"}, strings.Fields(os.Getenv("KVCTL_TEST_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		args   string
		code   int
		stdout string
		stderr string
	}{
		{"--help", 0, "Available Commands:", ""},
		{"get", 2, "", "kvctl: get takes 1 argument"},
		{"--endpoints 127.0.0.1:1 --timeout 300ms get k", 1, "", "kvctl: unavailable:"},
		{"--endpoints 127.0.0.1:1 --timeout 300ms -o json get k", 1, `"code":"unavailable"`, "kvctl: unavailable:"},
	}
	for _, tc := range tests {
		t.Run(tc.args, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0])
			cmd.Env = append(os.Environ(), "KVCTL_TEST_AS_MAIN=1", "KVCTL_TEST_ARGS="+tc.args, "KVCTL_ENDPOINTS=")
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := errors.AsType[*exec.ExitError](err); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
		})
	}
}
