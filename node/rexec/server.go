package rexec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
)

// Loop runs f on the node's event-loop goroutine, the only goroutine
// that may touch the ICS endpoint. Process I/O happens on other
// goroutines, which hand their results to the node through it. It may
// block while the loop's inbox is full, and it fails once the node has
// stopped; it must never be called from the loop itself (it could wait
// for itself). On a real host:
//
//	loop := func(f func()) error { return hostNode.Do(func(node.Handler) { f() }) }
type Loop func(f func()) error

// ServerConfig tunes a Server. Zero fields take the defaults in their
// comments.
type ServerConfig struct {
	// Env is the environment commands start with, before the variables
	// of the request are added (nil: the server process's own).
	Env []string
	// Dir is the working directory of commands whose request names none
	// ("": the server process's).
	Dir string
	// MaxSessions bounds the commands running at once (default 64); a
	// start beyond it ends at once with ErrTooManySessions. Keep it
	// below the endpoint's MaxServing, since every session holds its
	// start call open.
	MaxSessions int
	// KillGrace is how long a process killed with SIGTERM (canceled,
	// caller down, server closing) has before SIGKILL (default 2s).
	KillGrace time.Duration
	// WaitDelay is how long an output pipe may stay idle after the
	// process exited before the server stops waiting for it (default
	// 2s): a background child that keeps the pipe open must not keep the
	// session alive for ever, as with exec.Cmd.WaitDelay.
	WaitDelay time.Duration
	// Logger gets session starts and ends at debug level and trouble at
	// warn level (default: discard).
	Logger *slog.Logger
}

// Server runs commands for other nodes. Its methods, like every ICS
// callback it registers, run on the node's loop, except KillAll.
type Server struct {
	ep       *ics.Endpoint
	loop     Loop
	cfg      ServerConfig
	log      *slog.Logger
	sessions map[sessKey]*srvSession
	closed   bool
	stats    ServerStats
	// throttled lists, per client, the sessions whose output waits for
	// room in the ICS queue, with at most one WaitForThrottle per client.
	throttled map[node.ID][]*srvSession
	waiting   map[node.ID]bool

	// live is what KillAll reaches from any goroutine.
	liveMu sync.Mutex
	live   map[*srvSession]struct{}
}

// sessKey names a session: the id is the client's, unique within one
// incarnation of the client node, so a restarted client never reaches a
// session of its predecessor.
type sessKey struct {
	peer node.ID
	inc  uint64
	id   uint64
}

// ServerStats counts what a Server did.
type ServerStats struct {
	Sessions int    // running now
	Started  uint64 // accepted start requests
	Finished uint64 // sessions over
	Rejected uint64 // start requests refused (busy, closed, malformed)
	// Pids are the process ids of the sessions' processes still running,
	// sorted.
	Pids []int
	// OutputPeak is the most output bytes one session has held at once:
	// read from its process and not yet consumed by the client. Flow
	// control keeps it at most OutputWindow.
	OutputPeak int
}

// Serve registers the remote-execution and load services on ep. Call it
// on the loop.
func Serve(ep *ics.Endpoint, loop Loop, cfg ServerConfig) (*Server, error) {
	if ep == nil || loop == nil {
		return nil, errors.New("rexec: Serve needs an endpoint and a loop")
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 64
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 2 * time.Second
	}
	if cfg.WaitDelay <= 0 {
		cfg.WaitDelay = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		ep: ep, loop: loop, cfg: cfg, log: cfg.Logger,
		sessions:  map[sessKey]*srvSession{},
		throttled: map[node.ID][]*srvSession{},
		waiting:   map[node.ID]bool{},
		live:      map[*srvSession]struct{}{},
	}
	if err := ep.Handle(svcStart, s.handleStart); err != nil {
		return nil, fmt.Errorf("rexec: %w", err)
	}
	if err := ep.Handle(svcIn, s.handleIn); err != nil {
		return nil, fmt.Errorf("rexec: %w", err)
	}
	if err := ep.Handle(svcLoad, handleLoad); err != nil {
		return nil, fmt.Errorf("rexec: %w", err)
	}
	return s, nil
}

