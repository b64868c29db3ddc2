package host

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/node"
)

// A stream is a TCP connection. The dialler opens with a hello, the
// acceptor checks it and answers; only then does either side report
// StreamOpened, so that neither Handler hears of a stream the other
// refused (and the dialler learns if the address it dialled belongs to
// some other node):
//
//	hello (dialler → acceptor): magic:1 version:1 from:u32 to:u32 path:1
//	ack   (acceptor → dialler): magic:1 version:1 from:u32
//
// Then each message is a frame, len:u32 (big endian) followed by len
// bytes. A frame length of endMarker ends the stream cleanly. TCP alone
// cannot tell a clean close from a dead process, since the kernel sends
// the same FIN for both; the marker can. A stream that reaches EOF
// without it broke (node.ErrStreamReset), as the Stream contract asks of
// a far end that restarts.
const (
	streamMagic   = 0x5C
	streamVersion = 1
	helloLen      = 11
	ackLen        = 6
	frameHeader   = 4
	endMarker     = 0xFFFFFFFF
)

// Sending. Send appends each message, framed, to one contiguous buffer
// (no allocation per message), and the bytes reach the kernel by one of
// two writers, never both at once (the stream's writing flag):
//
//   - The event loop, after a turn of callbacks, writes every stream that
//     has bytes and no writer busy, without blocking. A reply sent from a
//     handler thus reaches the socket on the goroutine that made it,
//     with no goroutine to wake, and every message queued in one turn
//     goes out in one write.
//   - The stream's writer goroutine takes over what the kernel would not
//     take without blocking (a full socket buffer), and everything queued
//     behind it, until the buffer is empty again. It also writes the end
//     marker.
const (
	// writeStepBytes bounds one blocking write of the writer goroutine,
	// so that room frees up (and StreamWritable is sent) in steps rather
	// than only when all is written. A sender that keeps the buffer
	// shallow (ICS: LowWater, 128 KiB) hands the writer at most a few
	// chunks, which one step then writes whole: a step of one 64 KiB
	// chunk meant a StreamWritable, a refill and a hand-off per chunk,
	// which held bulk transfers to a third of what the socket takes.
	writeStepBytes = 256 << 10
	// loopWriteMax bounds what the event loop writes in one go, so that a
	// large backlog costs the loop a bounded time; the rest goes to the
	// writer goroutine.
	loopWriteMax = 1 << 20
	// spareMax is the largest send buffer kept for reuse; a larger one
	// (a message of many megabytes went through) is left to the GC.
	spareMax = 1 << 20
	// streamReadAhead bounds the stream payload one stream's reader may
	// hold in the inbox. Beyond it the reader stops reading, the kernel
	// buffers fill and TCP pushes back on the sender, so that what is
	// queued ahead of an urgent message stays a few milliseconds' worth
	// rather than the whole InboxBytes.
	streamReadAhead = 512 << 10
	// readBuffer is the reader's buffer: small messages that arrive
	// together are read with one system call. It is 16 KiB rather than
	// a bulk chunk's 64 KiB because what the buffer holds of a large
	// message is copied twice (socket to buffer to message) while the
	// rest is read straight into the message (readBody): reading a frame
	// header into an empty 64 KiB buffer pulled most of the chunk behind
	// it in too. 16 KiB still holds a hundred small calls.
	readBuffer = 16 << 10
)

