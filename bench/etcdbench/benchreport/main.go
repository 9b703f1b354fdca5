// Command benchreport turns one `make compare` results folder into the
// side-by-side table: it reads DIR/meta.txt, DIR/{etcd,ringkv}/<workload>.json
// (bench -o json), <workload>.cpu (server CPU ticks) and
// DIR/load/<system>-<workload>.txt (uptime before the run), prints the table
// on stdout and writes DIR/compare.json and DIR/compare.md.
//
// When DIR holds rounds (DIR/round-1, DIR/round-2, ...: compare.sh runs the
// systems in ABBA order so that a machine speeding up or slowing down over
// the run favours neither), each round is read like a folder of its own and
// the table shows, per system, the mean over the rounds of ops/s and of
// each percentile, CPU per operation over all rounds' operations, and the
// ratio of the means with every round's own ratio beside it.
//
// Usage: benchreport DIR
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: benchreport DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// workload is one row of the table and the target for it.
type workload struct {
	name   string
	label  string // %d is the client count
	minX   float64
	p50Max float64 // RingKV p50 at most this times etcd's (0: no target)
	p99    bool    // RingKV p99 no worse than etcd's
}

var workloads = []workload{
	{name: "put-1", label: "sequential put, 1 client", p50Max: 0.75},
	{name: "put", label: "put, %d clients", minX: 2, p99: true},
	{name: "get-strong", label: "strong get (etcd: linearizable), %d clients", minX: 2, p99: true},
	{name: "get-eventual", label: "eventual get (etcd: serializable), %d clients", minX: 3, p99: true},
	{name: "mixed-strong", label: "mixed 90%% strong get / 10%% put, %d clients"},
}

