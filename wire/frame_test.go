package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
)

func newError(code connect.Code, msg string, meta ...string) *connect.Error {
	var err error
	if msg != "" {
		err = errors.New(msg)
	}
	ce := connect.NewError(code, err)
	for i := 0; i+1 < len(meta); i += 2 {
		ce.Meta().Add(meta[i], meta[i+1])
	}
	return ce
}

// parse is parseError that turns a panic into a test failure.
func parse(t *testing.T, code uint8, body []byte) (ce *connect.Error, err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("parseError(%d, %x) panicked: %v", code, body, p)
		}
	}()
	return parseError(code, body)
}

func TestErrorBodyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  *connect.Error
	}{
		{"message only", newError(connect.CodeNotFound, "key not found")},
		{"no message", newError(connect.CodeUnavailable, "")},
		{"leader and refused hints", newError(connect.CodeUnavailable, "not the leader",
			"Ringkv-Leader", "10.0.0.7:7101", "Ringkv-Refused", "true")},
		{"several values per key", newError(connect.CodeAborted, "try elsewhere",
			"Ringkv-Leader", "10.0.0.7:7101", "Ringkv-Leader", "10.0.0.8:7101", "Ringkv-Leader", "",
			"Ringkv-Refused", "true", "Ringkv-Refused", "yes")},
		{"non-ASCII", newError(connect.CodeInvalidArgument, "clé trop longue: ✗", "Ringkv-Note", "ünïcode ✓")},
		{"empty meta value", newError(connect.CodeInternal, "x", "Ringkv-Empty", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := appendError([]byte("prefix"), tc.err)
			if !bytes.HasPrefix(body, []byte("prefix")) {
				t.Fatalf("appendError overwrote what came before: %q", body)
			}
			got, err := parse(t, uint8(tc.err.Code()), body[len("prefix"):])
			if err != nil {
				t.Fatal(err)
			}
			if got.Code() != tc.err.Code() || got.Message() != tc.err.Message() {
				t.Fatalf("got %v %q, want %v %q", got.Code(), got.Message(), tc.err.Code(), tc.err.Message())
			}
			if !reflect.DeepEqual(got.Meta(), tc.err.Meta()) {
				t.Fatalf("meta %v, want %v", got.Meta(), tc.err.Meta())
			}
			if !connect.IsWireError(got) {
				t.Fatal("parsed error is not marked as a wire error")
			}
		})
	}
}

// Every Connect code travels; the error body does not depend on it.
func TestErrorBodyEveryCode(t *testing.T) {
	for code := connect.CodeCanceled; code <= connect.CodeUnauthenticated; code++ {
		got, err := parse(t, uint8(code), appendError(nil, newError(code, code.String())))
		if err != nil {
			t.Fatalf("code %v: %v", code, err)
		}
		if got.Code() != code || got.Message() != code.String() {
			t.Fatalf("code %v: got %v", code, got)
		}
	}
}

// appendError bounds what it sends: the message is cut at maxErrorMessage,
// at most maxMetaPairs pairs go, and oversized keys or values are dropped.
func TestErrorBodyLimits(t *testing.T) {
	long := strings.Repeat("m", maxErrorMessage+100)
	ce := newError(connect.CodeInternal, long)
	for i := range maxMetaPairs + 8 {
		ce.Meta().Add("Ringkv-Many", strings.Repeat("v", i))
	}
	got, err := parse(t, uint8(connect.CodeInternal), appendError(nil, ce))
	if err != nil {
		t.Fatal(err)
	}
	if got.Message() != long[:maxErrorMessage] {
		t.Fatalf("message of %d bytes, want the first %d", len(got.Message()), maxErrorMessage)
	}
	if vs := got.Meta().Values("Ringkv-Many"); !equalStrings(vs, ce.Meta().Values("Ringkv-Many")[:maxMetaPairs]) {
		t.Fatalf("kept %d values, want the first %d in order", len(vs), maxMetaPairs)
	}

	ce = newError(connect.CodeInternal, "x",
		strings.Repeat("K", maxMetaString+1), "dropped key",
		"Ringkv-Big", strings.Repeat("v", maxMetaString+1),
		"Ringkv-Max", strings.Repeat("v", maxMetaString),
	)
	got, err = parse(t, uint8(connect.CodeInternal), appendError(nil, ce))
	if err != nil {
		t.Fatal(err)
	}
	want := http.Header{"Ringkv-Max": {strings.Repeat("v", maxMetaString)}}
	if !reflect.DeepEqual(got.Meta(), want) {
		t.Fatalf("meta keys %v, want only Ringkv-Max", keys(got.Meta()))
	}
}

func keys(h http.Header) []string {
	var ks []string
	for k := range h {
		ks = append(ks, k)
	}
	return ks
}

