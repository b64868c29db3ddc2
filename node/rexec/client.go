package rexec

import (
	"bytes"
	"errors"
	"fmt"
	"syscall"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
)

// Errors of the package. An ExitStatus.Err wraps one of them, or an ICS
// error (ics.ErrNodeDown when the server's node went down).
var (
	// ErrWouldBlock says the stdin window is full: wait for StdinReady.
	ErrWouldBlock = errors.New("rexec: stdin window full")
	// ErrStdinClosed says CloseStdin was called already.
	ErrStdinClosed = errors.New("rexec: stdin closed")
	// ErrExited says the session is over.
	ErrExited = errors.New("rexec: session is over")
	// ErrStartFailed says the command could not be started (Code 127:
	// not found, 126: any other reason, as a shell says).
	ErrStartFailed = errors.New("rexec: cannot start command")
	// ErrTooManySessions says the server runs MaxSessions already.
	ErrTooManySessions = errors.New("rexec: too many sessions")
	// ErrServerClosed says the server was closed, killing the command.
	ErrServerClosed = errors.New("rexec: server closed")
	// ErrProtocol says a peer broke the protocol (a malformed message, a
	// window exceeded); the session is killed.
	ErrProtocol = errors.New("rexec: protocol error")
	// ErrCanceled says the session was canceled here.
	ErrCanceled = errors.New("rexec: canceled")
	// ErrBadRequest says a Request cannot be sent as it is.
	ErrBadRequest = errors.New("rexec: bad request")
)

// Request says what to run.
type Request struct {
	// Argv is the command and its arguments; Argv[0] is looked up in the
	// server's PATH. Wrap it as {"sh", "-c", line} for shell syntax.
	Argv []string
	// Env holds NAME=value entries added to the server's environment.
	Env []string
	// Dir is the working directory ("": the server's default).
	Dir string
	// ManualCredit says the Output keeps the bytes it is given and
	// reports them consumed later with Session.Consumed, so that a slow
	// consumer (a terminal, a pipe) slows the remote process down. If
	// false, bytes count as consumed when Stdout or Stderr returns.
	ManualCredit bool
}

// ExitStatus is how a session ended.
type ExitStatus struct {
	// Code is the exit code; 128+n for a death by signal n, as a shell
	// reports it; 127 or 126 if the command could not be started; -1 if
	// the session ended for another reason (Err says which).
	Code int
	// Signal names the signal that killed the process ("SIGINT"), if one
	// did.
	Signal string
	// Err is set if the command did not run to its end on its own: it
	// could not start, the server's node went down (ics.ErrNodeDown), the
	// session was canceled, or the protocol broke.
	Err error
}

func (st ExitStatus) String() string {
	switch {
	case st.Err != nil:
		return fmt.Sprintf("code %d: %v", st.Code, st.Err)
	case st.Signal != "":
		return fmt.Sprintf("killed by %s (code %d)", st.Signal, st.Code)
	}
	return fmt.Sprintf("exit code %d", st.Code)
}

// Output receives what the remote command writes, on the loop, in the
// order it was written per stream. Exit is the last call; it comes after
// every output byte. The byte slices are the callee's to keep.
type Output interface {
	Stdout(p []byte)
	Stderr(p []byte)
	Exit(st ExitStatus)
}

// Client starts commands on other nodes. It and its sessions are used
// on the loop, and so is every Output call.
type Client struct {
	ep       *ics.Endpoint
	nextID   uint64
	sessions map[uint64]*Session
	closed   bool
	// throttled lists, per server, the sessions whose stdin traffic waits
	// for room in the ICS queue, with one WaitForThrottle per server.
	throttled map[node.ID][]*Session
	waiting   map[node.ID]bool
}

// NewClient registers the client side (the output service) on ep. One
// per endpoint. Call it on the loop.
func NewClient(ep *ics.Endpoint) (*Client, error) {
	if ep == nil {
		return nil, errors.New("rexec: NewClient needs an endpoint")
	}
	c := &Client{ep: ep, sessions: map[uint64]*Session{}, throttled: map[node.ID][]*Session{}, waiting: map[node.ID]bool{}}
	if err := ep.Handle(svcOut, c.handleOut); err != nil {
		return nil, fmt.Errorf("rexec: %w", err)
	}
	return c, nil
}