// Stats returns the counters. Call it on the loop.
func (s *Server) Stats() ServerStats {
	st := s.stats
	st.Sessions = len(s.sessions)
	st.Pids = nil
	for _, ss := range s.sessions {
		if pid := ss.p.runningPid(); pid > 0 {
			st.Pids = append(st.Pids, pid)
		}
		st.OutputPeak = max(st.OutputPeak, ss.cr.peakBytes())
	}
	slices.Sort(st.Pids)
	return st
}

// Close refuses new sessions and kills every running process: SIGTERM
// to its process group, SIGKILL after KillGrace. Each session still
// answers its caller (with ErrServerClosed) once its process is gone, if
// the node lives that long. Call it on the loop.
func (s *Server) Close() {
	if s.closed {
		return
	}
	s.closed = true
	for _, ss := range s.sorted() {
		ss.abort(kindClosed, ErrServerClosed.Error())
	}
}

// KillAll sends SIGKILL to the process group of every running session
// and releases the goroutines serving them. It is safe from any
// goroutine: it is for a node whose loop has stopped without Close (a
// daemon's last act, a test's cleanup), and answers nobody.
func (s *Server) KillAll() {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	for ss := range s.live {
		ss.cr.stop()
		ss.p.kill(syscall.SIGKILL, 0)
	}
}

