package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/ringkv/ringkv/raftfsm"
)

// Both engines replicate every put to all three nodes, with the leaders
// where newX put them.
func TestEnginesReplicatePuts(t *testing.T) {
	engines := map[string]func(clusterConfig) (cluster, error){
		"multiraft": newMultiraft,
		"hashicorp": newHashicorp,
	}
	for name, open := range engines {
		t.Run(name, func(t *testing.T) {
			const parts = 4
			c, err := open(clusterConfig{Dir: t.TempDir(), Partitions: parts})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			if got, want := c.Leaders(), [3]int{2, 1, 1}; got != want {
				t.Fatalf("leaders %v, want %v (partition pid led by node pid%%3)", got, want)
			}
			ring, err := ringOf(parts)
			if err != nil {
				t.Fatal(err)
			}
			before := c.Applied()
			s := newSession()
			const puts = 40
			for i := range puts {
				key := fmt.Appendf(nil, "k%02d", i)
				seq, ack := s.Begin()
				cmd := raftfsm.Command{Kind: raftfsm.KindPut, Key: key, Value: []byte("v" + string(key)), ClientID: s.id, Seq: seq, AckBelow: ack}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := c.Put(ctx, uint32(ring.Of(key)), cmd)
				cancel()
				s.Finish(seq)
				if err != nil {
					t.Fatalf("put %s: %v", key, err)
				}
			}
			// Node 1 applies what it follows once it hears the commit.
			if err := waitFor(10*time.Second, "every put applied on node 1", func() bool { return c.Applied()-before >= puts }); err != nil {
				t.Fatal(err)
			}
			for i := range puts {
				key := fmt.Appendf(nil, "k%02d", i)
				want := []byte("v" + string(key))
				for n := range 3 {
					var got []byte
					var found bool
					var getErr error
					err := waitFor(10*time.Second, fmt.Sprintf("%s on node %d", key, n+1), func() bool {
						got, found, getErr = c.Get(n, uint32(ring.Of(key)), key)
						return getErr != nil || (found && bytes.Equal(got, want))
					})
					if err != nil || getErr != nil {
						t.Fatalf("%v (last read %q, found %v, error %v)", err, got, found, getErr)
					}
				}
			}
		})
	}
}

// measure reports plausible numbers for a short run: puts, no errors,
// ordered percentiles, CPU, about one put per entry, puts per synced batch.
func TestMeasure(t *testing.T) {
	c, err := newMultiraft(clusterConfig{Dir: t.TempDir(), Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := options{engines: []string{"multiraft"}, rounds: 1, partitions: 2, clients: 4, duration: 500 * time.Millisecond, keys: 100, valueSize: 10}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	r, err := measure(c, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Puts == 0 || r.Errors != 0 || r.PutsPerSec <= 0 || r.P99ms < r.P50ms || r.CPUPerPutUS <= 0 {
		t.Fatalf("implausible result %+v", r)
	}
	if r.PutsPerEntry < 0.5 || r.PutsPerEntry > 1.5 {
		t.Errorf("%.2f puts per entry, want about 1 (one put per entry)", r.PutsPerEntry)
	}
	if r.PutsPerSync <= 0 {
		t.Errorf("puts per synced log batch not reported: %+v", r)
	}
}

// A frame queued on a peer arrives whole, in order, every message with its
// partition.
func TestLinksCarryMessages(t *testing.T) {
	got := make(chan []inbound, 4)
	l, err := listenLinks(func(in []inbound) { got <- append([]inbound(nil), in...) })
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	stop := make(chan struct{})
	p := newPeer(l.addr(), stop)
	defer func() { close(stop); p.close() }()
	sent := []inbound{
		{7, raftpb.Message{Type: raftpb.MsgApp, To: 2, From: 1, Term: 3, Index: 10, Entries: []raftpb.Entry{{Term: 3, Index: 11, Data: []byte("x")}}}},
		{0, raftpb.Message{Type: raftpb.MsgHeartbeat, To: 2, From: 1, Term: 3, Commit: 9}},
		{1 << 20, raftpb.Message{Type: raftpb.MsgAppResp, To: 2, From: 1, Term: 3, Index: 11}},
	}
	for i := range sent {
		p.queue(sent[i].pid, &sent[i].m)
	}
	p.flush()
	var recv []inbound
	for len(recv) < len(sent) {
		select {
		case in := <-got:
			recv = append(recv, in...)
		case <-time.After(10 * time.Second):
			t.Fatalf("received %d of %d messages", len(recv), len(sent))
		}
	}
	for i := range sent {
		if recv[i].pid != sent[i].pid || recv[i].m.String() != sent[i].m.String() {
			t.Errorf("message %d: got partition %d %v, want partition %d %v", i, recv[i].pid, recv[i].m.String(), sent[i].pid, sent[i].m.String())
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	good := options{engines: []string{"multiraft", "hashicorp"}, rounds: 2, partitions: 64, clients: 64, duration: time.Second, keys: 10, valueSize: 100}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		change func(*options)
		want   string
	}{
		{func(o *options) { o.engines = []string{"etcd"} }, `--engine "etcd"`},
		{func(o *options) { o.rounds = 0 }, "--rounds 0"},
		{func(o *options) { o.partitions = 0 }, "--partitions 0"},
		{func(o *options) { o.clients = 0 }, "--clients 0"},
		{func(o *options) { o.duration = 0 }, "--duration 0s"},
		{func(o *options) { o.keys = 0 }, "--keys 0"},
		{func(o *options) { o.valueSize = -1 }, "--value-size -1"},
		{func(o *options) { o.json = true }, "apply to a single run"},
	} {
		o := good
		tc.change(&o)
		err := o.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("validate: %v, want an error naming %s", err, tc.want)
		}
	}
}
