package sim_test

import (
	"time"

	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/sim"
)

// got is one thing a recNode received.
type got struct {
	at   time.Duration // simulated time
	from node.ID
	path int
	data string
	kind string // "dgram", "msg", "open", "closed", "writable", "timer", "start"
	err  error
}

// recNode records everything that happens to it. onStart, if set, runs
// at Start; onMsg after each stream message.
type recNode struct {
	w       *sim.World
	id      node.ID
	boot    node.Boot
	env     node.Env
	log     []got
	streams map[node.ID]node.Stream
	onStart func(r *recNode)
	onMsg   func(r *recNode, s node.Stream, msg []byte)
}

func (r *recNode) add(g got) {
	g.at = r.w.Now()
	r.log = append(r.log, g)
}

func (r *recNode) Start(env node.Env) {
	r.env = env
	r.add(got{kind: "start"})
	if r.onStart != nil {
		r.onStart(r)
	}
}

func (r *recNode) Datagram(from node.ID, path int, p []byte) {
	r.add(got{kind: "dgram", from: from, path: path, data: string(p)})
}

func (r *recNode) StreamOpened(s node.Stream) {
	r.streams[s.Peer()] = s
	r.add(got{kind: "open", from: s.Peer(), path: s.Path()})
}

func (r *recNode) StreamMessage(s node.Stream, msg []byte) {
	r.add(got{kind: "msg", from: s.Peer(), path: s.Path(), data: string(msg)})
	if r.onMsg != nil {
		r.onMsg(r, s, msg)
	}
}

func (r *recNode) StreamWritable(s node.Stream) { r.add(got{kind: "writable", from: s.Peer()}) }

func (r *recNode) StreamClosed(s node.Stream, err error) {
	r.add(got{kind: "closed", from: s.Peer(), err: err})
}

func (r *recNode) count(kind string, from node.ID) int {
	n := 0
	for _, g := range r.log {
		if g.kind == kind && (from == 0 || g.from == from) {
			n++
		}
	}
	return n
}

func (r *recNode) find(kind string) []got {
	var out []got
	for _, g := range r.log {
		if g.kind == kind {
			out = append(out, g)
		}
	}
	return out
}

// cluster is a World of recNodes, keeping every incarnation.
type cluster struct {
	w     *sim.World
	incs  map[node.ID][]*recNode
	setup func(r *recNode)
}

func newCluster(cfg sim.Config, n int, setup func(r *recNode)) *cluster {
	c := &cluster{w: sim.New(cfg), incs: map[node.ID][]*recNode{}, setup: setup}
	for i := 1; i <= n; i++ {
		id := node.ID(i)
		if err := c.w.AddNode(id, c.factory); err != nil {
			panic(err)
		}
	}
	return c
}

func (c *cluster) factory(id node.ID, boot node.Boot) node.Handler {
	r := &recNode{w: c.w, id: id, boot: boot, streams: map[node.ID]node.Stream{}}
	if c.setup != nil {
		c.setup(r)
	}
	c.incs[id] = append(c.incs[id], r)
	return r
}

// cur is the latest incarnation of id.
func (c *cluster) cur(id node.ID) *recNode {
	l := c.incs[id]
	return l[len(l)-1]
}

func (c *cluster) bootAll() {
	for _, id := range c.w.Nodes() {
		if err := c.w.Boot(id); err != nil {
			panic(err)
		}
	}
}

// every calls f every d of simulated time on node r while it runs.
func every(r *recNode, d time.Duration, f func()) {
	var tick func()
	tick = func() {
		f()
		r.env.Clock().AfterFunc(d, tick)
	}
	r.env.Clock().AfterFunc(d, tick)
}
