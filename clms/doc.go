// Package clms is the CLuster Membership Service: it keeps a numbered
// history of membership transitions that is identical on every node and
// only moves forward, driven by a master chosen among the candidate
// masters.
//
// It is a protocol core in the house style: a deterministic state machine
// that reaches the world only through node.Env and runs on ICS. Its
// design (consensus among the candidates, nodedown detection, cleanup
// coordination, key services, the libcluster-like API) is the subject of
// its own issue; this package is where it lives.
package clms
