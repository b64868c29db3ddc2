package host

import (
	"bytes"
	"sync"
	"testing"

	"github.com/clusterinfra/ci/node"
)

// A released bulk-sized buffer is handed out again (same memory), at
// most once; small and huge ones, and a second release of the same
// buffer, are not kept.
func TestFramePoolReusesReleasedBuffers(t *testing.T) {
	var p framePool
	a := p.get(64<<10 + 37)
	if len(a) != 64<<10+37 || cap(a)%poolStep != 0 {
		t.Fatalf("get: len %d cap %d", len(a), cap(a))
	}
	p.put(a)
	p.put(a) // released twice: kept once
	b := p.get(64 << 10)
	if &b[0] != &a[0] {
		t.Fatal("a released buffer was not reused")
	}
	if c := p.get(64 << 10); &c[0] == &a[0] {
		t.Fatal("a buffer released twice was handed out twice")
	}
	// Too small for the size asked: not handed out.
	p.put(make([]byte, poolMin))
	if d := p.get(poolMin + 1); len(d) != poolMin+1 {
		t.Fatalf("get(%d) returned %d bytes", poolMin+1, len(d))
	}
	p.put(make([]byte, 100))
	p.put(make([]byte, poolMax+poolStep+1))
	for _, f := range p.free {
		if cap(f) < poolMin || cap(f) > poolMax+poolStep {
			t.Fatalf("kept a buffer of %d bytes", cap(f))
		}
	}
	for range 2 * poolKeep {
		p.put(make([]byte, poolMin))
	}
	if len(p.free) > poolKeep {
		t.Fatalf("kept %d buffers, bound %d", len(p.free), poolKeep)
	}
}

// A stream reader reuses the buffer of a message the Handler released:
// later bulk messages arrive, intact, in memory that was given back.
func TestStreamReleaseReusesTheBuffer(t *testing.T) {
	var mu sync.Mutex
	var copies [][]byte
	seen := map[*byte]int{}
	prep := func(r *rec) {
		r.onMsg = func(_ *rec, s node.Stream, msg []byte) {
			mu.Lock()
			copies = append(copies, bytes.Clone(msg))
			seen[&msg[0]]++
			mu.Unlock()
			s.Release(msg)
		}
	}
	a := startNode(t, 1, 1, nil, nil)
	b := startNode(t, 2, 1, nil, prep)
	introduce(t, a, b)
	s, _ := dial(t, a, b, 0)
	const n, size = 200, 64 << 10
	msg := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, size+i) }
	for i := range n {
		call(t, a, func(*rec) {
			if err := s.Send(msg(i)); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
		})
		// One at a time, so that each is released before the next is read.
		waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(copies) == i+1 }, "message %d", i)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, c := range copies {
		if !bytes.Equal(c, msg(i)) {
			t.Fatalf("message %d arrived changed", i)
		}
	}
	if len(seen) > n/10 {
		t.Fatalf("%d messages arrived in %d distinct buffers: released ones were not reused", n, len(seen))
	}
}
