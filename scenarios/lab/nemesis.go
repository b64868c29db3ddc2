package lab

import (
	"fmt"
	"math"
	"time"

	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/scenarios"
)

// nemesis injects random faults drawn from the seed, then heals,
// restarts and waits for convergence.
func (r *runner) nemesis(st *scenarios.Step, fail func(string, string) *Failure) *Failure {
	n := st.Nemesis
	end := r.b.now() + n.Duration
	for {
		gap := time.Duration(r.fr.ExpFloat64() * float64(n.Interval))
		if r.b.now()+gap >= end {
			if _, err := r.b.runFor(end-r.b.now(), nil); err != nil {
				return fail("time to pass", err.Error())
			}
			break
		}
		if _, err := r.b.runFor(gap, nil); err != nil {
			return fail("time to pass", err.Error())
		}
		r.settle()
		if v := r.ck.Violation(); v != nil {
			return nil // reported by the caller
		}
		f := n.Faults[r.fr.IntN(len(n.Faults))]
		r.inject(f)
	}
	// Liveness phase.
	r.healAll()
	if _, err := r.b.runFor(*st.Timeout, func() bool {
		r.settle()
		for _, id := range r.nodes {
			if r.st[id] == lsLeaving {
				return false
			}
		}
		return true
	}); err != nil {
		return fail("leaving nodes to depart", err.Error())
	}
	r.settle()
	for _, id := range r.nodes {
		if r.st[id] == lsCrashed || r.st[id] == lsDeparted {
			if err := r.b.restart(id); err == nil {
				r.setState(id, lsRunning)
			}
		}
	}
	return r.waitConverged(*st.Timeout, fail)
}

// out counts candidates that are crashed, paused, leaving or departed.
func (r *runner) out() int {
	k := 0
	for _, c := range r.cands {
		if r.st[c] != lsRunning {
			k++
		}
	}
	return k
}

func (r *runner) pick(ok func(node.ID) bool) (node.ID, bool) {
	var c []node.ID
	for _, id := range r.nodes {
		if ok(id) {
			c = append(c, id)
		}
	}
	if len(c) == 0 {
		return 0, false
	}
	return c[r.fr.IntN(len(c))], true
}

// inject carries out one fault, or skips it if it has no eligible target
// or would leave more than a minority of candidates out.
func (r *runner) inject(f scenarios.Fault) {
	isCand := func(id node.ID) bool {
		for _, c := range r.cands {
			if c == id {
				return true
			}
		}
		return false
	}
	// A fault taking a candidate out must leave a majority in.
	mayTakeOut := func(id node.ID) bool { return !isCand(id) || r.out()+1 <= (len(r.cands)-1)/2 }
	runningNotLeaving := func(id node.ID) bool { return r.st[id] == lsRunning }
	note := func(s string) { r.b.note("nemesis: " + s); r.faultMark(0, "nemesis: "+s) }
	switch string(f) {
	case "crash":
		if id, ok := r.pick(func(id node.ID) bool { return runningNotLeaving(id) && mayTakeOut(id) }); ok {
			note(fmt.Sprintf("crash n%d", id))
			_ = r.b.crash(id)
			r.setState(id, lsCrashed)
			r.fault(id)
		}
	case "master":
		m := r.quorateMaster()
		if m != 0 && runningNotLeaving(m) && mayTakeOut(m) {
			note(fmt.Sprintf("crash master n%d", m))
			_ = r.b.crash(m)
			r.setState(m, lsCrashed)
			r.fault(m)
		}
	case "restart":
		if id, ok := r.pick(func(id node.ID) bool { return r.st[id] == lsCrashed || r.st[id] == lsDeparted }); ok {
			note(fmt.Sprintf("restart n%d", id))
			_ = r.b.restart(id)
			r.setState(id, lsRunning)
		}
	case "pause":
		if id, ok := r.pick(func(id node.ID) bool { return runningNotLeaving(id) && mayTakeOut(id) }); ok {
			note(fmt.Sprintf("pause n%d", id))
			_ = r.b.pause(id)
			r.setState(id, lsPaused)
			r.fault(id)
			d := time.Duration(r.fr.Int64N(int64(4 * r.sc.Config.NodedownAfter)))
			r.b.after(d, func() {
				if r.st[id] == lsPaused {
					_ = r.b.resume(id)
					r.setState(id, lsRunning)
				}
			})
		}
	case "leave":
		if id, ok := r.pick(func(id node.ID) bool { return runningNotLeaving(id) && mayTakeOut(id) }); ok {
			note(fmt.Sprintf("leave n%d", id))
			_ = r.b.leave(id)
			r.setState(id, lsLeaving)
			r.fault(id)
		}
	case "partition":
		perm := r.fr.Perm(len(r.nodes))
		k := 1 + r.fr.IntN(len(r.nodes)-1+boolInt(len(r.nodes) == 1))
		var a, b []node.ID
		for i, p := range perm {
			if i < k {
				a = append(a, r.nodes[p])
			} else {
				b = append(b, r.nodes[p])
			}
		}
		groups := [][]node.ID{a}
		if len(b) > 0 {
			groups = append(groups, b)
		}
		note(fmt.Sprintf("partition %v", groups))
		_ = r.b.partition(groups)
		r.fault(r.nodes...)
		d := time.Duration(r.fr.Int64N(int64(8 * r.sc.Config.NodedownAfter)))
		r.b.after(d, func() { r.b.heal(); r.cuts = false })
	case "cut":
		a, c := r.nodes[r.fr.IntN(len(r.nodes))], r.nodes[r.fr.IntN(len(r.nodes))]
		if a != c {
			note(fmt.Sprintf("cut n%d -> n%d", a, c))
			_ = r.b.cut(a, c)
			r.cuts = true
			r.fault(a, c)
		}
	case "loss":
		a, c := r.nodes[r.fr.IntN(len(r.nodes))], r.nodes[r.fr.IntN(len(r.nodes))]
		if a != c {
			loss := math.Round(r.fr.Float64()*50) / 100
			note(fmt.Sprintf("loss %.0f%% between n%d and n%d", loss*100, a, c))
			_ = r.b.link(a, c, &scenarios.LinkChange{Loss: &loss})
			r.fault(a, c)
		}
	case "clock":
		if id, ok := r.pick(runningNotLeaving); ok {
			off := time.Duration(r.fr.Int64N(int64(2*time.Minute))) - time.Minute
			drift := float64(r.fr.IntN(2001) - 1000)
			note(fmt.Sprintf("clock n%d %v %vppm", id, off, drift))
			_ = r.b.clock(id, off, drift)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
