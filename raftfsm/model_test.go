package raftfsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"pgregory.net/rapid"
)

// model is the obvious implementation of the FSM's semantics: maps. It
// ignores the dedup caps, which the generated histories never reach (a
// test below exercises the caps directly).
type model struct {
	data     map[string]modelValue
	sessions map[uint64]*modelSession
}

type modelValue struct {
	value   []byte
	version uint64
}

type modelSession struct {
	low     uint64
	results map[uint64]Result // the FSM's first result for each seq
}

func newModel() *model {
	return &model{data: map[string]modelValue{}, sessions: map[uint64]*modelSession{}}
}

// check compares got, the FSM's result for c at index, with the model's,
// and advances the model.
func (m *model) check(t *rapid.T, index uint64, c Command, got Result) {
	t.Helper()
	if c.ClientID == 0 {
		m.checkExec(t, index, c, got)
		return
	}
	s := m.sessions[c.ClientID]
	if s == nil {
		s = &modelSession{results: map[uint64]Result{}}
		m.sessions[c.ClientID] = s
	}
	if c.AckBelow > s.low {
		for seq := range s.results {
			if seq < c.AckBelow {
				delete(s.results, seq)
			}
		}
		s.low = c.AckBelow
	}
	if c.Seq < s.low {
		if got.Status != StatusStaleRequest {
			t.Fatalf("index %d %+v: got %+v, want stale (low %d)", index, c, got, s.low)
		}
		return
	}
	if first, ok := s.results[c.Seq]; ok {
		if !resultsEqual(got, first) {
			t.Fatalf("index %d retry of client %d seq %d: got %+v, want first result %+v", index, c.ClientID, c.Seq, got, first)
		}
		return
	}
	m.checkExec(t, index, c, got)
	s.results[c.Seq] = got
}

func (m *model) checkExec(t *rapid.T, index uint64, c Command, got Result) {
	t.Helper()
	want := m.exec(index, c)
	if want.Status == StatusInvalid {
		if got.Status != StatusInvalid || got.Err == "" {
			t.Fatalf("index %d %+v: got %+v, want invalid with a reason", index, c, got)
		}
		return
	}
	if !resultsEqual(got, want) {
		t.Fatalf("index %d %+v: got %+v, want %+v", index, c, got, want)
	}
}

func (m *model) exec(index uint64, c Command) Result {
	validCAS := c.Expect == ExpectValue || c.Expect == ExpectVersion || c.Expect == ExpectAbsent
	if len(c.Key) == 0 || (c.Kind != KindPut && c.Kind != KindDelete && c.Kind != KindCAS) || (c.Kind == KindCAS && !validCAS) {
		return Result{Status: StatusInvalid}
	}
	cur, found := m.data[string(c.Key)]
	switch c.Kind {
	case KindDelete:
		if !found {
			return Result{Status: StatusNotFound}
		}
		delete(m.data, string(c.Key))
		return Result{Status: StatusOK, Version: index}
	case KindCAS:
		ok := (c.Expect == ExpectValue && found && bytes.Equal(cur.value, c.ExpectedValue)) ||
			(c.Expect == ExpectVersion && found && cur.version == c.ExpectedVersion) ||
			(c.Expect == ExpectAbsent && !found)
		if !ok {
			return Result{Status: StatusCompareFailed, Version: cur.version, Exists: found, Value: cur.value}
		}
	}
	m.data[string(c.Key)] = modelValue{value: bytes.Clone(c.Value), version: index}
	return Result{Status: StatusOK, Version: index}
}

// history generates plausible command streams: few keys and values so CAS
// conditions often hold, and per-client seqs that are new, retried or old.
type history struct {
	index   uint64
	nextSeq map[uint64]uint64
	version func(key string) uint64 // current version, if known
}

var (
	modelKeys   = []string{"a", "b", "c"}
	modelValues = []string{"", "x", "y", "zz"}
)

func (h *history) command(t *rapid.T) Command {
	var c Command
	switch k := rapid.IntRange(0, 19).Draw(t, "kind"); {
	case k < 7:
		c.Kind = KindPut
	case k < 11:
		c.Kind = KindDelete
	case k < 19:
		c.Kind = KindCAS
	default:
		c.Kind = Kind(rapid.SampledFrom([]uint8{0, 4, 255}).Draw(t, "badKind"))
	}
	key := rapid.SampledFrom(modelKeys).Draw(t, "key")
	if rapid.IntRange(0, 29).Draw(t, "emptyKey") == 0 {
		key = "" // invalid
	}
	c.Key = []byte(key)
	c.Value = []byte(rapid.SampledFrom(modelValues).Draw(t, "value"))
	if c.Kind == KindCAS {
		c.Expect = Expect(rapid.SampledFrom([]uint8{1, 1, 2, 2, 3, 3, 0}).Draw(t, "expect"))
		c.ExpectedValue = []byte(rapid.SampledFrom(modelValues).Draw(t, "expectedValue"))
		if h.version != nil && rapid.Bool().Draw(t, "currentVersion") {
			c.ExpectedVersion = h.version(key)
		} else {
			c.ExpectedVersion = rapid.Uint64Range(0, h.index+1).Draw(t, "expectedVersion")
		}
	}
	c.ClientID = rapid.Uint64Range(0, 3).Draw(t, "client")
	if c.ClientID != 0 {
		next := h.nextSeq[c.ClientID]
		switch mode := rapid.IntRange(0, 9).Draw(t, "seqMode"); {
		case mode < 6 || next == 0:
			c.Seq = next
			h.nextSeq[c.ClientID] = next + 1
		case mode < 9:
			c.Seq = rapid.Uint64Range(next-min(next, 4), next-1).Draw(t, "retrySeq")
		default:
			c.Seq = rapid.Uint64Range(0, next-1).Draw(t, "oldSeq")
		}
		if rapid.IntRange(0, 4).Draw(t, "ack") == 0 {
			c.AckBelow = rapid.Uint64Range(0, next).Draw(t, "ackBelow")
		}
	}
	return c
}

