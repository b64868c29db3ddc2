package host

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterinfra/ci/node"
)

// got is one thing a rec handler was told.
type got struct {
	kind string // "start", "dgram", "open", "msg", "writable", "closed"
	from node.ID
	path int
	data []byte
	err  error
	s    node.Stream
}

// rec is a Handler that records every call. It also checks, in every
// callback, that no other callback of its node is running and that its
// node has not been closed.
type rec struct {
	id   node.ID
	boot node.Boot
	env  node.Env

	mu  sync.Mutex
	log []got

	// Hooks, run inside the callback when set (on the loop, so they may
	// use env).
	onStart func(r *rec)
	onOpen  func(r *rec, s node.Stream)
	onMsg   func(r *rec, s node.Stream, msg []byte)

	inside   atomic.Int32
	overlaps atomic.Int32 // callbacks that found another one running
	closed   atomic.Bool  // set by the test once Close returned
	late     atomic.Int32 // callbacks after Close returned
	calls    atomic.Int64
}

func (r *rec) enter() {
	if r.inside.Add(1) != 1 {
		r.overlaps.Add(1)
	}
	if r.closed.Load() {
		r.late.Add(1)
	}
	r.calls.Add(1)
}

func (r *rec) exit() { r.inside.Add(-1) }

func (r *rec) add(g got) {
	r.mu.Lock()
	r.log = append(r.log, g)
	r.mu.Unlock()
}

func (r *rec) Start(env node.Env) {
	r.enter()
	defer r.exit()
	r.env = env
	r.add(got{kind: "start"})
	if r.onStart != nil {
		r.onStart(r)
	}
}

func (r *rec) Datagram(from node.ID, path int, p []byte) {
	r.enter()
	defer r.exit()
	r.add(got{kind: "dgram", from: from, path: path, data: p})
}

func (r *rec) StreamOpened(s node.Stream) {
	r.enter()
	defer r.exit()
	r.add(got{kind: "open", from: s.Peer(), path: s.Path(), s: s})
	if r.onOpen != nil {
		r.onOpen(r, s)
	}
}

func (r *rec) StreamMessage(s node.Stream, msg []byte) {
	r.enter()
	defer r.exit()
	r.add(got{kind: "msg", from: s.Peer(), path: s.Path(), data: msg, s: s})
	if r.onMsg != nil {
		r.onMsg(r, s, msg)
	}
}

func (r *rec) StreamWritable(s node.Stream) {
	r.enter()
	defer r.exit()
	r.add(got{kind: "writable", from: s.Peer(), path: s.Path(), s: s})
}

func (r *rec) StreamClosed(s node.Stream, err error) {
	r.enter()
	defer r.exit()
	r.add(got{kind: "closed", from: s.Peer(), path: s.Path(), err: err, s: s})
}

// find returns the recorded calls of one kind.
func (r *rec) find(kind string) []got {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []got
	for _, g := range r.log {
		if g.kind == kind {
			out = append(out, g)
		}
	}
	return out
}

func (r *rec) count(kind string) int { return len(r.find(kind)) }

// tnode is a started Node and its current Handler.
type tnode struct {
	*Node
	dir  string
	recs []*rec // one per incarnation
	cfg  Config
	prep func(r *rec)
}

func (tn *tnode) r() *rec { return tn.recs[len(tn.recs)-1] }

func (tn *tnode) factory(id node.ID, boot node.Boot) node.Handler {
	r := &rec{id: id, boot: boot}
	if tn.prep != nil {
		tn.prep(r)
	}
	tn.recs = append(tn.recs, r)
	return r
}

func loopback(paths int) []netip.AddrPort {
	out := make([]netip.AddrPort, paths)
	for i := range out {
		out[i] = netip.MustParseAddrPort("127.0.0.1:0")
	}
	return out
}

// startNode starts node id with paths loopback paths, a fresh state
// directory and the given config changes; prep sets up each incarnation's
// rec before Start is called on it. The node is closed at cleanup.
func startNode(t *testing.T, id node.ID, paths int, mod func(*Config), prep func(*rec)) *tnode {
	t.Helper()
	tn := &tnode{dir: t.TempDir(), prep: prep}
	tn.cfg = Config{Self: id, Listen: loopback(paths), StateDir: tn.dir, StreamTimeout: 3 * time.Second}
	if mod != nil {
		mod(&tn.cfg)
	}
	tn.start(t)
	return tn
}

func (tn *tnode) start(t *testing.T) {
	t.Helper()
	n, err := Start(tn.cfg, tn.factory)
	if err != nil {
		t.Fatalf("Start n%d: %v", tn.cfg.Self, err)
	}
	tn.Node = n
	t.Cleanup(func() { n.Close() })
	waitFor(t, func() bool { return tn.r().count("start") == 1 }, "Start called on n%d", tn.cfg.Self)
}

// closeNode closes tn and marks its handler so that any later callback
// is counted as late.
func (tn *tnode) closeNode(t *testing.T) {
	t.Helper()
	if err := tn.Close(); err != nil {
		t.Fatalf("Close n%d: %v", tn.cfg.Self, err)
	}
	tn.r().closed.Store(true)
}

// introduce tells every node the addresses of all of them.
func introduce(t *testing.T, nodes ...*tnode) map[node.ID][]netip.AddrPort {
	t.Helper()
	peers := map[node.ID][]netip.AddrPort{}
	for _, tn := range nodes {
		peers[tn.Self()] = tn.Addrs()
	}
	for _, tn := range nodes {
		if err := tn.SetPeers(peers); err != nil {
			t.Fatalf("SetPeers: %v", err)
		}
	}
	return peers
}

// call runs f on tn's event loop and waits for it.
func call(t *testing.T, tn *tnode, f func(r *rec)) {
	t.Helper()
	done := make(chan struct{})
	if err := tn.Do(func(h node.Handler) {
		defer close(done)
		f(h.(*rec))
	}); err != nil {
		t.Fatalf("Do: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("call on n%d did not run", tn.Self())
	}
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", fmt.Sprintf(format, args...))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// dial opens a stream from a to b on path and waits until both ends are
// open. It returns the dialler's and the acceptor's end.
func dial(t *testing.T, a, b *tnode, path int) (node.Stream, node.Stream) {
	t.Helper()
	openA, openB := a.r().count("open"), b.r().count("open")
	var s node.Stream
	call(t, a, func(r *rec) {
		var err error
		if s, err = r.env.Net().Dial(b.Self(), path); err != nil {
			t.Errorf("Dial: %v", err)
		}
	})
	if s == nil {
		t.FailNow()
	}
	waitFor(t, func() bool { return a.r().count("open") > openA && b.r().count("open") > openB }, "stream n%d→n%d open at both ends", a.Self(), b.Self())
	opens := b.r().find("open")
	return s, opens[len(opens)-1].s
}

// settleGoroutines waits until the goroutine count is back to at most
// base, and fails with a stack dump if it is not within 5s.
func settleGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), base, buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// silentListener accepts TCP connections in the kernel (the backlog) but
// never answers: a peer that connects and then says nothing.
type silentListener struct {
	l    *net.TCPListener
	addr netip.AddrPort
}

func netListen() (*silentListener, error) {
	l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		return nil, err
	}
	return &silentListener{l: l, addr: l.Addr().(*net.TCPAddr).AddrPort()}, nil
}

func (s *silentListener) Close() error { return s.l.Close() }

// freePort returns a loopback address on which nothing listens.
func freePort(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	return a
}
