package raftfsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	db := openDB(t)
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"default lacks DB", func(*Config) {}, "Config.DB is nil"},
		{"complete", func(c *Config) { c.DB = db }, ""},
		{"nil logger", func(c *Config) { c.DB = db; c.Logger = nil }, "Config.Logger is nil"},
		{"write-back", func(c *Config) { c.DB = db; c.WriteBack = MaxWriteBack }, ""},
		{"negative write-back", func(c *Config) { c.DB = db; c.WriteBack = -1 }, "Config.WriteBack -1 bytes outside 0..16777216"},
		{"write-back too large", func(c *Config) { c.DB = db; c.WriteBack = MaxWriteBack + 1 }, "outside 0..16777216"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.wantErr)
			}
			if _, err := New(cfg); err == nil {
				t.Fatalf("New accepted an invalid config")
			}
		})
	}
}

func TestApplySemantics(t *testing.T) {
	const at = 100 // index of the command under test; setup uses 1, 2, ...
	ok := Result{Status: StatusOK, Version: at}
	tests := []struct {
		name      string
		setup     []Command
		cmd       Command
		want      Result
		wantValue string // "" with wantFound false: key absent afterwards
		wantVer   uint64
		wantFound bool
	}{
		{"put new key", nil, put("k", "v"), ok, "v", at, true},
		{"put overwrites", []Command{put("k", "old")}, put("k", "v"), ok, "v", at, true},
		{"put empty value", nil, put("k", ""), ok, "", at, true},
		{"delete existing", []Command{put("k", "v")}, del("k"), ok, "", 0, false},
		{"delete missing", nil, del("k"), Result{Status: StatusNotFound}, "", 0, false},
		{"delete deleted", []Command{put("k", "v"), del("k")}, del("k"), Result{Status: StatusNotFound}, "", 0, false},
		{"cas value match", []Command{put("k", "old")}, casValue("k", "old", "new"), ok, "new", at, true},
		{"cas value mismatch", []Command{put("k", "old")}, casValue("k", "x", "new"),
			Result{Status: StatusCompareFailed, Version: 1, Exists: true, Value: []byte("old")}, "old", 1, true},
		{"cas value on missing", nil, casValue("k", "", "new"), Result{Status: StatusCompareFailed}, "", 0, false},
		{"cas value matches empty value", []Command{put("k", "")}, casValue("k", "", "new"), ok, "new", at, true},
		{"cas version match", []Command{put("j", "x"), put("k", "old")}, casVersion("k", 2, "new"), ok, "new", at, true},
		{"cas version mismatch", []Command{put("k", "old"), put("k", "older")}, casVersion("k", 1, "new"),
			Result{Status: StatusCompareFailed, Version: 2, Exists: true, Value: []byte("older")}, "older", 2, true},
		{"cas version 0 on missing", nil, casVersion("k", 0, "new"), Result{Status: StatusCompareFailed}, "", 0, false},
		{"cas version 0 on existing", []Command{put("k", "old")}, casVersion("k", 0, "new"),
			Result{Status: StatusCompareFailed, Version: 1, Exists: true, Value: []byte("old")}, "old", 1, true},
		{"cas absent on missing", nil, casAbsent("k", "new"), ok, "new", at, true},
		{"cas absent after delete", []Command{put("k", "v"), del("k")}, casAbsent("k", "new"), ok, "new", at, true},
		{"cas absent on existing", []Command{put("k", "old")}, casAbsent("k", "new"),
			Result{Status: StatusCompareFailed, Version: 1, Exists: true, Value: []byte("old")}, "old", 1, true},
		{"unknown kind", nil, Command{Kind: 9, Key: []byte("k")},
			Result{Status: StatusInvalid, Err: "invalid command: unknown kind 9"}, "", 0, false},
		{"empty key", nil, put("", "v"), Result{Status: StatusInvalid, Err: "invalid command: empty key"}, "", 0, false},
		{"cas without condition", nil, Command{Kind: KindCAS, Key: []byte("k")},
			Result{Status: StatusInvalid, Err: "invalid command: unknown CAS condition 0"}, "", 0, false},
		{"put ignores cas fields", nil, Command{Kind: KindPut, Key: []byte("k"), Value: []byte("v"), Expect: ExpectAbsent}, ok, "v", at, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(t, openDB(t), 1)
			for i, c := range tt.setup {
				if r := applyOne(t, f, uint64(i+1), c); r.Status != StatusOK {
					t.Fatalf("setup %d: %+v", i, r)
				}
			}
			if got := applyOne(t, f, at, tt.cmd); !resultsEqual(got, tt.want) {
				t.Fatalf("result = %+v, want %+v", got, tt.want)
			}
			value, version, err := f.Get([]byte("k"))
			switch {
			case !tt.wantFound && !errors.Is(err, ErrNotFound):
				t.Fatalf("Get = %q@%d, %v; want ErrNotFound", value, version, err)
			case tt.wantFound && (err != nil || string(value) != tt.wantValue || version != tt.wantVer):
				t.Fatalf("Get = %q@%d, %v; want %q@%d", value, version, err, tt.wantValue, tt.wantVer)
			}
		})
	}
}

