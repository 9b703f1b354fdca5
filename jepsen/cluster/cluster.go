package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Ports every node uses inside its container.
const (
	ClientPort = 7101
	PeerPort   = 7201
	GossipPort = 7301
)

// Config describes a cluster.
type Config struct {
	// Prefix names the network and the containers (Prefix-n1, ...).
	Prefix string
	// Image is the node image (see BuildImage).
	Image string
	// Nodes is the node count of the cluster formed at the start
	// (--bootstrap-expect Nodes).
	Nodes int
	// Spares are extra nodes, n<Nodes+1>..., created but not started: the
	// membership nemesis starts one (StartSpare) to make it join the
	// running cluster (--join, no --bootstrap-expect).
	Spares int
	// Subnet is the network's IPv4 /24, e.g. "10.77.4.0/24"; node i (from 0)
	// gets host address 11+i.
	Subnet string
	// Partitions and Replicas are kvd's --partitions and --replicas.
	Partitions, Replicas int
	// DataDir holds one bind-mounted data folder per node (DataDir/n1, ...).
	DataDir string
	// ExtraArgs are appended to every kvd command line.
	ExtraArgs []string
	Log       *slog.Logger
}

// DefaultConfig is a 5-node cluster on 10.77.4.0/24 with 16 partitions.
func DefaultConfig() Config {
	return Config{Prefix: "ringkv-jepsen", Image: "ringkv-jepsen:dev", Nodes: 5, Subnet: "10.77.4.0/24", Partitions: 16, Replicas: 3}
}

// TestConfig is the smallest cluster the faults make sense on: 3 nodes.
func TestConfig(dataDir string) Config {
	c := DefaultConfig()
	c.Nodes, c.DataDir = 3, dataDir
	return c
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	_, ipnet, err := net.ParseCIDR(c.Subnet)
	switch {
	case c.Prefix == "":
		return errors.New("cluster: Prefix is empty")
	case c.Image == "":
		return errors.New("cluster: Image is empty")
	case c.Nodes < 1 || c.Spares < 0 || c.Nodes+c.Spares > 9:
		return fmt.Errorf("cluster: %d nodes and %d spares; at most 9 in all", c.Nodes, c.Spares)
	case err != nil:
		return fmt.Errorf("cluster: Subnet %q: %w", c.Subnet, err)
	case ipnet.IP.To4() == nil || !strings.HasSuffix(c.Subnet, "/24"):
		return fmt.Errorf("cluster: Subnet %q must be an IPv4 /24", c.Subnet)
	case c.Partitions < 1 || c.Replicas < 1 || c.Replicas > c.Nodes:
		return fmt.Errorf("cluster: %d partitions, %d replicas on %d nodes is not a cluster", c.Partitions, c.Replicas, c.Nodes)
	case c.DataDir == "":
		return errors.New("cluster: DataDir is empty")
	}
	return nil
}

// Node is one container.
type Node struct {
	// Name is the kvd node name (n1, n2, ...).
	Name string
	// Container is the docker container name.
	Container string
	IP        string
	// Spare nodes are not started with the cluster (see StartSpare).
	Spare bool
}

// ClientAddr is the node's client API address.
func (n Node) ClientAddr() string { return net.JoinHostPort(n.IP, strconv.Itoa(ClientPort)) }

// Cluster is a running set of node containers.
type Cluster struct {
	cfg     Config
	d       *Docker
	log     *slog.Logger
	network string
	// Nodes are every node, spares included (spares come last); node i is
	// also the nemeses' index i.
	Nodes []Node
	// Gateway is the host's address on the network (the clients' source).
	Gateway string

	mu     sync.Mutex
	killed map[int]bool
	paused map[int]bool
	// started holds the nodes whose container was created; retired the
	// nodes taken out of the cluster (kvctl remove) that keep running but
	// are no target for faults.
	started map[int]bool
	retired map[int]bool
}

// Start removes what a crashed earlier run left behind with the same
// prefix, creates the network and starts every node.
func Start(ctx context.Context, d *Docker, cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{cfg: cfg, d: d, log: cfg.Log, network: cfg.Prefix, killed: map[int]bool{}, paused: map[int]bool{},
		started: map[int]bool{}, retired: map[int]bool{}}
	base := strings.TrimSuffix(cfg.Subnet, "0/24")
	c.Gateway = base + "1"
	for i := range cfg.Nodes + cfg.Spares {
		name := fmt.Sprintf("n%d", i+1)
		c.Nodes = append(c.Nodes, Node{Name: name, Container: cfg.Prefix + "-" + name, IP: fmt.Sprintf("%s%d", base, 11+i), Spare: i >= cfg.Nodes})
	}
	if err := Cleanup(ctx, d, cfg.Prefix); err != nil {
		return nil, err
	}
	if _, err := d.Run(ctx, "network", "create", "--driver", "bridge", "--label", Label,
		"--subnet", cfg.Subnet, "--gateway", c.Gateway, c.network); err != nil {
		return nil, fmt.Errorf("cluster: create network: %w", err)
	}
	for i := range cfg.Nodes {
		if err := c.startNode(ctx, i, true); err != nil {
			return c, err
		}
	}
	c.log.Info("cluster started", "nodes", cfg.Nodes, "subnet", cfg.Subnet, "partitions", cfg.Partitions)
	return c, nil
}

