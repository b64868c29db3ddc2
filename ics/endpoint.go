package ics

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
)

// Endpoint is one node's ICS: a deterministic state machine driven by its
// node.Env. The node hands it every stream event (StreamOpened,
// StreamMessage, StreamWritable, StreamClosed); it dials, frames,
// authenticates, queues, throttles and retries on its own.
//
// Transport. For every peer it talks to, an endpoint dials one stream per
// path and sends its frames only on its own streams; the peer answers on
// them with acknowledgements and sends its own traffic on the streams it
// dialled. Each direction is one session, bound to both incarnations:
// frames carry a session sequence number, the receiver delivers exactly
// seq = last+1, and the sender keeps every frame until it is acknowledged.
// If a path stalls (FailoverAfter) or breaks, the session moves to
// another path and the unacknowledged frames are sent again; the receiver
// drops the ones it already had. So calls continue on another path
// without an error.
//
// Incarnations. Every frame names the sender's and the receiver's
// incarnation. A frame from an incarnation older than the newest seen, or
// meant for an incarnation of ours that is gone, is dropped and counted.
// When a newer incarnation of a peer appears, everything bound to the old
// one ends as if NodeDown had been called for it.
//
// Not safe for concurrent use: call it only from the node's callbacks.
type Endpoint struct {
	env      node.Env
	cfg      Config
	self     node.ID
	inc      uint64
	sealer   *wire.Sealer // this incarnation's (newSealer)
	peers    map[node.ID]*peer
	outs     map[node.Stream]*path // streams we dialled
	services map[string]*service
	nextCall uint64
	handling int // > 0 while a handler runs: calls from it are nested
	closed   bool
	stats    Stats
	buf      []byte // scratch for encoding messages
	sbuf     []byte // scratch for sealing control frames (seal)
	// smallFrames holds emptied buffers of small acknowledged frames
	// (frameBuf).
	smallFrames [][]byte
	// freeFrames holds emptied buffers of large acknowledged frames
	// (frameBuf).
	freeFrames [][]byte
	maxFree    int    // bound of freeFrames (Config.maxFreeFrames)
	dbuf       []byte // scratch for datagrams
	dgrams     map[node.ID]*dgramPeer
	onDgram    DatagramFunc

	// OnIncarnation, if set, is told when a peer shows a newer
	// incarnation than the one known (inc is the new one). CLMS uses it: a
	// join from n:k+1 while n:k is up is the nodedown of n:k.
	OnIncarnation func(peer node.ID, inc uint64)
}

// Stats counts what an endpoint did; drops are counted by reason.
type Stats struct {
	FramesSent, FramesRecv, Resent uint64
	Failovers, Dials               uint64
	CallsStarted, CallsDone        uint64
	MessagesDelivered              uint64
	Drops                          map[string]uint64
}

type peer struct {
	id      node.ID
	inc     uint64 // the peer's incarnation as known; 0 unknown
	downInc uint64 // the highest incarnation declared down
	paths   []*path
	active  int // path carrying the session, or -1

	// Sending side of our session to the peer.
	sendSeq    uint64
	unacked    []sentFrame
	resendFrom int // unacked[resendFrom:] still to be written on the active path
	lastAckAt  time.Duration
	failTimer  node.Timer
	out        [NumChannels]outChan

	// Receiving side of the peer's session to us.
	recvSeq   uint64
	in        [NumChannels]inChan
	ackStream node.Stream
	ackTimer  node.Timer
	ackOwed   int
	ackFire   func() // the ack timer's callback, made once per peer

	calls       map[uint64]*Call
	serving     map[uint64]*Request
	downWaiters []func()
}

type path struct {
	p       *peer
	idx     int
	s       node.Stream
	ready   bool // hello answered
	backoff time.Duration
	retry   node.Timer
}

type sentFrame struct {
	seq   uint64
	ch    Channel
	frame []byte
}

type outChan struct {
	q        []*outMsg
	bytes    int
	sent     uint64 // frames of this channel sent in this session
	consumed uint64 // of those, consumed by the peer
	waiters  []func()
}

type outMsg struct {
	typ     dataType
	callID  uint64
	svc     string
	payload []byte
	off     int
	started bool
	call    *Call
}

