package integration

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	ringkvv1 "github.com/ringkv/ringkv/api/ringkv/v1"
	"github.com/ringkv/ringkv/api/ringkv/v1/ringkvv1connect"
)

// Binaries built once by TestMain.
var kvdBin, kvctlBin string

// Timings of the test clusters: fast elections, short request timeouts. The
// gossip failure detector keeps its defaults (kvd has no flags for it).
var fastFlags = []string{
	"--partitions", "16",
	"--raft-heartbeat-timeout", "300ms",
	"--raft-election-timeout", "300ms",
	"--raft-leader-lease-timeout", "150ms",
	"--raft-heartbeat-linger", "10ms", // under a quarter of the lease
	"--request-timeout", "3s",
	"--leader-balance-interval", "1s",
	"--dead-timeout", "5s",
}

// binDirEnv names a directory holding prebuilt kvd and kvctl binaries to use
// instead of building them.
const binDirEnv = "RINGKV_INTEGRATION_BIN"

// keepLogsEnv names a folder where a failed test leaves every node's whole
// log (the test's own output has the last 50 lines of each), to chase a
// failure that does not come back when rerun.
const keepLogsEnv = "RINGKV_INTEGRATION_KEEP_LOGS"

// serverRequestTimeout matches --request-timeout in fastFlags.
const serverRequestTimeout = 3 * time.Second

// Deadlines of the harness's waits. Race-enabled nodes on two cores are slow
// to start, so readiness gets a generous bound; it is a bound, not a sleep.
const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 20 * time.Second
	formTimeout  = 30 * time.Second
	pollEvery    = 100 * time.Millisecond
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if testing.Short() {
		// Tests skip themselves (requireBinaries).
		return m.Run()
	}
	if dir := os.Getenv(binDirEnv); dir != "" {
		// Prebuilt binaries, e.g. to rerun one test quickly.
		kvdBin, kvctlBin = filepath.Join(dir, "kvd"), filepath.Join(dir, "kvctl")
		fmt.Fprintf(os.Stderr, "integration: using prebuilt binaries from $%s=%s\n", binDirEnv, dir)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "ringkv-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	return m.Run()
}

// buildBinaries builds kvd and kvctl into dir, with the race detector when
// the toolchain supports it, so that data races in the node fail the tests.
func buildBinaries(dir string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go tool not found in PATH: %w", err)
	}
	pkgs := []string{"github.com/ringkv/ringkv/cmd/kvd", "github.com/ringkv/ringkv/cmd/kvctl"}
	build := func(race bool) ([]byte, error) {
		args := []string{"build"}
		if race {
			args = append(args, "-race")
		}
		args = append(args, "-o", dir+string(filepath.Separator))
		cmd := exec.Command(gobin, append(args, pkgs...)...)
		return cmd.CombinedOutput()
	}
	raceOut, err := build(true)
	if err != nil {
		out, err := build(false)
		if err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
		fmt.Fprintf(os.Stderr, "integration: go build -race failed, testing binaries built without it:\n%s\n", raceOut)
	}
	kvdBin, kvctlBin = filepath.Join(dir, "kvd"), filepath.Join(dir, "kvctl")
	return nil
}

// proc is one kvd node: its fixed identity (name, addresses, data dir) and
// the process currently running it, if any.
type proc struct {
	name                             string
	clientAddr, peerAddr, gossipAddr string
	dataDir, logPath                 string

	joinOnly []int // indexes of the nodes in --join; nil: all

	fresh   bool // no data dir when launched: free to take other ports
	attempt int  // starts of the current launch

	cmd    *exec.Cmd
	paused bool          // stopped by SIGSTOP: alive, but answers nothing
	done   chan struct{} // closed when cmd has exited
	err    error         // cmd.Wait's result, set before done closes
}

// running reports whether the node's process is alive.
func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// cluster is N kvd processes on loopback, stopped when the test ends.
type cluster struct {
	t     *testing.T
	nodes []*proc
	args  []string // flags every node gets besides its identity
	http  *http.Client
	// tolerateKnownBugs lets the log scan pass races listed in knownRaces,
	// and stops pass hangs listed in knownHangs.
	tolerateKnownBugs bool
}

