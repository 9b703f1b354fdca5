package storage

import (
	"bytes"
	"errors"
	"io"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
	"pgregory.net/rapid"
)

// model is one partition's expected state: raft's own in-memory store,
// plus whether any stable key was set (for Partitions).
type model struct {
	mem    *raft.InmemStore
	stable bool
}

// Adjacent ids and the extremes, so that a prefix bug leaks between them.
var propPIDs = []uint32{0, 1, 2, math.MaxUint32}

var (
	stableKeys = []string{"LastVoteCand", "a", "b"}
	uintKeys   = []string{"CurrentTerm", "LastVoteTerm", "x"} // disjoint: InmemStore keeps separate maps
)

func genLog(index uint64) *rapid.Generator[*raft.Log] {
	return rapid.Custom(func(t *rapid.T) *raft.Log {
		l := &raft.Log{
			Index: index,
			Term:  rapid.Uint64Range(1, 1<<40).Draw(t, "term"),
			Type:  raft.LogType(rapid.IntRange(0, 5).Draw(t, "type")),
			Data:  rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "data"),
		}
		if rapid.Bool().Draw(t, "hasExt") {
			l.Extensions = rapid.SliceOfN(rapid.Byte(), 1, 8).Draw(t, "ext")
		}
		if rapid.Bool().Draw(t, "hasTime") {
			l.AppendedAt = time.Unix(rapid.Int64Range(-1<<40, 1<<40).Draw(t, "sec"),
				rapid.Int64Range(0, 999_999_999).Draw(t, "nsec"))
		}
		return l
	})
}

