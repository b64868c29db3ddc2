package ics_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/sim"
)

var testKey = []byte("0123456789abcdef0123456789abcdef-cluster-key")

func keyring(t testing.TB, id uint32, key []byte) *wire.Keyring {
	kr, err := wire.NewKeyring(id, key)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// rec is what the test nodes observed, shared with the test goroutine
// (the real transport runs nodes on their own goroutines).
type rec struct {
	mu       sync.Mutex
	msgs     map[node.ID][]string // one-way messages received, by receiver
	results  map[string]error     // call outcomes by test label
	replies  map[string]string
	doneCnt  map[string]int // how many times a call's done ran
	canceled map[node.ID]int
	held     map[node.ID][]*ics.Request
}

func newRec() *rec {
	return &rec{msgs: map[node.ID][]string{}, results: map[string]error{}, replies: map[string]string{},
		doneCnt: map[string]int{}, canceled: map[node.ID]int{}, held: map[node.ID][]*ics.Request{}}
}

func (r *rec) lock() func() { r.mu.Lock(); return r.mu.Unlock }

// done returns a done function recording the outcome under label.
func (r *rec) done(label string) func([]byte, error) {
	return func(b []byte, err error) {
		defer r.lock()()
		r.doneCnt[label]++
		r.results[label] = err
		r.replies[label] = string(b)
	}
}

func (r *rec) finished(labels ...string) func() bool {
	return func() bool {
		defer r.lock()()
		for _, l := range labels {
			if r.doneCnt[l] == 0 {
				return false
			}
		}
		return true
	}
}

// testNode is a node whose only protocol is ICS, with a few services.
type testNode struct {
	id    node.ID
	env   node.Env
	ep    *ics.Endpoint
	r     *rec
	cfg   ics.Config
	setup func(n *testNode)
}

var echo = ics.NewService[[]byte, []byte]("echo")

func (n *testNode) Start(env node.Env) {
	n.env = env
	ep, err := ics.New(env, n.cfg)
	if err != nil {
		panic(err)
	}
	n.ep = ep
	_ = echo.Serve(ep, func(_ *ics.Request, b []byte) ([]byte, error) { return b, nil })
	_ = ep.Handle("fail", func(r *ics.Request, b []byte) { _ = r.Fail(errors.New(string(b))) })
	_ = ep.Handle("hold", func(req *ics.Request, b []byte) {
		req.OnCancel(func() { defer n.r.lock()(); n.r.canceled[n.id]++ })
		defer n.r.lock()()
		n.r.held[n.id] = append(n.r.held[n.id], req)
	})
	_ = ep.HandleMessage("sink", func(from node.ID, b []byte) {
		defer n.r.lock()()
		n.r.msgs[n.id] = append(n.r.msgs[n.id], string(b))
	})
	if n.setup != nil {
		n.setup(n)
	}
}
func (n *testNode) Datagram(node.ID, int, []byte)         {}
func (n *testNode) StreamOpened(s node.Stream)            { n.ep.StreamOpened(s) }
func (n *testNode) StreamMessage(s node.Stream, m []byte) { n.ep.StreamMessage(s, m) }
func (n *testNode) StreamWritable(s node.Stream)          { n.ep.StreamWritable(s) }
func (n *testNode) StreamClosed(s node.Stream, err error) { n.ep.StreamClosed(s, err) }
func (n *testNode) releaseHeld(reply string) (released int) { // on the node's goroutine
	n.r.mu.Lock()
	held := n.r.held[n.id]
	n.r.held[n.id] = nil
	n.r.mu.Unlock()
	for _, req := range held {
		if req.Reply([]byte(reply)) == nil {
			released++
		}
	}
	return released
}

// spec describes one node of a harness.
type spec struct {
	id      node.ID
	factory node.Factory // nil: a testNode
	cfg     ics.Config
	setup   func(n *testNode)
}

// harness runs nodes on one transport. Every method is called from the
// test goroutine.
type harness interface {
	// do runs f on node id's goroutine and returns when it has run.
	do(id node.ID, f func(n *testNode))
	// until waits, advancing time as the transport does, for cond.
	until(d time.Duration, cond func() bool) bool
	// cutPath stalls one path between two nodes, both ways; heal undoes it.
	cutPath(a, b node.ID, path int)
	heal()
	loop(id node.ID) ics.Loop
	name() string
}

// simHarness runs the nodes in the simulator.
type simHarness struct {
	t     testing.TB
	w     *sim.World
	nodes map[node.ID]*testNode
}

func newSimHarness(t testing.TB, paths int, specs ...spec) harness {
	h := &simHarness{t: t, nodes: map[node.ID]*testNode{}}
	h.w = sim.New(sim.Config{Seed: 1, Paths: paths, Link: sim.Link{Latency: 100 * time.Microsecond, Jitter: 50 * time.Microsecond}})
	r := newRec()
	for _, s := range specs {
		s := s
		f := s.factory
		if f == nil {
			f = func(id node.ID, _ node.Boot) node.Handler {
				if s.cfg.Keyring == nil {
					s.cfg.Keyring = keyring(t, 1, testKey)
				}
				n := &testNode{id: id, r: r, cfg: s.cfg, setup: s.setup}
				h.nodes[id] = n
				return n
			}
		}
		if err := h.w.AddNode(s.id, f); err != nil {
			t.Fatal(err)
		}
		if err := h.w.Boot(s.id); err != nil {
			t.Fatal(err)
		}
	}
	_ = h.w.RunFor(time.Millisecond)
	return h
}

func (h *simHarness) name() string { return "sim" }

func (h *simHarness) do(id node.ID, f func(n *testNode)) {
	ran := false
	if err := h.w.Do(id, func(node.Handler) { f(h.nodes[id]); ran = true }); err != nil {
		h.t.Fatal(err)
	}
	for !ran && h.w.Step() {
	}
	if !ran {
		h.t.Fatalf("do on n%d never ran", id)
	}
}

func (h *simHarness) until(d time.Duration, cond func() bool) bool {
	end := h.w.Now() + d
	for h.w.Now() < end {
		if cond() {
			return true
		}
		_ = h.w.RunFor(time.Millisecond)
	}
	return cond()
}

func (h *simHarness) cutPath(a, b node.ID, path int) {
	_ = h.w.CutPath(a, b, path)
	_ = h.w.CutPath(b, a, path)
}

func (h *simHarness) heal() { h.w.Heal() }

func (h *simHarness) loop(id node.ID) ics.Loop { return h.w.Loop(id) }

func recOf(h harness) *rec {
	var r *rec
	h.do(firstTestNode(h), func(n *testNode) { r = n.r })
	return r
}

func firstTestNode(h harness) node.ID {
	switch h := h.(type) {
	case *tcpHarness:
		h.mu.Lock()
		defer h.mu.Unlock()
		for id := node.ID(1); id < 10; id++ {
			if _, ok := h.tn[id]; ok {
				return id
			}
		}
	case *simHarness:
		for _, id := range h.w.Nodes() {
			if _, ok := h.nodes[id]; ok {
				return id
			}
		}
	}
	return 1
}

func nodeEP(h harness, id node.ID) *ics.Endpoint {
	var ep *ics.Endpoint
	h.do(id, func(n *testNode) { ep = n.ep })
	return ep
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