type inChan struct {
	asm      reassembly
	asmHdr   *msg
	asmSvc   string  // asmHdr's service name (its svc aliases a frame that is gone)
	queue    []inMsg // queue[head:] waits for its service
	head     int
	consumed uint64
}

type inMsg struct {
	typ     dataType
	callID  uint64
	svc     string
	payload []byte
}

// New makes the endpoint of the node env belongs to.
func New(env node.Env, cfg Config) (*Endpoint, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	inc := cfg.Incarnation
	if inc == 0 {
		inc = uint64(env.Boot()) << 20
	}
	e := &Endpoint{
		env:      env,
		cfg:      cfg,
		self:     env.Self(),
		inc:      inc,
		peers:    map[node.ID]*peer{},
		outs:     map[node.Stream]*path{},
		services: map[string]*service{},
		dgrams:   map[node.ID]*dgramPeer{},
		stats:    Stats{Drops: map[string]uint64{}},
		maxFree:  cfg.maxFreeFrames(),
	}
	if err := e.newSealer(); err != nil {
		return nil, err
	}
	return e, nil
}

// newSealer gives the current incarnation its own sealer (see
// wire.Sealer). Its salt must differ from that of any other sealer with
// the same node, incarnation and key; it need not be secret or
// unpredictable, because GMAC's subkey is secret and only nonce reuse
// under one subkey would hurt. The boot counter already makes every
// start a new incarnation; the salt is for what it cannot cover (a state
// directory restored from a backup, two processes configured as one node,
// two clusters sharing a key), and the clocks cover that: the wall clock
// and the node's clock in nanoseconds, at the moment the incarnation
// begins, with Config.Entropy in place of the node's clock where set.
// It is not drawn from env.Rand, so that adding it changed no
// random sequence of the node code (the simulator's runs replay exactly),
// and it is deterministic there like everything else.
func (e *Endpoint) newSealer() error {
	var salt [wire.SaltSize]byte
	c := e.env.Clock()
	binary.BigEndian.PutUint64(salt[:8], uint64(c.Wall().UnixNano()))
	binary.BigEndian.PutUint64(salt[8:], uint64(c.Now()))
	if e.cfg.Entropy != nil {
		if _, err := io.ReadFull(e.cfg.Entropy, salt[8:]); err != nil {
			return fmt.Errorf("%w: reading the salt: %v", ErrConfig, err)
		}
	}
	s, err := wire.NewSealer(e.cfg.Keyring, e.self, node.Boot(e.inc), salt)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	e.sealer = s
	return nil
}

// Self is this node's number.
func (e *Endpoint) Self() node.ID { return e.self }

// Incarnation is this endpoint's current incarnation.
func (e *Endpoint) Incarnation() uint64 { return e.inc }

// PeerIncarnation is the incarnation of peer as known (0 if unknown).
func (e *Endpoint) PeerIncarnation(id node.ID) uint64 {
	if p := e.peers[id]; p != nil {
		return p.inc
	}
	return 0
}

// Stats is a copy of the counters.
func (e *Endpoint) Stats() Stats {
	s := e.stats
	s.Drops = map[string]uint64{}
	for k, v := range e.stats.Drops {
		s.Drops[k] = v
	}
	return s
}

func (e *Endpoint) drop(reason string) { e.stats.Drops[reason]++ }

func (e *Endpoint) peer(id node.ID) (*peer, error) {
	if p := e.peers[id]; p != nil {
		return p, nil
	}
	if id == e.self || !id.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrBadPeer, id)
	}
	n := e.env.Net().Paths(id)
	if n <= 0 {
		return nil, fmt.Errorf("%w: %d", ErrBadPeer, id)
	}
	p := &peer{id: id, active: -1, calls: map[uint64]*Call{}, serving: map[uint64]*Request{}}
	for i := range n {
		p.paths = append(p.paths, &path{p: p, idx: i})
	}
	e.peers[id] = p
	return p, nil
}

// Connect starts connecting to peer so that the first message does not
// wait for a handshake. Sending connects by itself; this only saves time.
func (e *Endpoint) Connect(id node.ID) error {
	p, err := e.peer(id)
	if err != nil {
		return err
	}
	e.connect(p)
	return nil
}