// TestLogStoreMatchesInmemStore runs random sequences of raft's operations
// on several partitions of one Store and on one raft.InmemStore per
// partition, and requires the same answers.
func TestLogStoreMatchesInmemStore(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := TestConfig()
		s, err := Open(cfg)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer func() { _ = s.Close() }()
		models := make(map[uint32]*model)
		for _, pid := range propPIDs {
			models[pid] = &model{mem: raft.NewInmemStore()}
		}
		pick := func(t *rapid.T) (uint32, *LogStore, *model) {
			pid := rapid.SampledFrom(propPIDs).Draw(t, "pid")
			return pid, s.Log(pid), models[pid]
		}
		bounds := func(m *model) (uint64, uint64) {
			f, _ := m.mem.FirstIndex()
			l, _ := m.mem.LastIndex()
			return f, l
		}
		t.Repeat(map[string]func(*rapid.T){
			"append": func(t *rapid.T) {
				_, l, m := pick(t)
				_, last := bounds(m)
				next := last + 1
				if last == 0 {
					next = rapid.Uint64Range(1, 1000).Draw(t, "start")
				}
				n := rapid.IntRange(1, 8).Draw(t, "n")
				logs := make([]*raft.Log, n)
				for i := range logs {
					logs[i] = genLog(next+uint64(i)).Draw(t, "log")
				}
				if err := l.StoreLogs(logs); err != nil {
					t.Fatalf("StoreLogs: %v", err)
				}
				_ = m.mem.StoreLogs(logs)
			},
			"overwrite": func(t *rapid.T) {
				_, l, m := pick(t)
				first, last := bounds(m)
				if first == 0 {
					t.Skip("empty log")
				}
				from := rapid.Uint64Range(first, last).Draw(t, "from")
				e := genLog(from).Draw(t, "log")
				if err := l.StoreLog(e); err != nil {
					t.Fatalf("StoreLog: %v", err)
				}
				_ = m.mem.StoreLog(e)
			},
			"truncateFront": func(t *rapid.T) {
				_, l, m := pick(t)
				first, last := bounds(m)
				if first == 0 {
					t.Skip("empty log")
				}
				upTo := rapid.Uint64Range(first, last).Draw(t, "upTo")
				if err := l.DeleteRange(first, upTo); err != nil {
					t.Fatalf("DeleteRange: %v", err)
				}
				_ = m.mem.DeleteRange(first, upTo)
			},
			"truncateBack": func(t *rapid.T) {
				_, l, m := pick(t)
				first, last := bounds(m)
				if first == 0 {
					t.Skip("empty log")
				}
				from := rapid.Uint64Range(first, last).Draw(t, "from")
				if err := l.DeleteRange(from, last); err != nil {
					t.Fatalf("DeleteRange: %v", err)
				}
				_ = m.mem.DeleteRange(from, last)
			},
			"getLog": func(t *rapid.T) {
				_, l, m := pick(t)
				first, last := bounds(m)
				idx := rapid.Uint64Range(max(first, 2)-2, last+2).Draw(t, "index")
				var got, want raft.Log
				gerr := l.GetLog(idx, &got)
				werr := m.mem.GetLog(idx, &want)
				if werr != nil {
					if !errors.Is(gerr, raft.ErrLogNotFound) {
						t.Fatalf("GetLog(%d) = %v, want ErrLogNotFound", idx, gerr)
					}
					return
				}
				if gerr != nil || !sameLog(&got, &want) {
					t.Fatalf("GetLog(%d) = %+v, %v; want %+v", idx, got, gerr, want)
				}
			},
			"set": func(t *rapid.T) {
				_, l, m := pick(t)
				k := []byte(rapid.SampledFrom(stableKeys).Draw(t, "key"))
				v := rapid.SliceOfN(rapid.Byte(), 1, 16).Draw(t, "val")
				if err := l.Set(k, v); err != nil {
					t.Fatalf("Set: %v", err)
				}
				_ = m.mem.Set(k, v)
				m.stable = true
			},
			"get": func(t *rapid.T) {
				_, l, m := pick(t)
				k := []byte(rapid.SampledFrom(stableKeys).Draw(t, "key"))
				got, gerr := l.Get(k)
				want, werr := m.mem.Get(k)
				if werr != nil {
					if gerr == nil || !errors.Is(gerr, ErrKeyNotFound) || gerr.Error() != werr.Error() {
						t.Fatalf("Get(%q) = %q, %v; want error %q", k, got, gerr, werr)
					}
					return
				}
				if gerr != nil || !bytes.Equal(got, want) {
					t.Fatalf("Get(%q) = %q, %v; want %q", k, got, gerr, want)
				}
			},
			"setUint64": func(t *rapid.T) {
				_, l, m := pick(t)
				k := []byte(rapid.SampledFrom(uintKeys).Draw(t, "key"))
				v := rapid.Uint64().Draw(t, "val")
				if err := l.SetUint64(k, v); err != nil {
					t.Fatalf("SetUint64: %v", err)
				}
				_ = m.mem.SetUint64(k, v)
				m.stable = true
			},
			"getUint64": func(t *rapid.T) {
				_, l, m := pick(t)
				k := []byte(rapid.SampledFrom(uintKeys).Draw(t, "key"))
				got, gerr := l.GetUint64(k)
				want, _ := m.mem.GetUint64(k)
				// InmemStore answers 0, nil for a missing key; raft accepts
				// that or an error reading exactly "not found".
				if gerr != nil && (!errors.Is(gerr, ErrKeyNotFound) || gerr.Error() != "not found" || want != 0) {
					t.Fatalf("GetUint64(%q) = %d, %v; want %d", k, got, gerr, want)
				}
				if got != want {
					t.Fatalf("GetUint64(%q) = %d, want %d", k, got, want)
				}
			},
			"deletePartition": func(t *rapid.T) {
				pid, _, _ := pick(t)
				if err := s.DeletePartition(pid); err != nil {
					t.Fatalf("DeletePartition: %v", err)
				}
				models[pid] = &model{mem: raft.NewInmemStore()}
			},
			"reopen": func(t *rapid.T) {
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				if s, err = Open(cfg); err != nil {
					t.Fatalf("reopen: %v", err)
				}
			},
			"": func(t *rapid.T) {
				var nonEmpty []uint32
				for _, pid := range propPIDs {
					m := models[pid]
					first, last := bounds(m)
					checkBounds(t, s.Log(pid), first, last)
					if first != 0 || m.stable {
						nonEmpty = append(nonEmpty, pid)
					}
				}
				got, err := s.Partitions()
				if err != nil || !slices.Equal(got, nonEmpty) {
					t.Fatalf("Partitions() = %v, %v; want %v", got, err, nonEmpty)
				}
			},
		})
	})
}

