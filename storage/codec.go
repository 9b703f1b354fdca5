package storage

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Log entry encoding, version 1:
//
//	version    byte (logCodecV1)
//	index      uvarint
//	term       uvarint
//	type       byte (raft.LogType)
//	flags      byte (flagAppendedAt; other bits must be zero)
//	appendedAt varint Unix seconds, uvarint nanoseconds (only with flagAppendedAt)
//	data       uvarint length, bytes
//	extensions uvarint length, bytes
//
// The index is stored although the key holds it too, so that a value found
// under the wrong key is detected as corruption rather than served.
const (
	logCodecV1     byte = 1
	flagAppendedAt byte = 1 << 0
	knownFlags          = flagAppendedAt
)

// encodedLogLen returns the exact number of bytes encodeLog writes for l.
func encodedLogLen(l *raft.Log) int {
	n := 1 + uvarintLen(l.Index) + uvarintLen(l.Term) + 1 + 1
	if !l.AppendedAt.IsZero() {
		n += varintLen(l.AppendedAt.Unix()) + uvarintLen(uint64(l.AppendedAt.Nanosecond()))
	}
	n += uvarintLen(uint64(len(l.Data))) + len(l.Data)
	n += uvarintLen(uint64(len(l.Extensions))) + len(l.Extensions)
	return n
}

// encodeLog writes l into dst, which must be exactly encodedLogLen(l) long
// (it is memory inside a pebble batch, so nothing is allocated).
func encodeLog(dst []byte, l *raft.Log) {
	dst[0] = logCodecV1
	n := 1
	n += binary.PutUvarint(dst[n:], l.Index)
	n += binary.PutUvarint(dst[n:], l.Term)
	dst[n] = byte(l.Type)
	n++
	if l.AppendedAt.IsZero() {
		dst[n] = 0
		n++
	} else {
		dst[n] = flagAppendedAt
		n++
		n += binary.PutVarint(dst[n:], l.AppendedAt.Unix())
		n += binary.PutUvarint(dst[n:], uint64(l.AppendedAt.Nanosecond()))
	}
	n += binary.PutUvarint(dst[n:], uint64(len(l.Data)))
	n += copy(dst[n:], l.Data)
	n += binary.PutUvarint(dst[n:], uint64(len(l.Extensions)))
	copy(dst[n:], l.Extensions)
}

// decodeLog decodes b into out, copying Data and Extensions into one fresh
// allocation so that out does not alias b (pebble reuses b). want is the
// index the key promised. Every malformed input yields an error wrapping
// ErrCorruptLog; it never panics.
func decodeLog(b []byte, want uint64, out *raft.Log) error {
	d := decoder{b: b}
	if v := d.byte(); v != logCodecV1 {
		if d.err != nil {
			return d.err
		}
		return fmt.Errorf("%w: unknown encoding version %d", ErrCorruptLog, v)
	}
	index := d.uvarint()
	term := d.uvarint()
	typ := raft.LogType(d.byte())
	flags := d.byte()
	var appendedAt time.Time
	if d.err == nil && flags&^knownFlags != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrCorruptLog, flags)
	}
	if flags&flagAppendedAt != 0 {
		sec := d.varint()
		nsec := d.uvarint()
		if d.err == nil && nsec >= uint64(time.Second) {
			return fmt.Errorf("%w: nanoseconds %d out of range", ErrCorruptLog, nsec)
		}
		appendedAt = time.Unix(sec, int64(nsec)).UTC()
	}
	data := d.bytes()
	ext := d.bytes()
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorruptLog, len(d.b))
	}
	if index != want {
		return fmt.Errorf("%w: entry holds index %d", ErrCorruptLog, index)
	}
	var buf []byte
	if n := len(data) + len(ext); n > 0 {
		buf = make([]byte, n)
		copy(buf, data)
		copy(buf[len(data):], ext)
	}
	*out = raft.Log{
		Index:      index,
		Term:       term,
		Type:       typ,
		AppendedAt: appendedAt,
	}
	if len(data) > 0 {
		out.Data = buf[:len(data):len(data)]
	}
	if len(ext) > 0 {
		out.Extensions = buf[len(data):]
	}
	return nil
}

// decoder reads fields from b; after the first failure every read returns a
// zero value and err keeps the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or malformed %s", ErrCorruptLog, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes reads a uvarint length and that many bytes, aliasing d.b.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length-prefixed bytes")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	// Zig-zag, as binary.PutVarint does.
	ux := uint64(v) << 1
	if v < 0 {
		ux = ^ux
	}
	return uvarintLen(ux)
}
