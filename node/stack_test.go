package node

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

func TestWithGrownStackServesTheWrappedHandler(t *testing.T) {
	h := withGrownStack(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, "path="+r.URL.Path)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ringkv.v1.KV/Get", nil))
	if rec.Code != http.StatusTeapot || rec.Body.String() != "path=/ringkv.v1.KV/Get" {
		t.Fatalf("got %d %q, want 418 \"path=/ringkv.v1.KV/Get\"", rec.Code, rec.Body.String())
	}
}

// deepCall uses about depth*512 bytes of stack, like a Pebble read does.
//
//go:noinline
func deepCall(depth int) byte {
	var pad [448]byte
	pad[depth%len(pad)] = byte(depth)
	if depth == 0 {
		return pad[0]
	}
	return deepCall(depth-1) + pad[depth%len(pad)]
}

// BenchmarkRequestStack compares a fresh goroutine that needs ~12 KiB of
// stack, as every HTTP/2 request does, with and without growStack first.
func BenchmarkRequestStack(b *testing.B) {
	for _, grow := range []bool{false, true} {
		name := "default"
		if grow {
			name = "grown"
		}
		b.Run(name, func(b *testing.B) {
			var wg sync.WaitGroup
			for b.Loop() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if grow {
						growStack()
					}
					deepCall(24)
				}()
				wg.Wait()
			}
		})
	}
}
