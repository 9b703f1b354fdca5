package storage

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
)

func TestKeyLayout(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"partition prefix", PartitionPrefix(0x01020304), []byte{0x02, 1, 2, 3, 4}},
		{"fsm prefix", FSMPrefix(0x01020304), []byte{0x02, 1, 2, 3, 4, 0x03}},
		{"stable key", stableKey(7, []byte("CurrentTerm")), append([]byte{0x02, 0, 0, 0, 7, 0x02}, "CurrentTerm"...)},
		{"meta key", metaKey("cluster-id"), append([]byte{0x01}, "cluster-id"...)},
		{"log key", func() []byte { b := make([]byte, logKeyLen); putLogKey(b, 7, 0x0102); return b }(),
			[]byte{0x02, 0, 0, 0, 7, 0x01, 0, 0, 0, 0, 0, 0, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !bytes.Equal(tt.got, tt.want) {
				t.Fatalf("got %x, want %x", tt.got, tt.want)
			}
		})
	}
}

func TestPrefixEnd(t *testing.T) {
	tests := []struct {
		name         string
		prefix, want []byte
	}{
		{"empty has no end", nil, nil},
		{"all 0xff has no end", []byte{0xff, 0xff}, nil},
		{"increments last byte", []byte{0x02, 0, 0, 0, 7}, []byte{0x02, 0, 0, 0, 8}},
		{"carries past 0xff", []byte{0x02, 0, 0, 0xff, 0xff}, []byte{0x02, 0, 1}},
		{"max pid", PartitionPrefix(math.MaxUint32), []byte{0x03}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PrefixEnd(tt.prefix)
			if !bytes.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Fatalf("PrefixEnd(%x) = %x, want %x", tt.prefix, got, tt.want)
			}
			// Every key with the prefix sorts below the end.
			if got != nil && bytes.Compare(append(slices.Clone(tt.prefix), 0xff, 0xff), got) >= 0 {
				t.Fatalf("PrefixEnd(%x) = %x is not above the prefix's keys", tt.prefix, got)
			}
		})
	}
	t.Run("does not alias its input", func(t *testing.T) {
		p := []byte{1, 2}
		e := PrefixEnd(p)
		e[0] = 9
		if p[0] != 1 {
			t.Fatal("PrefixEnd modified its input")
		}
	})
}

// fill gives partition pid a log, a stable value and FSM data.
func fill(t *testing.T, s *Store, pid uint32) {
	t.Helper()
	l := s.Log(pid)
	if err := l.StoreLogs(entries(pid, 1, 5, 8)); err != nil {
		t.Fatal(err)
	}
	if err := l.SetUint64([]byte("CurrentTerm"), uint64(pid)+1); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Set(append(FSMPrefix(pid), "user-key"...), []byte("v"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

// partitionIntact fails unless fill's data for pid is all there.
func partitionIntact(t *testing.T, s *Store, pid uint32) {
	t.Helper()
	l := s.Log(pid)
	checkBounds(t, l, 1, 5)
	var e raft.Log
	if err := l.GetLog(3, &e); err != nil || !sameLog(&e, entry(pid, 3, 8)) {
		t.Fatalf("partition %d GetLog(3) = %+v, %v", pid, e, err)
	}
	if v, err := l.GetUint64([]byte("CurrentTerm")); err != nil || v != uint64(pid)+1 {
		t.Fatalf("partition %d CurrentTerm = %d, %v", pid, v, err)
	}
	v, closer, err := s.DB().Get(append(FSMPrefix(pid), "user-key"...))
	if err != nil || string(v) != "v" {
		t.Fatalf("partition %d FSM key = %q, %v", pid, v, err)
	}
	_ = closer.Close()
}

func TestDeletePartition(t *testing.T) {
	for _, pid := range []uint32{1, 1000, math.MaxUint32 - 1} {
		s := openTest(t, TestConfig())
		for _, p := range []uint32{pid - 1, pid, pid + 1} {
			fill(t, s, p)
		}
		if err := s.SetMeta("cluster-id", []byte("c1")); err != nil {
			t.Fatal(err)
		}
		if err := s.DeletePartition(pid); err != nil {
			t.Fatal(err)
		}

		l := s.Log(pid)
		checkBounds(t, l, 0, 0)
		var e raft.Log
		if err := l.GetLog(3, &e); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog after delete = %v, want ErrLogNotFound", err)
		}
		if _, err := l.GetUint64([]byte("CurrentTerm")); !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("GetUint64 after delete = %v, want ErrKeyNotFound", err)
		}
		it, err := s.DB().NewIter(&pebble.IterOptions{LowerBound: PartitionPrefix(pid), UpperBound: PrefixEnd(PartitionPrefix(pid))})
		if err != nil {
			t.Fatal(err)
		}
		if it.First() {
			t.Fatalf("partition %d still has key %x", pid, it.Key())
		}
		_ = it.Close()

		partitionIntact(t, s, pid-1)
		partitionIntact(t, s, pid+1)
		if v, ok, err := s.GetMeta("cluster-id"); err != nil || !ok || string(v) != "c1" {
			t.Fatalf("meta after DeletePartition = %q, %v, %v", v, ok, err)
		}
		if got, err := s.Partitions(); err != nil || !slices.Equal(got, []uint32{pid - 1, pid + 1}) {
			t.Fatalf("Partitions() = %v, %v; want %v", got, err, []uint32{pid - 1, pid + 1})
		}

		// The partition can be rebuilt from scratch, as a re-added replica is.
		if err := l.StoreLogs(entries(pid, 50, 52, 8)); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, l, 50, 52)
	}
}