func (s *Server) sorted() []*srvSession {
	keys := make([]sessKey, 0, len(s.sessions))
	for k := range s.sessions {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b sessKey) int {
		switch {
		case a.peer != b.peer:
			return int(a.peer) - int(b.peer)
		case a.inc != b.inc:
			if a.inc < b.inc {
				return -1
			}
			return 1
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	out := make([]*srvSession, len(keys))
	for i, k := range keys {
		out[i] = s.sessions[k]
	}
	return out
}

// refuse answers a start call that starts nothing.
func (s *Server) refuse(r *ics.Request, kind errKind, text string) {
	s.stats.Rejected++
	m := exitMsg{Kind: kind, Code: -1, Text: text}
	_ = r.Reply(m.encode())
}

func (s *Server) handleStart(r *ics.Request, payload []byte) {
	m, err := decodeStart(payload)
	if err != nil {
		s.log.Warn("rexec: bad start request", "from", r.Peer(), "err", err)
		s.refuse(r, kindProtocol, err.Error())
		return
	}
	key := sessKey{peer: r.Peer(), inc: s.ep.PeerIncarnation(r.Peer()), id: m.ID}
	switch {
	case s.closed:
		s.refuse(r, kindClosed, ErrServerClosed.Error())
		return
	case s.sessions[key] != nil:
		s.refuse(r, kindProtocol, fmt.Sprintf("session %d already in use", m.ID))
		return
	case len(s.sessions) >= s.cfg.MaxSessions:
		s.refuse(r, kindBusy, fmt.Sprintf("%v: %d sessions running (max %d)", s.ep.Self(), len(s.sessions), s.cfg.MaxSessions))
		return
	}
	env := slices.Clone(s.cfg.Env)
	if env == nil {
		env = os.Environ()
	}
	env = append(env, m.Env...)
	dir := m.Dir
	if dir == "" {
		dir = s.cfg.Dir
	}
	ss := &srvSession{
		srv:   s,
		key:   key,
		req:   r,
		argv0: m.Argv[0],
		calls: map[*outCall]struct{}{},
		cr:    newCredit(),
		inQ:   make(chan stdinItem, StdinChunks+1),
		quit:  make(chan struct{}),
		p:     &proc{grace: s.cfg.KillGrace},
	}
	s.sessions[key] = ss
	s.stats.Started++
	s.liveMu.Lock()
	s.live[ss] = struct{}{}
	s.liveMu.Unlock()
	// The start call stays open for the life of the session: its
	// cancellation is how the server learns that the client canceled or
	// went down (ICS cancels the calls it serves for a node declared
	// down), and its reply carries the exit status.
	r.OnCancel(func() { ss.abort(kindNone, "") })
	s.log.Debug("rexec: start", "from", key.peer, "id", key.id, "argv", m.Argv)
	// Looking up the command, forking and waiting are blocking work: a
	// goroutine does them and reports through the loop.
	go ss.run(m.Argv, env, dir, s.cfg.WaitDelay)
}

func (s *Server) handleIn(r *ics.Request, payload []byte) {
	m, err := decodeIn(payload)
	if err != nil {
		_ = r.Fail(err)
		return
	}
	ss := s.sessions[sessKey{peer: r.Peer(), inc: s.ep.PeerIncarnation(r.Peer()), id: m.ID}]
	if ss == nil {
		// Over already (the client learns it from the exit status, which
		// went out before this answer), or never started.
		_ = r.Fail(fmt.Errorf("%w: no session %d", ErrProtocol, m.ID))
		return
	}
	ss.in(r, m)
}

// srvSession is one command run for a client.
type srvSession struct {
	srv   *Server
	key   sessKey
	req   *ics.Request // the start call, answered with the exit status
	argv0 string

	// Loop-only state.
	calls       map[*outCall]struct{} // output calls not yet answered
	pending     []outMsg              // output waiting for room in the ICS queue
	blocked     bool                  // in srv.throttled
	readersDone int                   // output readers finished (2 when all are)
	reaped      bool                  // the process is gone (or never started)
	status      exitMsg
	held        []heldIn // stdin calls not yet written, oldest first
	heldBytes   int
	heldChunks  int
	stdinEOF    bool
	aborted     bool
	abortKind   errKind
	abortText   string
	over        bool

	// Shared with the session's goroutines.
	cr   *credit
	inQ  chan stdinItem // to the stdin writer; never full, see in
	quit chan struct{}  // closed when the process and its readers are gone
	p    *proc
}

// heldIn is a stdin call waiting to be answered until its bytes are
// written: the answer is the client's credit.
type heldIn struct {
	r   *ics.Request
	n   int
	eof bool
}

type stdinItem struct {
	data []byte
	eof  bool
}

// outCall is one output chunk in flight to the client.
type outCall struct {
	call *ics.Call
	n    int
	done bool
}

func (ss *srvSession) in(r *ics.Request, m inMsg) {
	switch m.Kind {
	case inSignal:
		if !ss.p.signal(m.Signal) {
			_ = r.Fail(fmt.Errorf("%w: too many signals pending", ErrProtocol))
			ss.abort(kindProtocol, "too many signals pending")
			return
		}
		_ = r.Reply(nil)
		return
	case inData:
		if ss.stdinEOF {
			_ = r.Fail(fmt.Errorf("%w: stdin after EOF", ErrProtocol))
			ss.abort(kindProtocol, "stdin after EOF")
			return
		}
		if ss.heldChunks >= StdinChunks || ss.heldBytes+len(m.Data) > StdinWindow {
			_ = r.Fail(fmt.Errorf("%w: stdin window exceeded", ErrProtocol))
			ss.abort(kindProtocol, "stdin window exceeded")
			return
		}
	case inEOF:
		if ss.stdinEOF {
			_ = r.Fail(fmt.Errorf("%w: second stdin EOF", ErrProtocol))
			ss.abort(kindProtocol, "second stdin EOF")
			return
		}
		ss.stdinEOF = true
	}
	if ss.aborted {
		_ = r.Reply(nil) // nobody will read it
		return
	}
	it := stdinItem{eof: m.Kind == inEOF}
	if !it.eof {
		// ICS may reuse its buffers once the handler returns.
		it.data = bytes.Clone(m.Data)
	}
	// inQ holds at most StdinChunks data items and one EOF, which the
	// checks above bound, so this never blocks the loop.
	select {
	case ss.inQ <- it:
	default:
		_ = r.Fail(fmt.Errorf("%w: stdin queue full", ErrProtocol))
		ss.abort(kindProtocol, "stdin queue full")
		return
	}
	ss.held = append(ss.held, heldIn{r: r, n: len(it.data), eof: it.eof})
	ss.heldBytes += len(it.data)
	if !it.eof {
		ss.heldChunks++
	}
}

// stdinWritten answers the oldest held stdin call: its bytes reached the
// process (or never will), so the client may send more.
func (ss *srvSession) stdinWritten() {
	if ss.over || len(ss.held) == 0 {
		return
	}
	h := ss.held[0]
	ss.held[0] = heldIn{}
	ss.held = ss.held[1:]
	ss.heldBytes -= h.n
	if !h.eof {
		ss.heldChunks--
	}
	_ = h.r.Reply(nil)
}

// output sends one chunk read from the process, or queues it while the
// ICS channel is full. Chunks leave in the order they were read.
func (ss *srvSession) output(st Stream, data []byte) {
	if ss.over || ss.aborted {
		ss.cr.give(len(data), 1)
		return
	}
	m := outMsg{Stream: st, ID: ss.key.id, Data: data}
	if len(ss.pending) > 0 {
		ss.pending = append(ss.pending, m)
		return
	}
	ss.send(m)
}

// send hands one chunk to ICS; it reports false if the channel was full
// and the chunk now waits in pending.
func (ss *srvSession) send(m outMsg) bool {
	oc := &outCall{n: len(m.Data)}
	c, err := ss.srv.ep.Call(ss.key.peer, svcOut, m.encode(), ics.CallOpts{Channel: ics.ChanBulk}, func(_ []byte, err error) {
		ss.outDone(oc, err)
	})
	switch {
	case errors.Is(err, ics.ErrThrottled):
		ss.pending = append(ss.pending, m)
		ss.srv.block(ss)
		return false
	case err != nil:
		ss.cr.give(len(m.Data), 1)
		ss.srv.log.Warn("rexec: cannot send output", "to", ss.key.peer, "id", ss.key.id, "err", err)
		ss.abort(kindProtocol, "cannot send output: "+err.Error())
		return true
	}
	if !oc.done {
		oc.call = c
		ss.calls[oc] = struct{}{}
	}
	return true
}

// flush sends what waited for room in the ICS queue.
func (ss *srvSession) flush() {
	for len(ss.pending) > 0 && !ss.aborted {
		m := ss.pending[0]
		ss.pending[0] = outMsg{}
		ss.pending = ss.pending[1:]
		if !ss.send(m) {
			// It went back into pending at the end: put it first again.
			last := len(ss.pending) - 1
			copy(ss.pending[1:], ss.pending[:last])
			ss.pending[0] = m
			return
		}
	}
	ss.maybeFinish()
}

// outDone is the client's answer to an output chunk: the chunk is
// consumed, and its bytes are credit for the readers again.
func (ss *srvSession) outDone(oc *outCall, err error) {
	oc.done = true
	delete(ss.calls, oc)
	ss.cr.give(oc.n, 1)
	if err != nil && !ss.aborted {
		var re *ics.RemoteError
		if errors.As(err, &re) {
			ss.srv.log.Warn("rexec: client refused output", "from", ss.key.peer, "id", ss.key.id, "err", err)
			ss.abort(kindProtocol, "client refused output: "+re.Msg)
		} else {
			ss.abort(kindNone, "")
		}
	}
	ss.maybeFinish()
}

// abort ends the session early: output is dropped from now on, and the
// process group is killed. kind says what the exit status reports, if
// the caller is still there to hear it.
func (ss *srvSession) abort(kind errKind, text string) {
	if ss.aborted || ss.over {
		return
	}
	ss.aborted, ss.abortKind, ss.abortText = true, kind, text
	ss.srv.log.Debug("rexec: abort", "from", ss.key.peer, "id", ss.key.id, "why", text)
	calls := make([]*outCall, 0, len(ss.calls))
	for oc := range ss.calls {
		calls = append(calls, oc)
	}
	for _, oc := range calls {
		oc.call.Cancel() // runs outDone
	}
	for _, m := range ss.pending {
		ss.cr.give(len(m.Data), 1)
	}
	ss.pending = nil
	ss.cr.stop()
	ss.p.kill(syscall.SIGTERM, ss.p.grace)
	ss.maybeFinish()
}

func (ss *srvSession) startFailed(code int32, text string) {
	ss.reaped, ss.readersDone = true, 2
	ss.status = exitMsg{Kind: kindStart, Code: code, Text: text}
	ss.maybeFinish()
}

func (ss *srvSession) exited(st exitMsg) {
	ss.reaped = true
	ss.status = st
	ss.maybeFinish()
}

func (ss *srvSession) readerDone() {
	ss.readersDone++
	ss.maybeFinish()
}

// maybeFinish answers the start call once the process is gone, all its
// output has been read, and the client has consumed every chunk: the
// exit status travels on ICS's reply channel, which does not keep order
// with the output chunks, so waiting for their answers is what makes it
// arrive after the last output byte.
func (ss *srvSession) maybeFinish() {
	if ss.over || !ss.reaped || ss.readersDone < 2 || len(ss.calls) > 0 || len(ss.pending) > 0 {
		return
	}
	ss.over = true
	srv := ss.srv
	delete(srv.sessions, ss.key)
	srv.liveMu.Lock()
	delete(srv.live, ss)
	srv.liveMu.Unlock()
	srv.stats.Finished++
	srv.stats.OutputPeak = max(srv.stats.OutputPeak, ss.cr.peakBytes())
	close(ss.inQ)
	ss.p.closeStdin()
	for _, h := range ss.held {
		_ = h.r.Reply(nil)
	}
	ss.held = nil
	st := ss.status
	if ss.aborted && ss.abortKind != kindNone {
		st.Kind, st.Text = ss.abortKind, ss.abortText
	}
	st.Text = cleanText(st.Text)
	if st.Kind != kindNone && st.Text == "" {
		st.Text = "failed"
	}
	// A canceled call drops the answer; it is given all the same, since
	// answering is what ends the call's hold on the service and lets
	// NodedownWait see the cleanup done.
	_ = ss.req.Reply(st.encode())
	srv.log.Debug("rexec: end", "from", ss.key.peer, "id", ss.key.id, "code", st.Code, "signal", st.Signal, "err", st.Text)
}

func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > maxErrText {
		s = strings.ToValidUTF8(s[:maxErrText], "")
	}
	return s
}

// block queues ss until the ICS channel to its client has room.
func (s *Server) block(ss *srvSession) {
	if !ss.blocked {
		ss.blocked = true
		s.throttled[ss.key.peer] = append(s.throttled[ss.key.peer], ss)
	}
	peer := ss.key.peer
	if s.waiting[peer] {
		return
	}
	s.waiting[peer] = true
	if err := s.ep.WaitForThrottle(peer, ics.ChanBulk, func() { s.unblock(peer) }); err != nil {
		// Too many waiters on the channel: nothing will wake these
		// sessions, so they end rather than hang.
		s.waiting[peer] = false
		list := s.throttled[peer]
		delete(s.throttled, peer)
		for _, ss := range list {
			ss.blocked = false
			ss.abort(kindProtocol, "output channel stuck: "+err.Error())
		}
	}
}

func (s *Server) unblock(peer node.ID) {
	s.waiting[peer] = false
	list := s.throttled[peer]
	delete(s.throttled, peer)
	for _, ss := range list {
		ss.blocked = false
		if !ss.over {
			ss.flush()
		}
	}
}

// run starts the process and waits for it, on its own goroutine.
func (ss *srvSession) run(argv, env []string, dir string, waitDelay time.Duration) {
	post := ss.srv.loop
	p := ss.p
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = dir
	// A process group of its own, so that a signal reaches the children
	// too (a pipeline, a shell script), as the terminal's would.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The child's chdir failing shows only as the exec failing with
	// ENOENT, which would read as "command not found": look first.
	var err error
	if dir != "" {
		if fi, serr := os.Stat(dir); serr != nil {
			err = fmt.Errorf("working directory: %w", serr)
		} else if !fi.IsDir() {
			err = fmt.Errorf("working directory %s: not a directory", dir)
		}
	}
	badDir := err != nil
	// Three pipes: stdin, stdout, stderr, each as (read end, write end).
	var files []*os.File
	for i := 0; i < 3 && err == nil; i++ {
		r, w, perr := os.Pipe()
		if perr != nil {
			err = perr
			break
		}
		files = append(files, r, w)
	}
	if err == nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = files[0], files[3], files[5]
		err = cmd.Start()
		// The child has its copies; ours would keep the pipes open.
		files[0].Close()
		files[3].Close()
		files[5].Close()
	}
	if err != nil {
		for _, f := range files {
			f.Close()
		}
		// As a shell says: 127 for a command not found, 126 for one that
		// cannot run (not executable, a bad directory).
		code := int32(126)
		if !badDir && (errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist)) {
			code = 127
		}
		p.mu.Lock()
		p.gone = true
		p.mu.Unlock()
		close(ss.quit)
		_ = post(func() { ss.startFailed(code, err.Error()) })
		return
	}
	inW, outR, errR := files[1], files[2], files[4]
	p.started(cmd.Process.Pid, inW, outR, errR)
	var wg sync.WaitGroup
	wg.Add(2)
	go ss.readOut(Stdout, outR, waitDelay, &wg)
	go ss.readOut(Stderr, errR, waitDelay, &wg)
	go ss.writeIn(inW)
	werr := cmd.Wait()
	st := exitMsg{Code: -1}
	if ps := cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st.Code, st.Signal = 128+int32(ws.Signal()), signalName(ws.Signal())
		} else {
			st.Code = int32(ps.ExitCode())
		}
	} else {
		st.Kind, st.Text = kindProtocol, "wait: "+werr.Error()
	}
	p.reaped(waitDelay)
	_ = post(func() { ss.exited(st) })
	wg.Wait()
	close(ss.quit)
	p.closeStdin()
}

