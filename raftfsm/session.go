package raftfsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Dedup records follow the client sessions of the Raft dissertation (§6.3).
// Each client has one record holding LowWater and the results of its
// requests with Seq >= LowWater. Seqs below LowWater are answered
// StatusStaleRequest: their results are forgotten, so the FSM can no longer
// tell a retry from a first attempt.
//
// The caps bound a client that never acknowledges. They are constants, not
// Config fields, because every replica must trim at exactly the same point
// or their stored bytes (and later answers) would diverge.
const (
	maxSessionResults = 1024
	maxSessionBytes   = 1 << 20 // encoded results; CAS failures carry values
)

const sessionVersion = 1

// session is one client's dedup record, decoded. results is sorted by seq.
type session struct {
	low     uint64
	results []seqResult
	size    int // encoded size of results, for maxSessionBytes
	dirty   bool
}

type seqResult struct {
	seq uint64
	res Result
}

// ack forgets the results of seqs below below and raises low to it.
func (s *session) ack(below uint64) {
	if below <= s.low {
		return
	}
	i, _ := s.search(below)
	for _, r := range s.results[:i] {
		s.size -= seqResultSize(r)
	}
	s.results = slices.Delete(s.results, 0, i)
	s.low = below
	s.dirty = true
}

func (s *session) lookup(seq uint64) (Result, bool) {
	i, ok := s.search(seq)
	if !ok {
		return Result{}, false
	}
	return s.results[i].res, true
}

// record stores the result of seq (not yet present), then trims the lowest
// seqs while over a cap, raising low past each. It keeps at least the newest
// record so one large CAS failure does not make its own retry stale.
func (s *session) record(seq uint64, res Result) {
	r := seqResult{seq: seq, res: res}
	i, _ := s.search(seq)
	s.results = slices.Insert(s.results, i, r)
	s.size += seqResultSize(r)
	for len(s.results) > 1 && (len(s.results) > maxSessionResults || s.size > maxSessionBytes) {
		s.size -= seqResultSize(s.results[0])
		s.low = s.results[0].seq + 1
		s.results = slices.Delete(s.results, 0, 1)
	}
	s.dirty = true
}

// search returns the position of seq in results (or where it would go) and
// whether it is there. Every put looks up and records its seq, so this is
// written out rather than slices.BinarySearchFunc, whose comparison call
// was 1% of a loaded node's CPU.
func (s *session) search(seq uint64) (int, bool) {
	lo, hi := 0, len(s.results)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.results[m].seq < seq {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(s.results) && s.results[lo].seq == seq
}

// Record format: version:byte low n (seq result)*n, where
// result = status:byte version exists:byte len(value) value len(err) err;
// integers are uvarints.
func (s *session) appendTo(dst []byte) []byte {
	dst = append(dst, sessionVersion)
	dst = binary.AppendUvarint(dst, s.low)
	dst = binary.AppendUvarint(dst, uint64(len(s.results)))
	for _, r := range s.results {
		dst = binary.AppendUvarint(dst, r.seq)
		dst = appendResult(dst, r.res)
	}
	return dst
}

func appendResult(dst []byte, r Result) []byte {
	dst = append(dst, byte(r.Status))
	dst = binary.AppendUvarint(dst, r.Version)
	exists := byte(0)
	if r.Exists {
		exists = 1
	}
	dst = append(dst, exists)
	dst = appendBytes(dst, r.Value)
	return appendBytes(dst, []byte(r.Err))
}

func seqResultSize(r seqResult) int {
	return uvarintLen(r.seq) + 1 + uvarintLen(r.res.Version) + 1 +
		uvarintLen(uint64(len(r.res.Value))) + len(r.res.Value) +
		uvarintLen(uint64(len(r.res.Err))) + len(r.res.Err)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// decodeSession decodes a stored record. The result owns its memory: it
// copies value bytes out of data, which pebble may reuse.
func decodeSession(data []byte) (*session, error) {
	if len(data) == 0 || data[0] != sessionVersion {
		return nil, errors.New("raftfsm: corrupt dedup record: unknown format")
	}
	d := decoder{buf: data[1:]}
	s := &session{low: d.uvarint()}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.buf)) {
		return nil, fmt.Errorf("raftfsm: corrupt dedup record: count %d does not fit", n)
	}
	s.results = make([]seqResult, 0, n)
	for range n {
		var r seqResult
		r.seq = d.uvarint()
		r.res.Status = Status(d.byte())
		r.res.Version = d.uvarint()
		r.res.Exists = d.byte() == 1
		r.res.Value = slices.Clone(d.bytes())
		r.res.Err = string(d.bytes())
		if d.err != nil {
			break
		}
		s.results = append(s.results, r)
		s.size += seqResultSize(r)
	}
	if d.err == nil && len(d.buf) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.buf))
	}
	if d.err != nil {
		return nil, fmt.Errorf("raftfsm: corrupt dedup record: %w", d.err)
	}
	return s, nil
}
