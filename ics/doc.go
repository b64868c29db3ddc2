// Package ics is the Internode Communication Subsystem: messages and
// remote procedure calls between cluster nodes, addressed by node number.
//
// It is a protocol core in the house style: a deterministic state machine
// that does no I/O of its own and reaches the world only through
// node.Env, so the same code runs in the simulator and on real hosts
// (package node/host: TCP streams and UDP datagrams).
//
// What it offers, in the terms of OpenSSI's ICS:
//
//   - Channels between every pair of nodes (ChanUrgent, ChanReply,
//     ChanNested, ChanNormal, ChanBulk), each with bounded send queues and
//     a credit window bounding what the receiver must hold; a full channel
//     throttles senders (WouldThrottle, WaitForThrottle).
//   - Priorities: channels drain in order, and the transport's buffer is
//     kept shallow, so urgent traffic never waits behind bulk beyond one
//     chunk. Calls made while serving a call go on ChanNested, above
//     ChanNormal, so throttling cannot deadlock servers calling servers.
//   - Three paradigms: one-way messages (Send), asynchronous calls (Call,
//     with a done function and a handle to Cancel), and synchronous calls
//     (CallSync, through a Loop). Typed services with generics
//     (NewService) replace the stub generator.
//   - Messages up to MaxMessage: large ones travel out of line in chunks
//     interleaved with other traffic.
//   - Cancellation travels: canceling a call cancels its handler on the
//     server (Request.OnCancel).
//   - Nodedown (NodeDown, NodedownWait): outstanding calls complete once
//     with ErrNodeDown, queues are dropped and flushed, handlers canceled;
//     nothing from an old incarnation is accepted.
//   - Several routes per peer: a session moves to another path when one
//     stalls or breaks, resending what was not acknowledged.
//   - Authenticated frames (package ics/wire): GMAC under a subkey per
//     sender incarnation, derived from a rotatable keyring, bound to
//     sender, receiver and both incarnations; a frame that fails a check
//     is dropped and counted (Stats.Drops).
//
// An echo service and a call:
//
//	var Echo = ics.NewService[[]byte, []byte]("echo")
//
//	ep, _ := ics.New(env, ics.Config{Keyring: kr})
//	_ = Echo.Serve(ep, func(r *ics.Request, b []byte) ([]byte, error) { return b, nil })
//	_, _ = Echo.Call(ep, 2, []byte("hi"), ics.CallOpts{}, func(resp []byte, err error) { /* ... */ })
package ics
