package ics_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/sim"
)

// upper is a service that answers with its request in capitals.
var upper = ics.NewService[string, string]("upper")

// icsNode is the least a node needs to speak ICS: an endpoint, and the
// stream callbacks handed to it.
type icsNode struct {
	self node.ID
	ep   *ics.Endpoint
}

func (n *icsNode) Start(env node.Env) {
	kr, err := wire.NewKeyring(1, []byte("an example cluster key of 32+ bytes"))
	if err != nil {
		panic(err)
	}
	if n.ep, err = ics.New(env, ics.Config{Keyring: kr}); err != nil {
		panic(err)
	}
	if err := upper.Serve(n.ep, func(_ *ics.Request, s string) (string, error) {
		return fmt.Sprintf("%s (from n%d)", strings.ToUpper(s), n.self), nil
	}); err != nil {
		panic(err)
	}
}
func (n *icsNode) Datagram(node.ID, int, []byte)         {}
func (n *icsNode) StreamOpened(s node.Stream)            { n.ep.StreamOpened(s) }
func (n *icsNode) StreamMessage(s node.Stream, m []byte) { n.ep.StreamMessage(s, m) }
func (n *icsNode) StreamWritable(s node.Stream)          { n.ep.StreamWritable(s) }
func (n *icsNode) StreamClosed(s node.Stream, err error) { n.ep.StreamClosed(s, err) }

// A synchronous call from outside the nodes: CallSync through n1's Loop.
// In the simulator the Loop runs the world until the reply is in; on real
// hosts (host.Node.Loop) it blocks the calling goroutine instead.
func ExampleCallSync() {
	w := sim.New(sim.Config{Seed: 1, Link: sim.Link{Latency: time.Millisecond}})
	nodes := map[node.ID]*icsNode{}
	for _, id := range []node.ID{1, 2} {
		if err := w.AddNode(id, func(id node.ID, _ node.Boot) node.Handler {
			nodes[id] = &icsNode{self: id}
			return nodes[id]
		}); err != nil {
			panic(err)
		}
		if err := w.Boot(id); err != nil {
			panic(err)
		}
	}
	// Boot queues each node's Start; run it, so that the endpoints exist.
	if err := w.RunFor(time.Millisecond); err != nil {
		panic(err)
	}
	resp, err := ics.CallSync(context.Background(), w.Loop(1), nodes[1].ep, upper, 2, "hello", ics.CallOpts{})
	fmt.Println(resp, err)
	// Output: HELLO (from n2) <nil>
}
