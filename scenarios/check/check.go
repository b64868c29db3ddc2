// Package check watches what every node of a cluster emits and checks the
// always-on invariants of the scenario contract (SCENARIOS.md). It lives
// outside the nodes, as TigerBeetle's state checker does: nodes only
// report what they did; the checker decides whether that was allowed.
//
// Feed it every clms.Event, in the order they happened, with the time and
// the boot of the process that emitted it:
//
//	c := check.New(candidates)
//	c.Event(at, boot, ev)
//	if v := c.Violation(); v != nil { ... }
//
// It stops at the first violation and keeps it.
package check

import (
	"fmt"
	"slices"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
)

// Violation is a broken invariant: which, where and what.
type Violation struct {
	Invariant int // 1-6, as numbered in SCENARIOS.md
	At        time.Duration
	Nodes     []node.ID
	Num       uint64 // the transition involved, if any
	Msg       string
}

func (v *Violation) Error() string {
	return fmt.Sprintf("invariant %d (%s) at %.3fs: %s", v.Invariant, Names[v.Invariant], v.At.Seconds(), v.Msg)
}

// Names of the invariants, by number.
var Names = map[int]string{
	1: "agreement",
	2: "history only moves forward",
	3: "no readmission before cleanup",
	4: "one master per epoch, quorum persisted before apply",
	5: "no hanging RPC",
	6: "only a quorate master proposes",
}

type proc struct {
	node node.ID
	boot node.Boot
}

type callKey struct {
	p  proc
	id uint64
}

type openCall struct {
	peer node.ID
	inc  uint64
	at   time.Duration
}

type applied struct {
	t     clms.Transition
	view  []node.ID
	at    time.Duration
	index uint64
}

// Checker checks the invariants.
type Checker struct {
	cands     []node.ID
	first     map[uint64]*applied // the first apply of each number
	last      map[proc]uint64     // the last number each process applied
	persisted map[node.ID]uint64  // the highest index each candidate synced
	masters   map[uint64]node.ID  // epoch -> master
	cleaned   map[node.ID]map[uint64]bool
	calls     map[callKey]openCall
	viol      *Violation
	count     int
}

// New makes a checker for a cluster with these candidate masters.
func New(candidates []node.ID) *Checker {
	return &Checker{
		cands: slices.Clone(candidates), first: map[uint64]*applied{}, last: map[proc]uint64{},
		persisted: map[node.ID]uint64{}, masters: map[uint64]node.ID{}, cleaned: map[node.ID]map[uint64]bool{},
		calls: map[callKey]openCall{},
	}
}

// Violation is the first violation seen, or nil.
func (c *Checker) Violation() *Violation { return c.viol }

// Events is how many events were checked.
func (c *Checker) Events() int { return c.count }

// Applied returns the first-applied transition of every number, in order.
func (c *Checker) Applied() []clms.Transition {
	out := make([]clms.Transition, 0, len(c.first))
	for n := uint64(1); ; n++ {
		a, ok := c.first[n]
		if !ok {
			return out
		}
		out = append(out, a.t)
	}
}

// FirstApplied is when transition num was first applied anywhere.
func (c *Checker) FirstApplied(num uint64) (time.Duration, bool) {
	if a, ok := c.first[num]; ok {
		return a.at, true
	}
	return 0, false
}

func (c *Checker) fail(inv int, at time.Duration, num uint64, nodes []node.ID, format string, args ...any) {
	if c.viol == nil {
		c.viol = &Violation{Invariant: inv, At: at, Num: num, Nodes: nodes, Msg: fmt.Sprintf(format, args...)}
	}
}