func TestEntryCommandsSeeEachOther(t *testing.T) {
	f := newFSM(t, openDB(t), 1)
	rs := f.Apply(7, EncodeBatch(nil, []Command{
		put("a", "1"), casValue("a", "1", "2"), casVersion("a", 7, "3"), del("a"), casAbsent("a", "4"), del("b"),
	}))
	want := []Status{StatusOK, StatusOK, StatusOK, StatusOK, StatusOK, StatusNotFound}
	if len(rs) != len(want) {
		t.Fatalf("%d results, want %d", len(rs), len(want))
	}
	for i, r := range rs {
		wantVer := uint64(7)
		if want[i] != StatusOK {
			wantVer = 0
		}
		if r.Status != want[i] || r.Version != wantVer {
			t.Fatalf("result %d = %+v, want %v@%d", i, r, want[i], wantVer)
		}
	}
	if v, ver, err := f.Get([]byte("a")); err != nil || string(v) != "4" || ver != 7 {
		t.Fatalf("Get(a) = %q@%d, %v; want 4@7", v, ver, err)
	}
}

// step is one entry of a scripted test and the results it must produce.
type step struct {
	index uint64
	cmds  []Command
	want  []Result
}

func runSteps(t *testing.T, f *FSM, steps []step) {
	t.Helper()
	for _, s := range steps {
		got := f.Apply(s.index, EncodeBatch(nil, s.cmds))
		if len(got) != len(s.want) {
			t.Fatalf("index %d: %d results, want %d", s.index, len(got), len(s.want))
		}
		for i := range got {
			if !resultsEqual(got[i], s.want[i]) {
				t.Fatalf("index %d command %d: %+v, want %+v", s.index, i, got[i], s.want[i])
			}
		}
	}
}

