package host

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/node"
)

// Node is one running incarnation of a cluster node on a real host: a
// Handler driven by an event loop, with sockets, the OS clock and a state
// directory under it. Its methods are safe for concurrent use.
type Node struct {
	cfg   Config
	boot  node.Boot
	h     node.Handler
	env   *env
	log   *slog.Logger
	start time.Time // carries the monotonic reading Clock.Now counts from

	state *stateDir
	store *store

	tcp []*net.TCPListener // one per path
	udp []*net.UDPConn     // one per path, same port as tcp
	// handshakes bounds the accepted connections still proving who they
	// are, so that a flood of idle connections cannot pile up goroutines.
	handshakes chan struct{}

	// inbox is the event loop's bounded queue, and inboxBytes bounds the
	// payload it holds; quit is closed by Close. pending counts the
	// events posted and not yet dispatched (unlike len(inbox), it still
	// counts one the loop has taken out but not run yet), so that TryDo
	// can tell that running now overtakes nothing.
	pending    atomic.Int64
	inbox      chan event
	inboxBytes budget
	quit       chan struct{}
	ctx        context.Context // cancelled by Close; bounds dials
	stop       context.CancelFunc

	peersMu sync.RWMutex
	peers   map[node.ID][]netip.AddrPort

	wallOffset atomic.Int64 // nanoseconds added to the OS wall clock

	timers timerQueue

	// allocs bounds the buffers being made off the loop (env.Alloc).
	allocs budget

	// loopMu is the loop token: only its holder calls into the node. The
	// event loop holds it while it runs callbacks; a stream reader that
	// finds it free, and nothing of its stream waiting in the inbox,
	// takes it to deliver what it read at once (deliverInline), which
	// spares two goroutine switches per message.
	loopMu sync.Mutex

	// dirty lists the streams with bytes queued for the token holder to
	// write (flush); dirtyMu guards it, because Send may be called from
	// any goroutine. dirtySpare is the holder's, for reuse. onLoop is true
	// while the token is held by someone who flushes before letting go,
	// so that a Send from another goroutine knows whether to kick the
	// loop awake.
	dirtyMu    sync.Mutex
	dirty      []*stream
	dirtySpare []*stream
	onLoop     atomic.Bool

	// mu guards the goroutine and connection registry: once closed is
	// set no goroutine starts and no connection is registered, which is
	// what lets Close wait for all of them.
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup

	// closing is set at the start of Close, for the hot paths that
	// only need to know whether to bother.
	closing atomic.Bool

	closeOnce sync.Once
	closeErr  error

	stats counters

	// frames is the free list of large message buffers (Stream.Release).
	frames framePool
}

// Stats counts what a Node did. Drops are where a real network or an
// overloaded node loses datagrams; they are normal, but a steady rise
// says something is wrong.
type Stats struct {
	Callbacks          uint64 // Handler and timer calls made
	TimersFired        uint64
	DatagramsSent      uint64
	DatagramsSendError uint64 // the OS refused a send (not reported to node code)
	DatagramsReceived  uint64 // delivered to the Handler's queue
	DatagramsDropped   uint64 // received while the inbox was full
	DatagramsRejected  uint64 // malformed, misdirected or from an unknown node
	StreamsDialled     uint64
	StreamsAccepted    uint64
	StreamsRejected    uint64 // a failed or refused handshake, or too many at once
	StreamsBroken      uint64 // ended by an error rather than a clean close
	Inbox              int    // events waiting in the inbox right now
	InboxBytes         int    // payload bytes those events hold
}

type counters struct {
	callbacks, timersFired                                              atomic.Uint64
	dgramSent, dgramSendErr, dgramReceived, dgramDropped, dgramRejected atomic.Uint64
	streamsDialled, streamsAccepted, streamsRejected, streamsBroken     atomic.Uint64
}

// sockBufferBytes is the kernel send and receive buffer of every stream
// socket. Linux would grow them to megabytes (tcp_rmem allows 32 MiB),
// and whatever waits there waits in front of every message behind it,
// urgent or not: ICS keeps its own queues in priority order only if the
// transport's stays shallow. A quarter of a mebibyte still keeps a
// loopback or LAN link busy.
const sockBufferBytes = 256 << 10

// maxHandshakes bounds the accepted connections in their handshake.
const maxHandshakes = 64