func TestParseErrorRejectsBadBodies(t *testing.T) {
	valid := appendError(nil, newError(connect.CodeUnavailable, "not the leader",
		"Ringkv-Leader", "10.0.0.7:7101", "Ringkv-Refused", "true"))
	type body struct {
		name string
		code uint8
		b    []byte
	}
	cases := []body{
		{"code 0", 0, valid},
		{"code 17", 17, valid},
		{"code 255", 255, valid},
		{"nil body", uint8(connect.CodeInternal), nil},
		{"trailing byte", uint8(connect.CodeInternal), append(append([]byte{}, valid...), 0)},
		{"message longer than body", uint8(connect.CodeInternal), []byte{0xff, 0xff, 0xff, 0xff, 0, 0}},
		{"more pairs than sent", uint8(connect.CodeInternal), []byte{0, 0, 0, 0, 0, 1}},
		{"key longer than body", uint8(connect.CodeInternal), []byte{0, 0, 0, 0, 0, 1, 0, 9, 'k'}},
		{"value missing", uint8(connect.CodeInternal), []byte{0, 0, 0, 0, 0, 1, 0, 1, 'k'}},
	}
	for n := range len(valid) {
		cases = append(cases, body{"truncated", uint8(connect.CodeUnavailable), valid[:n]})
	}
	for _, tc := range cases {
		ce, err := parse(t, tc.code, tc.b)
		if err == nil || ce != nil {
			t.Fatalf("%s (%d bytes): parsed as %v", tc.name, len(tc.b), ce)
		}
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("%s: error %v does not wrap ErrProtocol", tc.name, err)
		}
	}
}

// checkParse asserts parseError's contract for any input: no panic, either a
// wire error with the code or an error wrapping ErrProtocol, and a parsed
// error survives being encoded again.
func checkParse(t *testing.T, code uint8, b []byte) {
	t.Helper()
	ce, err := parse(t, code, b)
	if err != nil {
		if ce != nil || !errors.Is(err, ErrProtocol) {
			t.Fatalf("parseError(%d, %x) = %v, %v; want nil and ErrProtocol", code, b, ce, err)
		}
		return
	}
	if code == 0 || code > 16 || uint8(ce.Code()) != code || !connect.IsWireError(ce) {
		t.Fatalf("parseError(%d, %x) = %v (code %d, wire %v)", code, b, ce, ce.Code(), connect.IsWireError(ce))
	}
	if len(ce.Message()) > maxErrorMessage || pairs(ce.Meta()) > maxMetaPairs {
		return // appendError would cut it
	}
	again, err := parse(t, code, appendError(nil, ce))
	if err != nil || again.Message() != ce.Message() || !reflect.DeepEqual(again.Meta(), ce.Meta()) {
		t.Fatalf("re-encoding %v: %v, %v", ce, again, err)
	}
}

func pairs(h http.Header) int {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	return n
}

// Random bodies, and valid bodies with a byte changed, cut or added.
func TestParseErrorNeverPanics(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	valid := appendError(nil, newError(connect.CodeUnavailable, "not the leader",
		"Ringkv-Leader", "10.0.0.7:7101", "Ringkv-Refused", "true"))
	for range 20000 {
		code := uint8(rng.IntN(20))
		if rng.IntN(10) == 0 {
			code = uint8(rng.IntN(256))
		}
		var b []byte
		switch rng.IntN(3) {
		case 0:
			b = make([]byte, rng.IntN(48))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			if len(b) >= 4 && rng.IntN(2) == 0 { // a plausible message length
				binary.BigEndian.PutUint32(b, uint32(rng.IntN(len(b))))
			}
		case 1:
			b = append([]byte{}, valid...)
			b[rng.IntN(len(b))] = byte(rng.IntN(256))
		case 2:
			b = append([]byte{}, valid[:rng.IntN(len(valid)+1)]...)
			for range rng.IntN(4) {
				b = append(b, byte(rng.IntN(256)))
			}
		}
		checkParse(t, code, b)
	}
}

func FuzzParseError(f *testing.F) {
	f.Add(uint8(connect.CodeUnavailable), appendError(nil, newError(connect.CodeUnavailable, "not the leader", "Ringkv-Leader", "10.0.0.7:7101")))
	f.Add(uint8(connect.CodeNotFound), appendError(nil, newError(connect.CodeNotFound, "")))
	f.Add(uint8(0), []byte{})
	f.Add(uint8(3), []byte{0, 0, 0, 1, 'x', 0, 1, 0, 1, 'k'})
	f.Fuzz(func(t *testing.T, code uint8, b []byte) { checkParse(t, code, b) })
}

