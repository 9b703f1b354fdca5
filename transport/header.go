package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire constants; DESIGN.md describes the layout byte by byte.
const (
	magic           = "RKV1"
	protocolVersion = 1

	// fixedPrefixLen covers magic, version and the one-byte cluster id length.
	fixedPrefixLen = len(magic) + 1 + 1
	partitionLen   = 4
	maxHeaderLen   = fixedPrefixLen + maxClusterIDLen + partitionLen
)

// status is the acceptor's one-byte answer to a header.
type status byte

const (
	statusOK               status = 0x00
	statusUnknownPartition status = 0x01
	statusWrongCluster     status = 0x02
	statusBadHeader        status = 0x03
)

// header is what a dialer says before any Raft byte.
type header struct {
	clusterID string
	partition uint32
}

// appendHeader encodes h. The caller guarantees len(h.clusterID) <= 64, so
// the uvarint length is always a single byte.
func appendHeader(b []byte, h header) []byte {
	b = append(b, magic...)
	b = append(b, protocolVersion)
	b = binary.AppendUvarint(b, uint64(len(h.clusterID)))
	b = append(b, h.clusterID...)
	return binary.BigEndian.AppendUint32(b, h.partition)
}

// readHeader reads exactly one header from r and never more, so bytes a
// peer sends early stay in the socket for the Raft transport. Format errors
// wrap ErrBadHeader; I/O errors (EOF, deadline) are returned unchanged.
func readHeader(r io.Reader) (header, error) {
	var prefix [fixedPrefixLen]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return header{}, err
	}
	if string(prefix[:len(magic)]) != magic {
		return header{}, fmt.Errorf("%w: magic %q, want %q", ErrBadHeader, prefix[:len(magic)], magic)
	}
	if v := prefix[len(magic)]; v != protocolVersion {
		return header{}, fmt.Errorf("%w: protocol version %d, this node speaks %d", ErrBadHeader, v, protocolVersion)
	}
	// A uvarint below 128 is one byte; a set continuation bit means either a
	// length over the limit or a non-minimal encoding, and both are refused.
	n := int(prefix[fixedPrefixLen-1])
	if n >= 0x80 || n > maxClusterIDLen {
		return header{}, fmt.Errorf("%w: cluster id length byte 0x%02x, limit %d bytes", ErrBadHeader, n, maxClusterIDLen)
	}
	var rest [maxClusterIDLen + partitionLen]byte
	if _, err := io.ReadFull(r, rest[:n+partitionLen]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return header{}, err
	}
	return header{
		clusterID: string(rest[:n]),
		partition: binary.BigEndian.Uint32(rest[n : n+partitionLen]),
	}, nil
}