// newCluster starts n nodes that form one cluster and waits until each is
// ready. Extra flags are appended to fastFlags.
func newCluster(t *testing.T, n int, extra ...string) *cluster {
	t.Helper()
	c := newUnstarted(t, n, extra...)
	for i := range c.nodes {
		c.launch(i)
	}
	for i := range c.nodes {
		c.waitReady(i)
	}
	c.waitFormed(formTimeout)
	return c
}

// newUnstarted prepares n nodes (names, ports, directories) without
// starting them; it registers their cleanup.
func newUnstarted(t *testing.T, n int, extra ...string) *cluster {
	t.Helper()
	requireBinaries(t)
	c := &cluster{
		t:                 t,
		args:              append(append([]string{}, fastFlags...), extra...),
		http:              &http.Client{Timeout: 10 * time.Second},
		tolerateKnownBugs: true,
	}
	dir, logDir := t.TempDir(), t.ArtifactDir() // logs survive with go test -artifacts
	addrs := freePorts(t, 3*n)
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		c.nodes = append(c.nodes, &proc{
			name:       name,
			clientAddr: addrs[3*i],
			peerAddr:   addrs[3*i+1],
			gossipAddr: addrs[3*i+2],
			dataDir:    filepath.Join(dir, name),
			logPath:    filepath.Join(logDir, name+".log"),
		})
	}
	t.Cleanup(c.shutdown)
	return c
}

// waitFormed waits until every node hosts a voting replica of every
// partition (3 nodes, 3 replicas) and every partition has a leader, as
// each node's Status says. /readyz alone does not promise this: a node that
// hosts nothing is ready.
func (c *cluster) waitFormed(timeout time.Duration) {
	c.t.Helper()
	if problem := c.pollFormed(timeout); problem != "" {
		c.t.Fatalf("cluster not fully formed within %v: %s", timeout, problem)
	}
}

// pollFormed is waitFormed that returns the last problem instead of failing.
func (c *cluster) pollFormed(timeout time.Duration) string {
	c.t.Helper()
	want := uint32(min(len(c.nodes), 3) * 16 / len(c.nodes))
	var problem string
	poll(timeout, 200*time.Millisecond, func() bool {
		problem = ""
		for i, p := range c.nodes {
			st, err := c.status(i)
			switch {
			case err != nil:
				problem = fmt.Sprintf("%s: status: %v", p.name, err)
			case st.GetReplicasHosted() != want:
				problem = fmt.Sprintf("%s hosts %d replicas, want %d", p.name, st.GetReplicasHosted(), want)
			case st.GetPartitionsWithoutLeader() != 0:
				problem = fmt.Sprintf("%s sees %d partitions without a leader", p.name, st.GetPartitionsWithoutLeader())
			}
			if problem != "" {
				return false
			}
		}
		return true
	})
	return problem
}

// status asks node i for its Status over the API, in one attempt.
func (c *cluster) status(i int) (*ringkvv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Second)
	defer cancel()
	cl := ringkvv1connect.NewClusterClient(c.http, "http://"+c.nodes[i].clientAddr)
	resp, err := cl.Status(ctx, connect.NewRequest(&ringkvv1.StatusRequest{}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration tests start real kvd processes; skipped in -short mode")
	}
	if kvdBin == "" {
		t.Fatal("kvd was not built (TestMain did not run?)")
	}
}

// freePorts returns n distinct loopback addresses whose TCP and UDP ports
// were free a moment ago (gossip binds both). The ports are released before
// returning; a node that loses the race is relaunched on new ports by launch.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var held []io.Closer
	defer func() {
		for _, h := range held {
			_ = h.Close()
		}
	}()
	for attempt := 0; len(out) < n; attempt++ {
		if attempt > 20*n {
			t.Fatalf("could not find %d free loopback ports", n)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			continue
		}
		held = append(held, ln)
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		held = append(held, pc)
		out = append(out, addr)
	}
	return out
}

// flagsOf is the full command line of node i.
func (c *cluster) flagsOf(i int) []string {
	p := c.nodes[i]
	var join []string
	for j, q := range c.nodes {
		if p.joinOnly == nil || slices.Contains(p.joinOnly, j) {
			join = append(join, q.gossipAddr)
		}
	}
	args := []string{
		"--name", p.name,
		"--data-dir", p.dataDir,
		"--client-addr", p.clientAddr,
		"--peer-addr", p.peerAddr,
		"--gossip-addr", p.gossipAddr,
		"--join", strings.Join(join, ","),
		"--bootstrap-expect", fmt.Sprint(len(c.nodes)),
	}
	return append(args, c.args...)
}

