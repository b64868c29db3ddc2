// Package rexec runs a command on another cluster node over ICS: the
// `onnode N COMMAND...` of OpenSSI. The command's standard input, output
// and error are streamed, signals (Ctrl-C) are forwarded to its process
// group, and its exit status comes back. A small load service lets
// `onnode -l` pick the least-loaded live node (LeastLoaded).
//
// Every node that accepts commands runs a Server (Serve); a node that
// starts them has a Client (NewClient). Both live on the node's event
// loop, like the ICS endpoint under them: their methods and the Output
// callbacks run there. Process I/O runs on goroutines of the Server,
// which hand their results to the loop through the Loop function.
//
// # Protocol
//
// Four ICS services, each message encoded compactly and decoded
// strictly (see wire.go):
//
//   - rexec.start (client to server, ChanNormal): run this argv as session
//     id. The call stays open for the life of the process and its reply
//     is the exit status. Its cancellation (Session.Cancel, or ICS
//     canceling the calls of a node declared down) kills the process
//     group; its failure (ics.ErrNodeDown when the server's node is
//     declared down) ends the session on the client.
//   - rexec.in (client to server, ChanNormal): a stdin chunk, stdin EOF,
//     or a signal, in the order the client issued them.
//   - rexec.out (server to client, ChanBulk): a stdout or stderr chunk.
//   - rexec.load: the node's load.
//
// Sessions are keyed by (client node, client incarnation, id), so a
// restarted client never reaches its predecessor's processes.
//
// # Flow control
//
// Each chunk is an ICS call whose answer is credit. The server's output
// readers take credit before they read the process's pipes, at most
// OutputWindow bytes and OutputChunks chunks per session that the client
// has not consumed; without credit they stop reading, so a flooding
// process blocks in write, as on a slow terminal. The client answers a
// chunk when Output has it, or, with Request.ManualCredit, when the
// consumer calls Session.Consumed. The server answers a stdin chunk once
// it is written to the process, and the client keeps at most
// StdinWindow bytes and StdinChunks chunks unanswered: beyond that Stdin
// returns ErrWouldBlock and StdinReady says when to go on. The exit
// status is sent only once every output chunk has been answered, so it
// reaches the client after the last output byte.
//
// # Node failure
//
// rexec relies on membership (CLMS) to declare nodes down: ICS then
// fails the calls to the dead node and cancels the calls it served for
// it. A server whose client died kills the client's processes (SIGTERM,
// SIGKILL after KillGrace) and answers the start call once they are
// gone, so ics.Endpoint.NodedownWait covers their cleanup. A client whose
// server died gets Exit with an error wrapping ics.ErrNodeDown.
//
// # Example
//
//	// On every node, on its loop:
//	srv, _ := rexec.Serve(ep, loop, rexec.ServerConfig{})
//	cli, _ := rexec.NewClient(ep)
//
//	// onnode 3 ls -l:
//	s, err := cli.Start(3, rexec.Request{Argv: []string{"ls", "-l"}}, out)
//	...
//	s.Signal(syscall.SIGINT) // on Ctrl-C
package rexec