func TestDedup(t *testing.T) {
	okAt := func(i uint64) Result { return Result{Status: StatusOK, Version: i} }
	stale := Result{Status: StatusStaleRequest}
	tests := []struct {
		name      string
		steps     []step
		wantValue string
		wantVer   uint64
	}{
		{"retry returns first result and applies nothing", []step{
			{1, []Command{req(put("k", "v1"), 1, 1, 0)}, []Result{okAt(1)}},
			{2, []Command{put("k", "v2")}, []Result{okAt(2)}},
			{3, []Command{req(put("k", "v1"), 1, 1, 0)}, []Result{okAt(1)}},
		}, "v2", 2},
		{"retried CAS failure returns the stored failure", []step{
			{1, []Command{put("k", "a")}, []Result{okAt(1)}},
			{2, []Command{req(casValue("k", "x", "y"), 1, 5, 0)}, []Result{{Status: StatusCompareFailed, Version: 1, Exists: true, Value: []byte("a")}}},
			{3, []Command{put("k", "x")}, []Result{okAt(3)}},
			{4, []Command{req(casValue("k", "x", "y"), 1, 5, 0)}, []Result{{Status: StatusCompareFailed, Version: 1, Exists: true, Value: []byte("a")}}},
		}, "x", 3},
		{"seq below the acknowledged window is stale", []step{
			{1, []Command{req(put("k", "a"), 1, 1, 0)}, []Result{okAt(1)}},
			{2, []Command{req(put("k", "b"), 1, 2, 2)}, []Result{okAt(2)}},
			{3, []Command{req(put("k", "a"), 1, 1, 0)}, []Result{stale}},
		}, "b", 2},
		{"ack keeps results at and above AckBelow", []step{
			{1, []Command{req(put("k", "a"), 1, 1, 0), req(put("k", "b"), 1, 2, 0)}, []Result{okAt(1), okAt(1)}},
			{2, []Command{req(put("j", "c"), 1, 3, 2)}, []Result{okAt(2)}},
			{3, []Command{req(put("k", "b"), 1, 2, 0)}, []Result{okAt(1)}},
			{4, []Command{req(put("k", "a"), 1, 1, 0)}, []Result{stale}},
		}, "b", 1},
		{"a stale request still raises the window", []step{
			{1, []Command{req(put("k", "a"), 1, 5, 0)}, []Result{okAt(1)}},
			{2, []Command{req(put("k", "b"), 1, 3, 6)}, []Result{stale}},
			{3, []Command{req(put("k", "c"), 1, 5, 0)}, []Result{stale}},
		}, "a", 1},
		{"clients are independent", []step{
			{1, []Command{req(put("k", "a"), 1, 1, 0)}, []Result{okAt(1)}},
			{2, []Command{req(put("k", "b"), 2, 1, 0)}, []Result{okAt(2)}},
		}, "b", 2},
		{"duplicate within one entry", []step{
			{1, []Command{req(put("k", "a"), 1, 1, 0), req(put("k", "b"), 1, 1, 0)}, []Result{okAt(1), okAt(1)}},
		}, "a", 1},
		{"out-of-order seqs both apply", []step{
			{1, []Command{req(put("k", "a"), 1, 9, 0)}, []Result{okAt(1)}},
			{2, []Command{req(put("k", "b"), 1, 8, 0)}, []Result{okAt(2)}},
			{3, []Command{req(put("k", "a"), 1, 9, 0)}, []Result{okAt(1)}},
		}, "b", 2},
		{"client 0 never dedups", []step{
			{1, []Command{put("k", "a")}, []Result{okAt(1)}},
			{2, []Command{put("k", "a")}, []Result{okAt(2)}},
		}, "a", 2},
		{"invalid command result is remembered", []step{
			{1, []Command{req(put("", "a"), 1, 1, 0)}, []Result{{Status: StatusInvalid, Err: "invalid command: empty key"}}},
			{2, []Command{req(put("k", "a"), 1, 1, 0)}, []Result{{Status: StatusInvalid, Err: "invalid command: empty key"}}},
			{3, []Command{put("k", "z")}, []Result{okAt(3)}},
		}, "z", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(t, openDB(t), 1)
			runSteps(t, f, tt.steps)
			if v, ver, err := f.Get([]byte("k")); err != nil || string(v) != tt.wantValue || ver != tt.wantVer {
				t.Fatalf("Get(k) = %q@%d, %v; want %q@%d", v, ver, err, tt.wantValue, tt.wantVer)
			}
		})
	}
}

// loadSession reads a client's stored dedup record.
func loadSession(t *testing.T, f *FSM, client uint64) *session {
	t.Helper()
	v, closer, err := f.db.Get(appendSessionKey(nil, f.prefix, client))
	if err != nil {
		t.Fatalf("get session %d: %v", client, err)
	}
	defer closer.Close()
	s, err := decodeSession(v)
	if err != nil {
		t.Fatalf("decode session %d: %v", client, err)
	}
	return s
}

func TestDedupCapsResultCount(t *testing.T) {
	f := newFSM(t, openDB(t), 1)
	const n = maxSessionResults + 76
	var index uint64
	for seq := uint64(0); seq < n; seq += 100 {
		var cmds []Command
		for s := seq; s < min(seq+100, n); s++ {
			cmds = append(cmds, req(put(fmt.Sprint("k", s), "v"), 1, s, 0))
		}
		index++
		f.Apply(index, EncodeBatch(nil, cmds))
	}
	s := loadSession(t, f, 1)
	if len(s.results) != maxSessionResults || s.low != n-maxSessionResults {
		t.Fatalf("record holds %d results from %d, want %d from %d", len(s.results), s.low, maxSessionResults, n-maxSessionResults)
	}
	index++
	if r := applyOne(t, f, index, req(put("k0", "again"), 1, 0, 0)); r.Status != StatusStaleRequest {
		t.Fatalf("oldest trimmed seq: %+v, want stale", r)
	}
	index++
	if r := applyOne(t, f, index, req(put("k-last", "again"), 1, n-1, 0)); r.Status != StatusOK || r.Version != 11 {
		t.Fatalf("newest seq retried: %+v, want its first result (ok@11)", r)
	}
}

