package transport

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		h    header
	}{
		{"empty cluster id", header{clusterID: "", partition: 0}},
		{"typical", header{clusterID: "prod-eu-1", partition: 17}},
		{"max partition", header{clusterID: "c", partition: 1<<32 - 1}},
		{"max cluster id", header{clusterID: strings.Repeat("x", maxClusterIDLen), partition: 63}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendHeader(nil, tt.h)
			if len(b) > maxHeaderLen {
				t.Fatalf("header is %d bytes, over maxHeaderLen %d", len(b), maxHeaderLen)
			}
			r := bytes.NewReader(append(b, "raft bytes"...))
			got, err := readHeader(r)
			if err != nil {
				t.Fatalf("readHeader: %v", err)
			}
			if got != tt.h {
				t.Fatalf("got %+v, want %+v", got, tt.h)
			}
			if r.Len() != len("raft bytes") {
				t.Fatalf("readHeader consumed beyond the header: %d bytes left", r.Len())
			}
		})
	}
}

func TestReadHeaderRejects(t *testing.T) {
	valid := appendHeader(nil, header{clusterID: "abc", partition: 5})
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"truncated prefix", valid[:3], io.ErrUnexpectedEOF},
		{"truncated body", valid[:len(valid)-1], io.ErrUnexpectedEOF},
		{"prefix only", valid[:fixedPrefixLen], io.ErrUnexpectedEOF},
		{"wrong magic", append([]byte("RKV2"), valid[4:]...), ErrBadHeader},
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), ErrBadHeader},
		{"future version", append([]byte("RKV1\x02"), valid[5:]...), ErrBadHeader},
		{"length 65", []byte("RKV1\x01\x41" + strings.Repeat("x", 69)), ErrBadHeader},
		{"length continuation", []byte("RKV1\x01\x80\x01abcd"), ErrBadHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readHeader(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("readHeader(%q) = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

// FuzzReadHeader: any input either fails cleanly or decodes to a header
// that re-encodes to exactly the bytes consumed.
func FuzzReadHeader(f *testing.F) {
	f.Add(appendHeader(nil, header{clusterID: "abc", partition: 5}))
	f.Add(appendHeader(nil, header{clusterID: strings.Repeat("z", 64), partition: 1 << 31}))
	f.Add([]byte("RKV1\x01\x80\x01"))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := readHeader(r)
		if err != nil {
			return
		}
		consumed := data[:len(data)-r.Len()]
		if enc := appendHeader(nil, h); !bytes.Equal(enc, consumed) {
			t.Fatalf("decoded %+v re-encodes to %x, consumed %x", h, enc, consumed)
		}
	})
}
