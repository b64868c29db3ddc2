// Package lab runs scenario files (see SCENARIOS.md) against a cluster
// and judges them: it carries out each step, waits for convergence,
// checks every `expect` and, all along, the always-on invariants
// (package check). Only the simulator backend lives here so far.
//
//	res := lab.Run(sc, lab.Options{Seed: 7})
//	fmt.Println(res.Verdict())
package lab

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/scenarios"
	"github.com/clusterinfra/ci/scenarios/check"
)

// Options tune one run.
type Options struct {
	Seed  uint64
	Trace io.Writer // the readable trace, if wanted
}

// Failure says where and how a run failed.
type Failure struct {
	Step      int    `json:"step"` // 1-based; 0 for a failure outside any step
	Line      int    `json:"line"`
	Expected  string `json:"expected"`
	Seen      string `json:"seen"`
	Invariant int    `json:"invariant,omitempty"`
}

// Nodedown is one node taken out of the cluster, with its timings in
// seconds since the start.
type Nodedown struct {
	Node           int      `json:"node"`
	FaultAt        *float64 `json:"fault_at"`
	DetectedAt     float64  `json:"detected_at"`
	CommittedAllAt *float64 `json:"committed_all_at"`
	num            uint64
	proposedQuorum bool
}

// Result is one run, as the JSON report has it.
type Result struct {
	Name           string     `json:"name"`
	File           string     `json:"file"`
	Seed           uint64     `json:"seed"`
	Backend        string     `json:"backend"`
	Passed         bool       `json:"passed"`
	Failure        *Failure   `json:"failure"`
	TraceDigest    string     `json:"trace_digest"`
	SimSeconds     float64    `json:"sim_seconds"`
	WallSeconds    float64    `json:"wall_seconds"`
	Events         uint64     `json:"events"`
	Transitions    int        `json:"transitions"`
	Nodedowns      []Nodedown `json:"nodedowns"`
	FalseNodedowns int        `json:"false_nodedowns"`
	// Warnings say what this run could not do as the file asked (a
	// VM run asked for latency, say) and where its files are.
	Warnings []string `json:"warnings,omitempty"`
	// InternalError is set when the lab itself failed (exit status 3).
	InternalError string `json:"internal_error,omitempty"`
	// Timeline is the run as the HTML report draws it.
	Timeline *Timeline `json:"-"`
}

// labState is a node's state as the lab sees it.
type labState int

const (
	lsNever labState = iota
	lsRunning
	lsPaused
	lsCrashed
	lsLeaving
	lsDeparted
)

var lsNames = []string{"never booted", "running", "paused", "crashed", "leaving", "departed"}

func (s labState) String() string { return lsNames[s] }

// backend is where a scenario's cluster runs: the simulator, or real
// daemons in network namespaces. The runner drives it from one goroutine;
// observations reach the runner only inside runFor, so the runner's state
// needs no lock.
type backend interface {
	now() time.Duration
	note(msg string)
	boot(id node.ID) error
	crash(id node.ID) error
	restart(id node.ID) error
	pause(id node.ID) error
	resume(id node.ID) error
	leave(id node.ID) error
	partition(groups [][]node.ID) error
	cut(from, to node.ID) error
	link(a, c node.ID, lc *scenarios.LinkChange) error
	clock(id node.ID, offset time.Duration, driftPPM float64) error
	heal()
	// after runs f on the runner's goroutine once d has passed.
	after(d time.Duration, f func())
	// blocked reports whether traffic from a to c is cut, partitioned,
	// or lost entirely.
	blocked(a, c node.ID) bool
	// runFor lets time pass, stopping early when stop returns true.
	runFor(d time.Duration, stop func() bool) (bool, error)
	report(id node.ID) (report, bool)
	digest() string
	events() uint64
	// flush delivers every observation made so far (a real backend holds
	// some back to put them in order).
	flush()
	close()
}

type runner struct {
	sc       *scenarios.Scenario
	b        backend
	ck       *check.Checker
	st       map[node.ID]labState
	nodes    []node.ID
	cands    []node.ID
	res      *Result
	lastF    map[node.ID]time.Duration // last fault on each node
	applied  map[uint64]map[node.ID]time.Duration
	downs    map[uint64]*Nodedown
	cuts     bool // a cut or a 100%-loss link is in effect
	fr       *rand.Rand
	depart   []node.ID
	proposed map[proposalKey]proposalInfo
	rec      *tlRecorder
	faultAt  map[uint64]time.Duration // last fault on the node, by nodedown
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6e656d65736973)) }

