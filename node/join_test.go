package node

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeGossip is what keepJoined sees of gossip: joins it counts (the first
// failing ones fail), alive members and whether a configured node is unknown.
type fakeGossip struct {
	mu       sync.Mutex
	joins    int
	failing  int // joins still to fail; each failure also lets a peer's probe in (alive = 2)
	alive    int
	unknown  bool
	stop     chan struct{}
	finished chan struct{}
}

// run starts keepJoined on g; stopKeepJoined ends it.
func (g *fakeGossip) run() {
	g.stop, g.finished = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(g.finished)
		keepJoined(g.stop, []string{"127.0.0.1:1"}, g.join, g.aliveNow, g.incomplete, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
}

func (g *fakeGossip) stopKeepJoined() {
	close(g.stop)
	<-g.finished
}

func (g *fakeGossip) join([]string) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.joins++
	if g.failing > 0 {
		g.failing--
		g.alive = 2
		return 0, errors.New("push/pull timed out")
	}
	return 1, nil
}

func (g *fakeGossip) aliveNow() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.alive
}

func (g *fakeGossip) incomplete() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.unknown
}

// update runs f under the lock and returns the joins so far.
func (g *fakeGossip) update(f func()) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	f()
	return g.joins
}

func (g *fakeGossip) count() int { return g.update(func() {}) }

// A node whose first join fails but whose gossip meanwhile heard from a
// peer (so it sees two members alive) must join again: only a join's
// push/pull tells it of the nodes that did not speak to it. After a join
// succeeds it stops, and joins again only when it finds itself alone.
func TestKeepJoinedRetriesAFailedJoinAlthoughAPeerIsAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &fakeGossip{failing: 1, alive: 1}
		g.run()

		synctest.Wait()
		if got := g.count(); got != 1 {
			t.Fatalf("%d joins at start, want 1", got)
		}
		time.Sleep(time.Second) // fake time: the backoff is 200 ms
		synctest.Wait()
		if got := g.count(); got != 2 {
			t.Fatalf("%d joins 1 s after a failed one with a peer alive, want 2: the failed join was not retried", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := g.count(); got != 2 {
			t.Fatalf("%d joins a minute after one succeeded, want still 2", got)
		}

		g.update(func() { g.alive = 1 }) // alone again
		time.Sleep(6 * time.Second)      // the backoff is at most 5 s
		synctest.Wait()
		if got := g.count(); got < 3 {
			t.Fatalf("%d joins after the node found itself alone, want a new one", got)
		}
		g.stopKeepJoined()
	})
}

// Joined, with peers alive, a node joins again while gossip lacks a node
// that its replicas' configurations name (the peer that answered its join
// may have suspected that node then), at most every 5 s, and stops once
// gossip knows it.
func TestKeepJoinedJoinsAgainWhileAConfiguredNodeIsUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &fakeGossip{alive: 3, unknown: true}
		g.run()

		time.Sleep(30 * time.Second)
		synctest.Wait()
		// 200 ms, 400 ms, ... up to 5 s apart: the first join plus about 9 more in 30 s.
		if got := g.count(); got < 5 || got > 12 {
			t.Fatalf("%d joins in 30 s while a configured node is unknown, want one at start and then one every 0.2-5 s", got)
		}
		before := g.update(func() { g.unknown = false })
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := g.count(); got > before+1 {
			t.Fatalf("%d joins in the minute after gossip learned the node, want at most the one in flight", got-before)
		}
		g.stopKeepJoined()
	})
}