// Event checks one event emitted at time at by the process (node, boot).
func (c *Checker) Event(at time.Duration, boot node.Boot, e clms.Event) {
	if c.viol != nil {
		return
	}
	c.count++
	p := proc{e.Node, boot}
	switch e.Kind {
	case clms.EvApplied:
		c.applied(at, p, e)
	case clms.EvPersisted:
		if e.Index > c.persisted[e.Node] {
			c.persisted[e.Node] = e.Index
		}
	case clms.EvMaster:
		c.master(at, e.Epoch, e.Node)
	case clms.EvProposed:
		if e.LeaseVoters <= len(c.cands)/2 {
			c.fail(6, at, 0, []node.ID{e.Node}, "n%d proposed %v with only %d of %d candidates answering within the election timeout", e.Node, e.T, e.LeaseVoters, len(c.cands))
			return
		}
		if m, ok := c.masters[e.Epoch]; !ok || m != e.Node {
			c.fail(6, at, 0, []node.ID{e.Node}, "n%d proposed %v in epoch %d without being its master", e.Node, e.T, e.Epoch)
		}
	case clms.EvCleanupDone:
		if c.cleaned[e.Node] == nil {
			c.cleaned[e.Node] = map[uint64]bool{}
		}
		c.cleaned[e.Node][e.Num] = true
		// 5: the node finished its cleanup for Target:Inc, which includes
		// ICS's nodedown: no call of its to that incarnation may be open.
		for _, k := range c.openCalls(p) {
			oc := c.calls[k]
			// A call made before the callee's incarnation was known (inc 0)
			// may be bound to a newer incarnation than the one that went
			// down; only calls known to target it or an older one count.
			if oc.peer == e.Target && oc.inc != 0 && oc.inc <= e.Inc {
				c.fail(5, at, e.Num, []node.ID{e.Node, e.Target}, "n%d finished its cleanup for n%d:%s (#%d) with call %d to it, made at %.3fs, still outstanding", e.Node, e.Target, clms.IncString(e.Inc), e.Num, k.id, oc.at.Seconds())
				return
			}
		}
	}
}

// Call checks one ICS call event of the process (node, boot): every call
// completes exactly once, and none outlives the nodedown of its callee.
func (c *Checker) Call(at time.Duration, n node.ID, boot node.Boot, e ics.CallEvent) {
	if c.viol != nil {
		return
	}
	c.count++
	k := callKey{proc{n, boot}, e.ID}
	if !e.Done {
		c.calls[k] = openCall{peer: e.Peer, inc: e.PeerInc, at: at}
		return
	}
	if _, ok := c.calls[k]; !ok {
		c.fail(5, at, 0, []node.ID{n, e.Peer}, "call %d from n%d to n%d completed twice, or without having started (%v)", e.ID, n, e.Peer, e.Err)
		return
	}
	delete(c.calls, k)
}

// openCalls lists the open calls of a process in a stable order.
func (c *Checker) openCalls(p proc) []callKey {
	var ks []callKey
	for k := range c.calls {
		if k.p == p {
			ks = append(ks, k)
		}
	}
	slices.SortFunc(ks, func(a, b callKey) int { return int(a.id) - int(b.id) })
	return ks
}

func (c *Checker) master(at time.Duration, epoch uint64, n node.ID) {
	if m, ok := c.masters[epoch]; ok && m != n {
		c.fail(4, at, 0, []node.ID{m, n}, "epoch %d has two masters: n%d and n%d", epoch, m, n)
		return
	}
	c.masters[epoch] = n
}

