package scenarios

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Format writes s as a scenario file in canonical form, every default
// spelled out: for a valid s, Parse(Format(s)) gives s back, positions
// aside (and SeedSet, for a seed changed in code without it). A runner
// can log it beside a failure, so that what ran is plain even when the
// file relied on defaults, and the fuzz test uses it to check that the
// parser loses nothing.
func (s *Scenario) Format() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "name: %s\n", strconv.Quote(s.Name))
	if s.Description != "" {
		fmt.Fprintf(&b, "description: %s\n", strconv.Quote(s.Description))
	}
	if s.SeedSet || s.Seed != DefaultSeed {
		fmt.Fprintf(&b, "seed: %d\n", s.Seed)
	}
	if n := len(s.Nodes); n > 0 && s.Nodes[0] == 1 && s.Nodes[n-1] == n {
		fmt.Fprintf(&b, "nodes: %d\n", n) // 1..N, ascending and distinct
	} else {
		fmt.Fprintf(&b, "nodes: %s\n", formatIntList(s.Nodes))
	}
	fmt.Fprintf(&b, "masters: %s\n", formatIntList(s.Masters))
	fmt.Fprintf(&b, "config:\n  heartbeat: %s\n  nodedown_after: %s\n  election_timeout: %s\n",
		s.Config.Heartbeat, s.Config.NodedownAfter, s.Config.ElectionTimeout)
	fmt.Fprintf(&b, "network:\n  latency: %s\n  jitter: %s\n  loss: %s\n  duplicate: %s\n",
		s.Network.Latency, s.Network.Jitter, formatRate(s.Network.Loss), formatRate(s.Network.Duplicate))
	if len(s.SkipOn) > 0 {
		b.WriteString("skip_on:\n")
		for _, k := range Backends {
			if r, ok := s.SkipOn[k]; ok {
				fmt.Fprintf(&b, "  %s: %s\n", k, strconv.Quote(r))
			}
		}
	}
	b.WriteString("steps:\n")
	for i := range s.Steps {
		formatStep(&b, &s.Steps[i])
	}
	return b.Bytes()
}

func formatStep(b *bytes.Buffer, st *Step) {
	lead := "  - "
	line := func(key, value string) {
		fmt.Fprintf(b, "%s%s: %s\n", lead, key, value)
		lead = "    "
	}
	if st.At != nil {
		line("at", st.At.String())
	}
	line(st.Action, formatAction(st))
	if st.Timeout != nil {
		line("timeout", st.Timeout.String())
	}
}

// formatAction writes the value of a step's action key, in flow style so
// that each step stays on one line or two.
func formatAction(st *Step) string {
	switch st.Action {
	case ActionBoot, ActionCrash, ActionRestart, ActionLeave, ActionPause, ActionResume:
		return st.Nodes().String()
	case ActionPartition:
		groups := make([]string, len(st.Partition.Groups))
		for i, g := range st.Partition.Groups {
			groups[i] = formatIntList(g)
		}
		return "[" + strings.Join(groups, ", ") + "]"
	case ActionCut:
		return fmt.Sprintf("{from: %s, to: %s}", st.Cut.From, st.Cut.To)
	case ActionLink:
		l := st.Link
		parts := []string{"between: " + formatIntList(l.Between[:])}
		parts = appendDuration(parts, "latency", l.Latency)
		parts = appendDuration(parts, "jitter", l.Jitter)
		if l.Loss != nil {
			parts = append(parts, "loss: "+formatRate(*l.Loss))
		}
		if l.Duplicate != nil {
			parts = append(parts, "duplicate: "+formatRate(*l.Duplicate))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case ActionClock:
		c := st.Clock
		parts := []string{"node: " + strconv.Itoa(c.Node)}
		parts = appendDuration(parts, "offset", c.Offset)
		if c.DriftPPM != nil {
			parts = append(parts, "drift: "+strconv.FormatFloat(*c.DriftPPM, 'f', -1, 64)+"ppm")
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case ActionHeal:
		return "all"
	case ActionSleep:
		return st.Sleep.String()
	case ActionWait:
		return st.Wait.Condition
	case ActionExpect:
		return formatExpect(st.Expect)
	case ActionNemesis:
		n := st.Nemesis
		names := make([]string, len(n.Faults))
		for i, f := range n.Faults {
			names[i] = string(f)
		}
		return fmt.Sprintf("{duration: %s, interval: %s, faults: [%s]}", n.Duration, n.Interval, strings.Join(names, ", "))
	}
	return "null"
}

func formatExpect(e *Expect) string {
	var parts []string
	for _, c := range []struct {
		name string
		set  *NodeSet
	}{
		{"members", e.Members}, {"down", e.Down}, {"master", e.Master},
		{"quorate", e.Quorate}, {"inquorate", e.Inquorate},
	} {
		if c.set != nil {
			parts = append(parts, c.name+": "+c.set.String())
		}
	}
	if e.ViewOf != nil {
		parts = append(parts, fmt.Sprintf("view_of: {node: %d, members: %s}", e.ViewOf.Node, e.ViewOf.Members))
	}
	if e.TransitionsAtLeast != nil {
		parts = append(parts, "transitions_at_least: "+strconv.Itoa(*e.TransitionsAtLeast))
	}
	parts = appendDuration(parts, "detected_within", e.DetectedWithin)
	if e.FalseNodedowns != nil {
		parts = append(parts, "false_nodedowns: "+strconv.Itoa(*e.FalseNodedowns))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func appendDuration(parts []string, key string, d *time.Duration) []string {
	if d == nil {
		return parts
	}
	return append(parts, key+": "+d.String())
}

// formatRate writes a fraction as the shortest percentage that parses
// back to it exactly ("20%" for 0.2, not "20.000000000000004%").
func formatRate(r float64) string {
	for prec := 0; prec <= 20; prec++ {
		s := strconv.FormatFloat(r*100, 'f', prec, 64)
		if back, err := strconv.ParseFloat(s, 64); err == nil && back/100 == r {
			return s + "%"
		}
	}
	return strconv.FormatFloat(r*100, 'f', -1, 64) + "%"
}
