package replica

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger returns an hclog.Logger (what hashicorp/raft logs through) whose
// records land in logger. Raft logs at Info for every election of every
// partition; level chooses what is kept.
func newHCLogger(logger *slog.Logger, level slog.Level, throttle *LogThrottle, attrs ...any) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "raft",
		Level:      hclogLevel(level),
		Output:     &hclogWriter{logger: logger.With(attrs...), throttle: throttle},
		JSONFormat: true,
	})
}

// LogThrottle lets one line per message text through per interval, across
// every replica that shares it: when a peer is down, each of a node's
// partitions would otherwise log the same failure several times a second.
type LogThrottle struct {
	interval time.Duration
	now      func() time.Time
	mu       sync.Mutex
	last     map[string]time.Time
	dropped  map[string]int
}

// NewLogThrottle returns a throttle that passes a message at most once per interval.
func NewLogThrottle(interval time.Duration) *LogThrottle {
	return &LogThrottle{interval: interval, now: time.Now, last: map[string]time.Time{}, dropped: map[string]int{}}
}

// allow reports whether msg may be logged now, and how many lines of it were
// dropped since it was last logged.
func (t *LogThrottle) allow(msg string) (bool, int) {
	if t == nil {
		return true, 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if last, ok := t.last[msg]; ok && now.Sub(last) < t.interval {
		t.dropped[msg]++
		return false, 0
	}
	if len(t.last) > 4096 { // bound memory if messages vary
		clear(t.last)
		clear(t.dropped)
	}
	n := t.dropped[msg]
	t.last[msg], t.dropped[msg] = now, 0
	return true, n
}

func hclogLevel(l slog.Level) hclog.Level {
	switch {
	case l <= slog.LevelDebug:
		return hclog.Debug
	case l <= slog.LevelInfo:
		return hclog.Info
	case l <= slog.LevelWarn:
		return hclog.Warn
	default:
		return hclog.Error
	}
}

// hclogWriter turns hclog's JSON lines into slog records.
type hclogWriter struct {
	logger   *slog.Logger
	throttle *LogThrottle
}

func (w *hclogWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			w.logger.Info(line)
			continue
		}
		msg, _ := rec["@message"].(string)
		lvl := slog.LevelInfo
		switch rec["@level"] {
		case "trace", "debug":
			lvl = slog.LevelDebug
		case "warn":
			lvl = slog.LevelWarn
		case "error":
			lvl = slog.LevelError
		}
		ok, dropped := w.throttle.allow(msg)
		if !ok {
			continue
		}
		attrs := make([]slog.Attr, 0, len(rec)+1)
		if dropped > 0 {
			attrs = append(attrs, slog.Int("similar_suppressed", dropped))
		}
		for k, v := range rec {
			if strings.HasPrefix(k, "@") {
				continue
			}
			attrs = append(attrs, slog.Any(k, v))
		}
		w.logger.LogAttrs(context.Background(), lvl, msg, attrs...)
	}
	return len(p), nil
}
