package ics_test

// The ICS performance goals, each benchmark paired with a baseline that
// runs in the same `go test -bench` process, so that
// internal/benchreport can judge a ratio rather than a timing (the
// machines this runs on are shared and noisy):
//
//	RPCLatency/ics        synchronous 64-byte calls over TCP, one at a time
//	RPCLatency/rawtcp     a 64-byte ping-pong on one loopback connection
//	RPCThroughput/ics     64-byte calls from 32 goroutines at once
//	RPCThroughput/netrpc  the same through the standard net/rpc
//	Bulk/ics              one 64 MiB message on ChanBulk, small calls beside it
//	Bulk/rawtcp           64 MiB copied through one socket, a ping-pong beside it
//	SimTransport/ics      a ring of ICS messages in the simulator
//	SimTransport/bare     a ring of bare datagrams in the same kind of world
//
// Everything runs on 127.0.0.1. Latencies are timed one by one and
// reported as percentiles (p50-ns, p99-ns). A benchmark whose figure
// needs a sample larger than b.N (percentiles, throughput, the
// simulator) first runs the missing operations with the timer stopped,
// so that -benchtime=1x still gives a usable figure while ns/op, B/op and
// allocs/op keep meaning "per timed operation". The figures it reports
// itself cover every operation it ran.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/rpc"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/host"
	"github.com/clusterinfra/ci/sim"
)

const (
	// benchPayload is the size of a small call or message.
	benchPayload = 64
	// minSamples is the smallest sample a percentile or a rate is
	// computed from, whatever b.N is: below a few thousand, p99 is one
	// unlucky scheduling decision.
	minSamples = 2000
	// benchCallers is how many goroutines call at once in the throughput
	// benchmarks.
	benchCallers = 32
	// bulkSize is the size of one bulk transfer.
	bulkSize = 64 << 20
	// benchWait bounds every wait of a benchmark, so that a lost message
	// fails the run instead of hanging it.
	benchWait = time.Minute
	// runWait bounds the life of a pair of nodes or sockets: one run of a
	// benchmark at the default benchtime lasts a few seconds.
	runWait = 10 * benchWait
)

// ---------------------------------------------------------------------
// Goal 1: synchronous round trip.

func BenchmarkRPCLatency(b *testing.B) {
	b.Run("ics", func(b *testing.B) {
		p := newICSPair(b, nil)
		req := pattern(benchPayload)
		measureLatency(b, func() error { return p.call(req) })
	})
	b.Run("rawtcp", func(b *testing.B) {
		pp := newPingPong(b, benchPayload)
		measureLatency(b, pp.roundTrip)
	})
}

