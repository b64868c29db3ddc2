package ics

// reassembly collects the chunks of one out-of-line message into the one
// contiguous buffer the service is handed.
//
// The buffer is asked of the Env (node.Env.Alloc) at the first chunk,
// at the announced size. Go zeroes what it allocates, and for a 64 MiB
// message that took 5-10 ms: done inside the callback, it held up every
// other frame the node had to handle, which showed as the p99 of small
// calls made beside a bulk transfer. (Skipping the zeroing would need
// unsafe, which the purity gate, internal/purity, keeps out of the
// cores.) The real runtime makes a large buffer on another goroutine,
// so chunks can arrive before it: they wait in pending, as the frames
// they arrived in, and move into the buffer a few at a time as more
// chunks come, so that no single callback copies megabytes. If the
// last chunk comes first, the message cannot wait (later messages of
// its channel must not overtake it): whole makes the buffer itself and
// the late one is dropped.
//
// Once a chunk is in the buffer, the frame it came in is given back to
// its stream (node.Stream.Release), which reuses the memory for the
// frames that follow; so is a waiting one when the message is abandoned.
type reassembly struct {
	made    *[]byte // where Alloc leaves the buffer; nil until start
	buf     []byte  // the buffer once taken from made; nil before
	pending []held  // chunks not yet in buf, in order; pending[head:] wait
	head    int
	n       int // bytes arrived, in buf and pending
	total   int
}

// held is a chunk waiting for the buffer, with the frame it is part of
// and where that frame goes back once the chunk is copied (nil: nowhere).
type held struct {
	chunk []byte
	frame []byte
	from  releaser
}

// releaser takes back a received frame: a node.Stream.
type releaser interface{ Release(frame []byte) }

func (h *held) release() {
	if h.from != nil {
		h.from.Release(h.frame)
	}
	*h = held{}
}

// catchUp is how many waiting chunks add moves into the buffer besides
// its own: enough that the backlog of a slow allocation drains long
// before the message ends, few enough that a callback copies a few
// hundred kilobytes at most.
const catchUp = 4

// start begins a message of total bytes, asking alloc for its buffer.
func (r *reassembly) start(total int, alloc func(int, func([]byte))) {
	r.reset()
	made := new([]byte)
	r.made, r.total = made, total
	// The callback writes only its own slot: if this message is
	// abandoned before the buffer comes, the buffer is just dropped.
	alloc(total, func(b []byte) { *made = b[:0] })
}

// add appends a chunk, which is part of frame; the caller has checked
// that it fits in total. The chunk may be kept until the buffer is made,
// so the caller must not reuse the frame: from.Release gets it once the
// chunk is copied (from may be nil).
func (r *reassembly) add(chunk, frame []byte, from releaser) {
	r.n += len(chunk)
	h := held{chunk: chunk, frame: frame, from: from}
	if r.take() && r.head == len(r.pending) {
		r.buf = append(r.buf, chunk...)
		h.release()
		return
	}
	r.pending = append(r.pending, h)
	r.drain(catchUp)
}

// take reports whether the buffer is there, taking it from made if it
// has come.
func (r *reassembly) take() bool {
	if r.buf == nil && r.made != nil && *r.made != nil {
		r.buf, *r.made = *r.made, nil
	}
	return r.buf != nil
}

// drain moves up to k waiting chunks into the buffer, if it is there.
func (r *reassembly) drain(k int) {
	if !r.take() {
		return
	}
	for ; k > 0 && r.head < len(r.pending); k-- {
		r.buf = append(r.buf, r.pending[r.head].chunk...)
		r.pending[r.head].release()
		r.head++
	}
	if r.head == len(r.pending) {
		r.pending, r.head = r.pending[:0], 0
	}
}

// len is how many bytes have arrived.
func (r *reassembly) len() int { return r.n }

// whole returns the assembled message, of exactly len() bytes, and
// forgets it.
func (r *reassembly) whole() []byte {
	if r.made == nil {
		return nil
	}
	if !r.take() {
		r.buf = make([]byte, 0, r.total)
	}
	r.drain(len(r.pending))
	b := r.buf[:len(r.buf):len(r.buf)]
	r.reset()
	return b
}

// reset abandons the message, giving back the frames of the chunks that
// still wait. The array of pending is kept for the next message.
func (r *reassembly) reset() {
	for i := r.head; i < len(r.pending); i++ {
		r.pending[i].release()
	}
	*r = reassembly{pending: r.pending[:0]}
}
