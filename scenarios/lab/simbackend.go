package lab

import (
	"io"
	"math"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/stack"
	"github.com/clusterinfra/ci/scenarios"
	"github.com/clusterinfra/ci/sim"
)

// labKey is the cluster key of simulated runs. It is not a secret: the
// simulator never leaves the process.
var labKey = []byte("clusterlab-simulated-cluster-key-0123456789")

// simBackend runs a scenario's cluster in the deterministic simulator.
type simBackend struct {
	w      *sim.World
	sc     *scenarios.Scenario
	cands  []node.ID
	obs    func(at time.Duration, boot node.Boot, e clms.Event)
	onCall func(at time.Duration, n node.ID, boot node.Boot, e ics.CallEvent)
}

func newSimBackend(sc *scenarios.Scenario, seed uint64, trace io.Writer, obs func(time.Duration, node.Boot, clms.Event), onCall func(time.Duration, node.ID, node.Boot, ics.CallEvent)) (*simBackend, error) {
	kr, err := wire.NewKeyring(1, labKey)
	if err != nil {
		return nil, err
	}
	b := &simBackend{sc: sc, obs: obs, onCall: onCall}
	b.w = sim.New(sim.Config{
		Seed:  seed,
		Trace: trace,
		Link: sim.Link{
			Latency: sc.Network.Latency, Jitter: sc.Network.Jitter,
			Loss: sc.Network.Loss, Duplicate: sc.Network.Duplicate,
		},
		MaxEvents: 2_000_000_000,
	})
	for _, m := range sc.Masters {
		b.cands = append(b.cands, node.ID(m))
	}
	cfg := stack.Config{
		ICS: ics.Config{Keyring: kr, OnCall: nil},
		CLMS: clms.Config{
			Candidates:      b.cands,
			Heartbeat:       sc.Config.Heartbeat,
			NodedownAfter:   sc.Config.NodedownAfter,
			ElectionTimeout: sc.Config.ElectionTimeout,
			KeyServices:     []string{"key"},
		},
		Observe: func(e clms.Event) { b.obs(b.w.Now(), b.w.BootCount(e.Node), e) },
		Setup:   stack.LabWorkload,
	}
	for _, id := range sc.Nodes {
		id := node.ID(id)
		c := cfg
		c.ICS.OnCall = func(e ics.CallEvent) { b.onCall(b.w.Now(), id, b.w.BootCount(id), e) }
		if err := b.w.AddNode(id, stack.Factory(c)); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *simBackend) svc(id node.ID) *clms.Service {
	if n, ok := b.w.Handler(id).(*stack.Node); ok && n.CLMS != nil {
		return n.CLMS
	}
	return nil
}

func (b *simBackend) now() time.Duration { return b.w.Now() }

func (b *simBackend) note(msg string) { b.w.Note(msg) }

func (b *simBackend) boot(id node.ID) error    { return b.w.Boot(id) }
func (b *simBackend) crash(id node.ID) error   { return b.w.Crash(id) }
func (b *simBackend) restart(id node.ID) error { return b.w.Restart(id) }
func (b *simBackend) pause(id node.ID) error   { return b.w.Pause(id) }
func (b *simBackend) resume(id node.ID) error  { return b.w.Resume(id) }

func (b *simBackend) leave(id node.ID) error {
	return b.w.Do(id, func(h node.Handler) {
		if n, ok := h.(*stack.Node); ok && n.CLMS != nil {
			n.CLMS.Leave()
		}
	})
}

func (b *simBackend) partition(groups [][]node.ID) error { return b.w.Partition(groups...) }
func (b *simBackend) cut(from, to node.ID) error         { return b.w.Cut(from, to) }

func (b *simBackend) link(a, c node.ID, lc *scenarios.LinkChange) error {
	for _, d := range [][2]node.ID{{a, c}, {c, a}} {
		l := b.w.LinkModel(d[0], d[1], 0)
		if lc.Latency != nil {
			l.Latency = *lc.Latency
		}
		if lc.Jitter != nil {
			l.Jitter = *lc.Jitter
		}
		if lc.Loss != nil {
			l.Loss = *lc.Loss
		}
		if lc.Duplicate != nil {
			l.Duplicate = *lc.Duplicate
		}
		if err := b.w.SetLink(d[0], d[1], -1, l); err != nil {
			return err
		}
	}
	return nil
}

func (b *simBackend) clock(id node.ID, offset time.Duration, driftPPM float64) error {
	return b.w.SetClock(id, offset, int64(math.Round(driftPPM)))
}

func (b *simBackend) heal() { b.w.Heal() }

func (b *simBackend) after(d time.Duration, f func()) { b.w.After(d, f) }

func (b *simBackend) close() {}

func (b *simBackend) flush() {}

// blocked reports whether traffic from a to c is cut, partitioned, or
// lost entirely.
func (b *simBackend) blocked(a, c node.ID) bool {
	return b.w.Blocked(a, c, 0) || b.w.LinkModel(a, c, 0).Loss >= 1
}

// runFor lets time pass, stopping early (at 1ms granularity) when stop
// returns true.
func (b *simBackend) runFor(d time.Duration, stop func() bool) (bool, error) {
	end := b.w.Now() + d
	for {
		if stop != nil && stop() {
			return true, nil
		}
		if b.w.Now() >= end {
			return false, nil
		}
		step := min(time.Millisecond, end-b.w.Now())
		if stop == nil {
			step = end - b.w.Now()
		}
		if err := b.w.RunFor(step); err != nil {
			return false, err
		}
	}
}

// report is what a node reports of itself.
type report struct {
	quorate bool
	last    uint64
	view    []node.ID
	master  node.ID
	states  map[node.ID]clms.State
}

func (b *simBackend) report(id node.ID) (report, bool) {
	s := b.svc(id)
	if s == nil {
		return report{}, false
	}
	num, view := s.Membership()
	r := report{quorate: s.Quorate(), last: num, view: view, master: s.Master(), states: map[node.ID]clms.State{}}
	for _, n := range b.w.Nodes() {
		r.states[n] = s.State(n)
	}
	return r, true
}

func (b *simBackend) digest() string { return b.w.Digest() }

func (b *simBackend) events() uint64 {
	st := b.w.Stats()
	return st.Delivered + st.Timers
}