// Close cancels every session (each Output gets Exit with ErrCanceled)
// and refuses new ones.
func (c *Client) Close() {
	c.closed = true
	ids := make([]uint64, 0, len(c.sessions))
	for id := range c.sessions {
		ids = append(ids, id)
	}
	for _, id := range ids {
		if s := c.sessions[id]; s != nil {
			s.Cancel()
		}
	}
}

// Session is one command running on another node.
type Session struct {
	c      *Client
	id     uint64
	target node.ID
	out    Output
	manual bool
	call   *ics.Call
	over   bool
	failed error // why the client ended it, if it did

	eof        bool // CloseStdin was called
	inBytes    int  // stdin bytes sent and not yet written to the process
	inChunks   int
	sigs       int              // signals in flight
	sigPending []syscall.Signal // coalesced beyond SignalsInFlight
	queue      []inMsg          // accepted, waiting for room in the ICS queue
	blocked    bool
	ready      func()

	held      []heldOut // ManualCredit: output chunks not yet consumed
	heldBytes int
	consumed  int // consumed bytes of held[0]
}

type heldOut struct {
	r *ics.Request
	n int
}

// Start runs req on node target; out hears its output and exit. An
// error returned here means nothing was started and out will not be
// called.
func (c *Client) Start(target node.ID, req Request, out Output) (*Session, error) {
	if out == nil {
		return nil, fmt.Errorf("%w: nil Output", ErrBadRequest)
	}
	if c.closed {
		return nil, fmt.Errorf("%w: client closed", ErrBadRequest)
	}
	m := startMsg{ID: c.nextID + 1, Argv: req.Argv, Env: req.Env, Dir: req.Dir}
	b, err := m.encode()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	s := &Session{c: c, id: m.ID, target: target, out: out, manual: req.ManualCredit}
	call, err := c.ep.Call(target, svcStart, b, ics.CallOpts{Channel: ics.ChanNormal}, s.startDone)
	if err != nil {
		return nil, fmt.Errorf("rexec: start on %v: %w", target, err)
	}
	c.nextID++
	s.call = call
	if !s.over {
		c.sessions[s.id] = s
	}
	return s, nil
}

// Target is the node the command runs on.
func (s *Session) Target() node.ID { return s.target }

// Done reports whether Exit has been delivered.
func (s *Session) Done() bool { return s.over }

// Stdin sends as much of p to the command's standard input as the stdin
// window allows (StdinWindow bytes, StdinChunks chunks in flight) and
// returns how much that was. If it was not all of p, the error is
// ErrWouldBlock: keep the rest, stop reading the local input, and call
// StdinReady.
func (s *Session) Stdin(p []byte) (int, error) {
	switch {
	case s.over:
		return 0, ErrExited
	case s.eof:
		return 0, ErrStdinClosed
	}
	n := 0
	for n < len(p) && s.stdinRoom() {
		k := min(len(p)-n, ChunkSize, StdinWindow-s.inBytes)
		if err := s.send(inMsg{Kind: inData, ID: s.id, Data: bytes.Clone(p[n : n+k])}); err != nil {
			return n, err
		}
		s.inBytes += k
		s.inChunks++
		n += k
	}
	if n < len(p) {
		return n, ErrWouldBlock
	}
	return n, nil
}

func (s *Session) stdinRoom() bool {
	return s.inChunks < StdinChunks && s.inBytes < StdinWindow
}

// StdinReady calls f, on the loop, once Stdin can take bytes again, or
// stdin is closed, or the session is over (at once if so already). One
// f may wait at a time.
func (s *Session) StdinReady(f func()) error {
	if s.over || s.eof || s.stdinRoom() {
		f()
		return nil
	}
	if s.ready != nil {
		return errors.New("rexec: StdinReady already waiting")
	}
	s.ready = f
	return nil
}

