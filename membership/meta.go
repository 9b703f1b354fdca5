package membership

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// Sentinel errors of this package. Errors returned by it wrap one of these (test with errors.Is) and
// add what differs and what to do.
var (
	// ErrClusterMismatch: a peer belongs to another cluster (both cluster ids are set and differ).
	ErrClusterMismatch = errors.New("membership: cluster id mismatch")
	// ErrPartitionMismatch: a peer uses another partition count P.
	ErrPartitionMismatch = errors.New("membership: partition count mismatch")
	// ErrInvalidMeta: a peer's gossiped metadata cannot be decoded (not a RingKV node, or an
	// incompatible version).
	ErrInvalidMeta = errors.New("membership: invalid node metadata")
	// ErrMetaTooLarge: the encoded Meta exceeds memberlist's 512-byte metadata limit.
	ErrMetaTooLarge = errors.New("membership: node metadata too large")
	// ErrInvalidConfig: Config.Validate rejected the configuration.
	ErrInvalidConfig = errors.New("membership: invalid config")
	// ErrShutdown: the Gossip has been shut down.
	ErrShutdown = errors.New("membership: gossip is shut down")
	// ErrLeft: the node has left the cluster; its metadata can no longer change.
	ErrLeft = errors.New("membership: node has left the cluster")
)

// MetaMaxSize is the largest encoded Meta that gossip can carry (memberlist.MetaMaxSize).
const MetaMaxSize = memberlist.MetaMaxSize

// Meta is the metadata every node gossips about itself.
type Meta struct {
	Name       string // node name; equals Config.Name
	ClientAddr string // host:port of the client API
	PeerAddr   string // host:port of the Raft peer port
	GossipAddr string // host:port of gossip; Start fills it in when empty
	ClusterID  string // "" while the node has not yet joined or bootstrapped a cluster
	Partitions uint32 // P, fixed when the cluster is created
	Replicas   uint32 // R
	BootNonce  uint64 // random per data dir; used to derive a cluster id at bootstrap
	// Leading is a bitmap of the partitions this node currently leads: partition i is bit i%8 of
	// byte i/8 (see LeadingBitmap and Leads). Empty means none; it decodes as nil.
	Leading  []byte
	Draining bool // reserved for draining a node before it leaves
}

// Leads reports whether bit partition of m.Leading is set.
func (m Meta) Leads(partition uint32) bool {
	i := partition / 8
	return uint64(i) < uint64(len(m.Leading)) && m.Leading[i]&(1<<(partition%8)) != 0
}

// LeadingBitmap returns the Leading bitmap with the given partitions set, or nil for none.
func LeadingBitmap(partitions []uint32) []byte {
	var b []byte
	for _, p := range partitions {
		i := int(p / 8)
		if i >= len(b) {
			b = append(b, make([]byte, i+1-len(b))...)
		}
		b[i] |= 1 << (p % 8)
	}
	return b
}

// clone returns m with its own copy of Leading.
func (m Meta) clone() Meta {
	if len(m.Leading) == 0 {
		m.Leading = nil
	} else {
		m.Leading = append([]byte(nil), m.Leading...)
	}
	return m
}

// Wire format, version 1 (binary because it is exact for any string and keeps Leading small):
//
//	version byte (1) | flags byte | 5 x (uvarint length, bytes): Name, ClientAddr, PeerAddr,
//	GossipAddr, ClusterID | uvarint Partitions | uvarint Replicas | 8-byte big-endian BootNonce |
//	uvarint length, Leading bytes
//
// Decoders ignore unknown flag bits and trailing bytes, so later versions can append fields.
const metaVersion = 1

const (
	flagDraining = 1 << 0
	flagLeaving  = 1 << 1 // the node announced a graceful leave (see Gossip.Leave)
)

// encodeMeta returns the wire form of m. leaving marks a node that is about to leave gracefully; it
// lets peers tell "left" from "dead", which memberlist v0.7.0 does not expose (see doc.go).
func encodeMeta(m Meta, leaving bool) []byte {
	b := make([]byte, 0, 48+len(m.Name)+len(m.ClientAddr)+len(m.PeerAddr)+len(m.GossipAddr)+
		len(m.ClusterID)+len(m.Leading))
	var flags byte
	if m.Draining {
		flags |= flagDraining
	}
	if leaving {
		flags |= flagLeaving
	}
	b = append(b, metaVersion, flags)
	for _, s := range [...]string{m.Name, m.ClientAddr, m.PeerAddr, m.GossipAddr, m.ClusterID} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(m.Partitions))
	b = binary.AppendUvarint(b, uint64(m.Replicas))
	b = binary.BigEndian.AppendUint64(b, m.BootNonce)
	b = binary.AppendUvarint(b, uint64(len(m.Leading)))
	return append(b, m.Leading...)
}

