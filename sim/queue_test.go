package sim

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestQueueOrder checks the heap against a sorted reference: whatever the
// mix of pushes and pops, items come out in (at, seq) order.
func TestQueueOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 200 {
		var q queue
		var ref []item
		var seq uint64
		ops := 1 + r.IntN(2000)
		for range ops {
			if len(ref) == 0 || r.IntN(3) != 0 {
				seq++
				it := item{at: r.Int64N(int64(1 + round%50)), seq: seq}
				q.push(it)
				ref = append(ref, it)
				continue
			}
			slices.SortFunc(ref, func(a, b item) int {
				if a.less(b) {
					return -1
				}
				return 1
			})
			want := ref[0]
			ref = ref[1:]
			if q.peek() != want {
				t.Fatalf("round %d: peek %+v, want %+v", round, q.peek(), want)
			}
			if got := q.pop(); got != want {
				t.Fatalf("round %d: pop %+v, want %+v", round, got, want)
			}
		}
		if q.len() != len(ref) {
			t.Fatalf("round %d: len %d, want %d", round, q.len(), len(ref))
		}
	}
}