// Start boots a new incarnation of cfg.Self: it takes the state
// directory, counts the boot durably, binds every path's sockets, makes
// the Handler with f and calls its Start on the event loop. On error
// nothing is left running.
func Start(cfg Config, f node.Factory) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, fmt.Errorf("%w: nil Factory", ErrConfig)
	}
	n := &Node{
		cfg:        cfg,
		peers:      cfg.Peers,
		inbox:      make(chan event, cfg.Inbox),
		quit:       make(chan struct{}),
		handshakes: make(chan struct{}, maxHandshakes),
		conns:      map[net.Conn]struct{}{},
	}
	n.timers.init()
	n.inboxBytes.init(cfg.InboxBytes)
	n.allocs.init(maxAllocs)
	ok := false
	defer func() {
		if !ok {
			n.release()
		}
	}()
	if n.state, err = openStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	if n.boot, err = n.state.nextBoot(); err != nil {
		return nil, err
	}
	if n.store, err = openStore(filepath.Join(cfg.StateDir, storeDir)); err != nil {
		return nil, err
	}
	for i, a := range cfg.Listen {
		t, u, err := bindPath(a)
		if err != nil {
			return nil, fmt.Errorf("host: path %d: %w", i, err)
		}
		n.tcp = append(n.tcp, t)
		n.udp = append(n.udp, u)
	}
	var seed [32]byte
	rand.Read(seed[:])
	n.log = cfg.Logger.With("node", cfg.Self.String(), "boot", uint64(n.boot))
	n.env = &env{n: n, rng: mrand.New(mrand.NewChaCha8(seed))}
	n.h = f(cfg.Self, n.boot)
	if n.h == nil {
		return nil, fmt.Errorf("%w: Factory returned a nil Handler", ErrConfig)
	}
	n.ctx, n.stop = context.WithCancel(context.Background())
	n.start = time.Now()
	// Start is the first event: nothing else can be queued yet, and the
	// inbox holds at least one.
	n.pending.Add(1)
	n.inbox <- event{kind: evStart}
	n.spawn(n.loop)
	for i := range cfg.Listen {
		n.spawn(func() { n.acceptLoop(i) })
		n.spawn(func() { n.readDatagrams(i) })
	}
	ok = true
	n.log.Info("host: node started", "addrs", n.Addrs())
	return n, nil
}

// bindPath binds a TCP listener and a UDP socket to the same address. For
// port 0 the TCP port is picked first and UDP tries the same number; if
// that UDP port is taken, it starts over with another TCP port.
func bindPath(a netip.AddrPort) (*net.TCPListener, *net.UDPConn, error) {
	const tries = 32
	var lastErr error
	for range tries {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = setSockBuffers(fd) }); err != nil {
				return err
			}
			return serr
		}}
		l, err := lc.Listen(context.Background(), "tcp", a.String())
		if err != nil {
			return nil, nil, err
		}
		t := l.(*net.TCPListener)
		port := t.Addr().(*net.TCPAddr).AddrPort().Port()
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.Addr(), port)))
		if err == nil {
			_ = u.SetReadBuffer(4 << 20) // best effort: capped by rmem_max
			return t, u, nil
		}
		t.Close()
		lastErr = err
		if a.Port() != 0 {
			break
		}
	}
	return nil, nil, fmt.Errorf("bind UDP beside TCP: %w", lastErr)
}

// Addrs returns the address each path is bound to, with the port the OS
// picked for a Listen port of 0. Give these to the peers (SetPeers).
func (n *Node) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(n.tcp))
	for i, t := range n.tcp {
		ap := t.Addr().(*net.TCPAddr).AddrPort()
		out[i] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return out
}

// Self is the node's number.
func (n *Node) Self() node.ID { return n.cfg.Self }

// Boot is this incarnation's boot count.
func (n *Node) Boot() node.Boot { return n.boot }

// SetPeers replaces the peer address map (see Config.Peers). It may be
// called at any time; streams already open keep running, new dials and
// datagrams use the new addresses, and incoming connections and
// datagrams are checked against it.
func (n *Node) SetPeers(peers map[node.ID][]netip.AddrPort) error {
	p, err := checkPeers(peers, len(n.cfg.Listen))
	if err != nil {
		return err
	}
	n.peersMu.Lock()
	n.peers = p
	n.peersMu.Unlock()
	return nil
}

// peerAddr is peer's address on path, if it has one.
func (n *Node) peerAddr(peer node.ID, path int) (netip.AddrPort, bool) {
	n.peersMu.RLock()
	defer n.peersMu.RUnlock()
	addrs := n.peers[peer]
	if path < 0 || path >= len(addrs) {
		return netip.AddrPort{}, false
	}
	return addrs[path], true
}