// startNode creates node i's container: a founder with --bootstrap-expect,
// a spare that joins the running cluster without it.
func (c *Cluster) startNode(ctx context.Context, i int, founder bool) error {
	cfg, n := c.cfg, c.Nodes[i]
	var joins []string
	for j := range cfg.Nodes {
		joins = append(joins, net.JoinHostPort(c.Nodes[j].IP, strconv.Itoa(GossipPort)))
	}
	dir, err := filepath.Abs(filepath.Join(cfg.DataDir, n.Name))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	args := []string{"run", "-d", "--name", n.Container, "--hostname", n.Name, "--label", Label,
		"--network", c.network, "--ip", n.IP, "-v", dir + ":/data",
		cfg.Image,
		"--name", n.Name, "--data-dir", "/data",
		"--client-addr", fmt.Sprintf("0.0.0.0:%d", ClientPort),
		"--peer-addr", fmt.Sprintf("0.0.0.0:%d", PeerPort),
		"--gossip-addr", fmt.Sprintf("0.0.0.0:%d", GossipPort),
		"--advertise-host", n.IP,
		"--join", strings.Join(joins, ","),
		"--partitions", strconv.Itoa(cfg.Partitions),
		"--replicas", strconv.Itoa(cfg.Replicas),
	}
	if founder {
		args = append(args, "--bootstrap-expect", strconv.Itoa(cfg.Nodes))
	}
	args = append(args, cfg.ExtraArgs...)
	if _, err := c.d.Run(ctx, args...); err != nil {
		return fmt.Errorf("cluster: start %s: %w", n.Name, err)
	}
	c.mu.Lock()
	c.started[i] = true
	c.mu.Unlock()
	return nil
}

// StartSpare starts the first spare not started yet: kvd with --join and
// no --bootstrap-expect, so it joins the running cluster and placement
// moves replicas onto it. It returns the spare's index, or false if every
// spare is in use.
func (c *Cluster) StartSpare(ctx context.Context) (int, bool, error) {
	c.mu.Lock()
	idx := -1
	for i, n := range c.Nodes {
		if n.Spare && !c.started[i] {
			idx = i
			break
		}
	}
	c.mu.Unlock()
	if idx < 0 {
		return 0, false, nil
	}
	return idx, true, c.startNode(ctx, idx, false)
}

// SparesLeft is how many spares have not been started.
func (c *Cluster) SparesLeft() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for i, nd := range c.Nodes {
		if nd.Spare && !c.started[i] {
			n++
		}
	}
	return n
}

// Retire marks node i as taken out of the cluster: it keeps running (and
// is still healed and its log collected) but faults no longer target it.
func (c *Cluster) Retire(i int) {
	c.mu.Lock()
	c.retired[i] = true
	c.mu.Unlock()
}

// Active lists the nodes faults may target: started and not retired.
func (c *Cluster) Active() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for i := range c.Nodes {
		if c.started[i] && !c.retired[i] {
			out = append(out, i)
		}
	}
	return out
}

// Started lists the nodes whose container was created (founders and the
// spares started so far), retired ones included.
func (c *Cluster) Started() []Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Node
	for i, n := range c.Nodes {
		if c.started[i] {
			out = append(out, n)
		}
	}
	return out
}

// Cleanup removes the containers and network named with prefix that carry
// the suite's label.
func Cleanup(ctx context.Context, d *Docker, prefix string) error {
	out, err := d.Run(ctx, "ps", "-aq", "--filter", "label="+Label, "--filter", "name=^"+prefix+"-")
	if err != nil {
		return fmt.Errorf("cluster: list leftovers: %w", err)
	}
	if ids := strings.Fields(out); len(ids) > 0 {
		// Paused containers must be resumed before they can be removed.
		_, _ = d.Run(ctx, append([]string{"unpause"}, ids...)...)
		if _, err := d.Run(ctx, append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
			return fmt.Errorf("cluster: remove leftovers: %w", err)
		}
	}
	out, err = d.Run(ctx, "network", "ls", "-q", "--filter", "label="+Label, "--filter", "name=^"+prefix+"$")
	if err != nil {
		return fmt.Errorf("cluster: list networks: %w", err)
	}
	for _, id := range strings.Fields(out) {
		if _, err := d.Run(ctx, "network", "rm", id); err != nil {
			return fmt.Errorf("cluster: remove network: %w", err)
		}
	}
	return nil
}

// Destroy removes the containers and the network.
func (c *Cluster) Destroy(ctx context.Context) error {
	return Cleanup(ctx, c.d, c.cfg.Prefix)
}

// Index returns the index (from 0) of the node named name.
func (c *Cluster) Index(name string) (int, bool) {
	for i, n := range c.Nodes {
		if n.Name == name {
			return i, true
		}
	}
	return 0, false
}

// WaitReady polls the /readyz of every active node (started, not retired)
// until all answer 200 or timeout.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	pending := map[string]string{} // node -> last answer
	var nodes []Node
	for _, i := range c.Active() {
		nodes = append(nodes, c.Nodes[i])
	}
	for _, n := range nodes {
		pending[n.Name] = "no answer"
	}
	for {
		for _, n := range nodes {
			if _, ok := pending[n.Name]; !ok {
				continue
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.ClientAddr()+"/readyz", nil)
			resp, err := hc.Do(req)
			if err != nil {
				pending[n.Name] = err.Error()
				continue
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				delete(pending, n.Name)
			} else {
				pending[n.Name] = strings.TrimSpace(string(body))
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			var parts []string
			for _, n := range nodes {
				if why, ok := pending[n.Name]; ok {
					parts = append(parts, n.Name+": "+why)
				}
			}
			return fmt.Errorf("cluster: not ready after %v: %s", timeout, strings.Join(parts, "; "))
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// CollectLogs writes each node's container log (stdout and stderr) to
// dir/<node>.log.
func (c *Cluster) CollectLogs(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, n := range c.Started() {
		f, err := os.Create(filepath.Join(dir, n.Name+".log"))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := c.d.logs(ctx, n.Container, f); err != nil {
			errs = append(errs, err)
		}
		f.Close()
	}
	return errors.Join(errs...)
}
