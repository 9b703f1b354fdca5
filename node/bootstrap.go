package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"

	"github.com/ringkv/ringkv/partition"
	"github.com/ringkv/ringkv/replica"
	"github.com/ringkv/ringkv/storage"
)

// identity is what a data directory remembers about the node and its cluster.
// It is written before anything that depends on it, so a restart at any point
// resumes where the node left off.
type identity struct {
	Name           string          `json:"name"`
	ClusterID      string          `json:"cluster_id,omitempty"`
	Partitions     int             `json:"partitions"`
	Replicas       int             `json:"replicas"`
	BootNonce      uint64          `json:"boot_nonce"`
	Bootstrapped   bool            `json:"bootstrapped"`
	InitialMembers []initialMember `json:"initial_members,omitempty"`
	// Draining: an operator asked to move every replica off this node.
	Draining bool `json:"draining,omitempty"`
	// Removed: nodes an operator declared gone for good.
	Removed []string `json:"removed,omitempty"`
}

// ident returns a copy of the node's identity.
func (n *Node) ident() identity {
	n.idMu.Lock()
	defer n.idMu.Unlock()
	id := n.id
	id.InitialMembers = slices.Clone(id.InitialMembers)
	id.Removed = slices.Clone(id.Removed)
	return id
}

// updateIdentity changes the identity, stores it durably, then publishes it.
func (n *Node) updateIdentity(f func(*identity)) error {
	n.idMu.Lock()
	defer n.idMu.Unlock()
	id := n.id
	id.InitialMembers = slices.Clone(id.InitialMembers)
	id.Removed = slices.Clone(id.Removed)
	f(&id)
	if err := saveIdentity(n.store, id); err != nil {
		return err
	}
	n.id = id
	return nil
}

type initialMember struct {
	Name     string `json:"name"`
	PeerAddr string `json:"peer_addr"`
}

const identityKey = "identity"

// loadIdentity reads the data directory's identity, or creates one for a new
// directory, and refuses a configuration that contradicts it.
func loadIdentity(store *storage.Store, cfg Config) (identity, error) {
	raw, ok, err := store.GetMeta(identityKey)
	if err != nil {
		return identity{}, err
	}
	if !ok {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id := identity{Name: cfg.Name, Partitions: cfg.Partitions, Replicas: cfg.Replicas, BootNonce: binary.BigEndian.Uint64(b[:]) | 1}
		return id, saveIdentity(store, id)
	}
	var id identity
	if err := json.Unmarshal(raw, &id); err != nil {
		return identity{}, fmt.Errorf("data dir %s: unreadable identity record: %w", cfg.DataDir, err)
	}
	switch {
	case id.Name != cfg.Name:
		return identity{}, fmt.Errorf("data dir %s belongs to node %q, but this node is named %q: use --name %s or another --data-dir", cfg.DataDir, id.Name, cfg.Name, id.Name)
	case id.Partitions != cfg.Partitions:
		return identity{}, fmt.Errorf("data dir %s belongs to a cluster with %d partitions, but this node was started with --partitions %d: the partition count is fixed when a cluster is created; restart with --partitions %d", cfg.DataDir, id.Partitions, cfg.Partitions, id.Partitions)
	}
	return id, nil
}

func saveIdentity(store *storage.Store, id identity) error {
	raw, err := json.Marshal(id)
	if err != nil {
		return err
	}
	return store.SetMeta(identityKey, raw)
}

