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

// The fields of hashicorp/raft's types the heartbeat codec knows about. If
// raft adds a field, TestHeartbeatCodecKnowsEveryRaftField fails: decide
// whether the channel can carry it (then encode it and list it in
// carriedRequestFields) or not (then Carried must refuse requests that set
// it), and update these lists.
var (
	knownRPCHeaderFields = []string{"ProtocolVersion", "ID", "Addr"}
	knownRequestFields   = []string{"RPCHeader", "Term", "Leader", "PrevLogEntry", "PrevLogTerm", "Entries", "LeaderCommitIndex"}
	knownResponseFields  = []string{"RPCHeader", "Term", "LastLog", "Success", "NoRetryBackoff"}
	// carriedRequestFields are the request fields a request frame encodes;
	// Carried must refuse a request with any other field set. Entries is the
	// only one left out.
	carriedRequestFields = []string{"RPCHeader", "Term", "Leader", "PrevLogEntry", "PrevLogTerm", "LeaderCommitIndex"}
)

func fieldNames(typ reflect.Type) []string {
	names := make([]string, typ.NumField())
	for i := range names {
		names[i] = typ.Field(i).Name
	}
	return names
}

func TestHeartbeatCodecKnowsEveryRaftField(t *testing.T) {
	tests := []struct {
		typ   reflect.Type
		known []string
	}{
		{reflect.TypeFor[raft.RPCHeader](), knownRPCHeaderFields},
		{reflect.TypeFor[raft.AppendEntriesRequest](), knownRequestFields},
		{reflect.TypeFor[raft.AppendEntriesResponse](), knownResponseFields},
	}
	for _, tt := range tests {
		if got := fieldNames(tt.typ); !slices.Equal(got, tt.known) {
			t.Errorf("%v has fields %v; the heartbeat codec was written for %v: "+
				"update appendRequest/appendResponse, the decoders, Carried, IsHeartbeat and the lists in this file",
				tt.typ, got, tt.known)
		}
	}
}

// setNonZero gives v, a settable value, a non-zero value derived from seed
// (distinct seeds give distinct values). Integers get values that take
// several varint bytes.
func setNonZero(t *testing.T, v reflect.Value, seed int) {
	t.Helper()
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(time.Unix(int64(seed), 0)))
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

func TestCarriedAndIsHeartbeat(t *testing.T) {
	base := validHeartbeat()
	if !Carried(&base) || !IsHeartbeat(&base) {
		t.Fatalf("Carried, IsHeartbeat(%+v) = %v, %v; want true, true", base, Carried(&base), IsHeartbeat(&base))
	}

	// Every field the codec does not carry (Entries only) makes a request
	// one the channel must refuse: the field would be dropped on the way.
	// Every carried field may be set.
	typ := reflect.TypeFor[raft.AppendEntriesRequest]()
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		t.Run(name, func(t *testing.T) {
			req := validHeartbeat()
			setNonZero(t, reflect.ValueOf(&req).Elem().Field(i), 1)
			want := slices.Contains(carriedRequestFields, name)
			if got := Carried(&req); got != want {
				t.Fatalf("Carried(request with %s = %v) = %v, want %v (the codec carries %v)",
					name, reflect.ValueOf(req).Field(i), got, want, carriedRequestFields)
			}
		})
	}

	log := []*raft.Log{{Index: 1, Term: 1}}
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
		{"entries", func(r *raft.AppendEntriesRequest) { r.Entries = log }, false, false, false},
		{"entries and commit", func(r *raft.AppendEntriesRequest) { r.Entries, r.LeaderCommitIndex = log, 1 }, false, false, false},
		{"nil entry", func(r *raft.AppendEntriesRequest) { r.Entries = []*raft.Log{nil} }, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validHeartbeat()
			tt.mutate(&req)
			if got := Carried(&req); got != tt.carried {
				t.Errorf("Carried(%+v) = %v, want %v", req, got, tt.carried)
			}
			if got := IsHeartbeat(&req); got != tt.isHeartbeat {
				t.Errorf("IsHeartbeat(%+v) = %v, want %v", req, got, tt.isHeartbeat)
			}
			if IsHeartbeat(&req) && !Carried(&req) {
				t.Errorf("IsHeartbeat accepts %+v, which Carried refuses", req)
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
				t.Fatalf("test table: raft's heartbeat test says %v for %+v", raftHB, req)
			}
			if IsHeartbeat(&req) && !raftHB {
				t.Errorf("IsHeartbeat accepts %+v, which raft answers in its main loop", req)
			}
		})
	}
}

