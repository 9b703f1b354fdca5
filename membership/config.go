package membership

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures a Gossip. Start it from DefaultConfig (or TestConfig) and set Name and Meta.
type Config struct {
	// Name is this node's unique name in the cluster (Meta.Name must be empty or equal).
	Name string

	// BindAddr and BindPort are where gossip listens, on TCP and UDP. BindAddr must be an IP
	// address; port 0 picks a free port.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what peers dial, when that differs from the bind
	// address (containers, NAT). AdvertiseAddr must be an IP; an empty one advertises the bind
	// address. AdvertisePort 0 advertises the bind port.
	AdvertiseAddr string
	AdvertisePort int

	// Label, when set, is stamped on every gossip packet and stream, and nodes drop traffic with
	// another label: it keeps separate clusters (or concurrent test runs) on one network from
	// ever talking, even through reused ports. It is not a security boundary. All nodes of a
	// cluster need the same label; changing it needs a full cluster restart.
	Label string

	// Meta is the initial metadata this node gossips. An empty Meta.Name becomes Name and an empty
	// Meta.GossipAddr becomes the advertised gossip host:port.
	Meta Meta

	// State, when set, is exchanged with peers in every push/pull sync (anti-entropy, every
	// PushPullInterval, and on join): Local returns what this node shares, Merge receives a
	// peer's. It carries state that must reach nodes that missed its broadcast (a node cut off or
	// stopped at the time), and must be small (a few KB).
	State StateExchange

	// Logger receives this package's logs and memberlist's, mapped to slog levels. nil discards.
	Logger *slog.Logger
	// Now is the clock for Member.Since; nil means time.Now.
	Now func() time.Time

	// ProbeInterval is how often a node probes one random peer; ProbeTimeout is how long it waits
	// for a direct ack before asking other nodes to probe indirectly. Failure detection time
	// scales with ProbeInterval.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// SuspicionMult: a suspect node is declared dead after
	// SuspicionMult * max(1, log10(N)) * ProbeInterval once enough peers confirm the suspicion,
	// and at most SuspicionMaxTimeoutMult times that without confirmations.
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	// GossipInterval and GossipNodes: every GossipInterval, queued updates are sent to GossipNodes
	// random peers. RetransmitMult * ceil(log10(N+1)) is how often each update is retransmitted.
	GossipInterval time.Duration
	GossipNodes    int
	RetransmitMult int
	// PushPullInterval is the interval of full state syncs with a random peer (anti-entropy).
	PushPullInterval time.Duration
	// TCPTimeout bounds a TCP connect/read/write (joins, push/pull, fallback probes).
	TCPTimeout time.Duration
	// GossipToTheDeadTime is how long gossip still reaches a dead node so it can refute.
	GossipToTheDeadTime time.Duration
	// DeadNodeReclaimTime is how long a dead node's name stays bound to its old address; after
	// it a node of that name may come back from another address (a restarted container).
	DeadNodeReclaimTime time.Duration
	// BroadcastTimeout bounds how long UpdateMeta and Start wait for a metadata update to be
	// gossiped (the update keeps spreading afterwards), and is Leave's timeout when none is given.
	BroadcastTimeout time.Duration
}

// DefaultConfig is tuned from memberlist.DefaultLANConfig so that a crashed node of a 3-5 node
// cluster is declared dead about 5 s after it stops answering: it is probed within about a
// ProbeInterval, found unresponsive within another, and declared dead after a suspicion of
// 3 * ProbeInterval (up to 9 s when no other node confirms the suspicion).
func DefaultConfig() Config {
	lan := memberlist.DefaultLANConfig()
	return Config{
		BindAddr:                "127.0.0.1",
		BindPort:                7301,
		ProbeInterval:           lan.ProbeInterval, // 1 s
		ProbeTimeout:            lan.ProbeTimeout,  // 500 ms
		SuspicionMult:           3,                 // LAN: 4
		SuspicionMaxTimeoutMult: 3,                 // LAN: 6, meant for huge clusters
		GossipInterval:          lan.GossipInterval,
		GossipNodes:             lan.GossipNodes,
		RetransmitMult:          lan.RetransmitMult,
		PushPullInterval:        15 * time.Second, // LAN: 30 s; our clusters are small
		TCPTimeout:              5 * time.Second,  // LAN: 10 s
		GossipToTheDeadTime:     lan.GossipToTheDeadTime,
		DeadNodeReclaimTime:     10 * time.Second, // LAN: never
		BroadcastTimeout:        5 * time.Second,
	}
}

