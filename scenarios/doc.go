// Package scenarios parses scenario files (see SCENARIOS.md in the shared
// documents), drives a backend through their steps and checks the
// always-on invariants on what every node emits. The YAML scenario
// library that `make sim` runs lives in this directory beside the code.
package scenarios
