package main

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		usage   bool // want a usage error
		check   func(options) bool
		explain string
	}{
		{"defaults follow kvctl bench", nil, false, func(o options) bool {
			return o.op == "put" && o.consistency == "strong" && o.clients == 16 && o.conns == 1 &&
				o.duration == 10*time.Second && o.valueSize == 100 && o.keys == 1000 && o.output == "table"
		}, "put, strong, 16 clients over 1 conn, 10s, 100 B, 1000 keys"},
		{"more conns when asked", []string{"--clients", "16", "--conns", "4"}, false,
			func(o options) bool { return o.conns == 4 }, "4 conns"},
		{"conns never exceed clients", []string{"--clients", "2", "--conns", "5"}, false,
			func(o options) bool { return o.conns == 2 }, "2 conns"},
		{"-n and --count are one flag", []string{"-n", "7"}, false,
			func(o options) bool { return o.count == 7 }, "count 7"},
		{"json and the workload flags", []string{"--op", "mixed", "--ratio", "0.9", "--consistency", "eventual", "-o", "json"}, false,
			func(o options) bool {
				return o.op == "mixed" && o.ratio == 0.9 && o.consistency == "eventual" && o.output == "json"
			}, "mixed 0.9 eventual json"},
		{"endpoints get a scheme", []string{"--endpoints", "127.0.0.1:1, http://h:2 ,"}, false,
			func(o options) bool {
				return slices.Equal(o.endpointList(), []string{"http://127.0.0.1:1", "http://h:2"})
			}, "two http endpoints"},
		{"unknown op", []string{"--op", "cas"}, true, nil, ""},
		{"unknown consistency", []string{"--consistency", "linearizable"}, true, nil, ""},
		{"ratio above 1", []string{"--op", "mixed", "--ratio", "1.5"}, true, nil, ""},
		{"no clients", []string{"--clients", "0"}, true, nil, ""},
		{"no keys", []string{"--keys", "0"}, true, nil, ""},
		{"no endpoints", []string{"--endpoints", " , "}, true, nil, ""},
		{"stray argument", []string{"put"}, true, nil, ""},
		{"unknown flag", []string{"--bogus"}, true, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard)
			if tc.usage {
				if _, ok := errors.AsType[*usageError](err); !ok {
					t.Fatalf("parseFlags(%q) = %v, want a usage error", tc.args, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			}
			if !tc.check(o) {
				t.Fatalf("parseFlags(%q) = %+v, want %s", tc.args, o, tc.explain)
			}
		})
	}
}

func TestPrintResultJSONHasKvctlFields(t *testing.T) {
	var b strings.Builder
	if err := printResult(&b, "json", result{Op: "get", Ops: 3}, newHistogram()); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ops_per_sec", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "errors", "ops", "duration_s", "op", "consistency", "clients"} {
		if !strings.Contains(b.String(), `"`+f+`":`) {
			t.Fatalf("JSON lacks %s: %s", f, b.String())
		}
	}
	if strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("want one JSON line, got %q", b.String())
	}
}
