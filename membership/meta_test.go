package membership

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func drawString(t *rapid.T, label string) string {
	// Arbitrary bytes, not only valid UTF-8: the codec must be exact for any string.
	return string(rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, label))
}

func drawMeta(t *rapid.T) Meta {
	return Meta{
		Name:       drawString(t, "name"),
		ClientAddr: drawString(t, "client"),
		PeerAddr:   drawString(t, "peer"),
		GossipAddr: drawString(t, "gossip"),
		ClusterID:  drawString(t, "cluster"),
		Partitions: rapid.Uint32().Draw(t, "partitions"),
		Replicas:   rapid.Uint32().Draw(t, "replicas"),
		BootNonce:  rapid.Uint64().Draw(t, "nonce"),
		Leading:    rapid.SliceOfN(rapid.Byte(), 0, 400).Draw(t, "leading"),
		Draining:   rapid.Bool().Draw(t, "draining"),
	}
}

func TestMetaRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := drawMeta(t)
		leaving := rapid.Bool().Draw(t, "leaving")
		wire := encodeMeta(m, leaving)
		got, gotLeaving, err := decodeMeta(wire)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		want := m.clone() // empty Leading decodes as nil
		if !reflect.DeepEqual(got, want) || gotLeaving != leaving {
			t.Fatalf("round trip: got %+v leaving=%v, want %+v leaving=%v", got, gotLeaving, want, leaving)
		}
		// The size check agrees with the largest encoding.
		err = checkMetaSize(m)
		if tooLarge := len(encodeMeta(m, true)) > MetaMaxSize; tooLarge != errors.Is(err, ErrMetaTooLarge) {
			t.Fatalf("checkMetaSize = %v for %d bytes", err, len(encodeMeta(m, true)))
		}
	})
}

func TestMetaDecodeNeverPanics(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var b []byte
		if rapid.Bool().Draw(t, "mutate") {
			// Corrupt a valid encoding: truncate it or flip a byte.
			b = encodeMeta(drawMeta(t), false)
			if i := rapid.IntRange(0, len(b)-1).Draw(t, "i"); rapid.Bool().Draw(t, "truncate") {
				b = b[:i]
			} else {
				b[i] ^= rapid.Byte().Draw(t, "x")
			}
		} else {
			b = rapid.SliceOfN(rapid.Byte(), 0, 100).Draw(t, "bytes")
		}
		if _, _, err := decodeMeta(b); err != nil && !errors.Is(err, ErrInvalidMeta) {
			t.Fatalf("decode error %v does not wrap ErrInvalidMeta", err)
		}
	})
}

func TestMetaDecodeIgnoresTrailingBytes(t *testing.T) {
	m := Meta{Name: "n1", Partitions: 64, Replicas: 3, Leading: []byte{1}}
	got, _, err := decodeMeta(append(encodeMeta(m, false), 0xff, 0x01))
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("decode with a newer version's trailing field: %+v, %v", got, err)
	}
	if _, _, err := decodeMeta(append([]byte{2}, encodeMeta(m, false)[1:]...)); !errors.Is(err, ErrInvalidMeta) {
		t.Fatalf("unknown version: err = %v, want ErrInvalidMeta", err)
	}
}

func TestMetaSizeLimit(t *testing.T) {
	base := Meta{Name: "n1", ClientAddr: "10.0.0.1:7101", PeerAddr: "10.0.0.1:7201",
		GossipAddr: "10.0.0.1:7301", ClusterID: "c-0123456789abcdef", Partitions: 4096, Replicas: 3,
		BootNonce: 1<<64 - 1}
	// The largest Leading that fits, found by growing it.
	fit := 0
	for {
		m := base
		m.Leading = make([]byte, fit+1)
		if len(encodeMeta(m, true)) > MetaMaxSize {
			break
		}
		fit++
	}
	if fit < 64 {
		t.Fatalf("only %d bytes of Leading fit (%d partitions); want at least 512 partitions", fit, fit*8)
	}
	t.Logf("Leading fits up to %d bytes (%d partitions) with these addresses", fit, fit*8)

	tests := []struct {
		name    string
		leading int
		wantErr error
	}{
		{"empty", 0, nil},
		{"64 partitions", 8, nil},
		{"largest that fits", fit, nil},
		{"one byte over", fit + 1, ErrMetaTooLarge},
		{"far over", 4 * MetaMaxSize, ErrMetaTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base
			m.Leading = make([]byte, tt.leading)
			err := checkMetaSize(m)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("checkMetaSize = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "limit is 512") {
				t.Fatalf("error %q does not state the limit", err)
			}
		})
	}
}

func TestLeadingBitmap(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ids := rapid.SliceOfN(rapid.Uint32Range(0, 1023), 0, 50).Draw(t, "ids")
		m := Meta{Leading: LeadingBitmap(ids)}
		set := make(map[uint32]bool)
		for _, id := range ids {
			set[id] = true
		}
		for p := range uint32(1100) {
			if m.Leads(p) != set[p] {
				t.Fatalf("Leads(%d) = %v with ids %v", p, m.Leads(p), ids)
			}
		}
	})
	if got := LeadingBitmap([]uint32{0, 9}); !bytes.Equal(got, []byte{0x01, 0x02}) {
		t.Fatalf("LeadingBitmap(0, 9) = %x, want 0102 (bit i%%8 of byte i/8)", got)
	}
}

func TestCheckPeer(t *testing.T) {
	local := Meta{Name: "n1", ClusterID: "c1", Partitions: 64}
	tests := []struct {
		name     string
		local    Meta
		peer     Meta
		joining  bool
		wantErr  error
		wantText []string
	}{
		{"same cluster", local, Meta{Name: "n2", ClusterID: "c1", Partitions: 64}, false, nil, nil},
		{"peer without cluster id", local, Meta{Name: "n2", Partitions: 64}, false, nil, nil},
		{"local without cluster id", Meta{Name: "n1", Partitions: 64},
			Meta{Name: "n2", ClusterID: "c9", Partitions: 64}, false, nil, nil},
		{"other cluster, peer joins us", local, Meta{Name: "n4", ClusterID: "c2", Partitions: 64}, false,
			ErrClusterMismatch,
			[]string{"node n4 has cluster id c2, this cluster is c1", "start n4 with an empty --data-dir"}},
		{"other cluster, we join", local, Meta{Name: "n4", ClusterID: "c2", Partitions: 64}, true,
			ErrClusterMismatch,
			[]string{"node n4 has cluster id c2", "this node n1 has cluster id c1", "start n1 with an empty --data-dir"}},
		{"other partition count", local, Meta{Name: "n4", Partitions: 32}, false, ErrPartitionMismatch,
			[]string{"node n4 uses 32 partitions", "start n4 with --partitions 64"}},
		{"other partition count, we join", local, Meta{Name: "n4", Partitions: 32}, true,
			ErrPartitionMismatch, []string{"start n1 with --partitions 32"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPeer(tt.local, tt.peer, tt.joining)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("checkPeer = %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}
