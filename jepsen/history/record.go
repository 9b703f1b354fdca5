package history

import (
	"encoding/json"
	"fmt"
	"os"
)

// Window is one nemesis fault, from its start to its heal (nanoseconds since
// the run started). End is 0 when the run ended before the heal.
type Window struct {
	Nemesis string `json:"nemesis"`
	// Detail names the targets, e.g. "isolate n2 (leader of p7)".
	Detail string `json:"detail"`
	Start  int64  `json:"start"`
	End    int64  `json:"end,omitempty"`
	// Err is set when applying or healing the fault failed.
	Err string `json:"err,omitempty"`
}

// ReplicaRead is one eventual read of a key from one replica after the final
// heal, the last one taken before the replicas converged or time ran out.
type ReplicaRead struct {
	Key       string `json:"key"`
	Partition int    `json:"partition"`
	Node      string `json:"node"`
	Found     bool   `json:"found"`
	Value     string `json:"value,omitempty"`
	Version   uint64 `json:"version,omitempty"`
	ServedBy  string `json:"served_by,omitempty"`
	Err       string `json:"err,omitempty"`
}

// PartitionState is one row of the cluster's partition table.
type PartitionState struct {
	ID       int      `json:"id"`
	Leader   string   `json:"leader"`
	Replicas []string `json:"replicas"`
	// Voters and NonVoters come from the replicas' Raft configurations.
	Voters    []string `json:"voters,omitempty"`
	NonVoters []string `json:"nonvoters,omitempty"`
	Term      uint64   `json:"term"`
	Applied   uint64   `json:"applied_index"`
}

// Final is what the run saw after its final heal. The strong reads and the
// writes to every partition taken then are ordinary Ops of FinalClient.
type Final struct {
	// FinalClient is the client number of the final reads and writes.
	FinalClient int `json:"final_client"`
	// Healed is when the last fault was healed (nanoseconds since start).
	Healed int64 `json:"healed"`
	// Ready reports whether every node said ready after the heal, and when.
	Ready   bool    `json:"ready"`
	ReadyAt float64 `json:"ready_after_s"`
	// ReadyErr says which nodes were not ready and why.
	ReadyErr string `json:"ready_err,omitempty"`
	// Table is the partition table after the convergence checks, for
	// post-mortems.
	Table []PartitionState `json:"partition_table,omitempty"`
	// Partitions is the partition count; PartitionKeys names the key written
	// to each partition after the heal, by partition id.
	Partitions    int            `json:"partitions"`
	PartitionKeys map[int]string `json:"partition_keys"`
	// Replicas of each partition (node names) as the cluster reported them.
	Replicas map[int][]string `json:"replicas"`
	// Converged reports whether every replica of every key matched the final
	// strong read within ConvergeLimit seconds; ConvergedAfter is how long
	// it took.
	Converged      bool          `json:"converged"`
	ConvergedAfter float64       `json:"converged_after_s"`
	ConvergeLimit  float64       `json:"converge_limit_s"`
	Reads          []ReplicaRead `json:"replica_reads"`
}

// WriteJSON writes v, indented, to path.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads path into v.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// WriteWindows writes the nemesis log as JSON lines.
func WriteWindows(path string, ws []Window) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, w := range ws {
		if err := enc.Encode(w); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// ReadWindows reads a nemesis log written by WriteWindows.
func ReadWindows(path string) ([]Window, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	var out []Window
	for dec.More() {
		var w Window
		if err := dec.Decode(&w); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, w)
	}
	return out, nil
}
