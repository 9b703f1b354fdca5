package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The fields of hashicorp/raft's types the heartbeat codec knows about,
// with their types (and kinds: the codec writes a LogType as one byte). If
// raft adds or changes a field, TestHeartbeatCodecKnowsEveryRaftField fails:
// decide whether the channel can carry it (then encode it) or not (then
// Carried must refuse requests that set it), and update these lists. Every
// field listed is carried today.
var (
	knownRPCHeaderFields = []string{"ProtocolVersion raft.ProtocolVersion/int", "ID []uint8/slice", "Addr []uint8/slice"}
	knownRequestFields   = []string{"RPCHeader raft.RPCHeader/struct", "Term uint64/uint64", "Leader []uint8/slice",
		"PrevLogEntry uint64/uint64", "PrevLogTerm uint64/uint64", "Entries []*raft.Log/slice", "LeaderCommitIndex uint64/uint64",
		"Quiesce bool/bool"}
	knownLogFields = []string{"Index uint64/uint64", "Term uint64/uint64", "Type raft.LogType/uint8",
		"Data []uint8/slice", "Extensions []uint8/slice", "AppendedAt time.Time/struct"}
	knownResponseFields = []string{"RPCHeader raft.RPCHeader/struct", "Term uint64/uint64", "LastLog uint64/uint64",
		"Success bool/bool", "NoRetryBackoff bool/bool", "Quiescent bool/bool"}
)

// fieldSignatures lists typ's fields as "Name type/kind".
func fieldSignatures(typ reflect.Type) []string {
	sigs := make([]string, typ.NumField())
	for i := range sigs {
		f := typ.Field(i)
		sigs[i] = fmt.Sprintf("%s %v/%v", f.Name, f.Type, f.Type.Kind())
	}
	return sigs
}

func TestHeartbeatCodecKnowsEveryRaftField(t *testing.T) {
	tests := []struct {
		typ   reflect.Type
		known []string
	}{
		{reflect.TypeFor[raft.RPCHeader](), knownRPCHeaderFields},
		{reflect.TypeFor[raft.AppendEntriesRequest](), knownRequestFields},
		{reflect.TypeFor[raft.Log](), knownLogFields},
		{reflect.TypeFor[raft.AppendEntriesResponse](), knownResponseFields},
	}
	for _, tt := range tests {
		if got := fieldSignatures(tt.typ); !slices.Equal(got, tt.known) {
			t.Errorf("%v has fields %v; the heartbeat codec was written for %v: "+
				"update appendRequest/appendResponse, the decoders, Carried, requestSize, IsHeartbeat and the lists in this file",
				tt.typ, got, tt.known)
		}
	}
	// The entry types the codec writes as a byte are all below 256.
	if n := reflect.TypeFor[raft.LogType]().Bits(); n != 8 {
		t.Errorf("raft.LogType has %d bits; the codec writes it as one byte", n)
	}
}

// setNonZero gives v, a settable value, a non-zero value derived from seed
// (distinct seeds give distinct values). Integers get values that take
// several varint bytes; times have nanoseconds and a zone of their own.
func setNonZero(t *testing.T, v reflect.Value, seed int) {
	t.Helper()
	if v.Type() == reflect.TypeFor[time.Time]() {
		at := time.Unix(int64(seed)*1_000_003, int64(seed)*7_919+1).In(time.FixedZone(fmt.Sprintf("zone-%d", seed), 60*seed))
		v.Set(reflect.ValueOf(at))
		return
	}
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(seed))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		x := uint64(seed)<<(v.Type().Bits()-8) | uint64(seed)
		v.SetUint(x)
	case reflect.String:
		v.SetString(fmt.Sprintf("value-%d", seed))
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes(fmt.Appendf(nil, "bytes-%d", seed))
			return
		}
		s := reflect.MakeSlice(v.Type(), 1, 1)
		setNonZero(t, s.Index(0), seed)
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		setNonZero(t, p.Elem(), seed)
		v.Set(p)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				setNonZero(t, v.Field(i), seed+i)
			}
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		setNonZero(t, k, seed)
		setNonZero(t, e, seed)
		m.SetMapIndex(k, e)
		v.Set(m)
	default:
		t.Fatalf("setNonZero: no rule for %v; extend it", v.Type())
	}
	if v.IsZero() {
		t.Fatalf("setNonZero left %v zero", v.Type())
	}
}

// fillAll sets every leaf field of the struct v points to (descending into
// embedded structs such as RPCHeader) to a distinct non-zero value.
func fillAll(t *testing.T, v reflect.Value, seed *int) {
	t.Helper()
	for i := range v.NumField() {
		f := v.Field(i)
		if v.Type().Field(i).Anonymous && f.Kind() == reflect.Struct {
			fillAll(t, f, seed)
			continue
		}
		*seed++
		setNonZero(t, f, *seed)
	}
}

func validHeartbeat() raft.AppendEntriesRequest {
	return raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("node-a"), Addr: []byte("10.0.0.1:7000")},
		Term:      7,
		Leader:    []byte("10.0.0.1:7000"),
	}
}

// sizedEntries returns n entries (n > 0) whose Data and Extensions sum to
// size bytes, spread over all of them, half in Data and half in Extensions.
func sizedEntries(n, size int) []*raft.Log {
	entries := make([]*raft.Log, n)
	for i := range entries {
		part := size / n
		if i < size%n {
			part++
		}
		entries[i] = &raft.Log{
			Index:      uint64(i + 1),
			Term:       1,
			Data:       bytes.Repeat([]byte{'d'}, part/2),
			Extensions: bytes.Repeat([]byte{'e'}, part-part/2),
		}
	}
	return entries
}

// entryBytes is what Carried counts of entries.
func entryBytes(entries []*raft.Log) int {
	n := 0
	for _, e := range entries {
		n += len(e.Data) + len(e.Extensions)
	}
	return n
}

