package transport

import (
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config configures a Mux.
type Config struct {
	// ClusterID is sent in every header and checked on every accepted
	// connection; both sides must agree exactly. It may be empty until the
	// node learns it (see Mux.SetClusterID). At most 64 bytes.
	ClusterID string

	// AdvertiseAddr is the host:port other nodes dial. Layer.Addr reports it,
	// and raft uses it as the local address. Empty means the listener's
	// address, which must then not be an unspecified IP such as 0.0.0.0.
	AdvertiseAddr string

	// HandshakeTimeout bounds the acceptor's wait for a header and for the
	// partition to accept the connection. Zero means 5s.
	HandshakeTimeout time.Duration

	// Logger receives handshake failures. Nil discards.
	Logger *slog.Logger
}

const (
	defaultHandshakeTimeout = 5 * time.Second

	// maxClusterIDLen keeps the header small and bounded.
	maxClusterIDLen = 64

	// defaultMaxHandshakes is far above legitimate load (a handshake takes
	// one round trip) and low enough that silent peers cannot pile up.
	defaultMaxHandshakes = 1024
)

// DefaultConfig returns the production defaults. ClusterID and AdvertiseAddr
// are left for the caller.
func DefaultConfig() Config {
	return Config{
		HandshakeTimeout: defaultHandshakeTimeout,
		Logger:           slog.Default(),
	}
}

// TestConfig returns a fast configuration for tests: a short handshake
// timeout, a fixed cluster id, and a discarding logger.
func TestConfig() Config {
	return Config{
		ClusterID:        "test-cluster",
		HandshakeTimeout: 500 * time.Millisecond,
		Logger:           slog.New(slog.DiscardHandler),
	}
}

// Validate reports whether c is usable. It does not touch the network.
func (c Config) Validate() error {
	if len(c.ClusterID) > maxClusterIDLen {
		return fmt.Errorf("transport: cluster id is %d bytes, the limit is %d", len(c.ClusterID), maxClusterIDLen)
	}
	if c.HandshakeTimeout < 0 {
		return fmt.Errorf("transport: handshake timeout %v is negative", c.HandshakeTimeout)
	}
	if c.AdvertiseAddr != "" {
		if err := checkAdvertisable(c.AdvertiseAddr); err != nil {
			return err
		}
	}
	return nil
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = defaultHandshakeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// checkAdvertisable rejects addresses other nodes could not dial: raft
// stores the local address in its configuration, so a wildcard IP there
// would be copied to every peer.
func checkAdvertisable(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("transport: advertise address %q: %w", addr, err)
	}
	if host == "" || port == "" || port == "0" {
		return fmt.Errorf("transport: advertise address %q needs a host and a non-zero port", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("transport: advertise address %q is a wildcard IP other nodes cannot dial; set AdvertiseAddr", addr)
	}
	return nil
}