func (e *Endpoint) connect(p *peer) {
	if e.closed {
		return
	}
	for _, pa := range p.paths {
		if pa.s == nil && pa.retry == nil {
			e.dial(pa)
		}
	}
}

func (e *Endpoint) dial(pa *path) {
	s, err := e.env.Net().Dial(pa.p.id, pa.idx)
	e.stats.Dials++
	if err != nil {
		e.scheduleRedial(pa)
		return
	}
	pa.s = s
	e.outs[s] = pa
}

func (e *Endpoint) scheduleRedial(pa *path) {
	if e.closed || pa.retry != nil {
		return
	}
	if pa.backoff == 0 {
		pa.backoff = e.cfg.ReconnectMin
	} else {
		pa.backoff = min(2*pa.backoff, e.cfg.ReconnectMax)
	}
	// Jitter keeps many nodes from redialling in lockstep.
	d := pa.backoff/2 + time.Duration(e.env.Rand().Int64N(int64(pa.backoff/2)+1))
	pa.retry = e.env.Clock().AfterFunc(d, func() {
		pa.retry = nil
		if pa.s == nil {
			e.dial(pa)
		}
	})
}

// seal frames an ICS control message (hello, ack) for peer p, in a
// scratch buffer that the next seal reuses: streams copy what they are
// sent, and control frames are never resent.
func (e *Endpoint) seal(p *peer, seq uint64, toInc uint64, payload []byte) ([]byte, error) {
	h := wire.Header{From: e.self, To: p.id, FromBoot: node.Boot(e.inc), ToBoot: node.Boot(toInc), Seq: seq}
	f, err := e.sealer.Seal(e.sbuf[:0], h, payload)
	if err == nil {
		e.sbuf = f
	}
	return f, err
}

// StreamOpened is the node's StreamOpened, for ICS streams.
func (e *Endpoint) StreamOpened(s node.Stream) {
	pa := e.outs[s]
	if pa == nil {
		return // a peer dialled us: we wait for its hello
	}
	pa.backoff = 0
	e.buf = appendHello(e.buf[:0], kindHello)
	f, err := e.seal(pa.p, 0, pa.p.inc, e.buf)
	if err != nil {
		panic(fmt.Sprintf("ics: sealing a hello: %v", err)) // only a bug makes this fail
	}
	if err := s.Send(f); err != nil {
		e.pathFailed(pa)
	}
}

// StreamClosed is the node's StreamClosed, for ICS streams.
func (e *Endpoint) StreamClosed(s node.Stream, _ error) {
	if pa := e.outs[s]; pa != nil {
		e.pathFailed(pa)
		return
	}
	if p := e.peers[s.Peer()]; p != nil && p.ackStream == s {
		p.ackStream = nil
	}
}

// StreamWritable is the node's StreamWritable, for ICS streams.
func (e *Endpoint) StreamWritable(s node.Stream) {
	if pa := e.outs[s]; pa != nil && pa.ready && pa.p.active == pa.idx {
		e.pump(pa.p)
	}
}

// pathFailed drops a path's stream, moves the session elsewhere if it was
// on this path, and redials with backoff.
func (e *Endpoint) pathFailed(pa *path) {
	if pa.s != nil {
		delete(e.outs, pa.s)
		pa.s.Close()
		pa.s = nil
	}
	pa.ready = false
	p := pa.p
	if p.active == pa.idx {
		e.failover(p)
	}
	e.scheduleRedial(pa)
}

// failover moves p's session to another ready path, if any, and sends
// every unacknowledged frame again there.
func (e *Endpoint) failover(p *peer) {
	p.active = -1
	for _, q := range p.paths {
		if q.ready && q.s != nil {
			p.active = q.idx
			break
		}
	}
	p.resendFrom = 0
	if p.active >= 0 {
		e.stats.Failovers++
		e.pump(p)
	}
}

