package ics

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/clusterinfra/ci/node"
)

// HandlerFunc serves one call. It must eventually call r.Reply or r.Fail
// exactly once, now or later (an asynchronous server keeps r and answers
// when it can); until then the call holds one of its service's
// MaxServing places.
type HandlerFunc func(r *Request, payload []byte)

// MessageFunc receives one one-way message.
type MessageFunc func(from node.ID, payload []byte)

type service struct {
	name   string
	call   HandlerFunc
	msg    MessageFunc
	active int
}

// Handle registers the handler of calls to service name.
func (e *Endpoint) Handle(name string, h HandlerFunc) error {
	s, err := e.service(name)
	if err != nil {
		return err
	}
	if s.call != nil {
		return fmt.Errorf("%w: %q (calls)", ErrDuplicateSvc, name)
	}
	s.call = h
	return nil
}

// HandleMessage registers the receiver of one-way messages to name.
func (e *Endpoint) HandleMessage(name string, f MessageFunc) error {
	s, err := e.service(name)
	if err != nil {
		return err
	}
	if s.msg != nil {
		return fmt.Errorf("%w: %q (messages)", ErrDuplicateSvc, name)
	}
	s.msg = f
	return nil
}

func (e *Endpoint) service(name string) (*service, error) {
	if name == "" || len(name) > maxSvcName {
		return nil, fmt.Errorf("%w: bad name %q", ErrNoService, name)
	}
	s := e.services[name]
	if s == nil {
		s = &service{name: name}
		e.services[name] = s
	}
	return s, nil
}

// Send sends a one-way message to service svc on peer, on channel ch. It
// returns ErrThrottled if the channel's queue is full (see
// WaitForThrottle). Delivery is ordered within the channel; if the peer
// goes down first, the message is lost and nobody is told.
func (e *Endpoint) Send(id node.ID, ch Channel, svc string, payload []byte) error {
	if ch >= NumChannels || ch == ChanReply {
		return ErrBadChannel
	}
	p, err := e.checkPeer(id)
	if err != nil {
		return err
	}
	return e.enqueue(p, ch, &outMsg{typ: typeOneway, svc: svc, payload: payload}, true)
}

func (e *Endpoint) checkPeer(id node.ID) (*peer, error) {
	if e.closed {
		return nil, ErrClosed
	}
	p, err := e.peer(id)
	if err != nil {
		return nil, err
	}
	if p.inc == 0 && p.downInc != 0 {
		// Declared down and no newer incarnation seen: a call could only
		// hang, so it fails now.
		return nil, fmt.Errorf("%w: n%d", ErrNodeDown, id)
	}
	return p, nil
}

// CallOpts tunes one call.
type CallOpts struct {
	// Channel to send the request on. The zero value means the default:
	// ChanNormal, or ChanNested when the call is made while a handler runs
	// or Parent is set. (To use ChanUrgent, set Urgent.)
	Channel Channel
	// Urgent sends the request on ChanUrgent (membership traffic).
	Urgent bool
	// Timeout ends the call with ErrTimeout (and cancels it at the
	// server) if no reply came in time; 0 means no timeout.
	Timeout time.Duration
	// Parent is the request being served on whose behalf this call is
	// made: the call is raised to ChanNested so that throttling cannot
	// deadlock servers calling each other.
	Parent *Request
}

// Call is an outstanding asynchronous call. Its done function runs
// exactly once: with the reply, or with an error (ErrNodeDown,
// ErrCanceled, ErrTimeout, ErrNoService, a *RemoteError).
type Call struct {
	e      *Endpoint
	p      *peer
	id     uint64
	inc    uint64 // the incarnation it was sent to (0: not yet known)
	done   func([]byte, error)
	over   bool
	queued *outMsg // the request, while some of it is still queued here
	timer  node.Timer
}

// Peer is the node called.
func (c *Call) Peer() node.ID { return c.p.id }

// Done reports whether the call has completed.
func (c *Call) Done() bool { return c.over }