// Run runs one scenario with one seed in the simulator.
func Run(sc *scenarios.Scenario, o Options) *Result {
	return run(sc, o, "sim", func(r *runner) (backend, error) {
		return newSimBackend(sc, o.Seed, o.Trace, r.observe, r.ck.Call)
	})
}

// run runs sc on the backend mk makes.
func run(sc *scenarios.Scenario, o Options, name string, mk func(r *runner) (backend, error)) (res *Result) {
	start := time.Now()
	res = &Result{Name: sc.Name, File: sc.File, Seed: o.Seed, Backend: name, Nodedowns: []Nodedown{}}
	r := &runner{sc: sc, res: res, st: map[node.ID]labState{}, lastF: map[node.ID]time.Duration{},
		applied: map[uint64]map[node.ID]time.Duration{}, downs: map[uint64]*Nodedown{}, fr: newRand(o.Seed),
		proposed: map[proposalKey]proposalInfo{}, faultAt: map[uint64]time.Duration{}}
	for _, n := range sc.Nodes {
		r.nodes = append(r.nodes, node.ID(n))
	}
	for _, m := range sc.Masters {
		r.cands = append(r.cands, node.ID(m))
	}
	r.ck = check.New(r.cands)
	r.rec = newRecorder(r.nodes)
	defer func() {
		if p := recover(); p != nil {
			res.Passed = false
			res.InternalError = fmt.Sprintf("panic: %v", p)
		}
		res.WallSeconds = time.Since(start).Seconds()
		if r.b != nil {
			res.SimSeconds = secs(r.b.now())
			res.TraceDigest = r.b.digest()
			res.Events = r.b.events()
		}
		r.finishReport()
		if r.b != nil {
			tl := r.rec.finish(r.b.now(), res.Failure)
			res.Timeline = &tl
			r.b.close()
		}
	}()
	b, err := mk(r)
	if err != nil {
		res.InternalError = err.Error()
		return res
	}
	r.b = b
	for i := range sc.Steps {
		st := &sc.Steps[i]
		b.note(fmt.Sprintf("step %d (line %d): %s", i+1, st.Line, st.Action))
		r.rec.tl.Steps = append(r.rec.tl.Steps, Mark{At: b.now(), Kind: "step", Text: fmt.Sprintf("%d: %s (line %d)", i+1, st.Action, st.Line)})
		if f := r.step(i, st); f != nil {
			res.Failure = f
			return res
		}
		if i == len(sc.Steps)-1 {
			r.b.flush()
		}
		if v := r.ck.Violation(); v != nil {
			res.Failure = r.violation(i, st, v)
			return res
		}
	}
	res.Passed = true
	return res
}

func (r *runner) violation(i int, st *scenarios.Step, v *check.Violation) *Failure {
	return &Failure{Step: i + 1, Line: st.Line, Invariant: v.Invariant,
		Expected: "invariant " + fmt.Sprint(v.Invariant) + " (" + check.Names[v.Invariant] + ") holds", Seen: v.Error()}
}

// observe sees every event of every node, as the checker does.
func (r *runner) observe(at time.Duration, boot node.Boot, e clms.Event) {
	r.ck.Event(at, boot, e)
	r.rec.event(at, e, e.Kind == clms.EvApplied && len(r.applied[e.T.Num]) == 0)
	switch e.Kind {
	case clms.EvApplied:
		m := r.applied[e.T.Num]
		if m == nil {
			m = map[node.ID]time.Duration{}
			r.applied[e.T.Num] = m
		}
		if _, ok := m[e.Node]; !ok {
			m[e.Node] = at
		}
		if e.T.To == clms.StateKCleanup {
			d := r.downs[e.T.Num]
			if d == nil {
				d = &Nodedown{Node: int(e.T.Node), DetectedAt: secs(at), num: e.T.Num}
				r.downs[e.T.Num] = d
				if f, ok := r.lastF[e.T.Node]; ok {
					r.faultAt[e.T.Num] = f
				}
			}
		}
	case clms.EvProposed:
		if e.T.To == clms.StateKCleanup {
			// Remember, by node and incarnation, when the master proposed
			// it and whether the node was quorate by the definition then.
			r.proposed[proposalKey{e.T.Node, e.T.Inc}] = proposalInfo{at: at, quorate: r.defQuorate(e.T.Node)}
		}
	case clms.EvDeparted:
		r.depart = append(r.depart, e.Node)
	}
}

type proposalKey struct {
	n   node.ID
	inc uint64
}