// entry draws the next entry: usually commands, sometimes none or garbage.
func (h *history) entry(t *rapid.T) (Entry, []Command) {
	h.index += rapid.Uint64Range(1, 3).Draw(t, "gap")
	switch rapid.IntRange(0, 9).Draw(t, "entryKind") {
	case 0:
		return Entry{Index: h.index}, nil
	case 1:
		garbage := append([]byte{0xee}, genBytes(10).Draw(t, "garbage")...)
		return Entry{Index: h.index, Data: garbage}, nil
	}
	cmds := make([]Command, rapid.IntRange(1, 4).Draw(t, "n"))
	for i := range cmds {
		cmds[i] = h.command(t)
	}
	return Entry{Index: h.index, Data: EncodeBatch(nil, cmds)}, cmds
}

// TestFSMMatchesModel runs random histories against the model, with every
// batch written through and with writes waiting in memory (Config.WriteBack)
// for a few commands or for the whole history, through flushes, replays,
// restarts, crashes that lose what waited, and snapshot transfers.
func TestFSMMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		writeBack := rapid.SampledFrom([]int{0, 300, 1 << 20}).Draw(t, "writeBack")
		db := openDB(t)
		f := newFSMWriteBack(t, db, 3, writeBack)
		m := newModel()
		h := &history{nextSeq: map[uint64]uint64{}, version: func(k string) uint64 { return m.data[k].version }}
		var applied []Entry
		var appliedResults [][]Result
		t.Repeat(map[string]func(*rapid.T){
			"apply": func(t *rapid.T) {
				n := rapid.IntRange(1, 4).Draw(t, "entries")
				entries := make([]Entry, n)
				cmds := make([][]Command, n)
				for i := range entries {
					entries[i], cmds[i] = h.entry(t)
				}
				results := f.ApplyBatch(entries)
				for i, e := range entries {
					m.checkEntry(t, e, cmds[i], results[i])
				}
				applied = append(applied, entries...)
				appliedResults = append(appliedResults, results...)
			},
			"flush": func(t *rapid.T) {
				if err := f.Flush(); err != nil {
					t.Fatalf("Flush: %v", err)
				}
				m.checkStored(t, db, f.prefix, h.index)
			},
			"crash and replay": func(t *rapid.T) {
				f.crash()
				f = newFSMWriteBack(t, db, 3, writeBack)
				from := f.AppliedIndex()
				if from > h.index {
					t.Fatalf("after a crash AppliedIndex = %d, above the %d applied", from, h.index)
				}
				// Raft replays every entry after the stored applied index,
				// in batches of its choosing; the results must be the first
				// ones, since a client may be waiting for them.
				i, _ := slices.BinarySearchFunc(applied, from+1, func(e Entry, idx uint64) int { return int(e.Index) - int(idx) })
				for rest := i; rest < len(applied); {
					n := rapid.IntRange(1, len(applied)-rest).Draw(t, "replay batch")
					for j, rs := range f.ApplyBatch(applied[rest : rest+n]) {
						want := appliedResults[rest+j]
						if len(rs) != len(want) {
							t.Fatalf("replayed entry %d: %d results, first run %d", applied[rest+j].Index, len(rs), len(want))
						}
						for k := range rs {
							if !resultsEqual(rs[k], want[k]) {
								t.Fatalf("replayed entry %d command %d: %+v, first run %+v", applied[rest+j].Index, k, rs[k], want[k])
							}
						}
					}
					rest += n
				}
			},
			"replay": func(t *rapid.T) {
				if len(applied) == 0 {
					t.Skip("nothing applied yet")
				}
				before := dump(t, db)
				old := rapid.SliceOfN(rapid.SampledFrom(applied), 1, 5).Draw(t, "old")
				slices.SortFunc(old, func(a, b Entry) int { return int(a.Index) - int(b.Index) })
				for i, rs := range f.ApplyBatch(old) {
					if rs != nil {
						t.Fatalf("replayed entry %d: results %+v", old[i].Index, rs)
					}
				}
				if d := diffKeyspaces(before, dump(t, db)); d != "" {
					t.Fatalf("replay changed the keyspace: %s", d)
				}
			},
			"reopen": func(t *rapid.T) {
				f.Close()
				f = newFSMWriteBack(t, db, 3, writeBack)
			},
			"snapshot and restore elsewhere": func(t *rapid.T) {
				fresh := openDB(t)
				f, db = transfer(t, f, fresh, 3), fresh
			},
			"": func(t *rapid.T) {
				if f.AppliedIndex() != h.index {
					t.Fatalf("AppliedIndex = %d, want %d", f.AppliedIndex(), h.index)
				}
				for _, k := range modelKeys {
					v, ver, err := f.Get([]byte(k))
					want, found := m.data[k]
					if found != (err == nil) || (found && (!bytes.Equal(v, want.value) || ver != want.version)) {
						t.Fatalf("Get(%q) = %q@%d, %v; model %q@%d found=%v", k, v, ver, err, want.value, want.version, found)
					}
					if err != nil && !errors.Is(err, ErrNotFound) {
						t.Fatalf("Get(%q): %v", k, err)
					}
				}
			},
		})
	})
}

