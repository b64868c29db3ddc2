package sim

import (
	"math/bits"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/clusterinfra/ci/node"
)

// epoch is the wall-clock time at simulated time zero, so that wall times
// in traces are readable and the same in every run.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// simNode is the world's record of one node across its incarnations. What
// lives across a crash (the host: its clock, its disk) is here; what dies
// with the process (handler, timers, streams) is reset by start.
type simNode struct {
	id      node.ID
	factory node.Factory
	state   State
	boot    node.Boot
	h       node.Handler
	env     *simEnv
	store   *memStore

	// The host clock: local(T) = localBase + scale(T - simBase).
	driftPPM   int64
	localBase  int64
	simBase    int64
	wallOffset int64
	bootLocal  int64 // local time at the current boot

	timers    []timerSlot
	freeSlots []uint32

	held       []*event // events waiting for Resume
	heldDgrams int

	conns map[uint64]*conn
}

type timerSlot struct {
	gen      uint32
	active   bool
	deadline int64 // on the node's local clock
	f        func()
}

func (n *simNode) resetIncarnation(w *World) {
	n.bootLocal = n.local(w.now)
	n.timers = nil
	n.freeSlots = nil
	n.held = nil
	n.heldDgrams = 0
	n.conns = map[uint64]*conn{}
}

// local is the node's clock reading at simulated time t.
func (n *simNode) local(t int64) int64 {
	return n.localBase + scale(t-n.simBase, n.driftPPM)
}

// toSim is the first simulated time at which the node's clock reads at
// least l.
func (n *simNode) toSim(l int64) int64 {
	d := l - n.localBase
	if d <= 0 {
		return n.simBase + d // drift is within ±50%, so this is close enough for the past
	}
	// d * 1e6 / (1e6 + ppm), rounded up.
	den := uint64(1e6 + n.driftPPM)
	hi, lo := bits.Mul64(uint64(d), 1e6)
	q, r := bits.Div64(hi, lo, den)
	if r != 0 {
		q++
	}
	t := n.simBase + int64(q)
	for n.local(t) < l { // guard against rounding in scale
		t++
	}
	return t
}

// scale is d * (1e6 + ppm) / 1e6 without overflow for any d we use.
func scale(d, ppm int64) int64 {
	if ppm == 0 {
		return d
	}
	neg := d < 0
	if neg {
		d = -d
	}
	hi, lo := bits.Mul64(uint64(d), uint64(1e6+ppm))
	q, _ := bits.Div64(hi, lo, 1e6)
	if neg {
		return -int64(q)
	}
	return int64(q)
}

func (n *simNode) setDrift(w *World, ppm int64) {
	n.localBase = n.local(w.now)
	n.simBase = w.now
	n.driftPPM = ppm
	if n.env == nil {
		return
	}
	// Pending timers are deadlines on the local clock; reschedule them at
	// the simulated times the new rate gives. Old queue entries go stale
	// through the generation number.
	for i := range n.timers {
		s := &n.timers[i]
		if !s.active {
			continue
		}
		s.gen++
		w.pushTimer(n, uint32(i), s)
	}
}

func (w *World) pushTimer(n *simNode, slot uint32, s *timerSlot) {
	ev := w.newEvent(kTimer, n.id)
	ev.boot = n.boot
	ev.slot = slot
	ev.gen = s.gen
	at := n.toSim(s.deadline)
	if at < w.now {
		at = w.now
	}
	w.push(at, ev)
}

func (w *World) fireTimer(n *simNode, ev *event) {
	slot, gen := ev.slot, ev.gen
	w.release(ev)
	if int(slot) >= len(n.timers) {
		return
	}
	s := &n.timers[slot]
	if !s.active || s.gen != gen {
		return
	}
	f := s.f
	s.active = false
	s.f = nil
	s.gen++
	n.freeSlots = append(n.freeSlots, slot)
	w.stats.Timers++
	w.trace(kTimer, n.id, 0, uint64(slot), 0, "")
	f()
}

// simEnv is the node.Env of one incarnation. It is also what the hot path
// (a datagram delivered to a running node, which sends one on) reads of
// the node, so the fields that path needs come first and the whole struct
// fits in one 64-byte size class, which keeps it within one cache line.
type simEnv struct {
	w    *World
	h    node.Handler // the incarnation's Handler; nil once dead
	id   node.ID
	boot node.Boot
	dead bool
	n    *simNode
	rng  *rand.Rand
}