// readOut moves one output pipe to the client, a chunk at a time, and
// only as far as the session's credit allows: a process that writes
// faster than the client consumes blocks in write, as it would on a
// slow terminal, instead of filling the server's memory.
func (ss *srvSession) readOut(st Stream, f *os.File, waitDelay time.Duration, wg *sync.WaitGroup) {
	defer wg.Done()
	defer f.Close()
	for {
		n, discard := ss.cr.take(ChunkSize)
		if ss.p.isGone() {
			// The process exited: whatever still holds the pipe (a
			// background child) gets WaitDelay of silence at most.
			_ = f.SetReadDeadline(time.Now().Add(waitDelay))
		}
		buf := make([]byte, n)
		m, err := f.Read(buf)
		switch {
		case discard:
		case m == 0:
			ss.cr.give(n, 1)
		default:
			ss.cr.give(n-m, 0)
			data := buf[:m]
			if ss.srv.loop(func() { ss.output(st, data) }) != nil {
				// The node is gone: nobody will consume or answer.
				ss.cr.stop()
				ss.p.kill(syscall.SIGKILL, 0)
			}
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, os.ErrClosed) && err != io.EOF {
				ss.srv.log.Warn("rexec: read output", "id", ss.key.id, "err", err)
			}
			break
		}
	}
	_ = ss.srv.loop(ss.readerDone)
}

