package ics

import (
	"bytes"
	"testing"
)

// What the reassembly hands over is exactly the bytes written: same
// length, no spare capacity, owned by the service.
func TestReassemblyExposesOnlyWhatWasWritten(t *testing.T) {
	var r reassembly
	want := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	r.start(len(want), allocNow)
	var rel scribbler
	for off := 0; off < len(want); off += 4096 {
		r.add(rel.frame(want[off:min(off+4096, len(want))]))
		if r.len() != min(off+4096, len(want)) {
			t.Fatalf("len %d after %d bytes", r.len(), min(off+4096, len(want)))
		}
	}
	got := r.whole()
	if !bytes.Equal(got, want) {
		t.Fatal("reassembled message differs from what was added")
	}
	rel.allReleased(t)
	if cap(got) != len(got) {
		t.Fatalf("whole has capacity %d beyond its %d bytes", cap(got), len(got))
	}
	if r.len() != 0 || r.whole() != nil {
		t.Fatal("whole did not forget the message")
	}
	// The service owns the bytes: writing them must be fine.
	got[0] = 'x'
	if want[0] == 'x' {
		t.Fatal("whole aliases the chunks added")
	}
}

func TestReassemblyEmptyAndReset(t *testing.T) {
	var r reassembly
	r.start(0, allocNow)
	if got := r.whole(); got == nil || len(got) != 0 {
		t.Fatalf("empty message came out as %v", got)
	}
	var rel scribbler
	r.start(10, allocNow)
	r.add(rel.frame([]byte("abc")))
	r.reset()
	if r.len() != 0 || r.whole() != nil {
		t.Fatal("reset kept the message")
	}
	rel.allReleased(t)
	// Chunks still waiting for the buffer go back when the message is
	// abandoned, by reset or by the next message's start.
	for _, abandon := range []func(){r.reset, func() { r.start(3, allocNow) }} {
		var late scribbler
		r.start(10, func(int, func([]byte)) {})
		r.add(late.frame([]byte("abc")))
		r.add(late.frame([]byte("def")))
		if len(late.released) != 0 {
			t.Fatal("a chunk waiting for the buffer was released")
		}
		abandon()
		late.allReleased(t)
	}
}

// scribbler stands for the stream: it makes a frame around each chunk
// and, when a frame is released, checks that it was not released before
// and overwrites it, as the simulator does, so that a chunk read after
// its release shows as corruption.
type scribbler struct {
	frames   []*byte
	released map[*byte]bool
}

func (s *scribbler) frame(chunk []byte) (c, frame []byte, from releaser) {
	f := append([]byte("HEADER"), chunk...)
	s.frames = append(s.frames, &f[0])
	return f[6:], f, s
}

func (s *scribbler) Release(f []byte) {
	if s.released == nil {
		s.released = map[*byte]bool{}
	}
	if s.released[&f[0]] {
		panic("frame released twice")
	}
	s.released[&f[0]] = true
	for i := range f {
		f[i] = 0xA5
	}
}

func (s *scribbler) allReleased(t *testing.T) {
	t.Helper()
	for i, f := range s.frames {
		if !s.released[f] {
			t.Fatalf("frame %d of %d was not released", i, len(s.frames))
		}
	}
}

// allocNow is node.Env.Alloc as the simulator does it.
func allocNow(size int, f func([]byte)) { f(make([]byte, size)) }

// The buffer may come after some chunks (the real runtime makes large
// ones on another goroutine), or never before the last one: either way
// the message comes out whole and in order, and a buffer that comes
// after the message was abandoned goes nowhere.
func TestReassemblyBufferComesLate(t *testing.T) {
	want := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	const chunk = 100
	for _, late := range []int{0, 1, 7, len(want) / chunk, -1} {
		var r reassembly
		var rel scribbler
		var deliver func([]byte)
		r.start(len(want), func(size int, f func([]byte)) { deliver = f })
		for i, off := 0, 0; off < len(want); i, off = i+1, off+chunk {
			if i == late {
				deliver(make([]byte, len(want)))
			}
			r.add(rel.frame(want[off : off+chunk]))
		}
		if got := r.whole(); !bytes.Equal(got, want) || cap(got) != len(got) {
			t.Fatalf("buffer after %d chunks: message came out wrong", late)
		}
		rel.allReleased(t)
		if late < 0 {
			deliver(make([]byte, len(want))) // after the message: ignored
			r.start(10, allocNow)
			r.add([]byte("0123456789"), nil, nil)
			if got := r.whole(); string(got) != "0123456789" {
				t.Fatalf("a late buffer spoiled the next message: %q", got)
			}
		}
	}
}

// A sender's window of bulk frames, acknowledged in batches, must be
// reused from the free list rather than allocated afresh: the free list
// holds at least what one acknowledgement frees.
func TestFreeFramesCoverAnAckBatch(t *testing.T) {
	c := Config{Keyring: nil}
	c.Window, c.LowWater, c.ChunkSize = 256, 128<<10, 64<<10
	if got, min := c.maxFreeFrames(), c.Window/4; got < min {
		t.Fatalf("free list of %d frames, an ack frees %d", got, min)
	}
}