func TestDedupCapsResultBytes(t *testing.T) {
	f := newFSM(t, openDB(t), 1)
	big := strings.Repeat("x", 300<<10)
	applyOne(t, f, 1, put("k", big))
	// Each failed CAS stores the 300 KiB current value.
	for seq := uint64(0); seq < 5; seq++ {
		if r := applyOne(t, f, 2+seq, req(casAbsent("k", "v"), 1, seq, 0)); r.Status != StatusCompareFailed {
			t.Fatalf("seq %d: %+v", seq, r)
		}
	}
	s := loadSession(t, f, 1)
	if s.size > maxSessionBytes || len(s.results) != 3 || s.low != 2 {
		t.Fatalf("record: %d results, %d bytes, low %d; want 3 results under %d bytes, low 2", len(s.results), s.size, s.low, maxSessionBytes)
	}
	// A single result above the byte cap is still kept, so its retry works.
	huge := strings.Repeat("y", maxSessionBytes+1)
	applyOne(t, f, 10, put("h", huge))
	first := applyOne(t, f, 11, req(casAbsent("h", "v"), 2, 1, 0))
	if again := applyOne(t, f, 12, req(casAbsent("h", "v"), 2, 1, 0)); !resultsEqual(again, first) || len(again.Value) != len(huge) {
		t.Fatalf("retry of an oversized result: %v/%d bytes, want %v", again.Status, len(again.Value), first.Status)
	}
}

func TestReplayIsSkipped(t *testing.T) {
	db := openDB(t)
	f := newFSM(t, db, 1)
	var entries []Entry
	for i := uint64(1); i <= 10; i++ {
		entries = append(entries, entry(i, req(put(fmt.Sprint("k", i%3), fmt.Sprint("v", i)), 1, i, 0)))
	}
	f.ApplyBatch(entries)
	before := dump(t, db)

	reopened := newFSM(t, db, 1)
	if got := reopened.AppliedIndex(); got != 10 {
		t.Fatalf("reopened AppliedIndex = %d, want 10", got)
	}
	// Same indices, different contents: a replay must not look at them.
	var replay []Entry
	for i := uint64(1); i <= 10; i++ {
		replay = append(replay, entry(i, put("k0", "replayed")))
	}
	for i, rs := range reopened.ApplyBatch(replay) {
		if rs != nil {
			t.Fatalf("replayed entry %d produced results %+v", i+1, rs)
		}
	}
	if d := diffKeyspaces(before, dump(t, db)); d != "" {
		t.Fatalf("replay changed the keyspace: %s", d)
	}
	// A batch straddling the applied index applies only the new part, and
	// skips an entry that goes backwards.
	rs := reopened.ApplyBatch([]Entry{entry(9, put("x", "old")), entry(12, put("x", "new")), entry(11, put("x", "back"))})
	if rs[0] != nil || rs[2] != nil || len(rs[1]) != 1 || rs[1][0].Version != 12 {
		t.Fatalf("straddling batch results = %+v", rs)
	}
	if v, ver, _ := reopened.Get([]byte("x")); string(v) != "new" || ver != 12 || reopened.AppliedIndex() != 12 {
		t.Fatalf("x = %q@%d applied %d; want new@12 applied 12", v, ver, reopened.AppliedIndex())
	}
}

func TestEntriesWithoutCommand(t *testing.T) {
	db := openDB(t)
	f := newFSM(t, db, 1)
	rs := f.ApplyBatch([]Entry{{Index: 3}, {Index: 4, Data: []byte{}}})
	if rs[0] != nil || rs[1] != nil || f.AppliedIndex() != 4 {
		t.Fatalf("results %+v, applied %d; want nil results, applied 4", rs, f.AppliedIndex())
	}
	if got := newFSM(t, db, 1).AppliedIndex(); got != 4 {
		t.Fatalf("persisted applied index = %d, want 4", got)
	}
}