// StreamMessage is the node's StreamMessage, for ICS streams. Every frame
// is authenticated and checked against the session before anything in it
// is believed; a frame that fails a check is dropped and counted.
func (e *Endpoint) StreamMessage(s node.Stream, frame []byte) {
	if e.closed {
		return
	}
	h, payload, err := wire.Open(e.cfg.Keyring, frame)
	if err != nil {
		e.drop(wire.Reason(err).String())
		return
	}
	e.stats.FramesRecv++
	if h.From != s.Peer() {
		e.drop("wrong-sender")
		return
	}
	if h.To != e.self {
		e.drop("not-for-me")
		return
	}
	m, err := decodeMsg(payload, e.cfg.MaxMessage)
	if err != nil {
		e.drop("malformed")
		return
	}
	p, err := e.peer(h.From)
	if err != nil {
		e.drop("unknown-peer")
		return
	}
	pa := e.outs[s]
	switch m.kind {
	case kindHello:
		if pa != nil {
			e.drop("hello-on-own-stream")
			return
		}
		if !e.learn(p, uint64(h.FromBoot)) {
			e.drop("stale-incarnation")
			return
		}
		// Answer with our incarnation even if the peer had an old one:
		// that is how it learns we are new.
		e.buf = appendHello(e.buf[:0], kindHelloAck)
		f, err := e.seal(p, 0, p.inc, e.buf)
		if err == nil {
			_ = s.Send(f)
		}
	case kindHelloAck:
		if pa == nil {
			e.drop("hello-ack-on-peer-stream")
			return
		}
		if uint64(h.ToBoot) != e.inc {
			e.drop("stale-incarnation")
			return
		}
		if !e.learn(p, uint64(h.FromBoot)) {
			// The peer is an incarnation that was declared down: nothing
			// queued for it can be delivered.
			e.drop("stale-incarnation")
			e.resetSession(p, ErrNodeDown)
			return
		}
		if e.outs[s] != pa {
			return // learning a new incarnation reset the session and this stream
		}
		pa.ready = true
		if p.active < 0 {
			p.active = pa.idx
			p.resendFrom = 0
		}
		e.pump(p)
	case kindAck:
		if pa == nil || uint64(h.FromBoot) != p.inc || uint64(h.ToBoot) != e.inc {
			e.drop("stale-ack")
			return
		}
		e.acked(p, &m)
	case kindData:
		if pa != nil {
			e.drop("data-on-own-stream")
			return
		}
		if uint64(h.ToBoot) != e.inc || !e.learn(p, uint64(h.FromBoot)) || uint64(h.FromBoot) != p.inc {
			e.drop("stale-incarnation")
			return
		}
		switch {
		case h.Seq <= p.recvSeq:
			e.drop("duplicate")
			return
		case h.Seq > p.recvSeq+1:
			e.drop("gap")
			return
		}
		p.recvSeq = h.Seq
		p.ackStream = s
		// received first, so that an ack it triggers counts this frame
		// as consumed if it was.
		e.received(p, &m, s, frame)
		e.owe(p)
	}
}

// learn records that peer p runs incarnation inc. It reports false if inc
// is older than what is known or was declared down.
func (e *Endpoint) learn(p *peer, inc uint64) bool {
	switch {
	case inc == 0 || inc <= p.downInc:
		return false
	case inc == p.inc:
		return true
	case inc < p.inc:
		return false
	}
	old := p.inc
	if old != 0 {
		// A newer incarnation proves the old one is gone.
		e.resetSession(p, ErrNodeDown)
		p.downInc = max(p.downInc, old)
	}
	p.inc = inc
	if old != 0 {
		e.connect(p)
	}
	if e.OnIncarnation != nil {
		e.OnIncarnation(p.id, inc)
	}
	return true
}

// owe notes an acknowledgement to send, soon or at once.
func (e *Endpoint) owe(p *peer) {
	p.ackOwed++
	if p.ackOwed >= e.cfg.Window/4 {
		e.sendAck(p)
		return
	}
	if p.ackTimer == nil {
		if p.ackFire == nil {
			p.ackFire = func() {
				p.ackTimer = nil
				e.sendAck(p)
			}
		}
		p.ackTimer = e.env.Clock().AfterFunc(e.cfg.AckDelay, p.ackFire)
	}
}

