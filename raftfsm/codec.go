package raftfsm

import (
	"encoding/binary"
	"fmt"
)

// Command batch format, version 1 (all integers uvarint unless noted):
//
//	batch   = version:byte count command*count
//	command = kind:byte expect:byte flags:byte len(key) key len(value) value
//	          [len(expectedValue) expectedValue] [expectedVersion]
//	          [clientID] [seq] [ackBelow]
//
// A bracketed field is present only when its flag bit is set, which
// EncodeBatch does exactly when the field is non-zero (non-empty), so a
// write without a request id or condition costs five bytes of framing.
// The format is stored in the Raft log, so it only ever grows: a new field
// takes a new flag bit or a new version byte.
const batchVersion = 1

const (
	flagExpectedValue = 1 << iota
	flagExpectedVersion
	flagClientID
	flagSeq
	flagAckBelow

	knownFlags = flagExpectedValue | flagExpectedVersion | flagClientID | flagSeq | flagAckBelow
)

// minCommandLen is the smallest encoded command: kind, expect, flags and two
// zero lengths. DecodeBatch uses it to reject absurd counts before allocating.
const minCommandLen = 5

// EncodeBatch appends the encoding of cmds to dst and returns the extended
// slice. The result is one Raft entry's data.
func EncodeBatch(dst []byte, cmds []Command) []byte {
	dst = append(dst, batchVersion)
	dst = binary.AppendUvarint(dst, uint64(len(cmds)))
	for i := range cmds {
		c := &cmds[i]
		var flags byte
		if len(c.ExpectedValue) > 0 {
			flags |= flagExpectedValue
		}
		if c.ExpectedVersion != 0 {
			flags |= flagExpectedVersion
		}
		if c.ClientID != 0 {
			flags |= flagClientID
		}
		if c.Seq != 0 {
			flags |= flagSeq
		}
		if c.AckBelow != 0 {
			flags |= flagAckBelow
		}
		dst = append(dst, byte(c.Kind), byte(c.Expect), flags)
		dst = appendBytes(dst, c.Key)
		dst = appendBytes(dst, c.Value)
		if flags&flagExpectedValue != 0 {
			dst = appendBytes(dst, c.ExpectedValue)
		}
		if flags&flagExpectedVersion != 0 {
			dst = binary.AppendUvarint(dst, c.ExpectedVersion)
		}
		if flags&flagClientID != 0 {
			dst = binary.AppendUvarint(dst, c.ClientID)
		}
		if flags&flagSeq != 0 {
			dst = binary.AppendUvarint(dst, c.Seq)
		}
		if flags&flagAckBelow != 0 {
			dst = binary.AppendUvarint(dst, c.AckBelow)
		}
	}
	return dst
}

// DecodeBatch decodes one Raft entry's data. The byte slices of the returned
// commands alias data (empty ones are nil). It never panics; every error
// wraps ErrCorruptCommand. Kinds and conditions are not checked here: an
// unknown one decodes, and applying it yields StatusInvalid for that command.
func DecodeBatch(data []byte) ([]Command, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty entry", ErrCorruptCommand)
	}
	if data[0] != batchVersion {
		return nil, fmt.Errorf("%w: unknown format version %d", ErrCorruptCommand, data[0])
	}
	d := decoder{buf: data[1:]}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.buf)/minCommandLen) {
		return nil, fmt.Errorf("%w: count %d does not fit in %d bytes", ErrCorruptCommand, n, len(d.buf))
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: count: %v", ErrCorruptCommand, d.err)
	}
	cmds := make([]Command, n)
	for i := range cmds {
		c := &cmds[i]
		c.Kind = Kind(d.byte())
		c.Expect = Expect(d.byte())
		flags := d.byte()
		if d.err == nil && flags&^knownFlags != 0 {
			return nil, fmt.Errorf("%w: command %d: unknown flags %#x", ErrCorruptCommand, i, flags)
		}
		c.Key = d.bytes()
		c.Value = d.bytes()
		if flags&flagExpectedValue != 0 {
			c.ExpectedValue = d.bytes()
		}
		if flags&flagExpectedVersion != 0 {
			c.ExpectedVersion = d.uvarint()
		}
		if flags&flagClientID != 0 {
			c.ClientID = d.uvarint()
		}
		if flags&flagSeq != 0 {
			c.Seq = d.uvarint()
		}
		if flags&flagAckBelow != 0 {
			c.AckBelow = d.uvarint()
		}
		if d.err != nil {
			return nil, fmt.Errorf("%w: command %d: %v", ErrCorruptCommand, i, d.err)
		}
	}
	if len(d.buf) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorruptCommand, len(d.buf))
	}
	return cmds, nil
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// decoder reads the fields of the command and dedup-record formats. After
// the first error every read returns zero values and err keeps that error,
// so callers check once per record instead of after every field; callers
// wrap err with the sentinel that fits their format.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("truncated or malformed %s", what)
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if len(d.buf) < 1 {
		d.fail("byte")
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// bytes returns a length-prefixed field, aliasing the input, capped so an
// append by the caller cannot overwrite the next field.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.fail("byte string")
		return nil
	}
	if n == 0 {
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}
