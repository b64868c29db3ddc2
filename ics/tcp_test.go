package ics_test

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/host"
	"github.com/clusterinfra/ci/sim"
)

// tcpHarness runs the nodes as real host nodes on loopback TCP. Every
// node reaches every other through a small proxy per direction and path,
// which a test can stall to cut a path, as a failed interconnect would.
type tcpHarness struct {
	t       testing.TB
	nodes   map[node.ID]*host.Node
	tn      map[node.ID]*testNode
	mu      sync.Mutex
	proxies map[[3]int]*proxy
}

func newTCPHarness(t testing.TB, paths int, specs ...spec) harness {
	h := &tcpHarness{t: t, nodes: map[node.ID]*host.Node{}, tn: map[node.ID]*testNode{}, proxies: map[[3]int]*proxy{}}
	r := newRec()
	for _, s := range specs {
		s := s
		f := s.factory
		if f == nil {
			f = func(id node.ID, _ node.Boot) node.Handler {
				if s.cfg.Keyring == nil {
					s.cfg.Keyring = keyring(t, 1, testKey)
				}
				n := &testNode{id: id, r: r, cfg: s.cfg, setup: s.setup}
				h.mu.Lock()
				h.tn[id] = n
				h.mu.Unlock()
				return n
			}
		}
		var listen []netip.AddrPort
		for range paths {
			listen = append(listen, netip.MustParseAddrPort("127.0.0.1:0"))
		}
		n, err := host.Start(host.Config{Self: s.id, Listen: listen, StateDir: t.TempDir()}, f)
		if err != nil {
			t.Fatal(err)
		}
		h.nodes[s.id] = n
		t.Cleanup(func() { _ = n.Close() })
	}
	for a, na := range h.nodes {
		peers := map[node.ID][]netip.AddrPort{}
		for b, nb := range h.nodes {
			if a == b {
				continue
			}
			for p, addr := range nb.Addrs() {
				px := newProxy(t, addr)
				h.proxies[[3]int{int(a), int(b), p}] = px
				peers[b] = append(peers[b], px.addr())
			}
		}
		if err := na.SetPeers(peers); err != nil {
			t.Fatal(err)
		}
	}
	// Let every node run Start.
	for id := range h.nodes {
		h.do(id, func(*testNode) {})
	}
	return h
}

func (h *tcpHarness) name() string { return "tcp" }

func (h *tcpHarness) do(id node.ID, f func(n *testNode)) {
	done := make(chan struct{})
	err := h.nodes[id].Do(func(hd node.Handler) {
		defer close(done)
		n, _ := hd.(*testNode)
		f(n)
	})
	if err != nil {
		h.t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		h.t.Fatalf("do on n%d did not run within 30s", id)
	}
}

func (h *tcpHarness) until(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return cond()
}

func (h *tcpHarness) cutPath(a, b node.ID, path int) {
	h.proxies[[3]int{int(a), int(b), path}].stall(true)
	h.proxies[[3]int{int(b), int(a), path}].stall(true)
}

func (h *tcpHarness) heal() {
	for _, p := range h.proxies {
		p.stall(false)
	}
}

func (h *tcpHarness) loop(id node.ID) ics.Loop { return h.nodes[id].Loop() }

// Both runtimes' Loops are what CallSync takes.
var (
	_ ics.Loop = host.Loop{}
	_ ics.Loop = (*sim.Loop)(nil)
)

// proxy forwards TCP connections to a target; stalled, it stops moving
// bytes (both ways) and leaves new connections hanging, as a path whose
// packets are all lost would.
type proxy struct {
	ln     net.Listener
	target netip.AddrPort
	mu     sync.Mutex
	cond   *sync.Cond
	halted bool
}

func newProxy(t testing.TB, target netip.AddrPort) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	t.Cleanup(func() { _ = ln.Close(); p.stall(false) })
	go p.serve()
	return p
}

func (p *proxy) addr() netip.AddrPort { return p.ln.Addr().(*net.TCPAddr).AddrPort() }

func (p *proxy) stall(on bool) {
	p.mu.Lock()
	p.halted = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *proxy) wait() {
	p.mu.Lock()
	for p.halted {
		p.cond.Wait()
	}
	p.mu.Unlock()
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			p.wait()
			d, err := net.Dial("tcp", p.target.String())
			if err != nil {
				_ = c.Close()
				return
			}
			go p.pipe(d, c)
			p.pipe(c, d)
		}()
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			return
		}
	}
}

func TestConformanceTCP(t *testing.T) {
	if testing.Short() {
		t.Skip("real sockets; run without -short")
	}
	conformance(t, newTCPHarness)
}