type proposalInfo struct {
	at      time.Duration
	quorate bool
}

// secs rounds a time to microseconds, for the report.
func secs(d time.Duration) float64 { return float64(d.Round(time.Microsecond)) / 1e9 }

// finishReport computes the report's transition count and nodedown
// figures from what the checker holds. It starts from zero each time: an
// expect computes them mid-run (detected_within, false_nodedowns) and the
// end of the run again.
func (r *runner) finishReport() {
	res := r.res
	res.Nodedowns = res.Nodedowns[:0]
	res.Transitions = 0
	res.FalseNodedowns = 0
	if r.ck != nil {
		for _, t := range r.ck.Applied() {
			if t.Simple() {
				res.Transitions++
			}
			if t.To != clms.StateKCleanup {
				continue
			}
			d := r.downs[t.Num]
			if d == nil {
				continue
			}
			if p, ok := r.proposed[proposalKey{t.Node, t.Inc}]; ok {
				d.DetectedAt = secs(p.at)
				d.proposedQuorum = p.quorate
				if p.quorate && t.Cause == clms.CauseNodedown {
					res.FalseNodedowns++
				}
			}
			if f, ok := r.faultAt[t.Num]; ok {
				v := secs(f)
				d.FaultAt = &v
			}
			var last time.Duration
			for n, at := range r.applied[t.Num] {
				if n != t.Node && at > last {
					last = at
				}
			}
			if last > 0 {
				v := secs(last)
				d.CommittedAllAt = &v
			}
			res.Nodedowns = append(res.Nodedowns, *d)
		}
	}
	sort.Slice(res.Nodedowns, func(i, j int) bool { return res.Nodedowns[i].num < res.Nodedowns[j].num })
}

// defQuorate is the scenario definition: running and connected to more
// than half of the candidates, counting itself.
func (r *runner) defQuorate(n node.ID) bool {
	if r.st[n] != lsRunning && r.st[n] != lsLeaving {
		return false
	}
	k := 0
	for _, c := range r.cands {
		if c == n {
			k++
			continue
		}
		if (r.st[c] == lsRunning || r.st[c] == lsLeaving) && !r.b.blocked(n, c) && !r.b.blocked(c, n) {
			k++
		}
	}
	return k > len(r.cands)/2
}

func (r *runner) running(n node.ID) bool { return r.st[n] == lsRunning || r.st[n] == lsLeaving }

func (r *runner) fault(ids ...node.ID) {
	for _, id := range ids {
		r.lastF[id] = r.b.now()
	}
}

// setState records a node's state as the lab sees it.
func (r *runner) setState(id node.ID, s labState) {
	old := r.st[id]
	r.st[id] = s
	if r.rec == nil || old == s {
		return
	}
	r.rec.state(r.b.now(), id, s.String())
	switch s {
	case lsCrashed, lsPaused, lsLeaving:
		r.rec.mark(r.b.now(), id, "fault", fmt.Sprintf("%s n%d", map[labState]string{lsCrashed: "crash", lsPaused: "pause", lsLeaving: "leave"}[s], id))
	}
}

// faultMark records a network or clock fault for the timeline.
func (r *runner) faultMark(n node.ID, text string) {
	if r.rec != nil {
		r.rec.mark(r.b.now(), n, "fault", text)
	}
}

