package host

import (
	"container/heap"
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/clusterinfra/ci/node"
)

// env is the node.Env of one Node. Node code calls it from callbacks on
// the event loop; every method is nonetheless safe from other goroutines,
// except Rand, whose source is the loop's alone.
type env struct {
	n   *Node
	rng *rand.Rand
}

var (
	_ node.Env     = (*env)(nil)
	_ node.Clock   = (*env)(nil)
	_ node.Network = (*env)(nil)
	_ node.Timer   = (*timer)(nil)
	_ node.Stream  = (*stream)(nil)
	_ node.Storage = (*store)(nil)
)

func (e *env) Self() node.ID         { return e.n.cfg.Self }
func (e *env) Boot() node.Boot       { return e.n.boot }
func (e *env) Clock() node.Clock     { return e }
func (e *env) Net() node.Network     { return e }
func (e *env) Rand() *rand.Rand      { return e.rng }
func (e *env) Storage() node.Storage { return e.n.store }

// Trace logs msg at debug level.
func (e *env) Trace(msg string) { e.n.log.Debug(msg) }

// Tracing reports whether the Logger keeps debug output.
func (e *env) Tracing() bool { return e.n.log.Enabled(context.Background(), slog.LevelDebug) }

// Buffers of allocInline bytes or more are made off the event loop
// (Alloc), at most maxAllocs at once; smaller ones, and any beyond that
// bound, are made on the loop. Zeroing a mebibyte takes tens of
// microseconds, less than handing it to another goroutine and back is
// worth; at 64 MiB it took 5-10 ms, during which no callback ran and
// small calls beside a bulk transfer waited that long.
const (
	allocInline = 1 << 20
	maxAllocs   = 4
)

// Alloc implements node.Env. A large buffer is made on a goroutine of
// its own and handed to f through the inbox, like a Do.
func (e *env) Alloc(size int, f func([]byte)) {
	n := e.n
	if size < allocInline || !n.allocs.tryAcquire(1) {
		f(make([]byte, size))
		return
	}
	ok := n.spawn(func() {
		defer n.allocs.release(1)
		b := make([]byte, size)
		n.post(event{kind: evDo, do: func(node.Handler) { f(b) }}, nil)
	})
	if !ok {
		n.allocs.release(1) // closing: f is not called
	}
}

// Now implements node.Clock: the monotonic time since Start.
func (e *env) Now() time.Duration { return e.n.now() }

// Wall implements node.Clock. The monotonic reading is stripped so that
// differences between wall times follow the (steppable) wall clock, as
// they do in the simulator.
func (e *env) Wall() time.Time {
	return time.Now().Add(time.Duration(e.n.wallOffset.Load())).Round(0)
}

// AfterFunc implements node.Clock.
func (e *env) AfterFunc(d time.Duration, f func()) node.Timer {
	if f == nil {
		return &timer{state: timerStopped, idx: -1}
	}
	now := e.n.now()
	at := now + max(d, 0)
	if at < now {
		at = math.MaxInt64 // "never", rather than an overflow into the past
	}
	return e.n.timers.add(at, f)
}

// Paths implements node.Network.
func (e *env) Paths(peer node.ID) int { return e.n.paths(peer) }

type timerState uint8

const (
	timerPending timerState = iota
	timerFired
	timerStopped
)

// timer is a pending AfterFunc call. Its fields belong to the queue's
// mutex.
type timer struct {
	q     *timerQueue
	at    time.Duration // on the node's monotonic clock
	seq   uint64        // ties between equal deadlines go in creation order
	f     func()
	idx   int // position in the heap; -1 when not in it
	state timerState
}

// Stop implements node.Timer. A timer leaves the queue under the same
// lock that the loop takes to fire it, and the loop runs a timer's
// callback right after taking it, so true means f has not run and never
// will: there is no window in which a timer has fired but its callback
// still waits somewhere.
func (t *timer) Stop() bool {
	if t.q == nil {
		return false
	}
	t.q.mu.Lock()
	defer t.q.mu.Unlock()
	if t.state != timerPending {
		return false
	}
	heap.Remove(&t.q.h, t.idx)
	t.state = timerStopped
	t.f = nil
	return true
}

// timerQueue holds a node's pending timers in deadline order. The event
// loop takes due timers from it one at a time, and sleeps until the
// earliest deadline otherwise; kick wakes it when an earlier timer is
// added while it sleeps.
type timerQueue struct {
	mu       sync.Mutex
	h        timerHeap
	seq      uint64
	sleeping bool          // the loop is (about to be) blocked
	until    time.Duration // ... until this deadline; -1: no deadline
	closed   bool
	kick     chan struct{}
}

func (q *timerQueue) init() { q.kick = make(chan struct{}, 1) }

func (q *timerQueue) add(at time.Duration, f func()) *timer {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return &timer{state: timerStopped, idx: -1}
	}
	q.seq++
	t := &timer{q: q, at: at, seq: q.seq, f: f}
	heap.Push(&q.h, t)
	if q.sleeping && (q.until < 0 || at < q.until) {
		q.sleeping = false
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
	return t
}

// popDue takes the earliest timer if it is due at now and returns its
// callback, or nil.
func (q *timerQueue) popDue(now time.Duration) func() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.h) > 0 && q.h[0].at <= now {
		t := heap.Pop(&q.h).(*timer)
		t.state = timerFired
		f := t.f
		t.f = nil
		return f
	}
	return nil
}

// sleep notes that the loop is about to block, so that add kicks it for
// an earlier deadline, and returns the next deadline (-1 if none).
func (q *timerQueue) sleep() time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sleeping = true
	q.until = -1
	if len(q.h) > 0 {
		q.until = q.h[0].at
	}
	return q.until
}

// awake notes that the loop woke for something other than a kick, so
// that timers its callbacks add do not kick it needlessly.
func (q *timerQueue) awake() {
	q.mu.Lock()
	q.sleeping = false
	q.mu.Unlock()
}

// close cancels every pending timer; later ones are born stopped.
func (q *timerQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	for _, t := range q.h {
		t.state = timerStopped
		t.f = nil
		t.idx = -1
	}
	q.h = nil
}

// timerHeap is a container/heap of timers by (at, seq).
type timerHeap []*timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*timer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}
