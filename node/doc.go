// Package node defines the one seam between cluster node code and the
// world it runs in, and composes a node from the protocol cores.
//
// Everything the cores (package ics and package clms) need from outside
// goes through Env: a monotonic and a wall clock with timers, a network of
// unreliable datagrams and reliable ordered streams addressed by node
// number, a seeded random source and stable storage with an explicit
// Sync. The deterministic simulator (package sim) implements Env for many
// nodes on one goroutine; the real runtime implements it with sockets, the
// OS clock and files. Node code cannot tell which one it runs on, which
// is what makes a failure found in the simulator worth fixing and a fix
// proven there worth shipping.
//
// A node is a Handler: a single-threaded state machine that the Env calls
// with one event at a time (Start, Datagram, StreamMessage, a timer).
// A minimal node that answers every datagram:
//
//	type echo struct{ env node.Env }
//
//	func (e *echo) Start(env node.Env) { e.env = env }
//	func (e *echo) Datagram(from node.ID, path int, p []byte) {
//		_ = e.env.Net().SendDatagram(from, path, p)
//	}
//	// ... the stream methods
package node