func (n *Node) paths(peer node.ID) int {
	n.peersMu.RLock()
	defer n.peersMu.RUnlock()
	return len(n.peers[peer])
}

// SetClockOffset sets how far the node's wall clock (Clock.Wall) is from
// the host's, stepping it as an operator or NTP would. The monotonic
// clock and timers are not affected.
func (n *Node) SetClockOffset(d time.Duration) { n.wallOffset.Store(int64(d)) }

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	c := &n.stats
	return Stats{
		Callbacks:          c.callbacks.Load(),
		TimersFired:        c.timersFired.Load(),
		DatagramsSent:      c.dgramSent.Load(),
		DatagramsSendError: c.dgramSendErr.Load(),
		DatagramsReceived:  c.dgramReceived.Load(),
		DatagramsDropped:   c.dgramDropped.Load(),
		DatagramsRejected:  c.dgramRejected.Load(),
		StreamsDialled:     c.streamsDialled.Load(),
		StreamsAccepted:    c.streamsAccepted.Load(),
		StreamsRejected:    c.streamsRejected.Load(),
		StreamsBroken:      c.streamsBroken.Load(),
		Inbox:              len(n.inbox),
		InboxBytes:         n.inboxBytes.inUse(),
	}
}

// Do runs f against the Handler on the event loop, as an API call from
// outside would (a leave request, a query). It blocks while the inbox is
// full and fails once the node is closed; a call posted just before Close
// may never run. f must not call Close.
func (n *Node) Do(f func(h node.Handler)) error {
	if f == nil {
		return errors.New("host: Do with a nil function")
	}
	if n.closing.Load() {
		return ErrClosed
	}
	if !n.post(event{kind: evDo, do: f}, nil) {
		return ErrClosed
	}
	return nil
}

// TryDo runs f against the Handler at once, on the calling goroutine,
// if the node is idle: nobody holds the loop token (no callback is
// running) and no event waits to be dispatched, so that f overtakes
// nothing, not even an earlier Do of the same goroutine. What f sends
// on streams is written before TryDo returns. It reports whether it ran
// f; if not, use Do.
//
// It exists for synchronous callers (ics.CallSync through a Loop): the
// call then goes out on the caller's goroutine, which spares waking the
// event loop for it and two goroutine switches per call. Unlike Do, f
// runs before TryDo returns, so the caller must not hold anything f
// needs. Like Do, it must not be called from inside a callback (there it
// always reports false).
func (n *Node) TryDo(f func(h node.Handler)) bool {
	if f == nil || n.closing.Load() || n.pending.Load() != 0 || !n.loopMu.TryLock() {
		return false
	}
	// Checked again under the token: the loop may have taken an event
	// out of the inbox just before.
	if n.pending.Load() != 0 || n.closing.Load() {
		n.loopMu.Unlock()
		return false
	}
	n.onLoop.Store(true)
	n.stats.callbacks.Add(1)
	f(n.h)
	n.leaveInline()
	return true
}

// Close stops the node cleanly: it closes the sockets, stops the timers,
// waits for every goroutine the node started and releases the state
// directory. No callback runs after Close returns. Peers see the streams
// break with node.ErrStreamReset, as when a process exits: the Handler
// did not close them. Storage writes not yet synced are dropped, exactly
// as a crash would drop them, so that node code never depends on how its
// predecessor stopped. Close must not be called from inside a callback
// (it would wait for itself).
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.closing.Store(true)
		n.mu.Lock()
		n.closed = true
		conns := make([]net.Conn, 0, len(n.conns))
		for c := range n.conns {
			conns = append(conns, c)
		}
		n.mu.Unlock()
		close(n.quit)
		n.stop()
		for _, c := range conns {
			c.Close()
		}
		for i := range n.tcp {
			n.tcp[i].Close()
			n.udp[i].Close()
		}
		n.wg.Wait()
		n.timers.close()
		n.closeErr = n.release()
		n.log.Info("host: node closed")
	})
	return n.closeErr
}

// release frees what Start acquired. It runs when no goroutine is left.
func (n *Node) release() error {
	for i := range n.tcp {
		n.tcp[i].Close()
		n.udp[i].Close()
	}
	if n.store != nil {
		n.store.close()
	}
	if n.state != nil {
		return n.state.close()
	}
	return nil
}

// spawn runs f on a new goroutine that Close waits for. It reports false,
// and runs nothing, once Close has begun.
func (n *Node) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// register records a connection for Close to shut. It reports false
// (and the caller must close c) once Close has begun.
func (n *Node) register(c net.Conn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.conns[c] = struct{}{}
	return true
}

