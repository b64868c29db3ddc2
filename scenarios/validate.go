package scenarios

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Validate checks a Scenario value against the rules Parse enforces on a
// file: a scenario built or changed in code (a generated soak, a test, a
// --seed override) must satisfy them too before it runs. Parse's result
// always passes; the fuzz test holds it to that, so the two stay in step.
// The error, when not nil, is an ErrorList positioned at the steps'
// Line and Col (zero for steps built in code).
func (s *Scenario) Validate() error {
	v := &validator{file: s.File}
	v.scenario(s)
	v.errs.Sort()
	return v.errs.Err()
}

type validator struct {
	file string
	errs ErrorList
	// nodes is the scenario's node list, nil if it is itself invalid.
	nodes  []int
	states *stateTracker
}

func (v *validator) errorf(pos Pos, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.file, Line: pos.Line, Col: pos.Col, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) scenario(s *Scenario) {
	var top Pos
	if !namePattern.MatchString(s.Name) {
		v.errorf(top, "name: %s does not match [a-z0-9-]+", quoteShort(s.Name))
	}
	if v.sortedIDs(top, "nodes", s.Nodes, false) {
		v.nodes = s.Nodes
		v.states = newStateTracker(s.Nodes)
	}
	v.sortedIDs(top, "masters", s.Masters, true)

	for _, c := range []struct {
		name string
		d    time.Duration
	}{
		{"heartbeat", s.Config.Heartbeat},
		{"nodedown_after", s.Config.NodedownAfter},
		{"election_timeout", s.Config.ElectionTimeout},
	} {
		if c.d <= 0 {
			v.errorf(top, "config.%s: must be positive, got %s", c.name, c.d)
		}
	}
	v.link(top, "network", &s.Network.Latency, &s.Network.Jitter, &s.Network.Loss, &s.Network.Duplicate)

	if len(s.Steps) == 0 {
		v.errorf(top, "steps: empty; a scenario needs at least one step")
	}
	for i := range s.Steps {
		v.step(i+1, &s.Steps[i])
	}
}

// sortedIDs checks a list of node numbers: non-empty, ascending, distinct,
// and, when inNodes, each in the scenario's nodes.
func (v *validator) sortedIDs(pos Pos, path string, ids []int, inNodes bool) bool {
	if len(ids) == 0 {
		v.errorf(pos, "%s: empty list", path)
		return false
	}
	ok := true
	for i, n := range ids {
		if i > 0 && ids[i-1] >= n {
			v.errorf(pos, "%s: %s is not ascending and distinct", path, formatIntList(ids))
			return false
		}
		if !v.member(pos, path, n, inNodes) {
			ok = false
		}
	}
	return ok
}

// member checks one node number.
func (v *validator) member(pos Pos, path string, n int, inNodes bool) bool {
	if n < MinNode || n > MaxNode {
		v.errorf(pos, "%s: node %d is not in %d-%d", path, n, MinNode, MaxNode)
		return false
	}
	if inNodes && v.nodes != nil {
		if _, found := slices.BinarySearch(v.nodes, n); !found {
			v.errorf(pos, "%s: node %d is not in nodes (%s)", path, n, FormatNodes(v.nodes))
			return false
		}
	}
	return true
}

func (v *validator) nodeSet(pos Pos, path string, set *NodeSet) {
	if set == nil {
		v.errorf(pos, "%s: missing node set", path)
		return
	}
	given := 0
	for _, b := range []bool{set.All, set.Master, len(set.IDs) > 0} {
		if b {
			given++
		}
	}
	if given != 1 {
		v.errorf(pos, "%s: want exactly one of all, master and node numbers, got %d", path, given)
		return
	}
	if len(set.IDs) > 0 {
		v.sortedIDs(pos, path, set.IDs, true)
	}
}

func (v *validator) rate(pos Pos, path string, r float64) {
	if math.IsNaN(r) || r < 0 || r > 1 {
		v.errorf(pos, "%s: %v is not in [0, 1]", path, r)
	}
}

func (v *validator) nonNegative(pos Pos, path string, d time.Duration) {
	if d < 0 {
		v.errorf(pos, "%s: must not be negative, got %s", path, d)
	}
}

func (v *validator) link(pos Pos, path string, latency, jitter *time.Duration, loss, duplicate *float64) {
	if latency != nil {
		v.nonNegative(pos, path+".latency", *latency)
	}
	if jitter != nil {
		v.nonNegative(pos, path+".jitter", *jitter)
	}
	if loss != nil {
		v.rate(pos, path+".loss", *loss)
	}
	if duplicate != nil {
		v.rate(pos, path+".duplicate", *duplicate)
	}
}

