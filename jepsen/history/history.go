package history

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Kind names an operation.
type Kind string

// The operations of the workloads.
const (
	// KindGet is a strong (linearizable) read.
	KindGet Kind = "get"
	// KindPut writes a value unique to the key.
	KindPut Kind = "put"
	// KindCAS swaps a value in if the key holds Expect (or is absent, with
	// ExpectAbsent).
	KindCAS Kind = "cas"
	// KindEventualGet is an eventual read from one node; it is checked for
	// phantoms, not for linearizability.
	KindEventualGet Kind = "eget"
)

// Outcome classifies how an operation ended.
type Outcome string

// Outcomes; see the package comment.
const (
	OutcomeOK      Outcome = "ok"
	OutcomeFail    Outcome = "fail"
	OutcomeUnknown Outcome = "unknown"
)

// Op is one operation and its result.
type Op struct {
	ID     int64  `json:"id"`
	Client int    `json:"client"`
	Key    string `json:"key"`
	Kind   Kind   `json:"f"`
	// Value is the value written (put, cas).
	Value string `json:"value,omitempty"`
	// Expect is a cas's expected value; ExpectAbsent asks for a missing key.
	Expect       string `json:"expect,omitempty"`
	ExpectAbsent bool   `json:"expect_absent,omitempty"`
	// Node is the node an eventual read was sent to.
	Node string `json:"node,omitempty"`

	// Call and Return are nanoseconds since the run started. Return is 0
	// while the operation is open and stays 0 for unknown outcomes.
	Call    int64   `json:"call"`
	Return  int64   `json:"return,omitempty"`
	Outcome Outcome `json:"outcome,omitempty"`

	// Found and Out: what a read saw.
	Found bool   `json:"found,omitempty"`
	Out   string `json:"out,omitempty"`
	// Succeeded: whether a cas swapped. When it did not, CurExists and
	// CurValue are the state it saw instead.
	Succeeded bool   `json:"succeeded,omitempty"`
	CurExists bool   `json:"cur_exists,omitempty"`
	CurValue  string `json:"cur_value,omitempty"`
	// Version is the key's version the answer carried.
	Version uint64 `json:"version,omitempty"`
	// ServedBy, Leader and Applied: the read receipt.
	ServedBy string `json:"served_by,omitempty"`
	Leader   bool   `json:"leader,omitempty"`
	Applied  uint64 `json:"applied,omitempty"`
	// Partition is the key's partition (from the receipt, or computed).
	Partition int `json:"partition"`
	// Err is the error text of failed and unknown operations.
	Err string `json:"err,omitempty"`
}

// Writes reports whether the operation is a write (put or cas).
func (o *Op) Writes() bool { return o.Kind == KindPut || o.Kind == KindCAS }

// String describes the operation for reports.
func (o *Op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d c%d %s(%s", o.ID, o.Client, o.Kind, o.Key)
	switch o.Kind {
	case KindPut:
		fmt.Fprintf(&b, ", %q", o.Value)
	case KindCAS:
		if o.ExpectAbsent {
			fmt.Fprintf(&b, ", absent -> %q", o.Value)
		} else {
			fmt.Fprintf(&b, ", %q -> %q", o.Expect, o.Value)
		}
	case KindEventualGet:
		fmt.Fprintf(&b, " @%s", o.Node)
	}
	fmt.Fprintf(&b, ") [%.3fs..", float64(o.Call)/1e9)
	if o.Outcome == OutcomeUnknown {
		b.WriteString("?]")
	} else {
		fmt.Fprintf(&b, "%.3fs]", float64(o.Return)/1e9)
	}
	fmt.Fprintf(&b, " %s", o.Outcome)
	switch {
	case o.Outcome != OutcomeOK:
		if o.Err != "" {
			fmt.Fprintf(&b, " (%s)", o.Err)
		}
	case o.Kind == KindGet || o.Kind == KindEventualGet:
		if o.Found {
			fmt.Fprintf(&b, " -> %q v%d", o.Out, o.Version)
		} else {
			b.WriteString(" -> not found")
		}
		if o.ServedBy != "" {
			fmt.Fprintf(&b, " by %s", o.ServedBy)
		}
	case o.Kind == KindCAS && !o.Succeeded:
		if o.CurExists {
			fmt.Fprintf(&b, " -> failed, current %q", o.CurValue)
		} else {
			b.WriteString(" -> failed, absent")
		}
	}
	return b.String()
}

// Recorder hands out op ids and timestamps and collects finished ops. It is
// safe for concurrent use.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	next  int64
	ops   []*Op
}