func (n *Node) unregister(c net.Conn) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
}

// evKind says what an inbox event is.
type evKind uint8

const (
	evStart evKind = iota
	evDatagram
	evOpened
	evMessage
	evWritable
	evClosed
	evDo
)

// event is one entry of the inbox: something for the Handler.
type event struct {
	kind evKind
	peer node.ID
	path int
	data []byte
	s    *stream
	err  error
	do   func(node.Handler)
}

// post queues ev for the loop, waiting while the inbox is full. It gives
// up, reporting false, when the node closes or cancel is closed.
func (n *Node) post(ev event, cancel <-chan struct{}) bool {
	if ev.s != nil {
		ev.s.posted.Add(1)
	}
	n.pending.Add(1)
	select {
	case n.inbox <- ev:
		return true
	case <-n.quit:
	case <-cancel:
	}
	n.pending.Add(-1)
	if ev.s != nil {
		ev.s.posted.Add(-1)
	}
	return false
}

// dispatchPosted dispatches an event taken from the inbox.
func (n *Node) dispatchPosted(ev event) {
	n.dispatch(ev)
	if ev.s != nil {
		ev.s.posted.Add(-1)
	}
	n.pending.Add(-1)
}

// tryInline takes the loop token for s's reader if that keeps s's events
// in order: nobody holds it, and no event of s waits in the inbox. It
// reports whether it did; then the caller delivers and calls
// leaveInline.
func (n *Node) tryInline(s *stream) bool {
	if s.posted.Load() != 0 || !n.loopMu.TryLock() {
		return false
	}
	// Checked again under the token: the loop may have been about to
	// dispatch one of s's events.
	if s.posted.Load() != 0 || n.closing.Load() {
		n.loopMu.Unlock()
		return false
	}
	n.onLoop.Store(true)
	return true
}

// leaveInline writes what the inline deliveries queued and gives the
// token back. A write that earned more sending is left to the loop.
func (n *Node) leaveInline() {
	n.flush()
	n.onLoop.Store(false)
	if n.hasDirty() {
		select {
		case n.timers.kick <- struct{}{}:
		default:
		}
	}
	n.loopMu.Unlock()
}

// flushEvery is how many callbacks the loop runs, at most, before it
// writes what they queued on streams, when events keep coming; when they
// stop it writes at once. Batching a busy turn's messages into one write
// per stream is what makes many concurrent calls cheap.
const flushEvery = 16

// loop is the event loop: the one goroutine that calls the Handler and
// timer callbacks, one at a time. Due timers and inbox events alternate,
// so that neither a stream of zero-delay timers nor a flood of messages
// can starve the other. What the callbacks send on streams is written
// before the loop sleeps, or every flushEvery callbacks.
func (n *Node) loop() {
	wake := time.NewTimer(time.Hour)
	wake.Stop()
	defer wake.Stop()
	n.loopMu.Lock()
	n.onLoop.Store(true)
	since := 0 // callbacks since the last flush
	for {
		select {
		case <-n.quit:
			n.loopMu.Unlock()
			return
		default:
		}
		if since >= flushEvery {
			n.flush()
			since = 0
		}
		if f := n.timers.popDue(n.now()); f != nil {
			n.stats.timersFired.Add(1)
			n.stats.callbacks.Add(1)
			f()
			since++
			select {
			case ev := <-n.inbox:
				n.dispatchPosted(ev)
				since++
			default:
			}
			continue
		}
		select {
		case ev := <-n.inbox:
			n.dispatchPosted(ev)
			since++
			continue
		default:
		}
		// Nothing to do right now: write what was queued, then sleep.
		n.flush()
		since = 0
		n.onLoop.Store(false)
		if n.hasDirty() {
			// More to write (a StreamWritable sent more, or another
			// goroutine sent after the flush).
			n.onLoop.Store(true)
			continue
		}
		n.loopMu.Unlock()
		var fire <-chan time.Time
		if next := n.timers.sleep(); next >= 0 {
			wake.Reset(next - n.now())
			fire = wake.C
		}
		select {
		case <-n.quit:
			return
		case ev := <-n.inbox:
			n.loopMu.Lock()
			n.onLoop.Store(true)
			n.timers.awake()
			n.dispatchPosted(ev)
			since++
		case <-n.timers.kick:
			n.loopMu.Lock()
			n.onLoop.Store(true)
			n.timers.awake()
		case <-fire:
			n.loopMu.Lock()
			n.onLoop.Store(true)
			n.timers.awake()
		}
		wake.Stop()
	}
}