func (e *Endpoint) sendAck(p *peer) {
	if p.ackTimer != nil {
		p.ackTimer.Stop()
		p.ackTimer = nil
	}
	p.ackOwed = 0
	if p.ackStream == nil || p.inc == 0 {
		return
	}
	var consumed [NumChannels]uint64
	for i := range p.in {
		consumed[i] = p.in[i].consumed
	}
	e.buf = appendAck(e.buf[:0], p.recvSeq, &consumed)
	f, err := e.seal(p, 0, p.inc, e.buf)
	if err != nil {
		panic(fmt.Sprintf("ics: sealing an ack: %v", err))
	}
	// An ack that does not fit is not lost for good: the next one says
	// the same and more.
	_ = p.ackStream.Send(f)
}

// acked handles an acknowledgement: frames up to recvSeq need no resend,
// and consumed frames give their channel room again.
func (e *Endpoint) acked(p *peer, m *msg) {
	n := 0
	for n < len(p.unacked) && p.unacked[n].seq <= m.recvSeq {
		n++
	}
	if n > 0 {
		for i := range n {
			e.freeFrame(p.unacked[i].frame)
		}
		// Move the rest to the front (usually nothing, or a few frames),
		// so that the array is reused rather than crawled through.
		k := copy(p.unacked, p.unacked[n:])
		clear(p.unacked[k:])
		p.unacked = p.unacked[:k]
		p.resendFrom = max(0, p.resendFrom-n)
		p.lastAckAt = e.env.Clock().Now()
	}
	for ch := range p.out {
		oc := &p.out[ch]
		if c := m.consumed[ch]; c > oc.consumed && c <= oc.sent {
			oc.consumed = c
		}
	}
	e.pump(p)
}

// pump writes what it can on the active path: first frames to resend,
// then new frames, highest-priority channel first, while the stream's
// buffer stays under LowWater and each channel's window has room.
func (e *Endpoint) pump(p *peer) {
	if p.active < 0 {
		if e.hasWork(p) {
			e.connect(p)
		}
		return
	}
	pa := p.paths[p.active]
	s := pa.s
	// Backlogged, unlike a look at Buffered, also asks the stream for a
	// StreamWritable once it drains below LowWater: without it a sender
	// that owes no ack and was refused nothing would never pump again.
	for p.resendFrom < len(p.unacked) {
		if s.Backlogged(e.cfg.LowWater) {
			return
		}
		if err := s.Send(p.unacked[p.resendFrom].frame); err != nil {
			if err != node.ErrStreamFull {
				e.pathFailed(pa)
			}
			return
		}
		e.stats.Resent++
		p.resendFrom++
	}
	for !s.Backlogged(e.cfg.LowWater) {
		ch := e.nextChannel(p)
		if ch < 0 {
			break
		}
		if !e.sendNext(p, pa, Channel(ch)) {
			return
		}
	}
	e.armFailover(p)
}

func (e *Endpoint) hasWork(p *peer) bool {
	if len(p.unacked) > 0 {
		return true
	}
	for i := range p.out {
		if len(p.out[i].q) > 0 {
			return true
		}
	}
	return false
}

func (e *Endpoint) nextChannel(p *peer) int {
	for ch := range p.out {
		oc := &p.out[ch]
		if len(oc.q) > 0 && oc.sent-oc.consumed < uint64(e.cfg.Window) {
			return ch
		}
	}
	return -1
}

