// Package purity enforces the house rule that protocol cores (clms, ics)
// do no I/O of their own: no clock, no global randomness, no goroutines,
// no network, no files, no processes. Everything goes through node.Env,
// or the simulator cannot run them deterministically.
//
// Check parses the Go files of a directory (not its tests) and reports
// every violation with its position:
//
//	violations, err := purity.Check("clms")
package purity
