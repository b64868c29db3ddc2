package sim_test

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/sim"
)

// The floor for a discrete-event loop is a priority queue: one pop and one
// push per event. BenchmarkHeapBaseline measures exactly that with the
// standard library's container/heap on a queue of the same size and the
// same delay distribution as BenchmarkSimBare, so that `make bench` can
// report the simulator's cost per event as a ratio measured in the same
// run.

type hItem struct {
	at  int64
	seq uint64
}

type hQueue []hItem

func (q hQueue) Len() int { return len(q) }
func (q hQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q hQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *hQueue) Push(x any)   { *q = append(*q, x.(hItem)) }
func (q *hQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

var benchSizes = []int{10, 100, 1000, 10000}

const (
	benchLatency = time.Millisecond
	benchJitter  = 500 * time.Microsecond
)

func BenchmarkHeapBaseline(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			q := &hQueue{}
			var seq uint64
			for range n {
				seq++
				heap.Push(q, hItem{at: r.Int64N(int64(benchLatency)), seq: seq})
			}
			b.ResetTimer()
			for range b.N {
				it := heap.Pop(q).(hItem)
				seq++
				d := int64(benchLatency) + r.Int64N(2*int64(benchJitter)+1) - int64(benchJitter)
				heap.Push(q, hItem{at: it.at + d, seq: seq})
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
		})
	}
}

// pinger is a no-op node: every datagram it receives, it passes on to the
// next node. Each node starts one datagram going, so the event queue holds
// about one event per node throughout.
type pinger struct {
	env  node.Env
	next node.ID
	msg  []byte
}

func (p *pinger) Start(env node.Env) {
	p.env = env
	_ = env.Net().SendDatagram(p.next, 0, p.msg)
}
func (p *pinger) Datagram(node.ID, int, []byte)         { _ = p.env.Net().SendDatagram(p.next, 0, p.msg) }
func (p *pinger) StreamOpened(node.Stream)              {}
func (p *pinger) StreamMessage(node.Stream, []byte)     {}
func (p *pinger) StreamWritable(node.Stream)            {}
func (p *pinger) StreamClosed(s node.Stream, err error) {}

func BenchmarkSimBare(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			w := sim.New(sim.Config{Seed: 1, Link: sim.Link{Latency: benchLatency, Jitter: benchJitter}})
			for i := 1; i <= n; i++ {
				next := node.ID(i%n + 1)
				if err := w.AddNode(node.ID(i), func(node.ID, node.Boot) node.Handler {
					return &pinger{next: next, msg: []byte{1}}
				}); err != nil {
					b.Fatal(err)
				}
				if err := w.Boot(node.ID(i)); err != nil {
					b.Fatal(err)
				}
			}
			for range 2 * n { // let the starts settle
				w.Step()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				w.Step()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
			b.ReportMetric(float64(w.Now())/float64(b.Elapsed()), "sim-s/wall-s")
		})
	}
}

// BenchmarkSimScale keeps the load fixed (64 messages circulating, so a
// queue of 64 events) while
// the number of nodes grows, each message hopping to a node far away in
// memory. The queue size stays the same, so any growth in the cost per
// event comes from per-node work: it would show a scan of the nodes, or a
// per-node structure that does not scale.
func BenchmarkSimScale(b *testing.B) {
	const inFlight = 64
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			w := sim.New(sim.Config{Seed: 1, Link: sim.Link{Latency: benchLatency, Jitter: benchJitter}})
			starts := make([]int, n+1) // messages each node starts
			for k := range inFlight {
				starts[1+(k*(n/inFlight+1))%n]++
			}
			for i := 1; i <= n; i++ {
				next := node.ID((i-1+7919)%n + 1)
				k := starts[i]
				if err := w.AddNode(node.ID(i), func(node.ID, node.Boot) node.Handler {
					return &relay{pinger: pinger{next: next, msg: []byte{1}}, starts: k}
				}); err != nil {
					b.Fatal(err)
				}
				if err := w.Boot(node.ID(i)); err != nil {
					b.Fatal(err)
				}
			}
			for range 2 * n {
				w.Step()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				w.Step()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
		})
	}
}

// relay is a pinger that starts a given number of messages.
type relay struct {
	pinger
	starts int
}

func (r *relay) Start(env node.Env) {
	r.env = env
	for range r.starts {
		_ = env.Net().SendDatagram(r.next, 0, r.msg)
	}
}
