package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kill sends SIGKILL to node i's kvd (its container stops at once).
func (c *Cluster) Kill(ctx context.Context, i int) error {
	if _, err := c.d.Run(ctx, "kill", "-s", "KILL", c.Nodes[i].Container); err != nil {
		return err
	}
	c.mu.Lock()
	c.killed[i] = true
	c.mu.Unlock()
	return nil
}

// Restart starts node i's container again, on its data dir.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	if _, err := c.d.Run(ctx, "start", c.Nodes[i].Container); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.killed, i)
	c.mu.Unlock()
	return nil
}

// Pause freezes every process of node i (docker pause).
func (c *Cluster) Pause(ctx context.Context, i int) error {
	if _, err := c.d.Run(ctx, "pause", c.Nodes[i].Container); err != nil {
		return err
	}
	c.mu.Lock()
	c.paused[i] = true
	c.mu.Unlock()
	return nil
}

// Unpause resumes node i.
func (c *Cluster) Unpause(ctx context.Context, i int) error {
	if _, err := c.d.Run(ctx, "unpause", c.Nodes[i].Container); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.paused, i)
	c.mu.Unlock()
	return nil
}

// pid is the host PID of node i's kvd, 0 when the container is not running.
func (c *Cluster) pid(ctx context.Context, i int) (int, error) {
	out, err := c.d.Run(ctx, "inspect", "-f", "{{.State.Pid}}", c.Nodes[i].Container)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(out))
}

// iptables runs the host's iptables inside node i's network namespace.
func (c *Cluster) iptables(ctx context.Context, i int, args ...string) error {
	pid, err := c.pid(ctx, i)
	if err != nil {
		return err
	}
	if pid == 0 {
		return fmt.Errorf("cluster: %s is not running", c.Nodes[i].Name)
	}
	_, err = run(ctx, nil, "nsenter", append([]string{"-t", strconv.Itoa(pid), "-n", "iptables", "-w", "5"}, args...)...)
	return err
}

// Drop makes node to drop packets arriving from node from, every one of them
// (probability 1) or each with the given probability. Packets from the host
// (the clients) are never dropped.
func (c *Cluster) Drop(ctx context.Context, to, from int, probability float64) error {
	args := []string{"-A", "INPUT", "-s", c.Nodes[from].IP}
	if probability < 1 {
		args = append(args, "-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(probability, 'f', 3, 64))
	}
	args = append(args, "-j", "DROP")
	return c.iptables(ctx, to, args...)
}

// Isolate cuts node x off from every other started node, both ways.
func (c *Cluster) Isolate(ctx context.Context, x int) error {
	var errs []error
	for _, n := range c.Started() {
		j, _ := c.Index(n.Name)
		if j != x {
			errs = append(errs, c.Cut(ctx, x, j))
		}
	}
	return errors.Join(errs...)
}

// RestartGracefully stops node i gracefully (SIGTERM) and starts it again on its data
// dir.
func (c *Cluster) RestartGracefully(ctx context.Context, i int) error {
	_, err := c.d.Run(ctx, "restart", "-t", "20", c.Nodes[i].Container)
	return err
}

// Cut drops every packet between a and b, both ways.
func (c *Cluster) Cut(ctx context.Context, a, b int) error {
	return errors.Join(c.Drop(ctx, a, b, 1), c.Drop(ctx, b, a, 1))
}

// Partition cuts every link between nodes of different groups.
func (c *Cluster) Partition(ctx context.Context, groups [][]int) error {
	var errs []error
	for gi, g := range groups {
		for _, a := range g {
			for hi, h := range groups {
				if hi == gi {
					continue
				}
				for _, b := range h {
					errs = append(errs, c.Drop(ctx, a, b, 1))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// HealNetwork removes every rule the suite added, on every running node.
func (c *Cluster) HealNetwork(ctx context.Context) error {
	var errs []error
	for i := range c.Nodes {
		c.mu.Lock()
		killed, started := c.killed[i], c.started[i]
		c.mu.Unlock()
		if killed || !started {
			continue // its namespace is gone with its rules
		}
		if err := c.iptables(ctx, i, "-F", "INPUT"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// HealAll resumes paused nodes, restarts killed ones and heals the network.
func (c *Cluster) HealAll(ctx context.Context) error {
	c.mu.Lock()
	var paused, killed []int
	for i := range c.paused {
		paused = append(paused, i)
	}
	for i := range c.killed {
		killed = append(killed, i)
	}
	c.mu.Unlock()
	var errs []error
	for _, i := range paused {
		errs = append(errs, c.Unpause(ctx, i))
	}
	for _, i := range killed {
		errs = append(errs, c.Restart(ctx, i))
	}
	errs = append(errs, c.HealNetwork(ctx))
	return errors.Join(errs...)
}

// Running reports whether node i is neither killed nor paused.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.killed[i] && !c.paused[i]
}

// Size is the node count, spares included.
func (c *Cluster) Size() int { return len(c.Nodes) }

// NodeName is node i's kvd name.
func (c *Cluster) NodeName(i int) string { return c.Nodes[i].Name }