func TestTimeoutMillis(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want uint32
	}{
		{0, 0},
		{-1, 0},
		{-time.Hour, 0},
		{time.Nanosecond, 1},
		{999 * time.Microsecond, 1},
		{time.Millisecond, 1},
		{time.Millisecond + time.Nanosecond, 2},
		{1500 * time.Microsecond, 2},
		{2 * time.Second, 2000},
		{math.MaxUint32 * time.Millisecond, math.MaxUint32},
		{math.MaxUint32*time.Millisecond + 1, math.MaxUint32},
		{(math.MaxUint32 + 1) * time.Millisecond, math.MaxUint32},
		{2000 * time.Hour, math.MaxUint32},
		{math.MaxInt64 / 2, math.MaxUint32},
	} {
		if got := timeoutMillis(tc.d); got != tc.want {
			t.Errorf("timeoutMillis(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// time.Until saturates at math.MaxInt64 for a deadline beyond ~292 years
// (say context.WithDeadline(ctx, time.Date(3000, ...))), so Call can pass
// that to timeoutMillis.
func TestTimeoutMillisSaturatesNearMaxDuration(t *testing.T) {
	for _, d := range []time.Duration{math.MaxInt64, math.MaxInt64 - 1000, time.Until(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC))} {
		if got := timeoutMillis(d); got != math.MaxUint32 {
			t.Errorf("timeoutMillis(%v) = %d (%v), want %d", d, got, time.Duration(got)*time.Millisecond, uint32(math.MaxUint32))
		}
	}
}

// The frame headers have the layout documented in frame.go.
func TestFrameHeaderLayout(t *testing.T) {
	got := appendRequestHeader([]byte{0xee}, 0x01020304, MethodCompareAndSwap, 1500*time.Microsecond, 10)
	want := []byte{0xee, 0, 0, 0, 9 + 10, 1, 2, 3, 4, 4, 0, 0, 0, 2}
	if !bytes.Equal(got, want) {
		t.Fatalf("request header % x, want % x", got, want)
	}
	if len(got)-1 != requestHeader {
		t.Fatalf("request header is %d bytes, requestHeader says %d", len(got)-1, requestHeader)
	}

	b, at := appendResponseHeader([]byte("xy"), 0x0a0b0c0d, uint8(connect.CodeNotFound))
	if at != 2 || len(b)-at != responseHeader {
		t.Fatalf("response header at %d, %d bytes", at, len(b)-at)
	}
	b = append(b, "abc"...)
	patchLength(b, at)
	want = []byte{'x', 'y', 0, 0, 0, 5 + 3, 0x0a, 0x0b, 0x0c, 0x0d, 5, 'a', 'b', 'c'}
	if !bytes.Equal(b, want) {
		t.Fatalf("response frame % x, want % x", b, want)
	}
}

func TestReadLength(t *testing.T) {
	be := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	for _, tc := range []struct {
		name    string
		in      []byte
		minLen  int
		want    int
		wantErr error
	}{
		{"exact minimum", be(5), 5, 5, nil},
		{"larger", be(1 << 20), 5, 1 << 20, nil},
		{"largest", be(math.MaxInt32), 5, math.MaxInt32, nil},
		{"shorter than header", be(4), 5, 0, ErrProtocol},
		{"zero", be(0), 9, 0, ErrProtocol},
		{"over MaxInt32", be(math.MaxInt32 + 1), 5, 0, ErrProtocol},
		{"all ones", be(math.MaxUint32), 5, 0, ErrProtocol},
		{"empty", nil, 5, 0, io.EOF},
		{"cut", []byte{0, 0}, 5, 0, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := readLength(bytes.NewReader(tc.in), make([]byte, 4), tc.minLen)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if n != tc.want {
				t.Fatalf("length %d, want %d", n, tc.want)
			}
		})
	}
}

func TestMethodString(t *testing.T) {
	for m, want := range map[Method]string{
		MethodGet: "Get", MethodPut: "Put", MethodDelete: "Delete", MethodCompareAndSwap: "CompareAndSwap",
		0: "method(0)", 5: "method(5)", 255: "method(255)",
	} {
		if got := m.String(); got != want {
			t.Errorf("Method(%d).String() = %q, want %q", uint8(m), got, want)
		}
	}
}

// No HTTP/1 request line nor the HTTP/2 preface starts with Preface's first
// byte, which is all Split looks at for them; and Preface is longer than the
// HTTP/2 preface, which an h2c server reads whole before deciding.
func TestPrefaceIsDistinct(t *testing.T) {
	for _, opening := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"} {
		if opening[0] == Preface[0] {
			t.Errorf("%q starts like the preface", opening)
		}
	}
	if len(Preface) <= len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") {
		t.Errorf("the preface is %d bytes, not longer than HTTP/2's", len(Preface))
	}
}