func (s *Session) wakeReady() {
	if f := s.ready; f != nil && (s.over || s.eof || s.stdinRoom()) {
		s.ready = nil
		f()
	}
}

// CloseStdin sends end-of-file after the stdin bytes sent so far.
func (s *Session) CloseStdin() error {
	switch {
	case s.over:
		return ErrExited
	case s.eof:
		return ErrStdinClosed
	}
	if err := s.send(inMsg{Kind: inEOF, ID: s.id}); err != nil {
		return err
	}
	s.eof = true
	s.wakeReady()
	return nil
}

// Signal sends sig to the remote process group, in order with the stdin
// sent before it (it does not wait for those bytes to be written). Beyond
// SignalsInFlight undelivered signals, a repeated one is coalesced with
// the pending one, as the kernel does.
func (s *Session) Signal(sig syscall.Signal) error {
	if sig <= 0 || sig > maxSignal {
		return fmt.Errorf("%w: signal %d", ErrBadRequest, int(sig))
	}
	if s.over {
		return ErrExited
	}
	if s.sigs >= SignalsInFlight {
		for _, p := range s.sigPending {
			if p == sig {
				return nil
			}
		}
		s.sigPending = append(s.sigPending, sig)
		return nil
	}
	if err := s.send(inMsg{Kind: inSignal, ID: s.id, Signal: sig}); err != nil {
		return err
	}
	s.sigs++
	return nil
}

// Cancel kills the remote process and ends the session now: Exit gets
// ErrCanceled. It does nothing once the session is over.
func (s *Session) Cancel() {
	if s.over {
		return
	}
	s.failed = ErrCanceled
	s.call.Cancel()
}

// Consumed reports n more bytes of the delivered output consumed, in
// delivery order over both streams, for a session started with
// ManualCredit: they become credit for the server. Call it on the loop.
func (s *Session) Consumed(n int) error {
	if n < 0 || n > s.heldBytes-s.consumed {
		return fmt.Errorf("rexec: consumed %d bytes, only %d outstanding", n, s.heldBytes-s.consumed)
	}
	s.consumed += n
	for len(s.held) > 0 && s.consumed >= s.held[0].n {
		h := s.held[0]
		s.held[0] = heldOut{}
		s.held = s.held[1:]
		s.consumed -= h.n
		s.heldBytes -= h.n
		_ = h.r.Reply(nil)
	}
	return nil
}

// send hands a message to ICS, or keeps it, in order, while the channel
// is full.
func (s *Session) send(m inMsg) error {
	if len(s.queue) > 0 {
		s.queue = append(s.queue, m)
		return nil
	}
	err := s.call1(m)
	if errors.Is(err, ics.ErrThrottled) {
		s.queue = append(s.queue, m)
		s.c.block(s)
		return nil
	}
	return err
}

func (s *Session) call1(m inMsg) error {
	_, err := s.c.ep.Call(s.target, svcIn, m.encode(), ics.CallOpts{Channel: ics.ChanNormal}, func(_ []byte, err error) {
		s.inDone(m, err)
	})
	return err
}

func (s *Session) flush() {
	for len(s.queue) > 0 && !s.over {
		err := s.call1(s.queue[0])
		if errors.Is(err, ics.ErrThrottled) {
			s.c.block(s)
			return
		}
		if err != nil {
			// The server is unreachable: the start call reports it.
			s.queue = nil
			return
		}
		s.queue[0] = inMsg{}
		s.queue = s.queue[1:]
	}
}

// inDone is the server's answer to a stdin chunk, EOF or signal.
func (s *Session) inDone(m inMsg, err error) {
	switch m.Kind {
	case inData:
		s.inBytes -= len(m.Data)
		s.inChunks--
	case inSignal:
		s.sigs--
		if len(s.sigPending) > 0 && !s.over {
			next := s.sigPending[0]
			s.sigPending = s.sigPending[1:]
			if s.send(inMsg{Kind: inSignal, ID: s.id, Signal: next}) == nil {
				s.sigs++
			}
		}
	}
	if err != nil && !s.over {
		var re *ics.RemoteError
		if errors.As(err, &re) {
			s.fail(fmt.Errorf("%w: server refused input: %s", ErrProtocol, re.Msg))
			return
		}
		// ErrNodeDown and the like: the start call reports them.
	}
	s.wakeReady()
}

