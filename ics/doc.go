// Package ics is the Internode Communication Subsystem: messages and
// remote procedure calls between cluster nodes, addressed by node number.
//
// It is a protocol core in the house style: it does no I/O of its own and
// reaches the world only through node.Env, so the same code runs in the
// simulator and on real hosts. Its features (channels with flow control,
// priorities, one-way messages, synchronous and asynchronous RPC,
// out-of-line bulk data, nodedown handling, several routes per peer and an
// authenticated wire format) are the subject of its own issue; this
// package is where they live.
package ics
