package wire

import "fmt"

// ReplayWindowSize is how many sequence numbers behind the highest one
// seen a ReplayWindow still tracks. Datagrams reorder, so a window of one
// would drop good frames; 1024 covers any reordering a cluster
// interconnect produces, at 128 bytes per sender incarnation.
const ReplayWindowSize = 1024

const windowWords = ReplayWindowSize / 64

// ReplayWindow rejects replayed frames from one sender incarnation (one
// From, FromBoot pair, towards this receiver's incarnation). It
// remembers the highest sequence number accepted, top, and which of the
// ReplayWindowSize numbers ending at top have been accepted, as a bitmap.
// Accept takes any number not seen before that is above top or within the
// window below it, so reordered datagrams get through; it never takes a
// number twice.
//
// Use one window per sender incarnation and throw it away (or Reset it)
// when that incarnation ends: a new FromBoot starts again from 1. Call
// Accept only for frames that Open accepted and Header.Check passed, or
// forged sequence numbers could move the window.
//
// The zero ReplayWindow is ready for use. It is not safe for concurrent
// use: like the core that owns it, it is driven one event at a time.
type ReplayWindow struct {
	top uint64 // highest accepted seq; 0 before the first
	// seen has bit (s % ReplayWindowSize) set for each accepted s in
	// (top-ReplayWindowSize, top]. Those numbers map to distinct bits.
	seen [windowWords]uint64
}

// Accept reports whether seq is new and recent enough, and if so records
// it. It refuses seq 0 (numbering starts at 1, so 0 is never a real
// frame), any seq already accepted, and any seq ReplayWindowSize or more
// below the highest accepted.
func (w *ReplayWindow) Accept(seq uint64) bool {
	if seq == 0 {
		return false
	}
	if seq > w.top {
		// Slide forward: the numbers in (top, seq] take the bits of
		// numbers that fall out of the window, so clear them.
		if d := seq - w.top; d >= ReplayWindowSize {
			w.seen = [windowWords]uint64{}
		} else {
			w.clear(w.top+1, d)
		}
		w.top = seq
		w.set(seq)
		return true
	}
	if w.top-seq >= ReplayWindowSize {
		return false // too old to tell: refuse rather than risk a replay
	}
	if w.has(seq) {
		return false
	}
	w.set(seq)
	return true
}

// Reset forgets every sequence number, as for a new sender incarnation.
func (w *ReplayWindow) Reset() { *w = ReplayWindow{} }

func (w *ReplayWindow) has(seq uint64) bool {
	i := seq % ReplayWindowSize
	return w.seen[i/64]&(1<<(i%64)) != 0
}

func (w *ReplayWindow) set(seq uint64) {
	i := seq % ReplayWindowSize
	w.seen[i/64] |= 1 << (i % 64)
}

// clear clears the bits of the n numbers from seq on, a word at a time:
// at most windowWords+1 steps. Counting n down (not comparing seq to an
// end) keeps it correct when the range ends at the top of uint64.
func (w *ReplayWindow) clear(seq, n uint64) {
	if n >= ReplayWindowSize {
		panic(fmt.Sprintf("wire: ReplayWindow.clear of %d numbers", n))
	}
	for n > 0 {
		i := seq % ReplayWindowSize
		bit := i % 64
		k := min(64-bit, n) // how many of them fall in this word, 1 to 64
		w.seen[i/64] &^= (^uint64(0) >> (64 - k)) << bit
		seq += k
		n -= k
	}
}