// writeIn writes stdin chunks to the process, in order, and reports each
// one written so that its call can be answered.
func (ss *srvSession) writeIn(w *os.File) {
	broken := false
	for {
		select {
		case it, ok := <-ss.inQ:
			if !ok {
				return
			}
			if it.eof {
				ss.p.closeStdin()
			} else if !broken {
				if _, err := w.Write(it.data); err != nil {
					// The process closed its stdin or exited: the rest is
					// dropped, and still answered, as a pipe to a dead
					// reader would.
					broken = true
				}
			}
			if ss.srv.loop(ss.stdinWritten) != nil {
				return
			}
		case <-ss.quit:
			return
		}
	}
}

// proc is the process of a session, shared by the loop and the session's
// goroutines.
type proc struct {
	mu        sync.Mutex
	grace     time.Duration
	pid       int
	running   bool // started and not yet reaped
	gone      bool // reaped, or never started
	killed    bool // a kill was asked before the start
	sigs      []syscall.Signal
	stdin     *os.File
	out       [2]*os.File
	killTimer *time.Timer
}

func (p *proc) started(pid int, stdin, out, errOut *os.File) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pid, p.running = pid, true
	p.stdin, p.out = stdin, [2]*os.File{out, errOut}
	for _, s := range p.sigs {
		_ = syscall.Kill(-pid, s)
	}
	p.sigs = nil
	if p.killed {
		p.killLocked(syscall.SIGTERM, p.grace)
	}
}