// TestConfig is DefaultConfig on 127.0.0.1 with a free port and timings five times faster: a
// crashed node is dead after about 1-2 s.
func TestConfig() Config {
	c := DefaultConfig()
	c.BindPort = 0
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 40 * time.Millisecond
	c.PushPullInterval = 3 * time.Second
	c.TCPTimeout = 2 * time.Second
	c.GossipToTheDeadTime = 6 * time.Second
	c.DeadNodeReclaimTime = time.Second
	c.BroadcastTimeout = 2 * time.Second
	return c
}

// Validate reports the first problem with c, wrapping ErrInvalidConfig (or ErrMetaTooLarge).
// It does not touch the network.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.Name == "":
		return bad("Name is empty: give every node a unique name")
	case c.Meta.Name != "" && c.Meta.Name != c.Name:
		return bad("Meta.Name %q differs from Name %q", c.Meta.Name, c.Name)
	case net.ParseIP(c.BindAddr) == nil:
		return bad("BindAddr %q is not an IP address", c.BindAddr)
	case c.BindPort < 0 || c.BindPort > math.MaxUint16:
		return bad("BindPort %d is out of range", c.BindPort)
	case c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil:
		return bad("AdvertiseAddr %q is not an IP address: resolve the host name first", c.AdvertiseAddr)
	case c.AdvertisePort < 0 || c.AdvertisePort > math.MaxUint16:
		return bad("AdvertisePort %d is out of range", c.AdvertisePort)
	case c.AdvertiseAddr != "" && c.AdvertisePort == 0 && c.BindPort == 0:
		return bad("AdvertiseAddr is set but neither AdvertisePort nor BindPort is: set a port peers can dial")
	case len(c.Label) > memberlist.LabelMaxSize:
		return bad("Label is %d bytes, the limit is %d", len(c.Label), memberlist.LabelMaxSize)
	case c.ProbeInterval <= 0 || c.ProbeTimeout <= 0 || c.GossipInterval <= 0 ||
		c.PushPullInterval <= 0 || c.TCPTimeout <= 0 || c.BroadcastTimeout <= 0:
		return bad("ProbeInterval, ProbeTimeout, GossipInterval, PushPullInterval, TCPTimeout and " +
			"BroadcastTimeout must be positive (start from DefaultConfig)")
	case c.ProbeTimeout >= c.ProbeInterval:
		return bad("ProbeTimeout %v must be shorter than ProbeInterval %v", c.ProbeTimeout, c.ProbeInterval)
	case c.SuspicionMult < 1 || c.SuspicionMaxTimeoutMult < 1 || c.GossipNodes < 1 || c.RetransmitMult < 1:
		return bad("SuspicionMult, SuspicionMaxTimeoutMult, GossipNodes and RetransmitMult must be at least 1")
	case c.GossipToTheDeadTime < 0 || c.DeadNodeReclaimTime < 0:
		return bad("GossipToTheDeadTime and DeadNodeReclaimTime must not be negative")
	}
	m := c.Meta
	m.Name = c.Name
	return checkMetaSize(m)
}

// suspicionBound is the longest a node stays suspect in memberlist in a cluster of n nodes before
// it is declared dead or refutes, plus slack for the probe that ends it.
func (c Config) suspicionBound(n int) time.Duration {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	base := time.Duration(float64(c.SuspicionMult) * scale * float64(c.ProbeInterval))
	return time.Duration(c.SuspicionMaxTimeoutMult)*base + 2*c.ProbeInterval
}

// memberlistConfig translates c; the caller adds delegates and the logger.
func (c Config) memberlistConfig() *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.Name
	mc.Label = c.Label
	mc.BindAddr, mc.BindPort = c.BindAddr, c.BindPort
	mc.AdvertiseAddr, mc.AdvertisePort = c.AdvertiseAddr, c.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = c.BindPort // memberlist replaces it with the chosen port when BindPort is 0
	}
	mc.ProbeInterval, mc.ProbeTimeout = c.ProbeInterval, c.ProbeTimeout
	mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = c.SuspicionMult, c.SuspicionMaxTimeoutMult
	mc.GossipInterval, mc.GossipNodes, mc.RetransmitMult = c.GossipInterval, c.GossipNodes, c.RetransmitMult
	mc.PushPullInterval, mc.TCPTimeout = c.PushPullInterval, c.TCPTimeout
	mc.GossipToTheDeadTime, mc.DeadNodeReclaimTime = c.GossipToTheDeadTime, c.DeadNodeReclaimTime
	return mc
}

// StateExchange is the application state a node exchanges in push/pull syncs.
type StateExchange struct {
	Local func() []byte
	Merge func(remote []byte)
}
