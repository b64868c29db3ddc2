package sim

import (
	"fmt"
	"io"
	"strconv"
)

// tracer keeps the run's trace: a digest of every event, always, and the
// readable lines only when someone asked for them. The digest is computed
// over the same fields the line shows, in a fixed binary form, so it does
// not depend on whether lines are being written: tracing a run does not
// change its digest.
type tracer struct {
	h   uint64
	n   uint64 // events hashed
	out io.Writer
	buf []byte
	err error
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func newTracer(out io.Writer) *tracer { return &tracer{h: fnvOffset, out: out} }

// mix folds one 64-bit word into the digest. It is FNV-1a over words
// rather than bytes, followed by a multiply-xorshift so that every input
// bit reaches every output bit.
func (t *tracer) mix(x uint64) {
	h := (t.h ^ x) * fnvPrime
	h ^= h >> 29
	t.h = h
}

func (t *tracer) mixString(s string) {
	t.mix(uint64(len(s)))
	var w uint64
	for i := 0; i < len(s); i++ {
		w = w<<8 | uint64(s[i])
		if i%8 == 7 {
			t.mix(w)
			w = 0
		}
	}
	t.mix(w)
}

// record hashes one event and, when lines are kept, writes it as
//
//	<seconds> <node> <kind> <peer> <a> <b> <note>
//
// with zero fields left out. Kinds are short words; see kindNames.
func (t *tracer) record(at int64, k kind, node, peer uint32, a, b uint64, note string) {
	t.n++
	t.mix(uint64(at))
	t.mix(uint64(k)<<32 | uint64(node))
	t.mix(uint64(peer))
	t.mix(a)
	t.mix(b)
	if note != "" {
		t.mixString(note)
	}
	if t.out == nil || t.err != nil {
		return
	}
	b0 := t.buf[:0]
	b0 = appendSeconds(b0, at)
	b0 = append(b0, ' ')
	if node != 0 {
		b0 = append(b0, 'n')
		b0 = strconv.AppendUint(b0, uint64(node), 10)
	} else {
		b0 = append(b0, '-')
	}
	b0 = append(b0, ' ')
	b0 = append(b0, kindNames[k]...)
	b0 = kindFormat[k](b0, peer, a, b)
	if note != "" {
		b0 = append(b0, ' ')
		b0 = append(b0, note...)
	}
	b0 = append(b0, '\n')
	t.buf = b0
	_, t.err = t.out.Write(b0)
}

// appendSeconds writes nanoseconds as seconds with nine decimals, without
// floating point so that the text is exact.
func appendSeconds(b []byte, ns int64) []byte {
	if ns < 0 {
		b = append(b, '-')
		ns = -ns
	}
	b = strconv.AppendInt(b, ns/1e9, 10)
	b = append(b, '.')
	frac := ns % 1e9
	var d [9]byte
	for i := 8; i >= 0; i-- {
		d[i] = byte('0' + frac%10)
		frac /= 10
	}
	return append(b, d[:]...)
}

// Digest is the hex digest of the trace so far.
func (t *tracer) digest() string { return fmt.Sprintf("%016x", t.h) }
