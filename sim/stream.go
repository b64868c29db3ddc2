package sim

import (
	"fmt"
	"slices"

	"github.com/clusterinfra/ci/node"
)

// The stream model follows TCP closely enough that what works here works
// on a real network, and what fails there fails here:
//
//   - A connection is set up with a handshake that needs both directions;
//     a lost or blocked attempt is retried after SynRTO, doubling.
//   - Each message is one segment. A segment that is lost, cut off by a
//     partition, or sent to a host that does not answer (crashed, paused)
//     is retransmitted after RTOMin, doubling up to RTOMax. It is never
//     lost for good: the receiver's reorder buffer hands messages over in
//     order, so one lost segment holds back everything behind it.
//   - A segment unacknowledged for StreamTimeout breaks the connection at
//     both live ends (node.ErrStreamTimeout).
//   - A segment that reaches a host whose process restarted since the
//     connection was made is answered with a reset: the sender's end
//     breaks with node.ErrStreamReset.
//   - Sends fill a bounded send buffer (Config.StreamBuffer); room is
//     announced with StreamWritable.

type connState uint8

const (
	connConnecting connState = iota
	connOpen
	connClosed
)

type conn struct {
	w      *World
	id     uint64
	path   int
	nodes  [2]node.ID // 0: dialler, 1: acceptor
	boots  [2]node.Boot
	ends   [2]*streamEnd
	flows  [2]flow // flows[i] carries what end i sends
	state  connState
	synRTO int64
	synAt  int64 // first connection attempt
}

type flow struct {
	next         uint64 // next sequence number to assign
	deliver      uint64 // next sequence number to hand over
	segs         []seg  // segs[k] has sequence number deliver+k
	buffered     int    // bytes sent and not yet handed over
	wantWritable bool   // a Send was refused
	wantBelow    int    // Backlogged asked to hear when buffered < wantBelow; 0: not asked
}

// writable reports whether the sender asked to hear about room and now has it.
func (f *flow) writable(bufSize int) bool {
	return (f.wantWritable && f.buffered < bufSize) || (f.wantBelow > 0 && f.buffered < f.wantBelow)
}

type seg struct {
	data    []byte
	fin     bool
	arrived bool
	first   int64 // first transmission; -1 before it
	rto     int64
}

// streamEnd is one node's end of a conn; it implements node.Stream.
type streamEnd struct {
	c       *conn
	side    int
	opened  bool // StreamOpened was (or is being) delivered
	closing bool // Close was called here
	dead    bool // its process crashed
}

func (e *streamEnd) Peer() node.ID { return e.c.nodes[1-e.side] }
func (e *streamEnd) Path() int     { return e.c.path }
func (e *streamEnd) Buffered() int { return e.c.flows[e.side].buffered }

// Backlogged implements node.Stream.
func (e *streamEnd) Backlogged(mark int) bool {
	f := &e.c.flows[e.side]
	if f.buffered < mark {
		return false
	}
	f.wantBelow = mark
	return true
}

// Send implements node.Stream.
func (e *streamEnd) Send(msg []byte) error {
	c := e.c
	if e.dead || e.closing || c.state == connClosed {
		return node.ErrStreamClosed
	}
	w := c.world()
	if len(msg) > w.cfg.MaxMessage {
		return fmt.Errorf("%w: %d bytes (max %d)", node.ErrTooLarge, len(msg), w.cfg.MaxMessage)
	}
	f := &c.flows[e.side]
	if f.buffered > 0 && f.buffered+len(msg) > w.cfg.StreamBuffer {
		f.wantWritable = true
		return node.ErrStreamFull
	}
	w.enqueue(c, e.side, seg{data: slices.Clone(msg), first: -1})
	return nil
}

// Release implements node.Stream. The simulator does not reuse what is
// released; it overwrites it, so that a Handler that still reads a
// message it gave back reads garbage in a simulated test.
func (e *streamEnd) Release(msg []byte) {
	for i := range msg {
		msg[i] = releasedByte
	}
}

