package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/libcluster"
	"github.com/clusterinfra/ci/node/rexec"
	"github.com/clusterinfra/ci/node/stack"
)

// Remote execution for onnode. The tool talks to its local daemon over
// the control socket (POST /v1/exec, then the connection is upgraded to
// the frames of libcluster.ExecFrame*), and the daemon runs the command
// on the target node over ICS with package rexec: the local daemon is
// the rexec client, the target's daemon the server.

// execState is the current incarnation's rexec client and server; it is
// touched on the loop only, except srv.KillAll at shutdown.
type execState struct {
	mu  sync.Mutex // guards srv for Close
	srv *rexec.Server
	cli *rexec.Client
}

// serveExec registers remote execution on a new incarnation (on the loop).
func serveExec(d *Daemon, n *stack.Node) error {
	loop := func(f func()) error { return d.host.Do(func(node.Handler) { f() }) }
	srv, err := rexec.Serve(n.ICS, loop, rexec.ServerConfig{Logger: d.log})
	if err != nil {
		return err
	}
	cli, err := rexec.NewClient(n.ICS)
	if err != nil {
		return err
	}
	d.exec.mu.Lock()
	old := d.exec.srv
	d.exec.srv, d.exec.cli = srv, cli
	d.exec.mu.Unlock()
	if old != nil {
		old.KillAll() // a previous incarnation's commands died with it
	}
	return nil
}

// killExec ends every command this node runs for others; at shutdown.
func (d *Daemon) killExec() {
	d.exec.mu.Lock()
	srv := d.exec.srv
	d.exec.mu.Unlock()
	if srv != nil {
		srv.KillAll()
	}
}

