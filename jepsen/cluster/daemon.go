package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ipForwardPath is the sysctl that dockerd would turn on.
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// Daemon is the docker daemon the suite uses. When one was already running,
// Stop leaves it alone; when EnsureDaemon started one, Stop stops it by its
// PID and restores the host's iptables rules and ip_forward as they were.
type Daemon struct {
	own       bool
	cmd       *exec.Cmd
	done      chan struct{}
	stateDir  string
	log       *slog.Logger
	ipForward string
}

// Own reports whether EnsureDaemon started the daemon.
func (d *Daemon) Own() bool { return d.own }

// PID is the started daemon's process id (0 when it was not ours).
func (d *Daemon) PID() int {
	if !d.own {
		return 0
	}
	return d.cmd.Process.Pid
}

// EnsureDaemon returns the running docker daemon, or starts one. Before
// starting one it saves the host's iptables and ip6tables rules into
// stateDir; the daemon's own log goes to stateDir/dockerd.log.
func EnsureDaemon(ctx context.Context, d *Docker, stateDir string, log *slog.Logger) (*Daemon, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	_, err := d.Run(pingCtx, "info", "--format", "{{.ServerVersion}}")
	cancel()
	if err == nil {
		log.Info("using the running docker daemon")
		return &Daemon{log: log}, nil
	}
	if _, lerr := exec.LookPath("dockerd"); lerr != nil {
		return nil, fmt.Errorf("cluster: no docker daemon answers (%v) and dockerd is not installed: apt-get install -y docker.io", err)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, err
	}
	dm := &Daemon{own: true, stateDir: stateDir, log: log, done: make(chan struct{})}
	if err := dm.saveHostNet(ctx); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(stateDir, "dockerd.log"))
	if err != nil {
		return nil, err
	}
	// No iptables rules, no forwarding, no default bridge: the suite's own
	// network is enough for host-to-container and container-to-container
	// traffic, and the host stays as it was.
	dm.cmd = exec.Command("dockerd", "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none")
	dm.cmd.Stdout, dm.cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal must not stop the
	// daemon before the containers are removed.
	dm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := dm.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("cluster: start dockerd: %w", err)
	}
	go func() {
		_ = dm.cmd.Wait()
		logf.Close()
		close(dm.done)
	}()
	log.Info("started dockerd", "pid", dm.cmd.Process.Pid, "log", logf.Name())
	deadline := time.Now().Add(90 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := d.Run(pctx, "info", "--format", "{{.ServerVersion}}")
		cancel()
		if err == nil {
			return dm, nil
		}
		select {
		case <-dm.done:
			dm.restoreHostNet()
			return nil, fmt.Errorf("cluster: dockerd exited during startup; see %s", logf.Name())
		case <-ctx.Done():
			dm.Stop()
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			dm.Stop()
			return nil, fmt.Errorf("cluster: dockerd did not answer within 90s: %v; see %s", err, logf.Name())
		}
	}
}

// Stop stops a daemon EnsureDaemon started (SIGTERM, then SIGKILL after 30 s)
// and restores the host's network settings. It does nothing for a daemon
// that was already running.
func (d *Daemon) Stop() error {
	if d == nil || !d.own {
		return nil
	}
	var errs []error
	select {
	case <-d.done:
	default:
		pid := d.cmd.Process.Pid
		d.log.Info("stopping dockerd", "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			d.log.Warn("dockerd ignored SIGTERM for 30s; killing it", "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			select {
			case <-d.done:
			case <-time.After(10 * time.Second):
				errs = append(errs, fmt.Errorf("cluster: dockerd (pid %d) did not exit", pid))
			}
		}
	}
	if err := d.restoreHostNet(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (d *Daemon) saveHostNet(ctx context.Context) error {
	if b, err := os.ReadFile(ipForwardPath); err == nil {
		d.ipForward = strings.TrimSpace(string(b))
	}
	for _, v := range ipFamilies {
		out, err := run(ctx, nil, v.save)
		if err != nil {
			if _, lerr := exec.LookPath(v.save); lerr != nil {
				continue // no such tool, nothing to save
			}
			return fmt.Errorf("cluster: save host rules: %w", err)
		}
		if err := os.WriteFile(filepath.Join(d.stateDir, v.file), []byte(out+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// restoreHostNet puts back the saved rules. Tables that did not exist before
// get their built-in chains back to ACCEPT with no rules and no user chains,
// and are deleted when nftables backs iptables.
func (d *Daemon) restoreHostNet() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, v := range ipFamilies {
		saved, err := os.ReadFile(filepath.Join(d.stateDir, v.file))
		if err != nil {
			continue
		}
		now, err := run(ctx, nil, v.save)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		had := tables(string(saved))
		script := string(saved)
		var added []string
		for _, t := range tables(now) {
			if !contains(had, t) {
				script += emptyTable(t)
				added = append(added, t)
			}
		}
		if strings.TrimSpace(script) == "" {
			continue
		}
		cmd := exec.CommandContext(ctx, v.restore)
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: %s: %w: %s", v.restore, err, out))
			continue
		}
		if _, err := exec.LookPath("nft"); err == nil && isNFT(ctx, v.save) {
			for _, t := range added {
				_, _ = run(ctx, nil, "nft", "delete", "table", v.nftFamily, t)
			}
		}
		d.log.Info("restored host rules", "tool", v.restore, "tables_removed", added)
	}
	if d.ipForward != "" {
		if b, err := os.ReadFile(ipForwardPath); err == nil && strings.TrimSpace(string(b)) != d.ipForward {
			if err := os.WriteFile(ipForwardPath, []byte(d.ipForward+"\n"), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("cluster: restore ip_forward: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

type ipFamily struct{ save, restore, file, nftFamily string }

var ipFamilies = []ipFamily{
	{"iptables-save", "iptables-restore", "iptables.rules", "ip"},
	{"ip6tables-save", "ip6tables-restore", "ip6tables.rules", "ip6"},
}

// builtinChains are the chains each table starts with.
var builtinChains = map[string][]string{
	"filter":   {"INPUT", "FORWARD", "OUTPUT"},
	"nat":      {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"mangle":   {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"raw":      {"PREROUTING", "OUTPUT"},
	"security": {"INPUT", "FORWARD", "OUTPUT"},
}

func emptyTable(t string) string {
	var b strings.Builder
	b.WriteString("*" + t + "\n")
	for _, c := range builtinChains[t] {
		b.WriteString(":" + c + " ACCEPT [0:0]\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// tables lists the tables in iptables-save output.
func tables(save string) []string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, "*") {
			out = append(out, strings.TrimSpace(l[1:]))
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func isNFT(ctx context.Context, saveTool string) bool {
	out, err := run(ctx, nil, strings.TrimSuffix(saveTool, "-save"), "--version")
	return err == nil && strings.Contains(out, "nf_tables")
}