// Call calls service svc on peer with payload; done gets the outcome.
// An error returned here means the call was not made and done will never
// run (a full channel, a message too large, a bad peer).
func (e *Endpoint) Call(id node.ID, svc string, payload []byte, opts CallOpts, done func(resp []byte, err error)) (*Call, error) {
	if done == nil {
		return nil, errors.New("ics: Call needs a done function")
	}
	ch := opts.Channel
	switch {
	case opts.Urgent:
		ch = ChanUrgent
	case ch == 0:
		ch = ChanNormal
		if e.handling > 0 || opts.Parent != nil {
			ch = ChanNested
		}
	}
	if ch >= NumChannels || ch == ChanReply {
		return nil, ErrBadChannel
	}
	p, err := e.checkPeer(id)
	if err != nil {
		return nil, err
	}
	e.nextCall++
	c := &Call{e: e, p: p, id: e.nextCall, inc: p.inc, done: done}
	om := &outMsg{typ: typeCall, callID: c.id, svc: svc, payload: payload, call: c}
	if err := e.enqueue(p, ch, om, true); err != nil {
		return nil, err
	}
	if !om.started || om.off < len(om.payload) {
		c.queued = om
	}
	p.calls[c.id] = c
	e.stats.CallsStarted++
	if e.cfg.OnCall != nil {
		e.cfg.OnCall(CallEvent{ID: c.id, Peer: p.id, PeerInc: c.inc})
	}
	if opts.Timeout > 0 {
		c.timer = e.env.Clock().AfterFunc(opts.Timeout, func() {
			c.timer = nil
			c.abort(ErrTimeout)
		})
	}
	return c, nil
}

// Cancel ends the call with ErrCanceled and tells the server, whose
// handler sees r.Canceled() and its OnCancel functions run. It does
// nothing if the call is over.
func (c *Call) Cancel() { c.abort(ErrCanceled) }

func (c *Call) abort(err error) {
	if c.over {
		return
	}
	e, p := c.e, c.p
	if om := c.queued; om != nil && !om.started {
		// Nothing of it left: take it out of its queue.
		for ch := range p.out {
			oc := &p.out[ch]
			if i := slices.Index(oc.q, om); i >= 0 {
				oc.q = slices.Delete(oc.q, i, i+1)
				oc.bytes -= len(om.payload)
				e.wake(oc)
				break
			}
		}
	} else if p.inc == c.inc || c.inc == 0 {
		_ = e.enqueue(p, ChanUrgent, &outMsg{typ: typeCancel, callID: c.id}, false)
	}
	c.finish(nil, err)
}

func (c *Call) finish(resp []byte, err error) {
	if c.over {
		return
	}
	c.over = true
	c.queued = nil
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	delete(c.p.calls, c.id)
	c.e.stats.CallsDone++
	if c.e.cfg.OnCall != nil {
		c.e.cfg.OnCall(CallEvent{Done: true, ID: c.id, Peer: c.p.id, PeerInc: c.inc, Err: err})
	}
	c.done(resp, err)
}

// Request is one call being served.
type Request struct {
	e        *Endpoint
	p        *peer
	inc      uint64 // the caller's incarnation
	id       uint64
	svc      *service
	canceled bool
	over     bool
	onCancel []func()
}

// Peer is the calling node.
func (r *Request) Peer() node.ID { return r.p.id }

// Canceled reports whether the caller canceled the call, timed out, or
// went down.
func (r *Request) Canceled() bool { return r.canceled }

// OnCancel runs f when the call is canceled (at once if it already is).
func (r *Request) OnCancel(f func()) {
	if r.canceled {
		f()
		return
	}
	r.onCancel = append(r.onCancel, f)
}

func (r *Request) cancel() {
	if r.canceled {
		return
	}
	r.canceled = true
	fs := r.onCancel
	r.onCancel = nil
	for _, f := range fs {
		f()
	}
}

// Reply answers the call. It returns an error if the call was already
// answered.
func (r *Request) Reply(resp []byte) error { return r.answer(typeReply, resp) }

// Fail answers the call with an error, which the caller sees as a
// *RemoteError with the same text.
func (r *Request) Fail(err error) error { return r.answer(typeError, []byte(err.Error())) }

func (r *Request) answer(typ dataType, payload []byte) error {
	if r.over {
		return errors.New("ics: request already answered")
	}
	r.over = true
	e, p := r.e, r.p
	r.svc.active--
	delete(p.serving, r.id)
	if !r.canceled && p.inc == r.inc && !e.closed {
		_ = e.enqueue(p, ChanReply, &outMsg{typ: typ, callID: r.id, payload: payload}, false)
	}
	for ch := range p.in {
		e.drainIn(p, Channel(ch))
	}
	e.checkDown(p)
	return nil
}