// step carries out one step.
func (r *runner) step(i int, st *scenarios.Step) *Failure {
	fail := func(exp, seen string) *Failure {
		return &Failure{Step: i + 1, Line: st.Line, Expected: exp, Seen: seen}
	}
	if st.At != nil {
		if r.b.now() > *st.At {
			return fail(fmt.Sprintf("to start at %v", *st.At), fmt.Sprintf("the scenario was already at %v", r.b.now()))
		}
		if _, err := r.b.runFor(*st.At-r.b.now(), nil); err != nil {
			return fail("time to pass", err.Error())
		}
		r.settle()
	}
	resolve := func(ns *scenarios.NodeSet) ([]node.ID, *Failure) {
		m := r.quorateMaster()
		ids, err := ns.Resolve(r.sc.Nodes, int(m))
		if err != nil {
			return nil, fail("a node set that resolves ("+ns.String()+")", err.Error())
		}
		out := make([]node.ID, len(ids))
		for k, id := range ids {
			out[k] = node.ID(id)
		}
		return out, nil
	}
	need := func(ids []node.ID, what string, ok ...labState) *Failure {
		for _, id := range ids {
			if !slices.Contains(ok, r.st[id]) {
				return fail(fmt.Sprintf("n%d to be %s", id, what), fmt.Sprintf("n%d is %s", id, r.st[id]))
			}
		}
		return nil
	}
	switch st.Action {
	case scenarios.ActionBoot, scenarios.ActionCrash, scenarios.ActionRestart, scenarios.ActionLeave, scenarios.ActionPause, scenarios.ActionResume:
		ids, f := resolve(st.Nodes())
		if f != nil {
			return f
		}
		return r.lifecycle(st.Action, ids, need, fail)
	case scenarios.ActionPartition:
		var groups [][]node.ID
		for _, g := range st.Partition.Groups {
			var ids []node.ID
			for _, id := range g {
				ids = append(ids, node.ID(id))
			}
			groups = append(groups, ids)
		}
		if err := r.b.partition(groups); err != nil {
			return fail("the partition to apply", err.Error())
		}
		r.faultMark(0, fmt.Sprintf("partition %v", groups))
		r.fault(r.nodes...)
	case scenarios.ActionCut:
		from, f := resolve(&st.Cut.From)
		if f != nil {
			return f
		}
		to, f := resolve(&st.Cut.To)
		if f != nil {
			return f
		}
		for _, a := range from {
			for _, c := range to {
				if a != c {
					if err := r.b.cut(a, c); err != nil {
						return fail("the cut to apply", err.Error())
					}
				}
			}
		}
		r.cuts = true
		r.fault(append(from, to...)...)
		r.faultMark(0, fmt.Sprintf("cut %s -> %s", fmtIDs(from), fmtIDs(to)))
	case scenarios.ActionLink:
		a, c := node.ID(st.Link.Between[0]), node.ID(st.Link.Between[1])
		if err := r.b.link(a, c, st.Link); err != nil {
			return fail("the link change to apply", err.Error())
		}
		if st.Link.Loss != nil && *st.Link.Loss >= 1 {
			r.cuts = true
		}
		r.faultMark(a, fmt.Sprintf("link n%d-n%d changed", a, c))
		r.fault(a, c)
	case scenarios.ActionClock:
		var off time.Duration
		var drift float64
		if st.Clock.Offset != nil {
			off = *st.Clock.Offset
		}
		if st.Clock.DriftPPM != nil {
			drift = *st.Clock.DriftPPM
		}
		if err := r.b.clock(node.ID(st.Clock.Node), off, drift); err != nil {
			return fail("the clock change to apply", err.Error())
		}
		r.faultMark(node.ID(st.Clock.Node), fmt.Sprintf("clock n%d step %v drift %vppm", st.Clock.Node, off, drift))
	case scenarios.ActionHeal:
		r.healAll()
	case scenarios.ActionSleep:
		if _, err := r.b.runFor(*st.Sleep, nil); err != nil {
			return fail("time to pass", err.Error())
		}
		r.settle()
	case scenarios.ActionWait:
		return r.waitConverged(*st.Timeout, fail)
	case scenarios.ActionExpect:
		r.b.flush()
		return r.expect(st.Expect, fail)
	case scenarios.ActionNemesis:
		return r.nemesis(st, fail)
	default:
		return fail("a known action", st.Action)
	}
	r.settle()
	return nil
}

func (r *runner) healAll() {
	r.b.heal()
	r.faultMark(0, "heal all")
	r.cuts = false
	for _, id := range r.nodes {
		if r.st[id] == lsPaused {
			_ = r.b.resume(id)
			r.setState(id, lsRunning)
		}
	}
}

// settle records nodes that finished leaving: a departed node's process
// has exited.
func (r *runner) settle() {
	for _, id := range r.depart {
		if r.st[id] == lsLeaving || r.st[id] == lsRunning {
			_ = r.b.crash(id)
			r.setState(id, lsDeparted)
		}
	}
	r.depart = r.depart[:0]
}

