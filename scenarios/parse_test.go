package scenarios

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func ptr[T any](v T) *T { return &v }

// ignorePositions compares scenarios by content only.
var ignorePositions = cmp.Options{
	cmpopts.IgnoreFields(Step{}, "Line", "Col", "AtPos", "TimeoutPos"),
	cmpopts.IgnoreFields(NodeSet{}, "Pos"),
	cmpopts.IgnoreFields(Expect{}, "FieldPos"),
}

func mustParseFile(t *testing.T, path string) *Scenario {
	t.Helper()
	s, err := ParseFile(path)
	if err != nil {
		t.Fatalf("ParseFile(%s):\n%v", path, err)
	}
	return s
}

// TestParseContractExample parses the example of SCENARIOS.md, verbatim
// in testdata/valid/master-crash.yaml, down to every position.
func TestParseContractExample(t *testing.T) {
	path := filepath.Join("testdata", "valid", "master-crash.yaml")
	got := mustParseFile(t, path)
	want := &Scenario{
		Name:        "master-crash",
		Description: "The master crashes and a candidate takes over.",
		File:        path,
		Seed:        7,
		SeedSet:     true,
		Nodes:       []int{1, 2, 3, 4, 5},
		Masters:     []int{1, 2, 3},
		Config:      Config{Heartbeat: 50 * time.Millisecond, NodedownAfter: 250 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond},
		Network:     Link{Latency: time.Millisecond},
		Steps: []Step{
			{Line: 17, Col: 5, Action: "boot", Boot: &NodeSet{All: true, Pos: Pos{17, 11}}},
			{Line: 18, Col: 5, Action: "wait", Wait: &Wait{Condition: "converged"},
				Timeout: ptr(10 * time.Second), TimeoutPos: Pos{19, 5}},
			{Line: 20, Col: 5, Action: "crash", Crash: &NodeSet{Master: true, Pos: Pos{20, 12}}},
			{Line: 21, Col: 5, Action: "wait", Wait: &Wait{Condition: "converged"},
				Timeout: ptr(3 * time.Second), TimeoutPos: Pos{22, 5}},
			{Line: 23, Col: 5, Action: "expect", Expect: &Expect{
				Members:  &NodeSet{IDs: []int{2, 3, 4, 5}, Pos: Pos{24, 16}},
				Master:   &NodeSet{IDs: []int{2, 3}, Pos: Pos{25, 15}},
				FieldPos: map[string]Pos{"members": {24, 7}, "master": {25, 7}},
			}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parse mismatch (-want +got):\n%s", diff)
	}
}

func TestParseDefaults(t *testing.T) {
	got, err := Parse("min.yaml", []byte("name: min\nnodes: [9, 2, 5, 1]\nsteps:\n  - boot: all\n  - wait: converged\n  - nemesis: {duration: 1m, interval: 5s, faults: [crash]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Scenario{
		Name:    "min",
		File:    "min.yaml",
		Seed:    1,
		Nodes:   []int{1, 2, 5, 9},
		Masters: []int{1, 2, 5}, // the three lowest
		Config:  Config{Heartbeat: 50 * time.Millisecond, NodedownAfter: 250 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond},
		Network: Link{Latency: time.Millisecond, Jitter: 0, Loss: 0, Duplicate: 0},
		Steps: []Step{
			{Action: "boot", Boot: &NodeSet{All: true}},
			{Action: "wait", Wait: &Wait{Condition: "converged"}, Timeout: ptr(30 * time.Second)},
			{Action: "nemesis", Nemesis: &Nemesis{Duration: time.Minute, Interval: 5 * time.Second, Faults: []Fault{FaultCrash}},
				Timeout: ptr(2 * time.Minute)},
		},
	}
	if diff := cmp.Diff(want, got, ignorePositions); diff != "" {
		t.Errorf("defaults mismatch (-want +got):\n%s", diff)
	}
	if got.Steps[1].TimeoutPos.IsValid() {
		t.Errorf("a defaulted timeout has position %v, want none", got.Steps[1].TimeoutPos)
	}
	if got.Config != DefaultConfig() || got.Network != DefaultNetwork() {
		t.Errorf("config %+v network %+v, want the defaults", got.Config, got.Network)
	}

	// masters as one number, or all.
	for src, want := range map[string][]int{"masters: 2": {2}, "masters: all": {1, 2, 3, 4}} {
		s, err := Parse("m.yaml", []byte("name: m\nnodes: 4\n"+src+"\nsteps: [{boot: all}]\n"))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, s.Masters); diff != "" {
			t.Errorf("%s (-want +got):\n%s", src, diff)
		}
	}

	// Fewer than three nodes: all of them are candidates.
	two, err := Parse("two.yaml", []byte("name: two\nnodes: 2\nsteps: [{boot: all}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{1, 2}, two.Masters); diff != "" {
		t.Errorf("masters of two nodes (-want +got):\n%s", diff)
	}
}

// TestParseEveryAction checks the decoding of every action and field.
func TestParseEveryAction(t *testing.T) {
	got := mustParseFile(t, filepath.Join("testdata", "valid", "every-action.yaml"))
	all := NodeSet{All: true}
	ids := func(ns ...int) *NodeSet { return &NodeSet{IDs: ns} }
	want := &Scenario{
		Name:        "every-action",
		Description: "Touches every action and field of the format once, so that the parser\ntests and the fuzz corpus cover all of it.\n",
		File:        filepath.Join("testdata", "valid", "every-action.yaml"),
		Seed:        42,
		SeedSet:     true,
		Nodes:       []int{1, 2, 3, 5, 8},
		Masters:     []int{1, 2, 3},
		Config:      Config{Heartbeat: 20 * time.Millisecond, NodedownAfter: 100 * time.Millisecond, ElectionTimeout: 150 * time.Millisecond},
		Network:     Link{Latency: 2 * time.Millisecond, Jitter: 500 * time.Microsecond, Loss: 0.005, Duplicate: 0.01},
		Steps: []Step{
			{Action: "boot", Boot: ids(1, 2, 3)},
			{Action: "boot", Boot: ids(5, 8), At: ptr(100 * time.Millisecond)},
			{Action: "wait", Wait: &Wait{"converged"}, Timeout: ptr(30 * time.Second)},
			{Action: "pause", Pause: ids(5)},
			{Action: "sleep", Sleep: ptr(200 * time.Millisecond)},
			{Action: "resume", Resume: ids(5)},
			{Action: "leave", Leave: ids(8)},
			{Action: "sleep", Sleep: ptr(time.Second)},
			{Action: "restart", Restart: ids(8)},
			{Action: "crash", Crash: ids(2, 3)},
			{Action: "wait", Wait: &Wait{"converged"}, Timeout: ptr(30 * time.Second)},
			{Action: "expect", Expect: &Expect{Down: ids(2, 3), Master: ids(1)}},
			{Action: "restart", Restart: ids(2, 3)},
			{Action: "cut", Cut: &Cut{From: NodeSet{IDs: []int{1}}, To: NodeSet{IDs: []int{2, 3}}}},
			{Action: "cut", Cut: &Cut{From: all, To: NodeSet{IDs: []int{5}}}},
			{Action: "link", Link: &LinkChange{Between: [2]int{1, 2}, Latency: ptr(10 * time.Millisecond),
				Jitter: ptr(time.Millisecond), Loss: ptr(0.2), Duplicate: ptr(0.05)}},
			{Action: "link", Link: &LinkChange{Between: [2]int{3, 5}, Loss: ptr(1.0)}},
			{Action: "clock", Clock: &Clock{Node: 3, Offset: ptr(-2 * time.Second), DriftPPM: ptr(100.0)}},
			{Action: "clock", Clock: &Clock{Node: 5, DriftPPM: ptr(-50.5)}},
			{Action: "heal", Heal: true},
			{Action: "wait", Wait: &Wait{"converged"}, Timeout: ptr(10 * time.Second)},
			{Action: "expect", At: ptr(20 * time.Second), Expect: &Expect{
				Members:            &all,
				Master:             &NodeSet{Master: true},
				Quorate:            &all,
				ViewOf:             &ViewOf{Node: 1, Members: all},
				TransitionsAtLeast: ptr(5),
				DetectedWithin:     ptr(1500 * time.Millisecond),
				FalseNodedowns:     ptr(0),
			}},
			{Action: "nemesis", Timeout: ptr(3 * time.Minute), Nemesis: &Nemesis{
				Duration: 30 * time.Second, Interval: 2 * time.Second, Faults: Faults()}},
			{Action: "expect", Expect: &Expect{Members: &all}},
		},
	}
	if diff := cmp.Diff(want, got, ignorePositions); diff != "" {
		t.Errorf("parse mismatch (-want +got):\n%s", diff)
	}
	// The positions a runner cites.
	at := got.Steps[21]
	if at.Pos() != (Pos{45, 5}) || at.AtPos != (Pos{53, 5}) || at.Expect.FieldPos["detected_within"] != (Pos{51, 7}) {
		t.Errorf("step 22 at %v, its at at %v, detected_within at %v; want 45:5, 53:5, 51:7",
			at.Pos(), at.AtPos, at.Expect.FieldPos["detected_within"])
	}
	if n := got.Steps[22]; n.TimeoutPos != (Pos{58, 5}) {
		t.Errorf("nemesis timeout at %v, want 58:5", n.TimeoutPos)
	}
}

func TestParseAliases(t *testing.T) {
	got := mustParseFile(t, filepath.Join("testdata", "valid", "anchors.yaml"))
	if diff := cmp.Diff([]int{1, 2, 3, 4}, got.Steps[0].Boot.IDs); diff != "" {
		t.Errorf("boot *nodes (-want +got):\n%s", diff)
	}
	// An aliased step is positioned where the alias is, not the anchor.
	if s := got.Steps[3]; s.Action != "wait" || *s.Timeout != 5*time.Second || s.Pos() != (Pos{10, 5}) {
		t.Errorf("step 4 = %s timeout %v at %v, want wait 5s at 10:5", s.Action, s.Timeout, s.Pos())
	}
}

// TestParseAccepts covers forms the contract allows that the example files
// do not show.
func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct {
		name, step string
		check      func(*Step) bool
	}{
		{"at zero", "{at: 0s, crash: 1}", func(s *Step) bool { return *s.At == 0 }},
		{"bare zero duration", "{at: 0, crash: 1}", func(s *Step) bool { return *s.At == 0 }},
		{"sleep zero", "{sleep: 0s}", func(s *Step) bool { return *s.Sleep == 0 }},
		{"quoted duration", `{sleep: "1m30s"}`, func(s *Step) bool { return *s.Sleep == 90*time.Second }},
		{"negative offset", "{clock: {node: 1, offset: -1m}}", func(s *Step) bool { return *s.Clock.Offset == -time.Minute }},
		{"fractional rate", "{link: {between: [2, 1], loss: 12.5%}}", func(s *Step) bool {
			return *s.Link.Loss == 0.125 && s.Link.Between == [2]int{1, 2}
		}},
		{"link without changes", "{link: {between: [1, 2]}}", func(s *Step) bool { return s.Link.Latency == nil && s.Link.Loss == nil }},
		{"clock without changes", "{clock: {node: 2}}", func(s *Step) bool { return s.Clock.Offset == nil && s.Clock.DriftPPM == nil }},
		{"single node", "{crash: 2}", func(s *Step) bool { return cmp.Equal(s.Crash.IDs, []int{2}) }},
		{"unsorted list", "{crash: [3, 1]}", func(s *Step) bool { return cmp.Equal(s.Crash.IDs, []int{1, 3}) }},
		{"empty expect", "{expect: {}}", func(s *Step) bool { return s.Expect != nil && s.Expect.Members == nil }},
		{"one-group partition", "{partition: [[3, 1, 2]]}", func(s *Step) bool { return cmp.Equal(s.Partition.Groups, [][]int{{1, 2, 3}}) }},
		{"negative zero drift", "{clock: {node: 1, drift: -0ppm}}", func(s *Step) bool { return *s.Clock.DriftPPM == 0 }},
		{"anchored node set", "{crash: &c [1]}\n  - {restart: *c}", func(s *Step) bool { return s.Crash != nil }},
		{"step with at after its action", "{crash: 1, at: 1s}", func(s *Step) bool { return *s.At == time.Second }},
		{"cut on both sides", "{cut: {from: all, to: 3}}", func(s *Step) bool { return s.Cut.From.All && cmp.Equal(s.Cut.To.IDs, []int{3}) }},
		{"resume after leaving while paused", "{pause: 1}\n  - {leave: 1}\n  - {resume: 1}", func(s *Step) bool { return s.Pause != nil }},
		{"restart whichever was master", "{crash: master}\n  - {restart: 2}", func(s *Step) bool { return s.Crash.Master }},
		{"restart after a leave", "{leave: 3}\n  - {restart: 3}\n  - {crash: 3}", func(s *Step) bool { return s.Leave != nil }},
		{"nemesis restarts the crashed", "{crash: 1}\n  - {nemesis: {duration: 1s, interval: 1s, faults: [cut]}}\n  - {crash: 1}",
			func(s *Step) bool { return s.Crash != nil }},
		{"CRLF line ends", "{crash: 1}\r\n  - {restart: 1}\r\n", func(s *Step) bool { return s.Crash != nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "name: accepts\nnodes: 3\nsteps:\n  - boot: all\n  - " + tc.step + "\n"
			s, err := Parse("ok.yaml", []byte(src))
			if err != nil {
				t.Fatalf("%s:\n%v", src, err)
			}
			if !tc.check(&s.Steps[1]) {
				t.Errorf("%s: unexpected step %+v", tc.step, s.Steps[1])
			}
			if err := s.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

// TestParseErrors checks the exact FILE:LINE:COL: message lines of
// invalid files.
func TestParseErrors(t *testing.T) {
	// head is a valid preamble; steps start on line 4.
	const head = "name: bad\nnodes: 5\nsteps:\n  - boot: all\n"
	for _, tc := range []struct {
		name string
		src  string
		want []string
	}{{
		name: "bad duration",
		src:  head + "  - sleep: 5 seconds\n",
		want: []string{`bad.yaml:5:12: sleep: want a duration like 250ms, 2s or 1m, got "5 seconds"`},
	}, {
		name: "bad config duration",
		src:  "name: bad\nnodes: 5\nconfig:\n  heartbeat: 50\n  nodedown_after: 0s\nsteps: [{boot: all}]\n",
		want: []string{
			`bad.yaml:4:14: config.heartbeat: want a duration like 250ms, 2s or 1m, got 50`,
			`bad.yaml:5:19: config.nodedown_after: must be positive, got 0s`,
		},
	}, {
		name: "negative at",
		src:  head + "  - at: -1s\n    crash: 1\n",
		want: []string{`bad.yaml:5:9: at: must not be negative, got -1s`},
	}, {
		name: "unknown top-level key",
		src:  "name: bad\nnodse: 5\nnodes: 5\nsteps: [{boot: all}]\nextra: 1\n",
		want: []string{
			`bad.yaml:2:1: nodse: unknown key (did you mean nodes?)`,
			`bad.yaml:5:1: extra: unknown key; want name, description, seed, nodes, masters, config, network, skip_on or steps`,
		},
	}, {
		name: "unknown key in a step",
		src:  head + "  - crash: 1\n    after: 1s\n",
		want: []string{`bad.yaml:6:5: after: unknown key; a step takes an action (boot, crash, restart, leave, pause, resume, partition, cut, link, clock, heal, sleep, wait, expect, nemesis) and optionally at and timeout`},
	}, {
		name: "misspelt action",
		src:  head + "  - crsh: 1\n",
		want: []string{
			`bad.yaml:5:5: crsh: unknown key (did you mean crash?)`,
			`bad.yaml:5:5: steps: step 2 has no action; want one of boot, crash, restart, leave, pause, resume, partition, cut, link, clock, heal, sleep, wait, expect, nemesis`,
		},
	}, {
		name: "unknown key in an action",
		src:  head + "  - link: {between: [1, 2], delay: 5ms}\n",
		want: []string{`bad.yaml:5:29: link.delay: unknown key; want between, latency, jitter, loss or duplicate`},
	}, {
		name: "node outside nodes",
		src:  head + "  - crash: 9\n  - pause: [1, 7]\n",
		want: []string{
			`bad.yaml:5:12: crash: node 9 is not in nodes (1-5)`,
			`bad.yaml:6:16: pause: node 7 is not in nodes (1-5)`,
		},
	}, {
		name: "node outside a node list",
		src:  "name: bad\nnodes: [1, 2, 5, 9]\nsteps:\n  - boot: [1, 2, 3]\n",
		want: []string{`bad.yaml:4:18: boot: node 3 is not in nodes (1-2, 5, 9)`},
	}, {
		name: "partition leaves a node out",
		src:  head + "  - partition: [[1, 2], [3, 4]]\n",
		want: []string{`bad.yaml:5:16: partition: node 5 is in no group; every node in nodes must be in exactly one`},
	}, {
		name: "node in two groups",
		src:  head + "  - partition: [[1, 2, 3], [3, 4, 5]]\n",
		want: []string{`bad.yaml:5:29: partition: node 3 is in two groups (first at 5:24)`},
	}, {
		name: "empty group",
		src:  head + "  - partition: [[1, 2, 3, 4, 5], []]\n",
		want: []string{`bad.yaml:5:34: partition: group 2 is empty`},
	}, {
		name: "malformed flow sequence",
		src:  "name: bad\nnodes: [1, 2, 3}\nsteps:\n  - boot: all\n",
		want: []string{`bad.yaml:2:16: nodes: syntax error: expected ',' or ']' (to close the '[' at 2:8), found '}'`},
	}, {
		name: "unclosed flow sequence",
		src:  "name: bad\nnodes: [1, 2, 3\n",
		want: []string{`bad.yaml:2:16: nodes: syntax error: unexpected end of file: the '[' at 2:8 is never closed`},
	}, {
		name: "unclosed flow sequence before a key",
		src:  "name: bad\nnodes: [1, 2, 3\nsteps: []\n",
		want: []string{`bad.yaml:3:1: nodes: syntax error: ',' or ']' must be specified`},
	}, {
		name: "mismatched flow mapping",
		src:  head + "  - cut: {from: 1, to: 2]\n",
		want: []string{`bad.yaml:5:25: cut: syntax error: expected ',' or '}' (to close the '{' at 5:10), found ']'`},
	}, {
		name: "stray closing bracket",
		src:  "name: bad\nnodes: [1, 2]]\n",
		want: []string{`bad.yaml:2:14: nodes: syntax error: ']' closes nothing`},
	}, {
		name: "mapping in a plain value",
		src:  "name: bad: name\n",
		want: []string{`bad.yaml:1:10: name: syntax error: mapping value is not allowed in this context`},
	}, {
		name: "tab indentation",
		src:  "name: bad\n\tnodes: 5\n",
		want: []string{`bad.yaml:2:1: syntax error: found character '\t' that cannot start any token`},
	}, {
		name: "unterminated quote",
		src:  "name: 'bad\nnodes: 5\n",
		want: []string{`bad.yaml:2:9: syntax error: unexpected end of file: the single-quoted string at 1:7 is never closed`},
	}, {
		name: "two actions in one step",
		src:  head + "  - crash: 1\n    restart: 1\n  - pause: 2\n    heal: some\n",
		want: []string{
			`bad.yaml:6:5: restart: a step has exactly one action, and this one already has crash (at 5:5)`,
			`bad.yaml:8:5: heal: a step has exactly one action, and this one already has pause (at 7:5)`,
			`bad.yaml:8:11: heal: want all, got "some"`,
		},
	}, {
		name: "no action",
		src:  head + "  - at: 1s\n    timeout: 2s\n",
		want: []string{`bad.yaml:5:5: steps: step 2 has no action; want one of boot, crash, restart, leave, pause, resume, partition, cut, link, clock, heal, sleep, wait, expect, nemesis`},
	}, {
		name: "step is not a mapping",
		src:  head + "  - heal\n",
		want: []string{"bad.yaml:5:5: steps: step 2 is \"heal\"; want a mapping such as `- boot: all`"},
	}, {
		name: "timeout on an action without one",
		src:  head + "  - crash: 1\n    timeout: 1s\n",
		want: []string{`bad.yaml:6:5: timeout: only wait and nemesis steps take a timeout, not crash`},
	}, {
		name: "zero timeout",
		src:  head + "  - wait: converged\n    timeout: 0s\n",
		want: []string{`bad.yaml:6:14: timeout: must be positive, got 0s`},
	}, {
		name: "bad rate",
		src:  "name: bad\nnodes: 5\nnetwork:\n  loss: 120%\n  duplicate: 0.2\nsteps:\n  - boot: all\n  - link: {between: [1, 2], loss: -5%}\n",
		want: []string{
			`bad.yaml:4:9: network.loss: 120% is not in [0%, 100%]`,
			`bad.yaml:5:14: network.duplicate: want a percentage like 20%, got 0.2`,
			`bad.yaml:8:35: link.loss: -5% is not in [0%, 100%]`,
		},
	}, {
		name: "bad name",
		src:  "name: Master_Crash\nnodes: 5\nsteps: [{boot: all}]\n",
		want: []string{`bad.yaml:1:7: name: "Master_Crash" does not match [a-z0-9-]+`},
	}, {
		name: "missing required fields",
		src:  "description: nothing else\n",
		want: []string{
			`bad.yaml:1:1: name: required field is missing`,
			`bad.yaml:1:1: nodes: required field is missing`,
			`bad.yaml:1:1: steps: required field is missing`,
		},
	}, {
		name: "empty file",
		src:  "# nothing\n",
		want: []string{`bad.yaml:1:1: empty file: a scenario needs at least name, nodes and steps`},
	}, {
		name: "masters not in nodes",
		src:  "name: bad\nnodes: 3\nmasters: [1, 4, 1]\nsteps: [{boot: all}]\n",
		want: []string{
			`bad.yaml:3:14: masters: node 4 is not in nodes (1-3)`,
			`bad.yaml:3:17: masters: node 1 is listed twice (first at 3:11)`,
		},
	}, {
		name: "bad nodes",
		src:  "name: bad\nnodes: [1, 0, 2, 2, 1025, x]\nsteps: [{crash: 2000}]\n",
		want: []string{
			`bad.yaml:2:12: nodes: node 0 is not in 1-1024`,
			`bad.yaml:2:18: nodes: node 2 is listed twice (first at 2:15)`,
			`bad.yaml:2:21: nodes: node 1025 is not in 1-1024`,
			`bad.yaml:2:27: nodes: want a node number in 1-1024, got "x"`,
			// nodes is unknown, so only the range is checked.
			`bad.yaml:3:17: crash: node 2000 is not in 1-1024`,
		},
	}, {
		name: "node count out of range",
		src:  "name: bad\nnodes: 1025\nsteps: [{boot: all}]\n",
		want: []string{`bad.yaml:2:8: nodes: want a node count in 1-1024 or a list of node numbers, got 1025`},
	}, {
		name: "bad node sets",
		src:  head + "  - crash: everyone\n  - crash: []\n  - crash:\n  - crash: [1, 1]\n  - crash: \"2\"\n",
		want: []string{
			`bad.yaml:5:12: crash: want all, master, a node number or a list of node numbers, got "everyone"`,
			`bad.yaml:6:12: crash: empty list; want at least one node`,
			`bad.yaml:7:5: crash: missing value; want all, master, a node number or a list of node numbers`,
			`bad.yaml:8:16: crash: node 1 is listed twice (first at 8:13)`,
			`bad.yaml:9:12: crash: want all, master, a node number or a list of node numbers, got "2"`,
		},
	}, {
		name: "cut, link and clock shapes",
		src: head + "  - cut: {from: 1}\n  - link: {between: [1, 1]}\n  - link: {between: [1, 2, 3]}\n" +
			"  - link: {latency: 1ms}\n  - clock: {node: [1, 2], drift: 100}\n  - clock: {node: 1, drift: 1000000ppm, offset: soon}\n",
		want: []string{
			`bad.yaml:5:5: cut.to: required field is missing`,
			`bad.yaml:6:25: link.between: node 1 is listed twice (first at 6:22)`,
			`bad.yaml:7:21: link.between: want exactly two nodes, got 3`,
			`bad.yaml:8:5: link.between: required field is missing`,
			`bad.yaml:9:19: clock.node: want one node number, got a list`,
			`bad.yaml:9:34: clock.drift: want parts per million like 100ppm or -50ppm, got 100`,
			`bad.yaml:10:29: clock.drift: 1000000ppm is not strictly within ±1000000ppm`,
			`bad.yaml:10:49: clock.offset: want a duration like 250ms, 2s or 1m, got "soon"`,
		},
	}, {
		name: "heal, wait and sleep values",
		src:  head + "  - heal: everything\n  - wait: stable\n  - sleep: -1s\n",
		want: []string{
			`bad.yaml:5:11: heal: want all, got "everything"`,
			`bad.yaml:6:11: wait: want converged, got "stable"`,
			`bad.yaml:7:12: sleep: must not be negative, got -1s`,
		},
	}, {
		name: "expect fields",
		src: head + "  - expect:\n      members: [1, 6]\n      view_of: {node: 1}\n      transitions_at_least: -1\n" +
			"      detected_within: 0s\n      timeout: 5s\n",
		want: []string{
			`bad.yaml:6:20: expect.members: node 6 is not in nodes (1-5)`,
			`bad.yaml:7:7: expect.view_of.members: required field is missing`,
			`bad.yaml:8:29: expect.transitions_at_least: want a non-negative integer, got -1`,
			`bad.yaml:9:24: expect.detected_within: must be positive, got 0s`,
			`bad.yaml:10:7: expect.timeout: unknown key; expect asserts at once; to wait, put a wait step before it`,
		},
	}, {
		name: "nemesis fields",
		src:  head + "  - nemesis: {interval: 0s, faults: [crash, explode, crash], timeout: 1m}\n  - nemesis: {duration: 1m, interval: 1s, faults: []}\n",
		want: []string{
			`bad.yaml:5:5: nemesis.duration: required field is missing`,
			`bad.yaml:5:25: nemesis.interval: must be positive, got 0s`,
			`bad.yaml:5:45: nemesis.faults: unknown fault "explode"; want crash, restart, pause, partition, cut, loss, clock, leave or master`,
			`bad.yaml:5:54: nemesis.faults: crash is listed twice (first at 5:38)`,
			`bad.yaml:5:62: nemesis.timeout: unknown key; timeout belongs to the step, beside nemesis, not inside it`,
			`bad.yaml:6:51: nemesis.faults: empty list; want a list of faults from crash, restart, pause, partition, cut, loss, clock, leave or master`,
		},
	}, {
		name: "duplicate keys",
		src:  "name: bad\nnodes: 5\nname: worse\nsteps:\n  - crash: 1\n    crash: 2\n",
		want: []string{
			`bad.yaml:3:1: name: duplicate key (first at 1:1)`,
			`bad.yaml:5:12: crash: node 1 is not running at this step (never booted)`,
			`bad.yaml:6:5: crash: duplicate key (first at 5:5)`,
		},
	}, {
		name: "steps that are certain to fail",
		src: head + "  - boot: 2\n  - crash: 3\n  - crash: 3\n  - restart: 4\n  - resume: 5\n" +
			"  - pause: 5\n  - heal: all\n  - resume: 5\n",
		want: []string{
			`bad.yaml:5:11: boot: node 2 has already been booted (boot is for nodes that never ran; restart boots one again)`,
			`bad.yaml:7:12: crash: node 3 is not running at this step (crashed)`,
			`bad.yaml:8:14: restart: node 4 is running at this step, not crashed or departed`,
			`bad.yaml:9:13: resume: node 5 is running at this step, not paused`,
			`bad.yaml:12:13: resume: node 5 is running at this step, not paused`,
		},
	}, {
		name: "all names nodes in the wrong state",
		src:  "name: bad\nnodes: 5\nsteps:\n  - boot: [1, 2]\n  - restart: all\n  - crash: [1, 2]\n  - pause: all\n",
		want: []string{
			`bad.yaml:5:14: restart: all includes nodes 1-2, which are running at this step, not crashed or departed`,
			`bad.yaml:5:14: restart: all includes nodes 3-5, which were never booted (use boot)`,
			// The restart is taken as done, so only 1 and 2 are reported.
			`bad.yaml:7:12: pause: all includes nodes 1-2, which are not running at this step (crashed)`,
		},
	}, {
		name: "unknown alias and tags",
		src:  "name: !!str bad\nnodes: 5\nsteps:\n  - boot: *everyone\n",
		want: []string{
			`bad.yaml:1:7: YAML tags such as !!str are not supported in scenario files`,
			`bad.yaml:4:11: alias *everyone: no anchor &everyone before it`,
		},
	}, {
		name: "two documents",
		src:  "name: bad\nnodes: 5\nsteps: [{boot: all}]\n---\nname: second\n",
		want: []string{`bad.yaml:4:1: a scenario file holds one YAML document; this starts a second`},
	}, {
		name: "several errors in one file",
		src: "name: Several Errors\nnodes: 5\nmasters: [1, 6]\nconfig:\n  heartbeat: fast\n" +
			"steps:\n  - boot: all\n  - crash: 9\n  - partition: [[1, 2], [3, 4]]\n  - sleep: 1s\n    crash: 1\n",
		want: []string{
			`bad.yaml:1:7: name: "Several Errors" does not match [a-z0-9-]+`,
			`bad.yaml:3:14: masters: node 6 is not in nodes (1-5)`,
			`bad.yaml:5:14: config.heartbeat: want a duration like 250ms, 2s or 1m, got "fast"`,
			`bad.yaml:8:12: crash: node 9 is not in nodes (1-5)`,
			`bad.yaml:9:16: partition: node 5 is in no group; every node in nodes must be in exactly one`,
			`bad.yaml:11:5: crash: a step has exactly one action, and this one already has sleep (at 10:5)`,
		},
	}, {
		name: "nesting too deep",
		src:  "name: bad\nnodes: " + strings.Repeat("[", 70) + strings.Repeat("]", 70) + "\n",
		want: []string{`bad.yaml:2:72: flow collections ([...] and {...}) nested more than 64 deep`},
	}, {
		name: "invalid UTF-8",
		src:  "name: bad\ndescription: caf\xe9\n",
		want: []string{`bad.yaml:2:17: invalid UTF-8: a scenario file is Unicode text`},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse("bad.yaml", []byte(tc.src))
			if err == nil {
				t.Fatalf("Parse succeeded on\n%s\nwant errors:\n%s", tc.src, strings.Join(tc.want, "\n"))
			}
			if s != nil {
				t.Errorf("Parse returned a scenario with its error")
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList: %v", err, err)
			}
			if diff := cmp.Diff(tc.want, strings.Split(err.Error(), "\n")); diff != "" {
				t.Errorf("source:\n%s\nerrors (-want +got):\n%s", tc.src, diff)
			}
		})
	}
}

// TestParseWorksAroundGoccy covers inputs on which goccy/go-yaml v1.19.2
// alone goes wrong: a tab inside a double-quoted string makes its lexer
// lose its place, and it positions a multi-line plain scalar at its end.
func TestParseWorksAroundGoccy(t *testing.T) {
	src := "name: tabs\ndescription: \"tab\there, \\\tescaped,\n  \t folded\t \n  end\t\"\nnodes: 3\n" +
		"masters: [1,\n  2, x\n  y]\nsteps:\n  - crash: 9\n"
	_, err := Parse("tabs.yaml", []byte(src))
	want := []string{
		`tabs.yaml:7:6: masters: want a node number, got "x y"`,
		`tabs.yaml:10:12: crash: node 9 is not in nodes (1-3)`,
	}
	if err == nil {
		t.Fatalf("Parse succeeded, want %v", want)
	}
	if diff := cmp.Diff(want, strings.Split(err.Error(), "\n")); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}

	s, err := Parse("tabs.yaml", []byte("name: tabs\ndescription: \"tab\there, \\\tescaped,\n  \t folded\t \n  end\t\"\nnodes: 1\nsteps: [{boot: 1}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	// As gopkg.in/yaml.v3 reads it.
	if want := "tab\there, \tescaped, folded end\t"; s.Description != want {
		t.Errorf("description %q, want %q", s.Description, want)
	}
}

// TestAliasBudget checks that aliases cannot blow a small file up into
// an enormous scenario ("billion laughs").
func TestAliasBudget(t *testing.T) {
	// Each *t is a partition of 400 aliases of a three-node group; 400
	// steps of *t would decode 400 x 400 groups.
	var b strings.Builder
	b.WriteString("name: laughs\nnodes: 3\nsteps:\n  - {partition: [&g [1, 2, 3]]}\n")
	b.WriteString("  - &t {partition: [" + strings.Repeat("*g, ", 399) + "*g]}\n")
	b.WriteString(strings.Repeat("  - *t\n", 400))
	_, err := Parse("laughs.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "aliases expand to more than 65536 YAML nodes") {
		t.Errorf("want the alias budget exceeded, got %v", err)
	}
}

func TestErrorListIsSortedAndUnwraps(t *testing.T) {
	_, err := Parse("x.yaml", []byte("steps: [{crash: 1}]\nnodes: 0\nname: X\n"))
	var list ErrorList
	if !errors.As(err, &list) || len(list) < 2 {
		t.Fatalf("want several errors, got %v", err)
	}
	for i := 1; i < len(list); i++ {
		if list[i].Pos().before(list[i-1].Pos()) {
			t.Errorf("errors out of order: %v before %v", list[i-1], list[i])
		}
	}
	var one *Error
	if !errors.As(err, &one) || one != list[0] {
		t.Errorf("errors.As(*Error) = %v, want the first error", one)
	}
}

func TestParseFile(t *testing.T) {
	if _, err := ParseFile(filepath.Join("testdata", "no-such-file.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ParseFile of a missing file: %v, want os.ErrNotExist", err)
	} else if !strings.HasPrefix(err.Error(), "scenarios: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}
	big := make([]byte, MaxFileSize+1)
	if _, err := Parse("big.yaml", big); err == nil || !strings.Contains(err.Error(), "big.yaml:1:1: file is") {
		t.Errorf("oversized file: %v", err)
	}
}

// TestFormatRoundTrip checks that Format writes every example back in a
// form that parses to the same scenario, and is canonical.
func TestFormatRoundTrip(t *testing.T) {
	files, err := Expand([]string{filepath.Join("testdata", "valid")})
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		s := mustParseFile(t, file)
		out := s.Format()
		back, err := Parse(file, out)
		if err != nil {
			t.Fatalf("%s: Format output does not parse:\n%s\n%v", file, out, err)
		}
		if diff := cmp.Diff(s, back, ignorePositions); diff != "" {
			t.Errorf("%s: round trip (-parsed +reparsed):\n%s", file, diff)
		}
		if again := back.Format(); string(again) != string(out) {
			t.Errorf("%s: Format is not canonical:\n%s\nthen\n%s", file, out, again)
		}
	}
}

func TestValidate(t *testing.T) {
	good := func() *Scenario {
		s, err := Parse("", []byte("name: ok\nnodes: 3\nsteps:\n  - boot: all\n  - crash: 1\n"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("Validate of a parsed scenario: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Scenario)
		want   string
	}{
		{"bad name", func(s *Scenario) { s.Name = "" }, `scenarios: name: "" does not match [a-z0-9-]+`},
		{"unsorted nodes", func(s *Scenario) { s.Nodes = []int{2, 1} }, `scenarios: nodes: [2, 1] is not ascending and distinct`},
		{"master outside nodes", func(s *Scenario) { s.Masters = []int{1, 4} }, `scenarios: masters: node 4 is not in nodes (1-3)`},
		{"zero heartbeat", func(s *Scenario) { s.Config.Heartbeat = 0 }, `scenarios: config.heartbeat: must be positive, got 0s`},
		{"loss above one", func(s *Scenario) { s.Network.Loss = 1.5 }, `scenarios: network.loss: 1.5 is not in [0, 1]`},
		{"no steps", func(s *Scenario) { s.Steps = nil }, `scenarios: steps: empty; a scenario needs at least one step`},
		{"two actions", func(s *Scenario) { s.Steps[1].Heal = true }, `scenarios: 5:5: step 2: action is crash but the heal field is set`},
		{"stray timeout", func(s *Scenario) { s.Steps[1].Timeout = ptr(time.Second) },
			`scenarios: 5:5: step 2: timeout: only wait and nemesis steps take a timeout, not crash`},
		{"node outside nodes", func(s *Scenario) { s.Steps[1].Crash = &NodeSet{IDs: []int{7}} },
			`scenarios: 5:5: step 2: crash: node 7 is not in nodes (1-3)`},
		{"wrong state", func(s *Scenario) {
			s.Steps[1].Action, s.Steps[1].Crash, s.Steps[1].Boot = "boot", nil, &NodeSet{IDs: []int{1}}
		},
			`scenarios: 5:5: step 2: boot: node 1 has already been booted (boot is for nodes that never ran; restart boots one again)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.change(s)
			err := s.Validate()
			if err == nil {
				t.Fatalf("Validate succeeded, want %s", tc.want)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("Validate:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestNodeSetResolve(t *testing.T) {
	nodes := []int{1, 2, 5}
	for _, tc := range []struct {
		set    NodeSet
		master int
		want   []int
		err    string
	}{
		{set: NodeSet{All: true}, want: []int{1, 2, 5}},
		{set: NodeSet{Master: true}, master: 2, want: []int{2}},
		{set: NodeSet{Master: true}, err: ErrNoMaster.Error()},
		{set: NodeSet{Master: true}, master: 3, err: "scenarios: master 3 is not in nodes (1-2, 5)"},
		{set: NodeSet{IDs: []int{5, 1}}, want: []int{1, 5}},
		{set: NodeSet{IDs: []int{4}}, err: "scenarios: node 4 is not in nodes (1-2, 5)"},
	} {
		got, err := tc.set.Resolve(nodes, tc.master)
		switch {
		case tc.err != "" && (err == nil || err.Error() != tc.err):
			t.Errorf("%v.Resolve(%v, %d) error = %v, want %s", tc.set, nodes, tc.master, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%v.Resolve(%v, %d): %v", tc.set, nodes, tc.master, err)
		case !cmp.Equal(got, tc.want):
			t.Errorf("%v.Resolve(%v, %d) = %v, want %v", tc.set, nodes, tc.master, got, tc.want)
		}
	}
	// Resolve hands out a copy: the runner may change it.
	all := NodeSet{All: true}
	got, _ := all.Resolve(nodes, 0)
	got[0] = 99
	if nodes[0] != 1 {
		t.Errorf("Resolve returned the node list itself")
	}
}

func TestFormatNodes(t *testing.T) {
	for in, want := range map[string]string{
		"":                  "",
		"1 2 3 4 5":         "1-5",
		"1 2 5 9":           "1-2, 5, 9",
		"9 1 3 2 3 10 1024": "1-3, 9-10, 1024",
	} {
		var ns []int
		for _, f := range strings.Fields(in) {
			var n int
			for _, c := range f {
				n = n*10 + int(c-'0')
			}
			ns = append(ns, n)
		}
		if got := FormatNodes(ns); got != want {
			t.Errorf("FormatNodes(%v) = %q, want %q", ns, got, want)
		}
	}
}

func TestParseSkipOn(t *testing.T) {
	src := "name: s\nnodes: 3\nskip_on:\n  netns: the master is chosen by the seed\n  vm: too slow\nsteps: [{boot: all}]\n"
	s, err := Parse("s.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"netns": "the master is chosen by the seed", "vm": "too slow"}
	if d := cmp.Diff(want, s.SkipOn); d != "" {
		t.Fatalf("skip_on (-want +got):\n%s", d)
	}
	back, err := Parse("s.yaml", s.Format())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, back.SkipOn); d != "" {
		t.Fatalf("skip_on after Format (-want +got):\n%s", d)
	}
	_, err = Parse("bad.yaml", []byte("name: s\nnodes: 3\nskip_on:\n  docker: no\n  netns: \"\"\nsteps: [{boot: all}]\n"))
	if err == nil {
		t.Fatal("bad skip_on accepted")
	}
	for _, want := range []string{"bad.yaml:4:3: skip_on.docker: unknown key", "bad.yaml:5:10: skip_on.netns: want the reason as text"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
