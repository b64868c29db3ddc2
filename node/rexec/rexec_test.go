package rexec_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/host"
	"github.com/clusterinfra/ci/node/rexec"
)

var testKey = []byte("0123456789abcdef0123456789abcdef-rexec-test-key")

// testNode is a node whose only protocol is ICS.
type testNode struct {
	kr *wire.Keyring
	ep *ics.Endpoint
}

func (n *testNode) Start(env node.Env) {
	ep, err := ics.New(env, ics.Config{Keyring: n.kr})
	if err != nil {
		panic(err)
	}
	n.ep = ep
}
func (n *testNode) Datagram(from node.ID, path int, p []byte) { n.ep.Datagram(from, path, p) }
func (n *testNode) StreamOpened(s node.Stream)                { n.ep.StreamOpened(s) }
func (n *testNode) StreamMessage(s node.Stream, m []byte)     { n.ep.StreamMessage(s, m) }
func (n *testNode) StreamWritable(s node.Stream)              { n.ep.StreamWritable(s) }
func (n *testNode) StreamClosed(s node.Stream, err error)     { n.ep.StreamClosed(s, err) }

// cluster is two real host nodes on loopback TCP, each with a rexec
// server and client. Node 1 is the client in every test, node 2 the
// server.
type cluster struct {
	t     *testing.T
	hosts map[node.ID]*host.Node
	nodes map[node.ID]*testNode
	srv   map[node.ID]*rexec.Server
	cli   map[node.ID]*rexec.Client
	mu    sync.Mutex
	down  map[node.ID]bool
	pids  []int // every process seen, checked dead at the end
}

func newCluster(t *testing.T, cfg rexec.ServerConfig) *cluster {
	t.Helper()
	kr, err := wire.NewKeyring(1, testKey)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, hosts: map[node.ID]*host.Node{}, nodes: map[node.ID]*testNode{},
		srv: map[node.ID]*rexec.Server{}, cli: map[node.ID]*rexec.Client{}, down: map[node.ID]bool{}}
	for _, id := range []node.ID{1, 2} {
		tn := &testNode{kr: kr}
		h, err := host.Start(host.Config{
			Self:     id,
			Listen:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
			StateDir: t.TempDir(),
		}, func(node.ID, node.Boot) node.Handler { return tn })
		if err != nil {
			t.Fatal(err)
		}
		c.hosts[id], c.nodes[id] = h, tn
	}
	t.Cleanup(c.cleanup)
	if err := c.hosts[1].SetPeers(map[node.ID][]netip.AddrPort{2: c.hosts[2].Addrs()}); err != nil {
		t.Fatal(err)
	}
	if err := c.hosts[2].SetPeers(map[node.ID][]netip.AddrPort{1: c.hosts[1].Addrs()}); err != nil {
		t.Fatal(err)
	}
	for id, h := range c.hosts {
		loop := func(f func()) error { return h.Do(func(node.Handler) { f() }) }
		c.do(id, func(n *testNode) {
			s, err := rexec.Serve(n.ep, loop, cfg)
			if err != nil {
				t.Fatal(err)
			}
			cl, err := rexec.NewClient(n.ep)
			if err != nil {
				t.Fatal(err)
			}
			c.srv[id], c.cli[id] = s, cl
		})
	}
	return c
}

