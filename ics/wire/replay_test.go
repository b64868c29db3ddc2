package wire

import (
	"fmt"
	"math"
	"testing"
)

func TestReplayWindow(t *testing.T) {
	const W = ReplayWindowSize
	type op struct {
		seq  uint64
		want bool
	}
	seqs := func(want bool, from, to uint64) []op {
		var ops []op
		for i := range to - from + 1 { // counted, so that to may be MaxUint64
			ops = append(ops, op{from + i, want})
		}
		return ops
	}
	cat := func(parts ...[]op) []op {
		var ops []op
		for _, p := range parts {
			ops = append(ops, p...)
		}
		return ops
	}
	for _, tc := range []struct {
		name string
		ops  []op
	}{
		{"seq 0 never", []op{{0, false}, {1, true}, {0, false}}},
		{"in order", seqs(true, 1, 3000)},
		{"in order, then all again", cat(seqs(true, 1, 2000), seqs(false, 1, 2000))},
		{"duplicates", []op{{1, true}, {1, false}, {2, true}, {2, false}, {1, false}}},
		{"reorder within window", []op{{5, true}, {3, true}, {4, true}, {1, true}, {2, true}, {3, false}, {6, true}}},
		{"gaps filled later", []op{{10, true}, {20, true}, {15, true}, {11, true}, {15, false}, {19, true}, {10, false}}},
		{"first seq high", []op{{5000, true}, {5000 - W + 1, true}, {5000 - W, false}, {1, false}}},
		{"oldest in window", []op{{W + 1, true}, {2, true}, {1, false}, {2, false}}},
		{"too old after slide", []op{{1, true}, {2, true}, {W + 2, true}, {2, false}, {3, true}, {1, false}}},
		{"slot reused after slide", []op{{3, true}, {W + 3, true}, {3, false}, {W + 3, false}, {2*W + 3, true}, {W + 3, false}, {W + 4, true}}},
		{"jump of exactly the window", []op{{7, true}, {7 + W, true}, {7, false}, {8, true}}},
		{"jump of window minus one", []op{{7, true}, {6 + W, true}, {7, false}, {8, true}, {6, false}}},
		{"huge jump", []op{{1, true}, {1 << 40, true}, {1<<40 - 1, true}, {1<<40 - W, false}, {2, false}}},
		{"top of uint64", []op{
			{math.MaxUint64 - 1, true}, {math.MaxUint64, true}, {math.MaxUint64, false},
			{math.MaxUint64 - 1, false}, {math.MaxUint64 - 2, true}, {math.MaxUint64 - W + 1, true},
			{math.MaxUint64 - W, false}, {1, false},
		}},
		{"top of uint64 by small steps", cat(seqs(true, math.MaxUint64-200, math.MaxUint64-100), seqs(true, math.MaxUint64-99, math.MaxUint64))},
		{"word boundaries", []op{{63, true}, {64, true}, {65, true}, {64 + W, true}, {63 + W, true}, {64, false}, {65, false}, {66, true}, {66, false}, {128 + W, true}, {129, true}, {128, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w ReplayWindow
			for i, o := range tc.ops {
				if got := w.Accept(o.seq); got != o.want {
					t.Fatalf("op %d: Accept(%d) = %v, want %v", i, o.seq, got, o.want)
				}
			}
		})
	}
}

func TestReplayWindowReset(t *testing.T) {
	var w ReplayWindow
	for s := uint64(1); s <= 10; s++ {
		w.Accept(s)
	}
	w.Accept(1 << 50)
	w.Reset()
	for s := uint64(1); s <= 10; s++ {
		if !w.Accept(s) {
			t.Fatalf("after Reset, Accept(%d) = false", s)
		}
	}
	if w != (ReplayWindow{top: 10, seen: [windowWords]uint64{0: 0x7fe}}) {
		t.Fatalf("window after Reset and 1..10 = %+v", w)
	}
}

// TestReplayWindowModel compares the window with a map of everything
// accepted, on a long deterministic mix of steps forward, back and jumps.
func TestReplayWindowModel(t *testing.T) {
	var w ReplayWindow
	m := newReplayModel()
	x := uint64(88172645463325252) // xorshift: deterministic, no global randomness
	next := func() uint64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
	seq := uint64(1)
	for i := range 200000 {
		r := next()
		switch r % 8 {
		case 0, 1, 2:
			seq += r >> 60
		case 3, 4:
			seq -= min(seq, (r>>32)%(ReplayWindowSize+100))
		case 5:
			seq += (r >> 40) % (2 * ReplayWindowSize)
		case 6:
			// repeat seq
		case 7:
			if r>>63 == 1 {
				seq += 1 << 20
			}
		}
		if got, want := w.Accept(seq), m.accept(seq); got != want {
			t.Fatalf("step %d: Accept(%d) = %v, model says %v (top %d)", i, seq, got, want, m.top)
		}
	}
}

// replayModel is the obvious, memory-hungry definition of the window.
type replayModel struct {
	top  uint64
	seen map[uint64]bool
}

func newReplayModel() *replayModel { return &replayModel{seen: map[uint64]bool{}} }

func (m *replayModel) accept(seq uint64) bool {
	if seq == 0 || m.seen[seq] || (seq <= m.top && m.top-seq >= ReplayWindowSize) {
		return false
	}
	m.seen[seq] = true
	m.top = max(m.top, seq)
	return true
}

func BenchmarkReplayWindow(b *testing.B) {
	for _, tc := range []struct {
		name string
		step func(i uint64) uint64
	}{
		{"in-order", func(i uint64) uint64 { return i + 1 }},
		{"reordered", func(i uint64) uint64 { return i ^ 7 + 1 }},
		{"jumps-500", func(i uint64) uint64 { return i*500 + 1 }},
	} {
		b.Run(fmt.Sprint(tc.name), func(b *testing.B) {
			var w ReplayWindow
			var i uint64
			for b.Loop() {
				w.Accept(tc.step(i))
				i++
			}
		})
	}
}
