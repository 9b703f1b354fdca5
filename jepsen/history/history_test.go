package history

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ringkv/ringkv/client"
)

func TestClassify(t *testing.T) {
	unavailable := fmt.Errorf("put: %w", client.ErrUnavailable)
	unknown := fmt.Errorf("put: %w", client.ErrOutcomeUnknown)
	cases := []struct {
		name string
		kind Kind
		err  error
		want Outcome
	}{
		{"read ok", KindGet, nil, OutcomeOK},
		{"read not found is an answer", KindGet, fmt.Errorf("get: %w", client.ErrNotFound), OutcomeOK},
		{"eventual read not found is an answer", KindEventualGet, client.ErrNotFound, OutcomeOK},
		{"read unavailable failed", KindGet, unavailable, OutcomeFail},
		{"write ok", KindPut, nil, OutcomeOK},
		{"write unavailable did not happen", KindPut, unavailable, OutcomeFail},
		{"write outcome unknown", KindCAS, unknown, OutcomeUnknown},
		{"write timeout is unknown, not failed", KindPut, context.DeadlineExceeded, OutcomeUnknown},
		{"write with both sentinels is unknown", KindPut, errors.Join(unavailable, unknown), OutcomeUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.kind, tc.err); got != tc.want {
				t.Fatalf("Classify(%s, %v) = %s, want %s", tc.kind, tc.err, got, tc.want)
			}
		})
	}
}

func TestWriteReadDirRoundTrip(t *testing.T) {
	rec := NewRecorder(time.Now())
	a := rec.Begin(0, "k", KindPut)
	a.Value = "0-1"
	rec.End(a, OutcomeOK, nil)
	b := rec.Begin(1, "k", KindCAS)
	b.Expect, b.Value = "0-1", "1-1"
	rec.End(b, OutcomeUnknown, errors.New("timeout"))
	c := rec.Begin(1, "k", KindGet)
	c.Found, c.Out, c.Version = true, "1-1", 9
	rec.End(c, OutcomeOK, nil)

	dir := t.TempDir()
	if err := WriteDir(dir, rec.Ops()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := rec.Ops()
	if len(got) != len(want) {
		t.Fatalf("read %d ops, wrote %d", len(got), len(want))
	}
	for i := range want {
		if *got[i] != *want[i] {
			t.Errorf("op %d: got %+v, want %+v", i, *got[i], *want[i])
		}
	}
	if got[1].Return != 0 || got[1].Outcome != OutcomeUnknown {
		t.Errorf("unknown op kept a return time: %+v", *got[1])
	}
	if n := Count(got); n != (Counts{OK: 2, Unknown: 1}) {
		t.Errorf("Count = %+v", n)
	}
}

func TestReadDirEmpty(t *testing.T) {
	if _, err := ReadDir(t.TempDir()); err == nil {
		t.Fatal("ReadDir of an empty folder succeeded; want an error")
	}
}