func encodeRequests(reqs ...hbRequest) []byte {
	b := beginFrame(nil, frameRequests, len(reqs))
	for i := range reqs {
		b = appendRequest(b, &reqs[i])
	}
	return finishFrame(b)
}

func encodeResponses(resps ...hbResponse) []byte {
	b := beginFrame(nil, frameResponses, len(resps))
	for i := range resps {
		b = appendResponse(b, &resps[i])
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

// fullRequest is a request with every field the channel carries set to a
// distinct value, found by reflection: a field raft adds is set too.
func fullRequest(t *testing.T) raft.AppendEntriesRequest {
	t.Helper()
	var req raft.AppendEntriesRequest
	seed := 100
	fillAll(t, reflect.ValueOf(&req).Elem(), &seed)
	req.Entries = nil // the only field not carried
	if !Carried(&req) {
		t.Fatalf("Carried(%+v) = false", req)
	}
	return req
}

func TestHeartbeatRequestRoundTrip(t *testing.T) {
	full := hbRequest{call: 1, partition: 2, req: fullRequest(t)}
	// Each carried field set alone, so one the codec drops shows by name.
	var single []hbRequest
	v := reflect.ValueOf(full.req)
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if !slices.Contains(carriedRequestFields, name) {
			continue
		}
		r := hbRequest{call: uint64(i), partition: uint32(i)}
		reflect.ValueOf(&r.req).Elem().Field(i).Set(v.Field(i))
		if r.req.Term == 0 {
			r.req.Term = 1
		}
		single = append(single, r)
	}

	long := strings.Repeat("x", maxFieldLen)
	tests := []struct {
		name string
		reqs []hbRequest
	}{
		{"every carried field set", []hbRequest{full}},
		{"each carried field alone", single},
		{"limits", []hbRequest{{
			call:      math.MaxUint64,
			partition: math.MaxUint32,
			req: raft.AppendEntriesRequest{
				RPCHeader:         raft.RPCHeader{ProtocolVersion: math.MaxInt, ID: []byte(long), Addr: []byte(long)},
				Term:              math.MaxUint64,
				PrevLogEntry:      math.MaxUint64,
				PrevLogTerm:       math.MaxUint64,
				LeaderCommitIndex: math.MaxUint64,
				Leader:            []byte(long),
			},
		}}},
		{"values one varint byte can not hold", []hbRequest{{call: 128, partition: 128, req: raft.AppendEntriesRequest{
			Term: 128, PrevLogEntry: 1 << 7, PrevLogTerm: 1<<14 - 1, LeaderCommitIndex: 1 << 14,
		}}}},
		{"negative protocol version", []hbRequest{{call: 3, req: raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: -1}, Term: 1, Leader: []byte("l"),
		}}}},
		{"empty header", []hbRequest{{call: 4, partition: 9, req: raft.AppendEntriesRequest{Term: 1, Leader: []byte("l")}}}},
		{"empty append", []hbRequest{{call: 5, partition: 10, req: raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("n"), Addr: []byte("a")},
			Term:      7, PrevLogEntry: 100, PrevLogTerm: 6, LeaderCommitIndex: 99,
		}}}},
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
				rs = append(rs, r)
			}
			return rs
		}()},
		{"max batch", slices.Repeat([]hbRequest{full}, maxBatchItems)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := frameBody(t, encodeRequests(tt.reqs...), frameRequests)
			got, err := decodeRequests(body, nil)
			if err != nil {
				t.Fatalf("decodeRequests: %v", err)
			}
			scribble(body)
			if !reflect.DeepEqual(got, tt.reqs) {
				t.Fatalf("round trip changed the requests:\n got %+v\nwant %+v", got, tt.reqs)
			}
		})
	}

	// The output slice is reused, not appended to.
	body := frameBody(t, encodeRequests(full), frameRequests)
	out := make([]hbRequest, 5, 10)
	got, err := decodeRequests(body, out)
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], full) {
		t.Fatalf("decodeRequests into a used slice = %+v, %v; want just %+v", got, err, full)
	}
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
			got, err := decodeResponses(body, nil)
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

// reqItem is a valid request item: call 1, partition 2, version 3, ID,
// Addr, term 4, previous log index 5 and term 6, commit index 7, Leader.
func reqItem(b frameBuilder) frameBuilder { return reqItemWith(b, "id", "addr", "leader") }

