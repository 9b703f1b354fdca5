package membership

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// newLogBridge returns a *log.Logger for memberlist whose lines ("[WARN] memberlist: ...") go to l
// at the matching slog level. observe, when not nil, sees every message (without level and
// "memberlist: " prefix) before it is logged; Gossip uses it to learn of suspicions, which
// memberlist reports nowhere else.
func newLogBridge(l *slog.Logger, observe func(msg string)) *log.Logger {
	return log.New(&logBridge{log: l, observe: observe}, "", 0)
}

type logBridge struct {
	log     *slog.Logger
	observe func(msg string)
}

// Write handles one log line: log.Logger calls it once per message.
func (b *logBridge) Write(p []byte) (int, error) {
	level, msg := parseLogLine(string(p))
	if b.observe != nil {
		b.observe(msg)
	}
	if level > slog.LevelDebug && isRefusal(msg) {
		// memberlist echoes every refusal; Gossip already logs each one, rate-limited.
		level = slog.LevelDebug
	}
	b.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// parseLogLine splits a memberlist log line into its slog level and message. Lines without a
// known level tag are logged at Info.
func parseLogLine(line string) (slog.Level, string) {
	line = strings.TrimRight(line, "\r\n")
	level := slog.LevelInfo
	if rest, ok := strings.CutPrefix(line, "["); ok {
		if tag, msg, ok := strings.Cut(rest, "]"); ok {
			if l, known := levelOf(tag); known {
				level, line = l, strings.TrimLeft(msg, " ")
			}
		}
	}
	return level, strings.TrimPrefix(line, "memberlist: ")
}

func levelOf(tag string) (slog.Level, bool) {
	switch strings.ToUpper(tag) {
	case "TRACE", "DEBUG":
		return slog.LevelDebug, true
	case "INFO":
		return slog.LevelInfo, true
	case "WARN", "WARNING":
		return slog.LevelWarn, true
	case "ERR", "ERROR":
		return slog.LevelError, true
	}
	return 0, false
}

func isRefusal(msg string) bool {
	for _, err := range []error{ErrClusterMismatch, ErrPartitionMismatch, ErrInvalidMeta} {
		if strings.Contains(msg, err.Error()) {
			return true
		}
	}
	return false
}

// suspectedBy returns the node named in memberlist's "Suspect NAME has failed, no acks received"
// line, logged when this node's own probe of NAME fails and it starts suspecting NAME.
// memberlist v0.7.0 offers no event or accessor for suspicion (issue hashicorp/memberlist#266);
// TestFailureDetection fails if a memberlist upgrade changes the wording.
func suspectedBy(msg string) (string, bool) {
	rest, ok := strings.CutPrefix(msg, "Suspect ")
	if !ok {
		return "", false
	}
	name, ok := strings.CutSuffix(rest, " has failed, no acks received")
	if !ok || name == "" {
		return "", false
	}
	return name, true
}