// loadOf is node id's load per CPU, asked of the node over ICS.
func (d *Daemon) loadOf(ctx context.Context, id node.ID) (float64, error) {
	type res struct {
		l   float64
		err error
	}
	ch := make(chan res, 1)
	var self bool
	if err := d.onLoop(ctx, func(n *stack.Node) {
		if id == d.opts.Self {
			self = true
			return
		}
		if err := rexec.Load(n.ICS, id, 2*time.Second, func(l float64, err error) { ch <- res{l, err} }); err != nil {
			ch <- res{0, err}
		}
	}); err != nil {
		return 0, err
	}
	if self {
		return rexec.LocalLoad()
	}
	select {
	case r := <-ch:
		return r.l, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// execOut carries a session's output from the loop to the connection.
// It needs no bound of its own: rexec sends no more than its credit
// window before the writer reports bytes consumed.
type execOut struct {
	mu   sync.Mutex
	q    []outFrame
	wake chan struct{}
}

type outFrame struct {
	kind byte
	data []byte
}

func (o *execOut) push(f outFrame) {
	o.mu.Lock()
	o.q = append(o.q, f)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *execOut) Stdout(p []byte) { o.push(outFrame{libcluster.ExecStdout, p}) }
func (o *execOut) Stderr(p []byte) { o.push(outFrame{libcluster.ExecStderr, p}) }
func (o *execOut) Exit(st rexec.ExitStatus) {
	e := libcluster.ExecExit{Code: st.Code, Signal: st.Signal}
	if st.Err != nil {
		e.Error = st.Err.Error()
	}
	b, _ := json.Marshal(e)
	o.push(outFrame{libcluster.ExecExitFrame, b})
}

// hExec runs a command on another node for onnode.
func (d *Daemon) hExec(w http.ResponseWriter, r *http.Request) {
	var req libcluster.ExecRequest
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	if len(req.Argv) == 0 {
		writeErr(w, http.StatusBadRequest, "no command")
		return
	}
	target := node.ID(req.Node)
	if !target.Valid() {
		writeErr(w, http.StatusBadRequest, "node %d: need a number 1-%d", req.Node, node.MaxID)
		return
	}
	if target == d.opts.Self {
		writeErr(w, http.StatusBadRequest, "node %d is this node: run the command here", target)
		return
	}
	if r.Header.Get("Upgrade") != libcluster.ExecProtocol {
		writeErr(w, http.StatusBadRequest, "exec needs Upgrade: %s", libcluster.ExecProtocol)
		return
	}
	out := &execOut{wake: make(chan struct{}, 1)}
	var sess *rexec.Session
	var serr error
	if err := d.onLoop(r.Context(), func(n *stack.Node) {
		if !n.CLMS.NodeAvail(target) {
			serr = fmt.Errorf("node %d is not a member of the cluster (%s)", target, n.CLMS.State(target))
			return
		}
		d.exec.mu.Lock()
		cli := d.exec.cli
		d.exec.mu.Unlock()
		if cli == nil {
			serr = errors.New("remote execution is not running")
			return
		}
		sess, serr = cli.Start(target, rexec.Request{Argv: req.Argv, Env: req.Env, Dir: req.Dir, ManualCredit: true}, out)
	}); err != nil {
		d.loopErr(w, err)
		return
	}
	if serr != nil {
		writeErr(w, http.StatusConflict, "%v", serr)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeErr(w, http.StatusInternalServerError, "connection cannot be upgraded")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		_ = d.onLoop(context.Background(), func(*stack.Node) { sess.Cancel() })
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\nX-Clusterd-Node: %d\r\n\r\n", libcluster.ExecProtocol, target)
	if err := brw.Flush(); err != nil {
		_ = d.onLoop(context.Background(), func(*stack.Node) { sess.Cancel() })
		return
	}
	d.runExec(conn, brw.Reader, sess, out)
}

// runExec pumps one session: frames from onnode become stdin and
// signals; output goes back as frames, and is reported consumed once
// written, so a slow reader slows the remote command down.
func (d *Daemon) runExec(conn net.Conn, rd *bufio.Reader, sess *rexec.Session, out *execOut) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cancelSess := func() { _ = d.onLoop(context.Background(), func(*stack.Node) { sess.Cancel() }) }
	go func() {
		// Reader: onnode's stdin and signals.
		for {
			kind, data, err := libcluster.ReadExecFrame(rd)
			if err != nil {
				// onnode went away (or broke the protocol): its command
				// must not outlive it.
				if ctx.Err() == nil {
					cancelSess()
				}
				return
			}
			switch kind {
			case libcluster.ExecStdin:
				if d.stdin(ctx, sess, data) != nil {
					return
				}
			case libcluster.ExecStdinEOF:
				_ = d.onLoop(ctx, func(*stack.Node) { _ = sess.CloseStdin() })
			case libcluster.ExecSignal:
				if len(data) == 1 {
					_ = d.onLoop(ctx, func(*stack.Node) { _ = sess.Signal(syscall.Signal(data[0])) })
				}
			}
		}
	}()
	select {
	case <-d.stop:
		cancelSess()
	default:
	}
	for {
		out.mu.Lock()
		q := out.q
		out.q = nil
		out.mu.Unlock()
		for _, f := range q {
			if err := libcluster.WriteExecFrame(conn, f.kind, f.data); err != nil {
				cancelSess()
				return
			}
			if f.kind == libcluster.ExecExitFrame {
				return
			}
			n := len(f.data)
			_ = d.onLoop(ctx, func(*stack.Node) { _ = sess.Consumed(n) })
		}
		select {
		case <-out.wake:
		case <-d.stop:
			cancelSess()
			return
		}
	}
}

// stdin hands data to the session, waiting while its window is full.
func (d *Daemon) stdin(ctx context.Context, sess *rexec.Session, data []byte) error {
	for len(data) > 0 {
		ready := make(chan struct{}, 1)
		var n int
		var err error
		if lerr := d.onLoop(ctx, func(*stack.Node) {
			n, err = sess.Stdin(data)
			if errors.Is(err, rexec.ErrWouldBlock) {
				if werr := sess.StdinReady(func() { ready <- struct{}{} }); werr != nil {
					err = werr
				}
			} else {
				ready <- struct{}{}
			}
		}); lerr != nil {
			return lerr
		}
		data = data[n:]
		if err != nil && !errors.Is(err, rexec.ErrWouldBlock) {
			return err
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
