package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// pebbleLogger bridges pebble.Logger to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelInfo) {
		p.l.Info(fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

// Fatalf logs and panics: Pebble calls it when it cannot continue and does
// not expect it to return. A panic, unlike the default os.Exit, runs deferred
// calls and shows up in tests.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "fatal", true)
	panic("storage: pebble fatal error: " + msg)
}

// eventListener summarises Pebble's events into l. Routine work (flushes,
// compactions) goes to Debug; what an operator must see goes to Warn/Error.
// Events left nil are filled with no-ops by Pebble.
func eventListener(l *slog.Logger) *pebble.EventListener {
	var stallStart atomic.Int64 // unix nanos of the current write stall, 0 if none
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			l.Error("pebble background error", "err", err)
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			l.Error("pebble data corruption", "path", info.Path, "details", info.Details)
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			l.Warn("pebble disk slow", "path", info.Path, "op", info.OpType.String(),
				"bytes", info.WriteSize, "elapsed", info.Duration)
		},
		LowDiskSpace: func(info pebble.LowDiskSpaceInfo) {
			l.Warn("pebble low disk space", "avail_bytes", info.AvailBytes,
				"total_bytes", info.TotalBytes, "below_percent", info.PercentThreshold)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			stallStart.Store(time.Now().UnixNano())
			l.Warn("pebble write stall began; every partition's writes wait", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			var took time.Duration
			if start := stallStart.Swap(0); start != 0 {
				took = time.Duration(time.Now().UnixNano() - start)
			}
			l.Warn("pebble write stall ended", "stalled", took)
		},
		FlushEnd: func(info pebble.FlushInfo) {
			if info.Err != nil {
				l.Warn("pebble flush failed", "job", info.JobID, "err", info.Err)
				return
			}
			var out uint64
			for _, t := range info.Output {
				out += t.Size
			}
			l.Debug("pebble flush", "job", info.JobID, "reason", info.Reason,
				"memtables", info.Input, "in_bytes", info.InputBytes, "out_bytes", out,
				"tables", len(info.Output), "took", info.TotalDuration)
		},
		CompactionEnd: func(info pebble.CompactionInfo) {
			if info.Err != nil && !errors.Is(info.Err, pebble.ErrCancelledCompaction) {
				l.Warn("pebble compaction failed", "job", info.JobID, "err", info.Err)
				return
			}
			var in, out uint64
			for _, lvl := range info.Input {
				for _, t := range lvl.Tables {
					in += t.Size
				}
			}
			for _, t := range info.Output.Tables {
				out += t.Size
			}
			l.Debug("pebble compaction", "job", info.JobID, "reason", info.Reason,
				"to_level", info.Output.Level, "in_bytes", in, "out_bytes", out,
				"took", info.TotalDuration)
		},
		FormatUpgrade: func(v pebble.FormatMajorVersion) {
			l.Info("pebble format upgraded", "version", v.String())
		},
		PossibleAPIMisuse: func(info pebble.PossibleAPIMisuseInfo) {
			l.Warn("pebble possible API misuse", "info", info.String())
		},
	}
}