// releasedByte is what Release writes over a message.
const releasedByte = 0xA5

// Close implements node.Stream.
func (e *streamEnd) Close() {
	c := e.c
	if e.dead || e.closing || c.state == connClosed {
		return
	}
	w := c.world()
	e.closing = true
	if !e.opened && len(c.flows[e.side].segs) == 0 {
		// Still connecting and nothing to say: abandon the attempt.
		w.closeConn(c, nil)
		return
	}
	// The FIN goes after what is queued, once the connection is up.
	w.enqueue(c, e.side, seg{fin: true, first: -1})
}

func (c *conn) world() *World { return c.w }

func (w *World) enqueue(c *conn, side int, s seg) {
	f := &c.flows[side]
	seq := f.next
	f.next++
	f.segs = append(f.segs, s)
	f.buffered += len(s.data)
	w.trace(kSend, c.nodes[side], c.nodes[1-side], c.id, seq, "")
	if c.ends[side].opened {
		w.pushSegTry(c, side, seq, w.now)
	}
}

func (w *World) pushSegTry(c *conn, side int, seq uint64, at int64) {
	ev := w.newEvent(kSegTry, c.nodes[side])
	ev.boot = c.boots[side]
	ev.c = c
	ev.dir = int8(side)
	ev.seq = seq
	w.push(at, ev)
}

// Dial implements node.Network.
func (e *simEnv) Dial(peer node.ID, path int) (node.Stream, error) {
	w := e.w
	if e.dead {
		return nil, node.ErrUnreachable
	}
	if w.node(peer) == nil || peer == e.n.id || path < 0 || path >= w.cfg.Paths {
		return nil, fmt.Errorf("%w: n%d path %d", node.ErrBadPeer, peer, path)
	}
	w.nextConn++
	c := &conn{
		w:      w,
		id:     w.nextConn,
		path:   path,
		nodes:  [2]node.ID{e.n.id, peer},
		boots:  [2]node.Boot{e.boot, 0},
		synRTO: int64(w.cfg.SynRTO),
		synAt:  w.now,
	}
	c.ends[0] = &streamEnd{c: c, side: 0}
	e.n.conns[c.id] = c
	w.trace(kDial, e.n.id, peer, c.id, uint64(path+1), "")
	ev := w.newEvent(kSynTry, e.n.id)
	ev.boot = e.boot
	ev.c = c
	w.push(w.now, ev)
	return c.ends[0], nil
}

// streamEvent handles the stream kinds of event for node n.
func (w *World) streamEvent(n *simNode, ev *event) {
	if ev.k == kClosed {
		w.closedEvent(n, ev)
		return
	}
	c, side, seq := ev.c, int(ev.dir), ev.seq
	k := ev.k
	w.release(ev)
	if c.state == connClosed {
		return
	}
	switch k {
	case kSynTry:
		w.synTry(n, c)
	case kSynArrive:
		w.synArrive(n, c)
	case kSynAck:
		w.trace(kSynAck, n.id, c.nodes[1], c.id, uint64(c.path+1), "")
		c.state = connOpen
		e := c.ends[0]
		e.opened = true
		if !e.closing {
			n.h.StreamOpened(e)
		}
		if c.state == connClosed {
			return
		}
		for i, s := range c.flows[0].segs {
			if s.first < 0 {
				w.pushSegTry(c, 0, c.flows[0].deliver+uint64(i), w.now)
			}
		}
		w.deliverFlow(c, 1)
	case kSegTry:
		w.segTry(c, side, seq)
	case kSegArrive:
		w.segArrive(n, c, side, seq)
	case kWritable:
		e := c.ends[side]
		f := &c.flows[side]
		if e.dead || e.closing || !(f.wantWritable || f.wantBelow > 0) {
			return
		}
		f.wantWritable, f.wantBelow = false, 0
		w.trace(kWritable, n.id, e.Peer(), c.id, 0, "")
		n.h.StreamWritable(e)
	}
}

