package raftfsm

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// testingT is what the helpers need from *testing.T, *testing.B and *rapid.T.
type testingT interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// quietLogger keeps Pebble's informational messages out of test output.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// openDB opens a Pebble on a fresh in-memory filesystem, closed at cleanup.
func openDB(t testingT) *pebble.DB {
	t.Helper()
	db, err := pebble.Open("db", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}})
	if err != nil {
		t.Fatalf("pebble.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newFSM returns the FSM of partition pid on db, closed at cleanup.
func newFSM(t testingT, db *pebble.DB, pid uint32) *FSM {
	t.Helper()
	return newFSMWriteBack(t, db, pid, 0)
}

// newFSMWriteBack is newFSM with Config.WriteBack set.
func newFSMWriteBack(t testingT, db *pebble.DB, pid uint32, writeBack int) *FSM {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Partition = pid
	cfg.DB = db
	cfg.WriteBack = writeBack
	f, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}

func put(key, value string) Command {
	return Command{Kind: KindPut, Key: []byte(key), Value: []byte(value)}
}

func del(key string) Command {
	return Command{Kind: KindDelete, Key: []byte(key)}
}

func casValue(key, expected, value string) Command {
	return Command{Kind: KindCAS, Key: []byte(key), Value: []byte(value), Expect: ExpectValue, ExpectedValue: []byte(expected)}
}

func casVersion(key string, expected uint64, value string) Command {
	return Command{Kind: KindCAS, Key: []byte(key), Value: []byte(value), Expect: ExpectVersion, ExpectedVersion: expected}
}

func casAbsent(key, value string) Command {
	return Command{Kind: KindCAS, Key: []byte(key), Value: []byte(value), Expect: ExpectAbsent}
}

// req gives c a request id.
func req(c Command, client, seq, ackBelow uint64) Command {
	c.ClientID, c.Seq, c.AckBelow = client, seq, ackBelow
	return c
}

func entry(index uint64, cmds ...Command) Entry {
	return Entry{Index: index, Data: EncodeBatch(nil, cmds)}
}

// kv is one stored key and value.
type kv struct{ key, value []byte }

// dump returns every key in db (all partitions and prefixes), in order.
func dump(t testingT, db *pebble.DB) []kv {
	t.Helper()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatalf("NewIter: %v", err)
	}
	defer it.Close()
	var out []kv
	for valid := it.First(); valid; valid = it.Next() {
		out = append(out, kv{bytes.Clone(it.Key()), bytes.Clone(it.Value())})
	}
	if err := it.Error(); err != nil {
		t.Fatalf("iterate: %v", err)
	}
	return out
}

// diffKeyspaces describes the first difference between two dumps, or "".
func diffKeyspaces(a, b []kv) string {
	for i := range min(len(a), len(b)) {
		if !bytes.Equal(a[i].key, b[i].key) || !bytes.Equal(a[i].value, b[i].value) {
			return fmt.Sprintf("entry %d: %x=%x vs %x=%x", i, a[i].key, a[i].value, b[i].key, b[i].value)
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("%d keys vs %d keys", len(a), len(b))
	}
	return ""
}

// resultsEqual compares results, treating nil and empty values alike.
func resultsEqual(a, b Result) bool {
	return a.Status == b.Status && a.Version == b.Version && a.Exists == b.Exists &&
		bytes.Equal(a.Value, b.Value) && a.Err == b.Err
}

// applyOne applies a single-command entry and returns its result.
func applyOne(t testingT, f *FSM, index uint64, c Command) Result {
	t.Helper()
	rs := f.Apply(index, EncodeBatch(nil, []Command{c}))
	if len(rs) != 1 {
		t.Fatalf("Apply(%d): %d results, want 1", index, len(rs))
	}
	return rs[0]
}

var _ testingT = (*testing.T)(nil)

// crash abandons f as a killed process would: what waits in memory is
// never written, and f's later Flush and Close calls do nothing.
func (f *FSM) crash() {
	f.mu.Lock()
	f.shut = true
	f.mu.Unlock()
	f.closeOnce.Do(func() { close(f.closed) })
}