// received handles one accepted data frame, which arrived on s. The
// chunk of a message in several goes into its reassembly buffer and the
// frame back to s; any other is the service's.
func (e *Endpoint) received(p *peer, m *msg, s node.Stream, frame []byte) {
	ic := &p.in[m.ch]
	var whole inMsg
	switch {
	case m.flags&flagFirst != 0 && m.flags&flagLast != 0:
		if ic.asmHdr != nil {
			e.drop("interleaved-chunks")
			ic.asmHdr = nil
			ic.asm.reset()
		}
		whole = inMsg{typ: m.typ, callID: m.callID, svc: e.svcName(m.svc), payload: m.chunk}
	case m.flags&flagFirst != 0:
		if ic.asmHdr != nil {
			e.drop("interleaved-chunks")
		}
		h := *m
		h.chunk, h.svc = nil, nil
		ic.asmHdr = &h
		ic.asmSvc = e.svcName(m.svc)
		ic.asm.start(int(m.total), e.env.Alloc)
		fallthrough // the first chunk is added like the others
	default:
		if ic.asmHdr == nil || ic.asmHdr.callID != m.callID || ic.asmHdr.typ != m.typ {
			e.drop("orphan-chunk")
			// Consumed all the same, or the sender's window leaks.
			ic.consumed++
			return
		}
		if ic.asm.len()+len(m.chunk) > int(ic.asmHdr.total) {
			e.drop("oversized-chunks")
			ic.asmHdr = nil
			ic.asm.reset()
			ic.consumed++
			return
		}
		ic.asm.add(m.chunk, frame, s)
		if m.flags&flagLast != 0 {
			if ic.asm.len() != int(ic.asmHdr.total) {
				e.drop("short-chunks")
			} else {
				h := ic.asmHdr
				whole = inMsg{typ: h.typ, callID: h.callID, svc: ic.asmSvc, payload: ic.asm.whole()}
			}
			ic.asmHdr = nil
			ic.asm.reset()
		}
	}
	if whole.typ == 0 {
		// A chunk that is not the last is consumed on arrival; the whole
		// message counts against the window through its last chunk.
		ic.consumed++
		return
	}
	switch whole.typ {
	case typeReply, typeError, typeCancel:
		ic.consumed++
		e.answered(p, &whole)
	default:
		if len(ic.queue)-ic.head >= e.cfg.Window {
			// The sender's window makes this impossible for an honest peer.
			e.drop("inbox-overflow")
			ic.consumed++
			return
		}
		ic.queue = append(ic.queue, whole)
		e.drainIn(p, m.ch)
	}
}

// answered handles replies and cancellations.
func (e *Endpoint) answered(p *peer, m *inMsg) {
	switch m.typ {
	case typeReply, typeError:
		c := p.calls[m.callID]
		if c == nil {
			e.drop("late-reply") // canceled or timed out here first
			return
		}
		if m.typ == typeReply {
			c.finish(m.payload, nil)
		} else if string(m.payload) == errNoServiceText {
			c.finish(nil, fmt.Errorf("%w on n%d", ErrNoService, p.id))
		} else {
			c.finish(nil, &RemoteError{Msg: string(m.payload)})
		}
	case typeCancel:
		if r := p.serving[m.callID]; r != nil {
			r.cancel()
		}
	}
}

const errNoServiceText = "\x00no such service"

// svcName turns a service name from a frame into a string, without
// allocating for a registered service (the common case): its name is
// the key already in the map.
func (e *Endpoint) svcName(b []byte) string {
	if s := e.services[string(b)]; s != nil {
		return s.name
	}
	return string(b)
}

// drainIn hands queued messages of channel ch to their services, in
// order, while services have room.
func (e *Endpoint) drainIn(p *peer, ch Channel) {
	ic := &p.in[ch]
	for ic.head < len(ic.queue) {
		m := ic.queue[ic.head]
		s := e.services[m.svc]
		if m.typ == typeCall && s != nil && s.call != nil && s.active >= e.cfg.MaxServing {
			return // the service pool is full: the channel waits
		}
		ic.queue[ic.head] = inMsg{}
		ic.head++
		if ic.head == len(ic.queue) {
			// Empty: start again at the front of the same array.
			ic.queue, ic.head = ic.queue[:0], 0
		}
		ic.consumed++
		e.owe(p)
		switch {
		case m.typ == typeOneway && s != nil && s.msg != nil:
			e.stats.MessagesDelivered++
			e.handling++
			s.msg(p.id, m.payload)
			e.handling--
		case m.typ == typeOneway:
			e.drop("no-service")
		case s == nil || s.call == nil:
			e.drop("no-service")
			_ = e.enqueue(p, ChanReply, &outMsg{typ: typeError, callID: m.callID, payload: []byte(errNoServiceText)}, false)
		default:
			r := &Request{e: e, p: p, inc: p.inc, id: m.callID, svc: s}
			p.serving[m.callID] = r
			s.active++
			e.handling++
			s.call(r, m.payload)
			e.handling--
		}
		if e.peers[p.id] != p {
			return
		}
	}
}

