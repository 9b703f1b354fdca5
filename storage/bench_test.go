package storage

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"
)

// benchStore opens a store on real disk, as production does.
func benchStore(b *testing.B) *Store {
	b.Helper()
	cfg := DefaultConfig()
	cfg.Dir = b.TempDir()
	return openTest(b, cfg)
}

// BenchmarkStoreLogs measures one synced append of n 128-byte entries from
// one partition (so each op pays a full fsync).
func BenchmarkStoreLogs(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			l := benchStore(b).Log(1)
			batch := entries(1, 1, uint64(n), 128)
			b.SetBytes(int64(n * 128))
			b.ReportAllocs()
			next := uint64(1)
			for b.Loop() {
				for i, e := range batch {
					e.Index = next + uint64(i)
				}
				if err := l.StoreLogs(batch); err != nil {
					b.Fatal(err)
				}
				next += uint64(n)
			}
		})
	}
}

// BenchmarkStoreLogsParallel appends single entries from many partitions at
// once; their syncs share the WAL's group commit.
func BenchmarkStoreLogsParallel(b *testing.B) {
	s := benchStore(b)
	var pids atomic.Uint32
	b.SetBytes(128)
	b.ReportAllocs()
	b.SetParallelism(8) // 8 x GOMAXPROCS partitions
	b.RunParallel(func(pb *testing.PB) {
		pid := pids.Add(1)
		l := s.Log(pid)
		e := entry(pid, 1, 128)
		for pb.Next() {
			if err := l.StoreLog(e); err != nil {
				b.Error(err)
				return
			}
			e.Index++
		}
	})
}

func BenchmarkGetLog(b *testing.B) {
	s := benchStore(b)
	l := s.Log(1)
	const n = 10_000
	for i := uint64(1); i <= n; i += 500 {
		if err := l.StoreLogs(entries(1, i, i+499, 128)); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("memtable", func(b *testing.B) { benchGetLog(b, l, n) })
	if err := s.DB().Flush(); err != nil {
		b.Fatal(err)
	}
	b.Run("sstable", func(b *testing.B) { benchGetLog(b, l, n) })
}

func benchGetLog(b *testing.B, l *LogStore, n uint64) {
	b.ReportAllocs()
	var e raft.Log
	i := uint64(0)
	for b.Loop() {
		if err := l.GetLog(i%n+1, &e); err != nil {
			b.Fatal(err)
		}
		i += 7919 // a prime stride, to hop around
	}
}

func BenchmarkLastIndex(b *testing.B) {
	l := benchStore(b).Log(1)
	if err := l.StoreLogs(entries(1, 1, 100, 128)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.LastIndex(); err != nil {
			b.Fatal(err)
		}
	}
}