// reaped marks the process gone. Its pid may now be reused, so nothing
// is signalled after this; readers still blocked on the pipes get
// waitDelay more.
func (p *proc) reaped(waitDelay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running, p.gone = false, true
	if p.killTimer != nil {
		p.killTimer.Stop()
		p.killTimer = nil
	}
	d := time.Now().Add(waitDelay)
	for _, f := range p.out {
		_ = f.SetReadDeadline(d)
	}
}

func (p *proc) isGone() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone
}

func (p *proc) runningPid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		return p.pid
	}
	return 0
}

// signal sends sig to the process group, or keeps it for the start. It
// reports false if too many wait for the start (a misbehaving client:
// an honest one has at most SignalsInFlight outstanding).
func (p *proc) signal(sig syscall.Signal) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.running:
		_ = syscall.Kill(-p.pid, sig)
	case !p.gone:
		if len(p.sigs) >= SignalsInFlight {
			return false
		}
		p.sigs = append(p.sigs, sig)
	}
	return true
}

// kill sends sig to the process group now and, if grace > 0, SIGKILL
// after grace unless the process is gone by then.
func (p *proc) kill(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		if !p.gone {
			p.killed = true
		}
		return
	}
	p.killLocked(sig, grace)
}

func (p *proc) killLocked(sig syscall.Signal, grace time.Duration) {
	_ = syscall.Kill(-p.pid, sig)
	if grace <= 0 || sig == syscall.SIGKILL || p.killTimer != nil {
		return
	}
	p.killTimer = time.AfterFunc(grace, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.killTimer = nil
		if p.running {
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		}
	})
}