// stream is one end of a connection; it implements node.Stream. A stream
// has two goroutines once connected: the one that dialled or accepted it,
// which then reads, and a writer fed by the send queue.
type stream struct {
	n    *Node
	peer node.ID
	path int

	finished bool // StreamClosed was delivered; owned by the loop token's holder

	// posted counts this stream's events in the inbox; while it is not 0
	// the reader may not deliver inline (it would overtake them).
	posted atomic.Int32

	// readAhead bounds the payload this stream's reader has in the inbox
	// (streamReadAhead).
	readAhead budget

	mu   sync.Mutex
	conn *net.TCPConn // nil until the handshake is done
	nbw  *nbWriter    // conn's, for the loop's non-blocking writes
	// out holds framed messages that no writer has taken yet. buffered
	// counts the bytes not yet handed to the kernel (out, and what a
	// writer holds), frame headers included; it never exceeds
	// StreamBuffer except by one message sent into an empty buffer.
	out      []byte
	spare    []byte // an emptied buffer, for out to reuse
	handoff  []byte // what the loop could not write without blocking, for the writer goroutine
	writing  bool   // a writer (the loop or the writer goroutine) holds bytes taken from out
	dirty    bool   // listed for the loop's next flush
	buffered int

	wantWritable bool // a Send failed with ErrStreamFull
	wantBelow    int  // Backlogged asked to hear when buffered < wantBelow; 0: not asked
	closing      bool // Close was called here
	ended        bool // the connection is over: no more I/O, no more events
	cancelDial   context.CancelFunc

	wake chan struct{} // capacity 1: the queue or closing changed
	dead chan struct{} // closed when ended is set
}

func (n *Node) newStream(peer node.ID, path int) *stream {
	s := &stream{n: n, peer: peer, path: path, wake: make(chan struct{}, 1), dead: make(chan struct{})}
	s.readAhead.init(streamReadAhead)
	return s
}

// Peer implements node.Stream.
func (s *stream) Peer() node.ID { return s.peer }

// Path implements node.Stream.
func (s *stream) Path() int { return s.path }

// Buffered implements node.Stream. It counts the bytes the kernel has
// not taken yet, with 4 bytes of framing per message, so that a flood of
// empty messages is bounded too. What the kernel holds unacknowledged in
// its socket buffer is not included: it cannot be read back portably,
// and it is bounded by the kernel anyway.
func (s *stream) Buffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buffered
}

// Backlogged implements node.Stream.
func (s *stream) Backlogged(mark int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buffered < mark {
		return false
	}
	s.wantBelow = mark
	return true
}

// Send implements node.Stream. The message is copied, framed, into the
// stream's send buffer; the event loop writes it after the current
// callback (see flush).
func (s *stream) Send(msg []byte) error {
	s.mu.Lock()
	if s.closing || s.ended {
		s.mu.Unlock()
		return node.ErrStreamClosed
	}
	if max := s.n.cfg.MaxMessage; len(msg) > max {
		s.mu.Unlock()
		return fmt.Errorf("host: %w: message of %d bytes (max %d)", node.ErrTooLarge, len(msg), max)
	}
	cost := len(msg) + frameHeader
	if s.buffered > 0 && s.buffered+cost > s.n.cfg.StreamBuffer {
		s.wantWritable = true
		s.mu.Unlock()
		return node.ErrStreamFull
	}
	s.out = binary.BigEndian.AppendUint32(s.out, uint32(len(msg)))
	s.out = append(s.out, msg...)
	s.buffered += cost
	// A busy writer takes these bytes when it is done with its own; an
	// idle stream waits for the loop's flush.
	mark := !s.dirty && !s.writing
	s.dirty = s.dirty || mark
	s.mu.Unlock()
	if mark {
		s.n.markDirty(s)
	}
	return nil
}

// Release implements node.Stream: the buffer goes to the node's free
// list, for whichever of its streams reads a message next.
func (s *stream) Release(msg []byte) { s.n.frames.put(msg) }

// takeOut hands the bytes in out to a writer, which then holds the
// stream's writing flag. Call it with mu held, writing clear and out not
// empty.
func (s *stream) takeOut() []byte {
	buf := s.out
	s.out, s.spare = s.spare, nil
	s.writing = true
	return buf
}

// doneWriting gives buf (emptied) back for reuse and clears the writing
// flag. Call it with mu held.
func (s *stream) doneWriting(buf []byte) {
	s.writing = false
	if s.spare == nil && cap(buf) <= spareMax {
		s.spare = buf[:0]
	}
}