func TestCarriedAndIsHeartbeat(t *testing.T) {
	base := validHeartbeat()
	if !Carried(&base) || !IsHeartbeat(&base) {
		t.Fatalf("Carried, IsHeartbeat(%+v) = %v, %v; want true, true", base, Carried(&base), IsHeartbeat(&base))
	}

	// Every field of a request, and of an entry, may be set: the codec
	// carries them all. (A field raft adds fails
	// TestHeartbeatCodecKnowsEveryRaftField.)
	typ := reflect.TypeFor[raft.AppendEntriesRequest]()
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		t.Run(name, func(t *testing.T) {
			req := validHeartbeat()
			setNonZero(t, reflect.ValueOf(&req).Elem().Field(i), 1)
			if !Carried(&req) {
				t.Fatalf("Carried(request with %s = %v) = false, want true", name, reflect.ValueOf(req).Field(i))
			}
		})
	}
	logTyp := reflect.TypeFor[raft.Log]()
	for i := range logTyp.NumField() {
		name := logTyp.Field(i).Name
		t.Run("entry "+name, func(t *testing.T) {
			var e raft.Log
			setNonZero(t, reflect.ValueOf(&e).Elem().Field(i), 1)
			req := validHeartbeat()
			req.Entries = []*raft.Log{&e}
			if !Carried(&req) || IsHeartbeat(&req) {
				t.Fatalf("Carried, IsHeartbeat(request with an entry with only %s set) = %v, %v; want true, false",
					name, Carried(&req), IsHeartbeat(&req))
			}
		})
	}

	one := []*raft.Log{{Index: 1, Term: 1}}
	half := MaxCarriedEntryBytes / 2
	tests := []struct {
		name          string
		mutate        func(*raft.AppendEntriesRequest)
		carried       bool // sent over the channel
		isHeartbeat   bool // answered on the receiver's heartbeat fast path
		raftHeartbeat bool // what raft's NetworkTransport decides, for comparison; see below
	}{
		{"heartbeat", func(*raft.AppendEntriesRequest) {}, true, true, true},
		{"addr only", func(r *raft.AppendEntriesRequest) { r.Leader = nil }, true, true, true},
		{"leader only", func(r *raft.AppendEntriesRequest) { r.Addr = nil }, true, true, true},
		{"no header", func(r *raft.AppendEntriesRequest) { r.RPCHeader = raft.RPCHeader{} }, true, true, true},
		{"empty entries slice", func(r *raft.AppendEntriesRequest) { r.Entries = []*raft.Log{} }, true, true, true},
		{"PrevLogEntry", func(r *raft.AppendEntriesRequest) { r.PrevLogEntry = 5 }, true, false, false},
		{"PrevLogTerm", func(r *raft.AppendEntriesRequest) { r.PrevLogTerm = 5 }, true, false, false},
		{"LeaderCommitIndex", func(r *raft.AppendEntriesRequest) { r.LeaderCommitIndex = 5 }, true, false, false},
		{"commit update", func(r *raft.AppendEntriesRequest) {
			r.PrevLogEntry, r.PrevLogTerm, r.LeaderCommitIndex = 1<<40, 3, 1<<40
		}, true, false, false},
		{"no leader address", func(r *raft.AppendEntriesRequest) { r.Addr, r.Leader = nil, nil }, true, false, false},
		{"empty leader address", func(r *raft.AppendEntriesRequest) { r.Addr, r.Leader = []byte{}, nil }, true, false, false},
		{"term zero", func(r *raft.AppendEntriesRequest) { r.Term = 0 }, false, false, false},
		{"term zero empty append", func(r *raft.AppendEntriesRequest) { r.Term, r.LeaderCommitIndex = 0, 5 }, false, false, false},

		// Appends with entries: carried within the limits, never heartbeats.
		{"entries", func(r *raft.AppendEntriesRequest) { r.Entries = one }, true, false, false},
		{"entries and commit", func(r *raft.AppendEntriesRequest) { r.Entries, r.LeaderCommitIndex = one, 1 }, true, false, false},
		{"entries without a leader address", func(r *raft.AppendEntriesRequest) { r.Entries, r.Addr, r.Leader = one, nil, nil }, true, false, false},
		{"term zero with entries", func(r *raft.AppendEntriesRequest) { r.Term, r.Entries = 0, one }, false, false, false},
		{"1024 entries", func(r *raft.AppendEntriesRequest) { r.Entries = sizedEntries(maxCarriedEntries, 0) }, true, false, false},
		{"1025 entries", func(r *raft.AppendEntriesRequest) { r.Entries = sizedEntries(maxCarriedEntries+1, 0) }, false, false, false},
		{"1025 entries of one byte", func(r *raft.AppendEntriesRequest) { r.Entries = sizedEntries(maxCarriedEntries+1, maxCarriedEntries+1) }, false, false, false},
		{"1024 entries at the byte limit", func(r *raft.AppendEntriesRequest) {
			r.Entries = sizedEntries(maxCarriedEntries, MaxCarriedEntryBytes)
		}, true, false, false},
		{"1024 entries one byte over", func(r *raft.AppendEntriesRequest) {
			r.Entries = sizedEntries(maxCarriedEntries, MaxCarriedEntryBytes+1)
		}, false, false, false},
		{"data at the limit", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Term: 1, Data: make([]byte, MaxCarriedEntryBytes)}}
		}, true, false, false},
		{"data one byte over", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Term: 1, Data: make([]byte, MaxCarriedEntryBytes+1)}}
		}, false, false, false},
		{"extensions at the limit", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Term: 1, Extensions: make([]byte, MaxCarriedEntryBytes)}}
		}, true, false, false},
		{"extensions one byte over", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Term: 1, Extensions: make([]byte, MaxCarriedEntryBytes+1)}}
		}, false, false, false},
		{"data and extensions at the limit", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Term: 1, Data: make([]byte, half), Extensions: make([]byte, MaxCarriedEntryBytes-half)}}
		}, true, false, false},
		{"data and extensions one byte over", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Term: 1, Data: make([]byte, half), Extensions: make([]byte, MaxCarriedEntryBytes-half+1)}}
		}, false, false, false},
		{"entries at the limit", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Data: make([]byte, half)}, {Index: 2, Extensions: make([]byte, MaxCarriedEntryBytes-half)}, {Index: 3}}
		}, true, false, false},
		{"entries one byte over", func(r *raft.AppendEntriesRequest) {
			r.Entries = []*raft.Log{{Index: 1, Data: make([]byte, half)}, {Index: 2, Extensions: make([]byte, MaxCarriedEntryBytes-half)}, {Index: 3, Data: []byte{1}}}
		}, false, false, false},
		{"seven entries one byte over", func(r *raft.AppendEntriesRequest) { r.Entries = sizedEntries(7, MaxCarriedEntryBytes+1) }, false, false, false},
		{"nil entry", func(r *raft.AppendEntriesRequest) { r.Entries = []*raft.Log{nil} }, false, false, false},
		{"nil entry after others", func(r *raft.AppendEntriesRequest) { r.Entries = append(sizedEntries(3, 30), nil) }, false, false, false},
		{"nil entry first", func(r *raft.AppendEntriesRequest) { r.Entries = append([]*raft.Log{nil}, one...) }, false, false, false},
		{"nil entry among 1024", func(r *raft.AppendEntriesRequest) {
			r.Entries = sizedEntries(maxCarriedEntries, 0)
			r.Entries[500] = nil
		}, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validHeartbeat()
			tt.mutate(&req)
			if got := Carried(&req); got != tt.carried {
				t.Errorf("Carried(%s) = %v, want %v", describeRequest(req), got, tt.carried)
			}
			if got := IsHeartbeat(&req); got != tt.isHeartbeat {
				t.Errorf("IsHeartbeat(%s) = %v, want %v", describeRequest(req), got, tt.isHeartbeat)
			}
			if IsHeartbeat(&req) && !Carried(&req) {
				t.Errorf("IsHeartbeat accepts %s, which Carried refuses", describeRequest(req))
			}
			// raft's NetworkTransport.handleCommand test for its heartbeat
			// fast path (v1.8.0): the channel must not hand raft's heartbeat
			// handler anything raft itself would send to the main loop.
			leaderAddr := req.Leader
			if len(req.Addr) > 0 {
				leaderAddr = req.Addr
			}
			raftHB := req.Term != 0 && leaderAddr != nil && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
				len(req.Entries) == 0 && req.LeaderCommitIndex == 0
			if raftHB != tt.raftHeartbeat {
				t.Fatalf("test table: raft's heartbeat test says %v for %s", raftHB, describeRequest(req))
			}
			if IsHeartbeat(&req) && !raftHB {
				t.Errorf("IsHeartbeat accepts %s, which raft answers in its main loop", describeRequest(req))
			}
			// What Carried accepts fits the limits the decoder applies.
			if Carried(&req) {
				if len(req.Entries) > maxCarriedEntries || entryBytes(req.Entries) > MaxCarriedEntryBytes {
					t.Errorf("Carried accepts %s, over the decoder's limits", describeRequest(req))
				}
				body := encodeRequests(hbRequest{call: 1, req: req})[5:]
				if _, err := decodeRequests(body, nil, true); err != nil {
					t.Errorf("Carried accepts %s, which the receiver refuses: %v", describeRequest(req), err)
				}
			}
		})
	}
}

// encodeRequests encodes a request frame as HeartbeatChannelFlags carries it.
func encodeRequests(reqs ...hbRequest) []byte { return encodeRequestsOn(true, reqs...) }

// encodeRequestsOn encodes a request frame for the channel with or without
// flags.
func encodeRequestsOn(flags bool, reqs ...hbRequest) []byte {
	b := beginFrame(nil, frameRequests, len(reqs))
	for i := range reqs {
		b = appendRequest(b, &reqs[i], flags)
	}
	return finishFrame(b)
}

func encodeResponses(resps ...hbResponse) []byte { return encodeResponsesOn(true, resps...) }

func encodeResponsesOn(flags bool, resps ...hbResponse) []byte {
	b := beginFrame(nil, frameResponses, len(resps))
	for i := range resps {
		b = appendResponse(b, &resps[i], flags)
	}
	return finishFrame(b)
}

// frameBody checks frame's length prefix and kind with readFrame and
// returns its body (a copy the caller may scribble on).
func frameBody(t testing.TB, frame []byte, wantKind byte) []byte {
	t.Helper()
	kind, body, _, err := readFrame(bufio.NewReader(bytes.NewReader(frame)), nil)
	if err != nil {
		t.Fatalf("readFrame: %v", err)
	}
	if kind != wantKind {
		t.Fatalf("frame kind %d, want %d", kind, wantKind)
	}
	if len(body) != len(frame)-5 {
		t.Fatalf("body of %d bytes, frame of %d", len(body), len(frame))
	}
	return body
}

// scribble overwrites b, so a decoded value aliasing the frame buffer
// (which serve and read reuse for the next frame) shows.
func scribble(b []byte) {
	for i := range b {
		b[i] = 0xa5
	}
}