// benchResult holds the fields of bench -o json that the table uses.
type benchResult struct {
	Clients   int     `json:"clients"`
	Ops       uint64  `json:"ops"`
	Errors    uint64  `json:"errors"`
	DurationS float64 `json:"duration_s"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50Ms     float64 `json:"p50_ms"`
	P90Ms     float64 `json:"p90_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p999_ms"`
	LastError string  `json:"last_error,omitempty"`
}

// side is one system's measurement of one workload.
type side struct {
	Result *benchResult `json:"result,omitempty"`
	// Load1 is the 1-minute load average just before the run.
	Load1 *float64 `json:"load1_before,omitempty"`
	// ServerCPUSeconds is the CPU time of the three servers during the run
	// (pre-load included); CPUMicrosPerOp divides it by the measured ops.
	ServerCPUSeconds *float64 `json:"server_cpu_s,omitempty"`
	CPUMicrosPerOp   *float64 `json:"server_cpu_us_per_op,omitempty"`
	// ClientCPUMicrosPerOp is the load generator's CPU per measured op: it
	// runs on the same cores, so a heavier client leaves less to the servers.
	ClientCPUMicrosPerOp *float64 `json:"client_cpu_us_per_op,omitempty"`
}

type row struct {
	Workload string   `json:"workload"`
	Label    string   `json:"label"`
	Etcd     side     `json:"etcd"`
	RingKV   side     `json:"ringkv"`
	Ratio    *float64 `json:"ratio,omitempty"` // RingKV ops/s over etcd ops/s
	// RoundRatios is each round's own ratio, in round order (with rounds).
	RoundRatios []float64 `json:"round_ratios,omitempty"`
	P50Ratio    *float64  `json:"p50_ratio,omitempty"`
	Target      string    `json:"target"`
	Met         string    `json:"met"` // yes, no, or "-" (no target or no data)
}

type report struct {
	Meta [][2]string `json:"-"`
	// Rounds is how many rounds the table combines (1: a plain folder).
	Rounds int   `json:"rounds"`
	Rows   []row `json:"rows"`
	// Idle is the three servers' CPU with no load, in percent of one core.
	Idle map[string]float64 `json:"idle_cpu_pct_of_core,omitempty"`
}

func run(dir string, stdout io.Writer) error {
	meta, err := readMeta(filepath.Join(dir, "meta.txt"))
	if err != nil {
		return err
	}
	rounds, err := roundDirs(dir)
	if err != nil {
		return err
	}
	rep := report{Meta: meta, Rounds: len(rounds), Idle: map[string]float64{}}
	for _, w := range workloads {
		rep.Rows = append(rep.Rows, buildRow(rounds, w))
	}
	for _, sys := range []string{"etcd", "ringkv"} {
		var sum float64
		n := 0
		for _, d := range rounds {
			if pct, ok := readIdle(filepath.Join(d, sys, "idle.cpu")); ok {
				sum += pct
				n++
			}
		}
		if n > 0 {
			rep.Idle[sys] = sum / float64(n)
		}
	}
	if err := writeJSON(filepath.Join(dir, "compare.json"), rep); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "compare.md"), []byte(markdown(rep)), 0o644); err != nil {
		return err
	}
	return printTable(stdout, rep)
}

func readMeta(path string) ([][2]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var meta [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			meta = append(meta, [2]string{k, v})
		}
	}
	return meta, sc.Err()
}

// roundDirs returns DIR's round folders in round order, or DIR alone when it
// has none.
func roundDirs(dir string) ([]string, error) {
	var rounds []string
	for i := 1; ; i++ {
		d := filepath.Join(dir, fmt.Sprintf("round-%d", i))
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			break
		} else if err != nil {
			return nil, err
		}
		rounds = append(rounds, d)
	}
	if len(rounds) == 0 {
		return []string{dir}, nil
	}
	return rounds, nil
}

func buildRow(rounds []string, w workload) row {
	var etcd, ringkv []side
	for _, d := range rounds {
		etcd = append(etcd, readSide(d, "etcd", w.name))
		ringkv = append(ringkv, readSide(d, "ringkv", w.name))
	}
	r := row{Workload: w.name, Etcd: combine(etcd), RingKV: combine(ringkv), Met: "-"}
	if len(rounds) > 1 {
		for i := range rounds {
			if e, k := etcd[i].Result, ringkv[i].Result; e != nil && k != nil && e.Ops > 0 && k.Ops > 0 {
				r.RoundRatios = append(r.RoundRatios, k.OpsPerSec/e.OpsPerSec)
			}
		}
	}
	clients := 0
	for _, s := range []side{r.Etcd, r.RingKV} {
		if s.Result != nil {
			clients = s.Result.Clients
		}
	}
	r.Label = w.label
	if strings.Contains(w.label, "%d") {
		r.Label = fmt.Sprintf(w.label, clients)
	}
	var targets []string
	if w.minX > 0 {
		targets = append(targets, fmt.Sprintf("ops/s >= %gx", w.minX))
	}
	if w.p50Max > 0 {
		targets = append(targets, fmt.Sprintf("p50 <= %gx", w.p50Max))
	}
	if w.p99 {
		targets = append(targets, "p99 <= etcd")
	}
	r.Target = strings.Join(targets, ", ")
	if r.Target == "" {
		r.Target = "-"
	}
	e, k := r.Etcd.Result, r.RingKV.Result
	if e == nil || k == nil || e.Ops == 0 || k.Ops == 0 {
		return r
	}
	r.Ratio = ptr(k.OpsPerSec / e.OpsPerSec)
	if e.P50Ms > 0 {
		r.P50Ratio = ptr(k.P50Ms / e.P50Ms)
	}
	if r.Target == "-" {
		return r
	}
	met := (w.minX == 0 || *r.Ratio >= w.minX) &&
		(w.p50Max == 0 || (r.P50Ratio != nil && *r.P50Ratio <= w.p50Max)) &&
		(!w.p99 || k.P99Ms <= e.P99Ms)
	r.Met = map[bool]string{true: "yes", false: "no"}[met]
	return r
}

var loadRE = regexp.MustCompile(`load average: ([0-9.]+)`)

func readSide(dir, sys, name string) side {
	var s side
	if b, err := os.ReadFile(filepath.Join(dir, sys, name+".json")); err == nil {
		var res benchResult
		if json.Unmarshal(b, &res) == nil {
			s.Result = &res
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "load", sys+"-"+name+".txt")); err == nil {
		if m := loadRE.FindSubmatch(b); m != nil {
			if v, err := strconv.ParseFloat(string(m[1]), 64); err == nil {
				s.Load1 = &v
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, sys, name+".cpu")); err == nil {
		var ticks, hz float64
		if n, _ := fmt.Sscan(string(b), &ticks, &hz); n == 2 && hz > 0 {
			s.ServerCPUSeconds = ptr(ticks / hz)
			if s.Result != nil && s.Result.Ops > 0 {
				s.CPUMicrosPerOp = ptr(ticks / hz / float64(s.Result.Ops) * 1e6)
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, sys, name+".clientcpu")); err == nil {
		var ms float64
		if n, _ := fmt.Sscan(string(b), &ms); n == 1 && s.Result != nil && s.Result.Ops > 0 {
			s.ClientCPUMicrosPerOp = ptr(ms * 1000 / float64(s.Result.Ops))
		}
	}
	return s
}

// combine merges one system's rounds of a workload: the mean of ops/s and of
// each percentile over the rounds that completed operations, operations,
// errors and CPU summed (so CPU per op is over every round's operations),
// and the highest load before a round. One round is returned as it is.
func combine(rounds []side) side {
	if len(rounds) == 1 {
		return rounds[0]
	}
	var (
		c                                    side
		res                                  benchResult
		n, cpu, cpuOps, clientCPU, clientOps float64
	)
	for _, s := range rounds {
		if s.Load1 != nil && (c.Load1 == nil || *s.Load1 > *c.Load1) {
			c.Load1 = ptr(*s.Load1)
		}
		if s.Result == nil {
			continue
		}
		if c.Result == nil {
			c.Result = &res
		}
		res.Clients = s.Result.Clients
		res.Ops += s.Result.Ops
		res.Errors += s.Result.Errors
		res.DurationS += s.Result.DurationS
		if s.Result.LastError != "" {
			res.LastError = s.Result.LastError
		}
		if s.Result.Ops == 0 {
			continue
		}
		n++
		res.OpsPerSec += s.Result.OpsPerSec
		res.P50Ms += s.Result.P50Ms
		res.P90Ms += s.Result.P90Ms
		res.P99Ms += s.Result.P99Ms
		res.P999Ms += s.Result.P999Ms
		ops := float64(s.Result.Ops)
		if s.CPUMicrosPerOp != nil {
			cpu += *s.CPUMicrosPerOp * ops
			cpuOps += ops
		}
		if s.ClientCPUMicrosPerOp != nil {
			clientCPU += *s.ClientCPUMicrosPerOp * ops
			clientOps += ops
		}
	}
	if n > 0 {
		res.OpsPerSec /= n
		res.P50Ms /= n
		res.P90Ms /= n
		res.P99Ms /= n
		res.P999Ms /= n
	}
	if cpuOps > 0 {
		c.CPUMicrosPerOp = ptr(cpu / cpuOps)
		c.ServerCPUSeconds = ptr(cpu / 1e6)
	}
	if clientOps > 0 {
		c.ClientCPUMicrosPerOp = ptr(clientCPU / clientOps)
	}
	return c
}

// readIdle reads "ticks hz seconds" and returns the CPU in percent of one core.
func readIdle(path string) (float64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	var ticks, hz, secs float64
	if n, _ := fmt.Sscan(string(b), &ticks, &hz, &secs); n != 3 || hz <= 0 || secs <= 0 {
		return 0, false
	}
	return ticks / hz / secs * 100, true
}

// idleLine says what the idle measurement found, or "" without one.
func idleLine(rep report) string {
	var parts []string
	for _, sys := range []string{"etcd", "ringkv"} {
		if pct, ok := rep.Idle[sys]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f%%", map[string]string{"etcd": "etcd", "ringkv": "RingKV"}[sys], pct))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "idle CPU of the 3 servers, in % of one core (target for RingKV with 256 partitions: < 10%): " + strings.Join(parts, ", ")
}

func ptr[T any](v T) *T { return &v }

func writeJSON(path string, rep report) error {
	meta := map[string]string{}
	for _, kv := range rep.Meta {
		meta[kv[0]] = kv[1]
	}
	b, err := json.MarshalIndent(struct {
		Meta   map[string]string  `json:"meta"`
		Rounds int                `json:"rounds"`
		Rows   []row              `json:"rows"`
		Idle   map[string]float64 `json:"idle_cpu_pct_of_core,omitempty"`
	}{meta, rep.Rounds, rep.Rows, rep.Idle}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// cells formats a row for the table and the markdown, in the same columns.
func cells(r row) []string {
	ops := func(s side) string {
		if s.Result == nil {
			return "n/a"
		}
		if s.Result.Ops == 0 {
			return "failed"
		}
		return fmt.Sprintf("%.0f", s.Result.OpsPerSec)
	}
	lat := func(s side) string {
		if s.Result == nil || s.Result.Ops == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f / %.2f", s.Result.P50Ms, s.Result.P99Ms)
	}
	ratio := "-"
	if r.Ratio != nil {
		ratio = fmt.Sprintf("%.2fx", *r.Ratio)
	}
	if len(r.RoundRatios) > 1 {
		each := make([]string, len(r.RoundRatios))
		for i, x := range r.RoundRatios {
			each[i] = fmt.Sprintf("%.2fx", x)
		}
		ratio += " (" + strings.Join(each, ", ") + ")"
	}
	num := func(s side, f func(side) *float64, format string) string {
		if v := f(s); v != nil {
			return fmt.Sprintf(format, *v)
		}
		return "-"
	}
	cpu := func(s side) *float64 { return s.CPUMicrosPerOp }
	clientCPU := func(s side) *float64 { return s.ClientCPUMicrosPerOp }
	load := func(s side) *float64 { return s.Load1 }
	errs := func(s side) string {
		if s.Result == nil {
			return "-"
		}
		return strconv.FormatUint(s.Result.Errors, 10)
	}
	return []string{
		r.Label, ops(r.Etcd), ops(r.RingKV), ratio, lat(r.Etcd), lat(r.RingKV),
		r.Target, r.Met,
		num(r.Etcd, cpu, "%.0f") + " / " + num(r.RingKV, cpu, "%.0f"),
		num(r.Etcd, clientCPU, "%.0f") + " / " + num(r.RingKV, clientCPU, "%.0f"),
		errs(r.Etcd) + " / " + errs(r.RingKV),
		num(r.Etcd, load, "%.2f") + " / " + num(r.RingKV, load, "%.2f"),
	}
}

var header = []string{
	"workload", "etcd ops/s", "RingKV ops/s", "ratio", "etcd p50/p99 ms", "RingKV p50/p99 ms",
	"target", "met", "server CPU us/op (etcd/RingKV)", "client CPU us/op (etcd/RingKV)", "errors (etcd/RingKV)", "load1 before (etcd/RingKV)",
}

func printTable(w io.Writer, rep report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rep.Rows {
		fmt.Fprintln(tw, strings.Join(cells(r), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l := idleLine(rep); l != "" {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	if l := roundsLine(rep); l != "" {
		_, err := fmt.Fprintln(w, l)
		return err
	}
	return nil
}

// roundsLine says how rounds were combined, or "" for a single round.
func roundsLine(rep report) string {
	if rep.Rounds < 2 {
		return ""
	}
	return fmt.Sprintf("%d rounds, the systems' order alternating (ABBA): ops/s and latencies are the mean over the rounds, "+
		"CPU per op is over all their operations, ratio = ratio of the means (each round's own in brackets)", rep.Rounds)
}

func markdown(rep report) string {
	var b strings.Builder
	b.WriteString("# RingKV vs etcd\n\n")
	for _, kv := range rep.Meta {
		fmt.Fprintf(&b, "- %s: %s\n", kv[0], kv[1])
	}
	b.WriteString("\n| " + strings.Join(header, " | ") + " |\n|")
	for range header {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rep.Rows {
		b.WriteString("| " + strings.Join(cells(r), " | ") + " |\n")
	}
	if l := idleLine(rep); l != "" {
		b.WriteString("\n" + l + "\n")
	}
	if l := roundsLine(rep); l != "" {
		b.WriteString("\n" + l + "\n")
	}
	b.WriteString("\nratio = RingKV ops/s / etcd ops/s. Targets from issue 5; p50 target = RingKV p50 / etcd p50. " +
		"Server CPU per op counts the three servers' user+system time during the run (pre-load included) over the measured operations; " +
		"client CPU per op does the same for the load generator (etcdbench or kvctl bench), which shares the cores. " +
		"load1 = 1-minute load average just before the run (2 cores: above 2 means other work competed).\n")
	return b.String()
}