func (w *World) synTry(a *simNode, c *conn) {
	b := w.node(c.nodes[1])
	p := c.path
	ok := !w.net.blocked(a.id, b.id, p) && !w.net.blocked(b.id, a.id, p) && b.state == Running
	if ok {
		fwd, back := w.net.model(a.id, b.id, p), w.net.model(b.id, a.id, p)
		if (fwd.Loss > 0 && w.rng.Float64() < fwd.Loss) || (back.Loss > 0 && w.rng.Float64() < back.Loss) {
			ok = false
		}
	}
	if !ok {
		w.synRetry(c)
		return
	}
	w.trace(kSynTry, a.id, b.id, c.id, uint64(p+1), "")
	ev := w.newEvent(kSynArrive, b.id)
	ev.c = c
	w.push(w.now+w.delay(w.net.model(a.id, b.id, p), a.id, b.id, p, 64), ev)
}

func (w *World) synRetry(c *conn) {
	if w.now-c.synAt >= int64(w.cfg.StreamTimeout) {
		w.trace(kBreak, c.nodes[0], c.nodes[1], c.id, 0, "connect-timeout")
		w.closeConn(c, node.ErrStreamTimeout)
		return
	}
	w.stats.Retrans++
	w.trace(kRetx, c.nodes[0], c.nodes[1], c.id, 0, "syn")
	ev := w.newEvent(kSynTry, c.nodes[0])
	ev.boot = c.boots[0]
	ev.c = c
	w.push(w.now+c.synRTO, ev)
	c.synRTO = min(2*c.synRTO, int64(w.cfg.RTOMax))
}

func (w *World) synArrive(b *simNode, c *conn) {
	if b.state != Running || c.ends[0].dead {
		// Nobody answered (or nobody is left to answer to).
		if !c.ends[0].dead {
			w.synRetry(c)
		}
		return
	}
	c.boots[1] = b.boot
	e := &streamEnd{c: c, side: 1, opened: true}
	c.ends[1] = e
	b.conns[c.id] = c
	w.trace(kSynArrive, b.id, c.nodes[0], c.id, uint64(c.path+1), "")
	ev := w.newEvent(kSynAck, c.nodes[0])
	ev.boot = c.boots[0]
	ev.c = c
	w.push(w.now+w.delay(w.net.model(b.id, c.nodes[0], c.path), b.id, c.nodes[0], c.path, 64), ev)
	b.h.StreamOpened(e)
}

// segTry transmits (or retransmits) one segment of flow side.
func (w *World) segTry(c *conn, side int, seq uint64) {
	f := &c.flows[side]
	if seq < f.deliver {
		return // already handed over
	}
	s := &f.segs[seq-f.deliver]
	if s.arrived {
		return
	}
	if s.first < 0 {
		s.first = w.now
		s.rto = int64(w.cfg.RTOMin)
	}
	from, to := c.nodes[side], c.nodes[1-side]
	dst := w.node(to)
	if !w.net.blocked(from, to, c.path) && dst.state == Running && dst.boot != c.boots[1-side] {
		w.trace(kBreak, from, to, c.id, 0, "reset")
		w.closeConn(c, node.ErrStreamReset)
		return
	}
	l := w.net.model(from, to, c.path)
	if w.net.blocked(from, to, c.path) || dst.state != Running || (l.Loss > 0 && w.rng.Float64() < l.Loss) {
		w.retransmit(c, side, seq, s)
		return
	}
	ev := w.newEvent(kSegArrive, to)
	ev.c = c
	ev.dir = int8(side)
	ev.seq = seq
	w.push(w.now+w.delay(l, from, to, c.path, len(s.data)), ev)
}

func (w *World) retransmit(c *conn, side int, seq uint64, s *seg) {
	if w.now-s.first >= int64(w.cfg.StreamTimeout) {
		w.trace(kBreak, c.nodes[side], c.nodes[1-side], c.id, 0, "timeout")
		w.closeConn(c, node.ErrStreamTimeout)
		return
	}
	w.stats.Retrans++
	w.trace(kRetx, c.nodes[side], c.nodes[1-side], c.id, seq, "")
	w.pushSegTry(c, side, seq, w.now+s.rto)
	s.rto = min(2*s.rto, int64(w.cfg.RTOMax))
}

