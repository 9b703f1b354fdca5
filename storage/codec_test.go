package storage

import (
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
	"pgregory.net/rapid"
)

func TestCodecRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genLog(rapid.Uint64().Draw(t, "index")).Draw(t, "log")
		buf := make([]byte, encodedLogLen(in))
		encodeLog(buf, in)
		var out raft.Log
		if err := decodeLog(buf, in.Index, &out); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !sameLog(in, &out) {
			t.Fatalf("round trip: got %+v, want %+v", out, *in)
		}
		// The decoded entry must not alias the encoded bytes (pebble reuses them).
		clear(buf)
		if !sameLog(in, &out) {
			t.Fatalf("decoded entry aliases its input")
		}
	})
}

func TestCodecExtremes(t *testing.T) {
	tests := []struct {
		name string
		log  raft.Log
	}{
		{"zero", raft.Log{}},
		{"max ints", raft.Log{Index: 1<<64 - 1, Term: 1<<64 - 1, Type: 255}},
		{"far past", raft.Log{Index: 1, AppendedAt: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)}},
		{"far future", raft.Log{Index: 1, AppendedAt: time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC)}},
		{"only extensions", raft.Log{Index: 2, Extensions: []byte{1, 2, 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, encodedLogLen(&tt.log))
			encodeLog(buf, &tt.log)
			var out raft.Log
			if err := decodeLog(buf, tt.log.Index, &out); err != nil || !sameLog(&tt.log, &out) {
				t.Fatalf("got %+v, %v; want %+v", out, err, tt.log)
			}
		})
	}
}

func TestCodecRejectsCorruption(t *testing.T) {
	valid := func() []byte {
		l := entry(1, 300, 20)
		l.Extensions = []byte("ext")
		b := make([]byte, encodedLogLen(l))
		encodeLog(b, l)
		return b
	}
	tests := []struct {
		name   string
		mangle func([]byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"unknown version", func(b []byte) []byte { b[0] = 9; return b }},
		{"unknown flag", func([]byte) []byte { return []byte{logCodecV1, 0xac, 0x02, 1, 0, 0x80, 0, 0} }},
		{"nanoseconds out of range", func([]byte) []byte {
			return []byte{logCodecV1, 0xac, 0x02, 1, 0, flagAppendedAt, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03, 0, 0} // nsec = 1e9
		}},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }},
		{"unterminated varint", func(b []byte) []byte {
			return append(b[:1], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		}},
		{"huge length", func([]byte) []byte {
			// index 300, term 1, type 0, no flags, then 2^63 bytes of data claimed.
			return []byte{logCodecV1, 0xac, 0x02, 1, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0}
		}},
		{"control: hand-made valid entry", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out raft.Log
			if tt.mangle == nil {
				// Proves the hand-made encodings above are well formed but for their flaw.
				if err := decodeLog([]byte{logCodecV1, 0xac, 0x02, 1, 0, 0, 0, 0}, 300, &out); err != nil || out.Index != 300 {
					t.Fatalf("decode = %+v, %v", out, err)
				}
				return
			}
			if err := decodeLog(tt.mangle(valid()), 300, &out); !errors.Is(err, ErrCorruptLog) {
				t.Fatalf("decode = %v, want ErrCorruptLog", err)
			}
		})
	}
	t.Run("wrong index", func(t *testing.T) {
		var out raft.Log
		if err := decodeLog(valid(), 301, &out); !errors.Is(err, ErrCorruptLog) {
			t.Fatalf("decode under index 301 = %v, want ErrCorruptLog", err)
		}
	})
	t.Run("every truncation", func(t *testing.T) {
		b := valid()
		for n := range len(b) {
			var out raft.Log
			if err := decodeLog(b[:n], 300, &out); !errors.Is(err, ErrCorruptLog) {
				t.Fatalf("decode of first %d bytes = %v, want ErrCorruptLog", n, err)
			}
		}
	})
}

// TestCodecNeverPanics feeds arbitrary bytes to the decoder.
func TestCodecNeverPanics(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		b := rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, "bytes")
		var out raft.Log
		if err := decodeLog(b, rapid.Uint64Range(0, 300).Draw(t, "index"), &out); err != nil && !errors.Is(err, ErrCorruptLog) {
			t.Fatalf("decode error %v does not wrap ErrCorruptLog", err)
		}
	})
}

// TestGetLogCorruptEntry damages stored bytes under the store's feet.
func TestGetLogCorruptEntry(t *testing.T) {
	s := openTest(t, TestConfig())
	l := s.Log(4)
	if err := l.StoreLogs(entries(4, 1, 3, 32)); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, logKeyLen)
	putLogKey(key, 4, 2)
	if err := s.DB().Set(key, []byte{logCodecV1, 2, 1}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	var out raft.Log
	if err := l.GetLog(2, &out); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("GetLog of damaged entry = %v, want ErrCorruptLog", err)
	}
	if err := l.GetLog(3, &out); err != nil || !sameLog(&out, entry(4, 3, 32)) {
		t.Fatalf("GetLog of intact neighbour = %+v, %v", out, err)
	}

	// A malformed key inside the log range makes the bound seek fail loudly.
	s2 := openTest(t, TestConfig())
	bad := append(kindPrefix(6, kindLog), 1, 2, 3)
	if err := s2.DB().Set(bad, []byte("x"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Log(6).LastIndex(); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("LastIndex over a malformed key = %v, want ErrCorruptLog", err)
	}
}