var (
	_ node.Env     = (*simEnv)(nil)
	_ node.Clock   = (*simEnv)(nil)
	_ node.Network = (*simEnv)(nil)
	_ node.Storage = (*memStore)(nil)
	_ node.Stream  = (*streamEnd)(nil)
)

func (e *simEnv) Self() node.ID          { return e.id }
func (e *simEnv) Boot() node.Boot        { return e.boot }
func (e *simEnv) Clock() node.Clock      { return e }
func (e *simEnv) Net() node.Network      { return e }
func (e *simEnv) Rand() *rand.Rand       { return e.rng }
func (e *simEnv) Storage() node.Storage  { return e.n.store }
func (e *simEnv) Tracing() bool          { return e.w.tr.out != nil }
func (e *simEnv) Trace(msg string)       { e.w.trace(kNote, e.n.id, 0, 0, 0, msg) }
func (e *simEnv) Now() time.Duration     { return time.Duration(e.n.local(e.w.now) - e.n.bootLocal) }
func (e *simEnv) Paths(peer node.ID) int { return e.w.paths(peer) }

// Alloc implements node.Env: at once, since simulated time does not
// pass while a node allocates.
func (e *simEnv) Alloc(size int, f func([]byte)) { f(make([]byte, size)) }

func (e *simEnv) Wall() time.Time {
	return epoch.Add(time.Duration(e.n.local(e.w.now) + e.n.wallOffset))
}

// AfterFunc implements node.Clock.
func (e *simEnv) AfterFunc(d time.Duration, f func()) node.Timer {
	n := e.n
	if e.dead || f == nil {
		return stoppedTimer{}
	}
	if d < 0 {
		d = 0
	}
	var slot uint32
	if k := len(n.freeSlots); k > 0 {
		slot = n.freeSlots[k-1]
		n.freeSlots = n.freeSlots[:k-1]
	} else {
		n.timers = append(n.timers, timerSlot{})
		slot = uint32(len(n.timers) - 1)
	}
	s := &n.timers[slot]
	s.active = true
	s.f = f
	s.deadline = n.local(e.w.now) + int64(d)
	e.w.pushTimer(n, slot, s)
	return &simTimer{e: e, slot: slot, gen: s.gen}
}

type simTimer struct {
	e    *simEnv
	slot uint32
	gen  uint32
}

func (t *simTimer) Stop() bool {
	if t.e.dead {
		return false
	}
	n := t.e.n
	s := &n.timers[t.slot]
	if !s.active || s.gen != t.gen {
		return false
	}
	s.active = false
	s.f = nil
	s.gen++
	n.freeSlots = append(n.freeSlots, t.slot)
	return true
}

type stoppedTimer struct{}

func (stoppedTimer) Stop() bool { return false }

// memStore is simulated stable storage: the synced state survives a crash,
// everything written after the last Sync does not.
type memStore struct {
	durable map[string][]byte
	pending map[string][]byte // nil value: deleted
}

func newMemStore() *memStore {
	return &memStore{durable: map[string][]byte{}, pending: map[string][]byte{}}
}

func (s *memStore) Get(key string) ([]byte, bool, error) {
	if v, ok := s.pending[key]; ok {
		if v == nil {
			return nil, false, nil
		}
		return slices.Clone(v), true, nil
	}
	v, ok := s.durable[key]
	if !ok {
		return nil, false, nil
	}
	return slices.Clone(v), true, nil
}

func (s *memStore) Put(key string, val []byte) error {
	v := make([]byte, len(val))
	copy(v, val)
	s.pending[key] = v
	return nil
}

func (s *memStore) Delete(key string) error {
	s.pending[key] = nil
	return nil
}

func (s *memStore) Keys() ([]string, error) {
	var keys []string
	for k := range s.durable {
		if v, ok := s.pending[k]; ok && v == nil {
			continue
		}
		keys = append(keys, k)
	}
	for k, v := range s.pending {
		if _, ok := s.durable[k]; !ok && v != nil {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

func (s *memStore) Sync() error {
	for k, v := range s.pending {
		if v == nil {
			delete(s.durable, k)
		} else {
			s.durable[k] = v
		}
	}
	clear(s.pending)
	return nil
}

func (s *memStore) crash() { clear(s.pending) }