// TestDeleteRangeEnds covers what the model cannot: ranges reaching
// math.MaxUint64, empty ranges, middle holes and seeks over gaps.
func TestDeleteRangeEnds(t *testing.T) {
	tests := []struct {
		name               string
		min, max           uint64
		wantFirst, wantEnd uint64
	}{
		{"to MaxUint64", 15, math.MaxUint64, 10, 14},
		{"everything", 0, math.MaxUint64, 0, 0},
		{"min above max is a no-op", 12, 11, 10, 20},
		{"middle hole keeps bounds", 12, 18, 10, 20},
		{"outside the log", 30, 40, 10, 20},
		{"front", 0, 12, 13, 20},
		{"back", 17, 25, 10, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, TestConfig())
			l := s.Log(5)
			if err := l.StoreLogs(entries(5, 10, 20, 8)); err != nil {
				t.Fatal(err)
			}
			checkBounds(t, l, 10, 20) // loads the cached bounds before the deletion
			if err := l.DeleteRange(tt.min, tt.max); err != nil {
				t.Fatal(err)
			}
			checkBounds(t, l, tt.wantFirst, tt.wantEnd)
		})
	}

	t.Run("gap after snapshot restore", func(t *testing.T) {
		// raft may leave a gap (old entries, then entries after a restored
		// snapshot); a front truncation must find the true first index.
		s := openTest(t, TestConfig())
		l := s.Log(5)
		if err := l.StoreLogs(entries(5, 1, 10, 8)); err != nil {
			t.Fatal(err)
		}
		if err := l.StoreLogs(entries(5, 101, 110, 8)); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, l, 1, 110)
		if err := l.DeleteRange(1, 50); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, l, 101, 110)
		if err := l.DeleteRange(105, 200); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, l, 101, 104)
	})
}

func TestBoundsLoadLazilyAfterReopen(t *testing.T) {
	cfg := TestConfig()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Write without ever reading the bounds, so the cache stays unloaded.
	if err := s.Log(3).StoreLogs(entries(3, 40, 49, 16)); err != nil {
		t.Fatal(err)
	}
	if err := s.Log(3).DeleteRange(40, 44); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, cfg)
	checkBounds(t, s.Log(3), 45, 49)
	checkBounds(t, s.Log(4), 0, 0)
}

func TestStableNotFoundMatchesRaft(t *testing.T) {
	s := openTest(t, TestConfig())
	l := s.Log(1)
	if _, err := l.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" || !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("Get missing = %v, want exactly %q", err, "not found")
	}
	if v, err := l.GetUint64([]byte("CurrentTerm")); v != 0 || err == nil || err.Error() != "not found" {
		t.Fatalf("GetUint64 missing = %d, %v; want 0, %q", v, err, "not found")
	}
	// raft's own check that a fresh store has no state must succeed.
	has, err := raft.HasExistingState(l, l, raft.NewInmemSnapshotStore())
	if err != nil || has {
		t.Fatalf("HasExistingState = %v, %v; want false, nil", has, err)
	}
	if err := l.Set([]byte("CurrentTerm"), []byte("short")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.GetUint64([]byte("CurrentTerm")); !errors.Is(err, ErrCorruptValue) {
		t.Fatalf("GetUint64 of a 5-byte value = %v, want ErrCorruptValue", err)
	}
}