// fullRequest is a request with every field set to a distinct value, found
// by reflection (a field raft adds is set too), with one entry whose every
// field is set.
func fullRequest(t *testing.T) raft.AppendEntriesRequest {
	t.Helper()
	var req raft.AppendEntriesRequest
	seed := 100
	fillAll(t, reflect.ValueOf(&req).Elem(), &seed)
	if len(req.Entries) != 1 {
		t.Fatalf("fillAll set %d entries, want 1", len(req.Entries))
	}
	logV := reflect.ValueOf(req.Entries[0]).Elem()
	for i := range logV.NumField() {
		if logV.Field(i).IsZero() {
			t.Fatalf("fillAll left entry field %s zero", logV.Type().Field(i).Name)
		}
	}
	if !Carried(&req) {
		t.Fatalf("Carried(%s) = false", describeRequest(req))
	}
	return req
}

// short shows b, or its start and length if it is long.
func short(b []byte) string {
	if len(b) <= 16 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%q...(%d bytes)", b[:16], len(b))
}

func describeEntry(e *raft.Log) string {
	if e == nil {
		return "nil"
	}
	return fmt.Sprintf("{Index:%d Term:%d Type:%d Data:%s Extensions:%s AppendedAt:%v}",
		e.Index, e.Term, e.Type, short(e.Data), short(e.Extensions), e.AppendedAt)
}

// describeRequest shows r with its entries (not their addresses), long
// byte strings cut short.
func describeRequest(r raft.AppendEntriesRequest) string {
	entries := r.Entries
	r.Entries = nil
	var b strings.Builder
	fmt.Fprintf(&b, "%+v with %d entries [", r, len(entries))
	for i, e := range entries {
		if i == 3 && len(entries) > 4 {
			fmt.Fprintf(&b, " ...%d more", len(entries)-3)
			break
		}
		b.WriteString(" " + describeEntry(e))
	}
	b.WriteString(" ]")
	return b.String()
}

// requestDiff describes how got differs from want, or is empty: every field
// is compared with reflect.DeepEqual, except the entries' AppendedAt, which
// is compared with time.Equal (the wire carries the instant, not the zone
// or the monotonic clock reading), and must be zero exactly when want's is.
func requestDiff(got, want raft.AppendEntriesRequest) string {
	g, w := got, want
	g.Entries, w.Entries = nil, nil
	if !reflect.DeepEqual(g, w) {
		return fmt.Sprintf("got  %s\nwant %s", describeRequest(got), describeRequest(want))
	}
	if (got.Entries == nil) != (want.Entries == nil) || len(got.Entries) != len(want.Entries) {
		return fmt.Sprintf("%d entries (nil %v), want %d (nil %v)", len(got.Entries), got.Entries == nil, len(want.Entries), want.Entries == nil)
	}
	for i, ge := range got.Entries {
		we := want.Entries[i]
		if ge == nil || we == nil {
			if ge != we {
				return fmt.Sprintf("entry %d: %s, want %s", i, describeEntry(ge), describeEntry(we))
			}
			continue
		}
		gc, wc := *ge, *we
		gc.AppendedAt, wc.AppendedAt = time.Time{}, time.Time{}
		if !reflect.DeepEqual(gc, wc) || !ge.AppendedAt.Equal(we.AppendedAt) || ge.AppendedAt.IsZero() != we.AppendedAt.IsZero() {
			return fmt.Sprintf("entry %d of %d: %s, want %s", i, len(got.Entries), describeEntry(ge), describeEntry(we))
		}
	}
	return ""
}

// requestsDiff compares decoded request items with what was encoded.
func requestsDiff(got, want []hbRequest) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d requests, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].call != want[i].call || got[i].partition != want[i].partition {
			return fmt.Sprintf("request %d: call %d partition %d, want call %d partition %d",
				i, got[i].call, got[i].partition, want[i].call, want[i].partition)
		}
		if d := requestDiff(got[i].req, want[i].req); d != "" {
			return fmt.Sprintf("request %d (call %d): %s", i, got[i].call, d)
		}
	}
	return ""
}

// cloneRequest copies r deeply: its byte slices and entries are its own.
func cloneRequest(r raft.AppendEntriesRequest) raft.AppendEntriesRequest {
	r.ID, r.Addr, r.Leader = bytes.Clone(r.ID), bytes.Clone(r.Addr), bytes.Clone(r.Leader)
	if r.Entries != nil {
		entries := make([]*raft.Log, len(r.Entries))
		for i, e := range r.Entries {
			if e != nil {
				c := *e
				c.Data, c.Extensions = bytes.Clone(e.Data), bytes.Clone(e.Extensions)
				entries[i] = &c
			}
		}
		r.Entries = entries
	}
	return r
}

// appendedAtCases are times an entry may carry, each with what it must
// decode to (time.Equal): the wire keeps every instant UnixNano holds.
var appendedAtCases = []time.Time{
	{},              // zero: stays zero
	time.Unix(0, 0), // the epoch is no zero time
	time.Unix(0, 1), // one nanosecond
	time.Unix(-1, 999_999_999),
	time.Unix(1_700_000_000, 123_456_789),
	time.Unix(1_700_000_000, 123_456_789).In(time.FixedZone("UTC-3", -3*3600)),
	time.Date(2262, 4, 11, 23, 47, 16, 854_775_807, time.UTC), // the last UnixNano
	time.Unix(0, math.MaxInt64),
	time.Unix(0, math.MinInt64),
}