// NodeDown is CLMS telling ICS that incarnation inc of peer is down (inc
// 0: whatever incarnation is known). Every outstanding call to it
// completes now with ErrNodeDown, exactly once; messages queued for it are
// dropped; messages from it not yet handled are flushed; the handlers
// serving its calls are canceled. Nothing from that incarnation or an
// older one is accepted afterwards. NodedownWait tells when its handlers
// have finished.
func (e *Endpoint) NodeDown(id node.ID, inc uint64) {
	p := e.peers[id]
	if p == nil {
		if _, err := e.peer(id); err != nil {
			return
		}
		p = e.peers[id]
	}
	if inc == 0 {
		inc = p.inc
	}
	if inc != 0 && inc < p.inc {
		return // an older incarnation: already handled when the new one appeared
	}
	p.downInc = max(p.downInc, inc)
	if p.downInc == 0 {
		p.downInc = 1 // down with no incarnation known: refuse until one shows
	}
	e.resetSession(p, ErrNodeDown)
	p.inc = 0
}

// NodedownWait calls f once every handler serving a call from an
// incarnation of peer that was declared down has finished (at once if
// none is running, after the current callback returns).
func (e *Endpoint) NodedownWait(id node.ID, f func()) {
	p := e.peers[id]
	if p == nil || !e.servingDown(p) {
		e.env.Clock().AfterFunc(0, f)
		return
	}
	p.downWaiters = append(p.downWaiters, f)
}

func (e *Endpoint) servingDown(p *peer) bool {
	for _, r := range p.serving {
		if r.inc <= p.downInc {
			return true
		}
	}
	return false
}

func (e *Endpoint) checkDown(p *peer) {
	if len(p.downWaiters) == 0 || e.servingDown(p) {
		return
	}
	ws := p.downWaiters
	p.downWaiters = nil
	for _, f := range ws {
		f()
	}
}

// resetSession ends both sessions with p: calls fail with err, queues and
// unacknowledged frames are dropped, half-received messages flushed,
// served calls canceled, and our streams to p closed (they reconnect when
// there is something to send).
func (e *Endpoint) resetSession(p *peer, err error) {
	for _, pa := range p.paths {
		if pa.s != nil {
			delete(e.outs, pa.s)
			pa.s.Close()
			pa.s = nil
		}
		pa.ready = false
		if pa.retry != nil {
			pa.retry.Stop()
			pa.retry = nil
		}
		pa.backoff = 0
	}
	p.active = -1
	p.sendSeq, p.recvSeq = 0, 0
	clear(p.unacked)
	p.unacked, p.resendFrom = nil, 0
	if p.failTimer != nil {
		p.failTimer.Stop()
		p.failTimer = nil
	}
	if p.ackTimer != nil {
		p.ackTimer.Stop()
		p.ackTimer = nil
	}
	p.ackStream, p.ackOwed = nil, 0
	var waiters []func()
	for ch := range p.out {
		oc := &p.out[ch]
		clear(oc.q)
		oc.q, oc.bytes, oc.sent, oc.consumed = nil, 0, 0, 0
		waiters = append(waiters, oc.waiters...)
		oc.waiters = nil
	}
	for ch := range p.in {
		p.in[ch] = inChan{}
	}
	ids := make([]uint64, 0, len(p.calls))
	for id := range p.calls {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p.calls[id].finish(nil, fmt.Errorf("%w: n%d", err, p.id))
	}
	ids = ids[:0]
	for id := range p.serving {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p.serving[id].cancel()
	}
	// Throttled senders may go on: the queues are empty.
	for _, f := range waiters {
		f()
	}
}

// Reincarnate moves this endpoint to a new, higher incarnation, as a node
// that was declared down does before it rejoins: every session is reset
// (outstanding calls fail with ErrNodeDown) and peers, seeing the new
// incarnation, drop everything bound to the old one.
func (e *Endpoint) Reincarnate() uint64 {
	e.inc++
	if err := e.newSealer(); err != nil {
		panic(fmt.Sprintf("ics: sealer for incarnation %d: %v", e.inc, err)) // inc is not 0 and self is valid
	}
	for _, id := range e.Peers() {
		e.resetSession(e.peers[id], ErrNodeDown)
	}
	return e.inc
}

// Close stops the endpoint: calls fail with ErrClosed, streams close, and
// nothing more is sent or accepted.
func (e *Endpoint) Close() {
	if e.closed {
		return
	}
	for _, id := range e.Peers() {
		e.resetSession(e.peers[id], ErrClosed)
	}
	e.closed = true
}