func TestUndecodableEntry(t *testing.T) {
	valid := EncodeBatch(nil, []Command{put("k", "v")})
	tests := []struct {
		name string
		data []byte
	}{
		{"garbage", []byte("definitely not a batch")},
		{"unknown version", append([]byte{77}, valid[1:]...)},
		{"truncated", valid[:len(valid)-2]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(t, openDB(t), 1)
			rs := f.Apply(5, tt.data)
			if len(rs) != 1 || rs[0].Status != StatusInvalid || !strings.Contains(rs[0].Err, "corrupt command") {
				t.Fatalf("results = %+v, want one StatusInvalid naming the corrupt command", rs)
			}
			if f.AppliedIndex() != 5 {
				t.Fatalf("AppliedIndex = %d, want 5", f.AppliedIndex())
			}
			if r := applyOne(t, f, 6, put("k", "v")); r.Status != StatusOK || r.Version != 6 {
				t.Fatalf("next entry: %+v", r)
			}
		})
	}
}

func TestPartitionsAreIsolated(t *testing.T) {
	db := openDB(t)
	a, b := newFSM(t, db, 1), newFSM(t, db, 2)
	applyOne(t, a, 1, req(put("k", "a"), 1, 1, 0))
	applyOne(t, b, 1, req(put("k", "b"), 1, 1, 0))
	if r := applyOne(t, b, 2, req(put("k", "again"), 1, 1, 0)); r.Version != 1 {
		t.Fatalf("retry in partition 2: %+v", r)
	}
	va, _, _ := a.Get([]byte("k"))
	vb, _, _ := b.Get([]byte("k"))
	if string(va) != "a" || string(vb) != "b" || a.AppliedIndex() != 1 || b.AppliedIndex() != 2 {
		t.Fatalf("partition 1 k=%q applied %d, partition 2 k=%q applied %d", va, a.AppliedIndex(), vb, b.AppliedIndex())
	}
}

func TestGetReturnsCopy(t *testing.T) {
	f := newFSM(t, openDB(t), 1)
	applyOne(t, f, 1, put("k", "value"))
	v, _, _ := f.Get([]byte("k"))
	copy(v, "XXXXX")
	if again, _, _ := f.Get([]byte("k")); string(again) != "value" {
		t.Fatalf("Get after mutating a returned value = %q", again)
	}
}

func TestStorageFailureStopsApplying(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(f *FSM) []byte // returns the storage key to corrupt
		cmd     Command
	}{
		{"short stored value", func(f *FSM) []byte { return appendDataKey(nil, f.prefix, []byte("bad")) }, del("bad")},
		{"corrupt dedup record", func(f *FSM) []byte { return appendSessionKey(nil, f.prefix, 4) }, req(put("k", "v"), 4, 1, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openDB(t)
			f := newFSM(t, db, 1)
			applyOne(t, f, 1, put("k", "v"))
			healthy, err := f.Snapshot()
			if err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			var snap bytes.Buffer
			if _, err := healthy.WriteTo(&snap); err != nil {
				t.Fatalf("WriteTo: %v", err)
			}
			healthy.Release()
			if err := db.Set(tt.corrupt(f), []byte{1, 2}, nil); err != nil {
				t.Fatalf("corrupt: %v", err)
			}

			rs := f.ApplyBatch([]Entry{entry(2, put("other", "x")), entry(3, tt.cmd)})
			for i, r := range rs {
				if len(r) != 1 || r[0].Status != StatusInvalid || !strings.Contains(r[0].Err, "state machine failed") {
					t.Fatalf("entry %d results = %+v, want StatusInvalid naming the failure", i, r)
				}
			}
			if f.AppliedIndex() != 1 {
				t.Fatalf("AppliedIndex = %d, want 1 (nothing applied)", f.AppliedIndex())
			}
			if _, _, err := f.Get([]byte("other")); !errors.Is(err, ErrNotFound) {
				t.Fatalf("entry before the failure was committed: %v", err)
			}
			if err := f.WaitApplied(context.Background(), 2); !errors.Is(err, ErrFailed) {
				t.Fatalf("WaitApplied = %v, want ErrFailed", err)
			}
			if _, err := f.Snapshot(); !errors.Is(err, ErrFailed) {
				t.Fatalf("Snapshot = %v, want ErrFailed", err)
			}
			// Restoring a healthy snapshot, even an old one, repairs it.
			if err := f.Restore(&snap); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if r := applyOne(t, f, 4, tt.cmd); r.Status == StatusInvalid || f.AppliedIndex() != 4 {
				t.Fatalf("apply after restore: %+v, applied %d", r, f.AppliedIndex())
			}
		})
	}
}

