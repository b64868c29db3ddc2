package host

import "sync"

// framePool is the free list of message buffers that a node's stream
// readers reuse once the Handler gives them back (node.Stream.Release).
// A bulk transfer reads a frame of a chunk's size (64 KiB by default)
// after another; each was a fresh buffer, which the runtime zeroed
// before the reader overwrote it, and then garbage: a tenth of the
// transfer's CPU time. Small messages are not pooled (the reader's own
// buffer holds them and making them is cheap), nor are huge ones (rare,
// and the pool would pin them).
type framePool struct {
	mu   sync.Mutex
	free [][]byte
}

const (
	poolMin  = 8 << 10 // smallest message whose buffer is pooled
	poolMax  = 1 << 20 // largest
	poolKeep = 32      // buffers kept at most (2 MiB of 64 KiB chunks)
	poolStep = 4 << 10 // pooled buffers are made a multiple of this, so that sizes a few bytes apart share them
)

// get returns a buffer of size bytes, reused if one is free. Its contents
// are whatever was there: the reader overwrites all of it.
func (p *framePool) get(size int) []byte {
	if size < poolMin || size > poolMax {
		return make([]byte, size)
	}
	p.mu.Lock()
	for i := len(p.free) - 1; i >= 0; i-- {
		if b := p.free[i]; cap(b) >= size {
			last := len(p.free) - 1
			p.free[i], p.free[last] = p.free[last], nil
			p.free = p.free[:last]
			p.mu.Unlock()
			return b[:size]
		}
	}
	p.mu.Unlock()
	return make([]byte, size, (size+poolStep-1)/poolStep*poolStep)
}

// put takes back a buffer that get may hand out again. One already in
// the list (released twice) is not added again, so that two readers
// never get the same buffer.
func (p *framePool) put(b []byte) {
	if cap(b) < poolMin || cap(b) > poolMax {
		return
	}
	b = b[:1]
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) >= poolKeep {
		return
	}
	for _, f := range p.free {
		if &f[:1][0] == &b[0] {
			return
		}
	}
	p.free = append(p.free, b[:0])
}