func (w *World) segArrive(n *simNode, c *conn, side int, seq uint64) {
	f := &c.flows[side]
	if seq < f.deliver {
		return
	}
	s := &f.segs[seq-f.deliver]
	if n.state != Running {
		// Crashed or paused: no acknowledgement comes back.
		if !c.ends[side].dead {
			w.retransmit(c, side, seq, s)
		}
		return
	}
	if n.boot != c.boots[1-side] {
		w.trace(kBreak, c.nodes[side], n.id, c.id, 0, "reset")
		w.closeConn(c, node.ErrStreamReset)
		return
	}
	s.arrived = true
	w.deliverFlow(c, side)
}

// deliverFlow hands the arrived prefix of flow side to the receiving end.
func (w *World) deliverFlow(c *conn, side int) {
	r := c.ends[1-side]
	if r == nil || !r.opened || r.dead {
		return
	}
	rn := w.node(c.nodes[1-side])
	f := &c.flows[side]
	for len(f.segs) > 0 && f.segs[0].arrived {
		s := f.segs[0]
		f.segs[0] = seg{}
		f.segs = f.segs[1:]
		seq := f.deliver
		f.deliver++
		f.buffered -= len(s.data)
		if s.fin {
			w.trace(kClosed, rn.id, c.nodes[side], c.id, 0, "fin")
			w.closeConn(c, nil)
			return
		}
		if r.closing {
			continue // closed here: what arrives is discarded
		}
		w.stats.Delivered++
		w.trace(kSegArrive, rn.id, c.nodes[side], c.id, seq, "")
		rn.h.StreamMessage(r, s.data)
		if c.state == connClosed || r.closing {
			return
		}
	}
	if f.writable(w.cfg.StreamBuffer) {
		ev := w.newEvent(kWritable, c.nodes[side])
		ev.boot = c.boots[side]
		ev.c = c
		ev.dir = int8(side)
		w.push(w.now+int64(w.net.model(rn.id, c.nodes[side], c.path).Latency), ev)
	}
}

// closeConn ends c and tells every end that is still alive and did not
// close it itself.
func (w *World) closeConn(c *conn, err error) {
	if c.state == connClosed {
		return
	}
	c.state = connClosed
	for side, e := range c.ends {
		if e == nil {
			continue
		}
		n := w.node(c.nodes[side])
		if n.boot == c.boots[side] && n.conns != nil {
			delete(n.conns, c.id)
		}
		// A dial that never connected is reported to the dialler too.
		if e.dead || e.closing || (!e.opened && side != 0) {
			continue
		}
		ev := w.newEvent(kClosed, c.nodes[side])
		ev.boot = c.boots[side]
		ev.c = c
		ev.dir = int8(side)
		ev.err = err
		w.push(w.now, ev)
	}
}

// closedEvent delivers StreamClosed. It runs even though the conn is
// already marked closed.
func (w *World) closedEvent(n *simNode, ev *event) {
	e := ev.c.ends[ev.dir]
	err := ev.err
	w.release(ev)
	if e.dead {
		return
	}
	note := "ok"
	if err != nil {
		note = err.Error()
	}
	w.trace(kClosed, n.id, e.Peer(), e.c.id, uint64(e.c.path+1), note)
	n.h.StreamClosed(e, err)
}

// dropConns kills a crashing node's ends of all its connections.
func (w *World) dropConns(n *simNode) {
	ids := make([]uint64, 0, len(n.conns))
	for id := range n.conns {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		c := n.conns[id]
		for side := range c.ends {
			if c.nodes[side] == n.id && c.ends[side] != nil && c.boots[side] == n.boot {
				c.ends[side].dead = true
			}
		}
		if c.ends[1] == nil && c.state != connClosed {
			// A dial from the crashed node that nobody accepted yet.
			c.state = connClosed
		}
	}
	n.conns = nil
}