func (v *validator) step(num int, st *Step) {
	pos := st.Pos()
	prefix := fmt.Sprintf("step %d: ", num)
	set := map[string]bool{
		ActionBoot: st.Boot != nil, ActionCrash: st.Crash != nil, ActionRestart: st.Restart != nil,
		ActionLeave: st.Leave != nil, ActionPause: st.Pause != nil, ActionResume: st.Resume != nil,
		ActionPartition: st.Partition != nil, ActionCut: st.Cut != nil, ActionLink: st.Link != nil,
		ActionClock: st.Clock != nil, ActionHeal: st.Heal, ActionSleep: st.Sleep != nil,
		ActionWait: st.Wait != nil, ActionExpect: st.Expect != nil, ActionNemesis: st.Nemesis != nil,
	}
	if !slices.Contains(actions, st.Action) {
		v.errorf(pos, "%sunknown action %q", prefix, st.Action)
		return
	}
	for _, a := range actions {
		if set[a] != (a == st.Action) {
			v.errorf(pos, "%saction is %s but the %s field is %s", prefix, st.Action, a, map[bool]string{true: "set", false: "not set"}[set[a]])
			return
		}
	}
	if st.At != nil {
		v.nonNegative(pos, prefix+"at", *st.At)
	}
	switch {
	case HasTimeout(st.Action) && st.Timeout == nil:
		v.errorf(pos, "%stimeout: missing; Parse sets the default", prefix)
	case !HasTimeout(st.Action) && st.Timeout != nil:
		v.errorf(pos, "%stimeout: only wait and nemesis steps take a timeout, not %s", prefix, st.Action)
	case st.Timeout != nil && *st.Timeout <= 0:
		v.errorf(pos, "%stimeout: must be positive, got %s", prefix, *st.Timeout)
	}
	path := prefix + st.Action
	switch st.Action {
	case ActionBoot, ActionCrash, ActionRestart, ActionLeave, ActionPause, ActionResume:
		ns := st.Nodes()
		v.nodeSet(pos, path, ns)
		if v.states != nil {
			v.states.apply(st.Action, *ns, func(_ int, msg string) { v.errorf(pos, "%s: %s", path, msg) })
		}
	case ActionPartition:
		v.partition(pos, path, st.Partition)
	case ActionCut:
		v.nodeSet(pos, path+".from", &st.Cut.From)
		v.nodeSet(pos, path+".to", &st.Cut.To)
	case ActionLink:
		l := st.Link
		if l.Between[0] >= l.Between[1] {
			v.errorf(pos, "%s.between: want two distinct nodes, ascending, got %v", path, l.Between)
		}
		v.member(pos, path+".between", l.Between[0], true)
		v.member(pos, path+".between", l.Between[1], true)
		v.link(pos, path, l.Latency, l.Jitter, l.Loss, l.Duplicate)
	case ActionClock:
		c := st.Clock
		v.member(pos, path+".node", c.Node, true)
		if c.DriftPPM != nil && !(math.Abs(*c.DriftPPM) < DriftLimitPPM) {
			v.errorf(pos, "%s.drift: %vppm is not strictly within ±%.0fppm", path, *c.DriftPPM, DriftLimitPPM)
		}
	case ActionHeal:
		if v.states != nil {
			v.states.heal()
		}
	case ActionSleep:
		v.nonNegative(pos, path, *st.Sleep)
	case ActionWait:
		if st.Wait.Condition != WaitConverged {
			v.errorf(pos, "%s: unknown condition %q", path, st.Wait.Condition)
		}
	case ActionExpect:
		v.expect(pos, path, st.Expect)
	case ActionNemesis:
		v.nemesis(pos, path, st.Nemesis)
		if v.states != nil {
			v.states.nemesis()
		}
	}
}

func (v *validator) partition(pos Pos, path string, p *Partition) {
	if len(p.Groups) == 0 {
		v.errorf(pos, "%s: no groups", path)
		return
	}
	seen := map[int]bool{}
	for i, g := range p.Groups {
		gpath := fmt.Sprintf("%s: group %d", path, i+1)
		if !v.sortedIDs(pos, gpath, g, true) {
			continue
		}
		for _, n := range g {
			if seen[n] {
				v.errorf(pos, "%s: node %d is in two groups", path, n)
			}
			seen[n] = true
		}
	}
	for _, n := range v.nodes {
		if !seen[n] {
			v.errorf(pos, "%s: node %d is in no group", path, n)
		}
	}
}

func (v *validator) expect(pos Pos, path string, e *Expect) {
	for _, c := range []struct {
		name string
		set  *NodeSet
	}{
		{"members", e.Members}, {"down", e.Down}, {"master", e.Master},
		{"quorate", e.Quorate}, {"inquorate", e.Inquorate},
	} {
		if c.set != nil {
			v.nodeSet(pos, path+"."+c.name, c.set)
		}
	}
	if e.ViewOf != nil {
		v.member(pos, path+".view_of.node", e.ViewOf.Node, true)
		v.nodeSet(pos, path+".view_of.members", &e.ViewOf.Members)
	}
	if e.TransitionsAtLeast != nil && *e.TransitionsAtLeast < 0 {
		v.errorf(pos, "%s.transitions_at_least: must not be negative, got %d", path, *e.TransitionsAtLeast)
	}
	if e.FalseNodedowns != nil && *e.FalseNodedowns < 0 {
		v.errorf(pos, "%s.false_nodedowns: must not be negative, got %d", path, *e.FalseNodedowns)
	}
	if e.DetectedWithin != nil && *e.DetectedWithin <= 0 {
		v.errorf(pos, "%s.detected_within: must be positive, got %s", path, *e.DetectedWithin)
	}
}

func (v *validator) nemesis(pos Pos, path string, n *Nemesis) {
	if n.Duration <= 0 {
		v.errorf(pos, "%s.duration: must be positive, got %s", path, n.Duration)
	}
	if n.Interval <= 0 {
		v.errorf(pos, "%s.interval: must be positive, got %s", path, n.Interval)
	}
	if len(n.Faults) == 0 {
		v.errorf(pos, "%s.faults: empty list", path)
	}
	seen := map[Fault]bool{}
	for _, f := range n.Faults {
		if !slices.Contains(faults, f) {
			v.errorf(pos, "%s.faults: unknown fault %q", path, f)
		}
		if seen[f] {
			v.errorf(pos, "%s.faults: %s is listed twice", path, f)
		}
		seen[f] = true
	}
}
