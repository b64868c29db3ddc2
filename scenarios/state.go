package scenarios

import (
	"fmt"
	"strings"
)

// nodeState is a set of states a node may be in at some step, as far as
// the file alone tells: steps that name the master, or timing (a leave
// completes some time after it starts), leave more than one possible.
type nodeState uint8

const (
	stNew     nodeState = 1 << iota // never booted
	stRunning                       // booted or restarted, not paused
	stPaused
	stCrashed
	stLeaving // leaving, or already departed
)

// stateTracker rejects node actions that are certain to fail, before
// anything runs: booting a node twice, crashing or pausing one that never
// ran or already crashed, restarting a running one or one that never
// ran, resuming one that is not paused. "Certain" is meant strictly: a
// step is only rejected when every state the node could be in makes it
// fail, so that no scenario that could pass is refused.
type stateTracker struct {
	nodes  []int
	states map[int]nodeState
}

func newStateTracker(nodes []int) *stateTracker {
	t := &stateTracker{nodes: nodes, states: make(map[int]nodeState, len(nodes))}
	for _, n := range nodes {
		t.states[n] = stNew
	}
	return t
}

// rule says in which states an action can work, in which it surely does,
// and what state it leaves the node in when it does.
type rule struct {
	valid, sure nodeState
	result      nodeState
}

// rules are conservative where SCENARIOS.md is silent: crashing, pausing
// or making leave a paused or leaving node, and restarting a paused one,
// may work or not; the run judges, and afterwards the node may be in
// either state.
var rules = map[string]rule{
	ActionBoot:    {valid: stNew, sure: stNew, result: stRunning},
	ActionCrash:   {valid: stRunning | stPaused | stLeaving, sure: stRunning, result: stCrashed},
	ActionRestart: {valid: stCrashed | stLeaving | stPaused, sure: stCrashed, result: stRunning},
	ActionLeave:   {valid: stRunning | stPaused | stLeaving, sure: stRunning, result: stLeaving},
	ActionPause:   {valid: stRunning | stPaused | stLeaving, sure: stRunning, result: stPaused},
	ActionResume:  {valid: stPaused, sure: stPaused, result: stRunning},
}

// after returns the states a node in states may be in after a step of
// rule r that targets it, if the step does not fail.
func (r rule) after(states nodeState) nodeState {
	var out nodeState
	for s := stNew; s <= stLeaving; s <<= 1 {
		switch {
		case states&s == 0:
		case r.sure&s != 0:
			out |= r.result
		case r.valid&s != 0:
			out |= r.result | s
		default:
			out |= s
		}
	}
	return out
}

// apply runs one node action on set. For the targeted nodes on which it
// is certain to fail it calls report, once per node named explicitly and
// once per kind of failure for `all` (first the node it is about, then the
// message), then carries on as if it had worked, so that one mistake is
// reported once rather than at every later step.
func (t *stateTracker) apply(action string, set NodeSet, report func(id int, msg string)) {
	r, ok := rules[action]
	if !ok {
		return
	}
	if set.Master {
		// Some one node, unknown before the run: each may or may not be it.
		for _, n := range t.nodes {
			t.states[n] |= r.after(t.states[n])
		}
		return
	}
	ids := set.IDs
	if set.All {
		ids = t.nodes
	}
	var failed []int
	var failedStates []nodeState
	for _, n := range ids {
		cur, known := t.states[n]
		if !known {
			continue // not in nodes; reported elsewhere
		}
		if cur&r.valid == 0 {
			failed = append(failed, n)
			failedStates = append(failedStates, cur)
			t.states[n] = r.result
			continue
		}
		t.states[n] = r.after(cur)
	}
	if !set.All {
		for i, n := range failed {
			report(n, failure(action, []int{n}, failedStates[i], false))
		}
		return
	}
	// Group `all` by state, in node order, so 1024 nodes make one line.
	for i := 0; i < len(failed); i++ {
		st := failedStates[i]
		if st == 0 {
			continue
		}
		group := []int{failed[i]}
		for j := i + 1; j < len(failed); j++ {
			if failedStates[j] == st {
				group = append(group, failed[j])
				failedStates[j] = 0
			}
		}
		report(failed[i], failure(action, group, st, true))
	}
}

// heal resumes every paused node.
func (t *stateTracker) heal() {
	for n, s := range t.states {
		if s&stPaused != 0 {
			t.states[n] = s&^stPaused | stRunning
		}
	}
}

// nemesis applies the end of a nemesis: it heals, waits for leaving nodes
// to depart and restarts every crashed or departed node, so every node
// that ever ran is running again. It never boots a new node (restart
// picks only crashed or departed ones).
func (t *stateTracker) nemesis() {
	for n, s := range t.states {
		out := s & stNew
		if s&^stNew != 0 {
			out |= stRunning
		}
		t.states[n] = out
	}
}

// failure explains why action fails on nodes ns, all in states; inAll
// says they were named by `all`.
func failure(action string, ns []int, states nodeState, inAll bool) string {
	subject, is, has, was := "node "+FormatNodes(ns), "is", "has", "was"
	if len(ns) > 1 {
		subject, is, has, was = "nodes "+FormatNodes(ns), "are", "have", "were"
	}
	if inAll {
		subject = "all includes " + subject + ", which"
	}
	switch action {
	case ActionBoot:
		return fmt.Sprintf("%s %s already been booted (boot is for nodes that never ran; restart boots one again)", subject, has)
	case ActionRestart:
		if states == stNew {
			return fmt.Sprintf("%s %s never booted (use boot)", subject, was)
		}
		return fmt.Sprintf("%s %s %s at this step, not crashed or departed", subject, is, describeStates(states))
	case ActionResume:
		return fmt.Sprintf("%s %s %s at this step, not paused", subject, is, describeStates(states))
	}
	return fmt.Sprintf("%s %s not running at this step (%s)", subject, is, describeStates(states))
}

func describeStates(states nodeState) string {
	var words []string
	for _, w := range []struct {
		s    nodeState
		word string
	}{
		{stNew, "never booted"}, {stRunning, "running"}, {stPaused, "paused"},
		{stCrashed, "crashed"}, {stLeaving, "leaving"},
	} {
		if states&w.s != 0 {
			words = append(words, w.word)
		}
	}
	return strings.Join(words, " or ")
}