// sendNext writes the next frame of channel ch. It reports false if the
// stream took nothing.
func (e *Endpoint) sendNext(p *peer, pa *path, ch Channel) bool {
	oc := &p.out[ch]
	om := oc.q[0]
	n := min(len(om.payload)-om.off, e.cfg.ChunkSize)
	var flags uint8
	if !om.started {
		flags |= flagFirst
	}
	if om.off+n == len(om.payload) {
		flags |= flagLast
	}
	// The message is built in place behind room for the frame header and
	// sealed there: one copy of the chunk, into a buffer that a large
	// frame takes from the endpoint's free list.
	fb := e.frameBuf(wire.Overhead + dataHdr + firstHdr + len(om.svc) + n)
	fb = appendData(fb[:wire.HeaderSize], ch, flags, om.typ, om.callID, uint32(len(om.payload)), om.svc, om.payload[om.off:om.off+n])
	seq := p.sendSeq + 1
	h := wire.Header{From: e.self, To: p.id, FromBoot: node.Boot(e.inc), ToBoot: node.Boot(p.inc), Seq: seq}
	f, err := e.sealer.Seal(fb[:0], h, fb[wire.HeaderSize:])
	if err != nil {
		panic(fmt.Sprintf("ics: sealing a data frame: %v", err))
	}
	if err := pa.s.Send(f); err != nil {
		e.freeFrame(f)
		if err != node.ErrStreamFull {
			e.pathFailed(pa)
		}
		return false
	}
	p.sendSeq = seq
	e.stats.FramesSent++
	p.unacked = append(p.unacked, sentFrame{seq: seq, ch: ch, frame: f})
	p.resendFrom = len(p.unacked)
	oc.sent++
	om.started = true
	om.off += n
	if flags&flagLast != 0 {
		oc.q[0] = nil
		if len(oc.q) == 1 {
			// Emptied: start again at the front of the same array, or
			// every call and reply would allocate a new one.
			oc.q = oc.q[:0]
		} else {
			oc.q = oc.q[1:]
		}
		oc.bytes -= len(om.payload)
		if om.call != nil {
			om.call.queued = nil
		}
		e.wake(oc)
	}
	return true
}

// maxFreeFrames bounds the endpoint's free list of large frame buffers:
// enough for the frames a bulk transfer has unacknowledged at once (the
// receiver acknowledges every Window/4 frames, and the stream holds up
// to LowWater more), so that in a steady transfer every chunk reuses the
// buffer of one acknowledged before it instead of allocating and zeroing
// a new one. With 16 most did (a quarter of the sender's work). It is
// set from the Config in New.
func (c *Config) maxFreeFrames() int {
	return c.Window/4 + c.LowWater/c.ChunkSize + 2
}

// smallFrame is the capacity of every buffer of a small frame (a frame of
// up to smallFrame bytes), and maxSmallFrames bounds their free list:
// small calls and messages, the common traffic, then cost no allocation
// per frame once the session is warm.
const (
	smallFrame     = 256
	maxSmallFrames = 512
)

// frameBuf returns an empty buffer with room for size bytes. Buffers for
// large frames (bulk chunks) come from a free list that acknowledged
// frames go back to: the stream keeps its own copy of what it is sent,
// so once a frame is acknowledged nothing refers to its bytes, and
// reusing them spares allocating and zeroing a chunk per frame.
func (e *Endpoint) frameBuf(size int) []byte {
	if size >= e.cfg.ChunkSize {
		for k := len(e.freeFrames); k > 0; k-- {
			b := e.freeFrames[k-1]
			e.freeFrames = e.freeFrames[:k-1]
			if cap(b) >= size {
				return b[:0]
			}
		}
		return make([]byte, 0, wire.Overhead+dataHdr+firstHdr+maxSvcName+e.cfg.ChunkSize)
	}
	if size <= smallFrame {
		if k := len(e.smallFrames); k > 0 {
			b := e.smallFrames[k-1]
			e.smallFrames[k-1] = nil
			e.smallFrames = e.smallFrames[:k-1]
			return b
		}
		return make([]byte, 0, smallFrame)
	}
	return make([]byte, 0, size)
}

// freeFrame gives a frame's buffer back for reuse, if it is a large one;
// the caller must hold no other reference to it.
func (e *Endpoint) freeFrame(f []byte) {
	switch {
	case cap(f) >= e.cfg.ChunkSize && len(e.freeFrames) < e.maxFree:
		e.freeFrames = append(e.freeFrames, f[:0])
	case cap(f) == smallFrame && len(e.smallFrames) < maxSmallFrames:
		e.smallFrames = append(e.smallFrames, f[:0])
	}
}

