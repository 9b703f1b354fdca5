package raftfsm

import "encoding/binary"

// Keys under the partition's FSM prefix P. The byte after P says what a key
// holds, so the three kinds never collide and a snapshot can check each key:
//
//	P 'a'                  applied index, 8 bytes big-endian
//	P 'd' userKey          a user key: 8-byte big-endian version, then the value
//	P 's' clientID(8, BE)  the client's dedup record (see session.go)
const (
	tagApplied = 'a'
	tagData    = 'd'
	tagSession = 's'
)

// versionLen is the size of the version header before every stored value.
const versionLen = 8

func appliedKey(prefix []byte) []byte {
	return append(append([]byte(nil), prefix...), tagApplied)
}

// appendDataKey appends the storage key of user key k to dst[:0].
func appendDataKey(dst, prefix, k []byte) []byte {
	dst = append(dst[:0], prefix...)
	dst = append(dst, tagData)
	return append(dst, k...)
}

// appendSessionKey appends the storage key of a client's dedup record to dst[:0].
func appendSessionKey(dst, prefix []byte, clientID uint64) []byte {
	dst = append(dst[:0], prefix...)
	dst = append(dst, tagSession)
	return binary.BigEndian.AppendUint64(dst, clientID)
}

// validSuffix reports whether s (a key with the FSM prefix removed) may
// appear in a snapshot stream: a user key or a dedup record. The applied
// index is carried in the snapshot header instead.
func validSuffix(s []byte) bool {
	switch {
	case len(s) >= 2 && s[0] == tagData:
		return true
	case len(s) == 9 && s[0] == tagSession:
		return true
	}
	return false
}
