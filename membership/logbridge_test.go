package membership

import (
	"context"
	"log/slog"
	"sync"
	"testing"
)

// recorder is a slog.Handler that keeps every record.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

func (r *recorder) all() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.records...)
}

func TestLogBridgeLevels(t *testing.T) {
	tests := []struct {
		line      string
		wantLevel slog.Level
		wantMsg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:5000\n", slog.LevelDebug, "Stream connection from=127.0.0.1:5000"},
		{"[INFO] memberlist: Marking n3 as failed, suspect timeout reached (0 peer confirmations)\n", slog.LevelInfo,
			"Marking n3 as failed, suspect timeout reached (0 peer confirmations)"},
		{"[WARN] memberlist: Refuting a suspect message (from: n2)\n", slog.LevelWarn, "Refuting a suspect message (from: n2)"},
		{"[ERR] memberlist: Failed to send UDP ping: boom\n", slog.LevelError, "Failed to send UDP ping: boom"},
		{"[ERROR] memberlist: x\n", slog.LevelError, "x"},
		{"[ERR] Failed to shutdown transport: x\n", slog.LevelError, "Failed to shutdown transport: x"},
		{"no level at all\n", slog.LevelInfo, "no level at all"},
		{"[NOPE] memberlist: y\n", slog.LevelInfo, "[NOPE] memberlist: y"},
		{"[WARN] memberlist: ignoring alive message for 'n4': " + ErrClusterMismatch.Error() + ": node n4 ...\n",
			slog.LevelDebug, "ignoring alive message for 'n4': " + ErrClusterMismatch.Error() + ": node n4 ..."},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			rec := &recorder{}
			var observed []string
			newLogBridge(slog.New(rec), func(msg string) { observed = append(observed, msg) }).Print(tt.line)
			got := rec.all()
			if len(got) != 1 {
				t.Fatalf("%d records, want 1", len(got))
			}
			if got[0].Level != tt.wantLevel || got[0].Message != tt.wantMsg {
				t.Fatalf("got %v %q, want %v %q", got[0].Level, got[0].Message, tt.wantLevel, tt.wantMsg)
			}
			if len(observed) != 1 || observed[0] != tt.wantMsg {
				t.Fatalf("observer saw %q, want %q", observed, tt.wantMsg)
			}
		})
	}
}

func TestSuspectedBy(t *testing.T) {
	tests := []struct {
		msg, want string
		ok        bool
	}{
		{"Suspect n3 has failed, no acks received", "n3", true},
		{"Suspect node with spaces has failed, no acks received", "node with spaces", true},
		{"Marking n3 as failed, suspect timeout reached (1 peer confirmations)", "", false},
		{"Suspect n3 has failed", "", false},
	}
	for _, tt := range tests {
		if got, ok := suspectedBy(tt.msg); got != tt.want || ok != tt.ok {
			t.Errorf("suspectedBy(%q) = %q, %v; want %q, %v", tt.msg, got, ok, tt.want, tt.ok)
		}
	}
}