// clusterID derives the new cluster's id from its founding members, so every
// founder computes the same id without talking about it.
func clusterID(members []initialMember, nonces map[string]uint64) string {
	h := sha256.New()
	for _, m := range members {
		fmt.Fprintf(h, "%s:%d\n", m.Name, nonces[m.Name])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// bootstrapWhenReady forms a new cluster once --bootstrap-expect nodes without
// a cluster have met, or adopts the cluster it finds when it joins one.
func (n *Node) bootstrapWhenReady() {
	defer n.ctrl.Done()
	var lastLog time.Time
	for {
		if n.ident().ClusterID != "" {
			// A restart in the middle of bootstrapping: finish it.
			if err := n.bootstrapReplicas(); err != nil {
				n.log.Error("bootstrap failed", "error", err)
			}
			return
		}
		alive := n.aliveMembers()
		var waiting []initialMember
		nonces := map[string]uint64{}
		existing, replicas, existingAddr := "", 0, ""
		for _, m := range alive {
			if m.Meta.ClusterID != "" {
				existing, replicas, existingAddr = m.Meta.ClusterID, int(m.Meta.Replicas), m.Meta.ClientAddr
				continue
			}
			waiting = append(waiting, initialMember{Name: m.Meta.Name, PeerAddr: m.Meta.PeerAddr})
			nonces[m.Meta.Name] = m.Meta.BootNonce
		}
		switch {
		case existing != "" && n.cfg.BootstrapExpect > 0:
			// Another founder may have bootstrapped before this node met every
			// founder: if the cluster names this node a founder, bootstrap the
			// replicas the others configured it for; otherwise join.
			founders, err := n.askFounders(existingAddr)
			if err != nil {
				n.log.Debug("asking for the cluster's founders", "error", err)
				break
			}
			if !slices.ContainsFunc(founders, func(m initialMember) bool { return m.Name == n.cfg.Name }) {
				n.adoptCluster(existing, replicas)
				return
			}
			if err := n.updateIdentity(func(id *identity) { id.ClusterID, id.InitialMembers = existing, founders }); err != nil {
				n.log.Error("saving cluster identity", "error", err)
				return
			}
			if err := n.bootstrapReplicas(); err != nil {
				n.log.Error("bootstrap failed", "error", err)
			}
			return
		case existing != "":
			n.adoptCluster(existing, replicas)
			return
		case n.cfg.BootstrapExpect == 0:
			// Joining: wait until gossip finds the existing cluster.
		case len(waiting) == n.cfg.BootstrapExpect:
			err := n.updateIdentity(func(id *identity) {
				id.ClusterID = clusterID(waiting, nonces)
				id.InitialMembers = waiting
			})
			if err != nil {
				n.log.Error("saving cluster identity", "error", err)
				return
			}
			if err := n.bootstrapReplicas(); err != nil {
				n.log.Error("bootstrap failed", "error", err)
			}
			return
		case len(waiting) > n.cfg.BootstrapExpect && time.Since(lastLog) > 5*time.Second:
			n.log.Error("more nodes are waiting to form a cluster than --bootstrap-expect allows; start exactly that many nodes",
				"waiting", len(waiting), "bootstrap_expect", n.cfg.BootstrapExpect)
			lastLog = time.Now()
		case time.Since(lastLog) > 5*time.Second:
			n.log.Info("waiting for nodes to form the cluster", "have", len(waiting), "bootstrap_expect", n.cfg.BootstrapExpect)
			lastLog = time.Now()
		}
		select {
		case <-n.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// askFounders asks a node of the existing cluster who founded it.
func (n *Node) askFounders(clientAddr string) ([]initialMember, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := n.fwd.cluster(clientAddr).Status(ctx, connect.NewRequest(&ringkvv1.StatusRequest{}))
	if err != nil {
		return nil, err
	}
	var out []initialMember
	for _, f := range resp.Msg.Founders {
		name, addr, ok := strings.Cut(f, "@")
		if !ok {
			return nil, fmt.Errorf("malformed founder %q", f)
		}
		out = append(out, initialMember{Name: name, PeerAddr: addr})
	}
	if len(out) == 0 {
		return nil, errors.New("the cluster reports no founders yet")
	}
	return out, nil
}

// bootstrapReplicas creates this node's replicas of the initial placement and
// gives each the same first configuration that every founder gives it.
func (n *Node) bootstrapReplicas() error {
	id := n.ident()
	n.mux.SetClusterID(id.ClusterID)
	if err := n.gossip.UpdateMeta(n.meta()); err != nil {
		return err
	}
	names := make([]string, len(id.InitialMembers))
	addrs := map[string]string{}
	for i, m := range id.InitialMembers {
		names[i] = m.Name
		addrs[m.Name] = m.PeerAddr
	}
	placement := partition.PlaceAll(n.ring, names, id.Replicas)
	hosted := 0
	for pid := range id.Partitions {
		reps := placement[partition.ID(pid)]
		if !slices.Contains(reps, n.cfg.Name) {
			continue
		}
		r := n.replica(uint32(pid))
		if r == nil {
			var err error
			if r, err = n.openReplica(uint32(pid)); err != nil {
				return fmt.Errorf("partition %d: %w", pid, err)
			}
		}
		servers := make([]replica.Server, 0, len(reps))
		for _, name := range reps {
			servers = append(servers, replica.Server{ID: name, Addr: addrs[name], Voter: true})
		}
		if err := r.Bootstrap(servers); err != nil && err != replica.ErrBootstrapped {
			return fmt.Errorf("partition %d: %w", pid, err)
		}
		hosted++
	}
	if err := n.updateIdentity(func(id *identity) { id.Bootstrapped = true }); err != nil {
		return err
	}
	n.bootstrapped.Store(true)
	n.log.Info("cluster bootstrapped", "cluster", id.ClusterID, "members", names, "replicas_hosted", hosted)
	return nil
}

// adoptCluster makes a fresh node a member of the running cluster it joined.
// It hosts no replica until the cluster gives it some.
func (n *Node) adoptCluster(id string, replicas int) {
	err := n.updateIdentity(func(ident *identity) {
		ident.ClusterID = id
		ident.Bootstrapped = true
		if replicas > 0 {
			ident.Replicas = replicas
		}
	})
	if err != nil {
		n.log.Error("saving cluster identity", "error", err)
		return
	}
	n.mux.SetClusterID(id)
	if err := n.gossip.UpdateMeta(n.meta()); err != nil {
		n.log.Warn("gossiping cluster id", "error", err)
	}
	n.syncRemoved(id)
	n.bootstrapped.Store(true)
	n.log.Info("joined existing cluster", "cluster", id)
}
