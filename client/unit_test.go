package client

import (
	"errors"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestParseConsistency(t *testing.T) {
	tests := []struct {
		in      string
		want    Consistency
		wantErr bool
	}{
		{"strong", Strong, false},
		{"eventual", Eventual, false},
		{"EVENTUAL", Eventual, false},
		{" strong ", Strong, false},
		{"", Strong, true},
		{"linearizable", Strong, true},
		{"weak", Strong, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseConsistency(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "strong or eventual") {
					t.Fatalf("ParseConsistency(%q) error = %v; want ErrInvalidArgument listing the valid names", tc.in, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseConsistency(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if back, _ := ParseConsistency(got.String()); back != got {
				t.Fatalf("String does not round-trip: %v", got)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"default", func(*Config) {}, ""},
		{"scheme", func(c *Config) { c.Endpoints = []string{"http://10.0.0.1:7101/"} }, ""},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, "no endpoints"},
		{"no port", func(c *Config) { c.Endpoints = []string{"localhost"} }, "not host:port"},
		{"bad scheme", func(c *Config) { c.Endpoints = []string{"ftp://a:1"} }, "scheme"},
		{"zero attempts", func(c *Config) { c.MaxAttempts = 0 }, "MaxAttempts"},
		{"zero request timeout", func(c *Config) { c.RequestTimeout = 0 }, "RequestTimeout"},
		{"zero dial timeout", func(c *Config) { c.DialTimeout = 0 }, "DialTimeout"},
		{"max below base", func(c *Config) { c.BackoffMax = c.BackoffBase / 2 }, "BackoffMax"},
		{"zero base", func(c *Config) { c.BackoffBase = 0 }, "BackoffBase"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v; want ErrInvalidArgument mentioning %q", err, tc.want)
			}
			if _, err := New(cfg); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
	if err := TestConfig("127.0.0.1:1").Validate(); err != nil {
		t.Fatalf("TestConfig: %v", err)
	}
}

func TestBackoffBounded(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		base := time.Duration(rapid.Int64Range(1, int64(time.Second)).Draw(t, "base"))
		maxWait := base + time.Duration(rapid.Int64Range(0, int64(time.Minute)).Draw(t, "extra"))
		n := rapid.IntRange(1, 200).Draw(t, "retry")
		var ceiling int64
		top := func(k int64) int64 { ceiling = k; return k - 1 }
		got := backoff(base, maxWait, n, top)
		if got < 0 || got >= maxWait || ceiling > int64(maxWait) {
			t.Fatalf("backoff(%v, %v, %d) = %v (ceiling %v); want in [0, max)", base, maxWait, n, got, time.Duration(ceiling))
		}
		// Exponential below the cap.
		if n < 30 {
			want := min(int64(base)<<(n-1), int64(maxWait))
			if ceiling != want {
				t.Fatalf("ceiling %v, want %v", time.Duration(ceiling), time.Duration(want))
			}
		}
		if zero := backoff(base, maxWait, n, func(int64) int64 { return 0 }); zero != 0 {
			t.Fatalf("full jitter must reach 0, got %v", zero)
		}
	})
}
