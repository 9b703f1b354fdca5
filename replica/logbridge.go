package replica

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger returns an hclog.Logger (what hashicorp/raft logs through) whose
// records land in logger. Raft logs at Info for every election of every
// partition; level chooses what is kept.
func newHCLogger(logger *slog.Logger, level slog.Level, attrs ...any) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "raft",
		Level:      hclogLevel(level),
		Output:     &hclogWriter{logger: logger.With(attrs...)},
		JSONFormat: true,
	})
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
type hclogWriter struct{ logger *slog.Logger }

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
		attrs := make([]slog.Attr, 0, len(rec))
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
