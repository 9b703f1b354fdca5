package raftfsm

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"pgregory.net/rapid"
)

func commandsEqual(a, b []Command) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Kind != y.Kind || x.Expect != y.Expect || x.ExpectedVersion != y.ExpectedVersion ||
			x.ClientID != y.ClientID || x.Seq != y.Seq || x.AckBelow != y.AckBelow ||
			!bytes.Equal(x.Key, y.Key) || !bytes.Equal(x.Value, y.Value) || !bytes.Equal(x.ExpectedValue, y.ExpectedValue) {
			return false
		}
	}
	return true
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("v"), 1<<16)
	tests := []struct {
		name string
		cmds []Command
	}{
		{"empty batch", nil},
		{"put", []Command{put("k", "v")}},
		{"put empty value", []Command{put("k", "")}},
		{"delete", []Command{del("k")}},
		{"cas value", []Command{casValue("k", "old", "new")}},
		{"cas version", []Command{casVersion("k", 42, "new")}},
		{"cas absent", []Command{casAbsent("k", "new")}},
		{"request id", []Command{req(put("k", "v"), 7, 9, 3)}},
		{"max integers", []Command{req(casVersion("k", math.MaxUint64, "v"), math.MaxUint64, math.MaxUint64, math.MaxUint64)}},
		{"unknown kind kept", []Command{{Kind: 200, Expect: 99, Key: []byte("k")}}},
		{"large value", []Command{{Kind: KindPut, Key: []byte("k"), Value: big}}},
		{"many", []Command{put("a", "1"), del("b"), casAbsent("c", "3"), req(put("d", "4"), 1, 2, 0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := EncodeBatch(nil, tt.cmds)
			got, err := DecodeBatch(data)
			if err != nil {
				t.Fatalf("DecodeBatch: %v", err)
			}
			if !commandsEqual(got, tt.cmds) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tt.cmds)
			}
			// EncodeBatch appends: a prefix in dst must survive.
			withPrefix := EncodeBatch([]byte("xyz"), tt.cmds)
			if !bytes.Equal(withPrefix, append([]byte("xyz"), data...)) {
				t.Fatalf("EncodeBatch did not append to dst")
			}
		})
	}
}

func TestEncodeBatchIsCompact(t *testing.T) {
	// A plain put costs version, count and five bytes of framing.
	data := EncodeBatch(nil, []Command{put("k", "v")})
	if want := 1 + 1 + 5 + 2; len(data) != want {
		t.Fatalf("encoded put is %d bytes, want %d", len(data), want)
	}
}

func TestDecodeBatchRejects(t *testing.T) {
	valid := EncodeBatch(nil, []Command{put("k", "v")})
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", []byte{}},
		{"unknown version", append([]byte{9}, valid[1:]...)},
		{"missing count", []byte{batchVersion}},
		{"overlong count varint", []byte{batchVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"count larger than data", []byte{batchVersion, 100, 1, 0, 0, 0, 0}},
		{"truncated command", valid[:len(valid)-1]},
		{"unknown flags", []byte{batchVersion, 1, 1, 0, 0x80, 0, 0}},
		{"key longer than data", []byte{batchVersion, 1, 1, 0, 0, 50, 0}},
		{"trailing bytes", append(bytes.Clone(valid), 0)},
		{"flagged field missing", []byte{batchVersion, 1, 1, 0, flagClientID, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmds, err := DecodeBatch(tt.data)
			if !errors.Is(err, ErrCorruptCommand) {
				t.Fatalf("DecodeBatch = %+v, %v; want ErrCorruptCommand", cmds, err)
			}
		})
	}
}

func genBytes(max int) *rapid.Generator[[]byte] {
	return rapid.SliceOfN(rapid.Byte(), 0, max)
}

// genAnyCommand draws commands with arbitrary field values, valid or not.
func genAnyCommand() *rapid.Generator[Command] {
	return rapid.Custom(func(t *rapid.T) Command {
		return Command{
			Kind:            Kind(rapid.Uint8().Draw(t, "kind")),
			Key:             genBytes(40).Draw(t, "key"),
			Value:           genBytes(300).Draw(t, "value"),
			Expect:          Expect(rapid.Uint8().Draw(t, "expect")),
			ExpectedValue:   genBytes(40).Draw(t, "expectedValue"),
			ExpectedVersion: rapid.Uint64().Draw(t, "expectedVersion"),
			ClientID:        rapid.Uint64().Draw(t, "clientID"),
			Seq:             rapid.Uint64().Draw(t, "seq"),
			AckBelow:        rapid.Uint64().Draw(t, "ackBelow"),
		}
	})
}

func TestCodecRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cmds := rapid.SliceOfN(genAnyCommand(), 0, 20).Draw(t, "cmds")
		data := EncodeBatch(nil, cmds)
		got, err := DecodeBatch(data)
		if err != nil {
			t.Fatalf("DecodeBatch: %v", err)
		}
		if !commandsEqual(got, cmds) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, cmds)
		}
		// Every strict prefix is missing part of a declared command.
		cut := rapid.IntRange(0, len(data)-1).Draw(t, "cut")
		if _, err := DecodeBatch(data[:cut]); !errors.Is(err, ErrCorruptCommand) {
			t.Fatalf("DecodeBatch of %d-byte prefix of %d: err %v, want ErrCorruptCommand", cut, len(data), err)
		}
		if _, err := DecodeBatch(append(data, rapid.Byte().Draw(t, "extra"))); !errors.Is(err, ErrCorruptCommand) {
			t.Fatalf("DecodeBatch with a trailing byte: err %v, want ErrCorruptCommand", err)
		}
	})
}

func TestDecodeBatchRandomBytes(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data := genBytes(200).Draw(t, "data")
		if rapid.Bool().Draw(t, "valid version") && len(data) > 0 {
			data[0] = batchVersion
		}
		checkDecode(t, data)
	})
}

// checkDecode asserts DecodeBatch's contract on arbitrary input: a
// sentinel error, or commands that re-encode to an equivalent batch.
func checkDecode(t interface{ Fatalf(string, ...any) }, data []byte) {
	cmds, err := DecodeBatch(data)
	if err != nil {
		if !errors.Is(err, ErrCorruptCommand) {
			t.Fatalf("DecodeBatch error %v does not wrap ErrCorruptCommand", err)
		}
		return
	}
	again, err := DecodeBatch(EncodeBatch(nil, cmds))
	if err != nil || !commandsEqual(again, cmds) {
		t.Fatalf("re-encoding %+v: got %+v, %v", cmds, again, err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{batchVersion, 0})
	f.Add(EncodeBatch(nil, []Command{put("k", "v")}))
	f.Add(EncodeBatch(nil, []Command{req(casValue("k", "a", "b"), 1, 2, 1), del("x"), casVersion("y", 3, "z")}))
	f.Add([]byte{batchVersion, 1, 1, 0, 0xff, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
	})
}

func TestSessionRecordRoundTrip(t *testing.T) {
	genResult := rapid.Custom(func(t *rapid.T) Result {
		return Result{
			Status:  Status(rapid.Uint8().Draw(t, "status")),
			Version: rapid.Uint64().Draw(t, "version"),
			Exists:  rapid.Bool().Draw(t, "exists"),
			Value:   genBytes(50).Draw(t, "value"),
			Err:     rapid.String().Draw(t, "err"),
		}
	})
	rapid.Check(t, func(t *rapid.T) {
		s := &session{low: rapid.Uint64().Draw(t, "low")}
		seqs := rapid.SliceOfNDistinct(rapid.Uint64(), 0, 20, rapid.ID).Draw(t, "seqs")
		for _, seq := range seqs {
			s.record(seq, genResult.Draw(t, "result"))
		}
		got, err := decodeSession(s.appendTo(nil))
		if err != nil {
			t.Fatalf("decodeSession: %v", err)
		}
		if got.low != s.low || got.size != s.size || len(got.results) != len(s.results) {
			t.Fatalf("decoded low %d size %d n %d, want %d %d %d", got.low, got.size, len(got.results), s.low, s.size, len(s.results))
		}
		for i := range got.results {
			if got.results[i].seq != s.results[i].seq || !resultsEqual(got.results[i].res, s.results[i].res) {
				t.Fatalf("result %d: got %+v, want %+v", i, got.results[i], s.results[i])
			}
		}
		// Garbage may decode by chance; it must just not panic.
		_, _ = decodeSession(genBytes(60).Draw(t, "garbage"))
	})
}