// launch starts node i's process without waiting for readiness; waitReady
// relaunches it if it lost one of its ports to another process.
func (c *cluster) launch(i int) {
	c.t.Helper()
	p := c.nodes[i]
	if p.running() {
		c.t.Fatalf("launch %s: already running", p.name)
	}
	p.fresh = !dirExists(p.dataDir)
	p.attempt = 1
	c.start(p)
}

func (c *cluster) start(p *proc) {
	c.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatalf("log file: %v", err)
	}
	fmt.Fprintf(logf, "=== harness: starting %s (attempt %d) at %s\n", p.name, p.attempt, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(kvdBin, c.flagsOf(indexOf(c.nodes, p))...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Race reports go to the log and do not change the exit code of a
	// node we stop, so that the log scan is the one place they are judged.
	// No pause at exit: nothing is left to report by then.
	cmd.Env = append(os.Environ(), "GORACE=halt_on_error=0 exitcode=0 atexit_sleep_ms=0")
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("start %s: %v", p.name, err)
	}
	logf.Close() // the child has its own copy
	p.cmd, p.done, p.err = cmd, make(chan struct{}), nil
	done := p.done
	go func() {
		err := cmd.Wait()
		p.err = err
		close(done)
	}()
}

func indexOf(nodes []*proc, p *proc) int {
	for i, q := range nodes {
		if q == p {
			return i
		}
	}
	return -1
}

func dirExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// lastAttemptLog returns the log of p's current process.
func (c *cluster) lastAttemptLog(p *proc) string {
	b, _ := os.ReadFile(p.logPath)
	s := string(b)
	if i := strings.LastIndex(s, "=== harness: starting"); i >= 0 {
		s = s[i:]
	}
	return s
}

// waitLogLine waits until node i's current process has logged text.
func (c *cluster) waitLogLine(i int, text string) {
	c.t.Helper()
	if !poll(30*time.Second, 20*time.Millisecond, func() bool {
		return strings.Contains(c.lastAttemptLog(c.nodes[i]), text)
	}) {
		c.t.Fatalf("%s did not log %q within 30 s", c.nodes[i].name, text)
	}
}

// relaunchAfterBindFailure restarts p if its process exited because a port
// was taken, and reports whether it did. A fresh node gets new ports (the
// others find it by gossip); a restarted node keeps its addresses, which
// Raft knows it by, and tries again, since such a port is usually held
// only for a moment by an outgoing connection.
func (c *cluster) relaunchAfterBindFailure(p *proc) bool {
	c.t.Helper()
	if !strings.Contains(c.lastAttemptLog(p), "address already in use") || p.attempt >= 5 {
		return false
	}
	if p.fresh {
		addrs := freePorts(c.t, 3)
		p.clientAddr, p.peerAddr, p.gossipAddr = addrs[0], addrs[1], addrs[2]
		_ = os.RemoveAll(p.dataDir)
	}
	c.t.Logf("%s: a port was taken; starting it again (attempt %d)", p.name, p.attempt+1)
	p.attempt++
	c.start(p)
	return true
}

