// Package host runs a cluster node on a real host: it implements node.Env
// with TCP and UDP sockets, the OS clock and a state directory, so that
// the node code tested in the simulator (package sim) runs unchanged.
//
// Calls into the node (the Handler's methods and timer callbacks) are
// made one at a time, as the Env contract requires, by whoever holds the
// node's loop token: usually its event loop goroutine, which socket
// goroutines feed through a bounded inbox (stream readers wait when it
// is full, which lets TCP push back on the sender, while datagrams are
// dropped and counted, as a full socket buffer would drop them). A
// stream reader that finds the token free and nothing of its own in the
// inbox delivers what it read itself, which saves two goroutine switches
// per message; what callbacks send on streams is written by the token's
// holder before it lets go, without blocking, and by a writer goroutine
// per stream when the socket is full. That writer, too, delivers the
// StreamWritable its progress earns itself when it finds the token free,
// so that a bulk sender refills the stream without waking the loop. For the same reason a synchronous
// caller from outside can take the idle token itself (Node.TryDo), so
// that its request goes out on its own goroutine without waking the loop.
//
// The mapping onto the real world:
//
//   - Paths are local addresses: Config.Listen[i] is path i, bound by a
//     TCP listener and a UDP socket on the same port, and Config.Peers
//     gives each peer's address on each path.
//   - Datagrams are UDP, with a header naming the sender, the receiver
//     and the path. Streams are TCP, opened with a handshake in which
//     each side says who it is (no authentication: the interconnect is
//     trusted), carrying length-prefixed messages and
//     ended by an explicit marker, so that a clean Close (StreamClosed
//     with nil) can be told from a dead process (node.ErrStreamReset).
//     TCP_USER_TIMEOUT = StreamTimeout breaks stalled streams with
//     node.ErrStreamTimeout, as the simulator does.
//   - The boot counter lives in the state directory and is synced
//     before the node starts, so each start, even after a kill, gets a
//     new node.Boot. Storage is a directory of files, one per key,
//     written only by Sync, atomically across keys.
//   - Clock.Now counts from Start on the monotonic clock; Clock.Wall is
//     the OS clock plus an offset a lab can step (SetClockOffset).
//
// Starting two nodes on loopback, on OS-chosen ports, and introducing
// them:
//
//	a, err := host.Start(host.Config{
//		Self:     1,
//		Listen:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
//		StateDir: "/var/lib/clusterd/n1",
//	}, newMyNode)
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer a.Close()
//	b, err := host.Start(host.Config{Self: 2, Listen: ..., StateDir: ...}, newMyNode)
//	...
//	peers := map[node.ID][]netip.AddrPort{1: a.Addrs(), 2: b.Addrs()}
//	_ = a.SetPeers(peers)
//	_ = b.SetPeers(peers)
//	// Calls from outside go through the event loop:
//	_ = a.Do(func(h node.Handler) { h.(*myNode).Join() })
package host
