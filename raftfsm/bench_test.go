package raftfsm

import (
	"bytes"
	"fmt"
	"testing"
)

// benchCommands returns n puts of 100-byte values to distinct keys
// starting at key number first; with clients, each carries a request id.
func benchCommands(first, n int, clients bool) []Command {
	value := bytes.Repeat([]byte("v"), 100)
	cmds := make([]Command, n)
	for i := range cmds {
		cmds[i] = Command{Kind: KindPut, Key: fmt.Appendf(nil, "key-%08d", (first+i)%100000), Value: value}
		if clients {
			cmds[i].ClientID = uint64(i%8) + 1
			cmds[i].Seq = uint64(first + i)
			cmds[i].AckBelow = uint64(max(first+i-64, 0))
		}
	}
	return cmds
}

func BenchmarkApplyBatch(b *testing.B) {
	cases := []struct {
		name            string
		entries, perEnt int
		clients         bool
	}{
		{"1put", 1, 1, false},
		{"64entries_x1put", 64, 1, false},
		{"1entry_x64puts", 1, 64, false},
		{"1put_dedup", 1, 1, true},
		{"64entries_x1put_dedup", 64, 1, true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			f := newFSM(b, openDB(b), 1)
			// Pre-encode a rotation of batches so the loop measures apply
			// only. With request ids, seqs must keep growing (a repeated seq
			// is a retry and applies nothing), so the rotation is re-encoded,
			// off the clock, each time it wraps.
			const rotation = 64
			batches := make([][]Entry, rotation)
			seq := 0
			encode := func() {
				for r := range batches {
					batches[r] = batches[r][:0]
					for range c.entries {
						batches[r] = append(batches[r], Entry{Data: EncodeBatch(nil, benchCommands(seq, c.perEnt, c.clients))})
						seq += c.perEnt
					}
				}
			}
			encode()
			var index uint64
			b.ReportAllocs()
			b.SetBytes(int64(c.entries * c.perEnt * 100))
			i := 0
			for b.Loop() {
				if i > 0 && i%rotation == 0 && c.clients {
					b.StopTimer()
					encode()
					b.StartTimer()
				}
				entries := batches[i%rotation]
				for j := range entries {
					index++
					entries[j].Index = index
				}
				f.ApplyBatch(entries)
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*c.entries*c.perEnt), "ns/put")
		})
	}
}

func BenchmarkEncodeBatch(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cmds := benchCommands(0, n, true)
			buf := EncodeBatch(nil, cmds)
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				buf = EncodeBatch(buf[:0], cmds)
			}
		})
	}
}

func BenchmarkDecodeBatch(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			data := EncodeBatch(nil, benchCommands(0, n, true))
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := DecodeBatch(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
