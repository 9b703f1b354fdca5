package storage

import (
	"bytes"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// tb is what the helpers need from *testing.T, *testing.B and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// openTest opens a store with cfg and closes it when the test ends.
func openTest(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// entry builds a deterministic log entry for (pid, index), so a reader can
// check any entry it finds without remembering what was written.
func entry(pid uint32, index uint64, size int) *raft.Log {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(uint64(pid)*31 + index*7 + uint64(i))
	}
	return &raft.Log{
		Index:      index,
		Term:       index/10 + 1,
		Type:       raft.LogCommand,
		Data:       data,
		AppendedAt: time.Unix(1_700_000_000, int64(index)).UTC(),
	}
}

// entries builds entry(pid, i, size) for i in [from, to].
func entries(pid uint32, from, to uint64, size int) []*raft.Log {
	out := make([]*raft.Log, 0, to-from+1)
	for i := from; i <= to; i++ {
		out = append(out, entry(pid, i, size))
	}
	return out
}

// sameLog reports whether a and b are equal as raft sees them: nil and empty
// byte slices are equal, and times compare as instants.
func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

// checkBounds fails unless l's FirstIndex and LastIndex are first and last.
func checkBounds(t tb, l *LogStore, first, last uint64) {
	t.Helper()
	f, err := l.FirstIndex()
	if err != nil {
		t.Fatalf("partition %d FirstIndex: %v", l.pid, err)
	}
	la, err := l.LastIndex()
	if err != nil {
		t.Fatalf("partition %d LastIndex: %v", l.pid, err)
	}
	if f != first || la != last {
		t.Fatalf("partition %d bounds = [%d, %d], want [%d, %d]", l.pid, f, la, first, last)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