// measureLatency times round trips one by one: b.N with the timer
// running, after enough untimed ones to make minSamples. It reports the
// p50 and p99 of all of them.
func measureLatency(b *testing.B, rt func() error) {
	lat := make([]time.Duration, 0, max(b.N, minSamples))
	timed := func(n int) {
		for range n {
			t0 := time.Now()
			if err := rt(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
	}
	topUp(b, minSamples, timed)
	reportPercentiles(b, "", lat)
}

// topUp runs f for the operations that b.N lacks to make least, with
// the timer stopped, then for b.N operations timed. It returns how many
// it ran and the wall time they took. Setup before it is not timed.
func topUp(b *testing.B, least int, f func(n int)) (ops int, wall time.Duration) {
	b.ReportAllocs()
	b.StopTimer()
	if extra := least - b.N; extra > 0 {
		t0 := time.Now()
		f(extra)
		wall += time.Since(t0)
		ops += extra
	}
	b.ResetTimer()
	b.StartTimer()
	t0 := time.Now()
	f(b.N)
	wall += time.Since(t0)
	b.StopTimer()
	return ops + b.N, wall
}

// reportPercentiles reports the median and the 99th percentile of lat
// (which it sorts) as <prefix>p50-ns and <prefix>p99-ns.
func reportPercentiles(b *testing.B, prefix string, lat []time.Duration) {
	if len(lat) == 0 {
		b.Fatalf("no %slatency samples", prefix)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(percentile(lat, 50)), prefix+"p50-ns")
	b.ReportMetric(float64(percentile(lat, 99)), prefix+"p99-ns")
}

// percentile is the nearest-rank percentile p of sorted.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p+99)/100 - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ---------------------------------------------------------------------
// Goal 2: throughput with concurrent callers.

func BenchmarkRPCThroughput(b *testing.B) {
	b.Run("ics", func(b *testing.B) {
		p := newICSPair(b, nil)
		req := pattern(benchPayload)
		measureThroughput(b, func() error { return p.call(req) })
	})
	b.Run("netrpc", func(b *testing.B) {
		c := newNetRPC(b)
		req := pattern(benchPayload)
		measureThroughput(b, func() error {
			var resp []byte
			if err := c.Call("Echo.Echo", req, &resp); err != nil {
				return err
			}
			if len(resp) != len(req) {
				return fmt.Errorf("net/rpc echo of %d bytes came back with %d", len(req), len(resp))
			}
			return nil
		})
	})
}

// measureThroughput makes calls from benchCallers goroutines at once and
// reports calls/s.
func measureThroughput(b *testing.B, call func() error) {
	ops, wall := topUp(b, minSamples, func(n int) { parallelCalls(b, n, call) })
	b.ReportMetric(float64(ops)/wall.Seconds(), "calls/s")
}

// parallelCalls makes n calls, shared out among benchCallers goroutines,
// and returns when all are done.
func parallelCalls(b *testing.B, n int, call func() error) {
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	for range benchCallers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := call(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// rpcEcho is the net/rpc service of the throughput baseline.
type rpcEcho struct{}

// Echo answers with the request.
func (rpcEcho) Echo(req []byte, resp *[]byte) error {
	*resp = req
	return nil
}

// newNetRPC serves rpcEcho on loopback and returns a client of it, one
// connection shared by every caller (as net/rpc is meant to be used).
func newNetRPC(b *testing.B) *rpc.Client {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Echo", rpcEcho{}); err != nil {
		b.Fatal(err)
	}
	cc, sc := tcpConnPair(b)
	var wg sync.WaitGroup
	// ServeConn returns when the client hangs up (or the cleanup below
	// closes the connection).
	wg.Go(func() { srv.ServeConn(sc) })
	c := rpc.NewClient(cc)
	b.Cleanup(func() {
		_ = c.Close()
		_ = sc.Close()
		wg.Wait()
	})
	return c
}

// ---------------------------------------------------------------------
// Goal 3: bulk transfer beside small calls.

func BenchmarkBulk(b *testing.B) {
	b.Run("ics", func(b *testing.B) {
		got := make(chan int, 1)
		p := newICSPair(b, func(_ node.ID, m []byte) {
			select {
			case got <- len(m):
			default: // only one transfer is ever in flight
				panic("bulk: a second message arrived before the first was taken")
			}
		})
		data := pattern(bulkSize)
		small := pattern(benchPayload)
		b.SetBytes(bulkSize)
		bg := background(b, func() error { return p.call(small) }, p.cancel)
		topUp(b, 0, func(n int) {
			for range n {
				var err error
				doWait(b, p.a, func() { err = p.ea.Send(2, ics.ChanBulk, "sink", data) })
				if err != nil {
					b.Fatal(err)
				}
				p.waitBulk(b, got)
			}
		})
		reportPercentiles(b, "small-", bg.stop())
	})
	// The baseline copies from memory into one socket with io.Copy and
	// reads into memory at the other end, as ICS must.
	b.Run("rawtcp", func(b *testing.B) {
		src, dst := tcpConnPair(b)
		data := pattern(bulkSize)
		buf := make([]byte, bulkSize)
		got := make(chan struct{}, 1)
		var wg sync.WaitGroup
		wg.Go(func() {
			defer close(got)
			for {
				if _, err := io.ReadFull(dst, buf); err != nil {
					return // the cleanup closed the connection
				}
				got <- struct{}{}
			}
		})
		b.Cleanup(func() {
			_ = src.Close()
			_ = dst.Close()
			wg.Wait()
		})
		pp := newPingPong(b, benchPayload)
		b.SetBytes(bulkSize)
		bg := background(b, pp.roundTrip, nil)
		topUp(b, 0, func(n int) {
			for range n {
				if _, err := io.Copy(src, bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
				if _, ok := <-got; !ok {
					b.Fatal("bulk receiver failed")
				}
			}
		})
		reportPercentiles(b, "small-", bg.stop())
	})
}

// waitBulk waits for the bulk message to arrive at n2. A transfer that
// stops half-way fails the benchmark at benchWait instead of hanging it.
func (p *icsPair) waitBulk(b *testing.B, got <-chan int) {
	select {
	case size := <-got:
		if size != bulkSize {
			b.Fatalf("bulk message of %d bytes arrived as %d", bulkSize, size)
		}
	case <-time.After(benchWait):
		b.Fatalf("bulk message not delivered within %v", benchWait)
	}
}

// bgLoop runs round trips on its own goroutine, timing each, while a
// benchmark does something else.
type bgLoop struct {
	quit atomic.Bool
	wg   sync.WaitGroup
	lat  []time.Duration
}

// background starts rt in a loop; stop ends it and returns the latencies.
// The loop makes at least one round trip. If the benchmark ends without
// stop (it failed), the cleanup calls abort, if set, to end a round trip
// that may never complete, then waits for the loop.
func background(b *testing.B, rt func() error, abort func()) *bgLoop {
	l := &bgLoop{}
	l.wg.Go(func() {
		for {
			t0 := time.Now()
			err := rt()
			if err == nil {
				l.lat = append(l.lat, time.Since(t0))
			}
			if l.quit.Load() {
				return // an error here may be the abort's
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.Cleanup(func() {
		l.quit.Store(true)
		if abort != nil {
			abort()
		}
		l.wg.Wait()
	})
	return l
}

func (l *bgLoop) stop() []time.Duration {
	l.quit.Store(true)
	l.wg.Wait()
	return l.lat
}

// ---------------------------------------------------------------------
// Goal 4: ICS over the simulator against the bare simulator.

// Both worlds of BenchmarkSimTransport have the shape of the simulator's
// own BenchmarkSimBare/nodes=10: ten nodes, one message started by each,
// passed round a ring over 1 ms ± 0.5 ms links. An ICS message costs
// several simulator events (the stream segment, acknowledgements,
// timers); events/msg says how many.
const (
	simNodes   = 10
	simLatency = time.Millisecond
	simJitter  = 500 * time.Microsecond
)

func BenchmarkSimTransport(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		w := sim.New(sim.Config{Seed: 1, Link: sim.Link{Latency: simLatency, Jitter: simJitter}})
		for i := 1; i <= simNodes; i++ {
			next := node.ID(i%simNodes + 1)
			addSimNode(b, w, node.ID(i), func(node.ID, node.Boot) node.Handler {
				return &ringPinger{next: next, msg: pattern(benchPayload)}
			})
		}
		for range 2 * simNodes { // let the starts settle
			w.Step()
		}
		ops, wall := topUp(b, minSamples, func(n int) {
			for range n {
				if !w.Step() {
					b.Fatal("the bare world ran out of events")
				}
			}
		})
		b.ReportMetric(float64(wall.Nanoseconds())/float64(ops), "ns/event")
	})
	b.Run("ics", func(b *testing.B) {
		w := sim.New(sim.Config{Seed: 1, Link: sim.Link{Latency: simLatency, Jitter: simJitter}})
		delivered := 0
		msg := pattern(benchPayload)
		for i := 1; i <= simNodes; i++ {
			next := node.ID(i%simNodes + 1)
			addSimNode(b, w, node.ID(i), func(id node.ID, _ node.Boot) node.Handler {
				n := &benchNode{cfg: ics.Config{Keyring: keyring(b, 1, testKey)}}
				// The payload sent on is the node's own: the one received
				// may alias a frame the transport reuses.
				n.start = func() {
					if err := n.ep.Send(next, ics.ChanNormal, "sink", msg); err != nil {
						b.Error(err)
					}
				}
				n.onMsg = func(node.ID, []byte) {
					delivered++
					n.start()
				}
				return n
			})
		}
		// Let the streams connect and every message make a few hops.
		for steps := 0; delivered < 2*simNodes; steps++ {
			if steps > 1e6 || !w.Step() {
				b.Fatalf("the ICS ring did not get going: %d messages delivered", delivered)
			}
		}
		ev0 := w.Stats().Events
		ops, wall := topUp(b, minSamples, func(n int) {
			for end := delivered + n; delivered < end; {
				if !w.Step() {
					b.Fatal("the ICS world ran out of events")
				}
			}
		})
		b.ReportMetric(float64(wall.Nanoseconds())/float64(ops), "ns/msg")
		b.ReportMetric(float64(w.Stats().Events-ev0)/float64(ops), "events/msg")
	})
}

func addSimNode(b *testing.B, w *sim.World, id node.ID, f node.Factory) {
	if err := w.AddNode(id, f); err != nil {
		b.Fatal(err)
	}
	if err := w.Boot(id); err != nil {
		b.Fatal(err)
	}
}

// ringPinger passes every datagram it receives on to the next node, with
// no protocol at all: the simulator's floor.
type ringPinger struct {
	env  node.Env
	next node.ID
	msg  []byte
}

func (p *ringPinger) Start(env node.Env) {
	p.env = env
	_ = env.Net().SendDatagram(p.next, 0, p.msg)
}
func (p *ringPinger) Datagram(node.ID, int, []byte)     { _ = p.env.Net().SendDatagram(p.next, 0, p.msg) }
func (p *ringPinger) StreamOpened(node.Stream)          {}
func (p *ringPinger) StreamMessage(node.Stream, []byte) {}
func (p *ringPinger) StreamWritable(node.Stream)        {}
func (p *ringPinger) StreamClosed(node.Stream, error)   {}

// ---------------------------------------------------------------------
// Shared pieces.

// benchNode is a node whose only protocol is ICS: it serves echo and
// hands one-way messages to "sink" to onMsg. start runs at the end of
// Start. All three run on the node's goroutine.
type benchNode struct {
	cfg   ics.Config
	ep    *ics.Endpoint
	onMsg func(from node.ID, m []byte)
	start func()
}

func (n *benchNode) Start(env node.Env) {
	ep, err := ics.New(env, n.cfg)
	if err != nil {
		panic(err)
	}
	n.ep = ep
	if err := echo.Serve(ep, func(_ *ics.Request, m []byte) ([]byte, error) { return m, nil }); err != nil {
		panic(err)
	}
	if err := ep.HandleMessage("sink", func(from node.ID, m []byte) {
		if n.onMsg != nil {
			n.onMsg(from, m)
		}
	}); err != nil {
		panic(err)
	}
	if n.start != nil {
		n.start()
	}
}
func (n *benchNode) Datagram(node.ID, int, []byte)         {}
func (n *benchNode) StreamMessage(s node.Stream, m []byte) { n.ep.StreamMessage(s, m) }
func (n *benchNode) StreamWritable(s node.Stream)          { n.ep.StreamWritable(s) }

func (n *benchNode) StreamOpened(s node.Stream)            { n.ep.StreamOpened(s) }
func (n *benchNode) StreamClosed(s node.Stream, err error) { n.ep.StreamClosed(s, err) }

// icsPair is two host nodes on loopback, n1 calling n2, directly
// connected (no proxy) and warmed up: both directions' streams are open.
type icsPair struct {
	// ctx bounds every call of the pair: one deadline for the whole run,
	// so that a call does not pay for a timer of its own.
	ctx    context.Context
	cancel context.CancelFunc // ends every call of the pair
	a      *host.Node         // n1
	n1     *benchNode         // n1's handler: touch it only on n1's loop
	la     host.Loop          // n1's loop
	ea     *ics.Endpoint      // n1's endpoint: touch it only through la
}

// newICSPair starts the pair; onMsg, if set, gets n2's "sink" messages.
func newICSPair(b *testing.B, onMsg func(from node.ID, m []byte)) *icsPair {
	var hosts [2]*host.Node
	var eps [2]*ics.Endpoint
	var bns [2]*benchNode
	for i := range hosts {
		bn := &benchNode{cfg: ics.Config{Keyring: keyring(b, 1, testKey)}}
		bns[i] = bn
		if i == 1 {
			bn.onMsg = onMsg
		}
		n, err := host.Start(host.Config{
			Self:     node.ID(i + 1),
			Listen:   []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
			StateDir: b.TempDir(),
		}, func(node.ID, node.Boot) node.Handler { return bn })
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = n.Close() })
		hosts[i] = n
		// Start runs first on the loop, so this sees the endpoint.
		doWait(b, n, func() { eps[i] = bn.ep })
	}
	peers := map[node.ID][]netip.AddrPort{1: hosts[0].Addrs(), 2: hosts[1].Addrs()}
	for _, n := range hosts {
		if err := n.SetPeers(peers); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), runWait)
	b.Cleanup(cancel)
	p := &icsPair{ctx: ctx, cancel: cancel, a: hosts[0], n1: bns[0], la: hosts[0].Loop(), ea: eps[0]}
	// Warm up: the first call opens n1's stream, its reply n2's.
	warm := pattern(benchPayload)
	for range 100 {
		if err := p.call(warm); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

// doWait runs f on n's loop and waits for it.
func doWait(b *testing.B, n *host.Node, f func()) {
	done := make(chan struct{})
	if err := n.Do(func(node.Handler) { f(); close(done) }); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(benchWait):
		b.Fatalf("n%d's loop did not run a call within %v", n.Self(), benchWait)
	}
}

// call is one synchronous echo call from n1 to n2.
func (p *icsPair) call(req []byte) error {
	resp, err := ics.CallSync(p.ctx, p.la, p.ea, echo, 2, req, ics.CallOpts{})
	if err != nil {
		return err
	}
	if len(resp) != len(req) {
		return fmt.Errorf("echo of %d bytes came back with %d", len(req), len(resp))
	}
	return nil
}

// pingPong is the raw baseline of a round trip: the caller's goroutine
// and an echo goroutine on one loopback TCP connection, exchanging
// messages with a 4-byte length prefix, as the host runtime frames them.
type pingPong struct {
	c   *net.TCPConn
	br  *bufio.Reader
	out []byte // the request frame, prefix included
	in  []byte
}

func newPingPong(b *testing.B, size int) *pingPong {
	cc, sc := tcpConnPair(b)
	var wg sync.WaitGroup
	wg.Go(func() { echoFrames(sc, size) })
	b.Cleanup(func() {
		_ = cc.Close()
		_ = sc.Close()
		wg.Wait()
	})
	out := binary.BigEndian.AppendUint32(nil, uint32(size))
	return &pingPong{c: cc, br: bufio.NewReader(cc), out: append(out, pattern(size)...), in: make([]byte, 4+size)}
}

func (pp *pingPong) roundTrip() error {
	if _, err := pp.c.Write(pp.out); err != nil {
		return err
	}
	if _, err := io.ReadFull(pp.br, pp.in[:4]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(pp.in)
	if int(n) != len(pp.out)-4 {
		return fmt.Errorf("ping-pong: sent %d bytes, got %d back", len(pp.out)-4, n)
	}
	_, err := io.ReadFull(pp.br, pp.in[4:4+n])
	return err
}

// echoFrames sends every frame it reads on c back, until c fails.
func echoFrames(c *net.TCPConn, size int) {
	br := bufio.NewReader(c)
	buf := make([]byte, 4+size)
	for {
		if _, err := io.ReadFull(br, buf[:4]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(buf)
		if int(n) > size {
			return
		}
		if _, err := io.ReadFull(br, buf[4:4+n]); err != nil {
			return
		}
		if _, err := c.Write(buf[:4+n]); err != nil {
			return
		}
	}
}

// tcpConnPair connects two sockets on loopback. Both get a deadline of
// runWait, so that a lost message fails the benchmark instead of hanging
// it, and are closed at cleanup.
func tcpConnPair(b *testing.B) (client, server *net.TCPConn) {
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	// The kernel completes the handshake into the backlog, so dialling
	// before accepting does not block.
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		b.Fatal(err)
	}
	server, err = ln.AcceptTCP()
	if err != nil {
		_ = client.Close()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = client.Close()
		_ = server.Close()
	})
	deadline := time.Now().Add(runWait)
	if err := errors.Join(client.SetDeadline(deadline), server.SetDeadline(deadline)); err != nil {
		b.Fatal(err)
	}
	return client, server
}

// pattern is n bytes that are not all zero.
func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + 1)
	}
	return p
}