// waitResult waits (bounded) for the error of a WaitApplied call.
func waitResult(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("WaitApplied did not return within 10s")
		return nil
	}
}

func TestWaitApplied(t *testing.T) {
	tests := []struct {
		name    string
		index   uint64
		trigger func(f *FSM, cancel context.CancelFunc)
		want    error
	}{
		{"already applied", 1, func(*FSM, context.CancelFunc) {}, nil},
		{"returns on apply", 3, func(f *FSM, _ context.CancelFunc) {
			f.Apply(2, nil)
			f.Apply(3, EncodeBatch(nil, []Command{put("k", "v")}))
		}, nil},
		{"returns on apply past the index", 3, func(f *FSM, _ context.CancelFunc) { f.Apply(9, nil) }, nil},
		{"returns on restore", 3, func(f *FSM, _ context.CancelFunc) {
			src := newFSM(t, openDB(t), 1)
			src.Apply(5, nil)
			snap, _ := src.Snapshot()
			defer snap.Release()
			var buf bytes.Buffer
			snap.WriteTo(&buf)
			f.Restore(&buf)
		}, nil},
		{"ctx canceled", 3, func(_ *FSM, cancel context.CancelFunc) { cancel() }, context.Canceled},
		{"closed", 3, func(f *FSM, _ context.CancelFunc) { f.Close() }, ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(t, openDB(t), 1)
			f.Apply(1, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- f.WaitApplied(ctx, tt.index) }()
			tt.trigger(f, cancel)
			if err := waitResult(t, done); !errors.Is(err, tt.want) {
				t.Fatalf("WaitApplied = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestWaitAppliedManyWaiters(t *testing.T) {
	f := newFSM(t, openDB(t), 1)
	const n = 200
	done := make(chan error, n)
	for i := range n {
		go func() { done <- f.WaitApplied(context.Background(), uint64(i%20)+1) }()
	}
	for i := uint64(1); i <= 20; i++ {
		f.Apply(i, nil)
	}
	for range n {
		if err := waitResult(t, done); err != nil {
			t.Fatalf("WaitApplied: %v", err)
		}
	}
	// After Close, a reached index still reports success.
	f.Close()
	if err := f.WaitApplied(context.Background(), 20); err != nil {
		t.Fatalf("WaitApplied of an applied index after Close = %v", err)
	}
	if err := f.WaitApplied(context.Background(), 21); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitApplied after Close = %v, want ErrClosed", err)
	}
}

// The dedup records cached in memory must always be the committed ones: a
// Restore replaces them with the snapshot's.
func TestSessionCacheFollowsRestore(t *testing.T) {
	leader := newFSM(t, openDB(t), 1)
	applyOne(t, leader, 1, req(put("k", "a"), 1, 1, 0))
	applyOne(t, leader, 2, req(put("k", "b"), 1, 2, 0))
	applyOne(t, leader, 3, req(put("k", "c"), 1, 3, 2)) // forgets seq 1

	f := newFSM(t, openDB(t), 1)
	applyOne(t, f, 1, req(put("k", "a"), 1, 1, 0)) // caches client 1: {seq 1}
	if err := f.Restore(bytes.NewReader(snapshotBytes(t, leader))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if r := applyOne(t, f, 4, req(put("k", "c"), 1, 3, 2)); !resultsEqual(r, Result{Status: StatusOK, Version: 3}) {
		t.Fatalf("retry of seq 3 after Restore = %+v, want the snapshot's result OK@3", r)
	}
	if r := applyOne(t, f, 5, req(put("k", "a"), 1, 1, 0)); r.Status != StatusStaleRequest {
		t.Fatalf("seq 1 after Restore = %+v, want stale (the snapshot forgot it)", r)
	}
	if v, ver, err := f.Get([]byte("k")); err != nil || string(v) != "c" || ver != 3 {
		t.Fatalf("Get(k) = %q@%d, %v; want c@3", v, ver, err)
	}
}

// The cache is bounded in count and in record size, and a client evicted
// from it still gets its stored results.
func TestSessionCacheBounds(t *testing.T) {
	f := newFSM(t, openDB(t), 1)
	clients := uint64(3 * maxCachedSessions)
	index := uint64(0)
	for c := uint64(1); c <= clients; c++ {
		index++
		applyOne(t, f, index, req(put("k", fmt.Sprint(c)), c, 1, 0))
		if len(f.sessions) > maxCachedSessions {
			t.Fatalf("after %d clients the cache holds %d records, over %d", c, len(f.sessions), maxCachedSessions)
		}
	}
	for c := uint64(1); c <= clients; c++ {
		index++
		if r := applyOne(t, f, index, req(put("k", "again"), c, 1, 0)); !resultsEqual(r, Result{Status: StatusOK, Version: c}) {
			t.Fatalf("retry of client %d = %+v, want its first result OK@%d", c, r, c)
		}
	}

	// A record over maxCachedSessionBytes (a failed CAS keeps the value it
	// saw) is read from Pebble each time rather than held.
	big := strings.Repeat("v", maxCachedSessionBytes+1)
	index++
	applyOne(t, f, index, put("big", big))
	index++
	r := applyOne(t, f, index, req(casValue("big", "other", "x"), 999, 1, 0))
	if r.Status != StatusCompareFailed {
		t.Fatalf("CAS = %+v, want compare failed", r)
	}
	if _, ok := f.sessions[999]; ok {
		t.Fatalf("a %d-byte record was cached; the limit is %d", loadSession(t, f, 999).size, maxCachedSessionBytes)
	}
	index++
	if r2 := applyOne(t, f, index, req(casValue("big", "other", "x"), 999, 1, 0)); !resultsEqual(r2, r) {
		t.Fatalf("retried CAS = %+v, want the stored failure", r2)
	}
}

// ApplyBatch keeps its map of the batch's dedup records for the next batch,
// emptied, instead of making one per batch; one that grew past
// maxReusedSessions is dropped.
func TestApplyBatchReusesItsSessionMap(t *testing.T) {
	f := newFSM(t, openDB(t), 1)
	applyOne(t, f, 1, req(put("a", "1"), 7, 1, 0))
	first := f.used
	if first == nil || len(first) != 0 {
		t.Fatalf("after a batch with a client id the reused map is %v; want an empty map", first)
	}
	applyOne(t, f, 2, req(put("a", "2"), 8, 1, 0))
	if reflect.ValueOf(f.used).Pointer() != reflect.ValueOf(first).Pointer() || len(f.used) != 0 {
		t.Fatalf("the second batch did not reuse the first batch's map, emptied (len %d)", len(f.used))
	}
	// A repeated request id is still answered from its record.
	if r := applyOne(t, f, 3, req(put("a", "3"), 7, 1, 0)); r.Status != StatusOK {
		t.Fatalf("retry of client 7 seq 1: %+v", r)
	}
	if v, _, err := f.Get([]byte("a")); err != nil || string(v) != "2" {
		t.Fatalf("after the retry a = %q, %v; want 2 (the retry applies nothing)", v, err)
	}

	var cmds []Command
	for c := range uint64(maxReusedSessions + 1) {
		cmds = append(cmds, req(put("b", "x"), 100+c, 1, 0))
	}
	f.ApplyBatch([]Entry{entry(4, cmds...)})
	if f.used != nil {
		t.Fatalf("after a batch of %d clients the map (len %d) was kept; want it dropped", len(cmds), len(f.used))
	}
	applyOne(t, f, 5, req(put("c", "1"), 7, 2, 0))
	if f.used == nil {
		t.Fatal("no map kept after a small batch that followed a large one")
	}
}