// markDirty lists s for the loop's next flush, and wakes the loop if it
// is asleep (s was sent on from another goroutine).
func (n *Node) markDirty(s *stream) {
	n.dirtyMu.Lock()
	n.dirty = append(n.dirty, s)
	n.dirtyMu.Unlock()
	// Paired with the loop's store of false before its look at hasDirty:
	// either the loop sees s listed, or this sees it asleep.
	if !n.onLoop.Load() {
		select {
		case n.timers.kick <- struct{}{}:
		default:
		}
	}
}

func (n *Node) hasDirty() bool {
	n.dirtyMu.Lock()
	defer n.dirtyMu.Unlock()
	return len(n.dirty) > 0
}

// flushRounds bounds the rounds of one flush: a StreamWritable delivered
// by a flush may queue more, which the next round writes, but the inbox
// gets its turn after a few.
const flushRounds = 4

// flush writes every listed stream's queued bytes, on the loop (see
// flushFromLoop).
func (n *Node) flush() {
	for range flushRounds {
		n.dirtyMu.Lock()
		ds := n.dirty
		n.dirty = n.dirtySpare[:0]
		n.dirtyMu.Unlock()
		if len(ds) == 0 {
			n.dirtySpare = ds
			return
		}
		for i, s := range ds {
			ds[i] = nil
			n.flushFromLoop(s)
		}
		n.dirtySpare = ds[:0]
	}
}

func (n *Node) now() time.Duration { return time.Since(n.start) }

// dispatch hands one event to the Handler. Stream events are filtered
// here, on the loop, so that the Handler hears nothing about a stream it
// closed and nothing after StreamClosed.
func (n *Node) dispatch(ev event) {
	h, s := n.h, ev.s
	if ev.kind == evMessage || ev.kind == evDatagram {
		n.inboxBytes.release(len(ev.data))
	}
	if ev.kind == evMessage {
		s.readAhead.release(len(ev.data))
	}
	switch ev.kind {
	case evOpened:
		if s.isClosing() {
			return
		}
	case evMessage, evWritable:
		if s.finished || s.isClosing() {
			return
		}
	case evClosed:
		if s.finished || s.isClosing() {
			return
		}
		s.finished = true
	}
	n.stats.callbacks.Add(1)
	switch ev.kind {
	case evStart:
		h.Start(n.env)
	case evDatagram:
		h.Datagram(ev.peer, ev.path, ev.data)
	case evOpened:
		h.StreamOpened(s)
	case evMessage:
		h.StreamMessage(s, ev.data)
	case evWritable:
		h.StreamWritable(s)
	case evClosed:
		h.StreamClosed(s, ev.err)
	case evDo:
		ev.do(h)
	}
}

// budget bounds the bytes in the inbox. Stream readers wait for room
// (acquire), datagram readers drop what does not fit (tryAcquire), and
// the loop gives the bytes back as it takes events out.
type budget struct {
	mu      sync.Mutex
	used    int
	max     int
	waiting int
	freed   chan struct{} // closed when bytes are released while someone waits
}

func (b *budget) init(max int) {
	b.max = max
	b.freed = make(chan struct{})
}

// fits reports whether size more bytes may go in: always when the budget
// is unused, so that one message larger than it still gets through.
func (b *budget) fits(size int) bool { return b.used == 0 || b.used+size <= b.max }

func (b *budget) tryAcquire(size int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.fits(size) {
		return false
	}
	b.used += size
	return true
}

// acquire waits for room for size bytes. It gives up, reporting false,
// when either cancel channel is closed.
func (b *budget) acquire(size int, cancel1, cancel2 <-chan struct{}) bool {
	b.mu.Lock()
	for !b.fits(size) {
		b.waiting++
		ch := b.freed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-cancel1:
		case <-cancel2:
		}
		b.mu.Lock()
		b.waiting--
		select {
		case <-cancel1:
			b.mu.Unlock()
			return false
		case <-cancel2:
			b.mu.Unlock()
			return false
		default:
		}
	}
	b.used += size
	b.mu.Unlock()
	return true
}

func (b *budget) release(size int) {
	if size == 0 {
		return
	}
	b.mu.Lock()
	b.used -= size
	if b.waiting > 0 {
		close(b.freed)
		b.freed = make(chan struct{})
	}
	b.mu.Unlock()
}

func (b *budget) inUse() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// wireID encodes a node number for a header.
func wireID(b []byte, id node.ID) { binary.BigEndian.PutUint32(b, uint32(id)) }