func (p *proc) closeStdin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin != nil {
		p.stdin.Close()
		p.stdin = nil
	}
}

// credit is the output window of one session, shared by its two output
// readers and the loop: a reader takes credit before it reads, and the
// client's answer to a chunk gives it back.
type credit struct {
	mu      sync.Mutex
	cond    sync.Cond
	bytes   int // bytes that may still be read
	chunks  int // chunks that may still be read
	discard bool
	peak    int
}

func newCredit() *credit {
	c := &credit{bytes: OutputWindow, chunks: OutputChunks}
	c.cond.L = &c.mu
	return c
}

// take waits for credit and reserves up to max bytes and one chunk. In
// discard mode (the session is aborted) it reserves nothing and says so.
func (c *credit) take(limit int) (n int, discard bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.discard && (c.bytes == 0 || c.chunks == 0) {
		c.cond.Wait()
	}
	if c.discard {
		return limit, true
	}
	n = min(limit, c.bytes)
	c.bytes -= n
	c.chunks--
	c.peak = max(c.peak, OutputWindow-c.bytes)
	return n, false
}

func (c *credit) give(bytes, chunks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bytes += bytes
	c.chunks += chunks
	if c.bytes > OutputWindow || c.chunks > OutputChunks {
		panic(fmt.Sprintf("rexec: output credit %d bytes, %d chunks over the window", c.bytes, c.chunks))
	}
	c.cond.Broadcast()
}

func (c *credit) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.discard = true
	c.cond.Broadcast()
}

func (c *credit) peakBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peak
}
