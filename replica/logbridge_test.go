package replica

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestHCLogBridgeLevelsAndThrottle(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	th := NewLogThrottle(10 * time.Second)
	now := time.Unix(0, 0)
	th.now = func() time.Time { return now }
	hl := newHCLogger(logger, slog.LevelDebug, th, "partition", 3)
	hl.Warn("failed to appendEntries to", "peer", "n2")
	hl.Warn("failed to appendEntries to", "peer", "n2") // dropped
	hl.Error("something else")
	now = now.Add(11 * time.Second)
	hl.Warn("failed to appendEntries to", "peer", "n2") // passes, reports 1 suppressed
	out := buf.String()
	if got := strings.Count(out, "failed to appendEntries"); got != 2 {
		t.Fatalf("throttled message logged %d times, want 2:\n%s", got, out)
	}
	for _, want := range []string{"level=WARN", "level=ERROR", "partition=3", "peer=n2", "similar_suppressed=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
