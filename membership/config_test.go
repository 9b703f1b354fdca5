package membership

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		c := TestConfig()
		c.Name = "n1"
		c.Meta = Meta{Partitions: 64, Replicas: 3}
		return c
	}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr error
	}{
		{"test config", func(*Config) {}, nil},
		{"default config", func(c *Config) { d := DefaultConfig(); d.Name = "n1"; *c = d }, nil},
		{"meta name equal", func(c *Config) { c.Meta.Name = "n1" }, nil},
		{"advertise with bind port", func(c *Config) { c.AdvertiseAddr, c.BindPort = "10.0.0.1", 7301 }, nil},
		{"no name", func(c *Config) { c.Name = "" }, ErrInvalidConfig},
		{"meta name differs", func(c *Config) { c.Meta.Name = "n2" }, ErrInvalidConfig},
		{"bind addr is a host name", func(c *Config) { c.BindAddr = "localhost" }, ErrInvalidConfig},
		{"bind port out of range", func(c *Config) { c.BindPort = 70000 }, ErrInvalidConfig},
		{"advertise addr is a host name", func(c *Config) { c.AdvertiseAddr = "kvd-1" }, ErrInvalidConfig},
		{"advertise without any port", func(c *Config) { c.AdvertiseAddr = "10.0.0.1" }, ErrInvalidConfig},
		{"zero probe interval", func(c *Config) { c.ProbeInterval = 0 }, ErrInvalidConfig},
		{"probe timeout not shorter", func(c *Config) { c.ProbeTimeout = c.ProbeInterval }, ErrInvalidConfig},
		{"zero suspicion mult", func(c *Config) { c.SuspicionMult = 0 }, ErrInvalidConfig},
		{"negative reclaim time", func(c *Config) { c.DeadNodeReclaimTime = -time.Second }, ErrInvalidConfig},
		{"label too long", func(c *Config) { c.Label = strings.Repeat("x", 256) }, ErrInvalidConfig},
		{"meta too large", func(c *Config) { c.Meta.Leading = make([]byte, MetaMaxSize) }, ErrMetaTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.edit(&c)
			err := c.Validate()
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Validate() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestTestConfigIsFaster(t *testing.T) {
	d, tc := DefaultConfig(), TestConfig()
	if tc.ProbeInterval >= d.ProbeInterval || tc.suspicionBound(3) >= d.suspicionBound(3) {
		t.Fatalf("TestConfig is not faster than DefaultConfig: %+v vs %+v", tc, d)
	}
	if tc.BindPort != 0 {
		t.Fatalf("TestConfig binds port %d, want 0 (free port)", tc.BindPort)
	}
}