// NewRecorder returns a Recorder whose clock starts at start.
func NewRecorder(start time.Time) *Recorder { return &Recorder{start: start} }

// Now is the time since the start in nanoseconds (monotonic).
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Start is the run's start time.
func (r *Recorder) Start() time.Time { return r.start }

// Begin opens an operation and stamps its call time. Set the operation's
// inputs before the request is sent.
func (r *Recorder) Begin(client int, key string, kind Kind) *Op {
	r.mu.Lock()
	id := r.next
	r.next++
	r.mu.Unlock()
	return &Op{ID: id, Client: client, Key: key, Kind: kind, Call: r.Now(), Partition: -1}
}

// End stamps the return time (unless the outcome is unknown) and keeps op.
func (r *Recorder) End(op *Op, outcome Outcome, err error) {
	op.Outcome = outcome
	if outcome != OutcomeUnknown {
		op.Return = r.Now()
		if op.Return <= op.Call {
			op.Return = op.Call + 1
		}
	}
	if err != nil {
		op.Err = err.Error()
	}
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// Ops returns the finished operations sorted by call time.
func (r *Recorder) Ops() []*Op {
	r.mu.Lock()
	out := append([]*Op(nil), r.ops...)
	r.mu.Unlock()
	Sort(out)
	return out
}

// Counts tallies outcomes.
type Counts struct {
	OK, Fail, Unknown int
}

// Total is the number of operations counted.
func (c Counts) Total() int { return c.OK + c.Fail + c.Unknown }

// Count tallies the outcomes of ops.
func Count(ops []*Op) Counts {
	var c Counts
	for _, o := range ops {
		switch o.Outcome {
		case OutcomeOK:
			c.OK++
		case OutcomeFail:
			c.Fail++
		case OutcomeUnknown:
			c.Unknown++
		}
	}
	return c
}

// Counts tallies the outcomes recorded so far.
func (r *Recorder) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Count(r.ops)
}

// Sort orders ops by call time, then id.
func Sort(ops []*Op) {
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Call != ops[j].Call {
			return ops[i].Call < ops[j].Call
		}
		return ops[i].ID < ops[j].ID
	})
}

// FileName is the JSON-lines file of one client's operations.
func FileName(client int) string { return fmt.Sprintf("client-%03d.jsonl", client) }

// WriteDir writes ops as JSON lines into dir, one file per client.
func WriteDir(dir string, ops []*Op) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	byClient := map[int][]*Op{}
	for _, o := range ops {
		byClient[o.Client] = append(byClient[o.Client], o)
	}
	for c, list := range byClient {
		if err := writeFile(filepath.Join(dir, FileName(c)), list); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, ops []*Op) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, o := range ops {
		if err := enc.Encode(o); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadDir reads every client-*.jsonl file in dir and returns the operations
// sorted by call time.
func ReadDir(dir string) ([]*Op, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "client-*.jsonl"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("history: no client-*.jsonl files in %s", dir)
	}
	var out []*Op
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		ops, err := Decode(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("history: %s: %w", p, err)
		}
		out = append(out, ops...)
	}
	Sort(out)
	return out, nil
}

// Decode reads JSON lines of ops.
func Decode(r io.Reader) ([]*Op, error) {
	dec := json.NewDecoder(r)
	var out []*Op
	for {
		var o Op
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, &o)
	}
}