// cleanup closes what is still open and checks that no process the
// test saw outlives it.
func (c *cluster) cleanup() {
	for id, h := range c.hosts {
		if !c.isDown(id) {
			c.tryDo(id, func(*testNode) { c.srv[id].Close() })
		}
		_ = h.Close()
		c.srv[id].KillAll()
	}
	c.mu.Lock()
	pids := c.pids
	c.mu.Unlock()
	for _, pid := range pids {
		if !waitGone(pid, 10*time.Second) {
			c.t.Errorf("process %d outlived the test", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (c *cluster) isDown(id node.ID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down[id]
}

// closeNode stops node id as a crash would, with its server's processes
// left to KillAll at cleanup.
func (c *cluster) closeNode(id node.ID) {
	c.mu.Lock()
	c.down[id] = true
	c.mu.Unlock()
	if err := c.hosts[id].Close(); err != nil {
		c.t.Fatal(err)
	}
}

// tryDo runs f on node id's loop and waits for it; it reports false if
// the node is closed.
func (c *cluster) tryDo(id node.ID, f func(n *testNode)) bool {
	done := make(chan struct{})
	if err := c.hosts[id].Do(func(node.Handler) { defer close(done); f(c.nodes[id]) }); err != nil {
		return false
	}
	select {
	case <-done:
		return true
	case <-time.After(30 * time.Second):
		c.t.Fatalf("do on n%d did not run within 30s", id)
		return false
	}
}

func (c *cluster) do(id node.ID, f func(n *testNode)) {
	c.t.Helper()
	if !c.tryDo(id, f) {
		c.t.Fatalf("n%d is closed", id)
	}
}

// start runs req on node 2 from node 1.
func (c *cluster) start(req rexec.Request, out rexec.Output) *rexec.Session {
	c.t.Helper()
	var s *rexec.Session
	var err error
	c.do(1, func(*testNode) { s, err = c.cli[1].Start(2, req, out) })
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

// pid waits for the server on node 2 to run a process and returns its
// pid (the newest, if several).
func (c *cluster) pid() int {
	c.t.Helper()
	end := time.Now().Add(10 * time.Second)
	for time.Now().Before(end) {
		var pids []int
		c.do(2, func(*testNode) { pids = c.srv[2].Stats().Pids })
		if len(pids) > 0 {
			c.mu.Lock()
			c.pids = append(c.pids, pids...)
			c.mu.Unlock()
			return pids[len(pids)-1]
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatal("no process started on n2 within 10s")
	return 0
}

func (c *cluster) stats(id node.ID) rexec.ServerStats {
	var st rexec.ServerStats
	c.do(id, func(*testNode) { st = c.srv[id].Stats() })
	return st
}

func waitGone(pid int, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// rec is an Output that records everything, for the test goroutine.
type rec struct {
	mu        sync.Mutex
	stdout    bytes.Buffer
	stderr    bytes.Buffer
	st        *rexec.ExitStatus
	afterExit int // calls after Exit: must stay 0
	exited    chan struct{}
	onStdout  func(p []byte) // optional, on the loop
}

func newRec() *rec { return &rec{exited: make(chan struct{})} }

func (r *rec) Stdout(p []byte) {
	r.mu.Lock()
	if r.st != nil {
		r.afterExit++
	}
	r.stdout.Write(p)
	f := r.onStdout
	r.mu.Unlock()
	if f != nil {
		f(p)
	}
}

func (r *rec) Stderr(p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.st != nil {
		r.afterExit++
	}
	r.stderr.Write(p)
}

func (r *rec) Exit(st rexec.ExitStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.st != nil {
		r.afterExit++
		return
	}
	r.st = &st
	close(r.exited)
}

func (r *rec) wait(t *testing.T, d time.Duration) rexec.ExitStatus {
	t.Helper()
	select {
	case <-r.exited:
	case <-time.After(d):
		t.Fatalf("no exit within %v; stdout so far %d bytes", d, r.outLen())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.afterExit != 0 {
		t.Errorf("%d Output calls after Exit", r.afterExit)
	}
	return *r.st
}

func (r *rec) outLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stdout.Len()
}

func (r *rec) out() (string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stdout.String(), r.stderr.String()
}

func TestEcho(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	r := newRec()
	c.start(rexec.Request{Argv: []string{"echo", "hello", "world"}}, r)
	st := r.wait(t, 20*time.Second)
	if st.Err != nil || st.Code != 0 || st.Signal != "" {
		t.Fatalf("status %v, want exit code 0", st)
	}
	if out, errOut := r.out(); out != "hello world\n" || errOut != "" {
		t.Fatalf("stdout %q stderr %q", out, errOut)
	}
}

func TestStreamsAndCode(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	r := newRec()
	c.start(rexec.Request{
		Argv: []string{"sh", "-c", `echo out; echo err >&2; echo "$FOO" in "$(pwd)"; exit 3`},
		Env:  []string{"FOO=bar"},
		Dir:  "/",
	}, r)
	st := r.wait(t, 20*time.Second)
	if st.Err != nil || st.Code != 3 {
		t.Fatalf("status %v, want exit code 3", st)
	}
	if out, errOut := r.out(); out != "out\nbar in /\n" || errOut != "err\n" {
		t.Fatalf("stdout %q stderr %q", out, errOut)
	}
}

// feed sends data to s's stdin on the loop, honouring the window, then
// closes stdin.
func feed(t *testing.T, s *rexec.Session, data []byte) func() {
	off := 0
	var step func()
	step = func() {
		for off < len(data) {
			n, err := s.Stdin(data[off:])
			off += n
			if errors.Is(err, rexec.ErrWouldBlock) {
				if err := s.StdinReady(step); err != nil {
					t.Error(err)
				}
				return
			}
			if err != nil {
				t.Errorf("stdin: %v", err)
				return
			}
		}
		if err := s.CloseStdin(); err != nil {
			t.Errorf("close stdin: %v", err)
		}
	}
	return step
}

func TestStdinPassthrough(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	data := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	r := newRec()
	s := c.start(rexec.Request{Argv: []string{"cat"}}, r)
	c.do(1, func(*testNode) { feed(t, s, data)() })
	st := r.wait(t, 30*time.Second)
	if st.Err != nil || st.Code != 0 {
		t.Fatalf("status %v", st)
	}
	if out, _ := r.out(); out != string(data) {
		t.Fatalf("cat gave %d bytes back, want the %d sent, byte for byte", len(out), len(data))
	}
}

func TestLargeOutput(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	const size = 20 << 20
	const line = "0123456789abcde\n"
	r := newRec()
	c.start(rexec.Request{Argv: []string{"sh", "-c", "yes 0123456789abcde | head -c 20971520"}}, r)
	st := r.wait(t, 60*time.Second)
	if st.Err != nil || st.Code != 0 {
		t.Fatalf("status %v", st)
	}
	out, _ := r.out()
	if len(out) != size || out != strings.Repeat(line, size/len(line)) {
		t.Fatalf("got %d bytes of output, want %d of %q repeated", len(out), size, line)
	}
	if peak := c.stats(2).OutputPeak; peak <= 0 || peak > rexec.OutputWindow {
		t.Fatalf("server held up to %d output bytes, want 1..%d", peak, rexec.OutputWindow)
	}
}

// A consumer that stops consuming stops the remote process: the server
// holds no more than the window, and the process blocks in write.
func TestOutputFlowControl(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	r := newRec()
	s := c.start(rexec.Request{Argv: []string{"yes"}, ManualCredit: true}, r)
	pid := c.pid()
	time.Sleep(300 * time.Millisecond)
	got := r.outLen()
	if got == 0 || got > rexec.OutputWindow {
		t.Fatalf("client got %d bytes without consuming any, want 1..%d", got, rexec.OutputWindow)
	}
	time.Sleep(200 * time.Millisecond)
	if again := r.outLen(); again != got {
		t.Fatalf("output grew from %d to %d bytes with no credit given", got, again)
	}
	if peak := c.stats(2).OutputPeak; peak > rexec.OutputWindow {
		t.Fatalf("server held %d output bytes, over the window %d", peak, rexec.OutputWindow)
	}
	// Consuming lets more through.
	c.do(1, func(*testNode) {
		if err := s.Consumed(got); err != nil {
			t.Error(err)
		}
	})
	end := time.Now().Add(10 * time.Second)
	for r.outLen() <= got && time.Now().Before(end) {
		time.Sleep(5 * time.Millisecond)
	}
	if r.outLen() <= got {
		t.Fatal("no more output after consuming")
	}
	c.do(1, func(*testNode) { s.Cancel() })
	st := r.wait(t, 10*time.Second)
	if !errors.Is(st.Err, rexec.ErrCanceled) {
		t.Fatalf("status %v, want ErrCanceled", st)
	}
	if !waitGone(pid, 10*time.Second) {
		t.Fatalf("yes (pid %d) still runs after Cancel", pid)
	}
	end = time.Now().Add(10 * time.Second)
	for time.Now().Before(end) && c.stats(2).Sessions > 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if n := c.stats(2).Sessions; n != 0 {
		t.Fatalf("%d sessions left on the server after cancel", n)
	}
}

func TestSigint(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	r := newRec()
	s := c.start(rexec.Request{Argv: []string{"sleep", "100"}}, r)
	c.pid()
	c.do(1, func(*testNode) {
		if err := s.Signal(syscall.SIGINT); err != nil {
			t.Error(err)
		}
	})
	st := r.wait(t, 10*time.Second)
	if st.Err != nil || st.Signal != "SIGINT" || st.Code != 130 {
		t.Fatalf("status %v, want killed by SIGINT, code 130", st)
	}
}

func TestSignalTrapped(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	r := newRec()
	ready := make(chan struct{})
	var once sync.Once
	r.onStdout = func([]byte) { once.Do(func() { close(ready) }) }
	s := c.start(rexec.Request{Argv: []string{"sh", "-c", `trap 'echo trapped; exit 7' INT; echo ready; while :; do sleep 0.05; done`}}, r)
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the script did not start")
	}
	c.do(1, func(*testNode) { _ = s.Signal(syscall.SIGINT) })
	st := r.wait(t, 10*time.Second)
	if out, _ := r.out(); st.Err != nil || st.Code != 7 || out != "ready\ntrapped\n" {
		t.Fatalf("status %v, stdout %q; want code 7 after the trap", st, out)
	}
}

func TestNoSuchCommand(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	r := newRec()
	c.start(rexec.Request{Argv: []string{"no-such-command-rexec"}}, r)
	st := r.wait(t, 10*time.Second)
	if st.Code != 127 || !errors.Is(st.Err, rexec.ErrStartFailed) || !strings.Contains(st.Err.Error(), "no-such-command-rexec") {
		t.Fatalf("status %v, want code 127 and ErrStartFailed naming the command", st)
	}
}

func TestMaxSessions(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{MaxSessions: 1})
	r1, r2 := newRec(), newRec()
	s1 := c.start(rexec.Request{Argv: []string{"sleep", "100"}}, r1)
	c.pid()
	c.start(rexec.Request{Argv: []string{"true"}}, r2)
	st := r2.wait(t, 10*time.Second)
	if !errors.Is(st.Err, rexec.ErrTooManySessions) {
		t.Fatalf("second session: %v, want ErrTooManySessions", st)
	}
	c.do(1, func(*testNode) { s1.Cancel() })
	if st := r1.wait(t, 10*time.Second); !errors.Is(st.Err, rexec.ErrCanceled) {
		t.Fatalf("first session: %v, want ErrCanceled", st)
	}
}

// The server's node dies: once it is declared down (CLMS would call
// NodeDown), the client's session ends with ErrNodeDown.
func TestServerNodeDown(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	r := newRec()
	c.start(rexec.Request{Argv: []string{"sleep", "100"}}, r)
	c.pid()
	c.closeNode(2)
	c.do(1, func(n *testNode) { n.ep.NodeDown(2, 0) })
	st := r.wait(t, 5*time.Second)
	if !errors.Is(st.Err, ics.ErrNodeDown) || st.Code != -1 {
		t.Fatalf("status %v, want ErrNodeDown", st)
	}
}

// The client's node dies: once it is declared down, the server kills
// its processes.
func TestClientNodeDown(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{KillGrace: time.Second})
	r := newRec()
	c.start(rexec.Request{Argv: []string{"sh", "-c", "trap '' TERM; sleep 100"}}, r)
	pid := c.pid()
	c.closeNode(1)
	c.do(2, func(n *testNode) { n.ep.NodeDown(1, 0) })
	if !waitGone(pid, 10*time.Second) {
		t.Fatalf("process %d still runs after its client went down", pid)
	}
	end := time.Now().Add(10 * time.Second)
	for time.Now().Before(end) && c.stats(2).Sessions > 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if st := c.stats(2); st.Sessions != 0 || st.Finished != 1 {
		t.Fatalf("server stats %+v, want the session finished", st)
	}
	// NodedownWait reports the cleanup done.
	done := make(chan struct{})
	c.do(2, func(n *testNode) { n.ep.NodedownWait(1, func() { close(done) }) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("NodedownWait did not fire")
	}
}

func TestLoad(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	type result struct {
		best node.ID
		load float64
		err  error
	}
	got := make(chan result, 2)
	c.do(1, func(n *testNode) {
		if err := rexec.Load(n.ep, 2, 5*time.Second, func(l float64, err error) { got <- result{2, l, err} }); err != nil {
			t.Error(err)
		}
		rexec.LeastLoaded(n.ep, []node.ID{1, 2}, 5*time.Second, func(best node.ID, l float64, err error) { got <- result{best, l, err} })
	})
	for range 2 {
		select {
		case r := <-got:
			if r.err != nil || r.load < 0 || (r.best != 1 && r.best != 2) {
				t.Fatalf("load %+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no load within 10s")
		}
	}
}

func TestBadDirectory(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	r := newRec()
	c.start(rexec.Request{Argv: []string{"true"}, Dir: "/no/such/dir"}, r)
	st := r.wait(t, 10*time.Second)
	if st.Code != 126 || !errors.Is(st.Err, rexec.ErrStartFailed) || !strings.Contains(st.Err.Error(), "/no/such/dir") {
		t.Fatalf("status %v, want code 126 and ErrStartFailed naming the directory", st)
	}
}

// A process that exits while a background child keeps its output open
// still ends the session, WaitDelay after the pipe went quiet.
func TestBackgroundChildHoldsPipe(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{WaitDelay: 200 * time.Millisecond})
	r := newRec()
	c.start(rexec.Request{Argv: []string{"sh", "-c", "echo $$; sleep 3 & echo bye"}}, r)
	st := r.wait(t, 2*time.Second)
	out, _ := r.out()
	if st.Err != nil || st.Code != 0 || !strings.HasSuffix(out, "bye\n") {
		t.Fatalf("status %v, stdout %q", st, out)
	}
	// The background sleep is in the shell's process group.
	var pgid int
	if _, err := fmt.Sscan(out, &pgid); err == nil && pgid > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// A signal sent at once, likely before the process exists, is kept
// until it does.
func TestSignalBeforeStart(t *testing.T) {
	c := newCluster(t, rexec.ServerConfig{})
	r := newRec()
	c.do(1, func(*testNode) {
		s, err := c.cli[1].Start(2, rexec.Request{Argv: []string{"sleep", "100"}}, r)
		if err != nil {
			t.Error(err)
			return
		}
		if err := s.Signal(syscall.SIGTERM); err != nil {
			t.Error(err)
		}
	})
	st := r.wait(t, 10*time.Second)
	if st.Err != nil || st.Signal != "SIGTERM" || st.Code != 128+int(syscall.SIGTERM) {
		t.Fatalf("status %v, want killed by SIGTERM", st)
	}
}