func TestPartitions(t *testing.T) {
	s := openTest(t, TestConfig())
	if got, err := s.Partitions(); err != nil || len(got) != 0 {
		t.Fatalf("Partitions() of empty store = %v, %v", got, err)
	}
	if err := s.SetMeta("partitions", []byte("64")); err != nil {
		t.Fatal(err)
	}
	// One partition with only a stable key, one with only FSM data, one with
	// a long log, and the extremes.
	if err := s.Log(3).Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Set(append(FSMPrefix(4), 'k'), nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := s.Log(9).StoreLogs(entries(9, 1, 500, 8)); err != nil {
		t.Fatal(err)
	}
	if err := s.Log(0).StoreLog(entry(0, 1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Log(math.MaxUint32).StoreLog(entry(math.MaxUint32, 1, 1)); err != nil {
		t.Fatal(err)
	}
	// A log emptied by DeleteRange leaves its partition without keys.
	if err := s.Log(12).StoreLogs(entries(12, 1, 10, 8)); err != nil {
		t.Fatal(err)
	}
	if err := s.Log(12).DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	want := []uint32{0, 3, 4, 9, math.MaxUint32}
	if got, err := s.Partitions(); err != nil || !slices.Equal(got, want) {
		t.Fatalf("Partitions() = %v, %v; want %v", got, err, want)
	}
}

func TestReopenKeepsData(t *testing.T) {
	cfg := TestConfig()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s, 8)
	if err := s.SetMeta("node-id", []byte("n1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, cfg)
	partitionIntact(t, s, 8)
	if v, ok, err := s.GetMeta("node-id"); err != nil || !ok || string(v) != "n1" {
		t.Fatalf("GetMeta after reopen = %q, %v, %v", v, ok, err)
	}
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	s, err := Open(TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	l := s.Log(1)
	if err := l.StoreLog(entry(1, 1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	var e raft.Log
	ops := map[string]error{
		"StoreLogs":       l.StoreLogs([]*raft.Log{entry(1, 2, 1)}),
		"GetLog":          l.GetLog(1, &e),
		"DeleteRange":     l.DeleteRange(1, 1),
		"Set":             l.Set([]byte("k"), []byte("v")),
		"SetMeta":         s.SetMeta("k", nil),
		"DeletePartition": s.DeletePartition(1),
		"FirstIndex(new)": func() error { _, err := s.Log(2).FirstIndex(); return err }(),
		"Get":             func() error { _, err := l.Get([]byte("k")); return err }(),
		"GetMeta":         func() error { _, _, err := s.GetMeta("k"); return err }(),
		"Partitions":      func() error { _, err := s.Partitions(); return err }(),
	}
	for name, err := range ops {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// TestCloseWaitsForWriters races Close against writers of many partitions:
// every write either succeeds or reports ErrClosed, and nothing panics.
func TestCloseWaitsForWriters(t *testing.T) {
	s, err := Open(TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for pid := range uint32(8) {
		wg.Go(func() {
			l := s.Log(pid)
			for i := uint64(1); ; i++ {
				if err := l.StoreLog(entry(pid, i, 16)); err != nil {
					errs <- err
					return
				}
				if _, err := l.LastIndex(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	// Let every writer commit at least once before closing.
	for pid := range uint32(8) {
		waitFor(t, func() bool { n, err := s.Log(pid).LastIndex(); return err != nil || n > 0 })
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("writer stopped with %v, want ErrClosed", err)
		}
	}
}

func TestMetaRoundTrip(t *testing.T) {
	s := openTest(t, TestConfig())
	if v, ok, err := s.GetMeta("cluster-id"); err != nil || ok || v != nil {
		t.Fatalf("GetMeta of unset = %q, %v, %v; want nil, false, nil", v, ok, err)
	}
	tests := []struct {
		name  string
		value []byte
	}{
		{"cluster-id", []byte("7f3a")},
		{"partitions", []byte{0, 0, 0, 64}},
		{"", []byte("empty name is a valid key")},
		{"empty-value", []byte{}},
	}
	for _, tt := range tests {
		if err := s.SetMeta(tt.name, tt.value); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range tests {
		v, ok, err := s.GetMeta(tt.name)
		if err != nil || !ok || !bytes.Equal(v, tt.value) {
			t.Errorf("GetMeta(%q) = %q, %v, %v; want %q", tt.name, v, ok, err, tt.value)
		}
	}
	// Meta keys are not partitions.
	if got, err := s.Partitions(); err != nil || len(got) != 0 {
		t.Fatalf("Partitions() with only meta = %v, %v", got, err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"default with dir", func(c *Config) { c.Dir = "/data" }, true},
		{"zero fields take defaults", func(c *Config) { *c = Config{Dir: "/data"} }, true},
		{"missing dir", func(c *Config) { c.Dir = "" }, false},
		{"negative cache", func(c *Config) { c.Dir = "d"; c.CacheSize = -1 }, false},
		{"memtable too big", func(c *Config) { c.Dir = "d"; c.MemTableSize = 4 << 30 }, false},
		{"one memtable", func(c *Config) { c.Dir = "d"; c.MemTableStopWritesThreshold = 1 }, false},
		{"stop below compaction", func(c *Config) { c.Dir = "d"; c.L0CompactionThreshold = 8; c.L0StopWritesThreshold = 4 }, false},
		{"negative open files", func(c *Config) { c.Dir = "d"; c.MaxOpenFiles = -1 }, false},
		{"negative sync interval", func(c *Config) { c.Dir = "d"; c.WALMinSyncInterval = -1 }, false},
		{"negative WAL write buffer", func(c *Config) { c.Dir = "d"; c.WALWriteBuffer = -1 }, false},
		{"WAL write buffer too large", func(c *Config) { c.Dir = "d"; c.WALWriteBuffer = MaxWALWriteBuffer + 1 }, false},
		{"WAL write buffer off", func(c *Config) { c.Dir = "d"; c.WALWriteBuffer = 0 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if err := TestConfig().Validate(); err != nil {
		t.Fatalf("TestConfig().Validate() = %v", err)
	}
	if _, err := Open(Config{FS: vfs.NewMem()}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Open without Dir = %v, want ErrInvalidConfig", err)
	}
}

// recordHandler keeps the messages logged at or above a level.
type recordHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Level.String()+" "+r.Message)
	return nil
}

func (h *recordHandler) has(msg string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.msgs, msg)
}

func TestLoggerBridge(t *testing.T) {
	h := &recordHandler{}
	cfg := TestConfig()
	cfg.Logger = slog.New(h)
	s := openTest(t, cfg)
	if err := s.Log(1).StoreLogs(entries(1, 1, 10, 64)); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return h.has("DEBUG pebble flush") })

	// Pebble's Fatalf must not return.
	defer func() {
		if recover() == nil {
			t.Fatal("Fatalf returned")
		}
		if !h.has("ERROR boom 7") {
			t.Fatalf("Fatalf was not logged; got %v", h.msgs)
		}
	}()
	pebbleLogger{slog.New(h)}.Fatalf("boom %d", 7)
}
