package node

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/ringkv/ringkv/membership"
)

// Nodes declared removed (`kvctl remove`) are recorded by every node that
// was reachable at the time. The list then spreads through gossip's
// push/pull syncs (anti-entropy), so a node that missed the broadcast
// (stopped, or cut off) learns it on its next sync, including the removed
// node itself when it comes back: it then hosts nothing, deletes the
// replicas its partitions' leaders no longer count it in, and reports
// itself not ready with errRemovedSelf.

// removedState is what a node shares in push/pull syncs.
type removedState struct {
	ClusterID string   `json:"cluster_id"`
	Removed   []string `json:"removed"`
}

// errRemovedSelf is the readiness error of a node declared removed.
var errRemovedSelf = errors.New("this node was declared removed (kvctl remove) and hosts nothing; " +
	"to add this machine back, start kvd under a new --name with an empty --data-dir and --join")

func (n *Node) localRemovedState() []byte {
	id := n.ident()
	if id.ClusterID == "" || len(id.Removed) == 0 {
		return nil
	}
	b, _ := json.Marshal(removedState{ClusterID: id.ClusterID, Removed: id.Removed})
	return b
}

// mergeRemovedState adds the names a peer knows to be removed to this
// node's identity (durably). Peers of another cluster are ignored.
func (n *Node) mergeRemovedState(b []byte) {
	var st removedState
	if err := json.Unmarshal(b, &st); err != nil {
		n.log.Warn("ignoring a peer's removed-node list", "error", err)
		return
	}
	id := n.ident()
	if st.ClusterID == "" || st.ClusterID != id.ClusterID {
		return
	}
	var added []string
	for _, name := range st.Removed {
		if name != "" && !slices.Contains(id.Removed, name) && !slices.Contains(added, name) {
			added = append(added, name)
		}
	}
	if len(added) == 0 {
		return
	}
	err := n.updateIdentity(func(id *identity) {
		for _, name := range added {
			if !slices.Contains(id.Removed, name) {
				id.Removed = append(id.Removed, name)
			}
		}
	})
	if err != nil {
		n.log.Error("recording removed nodes learned from a peer", "removed", added, "error", err)
		return
	}
	if slices.Contains(added, n.cfg.Name) {
		n.log.Error("this node was declared removed while it was unreachable; it gives up its replicas and hosts nothing",
			"hint", errRemovedSelf.Error())
	} else {
		n.log.Info("learned of removed nodes from a peer", "removed", added)
	}
}

// removedSelf reports whether this node has been declared removed.
func (n *Node) removedSelf() bool {
	return slices.Contains(n.ident().Removed, n.cfg.Name)
}

// syncRemoved learns the removed-node list of the cluster this node just
// joined before it acts in it: a push/pull with a few members (a gossip
// join, which exchanges state; the periodic syncs come only every
// PushPullInterval). Without it a new node could lead a partition and add
// a removed node back in the meantime.
func (n *Node) syncRemoved(clusterID string) {
	var addrs []string
	for _, m := range n.gossip.Members() {
		if m.Meta.ClusterID == clusterID && m.Status == membership.StatusAlive && m.Meta.Name != n.cfg.Name && m.Meta.GossipAddr != "" {
			addrs = append(addrs, m.Meta.GossipAddr)
		}
		if len(addrs) == 3 {
			break
		}
	}
	if len(addrs) == 0 {
		return
	}
	if _, err := n.gossip.Join(addrs); err != nil {
		n.log.Warn("syncing the removed-node list with the cluster", "error", err)
	}
}
