package node

import "net/http"

// requestStackBytes is how much stack a request goroutine gets before its
// handler runs. net/http starts each HTTP/2 request on a fresh goroutine with
// a small stack, and a Pebble read (plus Connect's decoding) is deep enough
// to outgrow it two or three times; every growth copies the whole stack and
// walks every frame on it (runtime.copystack was 17% of the server CPU under
// 64-client eventual gets). Growing it once, while only a few frames are on
// it, makes that a single cheap copy. 16 KiB is what a Pebble read needs
// (at 32 KiB the profile showed no further growth, but stacks that large
// bypass the runtime's per-P stack cache and cost more to allocate); measured
// with `make profile`: sampled CPU per eventual get 85 -> 69 us, per strong
// get 121 -> 111 us (docs/PERFORMANCE.md). The native protocol does not need
// it: package wire runs requests on reused workers, whose stacks stay grown.
const requestStackBytes = 16 << 10

// withGrownStack wraps h so that each request first grows its goroutine's
// stack to requestStackBytes.
func withGrownStack(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		growStack()
		h.ServeHTTP(w, r)
	})
}

// growStack uses a frame of about requestStackBytes, which makes the runtime
// grow the goroutine's stack to fit it; the space stays after it returns.
//
//go:noinline
func growStack() byte {
	var buf [requestStackBytes - 4<<10]byte
	return touch(buf[:])
}

//go:noinline
func touch(b []byte) byte { return b[len(b)-1] }