func TestHeartbeatRequestRoundTrip(t *testing.T) {
	full := hbRequest{call: 1, partition: 2, req: fullRequest(t)}
	// Each field set alone, so one the codec drops shows by name: the
	// request's fields, and each field of one entry.
	var single []hbRequest
	v := reflect.ValueOf(full.req)
	for i := range v.NumField() {
		r := hbRequest{call: uint64(i), partition: uint32(i)}
		reflect.ValueOf(&r.req).Elem().Field(i).Set(v.Field(i))
		if r.req.Term == 0 {
			r.req.Term = 1
		}
		single = append(single, r)
	}
	logV := reflect.ValueOf(*full.req.Entries[0])
	for i := range logV.NumField() {
		var e raft.Log
		reflect.ValueOf(&e).Elem().Field(i).Set(logV.Field(i))
		single = append(single, hbRequest{call: uint64(100 + i), partition: uint32(100 + i),
			req: raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{&e}}})
	}

	long := strings.Repeat("x", maxFieldLen)
	limitHeader := raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: math.MaxInt, ID: []byte(long), Addr: []byte(long)},
		Term:              math.MaxUint64,
		PrevLogEntry:      math.MaxUint64,
		PrevLogTerm:       math.MaxUint64,
		LeaderCommitIndex: math.MaxUint64,
		Leader:            []byte(long),
	}
	// The largest append carried: every number at its maximum, 1024
	// entries, MaxCarriedEntryBytes of data and extensions, every byte value.
	maxEntries := sizedEntries(maxCarriedEntries, MaxCarriedEntryBytes)
	for i, e := range maxEntries {
		e.Index, e.Term = math.MaxUint64-uint64(i), math.MaxUint64
		e.Type = raft.LogType(i)
		for j := range e.Data {
			e.Data[j] = byte(i + j)
		}
		e.AppendedAt = appendedAtCases[i%len(appendedAtCases)]
	}
	maxAppend := limitHeader
	maxAppend.Entries = maxEntries
	if !Carried(&maxAppend) {
		t.Fatalf("the largest append is not Carried")
	}
	var timed []*raft.Log
	for i, at := range appendedAtCases {
		timed = append(timed, &raft.Log{Index: uint64(i), Term: 3, Type: raft.LogCommand, Data: []byte{byte(i)}, AppendedAt: at})
	}
	now := time.Now() // with a monotonic reading, which the wire drops

	tests := []struct {
		name string
		reqs []hbRequest
		want []hbRequest // nil: reqs
	}{
		{"every field set", []hbRequest{full}, nil},
		{"each field alone", single, nil},
		{"limits", []hbRequest{{call: math.MaxUint64, partition: math.MaxUint32, req: limitHeader}}, nil},
		{"limits with entries", []hbRequest{{call: math.MaxUint64, partition: math.MaxUint32, req: maxAppend}}, nil},
		{"one entry of all the bytes", []hbRequest{{call: 6, req: raft.AppendEntriesRequest{Term: 2, Entries: []*raft.Log{
			{Index: 1, Term: 2, Data: bytes.Repeat([]byte{0xff}, MaxCarriedEntryBytes)}}}}}, nil},
		{"one entry of all the extensions", []hbRequest{{call: 7, req: raft.AppendEntriesRequest{Term: 2, Entries: []*raft.Log{
			{Index: 1, Term: 2, Extensions: bytes.Repeat([]byte{0}, MaxCarriedEntryBytes)}}}}}, nil},
		{"appended-at times", []hbRequest{{call: 8, partition: 8, req: raft.AppendEntriesRequest{Term: 3, Entries: timed}}}, nil},
		{"appended now", []hbRequest{{call: 9, req: raft.AppendEntriesRequest{Term: 3, Entries: []*raft.Log{
			{Index: 5, Term: 3, Data: []byte("put"), AppendedAt: now}}}}}, nil},
		{"every entry type", func() []hbRequest {
			var entries []*raft.Log
			for typ := range 256 {
				entries = append(entries, &raft.Log{Index: uint64(typ), Term: 1, Type: raft.LogType(typ)})
			}
			return []hbRequest{{call: 10, req: raft.AppendEntriesRequest{Term: 1, Entries: entries}}}
		}(), nil},
		// An empty slice and an empty byte string arrive as nil.
		{"empty entries slice", []hbRequest{{call: 11, req: raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{}}}},
			[]hbRequest{{call: 11, req: raft.AppendEntriesRequest{Term: 1}}}},
		{"empty data and extensions", []hbRequest{{call: 12, req: raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{
			{Index: 1, Data: []byte{}, Extensions: []byte{}}}}}},
			[]hbRequest{{call: 12, req: raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{{Index: 1}}}}}},
		{"values one varint byte can not hold", []hbRequest{{call: 128, partition: 128, req: raft.AppendEntriesRequest{
			Term: 128, PrevLogEntry: 1 << 7, PrevLogTerm: 1<<14 - 1, LeaderCommitIndex: 1 << 14,
			Entries: []*raft.Log{{Index: 128, Term: 1<<14 - 1, Type: 128, Data: make([]byte, 128), Extensions: make([]byte, 1<<14)}},
		}}}, nil},
		{"negative protocol version", []hbRequest{{call: 3, req: raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: -1}, Term: 1, Leader: []byte("l"),
		}}}, nil},
		{"empty header", []hbRequest{{call: 4, partition: 9, req: raft.AppendEntriesRequest{Term: 1, Leader: []byte("l")}}}, nil},
		{"empty append", []hbRequest{{call: 5, partition: 10, req: raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n"), Addr: []byte("a")},
			Term:      7, PrevLogEntry: 100, PrevLogTerm: 6, LeaderCommitIndex: 99,
		}}}, nil},
		{"several", func() []hbRequest {
			var rs []hbRequest
			for i := range 50 {
				r := hbRequest{call: uint64(1000 + i), partition: uint32(i * 37)}
				r.req = validHeartbeat()
				r.req.Term = uint64(i + 1)
				r.req.ID = fmt.Appendf(nil, "node-%d", i)
				if i%2 == 1 {
					r.req.PrevLogEntry, r.req.PrevLogTerm, r.req.LeaderCommitIndex = uint64(i*1000), uint64(i), uint64(i*999)
				}
				if i%3 == 1 {
					r.req.Entries = sizedEntries(i, i*100)
					r.req.Entries[0].AppendedAt = now.Add(time.Duration(i))
				}
				rs = append(rs, r)
			}
			return rs
		}(), nil},
		{"max batch", slices.Repeat([]hbRequest{full}, maxBatchItems), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == nil {
				want = tt.reqs
			}
			body := frameBody(t, encodeRequests(tt.reqs...), frameRequests)
			got, err := decodeRequests(body, nil, true)
			if err != nil {
				t.Fatalf("decodeRequests: %v", err)
			}
			scribble(body)
			if d := requestsDiff(got, want); d != "" {
				t.Fatalf("round trip changed the requests: %s", d)
			}
		})
	}

	// The output slice is reused, not appended to.
	body := frameBody(t, encodeRequests(full), frameRequests)
	out := make([]hbRequest, 5, 10)
	got, err := decodeRequests(body, out, true)
	if err != nil || len(got) != 1 {
		t.Fatalf("decodeRequests into a used slice = %d requests, %v; want just %s", len(got), err, describeRequest(full.req))
	}
	if d := requestsDiff(got, []hbRequest{full}); d != "" {
		t.Fatalf("decodeRequests into a used slice: %s", d)
	}
}

// TestHeartbeatFrameCutFitsMaxFrameLen: the writer adds requests to a frame
// while their estimated size (requestSize) is under frameTarget, so a frame
// holds requests estimated under frameTarget plus one more. Even of the
// worst requests Carried accepts, such a frame stays under maxFrameLen,
// which the receiver enforces.
func TestHeartbeatFrameCutFitsMaxFrameLen(t *testing.T) {
	long := []byte(strings.Repeat("x", maxFieldLen))
	worstHB := hbRequest{call: math.MaxUint64, partition: math.MaxUint32, req: raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: -1, ID: long, Addr: long},
		Term:      math.MaxUint64, PrevLogEntry: math.MaxUint64, PrevLogTerm: math.MaxUint64, LeaderCommitIndex: math.MaxUint64,
		Leader: long,
	}}
	worstAppend := worstHB
	worstAppend.req.Entries = sizedEntries(maxCarriedEntries, MaxCarriedEntryBytes)
	for _, e := range worstAppend.req.Entries {
		e.Index, e.Term, e.AppendedAt = math.MaxUint64, math.MaxUint64, time.Unix(0, math.MinInt64)
	}
	bigData := worstHB
	bigData.req.Entries = []*raft.Log{{Index: math.MaxUint64, Term: math.MaxUint64, Data: make([]byte, MaxCarriedEntryBytes), AppendedAt: time.Unix(0, math.MaxInt64)}}
	if !Carried(&worstAppend.req) || !Carried(&bigData.req) {
		t.Fatal("the worst appends are not Carried")
	}

	maxUnder, maxItem := 0, 0
	for _, r := range []hbRequest{worstHB, worstAppend, bigData, {call: 1, req: raft.AppendEntriesRequest{Term: 1}}} {
		enc, est := len(appendRequest(nil, &r, true)), requestSize(&r)
		t.Logf("request with %d entries: %d bytes, estimated %d", len(r.req.Entries), enc, est)
		maxUnder, maxItem = max(maxUnder, enc-est), max(maxItem, enc)
		if est <= 0 || enc > 2*est || est > 2*enc+64 {
			t.Errorf("requestSize of a request of %d bytes (%d entries) is %d: not about its size", enc, len(r.req.Entries), est)
		}
	}
	// At most maxBatchItems requests, each under-estimated by at most
	// maxUnder, estimated under frameTarget before the last.
	worst := 5 + binary.MaxVarintLen64 + frameTarget + maxBatchItems*maxUnder + maxItem
	if worst > maxFrameLen {
		t.Fatalf("a frame cut at frameTarget %d may take %d bytes, over maxFrameLen %d", frameTarget, worst, maxFrameLen)
	}
	t.Logf("worst frame %d bytes of %d", worst, maxFrameLen)
}

