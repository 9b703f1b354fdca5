package storage

import "encoding/binary"

// Key spaces. The first byte of every key says who owns it; see the package
// documentation for the full layout.
const (
	spaceMeta      byte = 0x01 // node metadata: spaceMeta + name
	spacePartition byte = 0x02 // spacePartition + pid (4 bytes BE) + kind + ...

	kindLog    byte = 0x01 // + raft index (8 bytes BE)
	kindStable byte = 0x02 // + raft stable-store key bytes
	kindFSM    byte = 0x03 // owned by raftfsm

	partitionPrefixLen = 1 + 4
	kindPrefixLen      = partitionPrefixLen + 1
	logKeyLen          = kindPrefixLen + 8
)

// PartitionPrefix returns the prefix under which every key of partition pid
// lives: its Raft log, its Raft stable store and its FSM data.
func PartitionPrefix(pid uint32) []byte {
	b := make([]byte, partitionPrefixLen)
	b[0] = spacePartition
	binary.BigEndian.PutUint32(b[1:], pid)
	return b
}

// FSMPrefix returns the prefix of partition pid's FSM data. The raftfsm
// package owns every key under it; storage only deletes it wholesale in
// DeletePartition. The returned slice is fresh, so callers may append to it.
func FSMPrefix(pid uint32) []byte { return kindPrefix(pid, kindFSM) }

// PrefixEnd returns the smallest key greater than every key that starts with
// prefix, for use as an exclusive upper bound. It returns nil (no upper bound)
// when no such key exists, that is when prefix is empty or all 0xff bytes.
func PrefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xff {
			end := make([]byte, i+1)
			copy(end, prefix)
			end[i]++
			return end
		}
	}
	return nil
}

// kindPrefix returns spacePartition + pid + kind, with room for a suffix.
func kindPrefix(pid uint32, kind byte) []byte {
	b := make([]byte, kindPrefixLen, kindPrefixLen+8)
	b[0] = spacePartition
	binary.BigEndian.PutUint32(b[1:], pid)
	b[partitionPrefixLen] = kind
	return b
}

// putLogKey writes the log key of (pid, index) into dst, which must hold
// logKeyLen bytes. Big-endian index bytes make the byte order of the keys
// the numeric order of the indexes, which the bound seeks rely on.
func putLogKey(dst []byte, pid uint32, index uint64) {
	_ = dst[logKeyLen-1]
	dst[0] = spacePartition
	binary.BigEndian.PutUint32(dst[1:], pid)
	dst[partitionPrefixLen] = kindLog
	binary.BigEndian.PutUint64(dst[kindPrefixLen:], index)
}

// logKeyIndex extracts the index from a log key of partition space, reporting
// false when the key is not shaped like one.
func logKeyIndex(key []byte) (uint64, bool) {
	if len(key) != logKeyLen || key[0] != spacePartition || key[partitionPrefixLen] != kindLog {
		return 0, false
	}
	return binary.BigEndian.Uint64(key[kindPrefixLen:]), true
}

// stableKey returns the key of raft stable-store entry key of partition pid.
func stableKey(pid uint32, key []byte) []byte {
	b := make([]byte, kindPrefixLen+len(key))
	b[0] = spacePartition
	binary.BigEndian.PutUint32(b[1:], pid)
	b[partitionPrefixLen] = kindStable
	copy(b[kindPrefixLen:], key)
	return b
}

// metaKey returns the key of node metadata entry name.
func metaKey(name string) []byte {
	b := make([]byte, 1+len(name))
	b[0] = spaceMeta
	copy(b[1:], name)
	return b
}
