// Package scenarios parses scenario files (see SCENARIOS.md in the shared
// documents), drives a backend through their steps and checks the
// always-on invariants on what every node emits. The YAML scenario
// library that `make sim` runs lives in this directory beside the code.
//
// # Parsing
//
// Parse (or ParseFile) turns a file into a Scenario that a runner uses as
// it is: every default of SCENARIOS.md is applied, node sets are checked
// against the node list, and each step keeps its position so that a
// failure can cite it. Everything that can be checked without running is
// checked first, and every problem is reported, not just the first, as an
// ErrorList of FILE:LINE:COL: message lines:
//
//	files, err := scenarios.Expand(os.Args[1:]) // FILE|DIR ... -> files
//	if err != nil {
//		fmt.Fprintln(os.Stderr, err)
//		os.Exit(2)
//	}
//	for _, file := range files {
//		s, err := scenarios.ParseFile(file)
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err) // bad.yaml:7:12: crash: node 9 is not in nodes (1-5)
//			os.Exit(2)
//		}
//		for i, st := range s.Steps {
//			fmt.Printf("step %d (line %d): %s\n", i+1, st.Line, st.Action)
//		}
//	}
//
// A scenario built or changed in code is checked with Validate; Format
// writes any scenario back as a canonical file with every default spelled
// out.
//
// # Choices where SCENARIOS.md is silent
//
//   - Durations are Go durations; a bare 0 is one too. `at` and `sleep`
//     may be zero (at the start; no time passes) but not negative;
//     `timeout`, `interval`, `duration`, `detected_within` and the config
//     durations must be positive; link latency and jitter may be zero.
//     `clock.offset` may have either sign.
//   - Rates must carry their % sign and lie in [0%, 100%]; a bare number,
//     even 0, is refused, since 0.2 could mean 20% or 0.2%. Drift is
//     written in ppm ("100ppm", "-50.5ppm"), strictly within ±1000000ppm.
//   - Node numbers are integers in 1-1024; a quoted "3" is text, not a
//     node. Lists of nodes may not be empty or repeat a node; their order
//     carries no meaning, so Nodes, Masters and NodeSet.IDs are ascending.
//     The default masters are the three lowest nodes. `masters` also takes
//     one number, or `all`.
//   - A partition may have a single group (it then lifts the partition
//     without healing cuts or links); `cut` may name a node on both sides
//     (`{from: all, to: 3}`); a `link` or `clock` step that changes nothing
//     is accepted, since a missing optional field is never an error.
//   - `timeout` belongs to the step, beside `wait` or `nemesis`, and only
//     there. Nemesis faults may not repeat. `expect: {}` asserts nothing.
//   - Steps certain to fail are refused before anything runs: booting a
//     node twice, crashing, pausing or making leave a node that never ran
//     or has crashed, restarting one that is running or never ran,
//     resuming one that is not paused. The check follows node states
//     through the steps and gives up on a node wherever the file alone
//     cannot tell (a step on `master`, a leave still in progress), so it
//     never refuses a scenario that could pass. `at` values are not
//     checked for order: a step whose time has passed fails at run time,
//     as the contract says.
//   - YAML anchors and aliases work (within a budget of expansion); tags,
//     merge keys (<<) and a second document with content are refused.
//     Duplicate keys are errors. A UTF-8 byte order mark is ignored; CR LF
//     and CR break lines as LF does.
//   - A file may be at most MaxFileSize (64 KiB) with flow collections
//     nested at most MaxFlowDepth (64) deep: the YAML parser slows down
//     with the square of some shapes of input, and a wrong argument must
//     not hang the lab.
//   - Expand takes a directory's *.yaml files in byte order of their
//     names, skipping names that start with "." as a shell glob would, and
//     not recursing (scenarios/vm/ is a library of its own); a directory
//     with none is an error.
//
// For a YAML syntax error the position is the first character at which the
// text stops being valid YAML: in `nodes: [1, 2, 3}` the `}`. goccy/go-yaml
// (v1.19.2) reports some errors elsewhere (an unclosed bracket at its
// opening, a stray ':' at the word before it), accepts a few things YAML
// forbids (brackets inside a plain scalar in a flow collection), misplaces
// some tokens (a multi-line plain scalar at its last character) and loses
// its place after a tab inside a double-quoted string; syntax.go,
// positions.go and quotedtabs.go correct all four, and the fuzz test holds
// every position to the text.
package scenarios