func reqItemWith(b frameBuilder, id, addr, leader string) frameBuilder {
	return b.uv(1).uv(2).uv(3).field(id).field(addr).uv(4).uv(5).uv(6).uv(7).field(leader)
}

// okItemNoFlags is a valid OK response item without its flags byte.
func okItemNoFlags(b frameBuilder) frameBuilder {
	return b.uv(1).raw("\x00").uv(3).field("id").field("addr").uv(4).uv(5)
}

type decodeFunc func([]byte) error

var (
	decodeReqs  decodeFunc = func(b []byte) error { _, err := decodeRequests(b, nil); return err }
	decodeResps decodeFunc = func(b []byte) error { _, err := decodeResponses(b, nil); return err }
)

func TestHeartbeatFrameMalformed(t *testing.T) {
	long := strings.Repeat("z", maxFieldLen+1)
	manyReqs := frameBuilder{}.uv(maxBatchItems + 1)
	manyResps := frameBuilder{}.uv(maxBatchItems + 1)
	for range maxBatchItems + 1 {
		manyReqs = reqItem(manyReqs)
		manyResps = manyResps.uv(1).raw("\x01").field("e")
	}
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
		{"requests: previous log index overflows", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(2).uv(3).field("i").field("a").uv(4).raw(strings.Repeat("\xff", 9) + "\x02").uv(6).uv(7).field("l")},
		{"requests: commit index of 11 bytes", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(2).uv(3).field("i").field("a").uv(4).uv(5).uv(6).raw(strings.Repeat("\x80", 10) + "\x01").field("l")},
		{"requests: leader missing", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(2).uv(3).field("i").field("a").uv(4).uv(5).uv(6).uv(7)},
		{"requests: field length beyond the frame", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(2).uv(3).uv(10).raw("short")},
		{"requests: huge field length", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(2).uv(3).uv(math.MaxUint64)},
		{"requests: partition over 32 bits", decodeReqs, frameBuilder{}.uv(1).uv(1).uv(1 << 32).uv(3).field("i").field("a").uv(4).uv(5).uv(6).uv(7).field("l")},
		{"requests: varint overflow", decodeReqs, frameBuilder{}.uv(1).raw(strings.Repeat("\xff", 10) + "\x01")},
		{"requests: trailing bytes", decodeReqs, reqItem(frameBuilder{}.uv(1)).raw("\x00")},
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
	if err := decodeReqs(reqItem(frameBuilder{}.uv(1))); err != nil {
		t.Fatalf("valid request body: %v", err)
	}
	if err := decodeResps(okItemNoFlags(frameBuilder{}.uv(1)).raw("\x03")); err != nil {
		t.Fatalf("valid response body: %v", err)
	}
	at := strings.Repeat("y", maxFieldLen)
	if err := decodeReqs(reqItemWith(frameBuilder{}.uv(1), at, at, at)); err != nil {
		t.Fatalf("fields at the limit: %v", err)
	}
	if err := decodeReqs(frameBuilder{}.uv(1).uv(1).uv(1<<32 - 1).uv(3).field("i").field("a").uv(4).uv(math.MaxUint64).uv(6).uv(7).field("l")); err != nil {
		t.Fatalf("largest partition and previous log index: %v", err)
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
	ok := hbResponse{call: 301, resp: raft.AppendEntriesResponse{
		RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("b"), Addr: []byte("b:1")}, Term: 9, LastLog: 300, Success: true,
	}}
	tests := []struct {
		name   string
		decode decodeFunc
		frame  []byte
	}{
		{"requests", decodeReqs, encodeRequests(req, empty, appendReq, req)},
		{"responses", decodeResps, encodeResponses(ok, hbResponse{call: 2, err: "boom"}, ok, hbResponse{call: 3})},
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
	// req builds a request body with field i (0 call id, 1 partition, 2
	// version, 3 ID length, 4 Addr length, 5 term, 6 previous index, 7
	// previous term, 8 commit index, 9 Leader length) given as raw bytes.
	req := func(i int, raw string) []byte {
		vals := []uint64{1, 2, 3, 1, 1, 4, 5, 6, 7, 1}
		b := frameBuilder{}.uv(1)
		for j, v := range vals {
			if j == i {
				b = b.raw(raw)
			} else {
				b = b.uv(v)
			}
			if j == 3 || j == 4 || j == 9 {
				b = b.raw("x")
			}
		}
		return b
	}
	names := []string{"call id", "partition", "protocol version", "ID length", "Addr length", "term",
		"previous log index", "previous log term", "leader commit index", "Leader length"}

	tests := []struct {
		name     string
		reencode func(*testing.T, []byte) ([]byte, bool)
		body     []byte
	}{
		// 0x81 0x00 is 1 in two bytes; the encoder writes 0x01.
		{"requests: non-minimal call id", reencodeRequests, req(0, "\x81\x00")},
		{"requests: non-minimal item count", reencodeRequests, reqItem(frameBuilder{}.raw("\x81\x00"))},
		{"requests: zero padded to ten bytes", reencodeRequests, req(6, strings.Repeat("\x80", 9)+"\x00")},
		{"responses: non-minimal term", reencodeResponses, frameBuilder{}.uv(1).uv(1).raw("\x00").uv(3).field("i").field("a").raw("\x84\x80\x00").uv(5).raw("\x01")},
		{"responses: non-minimal call id", reencodeResponses, frameBuilder{}.uv(1).raw("\x81\x00").raw("\x01").field("e")},
		{"responses: non-minimal error length", reencodeResponses, frameBuilder{}.uv(1).uv(1).raw("\x01").raw("\x81\x00e")},
		{"responses: non-minimal last log", reencodeResponses, frameBuilder{}.uv(1).uv(1).raw("\x00").uv(3).field("i").field("a").uv(4).raw(pad(math.MaxUint64 >> 1)).raw("\x01")},
		{"responses: non-minimal item count", reencodeResponses, frameBuilder{}.raw("\x81\x00").uv(1).raw("\x01").field("e")},
		// The encoder never writes an error item with an empty message (an
		// empty err means OK).
		{"responses: empty error message", reencodeResponses, frameBuilder{}.uv(1).uv(1).raw("\x01").field("")},
	}
	for i, name := range names {
		for _, v := range []uint64{0, 1, 127, 128, 1 << 35, math.MaxUint64 >> 1} {
			if (i == 3 || i == 4 || i == 9) && v != 1 {
				continue // a length must match the one byte that follows
			}
			if i == 1 && v > math.MaxUint32 {
				continue
			}
			tests = append(tests, struct {
				name     string
				reencode func(*testing.T, []byte) ([]byte, bool)
				body     []byte
			}{fmt.Sprintf("requests: %s %d padded", name, v), reencodeRequests, req(i, pad(v))})
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
	for i, name := range names {
		for _, v := range []uint64{0, 1, 127, 128, 1 << 35, math.MaxUint64} {
			if (i == 3 || i == 4 || i == 9) && v != 1 || i == 1 && v > math.MaxUint32 {
				continue
			}
			body := req(i, string(binary.AppendUvarint(nil, v)))
			if re, ok := reencodeRequests(t, body); !ok || !bytes.Equal(re, body) {
				t.Errorf("requests: %s %d: minimal body %x re-encodes to %x, %v", name, v, body, re, ok)
			}
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
	reqs, err := decodeRequests(body, nil)
	if err != nil {
		if !errors.Is(err, ErrBadFrame) {
			t.Fatalf("decodeRequests: %v, want nil or ErrBadFrame", err)
		}
		return nil, false
	}
	return encodeRequests(reqs...)[5:], true
}

func reencodeResponses(t *testing.T, body []byte) ([]byte, bool) {
	resps, err := decodeResponses(body, nil)
	if err != nil {
		if !errors.Is(err, ErrBadFrame) {
			t.Fatalf("decodeResponses: %v, want nil or ErrBadFrame", err)
		}
		return nil, false
	}
	return encodeResponses(resps...)[5:], true
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
	f.Add(encodeResponses(hbResponse{call: 1, resp: raft.AppendEntriesResponse{
		RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("b"), Addr: []byte("b:1")}, Term: 2, LastLog: 3, Success: true, NoRetryBackoff: true,
	}})[5:])
	f.Add(encodeResponses(hbResponse{call: 9, err: "partition 9 has no replica on this node"}, hbResponse{call: 10})[5:])
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		if re, ok := reencodeRequests(t, body); ok && !bytes.Equal(re, orig) {
			t.Fatalf("requests body %x decodes, but re-encodes to %x", orig, re)
		}
		if re, ok := reencodeResponses(t, body); ok && !bytes.Equal(re, orig) {
			t.Fatalf("responses body %x decodes, but re-encodes to %x", orig, re)
		}
		if !bytes.Equal(body, orig) {
			t.Fatalf("decoding modified its input")
		}
	})
}