func TestHeartbeatResponseRoundTrip(t *testing.T) {
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("node-b"), Addr: []byte("10.0.0.2:7000")}
	var full hbResponse
	full.call = 77
	seed := 200
	fillAll(t, reflect.ValueOf(&full.resp).Elem(), &seed) // every field of the response, bools true

	var flags []hbResponse
	for i, success := range []bool{false, true} {
		for j, noBackoff := range []bool{false, true} {
			flags = append(flags, hbResponse{call: uint64(10 + 2*i + j), resp: raft.AppendEntriesResponse{
				RPCHeader: header, Term: 5, LastLog: 1 << 40, Success: success, NoRetryBackoff: noBackoff,
			}})
		}
	}
	long := strings.Repeat("e", maxFieldLen+100)

	tests := []struct {
		name  string
		resps []hbResponse
		want  []hbResponse // nil: resps
	}{
		{"every field set", []hbResponse{full}, nil},
		{"success and backoff flags", flags, nil},
		{"zero answer", []hbResponse{{call: 1}}, nil},
		{"limits", []hbResponse{{call: math.MaxUint64, resp: raft.AppendEntriesResponse{
			RPCHeader: raft.RPCHeader{ProtocolVersion: math.MinInt, ID: []byte(long[:maxFieldLen]), Addr: []byte(long[:maxFieldLen])},
			Term:      math.MaxUint64, LastLog: math.MaxUint64, Success: true, NoRetryBackoff: true,
		}}}, nil},
		{"error", []hbResponse{{call: 3, err: "partition 3 has no replica on this node"}}, nil},
		{"error truncated to the field limit",
			[]hbResponse{{call: 4, err: long}},
			[]hbResponse{{call: 4, err: long[:maxFieldLen]}}},
		{"mixed", []hbResponse{flags[3], {call: 99, err: "boom"}, full, {call: 0, err: "x"}}, nil},
		{"max batch", slices.Repeat([]hbResponse{full, {call: 1, err: "no"}}, maxBatchItems/2), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == nil {
				want = tt.resps
			}
			body := frameBody(t, encodeResponses(tt.resps...), frameResponses)
			got, err := decodeResponses(body, nil, true)
			if err != nil {
				t.Fatalf("decodeResponses: %v", err)
			}
			scribble(body)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip changed the responses:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// frameBuilder writes raw frame bodies field by field, for malformed input.
type frameBuilder []byte

func (b frameBuilder) uv(v uint64) frameBuilder  { return binary.AppendUvarint(b, v) }
func (b frameBuilder) raw(s string) frameBuilder { return append(b, s...) }
func (b frameBuilder) field(s string) frameBuilder {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// entry appends a valid entry: index 8, term 9, type 1, data, extensions
// and a zero appended-at time.
func (b frameBuilder) entry(data, ext string) frameBuilder {
	return b.uv(8).uv(9).raw("\x01").field(data).field(ext).raw("\x00")
}

// entryAt is entry with an appended-at time of nanos Unix nanoseconds.
func (b frameBuilder) entryAt(data, ext string, nanos int64) frameBuilder {
	return binary.AppendVarint(b.uv(8).uv(9).raw("\x01").field(data).field(ext).raw("\x01"), nanos)
}

// reqItem is a valid request item: call 1, partition 2, version 3, ID,
// Addr, term 4, previous log index 5 and term 6, commit index 7, Leader and
// no entries.
func reqItem(b frameBuilder) frameBuilder { return reqItemWith(b, "id", "addr", "leader") }

func reqItemWith(b frameBuilder, id, addr, leader string) frameBuilder {
	return reqHeadWith(b, id, addr, leader).uv(0)
}

// reqHead is reqItem up to (without) its entry count.
func reqHead(b frameBuilder) frameBuilder { return reqHeadWith(b, "id", "addr", "leader") }

func reqHeadWith(b frameBuilder, id, addr, leader string) frameBuilder {
	return b.uv(1).uv(2).uv(3).field(id).field(addr).uv(4).uv(5).uv(6).uv(7).field(leader)
}

// okItemNoFlags is a valid OK response item without its flags byte.
func okItemNoFlags(b frameBuilder) frameBuilder {
	return b.uv(1).raw("\x00").uv(3).field("id").field("addr").uv(4).uv(5)
}

type decodeFunc func([]byte) error

var (
	decodeReqs  decodeFunc = func(b []byte) error { _, err := decodeRequests(b, nil, false); return err }
	decodeResps decodeFunc = func(b []byte) error { _, err := decodeResponses(b, nil, false); return err }
	// The same on HeartbeatChannelFlags.
	decodeReqsF  decodeFunc = func(b []byte) error { _, err := decodeRequests(b, nil, true); return err }
	decodeRespsF decodeFunc = func(b []byte) error { _, err := decodeResponses(b, nil, true); return err }
)

func TestHeartbeatFrameMalformed(t *testing.T) {
	long := strings.Repeat("z", maxFieldLen+1)
	manyReqs := frameBuilder{}.uv(maxBatchItems + 1)
	manyResps := frameBuilder{}.uv(maxBatchItems + 1)
	for range maxBatchItems + 1 {
		manyReqs = reqItem(manyReqs)
		manyResps = manyResps.uv(1).raw("\x01").field("e")
	}
	// One request with n entries of one data byte each (all valid).
	nEntries := func(n int) frameBuilder {
		b := reqHead(frameBuilder{}.uv(1)).uv(uint64(n))
		for range n {
			b = b.entry("d", "")
		}
		return b
	}
	// One request whose entries are given.
	withEntries := func(n uint64) frameBuilder { return reqHead(frameBuilder{}.uv(1)).uv(n) }
	full, half := strings.Repeat("d", MaxCarriedEntryBytes), strings.Repeat("h", MaxCarriedEntryBytes/2)
	over := full + "!"
	tests := []struct {
		name   string
		decode decodeFunc
		body   []byte
	}{
		{"requests: empty body", decodeReqs, nil},
		{"requests: zero items", decodeReqs, frameBuilder{}.uv(0)},
		{"requests: over maxBatchItems", decodeReqs, manyReqs},
		{"requests: huge count", decodeReqs, frameBuilder{}.uv(math.MaxUint64)},
		{"requests: fewer items than counted", decodeReqs, reqItem(frameBuilder{}.uv(2))},
		{"requests: id over maxFieldLen", decodeReqs, reqItemWith(frameBuilder{}.uv(1), long, "a", "l")},
		{"requests: addr over maxFieldLen", decodeReqs, reqItemWith(frameBuilder{}.uv(1), "i", long, "l")},
		{"requests: leader over maxFieldLen", decodeReqs, reqItemWith(frameBuilder{}.uv(1), "i", "a", long)},
		{"requests: previous log index overflows", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(2).uv(3).field("i").field("a").uv(4).raw(strings.Repeat("\xff", 9) + "\x02").uv(6).uv(7).field("l").uv(0)},
		{"requests: commit index of 11 bytes", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(2).uv(3).field("i").field("a").uv(4).uv(5).uv(6).raw(strings.Repeat("\x80", 10) + "\x01").field("l").uv(0)},
		{"requests: leader missing", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(2).uv(3).field("i").field("a").uv(4).uv(5).uv(6).uv(7)},
		{"requests: field length beyond the frame", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(2).uv(3).uv(10).raw("short")},
		{"requests: huge field length", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(2).uv(3).uv(math.MaxUint64)},
		{"requests: partition over 32 bits", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(1 << 32).uv(3).field("i").field("a").uv(4).uv(5).uv(6).uv(7).field("l").uv(0)},
		{"requests: varint overflow", decodeReqs, frameBuilder{}.uv(1).raw(strings.Repeat("\xff", 10) + "\x01")},
		{"requests: trailing bytes", decodeReqs, reqItem(frameBuilder{}.uv(1)).raw("\x00")},

		// Entries.
		{"requests: entry count missing", decodeReqs, reqHead(frameBuilder{}.uv(1))},
		{"requests: entry count missing in the second item", decodeReqs, reqHead(reqItem(frameBuilder{}.uv(2)))},
		{"requests: 1025 entries", decodeReqs, nEntries(maxCarriedEntries + 1)},
		{"requests: 1025 entries counted, none given", decodeReqs, withEntries(maxCarriedEntries + 1)},
		{"requests: huge entry count", decodeReqs, withEntries(math.MaxUint64)},
		{"requests: entry count of 11 bytes", decodeReqs, reqHead(frameBuilder{}.uv(1)).raw(strings.Repeat("\x80", 10) + "\x01")},
		{"requests: non-minimal entry count", decodeReqs, reqHead(frameBuilder{}.uv(1)).raw("\x81\x00").entry("d", "e")},
		{"requests: non-minimal zero entry count", decodeReqs, reqHead(frameBuilder{}.uv(1)).raw("\x80\x00")},
		{"requests: fewer entries than counted", decodeReqs, withEntries(2).entry("d", "e")},
		{"requests: entries of the second item over the count limit", decodeReqs, func() frameBuilder {
			b := reqHead(reqItem(frameBuilder{}.uv(2))).uv(maxCarriedEntries + 1)
			for range maxCarriedEntries + 1 {
				b = b.entry("", "")
			}
			return b
		}()},
		{"requests: entry data over the limit", decodeReqs, withEntries(1).entry(over, "")},
		{"requests: entry extensions over the limit", decodeReqs, withEntries(1).entry("", over)},
		{"requests: entry data and extensions both at the limit", decodeReqs, withEntries(1).entry(full, full)},
		{"requests: entry data and extensions one byte over", decodeReqs, withEntries(1).entry(half, half+"!")},
		{"requests: entries one byte over", decodeReqs, withEntries(3).entry(half, "").entry("", half).entry("!", "")},
		{"requests: entries one byte over, then more", decodeReqs, withEntries(4).entry(half, "").entry("", half).entry("!", "").entry("", "")},
		{"requests: 65 entries of 1 KiB", decodeReqs, func() frameBuilder {
			b := withEntries(65)
			for range 65 {
				b = b.entry(strings.Repeat("k", 1024), "")
			}
			return b
		}()},
		{"requests: entry data length beyond the frame", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").uv(10).raw("short")},
		{"requests: huge entry data length", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").uv(math.MaxUint64)},
		{"requests: entry index overflows", decodeReqs, withEntries(1).raw(strings.Repeat("\xff", 9) + "\x02").uv(9).raw("\x01").field("").field("").raw("\x00")},
		{"requests: non-minimal entry index", decodeReqs, withEntries(1).raw("\x88\x00").uv(9).raw("\x01").field("").field("").raw("\x00")},
		{"requests: non-minimal entry term", decodeReqs, withEntries(1).uv(8).raw("\x89\x80\x00").raw("\x01").field("").field("").raw("\x00")},
		{"requests: non-minimal entry data length", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").raw("\x81\x00d").field("").raw("\x00")},
		{"requests: entry type missing", decodeReqs, withEntries(1).uv(8).uv(9)},
		{"requests: time flag missing", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").field("d").field("e")},
		{"requests: time flag 2", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").field("d").field("e").raw("\x02")},
		{"requests: time flag 0xff", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").field("d").field("e").raw("\xff")},
		{"requests: time flag 0x80 with a time", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").field("d").field("e").raw("\x80\x02")},
		{"requests: time flag 2 in the second entry", decodeReqs, withEntries(2).entryAt("d", "", 5).uv(8).uv(9).raw("\x01").field("").field("").raw("\x02")},
		{"requests: time missing", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").field("d").field("e").raw("\x01")},
		{"requests: time of 11 bytes", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").field("d").field("e").raw("\x01" + strings.Repeat("\x80", 10) + "\x01")},
		{"requests: time overflows", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").field("d").field("e").raw("\x01" + strings.Repeat("\xff", 9) + "\x02")},
		{"requests: non-minimal time", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").field("d").field("e").raw("\x01\x81\x00")},
		{"requests: non-minimal zero time", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").field("d").field("e").raw("\x01\x80\x00")},
		{"requests: time padded to ten bytes", decodeReqs, withEntries(1).uv(8).uv(9).raw("\x01").field("d").field("e").raw("\x01" + strings.Repeat("\x80", 9) + "\x00")},
		{"requests: time flag 0 followed by a time", decodeReqs, withEntries(1).entry("d", "e").raw("\x02")},
		{"requests: entry count 0 followed by an entry", decodeReqs, withEntries(0).entry("d", "e")},
		{"requests: trailing bytes after entries", decodeReqs, withEntries(2).entry("d", "e").entryAt("", "", -1).raw("\x00")},

		{"responses: empty body", decodeResps, nil},
		{"responses: zero items", decodeResps, frameBuilder{}.uv(0)},
		{"responses: over maxBatchItems", decodeResps, manyResps},
		{"responses: unknown status", decodeResps, frameBuilder{}.uv(1).uv(1).raw("\x02").field("e")},
		{"responses: status 0xff", decodeResps, frameBuilder{}.uv(1).uv(1).raw("\xff")},
		{"responses: missing status", decodeResps, frameBuilder{}.uv(1).uv(1)},
		{"responses: missing flags", decodeResps, okItemNoFlags(frameBuilder{}.uv(1))},
		{"responses: unknown flag 0x04", decodeResps, okItemNoFlags(frameBuilder{}.uv(1)).raw("\x04")},
		{"responses: unknown flag 0x80", decodeResps, okItemNoFlags(frameBuilder{}.uv(1)).raw("\x83")},
		{"responses: id over maxFieldLen", decodeResps, frameBuilder{}.uv(1).uv(1).raw("\x00").uv(3).field(long).field("a").uv(4).uv(5).raw("\x01")},
		{"responses: error over maxFieldLen", decodeResps, frameBuilder{}.uv(1).uv(1).raw("\x01").field(long)},
		{"responses: empty error message", decodeResps, frameBuilder{}.uv(1).uv(1).raw("\x01").field("")},
		{"responses: error message missing", decodeResps, frameBuilder{}.uv(1).uv(1).raw("\x01")},
		{"responses: trailing bytes", decodeResps, okItemNoFlags(frameBuilder{}.uv(1)).raw("\x01\x00")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode(tt.body)
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("decode: %v, want an error wrapping ErrBadFrame", err)
			}
		})
	}

	// The bodies above that are valid once fixed really are: the table tests
	// the fault, not a typo in the builder.
	valid := []struct {
		name string
		body frameBuilder
	}{
		{"request", reqItem(frameBuilder{}.uv(1))},
		{"two requests", reqItem(reqItem(frameBuilder{}.uv(2)))},
		{"fields at the limit", func() frameBuilder {
			at := strings.Repeat("y", maxFieldLen)
			return reqItemWith(frameBuilder{}.uv(1), at, at, at)
		}()},
		{"largest partition and previous log index", frameBuilder{}.uv(1).uv(1).uv(1<<32 - 1).uv(3).field("i").field("a").uv(4).uv(math.MaxUint64).uv(6).uv(7).field("l").uv(0)},
		{"1024 entries", nEntries(maxCarriedEntries)},
		{"1024 entries, in the second item", func() frameBuilder {
			b := reqHead(reqItem(frameBuilder{}.uv(2))).uv(maxCarriedEntries)
			for range maxCarriedEntries {
				b = b.entry("", "")
			}
			return b
		}()},
		{"entry data at the limit", withEntries(1).entry(full, "")},
		{"entry extensions at the limit", withEntries(1).entry("", full)},
		{"entry data and extensions at the limit", withEntries(1).entry(half, half)},
		{"entries at the limit", withEntries(3).entry(half, "").entry("", half).entry("", "")},
		{"64 entries of 1 KiB", func() frameBuilder {
			b := withEntries(64)
			for range 64 {
				b = b.entry(strings.Repeat("k", 1024), "")
			}
			return b
		}()},
		{"times", withEntries(6).entry("d", "e").entryAt("", "", 0).entryAt("", "", -1).entryAt("", "", math.MaxInt64).entryAt("", "", math.MinInt64).entryAt("", "", 1<<40)},
		{"entry type 0xff", withEntries(1).uv(8).uv(9).raw("\xff").field("d").field("e").raw("\x00")},
	}
	for _, v := range valid {
		if err := decodeReqs(v.body); err != nil {
			t.Errorf("valid request body (%s): %v", v.name, err)
		}
	}
	if err := decodeResps(okItemNoFlags(frameBuilder{}.uv(1)).raw("\x03")); err != nil {
		t.Fatalf("valid response body: %v", err)
	}
	if err := decodeResps(frameBuilder{}.uv(1).uv(1).raw("\x01").field("e")); err != nil {
		t.Fatalf("one-byte error message: %v", err)
	}
}

func TestHeartbeatFrameTruncated(t *testing.T) {
	req := hbRequest{call: 300, partition: 70000, req: validHeartbeat()}
	empty := hbRequest{call: 1, req: raft.AppendEntriesRequest{Term: 1, Leader: []byte("l")}}
	appendReq := hbRequest{call: 1 << 20, partition: 3, req: raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("a"), Addr: []byte("a:1")},
		Term:      9, PrevLogEntry: 1 << 33, PrevLogTerm: 8, LeaderCommitIndex: 1<<33 + 1,
	}}
	withEntries := appendReq
	withEntries.call++
	withEntries.req.Entries = []*raft.Log{
		{Index: 1<<33 + 1, Term: 9, Type: raft.LogCommand, Data: []byte("put k v"), Extensions: []byte("x"), AppendedAt: time.Unix(1_700_000_000, 5)},
		{Index: 1<<33 + 2, Term: 9, Type: raft.LogNoop},
		{Index: 1<<33 + 3, Term: 9, Type: raft.LogConfiguration, Data: make([]byte, 300), AppendedAt: time.Unix(-5, 0)},
	}
	ok := hbResponse{call: 301, resp: raft.AppendEntriesResponse{
		RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("b"), Addr: []byte("b:1")}, Term: 9, LastLog: 300, Success: true,
	}}
	tests := []struct {
		name   string
		decode decodeFunc
		frame  []byte
	}{
		{"requests", decodeReqs, encodeRequestsOn(false, req, empty, appendReq, req)},
		{"requests with entries", decodeReqs, encodeRequestsOn(false, req, withEntries, empty, withEntries)},
		{"request with entries last", decodeReqs, encodeRequestsOn(false, withEntries)},
		{"responses", decodeResps, encodeResponsesOn(false, ok, hbResponse{call: 2, err: "boom"}, ok, hbResponse{call: 3})},
		{"requests with flags", decodeReqsF, encodeRequests(req, empty, appendReq, req)},
		{"request with entries last, with flags", decodeReqsF, encodeRequests(withEntries)},
		{"responses with flags", decodeRespsF, encodeResponses(ok, hbResponse{call: 2, err: "boom"}, ok, hbResponse{call: 3})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.frame[5:]
			if err := tt.decode(body); err != nil {
				t.Fatalf("whole body: %v", err)
			}
			for n := range len(body) {
				if err := tt.decode(body[:n]); !errors.Is(err, ErrBadFrame) {
					t.Fatalf("body cut to %d of %d bytes: %v, want ErrBadFrame", n, len(body), err)
				}
			}
			// A frame cut short on the wire is an I/O error, not a bad frame.
			for n := range len(tt.frame) {
				_, _, _, err := readFrame(bufio.NewReader(bytes.NewReader(tt.frame[:n])), nil)
				want := io.ErrUnexpectedEOF
				if n == 0 {
					want = io.EOF
				}
				if !errors.Is(err, want) {
					t.Fatalf("frame cut to %d of %d bytes: readFrame: %v, want %v", n, len(tt.frame), err, want)
				}
			}
		})
	}
}

func TestReadFrame(t *testing.T) {
	t.Run("consecutive frames", func(t *testing.T) {
		a := encodeRequests(hbRequest{call: 1, req: validHeartbeat()})
		b := encodeResponses(hbResponse{call: 1, err: "short"})
		c := encodeRequests(hbRequest{call: 2, partition: 5, req: validHeartbeat()}, hbRequest{call: 3, req: validHeartbeat()})
		r := bufio.NewReader(bytes.NewReader(slices.Concat(a, b, c)))
		var buf []byte
		for i, want := range [][]byte{a, b, c} {
			kind, body, nbuf, err := readFrame(r, buf)
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if kind != want[4] || !bytes.Equal(body, want[5:]) {
				t.Fatalf("frame %d: kind %d body %x, want kind %d body %x", i, kind, body, want[4], want[5:])
			}
			buf = nbuf
		}
		if _, _, _, err := readFrame(r, buf); !errors.Is(err, io.EOF) {
			t.Fatalf("after the last frame: %v, want io.EOF", err)
		}
	})

	tests := []struct {
		name string
		in   string
	}{
		{"length zero", "\x00\x00\x00\x00\x01"},
		{"length over maxFrameLen", "\x00\x40\x00\x01\x01"},
		{"length 4GiB", "\xff\xff\xff\xff\x01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Only the header is there: a bad length must be refused before
			// reading (or allocating) the body.
			_, _, buf, err := readFrame(bufio.NewReader(strings.NewReader(tt.in)), nil)
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("readFrame: %v, want ErrBadFrame", err)
			}
			if cap(buf) != 0 {
				t.Fatalf("readFrame allocated %d bytes for a refused frame", cap(buf))
			}
		})
	}
	if binary.BigEndian.Uint32([]byte("\x00\x40\x00\x01")) != maxFrameLen+1 {
		t.Fatal("the over-limit case no longer exceeds maxFrameLen by one")
	}
}

// TestHeartbeatFrameDecodeIsCanonical: every body the decoders accept is
// one the encoders produce, so a decoded frame re-encodes to the same bytes
// (the property FuzzDecodeHeartbeatFrames checks on random input). Bodies
// the encoder never writes fail with ErrBadFrame.
func TestHeartbeatFrameDecodeIsCanonical(t *testing.T) {
	// pad makes the minimal encoding of v one byte longer: the same value,
	// with a continuation bit and a final zero byte.
	pad := func(v uint64) string {
		b := binary.AppendUvarint(nil, v)
		b[len(b)-1] |= 0x80
		return string(append(b, 0))
	}
	// The varint fields of a request item with one entry, in order, with
	// the values req gives the others. A length (or the entry count) is 1:
	// one byte "x" (or the one entry) follows. The entry's time is a
	// zigzag varint: the same bytes as a uvarint.
	fields := []struct {
		name   string
		val    uint64
		length bool // must be 1
	}{
		{"call id", 1, false}, {"partition", 2, false}, {"protocol version", 3, false},
		{"ID length", 1, true}, {"Addr length", 1, true},
		{"term", 4, false}, {"previous log index", 5, false}, {"previous log term", 6, false},
		{"leader commit index", 7, false}, {"Leader length", 1, true},
		{"entry count", 1, true}, {"entry index", 8, false}, {"entry term", 9, false},
		{"entry data length", 1, true}, {"entry extensions length", 1, true}, {"entry time", 10, false},
	}
	// req builds a request body with field i given as raw bytes. The entry's
	// type byte and time flag (1) are fixed.
	req := func(i int, raw string) []byte {
		b := frameBuilder{}.uv(1)
		for j, f := range fields {
			if j == i {
				b = b.raw(raw)
			} else {
				b = b.uv(f.val)
			}
			if f.length && f.name != "entry count" {
				b = b.raw("x")
			}
			switch f.name {
			case "entry term":
				b = b.raw("\x07") // type
			case "entry extensions length":
				b = b.raw("\x01") // time flag
			}
		}
		return b
	}
	partition := 1

	tests := []struct {
		name     string
		reencode func(*testing.T, []byte) ([]byte, bool)
		body     []byte
	}{
		// 0x81 0x00 is 1 in two bytes; the encoder writes 0x01.
		{"requests: non-minimal call id", reencodeRequests, req(0, "\x81\x00")},
		{"requests: non-minimal item count", reencodeRequests, reqItem(frameBuilder{}.raw("\x81\x00"))},
		{"requests: zero padded to ten bytes", reencodeRequests, req(6, strings.Repeat("\x80", 9)+"\x00")},
		{"requests: time zero padded to ten bytes", reencodeRequests, req(len(fields)-1, strings.Repeat("\x80", 9)+"\x00")},
		{"requests: non-minimal zero entry count", reencodeRequests, reqHead(frameBuilder{}.uv(1)).raw("\x80\x00")},
		// The encoder writes a zero time as flag 0 alone, and no other flag.
		{"requests: time flag 0 with a time", reencodeRequests, reqHead(frameBuilder{}.uv(1)).uv(1).entry("d", "").raw("\x00")},
		{"requests: time flag 2", reencodeRequests, reqHead(frameBuilder{}.uv(1)).uv(1).uv(8).uv(9).raw("\x01").field("").field("").raw("\x02\x00")},
		{"requests: entry count 0 with an entry", reencodeRequests, reqHead(frameBuilder{}.uv(1)).uv(0).entry("", "")},
		{"responses: non-minimal term", reencodeResponses, frameBuilder{}.uv(1).uv(1).raw("\x00").uv(3).field("i").field("a").raw("\x84\x80\x00").uv(5).raw("\x01")},
		{"responses: non-minimal call id", reencodeResponses, frameBuilder{}.uv(1).raw("\x81\x00").raw("\x01").field("e")},
		{"responses: non-minimal error length", reencodeResponses, frameBuilder{}.uv(1).uv(1).raw("\x01").raw("\x81\x00e")},
		{"responses: non-minimal last log", reencodeResponses, frameBuilder{}.uv(1).uv(1).raw("\x00").uv(3).field("i").field("a").uv(4).raw(pad(math.MaxUint64 >> 1)).raw("\x01")},
		{"responses: non-minimal item count", reencodeResponses, frameBuilder{}.raw("\x81\x00").uv(1).raw("\x01").field("e")},
		// The encoder never writes an error item with an empty message (an
		// empty err means OK).
		{"responses: empty error message", reencodeResponses, frameBuilder{}.uv(1).uv(1).raw("\x01").field("")},
	}
	for i, f := range fields {
		for _, v := range []uint64{0, 1, 127, 128, 1 << 35, math.MaxUint64 >> 1} {
			if f.length && v != 1 || i == partition && v > math.MaxUint32 {
				continue // a length must match what follows
			}
			tests = append(tests, struct {
				name     string
				reencode func(*testing.T, []byte) ([]byte, bool)
				body     []byte
			}{fmt.Sprintf("requests: %s %d padded", f.name, v), reencodeRequests, req(i, pad(v))})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if re, ok := tt.reencode(t, tt.body); ok {
				t.Fatalf("the decoder accepts body %x, which the encoder never produces (it re-encodes to %x); "+
					"want ErrBadFrame", tt.body, re)
			}
		})
	}

	// The same bodies, minimally encoded, decode and re-encode to themselves:
	// the check refuses padding, not large values.
	for i, f := range fields {
		for _, v := range []uint64{0, 1, 127, 128, 1 << 35, math.MaxUint64} {
			if f.length && v != 1 || i == partition && v > math.MaxUint32 {
				continue
			}
			body := req(i, string(binary.AppendUvarint(nil, v)))
			if re, ok := reencodeRequests(t, body); !ok || !bytes.Equal(re, body) {
				t.Errorf("requests: %s %d: minimal body %x re-encodes to %x, %v", f.name, v, body, re, ok)
			}
		}
	}
	for name, body := range map[string][]byte{
		"no entries":        reqItem(frameBuilder{}.uv(1)),
		"zero time":         reqHead(frameBuilder{}.uv(1)).uv(1).entry("d", "e"),
		"times":             reqHead(frameBuilder{}.uv(1)).uv(5).entryAt("", "", 0).entryAt("", "", -1).entryAt("", "", math.MaxInt64).entryAt("", "", math.MinInt64).entry("", ""),
		"type 0xff":         reqHead(frameBuilder{}.uv(1)).uv(1).uv(8).uv(9).raw("\xff").field("d").field("e").raw("\x00"),
		"data at the limit": reqHead(frameBuilder{}.uv(1)).uv(1).entry(strings.Repeat("d", MaxCarriedEntryBytes), ""),
		"1024 entries": func() []byte {
			b := reqHead(frameBuilder{}.uv(1)).uv(maxCarriedEntries)
			for range maxCarriedEntries {
				b = b.entry("", "")
			}
			return b
		}(),
		"entries in 2 items": reqHead(reqHead(frameBuilder{}.uv(2)).uv(1).entry("a", "b")).uv(2).entryAt("c", "", 7).entry("", "d"),
	} {
		if re, ok := reencodeRequests(t, body); !ok || !bytes.Equal(re, body) {
			t.Errorf("requests: %s: minimal body re-encodes to %x, %v", name, re, ok)
		}
	}
	for _, body := range [][]byte{
		frameBuilder{}.uv(1).uv(1).raw("\x00").uv(3).field("i").field("a").uv(math.MaxUint64).uv(1 << 63).raw("\x03"),
		frameBuilder{}.uv(1).uv(math.MaxUint64).raw("\x01").field(strings.Repeat("e", maxFieldLen)),
		frameBuilder{}.uv(2).uv(1).raw("\x01").field("e").uv(2).raw("\x00").uv(0).uv(0).uv(0).uv(0).uv(0).raw("\x00"),
	} {
		if re, ok := reencodeResponses(t, body); !ok || !bytes.Equal(re, body) {
			t.Errorf("responses: minimal body %x re-encodes to %x, %v", body, re, ok)
		}
	}
}

// reencodeRequests returns the body the encoder produces for what body
// decodes to, or ok false if it does not decode (with ErrBadFrame).
func reencodeRequests(t *testing.T, body []byte) ([]byte, bool) {
	return reencodeRequestsOn(t, body, false)
}

// reencodeRequestsOn is reencodeRequests on the channel with or without flags.
func reencodeRequestsOn(t *testing.T, body []byte, flags bool) ([]byte, bool) {
	reqs, err := decodeRequests(body, nil, flags)
	if err != nil {
		if !errors.Is(err, ErrBadFrame) {
			t.Fatalf("decodeRequests: %v, want nil or ErrBadFrame", err)
		}
		return nil, false
	}
	return encodeRequestsOn(flags, reqs...)[5:], true
}

func reencodeResponses(t *testing.T, body []byte) ([]byte, bool) {
	return reencodeResponsesOn(t, body, false)
}

func reencodeResponsesOn(t *testing.T, body []byte, flags bool) ([]byte, bool) {
	resps, err := decodeResponses(body, nil, flags)
	if err != nil {
		if !errors.Is(err, ErrBadFrame) {
			t.Fatalf("decodeResponses: %v, want nil or ErrBadFrame", err)
		}
		return nil, false
	}
	return encodeResponsesOn(flags, resps...)[5:], true
}

func FuzzDecodeHeartbeatFrames(f *testing.F) {
	f.Add(encodeRequests(hbRequest{call: 1, partition: 2, req: validHeartbeat()})[5:])
	f.Add(encodeRequests(
		hbRequest{call: math.MaxUint64, partition: math.MaxUint32, req: validHeartbeat()},
		hbRequest{call: 5, req: raft.AppendEntriesRequest{Term: 1, Leader: []byte("l")}},
	)[5:])
	f.Add(encodeRequests(
		hbRequest{call: 1 << 40, partition: 1 << 20, req: raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("a"), Addr: []byte("a:1")},
			Term:      9, PrevLogEntry: 1 << 33, PrevLogTerm: 8, LeaderCommitIndex: math.MaxUint64,
		}},
		hbRequest{call: 2, partition: 1, req: validHeartbeat()},
	)[5:])
	f.Add(encodeRequests(
		hbRequest{call: 3, partition: 4, req: raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("a"), Addr: []byte("a:1")},
			Term:      9, PrevLogEntry: 99, PrevLogTerm: 8, LeaderCommitIndex: 98, Leader: []byte("a:1"),
			Entries: []*raft.Log{
				{Index: 100, Term: 9, Type: raft.LogCommand, Data: []byte("put k v"), Extensions: []byte("x"), AppendedAt: time.Unix(1_700_000_000, 123_456_789)},
				{Index: 101, Term: 9, Type: raft.LogNoop},
				{Index: 102, Term: 9, Type: raft.LogConfiguration, Data: []byte{0, 1, 0xff}, AppendedAt: time.Unix(-1, 1)},
			},
		}},
		hbRequest{call: 4, partition: 4, req: validHeartbeat()},
	)[5:])
	f.Add(encodeRequests(hbRequest{call: 5, req: raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{
		{Index: math.MaxUint64, Term: math.MaxUint64, Type: 0xff, Extensions: []byte("ext"), AppendedAt: time.Unix(0, math.MinInt64)},
	}}})[5:])
	f.Add(encodeResponses(hbResponse{call: 1, resp: raft.AppendEntriesResponse{
		RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("b"), Addr: []byte("b:1")}, Term: 2, LastLog: 3, Success: true, NoRetryBackoff: true,
	}})[5:])
	f.Add(encodeResponses(hbResponse{call: 9, err: "partition 9 has no replica on this node"}, hbResponse{call: 10})[5:])
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		for _, flags := range []bool{false, true} {
			if re, ok := reencodeRequestsOn(t, body, flags); ok && !bytes.Equal(re, orig) {
				t.Fatalf("requests body %x decodes (flags %v), but re-encodes to %x", orig, flags, re)
			}
			if re, ok := reencodeResponsesOn(t, body, flags); ok && !bytes.Equal(re, orig) {
				t.Fatalf("responses body %x decodes (flags %v), but re-encodes to %x", orig, flags, re)
			}
		}
		if !bytes.Equal(body, orig) {
			t.Fatalf("decoding modified its input")
		}
	})
}

