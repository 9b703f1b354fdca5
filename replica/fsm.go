package replica

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/raftfsm"
)

// MaxApplyFlushDelay bounds Config.ApplyFlushDelay: a crash replays what
// waited from the Raft log, and a snapshot waits for it to be written.
// raftfsm.MaxWriteBack bounds ApplyWriteBack.
const MaxApplyFlushDelay = time.Second

// openFSM opens the partition's state machine, with applied writes waiting
// in memory when ApplyFlushDelay is set.
func openFSM(cfg Config, log *slog.Logger) (*raftfsm.FSM, *time.Timer, error) {
	fc := raftfsm.Config{Partition: cfg.Partition, DB: cfg.Store.DB(), Logger: log}
	if cfg.ApplyFlushDelay <= 0 {
		fsm, err := raftfsm.New(fc)
		return fsm, nil, err
	}
	fc.WriteBack = cfg.ApplyWriteBack
	return NewFlushingFSM(fc, cfg.ApplyFlushDelay)
}

// NewFlushingFSM opens a state machine whose applied writes wait in memory
// (fc.WriteBack must be above 0) and a timer, armed when they start to
// wait, that writes them to Pebble delay later (raftfsm/pending.go). Stop
// the timer after closing the FSM; a flush after Close does nothing.
func NewFlushingFSM(fc raftfsm.Config, delay time.Duration) (*raftfsm.FSM, *time.Timer, error) {
	if fc.WriteBack <= 0 || delay <= 0 {
		return nil, nil, fmt.Errorf("replica: a flushing state machine needs WriteBack and delay above 0, got %d bytes and %v", fc.WriteBack, delay)
	}
	log := fc.Logger // raftfsm.New refuses a nil one before the timer can fire
	var opened atomic.Pointer[raftfsm.FSM]
	timer := time.AfterFunc(time.Hour, func() {
		err := opened.Load().Flush()
		if err != nil && !errors.Is(err, raftfsm.ErrClosed) {
			log.Error("writing applied state to the store", "err", err)
		}
	})
	timer.Stop()
	fc.OnPending = func() { timer.Reset(delay) }
	fsm, err := raftfsm.New(fc)
	if err != nil {
		return nil, nil, err
	}
	opened.Store(fsm)
	return fsm, timer, nil
}

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
