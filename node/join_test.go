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

// A node whose first join fails but whose gossip meanwhile heard from a
// peer (so it sees two members alive) must join again: only a join's
// push/pull tells it of the nodes that did not speak to it. After a join
// succeeds it stops, and joins again only when it finds itself alone.
func TestKeepJoinedRetriesAFailedJoinAlthoughAPeerIsAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		calls, fail, aliveNow := 0, 1, 1
		join := func([]string) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if fail > 0 {
				// The join fails, while a peer's probe reaches this node.
				fail--
				aliveNow = 2
				return 0, errors.New("push/pull timed out")
			}
			return 1, nil
		}
		alive := func() int {
			mu.Lock()
			defer mu.Unlock()
			return aliveNow
		}
		count := func() int {
			mu.Lock()
			defer mu.Unlock()
			return calls
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			keepJoined(stop, []string{"127.0.0.1:1"}, join, alive, func() bool { return false }, slog.New(slog.NewTextHandler(io.Discard, nil)))
			close(done)
		}()

		synctest.Wait()
		if got := count(); got != 1 {
			t.Fatalf("%d joins at start, want 1", got)
		}
		time.Sleep(time.Second) // fake time: the backoff is 200 ms
		synctest.Wait()
		if got := count(); got != 2 {
			t.Fatalf("%d joins 1 s after a failed one with a peer alive, want 2: the failed join was not retried", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := count(); got != 2 {
			t.Fatalf("%d joins a minute after one succeeded, want still 2", got)
		}

		mu.Lock()
		aliveNow = 1 // alone again
		mu.Unlock()
		time.Sleep(6 * time.Second) // the backoff is at most 5 s
		synctest.Wait()
		if got := count(); got < 3 {
			t.Fatalf("%d joins after the node found itself alone, want a new one", got)
		}
		close(stop)
		<-done
	})
}

// Joined, with peers alive, a node joins again while gossip lacks a node
// that its replicas' configurations name (the peer that answered its join
// may have suspected that node then), at most every 5 s, and stops once
// gossip knows it.
func TestKeepJoinedJoinsAgainWhileAConfiguredNodeIsUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		calls, unknown := 0, true
		join := func([]string) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			return 1, nil
		}
		incomplete := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return unknown
		}
		count := func() int {
			mu.Lock()
			defer mu.Unlock()
			return calls
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			keepJoined(stop, []string{"127.0.0.1:1"}, join, func() int { return 3 }, incomplete, slog.New(slog.NewTextHandler(io.Discard, nil)))
			close(done)
		}()

		time.Sleep(30 * time.Second)
		synctest.Wait()
		// 200 ms, 400 ms, ... up to 5 s apart: the first join plus about 9 more in 30 s.
		if got := count(); got < 5 || got > 12 {
			t.Fatalf("%d joins in 30 s while a configured node is unknown, want one at start and then one every 0.2-5 s", got)
		}
		mu.Lock()
		unknown = false
		before := calls
		mu.Unlock()
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := count(); got > before+1 {
			t.Fatalf("%d joins in the minute after gossip learned the node, want at most the one in flight", got-before)
		}
		close(stop)
		<-done
	})
}