// armFailover watches the oldest unacknowledged frame: if no ack comes
// for FailoverAfter, the path is deemed stalled and the session moves.
func (e *Endpoint) armFailover(p *peer) {
	if p.failTimer != nil || len(p.unacked) == 0 {
		return
	}
	p.lastAckAt = e.env.Clock().Now()
	var check func()
	check = func() {
		p.failTimer = nil
		if len(p.unacked) == 0 || p.active < 0 {
			return
		}
		idle := e.env.Clock().Now() - p.lastAckAt
		if idle < e.cfg.FailoverAfter {
			p.failTimer = e.env.Clock().AfterFunc(e.cfg.FailoverAfter-idle, check)
			return
		}
		if len(p.paths) > 1 {
			e.pathFailed(p.paths[p.active])
		}
		if len(p.unacked) > 0 {
			p.lastAckAt = e.env.Clock().Now()
			p.failTimer = e.env.Clock().AfterFunc(e.cfg.FailoverAfter, check)
		}
	}
	p.failTimer = e.env.Clock().AfterFunc(e.cfg.FailoverAfter, check)
}

// wake tells throttled senders of a channel that it has room.
func (e *Endpoint) wake(oc *outChan) {
	if len(oc.waiters) == 0 || len(oc.q) >= e.cfg.QueueMsgs || oc.bytes >= e.cfg.QueueBytes {
		return
	}
	ws := oc.waiters
	oc.waiters = nil
	for _, f := range ws {
		f()
	}
}

// enqueue queues a message to p on ch. bounded says whether the channel's
// queue bounds apply (replies and cancels are bounded by the calls that
// cause them instead).
func (e *Endpoint) enqueue(p *peer, ch Channel, om *outMsg, bounded bool) error {
	if len(om.payload) > e.cfg.MaxMessage {
		return fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, len(om.payload), e.cfg.MaxMessage)
	}
	if len(om.svc) > maxSvcName {
		return fmt.Errorf("%w: service name of %d bytes", ErrNoService, len(om.svc))
	}
	oc := &p.out[ch]
	if bounded && e.full(oc, len(om.payload)) {
		return ErrThrottled
	}
	oc.q = append(oc.q, om)
	oc.bytes += len(om.payload)
	e.pump(p)
	return nil
}

func (e *Endpoint) full(oc *outChan, size int) bool {
	if len(oc.q) >= e.cfg.QueueMsgs {
		return true
	}
	return len(oc.q) > 0 && oc.bytes+size > e.cfg.QueueBytes
}

// WouldThrottle reports whether a message to peer on ch would be refused
// now because the channel's queue is full.
func (e *Endpoint) WouldThrottle(id node.ID, ch Channel) bool {
	p := e.peers[id]
	if p == nil || ch >= NumChannels {
		return false
	}
	return e.full(&p.out[ch], 0)
}

// WaitForThrottle calls f once the channel to peer has room (at once if
// it has room now, after the current callback returns). The number of
// waiters per channel is bounded by QueueMsgs.
func (e *Endpoint) WaitForThrottle(id node.ID, ch Channel, f func()) error {
	if ch >= NumChannels {
		return ErrBadChannel
	}
	p, err := e.peer(id)
	if err != nil {
		return err
	}
	oc := &p.out[ch]
	if !e.full(oc, 0) {
		e.env.Clock().AfterFunc(0, f)
		return nil
	}
	if len(oc.waiters) >= e.cfg.QueueMsgs {
		return ErrThrottled
	}
	oc.waiters = append(oc.waiters, f)
	return nil
}

// QueueLen reports how many messages wait to be sent to peer on ch, and
// how many frames are in flight there; tests check them against bounds.
func (e *Endpoint) QueueLen(id node.ID, ch Channel) (queued, inFlight int) {
	p := e.peers[id]
	if p == nil || ch >= NumChannels {
		return 0, 0
	}
	oc := &p.out[ch]
	return len(oc.q), int(oc.sent - oc.consumed)
}

// Peers lists the peers this endpoint has state for, sorted.
func (e *Endpoint) Peers() []node.ID {
	ids := make([]node.ID, 0, len(e.peers))
	for id := range e.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// ActivePath is the path carrying the session to peer, or -1.
func (e *Endpoint) ActivePath(id node.ID) int {
	if p := e.peers[id]; p != nil {
		return p.active
	}
	return -1
}
