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
	for off := 0; off < len(want); off += 4096 {
		r.add(want[off:min(off+4096, len(want))])
		if r.len() != min(off+4096, len(want)) {
			t.Fatalf("len %d after %d bytes", r.len(), min(off+4096, len(want)))
		}
	}
	got := r.whole()
	if !bytes.Equal(got, want) {
		t.Fatal("reassembled message differs from what was added")
	}
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
	r.start(10, allocNow)
	r.add([]byte("abc"))
	r.reset()
	if r.len() != 0 || r.whole() != nil {
		t.Fatal("reset kept the message")
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
		var deliver func([]byte)
		r.start(len(want), func(size int, f func([]byte)) { deliver = f })
		for i, off := 0, 0; off < len(want); i, off = i+1, off+chunk {
			if i == late {
				deliver(make([]byte, len(want)))
			}
			r.add(want[off : off+chunk])
		}
		if got := r.whole(); !bytes.Equal(got, want) || cap(got) != len(got) {
			t.Fatalf("buffer after %d chunks: message came out wrong", late)
		}
		if late < 0 {
			deliver(make([]byte, len(want))) // after the message: ignored
			r.start(10, allocNow)
			r.add([]byte("0123456789"))
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