// takeNotify reports whether a StreamWritable is owed now, and if so
// forgets that it was asked for. Call it with mu held.
func (s *stream) takeNotify() bool {
	notify := ((s.wantWritable && s.buffered < s.n.cfg.StreamBuffer) ||
		(s.wantBelow > 0 && s.buffered < s.wantBelow)) && !s.closing && !s.ended
	if notify {
		s.wantWritable, s.wantBelow = false, 0
	}
	return notify
}

// flushFromLoop writes what the stream has queued, on the event loop and
// without blocking. What the kernel does not take goes to the writer
// goroutine. A StreamWritable this earns is delivered here, on the loop.
func (n *Node) flushFromLoop(s *stream) {
	s.mu.Lock()
	s.dirty = false
	if s.writing || len(s.out) == 0 || s.nbw == nil || s.ended {
		s.mu.Unlock()
		return
	}
	buf := s.takeOut()
	s.mu.Unlock()
	w, err := s.nbw.Write(buf[:min(len(buf), loopWriteMax)])
	s.mu.Lock()
	s.buffered -= w
	if err != nil {
		s.writing = false
		s.mu.Unlock()
		s.end(streamErr(err))
		return
	}
	if w < len(buf) {
		// The writer goroutine finishes it (and holds writing until then).
		s.handoff = buf[w:]
		notify := s.takeNotify()
		s.mu.Unlock()
		s.signal()
		if notify {
			n.dispatch(event{kind: evWritable, s: s})
		}
		return
	}
	s.doneWriting(buf)
	redirty := len(s.out) > 0 && !s.dirty // sent from another goroutine meanwhile
	s.dirty = s.dirty || redirty
	notify := s.takeNotify()
	closing := s.closing
	s.mu.Unlock()
	if redirty {
		n.markDirty(s)
	}
	if closing {
		s.signal() // the writer goroutine writes the end marker
	}
	if notify {
		n.dispatch(event{kind: evWritable, s: s})
	}
}

// Close implements node.Stream. What is queued is still written, then
// the end marker; the writer then shuts down its side of the connection.
// A dial still connecting with nothing queued is abandoned instead.
func (s *stream) Close() {
	s.mu.Lock()
	if s.closing || s.ended {
		s.mu.Unlock()
		return
	}
	s.closing = true
	abandon := s.conn == nil && len(s.out) == 0 && s.cancelDial != nil
	s.mu.Unlock()
	if abandon {
		s.cancelDial()
	}
	s.signal()
}

func (s *stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *stream) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// end finishes the stream once: it shuts the connection and, unless the
// Handler closed the stream itself, tells it StreamClosed(err). Every
// way a stream can finish goes through here, which is what makes
// StreamClosed arrive exactly once.
func (s *stream) end(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	quiet := s.closing
	conn := s.conn
	s.out, s.spare, s.handoff = nil, nil, nil
	s.buffered = 0
	close(s.dead)
	s.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	n := s.n
	if err != nil && !quiet && !n.closing.Load() {
		n.stats.streamsBroken.Add(1)
		n.log.Debug("host: stream broke", "peer", s.peer.String(), "path", s.path, "err", err)
	}
	if !quiet {
		n.post(event{kind: evClosed, s: s, err: err}, nil)
	}
}

// Dial implements node.Network.
func (e *env) Dial(peer node.ID, path int) (node.Stream, error) {
	n := e.n
	addr, ok := n.peerAddr(peer, path)
	if !ok || peer == n.cfg.Self {
		return nil, fmt.Errorf("host: %w: %v path %d", node.ErrBadPeer, peer, path)
	}
	if n.closing.Load() {
		return nil, fmt.Errorf("host: %w: node closed", node.ErrUnreachable)
	}
	s := n.newStream(peer, path)
	ctx, cancel := context.WithCancel(n.ctx)
	s.cancelDial = cancel
	if !n.spawn(func() {
		defer cancel()
		n.dial(ctx, s, addr)
	}) {
		cancel()
		return nil, fmt.Errorf("host: %w: node closed", node.ErrUnreachable)
	}
	n.stats.streamsDialled.Add(1)
	return s, nil
}