// waitReady polls node i's /readyz until it answers 200.
func (c *cluster) waitReady(i int) {
	c.t.Helper()
	p := c.nodes[i]
	var last string
	ok := poll(readyTimeout, pollEvery, func() bool {
		if !p.running() && !c.relaunchAfterBindFailure(p) {
			c.t.Fatalf("%s exited while starting: %v\n%s", p.name, p.err, tail(c.lastAttemptLog(p), 30))
		}
		resp, err := c.http.Get("http://" + p.clientAddr + "/readyz")
		if err != nil {
			last = err.Error()
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		return resp.StatusCode == http.StatusOK
	})
	if !ok {
		c.t.Fatalf("%s not ready within %v; last /readyz: %s", p.name, readyTimeout, last)
	}
}

// waitAllReady waits for every running node.
func (c *cluster) waitAllReady() {
	c.t.Helper()
	for i, p := range c.nodes {
		if p.running() {
			c.waitReady(i)
		}
	}
}

// kill9 kills node i with SIGKILL and waits for the process to be gone.
func (c *cluster) kill9(i int) {
	c.t.Helper()
	p := c.nodes[i]
	if !p.running() {
		c.t.Fatalf("kill9 %s: not running", p.name)
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		c.t.Fatalf("kill9 %s: still running after %v", p.name, stopTimeout)
	}
}

// stop sends SIGTERM to node i and waits for it to exit; it fails the test
// unless the node exits with status 0 before stopTimeout (then it is killed).
func (c *cluster) stop(i int) {
	c.t.Helper()
	start := time.Now()
	if err := c.terminate(c.nodes[i]); err != nil {
		c.t.Error(err)
	}
	c.t.Logf("%s stopped by SIGTERM in %v", c.nodes[i].name, time.Since(start).Round(time.Millisecond))
}

// terminate stops p: SIGTERM, then SIGKILL after stopTimeout. It reports an
// unclean stop as an error.
func (c *cluster) terminate(p *proc) error {
	if !p.running() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s: SIGTERM: exited with %v, want status 0", p.name, p.err)
		}
		return nil
	case <-time.After(stopTimeout):
	}
	// SIGQUIT makes the Go runtime dump every goroutine into the log,
	// which shows where the shutdown hangs.
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	err := fmt.Errorf("%s: did not stop within %v of SIGTERM; killed with SIGQUIT (goroutine dump in its log, %s)", p.name, stopTimeout, p.logPath)
	if c.tolerateKnownBugs {
		dump := c.lastAttemptLog(p)
		for _, h := range knownHangs {
			if strings.Contains(dump, h.signature) {
				c.t.Logf("%v: tolerated, %s", err, h.bug)
				return nil
			}
		}
	}
	return err
}

// stopAll stops every running node concurrently with SIGTERM.
func (c *cluster) stopAll() {
	c.t.Helper()
	start := time.Now()
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, p := range c.nodes {
		wg.Go(func() { errs[i] = c.terminate(p) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.t.Error(err)
	}
	c.t.Logf("all nodes stopped by SIGTERM in %v", time.Since(start).Round(time.Millisecond))
}

// kill9All kills every running node at (nearly) the same moment.
func (c *cluster) kill9All() {
	c.t.Helper()
	for _, p := range c.nodes {
		if p.running() {
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	for _, p := range c.nodes {
		if p.cmd == nil {
			continue
		}
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			c.t.Fatalf("kill9 %s: still running after %v", p.name, stopTimeout)
		}
	}
}

// restart starts node i again with the same flags and data dir and waits
// until it is ready.
func (c *cluster) restart(i int) {
	c.t.Helper()
	c.launch(i)
	c.waitReady(i)
}

// restartAll starts every stopped node, then waits for all of them.
func (c *cluster) restartAll() {
	c.t.Helper()
	for i, p := range c.nodes {
		if !p.running() {
			c.launch(i)
		}
	}
	c.waitAllReady()
}

// shutdown stops every process this cluster started, then fails the test
// if a log shows a panic or a data race, and on failure prints the tail of
// every log.
func (c *cluster) shutdown() {
	t := c.t
	var wg sync.WaitGroup
	for _, p := range c.nodes {
		wg.Go(func() {
			if err := c.terminate(p); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	wg.Wait()
	for _, p := range c.nodes {
		b, err := os.ReadFile(p.logPath)
		if err != nil {
			continue
		}
		problems, tolerated := logProblems(b, c.tolerateKnownBugs)
		for _, problem := range problems {
			t.Errorf("%s's log (%s): %s", p.name, p.logPath, problem)
		}
		if tolerated > 0 {
			t.Logf("%s's log: %d data races of known, reported bugs (see knownRaces)", p.name, tolerated)
		}
	}
	if t.Failed() {
		keep := os.Getenv(keepLogsEnv)
		if keep != "" {
			keep = filepath.Join(keep, fmt.Sprintf("%s-%s", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UTC().Format("20060102T150405")))
			if err := os.MkdirAll(keep, 0o755); err != nil {
				t.Logf("$%s: %v", keepLogsEnv, err)
				keep = ""
			}
		}
		for _, p := range c.nodes {
			b, _ := os.ReadFile(p.logPath)
			t.Logf("---- last 50 lines of %s (%s) ----\n%s", p.name, p.logPath, tail(string(b), 50))
			if keep != "" {
				if err := os.WriteFile(filepath.Join(keep, p.name+".log"), b, 0o644); err != nil {
					t.Logf("$%s: %v", keepLogsEnv, err)
				}
			}
		}
		if keep != "" {
			t.Logf("every node's whole log is in %s", keep)
		}
	}
}