// TestRaftOnLogStore runs a real single-node raft group on a LogStore, the
// way replica uses it, across a restart.
func TestRaftOnLogStore(t *testing.T) {
	cfg := TestConfig()
	cfg.FS = vfs.NewMem()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	apply := func(s *Store) (*raft.Raft, *countFSM) {
		t.Helper()
		rc := raft.DefaultConfig()
		rc.LocalID = "n1"
		rc.HeartbeatTimeout = 50 * time.Millisecond
		rc.ElectionTimeout = 50 * time.Millisecond
		rc.LeaderLeaseTimeout = 50 * time.Millisecond
		rc.LogOutput = io.Discard
		_, trans := raft.NewInmemTransport("n1")
		fsm := &countFSM{}
		l := s.Log(9)
		has, err := raft.HasExistingState(l, l, raft.NewDiscardSnapshotStore())
		if err != nil {
			t.Fatal(err)
		}
		if !has {
			if err := raft.BootstrapCluster(rc, l, l, raft.NewDiscardSnapshotStore(), trans,
				raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: trans.LocalAddr()}}}); err != nil {
				t.Fatal(err)
			}
		}
		r, err := raft.NewRaft(rc, fsm, l, l, raft.NewDiscardSnapshotStore(), trans)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for r.State() != raft.Leader {
			if time.Now().After(deadline) {
				t.Fatal("no leader within 10s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		return r, fsm
	}

	r, _ := apply(s)
	for i := range 20 {
		if err := r.Apply([]byte{byte(i)}, 5*time.Second).Error(); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	last := r.LastIndex()
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, cfg)
	r, fsm := apply(s)
	defer r.Shutdown()
	if err := r.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if got := fsm.count(); got < 20 {
		t.Fatalf("after restart the FSM replayed %d commands, want at least 20", got)
	}
	if r.LastIndex() <= last {
		t.Fatalf("LastIndex after restart = %d, want above %d", r.LastIndex(), last)
	}
	term, err := s.Log(9).GetUint64([]byte("CurrentTerm"))
	if err != nil || term < 2 {
		t.Fatalf("CurrentTerm = %d, %v; want >= 2 after a second election", term, err)
	}
}

// countFSM counts applied commands.
type countFSM struct {
	mu sync.Mutex
	n  int
}

func (f *countFSM) Apply(*raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return nil
}

func (f *countFSM) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	return nil, errors.New("no snapshots in this test")
}
func (f *countFSM) Restore(io.ReadCloser) error { return errors.New("no snapshots in this test") }

// TestAppendWhileCompacting mirrors hashicorp/raft's concurrency on one
// partition: the main loop appends, the snapshot goroutine truncates the
// front, replication goroutines read. Readers must only ever see sane
// bounds, and every index inside them must be readable or just truncated.
func TestAppendWhileCompacting(t *testing.T) {
	s := openTest(t, TestConfig())
	l := s.Log(2)
	const total, keep = 3000, 50
	var appended sync.WaitGroup
	appended.Go(func() {
		for i := uint64(1); i <= total; i += 10 {
			if err := l.StoreLogs(entries(2, i, i+9, 32)); err != nil {
				t.Errorf("StoreLogs: %v", err)
				return
			}
		}
	})
	done := make(chan struct{})
	var others sync.WaitGroup
	others.Go(func() { // compactor
		for {
			select {
			case <-done:
				return
			default:
			}
			first, _ := l.FirstIndex()
			last, _ := l.LastIndex()
			if first != 0 && last > first+keep {
				if err := l.DeleteRange(first, last-keep); err != nil {
					t.Errorf("DeleteRange: %v", err)
					return
				}
			}
		}
	})
	for range 2 {
		others.Go(func() { // readers
			for {
				select {
				case <-done:
					return
				default:
				}
				first, _ := l.FirstIndex()
				last, _ := l.LastIndex()
				if first == 0 {
					continue
				}
				// Both only grow here, and each read is consistent.
				if first > last {
					t.Errorf("FirstIndex %d above later LastIndex %d", first, last)
					return
				}
				var e raft.Log
				err := l.GetLog(last, &e)
				if errors.Is(err, raft.ErrLogNotFound) {
					if now, _ := l.FirstIndex(); now > last {
						continue // compacted away meanwhile
					}
				}
				if err != nil || !sameLog(&e, entry(2, last, 32)) {
					t.Errorf("GetLog(last=%d) = %+v, %v", last, e, err)
					return
				}
			}
		})
	}
	appended.Wait()
	waitFor(t, func() bool { f, _ := l.FirstIndex(); return f >= total-keep-10 }) // the compactor catches up
	close(done)
	others.Wait()
	first, _ := l.FirstIndex()
	checkBounds(t, l, first, total)
	if first < total-keep-10 || first > total-keep+1 {
		t.Fatalf("FirstIndex after compaction = %d, want about %d", first, total-keep)
	}
	var e raft.Log
	if err := l.GetLog(first-1, &e); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(first-1) = %v, want ErrLogNotFound", err)
	}
}