// dial connects s, shakes hands and then serves it. Any failure is
// reported to the dialler as StreamClosed(err).
func (n *Node) dial(ctx context.Context, s *stream, addr netip.AddrPort) {
	d := net.Dialer{
		Timeout:         n.cfg.StreamTimeout,
		KeepAliveConfig: n.keepAlive(),
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = setSockBuffers(fd) }); err != nil {
				return err
			}
			if serr != nil {
				return serr
			}
			return setUserTimeout(c, n.cfg.StreamTimeout)
		},
	}
	// Pin the source address to this path's interface, so that a path
	// is one interconnect end to end.
	if local := n.cfg.Listen[s.path].Addr(); !local.IsUnspecified() && local.Is4() == addr.Addr().Is4() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	deadline := time.Now().Add(n.cfg.StreamTimeout)
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		s.end(streamErr(err))
		return
	}
	conn := c.(*net.TCPConn)
	if !n.register(conn) {
		conn.Close()
		s.end(ErrClosed)
		return
	}
	defer n.unregister(conn)
	if err := n.helloDialler(conn, s, deadline); err != nil {
		conn.Close()
		s.end(err)
		return
	}
	s.mu.Lock()
	s.conn = conn
	ended := s.ended
	s.mu.Unlock()
	if ended {
		conn.Close()
		return
	}
	if !s.isClosing() && !n.post(event{kind: evOpened, s: s}, s.dead) {
		s.end(ErrClosed)
		return
	}
	n.serve(s, conn, bufio.NewReaderSize(conn, readBuffer))
}

// helloDialler sends the hello and checks the acceptor's answer.
func (n *Node) helloDialler(conn *net.TCPConn, s *stream, deadline time.Time) error {
	if err := conn.SetDeadline(deadline); err != nil {
		return streamErr(err)
	}
	var b [helloLen]byte
	b[0], b[1] = streamMagic, streamVersion
	wireID(b[2:], n.cfg.Self)
	wireID(b[6:], s.peer)
	b[10] = byte(s.path)
	if _, err := conn.Write(b[:]); err != nil {
		return streamErr(err)
	}
	var a [ackLen]byte
	if _, err := io.ReadFull(conn, a[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: %v path %d refused the handshake", node.ErrStreamReset, s.peer, s.path)
		}
		return streamErr(err)
	}
	from, err := decodeAck(a[:])
	if err != nil {
		return err
	}
	if from != s.peer {
		return fmt.Errorf("host: %w: %v path %d: %v answers as %v", node.ErrBadPeer, s.peer, s.path, conn.RemoteAddr(), from)
	}
	return streamErr(conn.SetDeadline(time.Time{}))
}

func decodeHello(b []byte) (from, to node.ID, path int, err error) {
	if len(b) != helloLen || b[0] != streamMagic || b[1] != streamVersion {
		return 0, 0, 0, fmt.Errorf("host: bad stream hello % x", b)
	}
	return node.ID(binary.BigEndian.Uint32(b[2:])), node.ID(binary.BigEndian.Uint32(b[6:])), int(b[10]), nil
}

func decodeAck(b []byte) (node.ID, error) {
	if len(b) != ackLen || b[0] != streamMagic || b[1] != streamVersion {
		return 0, fmt.Errorf("host: bad stream handshake answer % x", b)
	}
	return node.ID(binary.BigEndian.Uint32(b[2:])), nil
}

