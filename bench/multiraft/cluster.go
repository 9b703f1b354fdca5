package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/ringkv/ringkv/partition"
	"github.com/ringkv/ringkv/raftfsm"
	"github.com/ringkv/ringkv/storage"
)

// cluster is three in-process nodes of one Raft engine replicating every
// partition of a ring, each node with its own Pebble store (storage.Open,
// the settings kvd uses) and its own loopback TCP port.
type cluster interface {
	// Put proposes cmd (a put with a dedup session, as kvd's clients send)
	// to the leader of partition pid and waits until that leader applied
	// it. It returns an error if no leader is known or ctx ends first.
	Put(ctx context.Context, pid uint32, cmd raftfsm.Command) error
	// Applied returns the sum of every partition's applied index on the
	// first node: its growth over a run, divided by the puts, is the puts
	// per Raft entry.
	Applied() uint64
	// Leaders returns how many partitions each node leads.
	Leaders() [3]int
	// Get reads key from node i's (0..2) replica of partition pid, from
	// its local state: found is false if the key is absent there.
	Get(i int, pid uint32, key []byte) (value []byte, found bool, err error)
	// Close stops every node and removes nothing (the caller owns dir).
	Close() error
}

// clusterConfig is what both engines are built from.
type clusterConfig struct {
	Dir        string // one sub-directory per node
	Partitions int
}

// nodeDir returns node i's directory (i in 0..2), created.
func (c clusterConfig) nodeDir(i int) (string, error) {
	d := filepath.Join(c.Dir, fmt.Sprintf("n%d", i+1))
	return d, os.MkdirAll(d, 0o755)
}

// openStore opens node i's Pebble the way kvd does (storage.DefaultConfig).
func (c clusterConfig) openStore(i int) (*storage.Store, error) {
	d, err := c.nodeDir(i)
	if err != nil {
		return nil, err
	}
	sc := storage.DefaultConfig()
	sc.Dir = filepath.Join(d, "db")
	return storage.Open(sc)
}

// listen opens a loopback listener on a free port.
func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// ringOf returns the ring both engines route keys with.
func ringOf(p int) (partition.Ring, error) { return partition.NewRing(p) }