func (m *model) checkEntry(t *rapid.T, e Entry, cmds []Command, got []Result) {
	t.Helper()
	switch {
	case e.Data == nil:
		if got != nil {
			t.Fatalf("entry %d without data: results %+v", e.Index, got)
		}
	case cmds == nil:
		if len(got) != 1 || got[0].Status != StatusInvalid {
			t.Fatalf("garbage entry %d: results %+v", e.Index, got)
		}
	default:
		if len(got) != len(cmds) {
			t.Fatalf("entry %d: %d results for %d commands", e.Index, len(got), len(cmds))
		}
		for i, c := range cmds {
			m.check(t, e.Index, c, got[i])
		}
	}
}

// transfer snapshots src, restores it into a new FSM of partition pid on
// dst, checks both keyspaces match, and returns the new FSM.
func transfer(t testingT, src *FSM, dst *pebble.DB, pid uint32) *FSM {
	t.Helper()
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	f := newFSMWriteBack(t, dst, pid, src.writeBack)
	if err := f.Restore(&buf); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if f.AppliedIndex() != snap.Index() {
		t.Fatalf("restored AppliedIndex = %d, want %d", f.AppliedIndex(), snap.Index())
	}
	if d := diffKeyspaces(dump(t, src.db), dump(t, dst)); d != "" {
		t.Fatalf("restored keyspace differs: %s", d)
	}
	return f
}

// TestDeterminism feeds the same entries to two FSMs, grouped differently
// into ApplyBatch calls, and requires byte-identical keyspaces and results.
func TestDeterminism(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h := &history{nextSeq: map[uint64]uint64{}}
		entries := make([]Entry, rapid.IntRange(1, 60).Draw(t, "n"))
		for i := range entries {
			entries[i], _ = h.entry(t)
		}
		dbA, dbB := openDB(t), openDB(t)
		a := newFSM(t, dbA, 9)
		b := newFSMWriteBack(t, dbB, 9, rapid.SampledFrom([]int{0, 300, 1 << 20}).Draw(t, "writeBack"))
		var resA, resB [][]Result
		for _, e := range entries {
			resA = append(resA, a.ApplyBatch([]Entry{e})...)
		}
		for rest := entries; len(rest) > 0; {
			n := rapid.IntRange(1, len(rest)).Draw(t, "group")
			resB = append(resB, b.ApplyBatch(rest[:n])...)
			rest = rest[n:]
		}
		for i := range resA {
			if len(resA[i]) != len(resB[i]) {
				t.Fatalf("entry %d: %d vs %d results", entries[i].Index, len(resA[i]), len(resB[i]))
			}
			for j := range resA[i] {
				if !resultsEqual(resA[i][j], resB[i][j]) {
					t.Fatalf("entry %d command %d: %+v vs %+v", entries[i].Index, j, resA[i][j], resB[i][j])
				}
			}
		}
		if err := b.Flush(); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		if d := diffKeyspaces(dump(t, dbA), dump(t, dbB)); d != "" {
			t.Fatalf("keyspaces differ: %s", d)
		}
	})
}

// checkStored checks that Pebble itself, read around the FSM, holds the
// model's data and the applied index.
func (m *model) checkStored(t *rapid.T, db *pebble.DB, prefix []byte, applied uint64) {
	t.Helper()
	if got, err := readApplied(db, appliedKey(prefix)); err != nil || got != applied {
		t.Fatalf("stored applied index = %d, %v; want %d", got, err, applied)
	}
	for _, k := range modelKeys {
		want, found := m.data[k]
		v, closer, err := db.Get(appendDataKey(nil, prefix, []byte(k)))
		if !found {
			if !errors.Is(err, pebble.ErrNotFound) {
				t.Fatalf("stored %q: %v, want not found", k, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("stored %q: %v, want %q@%d", k, err, want.value, want.version)
		}
		ok := len(v) >= versionLen && binary.BigEndian.Uint64(v) == want.version && bytes.Equal(v[versionLen:], want.value)
		closer.Close()
		if !ok {
			t.Fatalf("stored %q = %x, want %q@%d", k, v, want.value, want.version)
		}
	}
}
