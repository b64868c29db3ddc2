package ics

// reassembly collects the chunks of one out-of-line message into the one
// contiguous buffer the service is handed.
//
// The buffer is made at the first chunk, at the announced size, and Go
// zeroes it there: for a 64 MiB message that is a stall of several
// milliseconds on the event loop once per transfer, which shows in the
// p99 of small calls made beside a bulk transfer. Skipping the zeroing
// would need unsafe (strings.Builder's unzeroed buffer turned back into
// a byte slice), which the purity gate (internal/purity) keeps out of the
// cores: not worth an exception to the gate.
type reassembly struct {
	buf   []byte // nil until start
	total int
}

// start begins a message of total bytes.
func (r *reassembly) start(total int) {
	r.buf = make([]byte, 0, total)
	r.total = total
}

// add appends a chunk; the caller has checked that it fits in total, so
// the buffer never grows.
func (r *reassembly) add(chunk []byte) { r.buf = append(r.buf, chunk...) }

// len is how many bytes have arrived.
func (r *reassembly) len() int { return len(r.buf) }

// whole returns the assembled message, of exactly len() bytes, and
// forgets it.
func (r *reassembly) whole() []byte {
	if r.buf == nil {
		return nil
	}
	b := r.buf[:len(r.buf):len(r.buf)]
	r.reset()
	return b
}

// reset abandons the message.
func (r *reassembly) reset() { *r = reassembly{} }
