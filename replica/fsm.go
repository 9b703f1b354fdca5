package replica

import (
	"io"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/raftfsm"
)

// fsmAdapter presents the replica's raftfsm.FSM to hashicorp/raft as a
// BatchingFSM, so one Pebble batch covers every entry Raft hands over at once.
type fsmAdapter Replica

var _ raft.BatchingFSM = (*fsmAdapter)(nil)

func (a *fsmAdapter) Apply(l *raft.Log) any {
	return a.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch returns one []raftfsm.Result per log (nil for configuration entries).
func (a *fsmAdapter) ApplyBatch(logs []*raft.Log) []any {
	entries := make([]raftfsm.Entry, len(logs))
	for i, l := range logs {
		entries[i].Index = l.Index
		if l.Type == raft.LogCommand {
			entries[i].Data = l.Data
		}
	}
	res := a.fsm.ApplyBatch(entries)
	out := make([]any, len(logs))
	for i := range res {
		out[i] = res[i]
		(*Replica)(a).answered(logs[i], out[i])
	}
	return out
}

func (a *fsmAdapter) Snapshot() (raft.FSMSnapshot, error) {
	s, err := a.fsm.Snapshot()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot{s}, nil
}

func (a *fsmAdapter) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return a.fsm.Restore(rc)
}

type fsmSnapshot struct{ s *raftfsm.Snapshot }

// Persist streams the snapshot into Raft's sink.
func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.s.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() { s.s.Release() }