// acceptLoop accepts path i's connections until Close. Each is handed to
// its own goroutine for the handshake, up to maxHandshakes at once; more
// are refused, so that a flood of silent connections costs a bounded
// number of goroutines.
func (n *Node) acceptLoop(i int) {
	const backoffMin, backoffMax = 5 * time.Millisecond, time.Second
	backoff := backoffMin
	for {
		c, err := n.tcp[i].AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || n.closing.Load() {
				return
			}
			// Out of file descriptors and the like: wait for it to pass.
			n.log.Warn("host: accept failed", "path", i, "err", err)
			select {
			case <-n.quit:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		backoff = backoffMin
		select {
		case n.handshakes <- struct{}{}:
		default:
			n.stats.streamsRejected.Add(1)
			c.Close()
			continue
		}
		if !n.register(c) {
			c.Close()
			return
		}
		if !n.spawn(func() { n.accept(i, c) }) {
			n.unregister(c)
			c.Close()
			return
		}
	}
}

// accept checks a new connection's hello, answers it and serves the
// stream. A connection from a node that is not a peer on this path is
// closed before anyone is told.
func (n *Node) accept(i int, conn *net.TCPConn) {
	defer n.unregister(conn)
	s, err := n.helloAcceptor(i, conn)
	<-n.handshakes
	if err != nil {
		n.stats.streamsRejected.Add(1)
		if !n.closing.Load() {
			n.log.Info("host: refused a stream", "path", i, "remote", conn.RemoteAddr(), "err", err)
		}
		conn.Close()
		return
	}
	n.stats.streamsAccepted.Add(1)
	if !n.post(event{kind: evOpened, s: s}, nil) {
		s.end(ErrClosed)
		return
	}
	n.serve(s, conn, bufio.NewReaderSize(conn, readBuffer))
}

func (n *Node) helloAcceptor(i int, conn *net.TCPConn) (*stream, error) {
	if err := n.tune(conn); err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Now().Add(n.cfg.StreamTimeout)); err != nil {
		return nil, err
	}
	var b [helloLen]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return nil, fmt.Errorf("host: reading hello: %w", err)
	}
	from, to, path, err := decodeHello(b[:])
	if err != nil {
		return nil, err
	}
	if to != n.cfg.Self || path != i {
		return nil, fmt.Errorf("host: hello for %v path %d arrived at %v path %d", to, path, n.cfg.Self, i)
	}
	if _, ok := n.peerAddr(from, i); !ok || from == n.cfg.Self {
		return nil, fmt.Errorf("host: hello from %v, which is not a peer on path %d", from, i)
	}
	var a [ackLen]byte
	a[0], a[1] = streamMagic, streamVersion
	wireID(a[2:], n.cfg.Self)
	if _, err := conn.Write(a[:]); err != nil {
		return nil, fmt.Errorf("host: answering hello: %w", err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	s := n.newStream(from, i)
	s.conn = conn
	return s, nil
}

// tune sets the socket options of an accepted connection; a dialled one
// gets the same from its Dialer.
func (n *Node) tune(conn *net.TCPConn) error {
	if err := conn.SetNoDelay(true); err != nil {
		return err
	}
	if err := conn.SetKeepAliveConfig(n.keepAlive()); err != nil {
		return err
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	return setUserTimeout(rc, n.cfg.StreamTimeout)
}

// keepAlive makes an idle connection to a dead host break within about
// StreamTimeout: with TCP_USER_TIMEOUT set, Linux gives up on keepalive
// probes after that long instead of after Count probes.
func (n *Node) keepAlive() net.KeepAliveConfig {
	t := n.cfg.StreamTimeout
	return net.KeepAliveConfig{
		Enable:   true,
		Idle:     max(t/2, time.Second),
		Interval: max(t/5, time.Second),
		Count:    5,
	}
}

// serve runs a connected stream: a writer goroutine and, on this one,
// the reader. It returns when the connection is over.
func (n *Node) serve(s *stream, conn *net.TCPConn, br *bufio.Reader) {
	if raw, err := conn.SyscallConn(); err == nil {
		s.mu.Lock()
		s.nbw = newNBWriter(raw)
		s.mu.Unlock()
	}
	if !n.spawn(func() { n.writeLoop(s, conn) }) {
		s.end(ErrClosed)
		return
	}
	n.readLoop(s, conn, br)
}

// readLoop reads frames and posts them to the loop. It waits while the
// inbox is full (in events or in bytes), which stops reading the socket,
// so TCP flow control pushes back on the sender. After a local Close it only discards, until
// the peer's EOF (or the linger deadline the writer set).
func (n *Node) readLoop(s *stream, conn io.Reader, br *bufio.Reader) {
	var hdr [frameHeader]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			switch {
			case err == io.EOF && s.isClosing():
				s.end(nil)
			case err == io.EOF:
				s.end(fmt.Errorf("%w: %v closed the connection without ending the stream", node.ErrStreamReset, s.peer))
			default:
				s.end(streamErr(err))
			}
			return
		}
		size := binary.BigEndian.Uint32(hdr[:])
		if size == endMarker {
			s.end(nil)
			return
		}
		if uint64(size) > uint64(n.cfg.MaxMessage) {
			s.end(fmt.Errorf("host: stream from %v: %w: frame of %d bytes (max %d)", s.peer, node.ErrTooLarge, size, n.cfg.MaxMessage))
			return
		}
		if s.isClosing() {
			if _, err := io.CopyN(io.Discard, br, int64(size)); err != nil {
				s.end(streamErr(err))
				return
			}
			continue
		}
		// Room in the inbox first: until there is, the body stays in the
		// kernel and the sender's window closes.
		if !s.readAhead.acquire(int(size), n.quit, s.dead) {
			s.end(ErrClosed)
			return
		}
		if !n.inboxBytes.acquire(int(size), n.quit, s.dead) {
			s.readAhead.release(int(size))
			s.end(ErrClosed)
			return
		}
		msg := n.frames.get(int(size))
		if err := readBody(br, conn, msg); err != nil {
			s.readAhead.release(int(size))
			n.inboxBytes.release(int(size))
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the frame header promised more
			}
			s.end(streamErr(err))
			return
		}
		if n.tryInline(s) {
			n.dispatch(event{kind: evMessage, s: s, data: msg})
			// Deliver what else has arrived whole, in the same turn, so
			// that the replies go out in one write.
			for range inlineBatch {
				m := n.nextBuffered(s, br)
				if m == nil {
					break
				}
				n.dispatch(event{kind: evMessage, s: s, data: m})
			}
			n.leaveInline()
			continue
		}
		if !n.post(event{kind: evMessage, s: s, data: msg}, s.dead) {
			s.readAhead.release(int(size))
			n.inboxBytes.release(int(size))
			s.end(ErrClosed)
			return
		}
	}
}