// TestHeartbeatCodecWithoutFlags: on HeartbeatChannel (older peers) a
// request carries no Quiesce and an answer no Quiescent, and the flag bit
// an older decoder does not know is refused.
func TestHeartbeatCodecWithoutFlags(t *testing.T) {
	req := hbRequest{call: 1, partition: 2, req: validHeartbeat()}
	req.req.Quiesce = true
	got, err := decodeRequests(encodeRequestsOn(false, req)[5:], nil, false)
	if err != nil || len(got) != 1 || got[0].req.Quiesce {
		t.Fatalf("plain channel request: %+v, %v; want one without Quiesce", got, err)
	}
	if _, err := decodeRequests(encodeRequestsOn(false, req)[5:], nil, true); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("a plain request decoded as one with flags: %v, want ErrBadFrame (the flags byte is missing)", err)
	}
	resp := hbResponse{call: 3, resp: raft.AppendEntriesResponse{Term: 1, Success: true, Quiescent: true}}
	gotR, err := decodeResponses(encodeResponsesOn(false, resp)[5:], nil, false)
	if err != nil || len(gotR) != 1 || gotR[0].resp.Quiescent || !gotR[0].resp.Success {
		t.Fatalf("plain channel answer: %+v, %v; want Success without Quiescent", gotR, err)
	}
	if _, err := decodeResponses(encodeResponses(resp)[5:], nil, false); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("an answer with Quiescent decoded on the plain channel: %v, want ErrBadFrame", err)
	}
	bad := frameBuilder{}.uv(1).raw(string(encodeRequests(req)[6 : len(encodeRequests(req))-1])).raw("\x02")
	if _, err := decodeRequests(bad, nil, true); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("request flags 0x02 decoded: %v, want ErrBadFrame", err)
	}
}