func (c *Checker) applied(at time.Duration, p proc, e clms.Event) {
	t := e.T
	// 2: each process applies 1, 2, 3... with no gap, reordering or rewrite.
	if want := c.last[p] + 1; t.Num != want {
		c.fail(2, at, t.Num, []node.ID{p.node}, "n%d (boot %d) applied #%d after #%d", p.node, p.boot, t.Num, c.last[p])
		return
	}
	c.last[p] = t.Num
	// 1: every node that applies a number applies the same transition
	// and reaches the same view.
	if a, ok := c.first[t.Num]; ok {
		if a.t != t {
			c.fail(1, at, t.Num, []node.ID{a.t.Master, p.node}, "#%d: n%d applied %v, first applied as %v", t.Num, p.node, t, a.t)
			return
		}
		if !slices.Equal(a.view, e.View) {
			c.fail(1, at, t.Num, []node.ID{p.node}, "#%d: n%d reached view %v, first reached %v", t.Num, p.node, e.View, a.view)
		}
		return
	}
	a := &applied{t: t, view: slices.Clone(e.View), at: at, index: e.Index}
	c.first[t.Num] = a
	if t.Epoch == 0 || !t.Master.Valid() {
		c.fail(4, at, t.Num, []node.ID{p.node}, "#%d names no epoch or master: %v", t.Num, t)
		return
	}
	c.master(at, t.Epoch, t.Master)
	if c.viol != nil {
		return
	}
	// 4: more than half of the candidates persisted it first.
	if e.Index == 0 {
		c.fail(4, at, t.Num, []node.ID{p.node}, "#%d first applied by n%d, which is not a candidate holding the log", t.Num, p.node)
		return
	}
	n := 0
	for _, cand := range c.cands {
		if c.persisted[cand] >= e.Index {
			n++
		}
	}
	if n <= len(c.cands)/2 {
		c.fail(4, at, t.Num, []node.ID{p.node}, "#%d applied by n%d when only %d of %d candidates had persisted it", t.Num, p.node, n, len(c.cands))
		return
	}
	// 3: no readmission before the previous incarnation is out and
	// cleaned up after everywhere.
	if t.To == clms.StateComingUp {
		c.readmission(at, t)
	}
}

func (c *Checker) readmission(at time.Duration, t clms.Transition) {
	prev := c.previous(t)
	if prev == nil {
		return // first admission
	}
	// The previous incarnation must have been taken out (KCLEANUP) and
	// brought to DOWN by committed transitions.
	var out *applied
	for n := t.Num - 1; n >= 1; n-- {
		if a := c.first[n]; a.t.Node == t.Node && a.t.Inc == prev.t.Inc && a.t.To == clms.StateKCleanup {
			out = a
			break
		}
	}
	if out == nil || prev.t.To != clms.StateDown {
		c.fail(3, at, t.Num, []node.ID{t.Node}, "n%d:%d admitted at #%d while n%d:%d was not taken out and cleaned up (last: %v)", t.Node, t.Inc, t.Num, t.Node, prev.t.Inc, prev.t)
		return
	}
	// Every node in the view when it went out, and still in it now, must
	// have finished its cleanup for it.
	var then []node.ID
	if out.t.Num > 1 {
		then = c.first[out.t.Num-1].view
	}
	now := c.first[t.Num-1].view
	for _, m := range then {
		if m == t.Node || !slices.Contains(now, m) || c.leftBetween(m, out.t.Num, t.Num) {
			continue // not the same incarnation of m throughout
		}
		if !c.cleaned[m][out.t.Num] {
			c.fail(3, at, t.Num, []node.ID{t.Node, m}, "n%d:%d admitted at #%d before n%d finished its cleanup for n%d:%d (#%d)", t.Node, t.Inc, t.Num, m, t.Node, out.t.Inc, out.t.Num)
			return
		}
	}
}

// leftBetween reports whether node m left the view between two numbers
// (then it is back as a new incarnation, which owes no cleanup).
func (c *Checker) leftBetween(m node.ID, from, to uint64) bool {
	for n := from + 1; n < to; n++ {
		if a := c.first[n]; a.t.Node == m && a.t.From.InView() && !a.t.To.InView() {
			return true
		}
	}
	return false
}

// previous is the latest earlier transition of t's node, if any.
func (c *Checker) previous(t clms.Transition) *applied {
	for n := t.Num - 1; n >= 1; n-- {
		if a := c.first[n]; a.t.Node == t.Node {
			return a
		}
	}
	return nil
}