// directRead is the remainder of a message, beyond what the reader's
// buffer already holds, from which the reader reads it straight from the
// socket into the message rather than through the buffer.
const directRead = readBuffer / 4

// readBody fills msg with the body of a message: first what br already
// holds, then the rest from br or, if the rest is directRead or more,
// straight from conn, which br then has nothing ahead of. bufio reads
// straight into the caller's slice only when that is at least its own
// size and its buffer is empty, which a bulk chunk of 64 KiB and a few
// bytes of header, read after its own frame header, almost never is: every
// bulk byte was copied twice on its way in, a quarter of the receiver's
// work in a bulk transfer.
func readBody(br *bufio.Reader, conn io.Reader, msg []byte) error {
	k := min(len(msg), br.Buffered())
	if k > 0 {
		b, _ := br.Peek(k) // buffered: cannot fail
		copy(msg, b)
		_, _ = br.Discard(k)
	}
	rest := msg[k:]
	var err error
	switch {
	case len(rest) == 0:
	case len(rest) >= directRead:
		_, err = io.ReadFull(conn, rest)
	default:
		_, err = io.ReadFull(br, rest)
	}
	return err
}

// inlineBatch bounds the messages a reader delivers in one inline turn.
const inlineBatch = 64

// nextBuffered reads the next message if it is already whole in br's
// buffer and both inbox budgets have room for it now; otherwise (or for
// the end marker or a bad length, which readLoop handles) it returns nil.
// What it returns is counted in the budgets, as readLoop's messages are.
func (n *Node) nextBuffered(s *stream, br *bufio.Reader) []byte {
	if br.Buffered() < frameHeader || s.isClosing() {
		return nil
	}
	hdr, err := br.Peek(frameHeader)
	if err != nil {
		return nil
	}
	size := binary.BigEndian.Uint32(hdr)
	if size == endMarker || uint64(size) > uint64(n.cfg.MaxMessage) || br.Buffered() < frameHeader+int(size) {
		return nil
	}
	if !s.readAhead.tryAcquire(int(size)) {
		return nil
	}
	if !n.inboxBytes.tryAcquire(int(size)) {
		s.readAhead.release(int(size))
		return nil
	}
	msg := n.frames.get(int(size))
	_, _ = br.Discard(frameHeader)
	_, _ = io.ReadFull(br, msg) // from the buffer: it cannot fail
	return msg
}

