package client

import (
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/partition"
)

const (
	// minRefreshInterval spaces routing-table refreshes, so that a burst of
	// failures costs the cluster one Partitions call, not one per failure.
	minRefreshInterval = 100 * time.Millisecond
	// quarantine is how long an endpoint whose attempt failed with a
	// connection error or timed out is tried only after the others.
	quarantine = 3 * time.Second
)

type routeKind int

const (
	// routeLeader: strong reads and writes, to the key's partition leader.
	routeLeader routeKind = iota
	// routeAny: eventual reads and cluster questions, rotating over the
	// configured endpoints.
	routeAny
	// routeFixed: one given endpoint only.
	routeFixed
)

// router keeps the routing table (partition -> leader client address) and
// the health of endpoints. The table is only ever a hint: any node forwards
// what it cannot serve, so a stale entry costs a hop, not correctness.
type router struct {
	endpoints []string // configured, in order
	scheme    string   // prefix for addresses learned from the cluster
	now       func() time.Time
	rr        atomic.Uint64 // rotation over endpoints

	mu          sync.Mutex
	ring        partition.Ring
	ringP       uint32 // 0: no ring yet
	leaders     map[partition.ID]string
	lastRefresh time.Time // when the last refresh started
	refreshing  bool
	bad         map[string]time.Time // endpointKey -> tried last until
}

func newRouter(endpoints []string, now func() time.Time) *router {
	r := &router{
		endpoints: endpoints,
		scheme:    "",
		now:       now,
		leaders:   make(map[partition.ID]string),
		bad:       make(map[string]time.Time),
	}
	for _, e := range endpoints {
		if strings.HasPrefix(e, "https://") {
			r.scheme = "https://"
		}
	}
	// Clients started together should not all hammer the first endpoint.
	r.rr.Store(rand.Uint64N(uint64(len(endpoints))))
	return r
}

// addr turns a host:port the cluster reported into an endpoint string.
func (r *router) addr(hostport string) string {
	return r.scheme + hostport
}

// partitionOf returns the key's partition when the ring is known.
func (r *router) partitionOf(key []byte) (partition.ID, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ringP == 0 {
		return 0, false
	}
	return r.ring.Of(key), true
}

// leader returns the known leader endpoint of partition id, unless it is
// quarantined.
func (r *router) leader(id partition.ID) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.leaders[id]
	if !ok {
		return "", false
	}
	if until, isBad := r.bad[endpointKey(l)]; isBad && r.now().Before(until) {
		return "", false
	}
	return l, true
}

// setLeader records a leader hint (a client address) for partition id.
func (r *router) setLeader(id partition.ID, hostport string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ringP == 0 || uint32(id) >= r.ringP {
		return
	}
	r.leaders[id] = r.addr(hostport)
}

// next picks the next configured endpoint in rotation, preferring endpoints
// that are not quarantined.
func (r *router) next() string {
	n := uint64(len(r.endpoints))
	start := r.rr.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	best, bestUntil := "", time.Time{}
	for i := range n {
		e := r.endpoints[(start+i)%n]
		until, isBad := r.bad[endpointKey(e)]
		if !isBad || !now.Before(until) {
			return e
		}
		if best == "" || until.Before(bestUntil) {
			best, bestUntil = e, until
		}
	}
	return best
}

// markBad quarantines an endpoint after a connection error or a timeout.
func (r *router) markBad(endpoint string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bad[endpointKey(endpoint)] = r.now().Add(quarantine)
}

// markGood lifts a quarantine after a successful call.
func (r *router) markGood(endpoint string) {
	k := endpointKey(endpoint)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.bad, k)
}

// startRefresh reports whether the caller should refresh the table now: no
// refresh is running and none started in the last minRefreshInterval. When
// it returns true the caller must call finishRefresh.
func (r *router) startRefresh(onlyIfEmpty bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if onlyIfEmpty && r.ringP != 0 {
		return false
	}
	now := r.now()
	if r.refreshing || (!r.lastRefresh.IsZero() && now.Sub(r.lastRefresh) < minRefreshInterval) {
		return false
	}
	r.refreshing = true
	r.lastRefresh = now
	return true
}

func (r *router) finishRefresh() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refreshing = false
}

// apply replaces the table with a Partitions answer.
func (r *router) apply(resp *ringkvv1.PartitionsResponse) error {
	p := resp.GetPartitionCount()
	if p == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p != r.ringP {
		ring, err := partition.NewRing(int(p))
		if err != nil {
			return err
		}
		r.ring, r.ringP = ring, p
	}
	leaders := make(map[partition.ID]string, len(resp.GetPartitions()))
	for _, part := range resp.GetPartitions() {
		if a := part.GetLeaderClientAddr(); a != "" && part.GetId() < p {
			leaders[partition.ID(part.GetId())] = r.addr(a)
		}
	}
	r.leaders = leaders
	return nil
}
