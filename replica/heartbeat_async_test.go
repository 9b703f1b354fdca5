package replica

import (
	"bytes"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/transport"
)

// recordingHeartbeater records SendAsync calls and answers them at once.
type recordingHeartbeater struct {
	Heartbeater // only SendAsync is called
	calls       []string
	refuse      error
}

func (h *recordingHeartbeater) SendAsync(partition uint32, address string, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, done func(error)) error {
	if h.refuse != nil {
		return h.refuse
	}
	h.calls = append(h.calls, address)
	done(nil)
	return nil
}

// The leader's fast path (raft.WithAsyncAppend) goes through the heartbeat
// channel for what it carries, to the member view's address; anything else
// is left to Raft's replication goroutine, which sends it the usual way.
func TestCoalescingTransportAppendsAsync(t *testing.T) {
	hb := &recordingHeartbeater{}
	tr := &coalescingTransport{
		hb:        hb,
		partition: 3,
		addressOf: func(id string) (string, bool) { return "10.0.0.2:7200", id == "n2" },
		closed:    make(chan struct{}),
	}
	small := &raft.AppendEntriesRequest{Term: 2, Leader: []byte("n1"), Entries: []*raft.Log{{Index: 5, Term: 2, Data: []byte("put")}}}
	large := &raft.AppendEntriesRequest{Term: 2, Leader: []byte("n1"), Entries: []*raft.Log{{Index: 5, Term: 2, Data: bytes.Repeat([]byte("x"), transport.MaxCarriedEntryBytes+1)}}}
	var resp raft.AppendEntriesResponse
	ran := 0
	done := func(error) { ran++ }

	if !tr.AppendEntriesAsync("n2", "stale:1", small, &resp, done) || ran != 1 {
		t.Fatalf("a small append was not sent asynchronously (done ran %d times)", ran)
	}
	if !tr.AppendEntriesAsync("n3", "10.0.0.3:7200", small, &resp, done) || ran != 2 {
		t.Fatalf("a small append to a node the member view lacks was not sent (done ran %d times)", ran)
	}
	if want := []string{"10.0.0.2:7200", "10.0.0.3:7200"}; len(hb.calls) != 2 || hb.calls[0] != want[0] || hb.calls[1] != want[1] {
		t.Fatalf("sent to %v, want %v (the member view's address, else Raft's)", hb.calls, want)
	}
	if tr.AppendEntriesAsync("n2", "", large, &resp, done) {
		t.Fatal("an append over the channel's limits was sent asynchronously; the replication goroutine must send it over the NetworkTransport")
	}
	hb.refuse = transport.ErrHeartbeatsUnsupported
	if tr.AppendEntriesAsync("n2", "", small, &resp, done) {
		t.Fatal("AppendEntriesAsync reported a send the channel refused")
	}
	hb.refuse = nil
	close(tr.closed)
	if tr.AppendEntriesAsync("n2", "", small, &resp, done) {
		t.Fatal("AppendEntriesAsync sent after Close")
	}
	if ran != 2 || len(hb.calls) != 2 {
		t.Fatalf("done ran %d times and %d sends went out; want 2 each (none for the refused appends)", ran, len(hb.calls))
	}
}