// writeLoop is the stream's writer goroutine: it writes, blocking, what
// the loop handed off, and then whatever is queued, until the send buffer
// is empty (see flushFromLoop for the other writer). Once the stream is
// closing and everything is written it writes the end marker, shuts down
// its side and gives the peer StreamTimeout to finish.
func (n *Node) writeLoop(s *stream, conn *net.TCPConn) {
	for {
		s.mu.Lock()
		var buf []byte
		for buf == nil {
			switch {
			case s.ended:
				s.mu.Unlock()
				return
			case s.handoff != nil:
				buf, s.handoff = s.handoff, nil // writing stays set: it is ours now
			case !s.writing && len(s.out) > 0:
				buf = s.takeOut()
			case !s.writing && s.closing:
				s.mu.Unlock()
				n.finishWrites(s, conn)
				return
			default:
				s.mu.Unlock()
				select {
				case <-s.wake:
				case <-s.dead:
					return
				case <-n.quit:
					return
				}
				s.mu.Lock()
			}
		}
		s.mu.Unlock()
		for off := 0; off < len(buf); {
			step := buf[off:min(len(buf), off+writeStepBytes)]
			if _, err := conn.Write(step); err != nil {
				s.end(streamErr(err))
				return
			}
			off += len(step)
			s.mu.Lock()
			s.buffered -= len(step)
			if off == len(buf) {
				s.doneWriting(buf)
			}
			notify := s.takeNotify()
			s.mu.Unlock()
			if !notify {
				continue
			}
			// Like a reader, the writer delivers StreamWritable itself
			// when the loop token is free and nothing of s waits in the
			// inbox: the sender refills the stream on this goroutine, and
			// leaveInline hands the new bytes straight back to it,
			// instead of waking the loop for every step of a bulk
			// transfer and waiting for it to run.
			if n.tryInline(s) {
				n.dispatch(event{kind: evWritable, s: s})
				n.leaveInline()
				continue
			}
			if !n.post(event{kind: evWritable, s: s}, s.dead) {
				return
			}
		}
	}
}

// finishWrites ends a closed stream's sending side: the end marker, then
// FIN. The reader keeps draining until the peer closes its side, so that
// nothing the peer still sends makes our kernel answer with a reset that
// could destroy the marker before the peer reads it.
func (n *Node) finishWrites(s *stream, conn *net.TCPConn) {
	var m [frameHeader]byte
	binary.BigEndian.PutUint32(m[:], endMarker)
	_, err := conn.Write(m[:])
	if err == nil {
		err = conn.CloseWrite()
	}
	if err == nil {
		err = conn.SetReadDeadline(time.Now().Add(n.cfg.StreamTimeout))
	}
	if err != nil {
		s.end(streamErr(err))
	}
}

// streamErr maps a socket error to the node package's stream errors,
// keeping the OS error's text: a timeout (TCP_USER_TIMEOUT, connect or
// handshake deadline, unreachable host) is node.ErrStreamTimeout; a
// reset, refusal or truncated frame is node.ErrStreamReset.
func streamErr(err error) error {
	if err == nil {
		return nil
	}
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %v", node.ErrStreamReset, err)
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EHOSTDOWN), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w: %v", node.ErrStreamTimeout, err)
	}
	return fmt.Errorf("host: stream: %w", err)
}