func (r *runner) lifecycle(action string, ids []node.ID, need func([]node.ID, string, ...labState) *Failure, fail func(string, string) *Failure) *Failure {
	var f *Failure
	switch action {
	case scenarios.ActionBoot:
		f = need(ids, "never booted", lsNever)
	case scenarios.ActionCrash:
		f = need(ids, "running", lsRunning, lsLeaving, lsPaused)
	case scenarios.ActionRestart:
		f = need(ids, "crashed or departed", lsCrashed, lsDeparted)
	case scenarios.ActionLeave:
		f = need(ids, "running", lsRunning)
	case scenarios.ActionPause:
		f = need(ids, "running", lsRunning, lsLeaving)
	case scenarios.ActionResume:
		f = need(ids, "paused", lsPaused)
	}
	if f != nil {
		return f
	}
	for _, id := range ids {
		var err error
		switch action {
		case scenarios.ActionBoot:
			err = r.b.boot(id)
			r.setState(id, lsRunning)
		case scenarios.ActionCrash:
			err = r.b.crash(id)
			r.setState(id, lsCrashed)
			r.fault(id)
		case scenarios.ActionRestart:
			err = r.b.restart(id)
			r.setState(id, lsRunning)
		case scenarios.ActionLeave:
			err = r.b.leave(id)
			r.setState(id, lsLeaving)
			r.fault(id)
		case scenarios.ActionPause:
			err = r.b.pause(id)
			r.setState(id, lsPaused)
			r.fault(id)
		case scenarios.ActionResume:
			err = r.b.resume(id)
			r.setState(id, lsRunning)
		}
		if err != nil {
			return fail(action+" to succeed on n"+fmt.Sprint(id), err.Error())
		}
	}
	return nil
}

// quorateMaster is the master named by the nodes reporting themselves
// quorate, or 0 if none or they disagree.
func (r *runner) quorateMaster() node.ID {
	var m node.ID
	for _, id := range r.nodes {
		if !r.running(id) {
			continue
		}
		rep, ok := r.b.report(id)
		if !ok || !rep.quorate {
			continue
		}
		if m != 0 && rep.master != m {
			return 0
		}
		m = rep.master
	}
	return m
}

// converged evaluates the four rules of `wait: converged`; it returns ""
// when they hold, or what does not.
func (r *runner) converged() string {
	// A leave under way is a transition under way: not converged until
	// the node has shut down.
	for _, id := range r.nodes {
		if r.st[id] == lsLeaving {
			return fmt.Sprintf("n%d is still leaving", id)
		}
	}
	var reps = map[node.ID]report{}
	anyDef := false
	for _, id := range r.nodes {
		if !r.running(id) {
			continue
		}
		rep, ok := r.b.report(id)
		if !ok {
			return fmt.Sprintf("n%d has not started", id)
		}
		reps[id] = rep
		def := r.defQuorate(id)
		anyDef = anyDef || def
		if !r.cuts && rep.quorate != def {
			return fmt.Sprintf("n%d reports quorate=%v, but by the definition it is %v", id, rep.quorate, def)
		}
	}
	if !anyDef {
		return ""
	}
	var q []node.ID
	for _, id := range r.nodes {
		if rep, ok := reps[id]; ok && rep.quorate {
			q = append(q, id)
		}
	}
	if len(q) == 0 {
		return "no node reports itself quorate"
	}
	first := reps[q[0]]
	for _, id := range q {
		rep := reps[id]
		if rep.last != first.last || !slices.Equal(rep.view, first.view) {
			return fmt.Sprintf("n%d has #%d view %s, n%d has #%d view %s", id, rep.last, fmtIDs(rep.view), q[0], first.last, fmtIDs(first.view))
		}
		for n, s := range rep.states {
			switch s {
			case clms.StateComingUp, clms.StateShutdown, clms.StateGoingDown, clms.StateKCleanup, clms.StateUCleanup:
				return fmt.Sprintf("n%d sees n%d in %s", id, n, s)
			}
		}
		if rep.master != first.master {
			return fmt.Sprintf("n%d names master n%d, n%d names n%d", id, rep.master, q[0], first.master)
		}
	}
	if !slices.Equal(first.view, q) {
		return fmt.Sprintf("the view %s is not the quorate nodes %s", fmtIDs(first.view), fmtIDs(q))
	}
	if !slices.Contains(q, first.master) {
		return fmt.Sprintf("the master n%d is not among the quorate nodes %s", first.master, fmtIDs(q))
	}
	return ""
}

func (r *runner) waitConverged(timeout time.Duration, fail func(string, string) *Failure) *Failure {
	why := ""
	ok, err := r.b.runFor(timeout, func() bool {
		r.settle()
		if r.ck.Violation() != nil {
			return true
		}
		why = r.converged()
		return why == ""
	})
	if err != nil {
		return fail("converged", err.Error())
	}
	if !ok {
		return fail(fmt.Sprintf("converged within %v", timeout), why)
	}
	return nil
}

func fmtIDs(ids []node.ID) string {
	var s []string
	for _, id := range ids {
		s = append(s, fmt.Sprint(uint32(id)))
	}
	return "[" + strings.Join(s, ", ") + "]"
}