// fail ends the session for a reason found here; the server hears of it
// as a cancellation and kills the process.
func (s *Session) fail(err error) {
	if s.over {
		return
	}
	s.failed = err
	s.call.Cancel()
}

// startDone is the end of the start call: the exit status, or why there
// is none.
func (s *Session) startDone(resp []byte, err error) {
	if s.over {
		return
	}
	st := ExitStatus{Code: -1}
	switch {
	case s.failed != nil:
		st.Err = s.failed
	case err != nil:
		st.Err = fmt.Errorf("rexec: %v: %w", s.target, err)
	default:
		m, derr := decodeExit(resp)
		if derr != nil {
			st.Err = fmt.Errorf("%w: exit status: %v", ErrProtocol, derr)
			break
		}
		st.Code, st.Signal = int(m.Code), m.Signal
		switch m.Kind {
		case kindStart:
			st.Err = fmt.Errorf("%w on %v: %s", ErrStartFailed, s.target, m.Text)
		case kindBusy:
			st.Err = fmt.Errorf("%w: %s", ErrTooManySessions, m.Text)
		case kindClosed:
			st.Err = fmt.Errorf("%w on %v", ErrServerClosed, s.target)
		case kindProtocol:
			st.Err = fmt.Errorf("%w: %v: %s", ErrProtocol, s.target, m.Text)
		}
	}
	s.end(st)
}

func (s *Session) end(st ExitStatus) {
	s.over = true
	delete(s.c.sessions, s.id)
	for _, h := range s.held {
		_ = h.r.Reply(nil)
	}
	s.held, s.heldBytes, s.consumed = nil, 0, 0
	s.queue, s.sigPending = nil, nil
	s.wakeReady()
	s.out.Exit(st)
}

func (c *Client) handleOut(r *ics.Request, payload []byte) {
	m, err := decodeOut(payload)
	if err != nil {
		_ = r.Fail(err)
		return
	}
	s := c.sessions[m.ID]
	switch {
	case s == nil || s.over:
		// Late output of a session that ended here (canceled): dropped.
		_ = r.Reply(nil)
		return
	case s.target != r.Peer():
		_ = r.Fail(fmt.Errorf("%w: session %d is not yours", ErrProtocol, m.ID))
		return
	}
	data := bytes.Clone(m.Data)
	if s.manual {
		if len(s.held) >= OutputChunks || s.heldBytes+len(data) > OutputWindow {
			_ = r.Fail(fmt.Errorf("%w: output window exceeded", ErrProtocol))
			s.fail(fmt.Errorf("%w: %v exceeded the output window", ErrProtocol, s.target))
			return
		}
		s.held = append(s.held, heldOut{r: r, n: len(data)})
		s.heldBytes += len(data)
	}
	if m.Stream == Stdout {
		s.out.Stdout(data)
	} else {
		s.out.Stderr(data)
	}
	if !s.manual {
		_ = r.Reply(nil)
	}
}

// block queues s until the ICS channel to its server has room.
func (c *Client) block(s *Session) {
	if !s.blocked {
		s.blocked = true
		c.throttled[s.target] = append(c.throttled[s.target], s)
	}
	peer := s.target
	if c.waiting[peer] {
		return
	}
	c.waiting[peer] = true
	if err := c.ep.WaitForThrottle(peer, ics.ChanNormal, func() { c.unblock(peer) }); err != nil {
		c.waiting[peer] = false
		list := c.throttled[peer]
		delete(c.throttled, peer)
		for _, s := range list {
			s.blocked = false
			s.fail(fmt.Errorf("rexec: input channel to %v stuck: %w", peer, err))
		}
	}
}

func (c *Client) unblock(peer node.ID) {
	c.waiting[peer] = false
	list := c.throttled[peer]
	delete(c.throttled, peer)
	for _, s := range list {
		s.blocked = false
		s.flush()
	}
}