// checkMetaSize returns ErrMetaTooLarge when m cannot be gossiped. It measures the largest form
// (with the leaving flag), so a later Leave never overflows.
func checkMetaSize(m Meta) error {
	if n := len(encodeMeta(m, true)); n > MetaMaxSize {
		return fmt.Errorf("%w: %d bytes encoded, the limit is %d (Leading holds %d bytes, "+
			"addresses and names %d): shorten the names or addresses", ErrMetaTooLarge, n, MetaMaxSize,
			len(m.Leading), len(m.Name)+len(m.ClientAddr)+len(m.PeerAddr)+len(m.GossipAddr)+len(m.ClusterID))
	}
	return nil
}

// decodeMeta parses the wire form. It never panics on malformed input.
func decodeMeta(b []byte) (m Meta, leaving bool, err error) {
	r := metaReader{b: b}
	version, flags := r.byte(), r.byte()
	if r.err == nil && version != metaVersion {
		return Meta{}, false, fmt.Errorf("%w: wire version %d, this node reads version %d",
			ErrInvalidMeta, version, metaVersion)
	}
	m.Name, m.ClientAddr, m.PeerAddr = r.string(), r.string(), r.string()
	m.GossipAddr, m.ClusterID = r.string(), r.string()
	m.Partitions, m.Replicas = r.uint32(), r.uint32()
	m.BootNonce = r.uint64be()
	if n := r.uvarint(); n > 0 {
		m.Leading = append([]byte(nil), r.bytes(n)...)
	}
	if r.err != nil {
		return Meta{}, false, fmt.Errorf("%w: %v", ErrInvalidMeta, r.err)
	}
	m.Draining = flags&flagDraining != 0
	return m, flags&flagLeaving != 0, nil
}

// metaReader consumes the wire form; the first error sticks and later reads return zero values.
type metaReader struct {
	b   []byte
	err error
}

func (r *metaReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("truncated or malformed %s", what)
	}
	r.b = nil
}

func (r *metaReader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail("header")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *metaReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *metaReader) uint32() uint32 {
	v := r.uvarint()
	if v > 1<<32-1 {
		r.fail("uint32")
		return 0
	}
	return uint32(v)
}

func (r *metaReader) uint64be() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.fail("uint64")
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *metaReader) bytes(n uint64) []byte {
	if r.err != nil || n > uint64(len(r.b)) {
		r.fail("field")
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

func (r *metaReader) string() string { return string(r.bytes(r.uvarint())) }

// checkPeer returns nil when a node with meta peer may be part of the cluster of a node with meta
// local, and otherwise an error wrapping ErrClusterMismatch or ErrPartitionMismatch that says what
// differs and what to do. joining is true when the local node is the one joining (the advice then
// concerns the local node, otherwise the peer).
func checkPeer(local, peer Meta, joining bool) error {
	newcomer, cluster := peer.Name, local.Name+"'s cluster"
	if joining {
		newcomer, cluster = local.Name, peer.Name+"'s cluster"
	}
	if local.ClusterID != "" && peer.ClusterID != "" && local.ClusterID != peer.ClusterID {
		if joining {
			return fmt.Errorf("%w: node %s has cluster id %s, this node %s has cluster id %s: "+
				"start %s with an empty --data-dir to join %s, or --join members of its own cluster",
				ErrClusterMismatch, peer.Name, peer.ClusterID, local.Name, local.ClusterID, newcomer, cluster)
		}
		return fmt.Errorf("%w: node %s has cluster id %s, this cluster is %s: "+
			"start %s with an empty --data-dir to join this cluster",
			ErrClusterMismatch, peer.Name, peer.ClusterID, local.ClusterID, newcomer)
	}
	if local.Partitions != peer.Partitions {
		want := peer.Partitions
		if !joining {
			want = local.Partitions
		}
		return fmt.Errorf("%w: node %s uses %d partitions, node %s uses %d: the partition count is "+
			"fixed when a cluster is created; start %s with --partitions %d (and an empty --data-dir "+
			"if it already holds data) to join %s",
			ErrPartitionMismatch, peer.Name, peer.Partitions, local.Name, local.Partitions,
			newcomer, want, cluster)
	}
	return nil
}
