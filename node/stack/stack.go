// Package stack composes a cluster node: ICS and CLMS on one node.Env.
// The simulator, the daemon and the VM guest all run this same
// composition; only the Env under it differs.
//
//	f := stack.Factory(stack.Config{ICS: ics.Config{Keyring: kr}, CLMS: clms.Config{Candidates: []node.ID{1, 2, 3}}})
//	_ = world.AddNode(1, f)
package stack

import (
	"fmt"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
)

// Config is what a node runs with.
type Config struct {
	ICS  ics.Config
	CLMS clms.Config
	// Observe, if set, receives every CLMS event of every incarnation (a
	// checker outside the nodes).
	Observe func(clms.Event)
	// Setup, if set, runs after the node's services are made and before
	// they start: the place to register subsystems and key services.
	Setup func(n *Node)
}

// Node is one incarnation of a cluster node. It implements node.Handler.
type Node struct {
	cfg  Config
	id   node.ID
	boot node.Boot
	env  node.Env
	ICS  *ics.Endpoint
	CLMS *clms.Service
}

var _ node.Handler = (*Node)(nil)

// Factory makes the Handler of every incarnation.
func Factory(cfg Config) node.Factory {
	return func(id node.ID, boot node.Boot) node.Handler {
		return &Node{cfg: cfg, id: id, boot: boot}
	}
}

// Start makes and starts the node's services.
func (n *Node) Start(env node.Env) {
	n.env = env
	ep, err := ics.New(env, n.cfg.ICS)
	if err != nil {
		panic(fmt.Sprintf("stack: n%d: %v", n.id, err))
	}
	n.ICS = ep
	c, err := clms.New(env, ep, n.cfg.CLMS, n.cfg.Observe)
	if err != nil {
		panic(fmt.Sprintf("stack: n%d: %v", n.id, err))
	}
	n.CLMS = c
	if n.cfg.Setup != nil {
		n.cfg.Setup(n)
	}
	c.Start()
}

// Env is the node's environment.
func (n *Node) Env() node.Env { return n.env }

// Datagram goes to ICS, which authenticates it and hands CLMS its part.
func (n *Node) Datagram(from node.ID, path int, p []byte) { n.ICS.Datagram(from, path, p) }

// StreamOpened goes to ICS.
func (n *Node) StreamOpened(s node.Stream) { n.ICS.StreamOpened(s) }

// StreamMessage goes to ICS.
func (n *Node) StreamMessage(s node.Stream, m []byte) { n.ICS.StreamMessage(s, m) }

// StreamWritable goes to ICS.
func (n *Node) StreamWritable(s node.Stream) { n.ICS.StreamWritable(s) }

// StreamClosed goes to ICS.
func (n *Node) StreamClosed(s node.Stream, err error) { n.ICS.StreamClosed(s, err) }
