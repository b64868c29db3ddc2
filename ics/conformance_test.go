package ics_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
)

// newHarness makes a harness of one transport; the conformance suite runs
// the same tests on each.
type newHarness func(t testing.TB, paths int, specs ...spec) harness

func nodes(ids ...node.ID) []spec {
	var out []spec
	for _, id := range ids {
		out = append(out, spec{id: id})
	}
	return out
}

// conformance is the ICS conformance suite.
func conformance(t *testing.T, mk newHarness) {
	t.Run("one-way messages stay in order per channel", func(t *testing.T) {
		h := mk(t, 1, nodes(1, 2)...)
		const n = 1000
		sent := 0
		for sent < n {
			h.do(1, func(x *testNode) {
				for sent < n {
					if err := x.ep.Send(2, ics.ChanNormal, "sink", []byte(strconv.Itoa(sent))); err != nil {
						if !errors.Is(err, ics.ErrThrottled) {
							t.Fatal(err)
						}
						return
					}
					sent++
				}
			})
			h.until(10*time.Millisecond, func() bool { return false })
		}
		r := recOf(h)
		if !h.until(10*time.Second, func() bool { defer r.lock()(); return len(r.msgs[2]) == n }) {
			t.Fatalf("got %d of %d messages", len(r.msgs[2]), n)
		}
		defer r.lock()()
		for i, m := range r.msgs[2] {
			if m != strconv.Itoa(i) {
				t.Fatalf("message %d is %q: out of order", i, m)
			}
		}
	})

	t.Run("three paradigms: one-way, async RPC, sync RPC", func(t *testing.T) {
		h := mk(t, 1, nodes(1, 2)...)
		r := recOf(h)
		h.do(1, func(x *testNode) {
			if err := x.ep.Send(2, ics.ChanNormal, "sink", []byte("oneway")); err != nil {
				t.Fatal(err)
			}
			if _, err := x.ep.Call(2, "echo", []byte("async"), ics.CallOpts{}, r.done("async")); err != nil {
				t.Fatal(err)
			}
			if _, err := x.ep.Call(2, "fail", []byte("boom"), ics.CallOpts{}, r.done("fail")); err != nil {
				t.Fatal(err)
			}
			if _, err := x.ep.Call(2, "nope", nil, ics.CallOpts{}, r.done("nosvc")); err != nil {
				t.Fatal(err)
			}
		})
		resp, err := ics.CallSync(context.Background(), h.loop(1), nodeEP(h, 1), echo, 2, []byte("sync"), ics.CallOpts{})
		if err != nil || string(resp) != "sync" {
			t.Fatalf("sync call: %q, %v", resp, err)
		}
		if !h.until(5*time.Second, r.finished("async", "fail", "nosvc")) {
			t.Fatal("async calls did not complete")
		}
		defer r.lock()()
		if r.replies["async"] != "async" || r.results["async"] != nil {
			t.Errorf("async: %q %v", r.replies["async"], r.results["async"])
		}
		var re *ics.RemoteError
		if !errors.As(r.results["fail"], &re) || re.Msg != "boom" {
			t.Errorf("fail: %v", r.results["fail"])
		}
		if !errors.Is(r.results["nosvc"], ics.ErrNoService) {
			t.Errorf("no service: %v", r.results["nosvc"])
		}
		if diff := cmp.Diff([]string{"oneway"}, r.msgs[2]); diff != "" {
			t.Errorf("one-way (-want +got):\n%s", diff)
		}
	})

	t.Run("large messages travel out of line intact", func(t *testing.T) {
		h := mk(t, 1, nodes(1, 2)...)
		r := recOf(h)
		big := make([]byte, 10<<20+12345)
		for i := range big {
			big[i] = byte(i * 7)
		}
		h.do(1, func(x *testNode) {
			if _, err := x.ep.Call(2, "echo", big, ics.CallOpts{Channel: ics.ChanBulk}, r.done("big")); err != nil {
				t.Fatal(err)
			}
		})
		if !h.until(30*time.Second, r.finished("big")) {
			t.Fatal("big call did not complete")
		}
		defer r.lock()()
		if r.results["big"] != nil || sha256.Sum256([]byte(r.replies["big"])) != sha256.Sum256(big) {
			t.Fatalf("big reply corrupted: %d bytes, %v", len(r.replies["big"]), r.results["big"])
		}
	})

	t.Run("urgent and normal traffic overtake bulk", func(t *testing.T) {
		h := mk(t, 1, nodes(1, 2)...)
		r := recOf(h)
		chunk := make([]byte, 1<<20)
		h.do(1, func(x *testNode) {
			for i := range 16 { // 16 MiB of bulk, queued first
				if err := x.ep.Send(2, ics.ChanBulk, "sink", append([]byte("bulk"+strconv.Itoa(i)+":"), chunk...)); err != nil {
					t.Fatal(err)
				}
			}
			if err := x.ep.Send(2, ics.ChanUrgent, "sink", []byte("urgent")); err != nil {
				t.Fatal(err)
			}
		})
		if !h.until(30*time.Second, func() bool { defer r.lock()(); return len(r.msgs[2]) == 17 }) {
			t.Fatal("messages did not all arrive")
		}
		defer r.lock()()
		pos := -1
		for i, m := range r.msgs[2] {
			if m == "urgent" {
				pos = i
			}
		}
		if pos < 0 || pos > 3 {
			t.Fatalf("urgent message delivered at position %d of 17: it waited behind bulk", pos)
		}
	})

	t.Run("flow control throttles a sender and wakes it", func(t *testing.T) {
		cfg := ics.Config{QueueMsgs: 4, Window: 4, MaxServing: 2}
		h := mk(t, 1, spec{id: 1, cfg: cfg}, spec{id: 2, cfg: cfg})
		r := recOf(h)
		accepted := 0
		var throttled bool
		var woke atomic.Bool
		h.do(1, func(x *testNode) {
			for i := range 100 {
				if x.ep.WouldThrottle(2, ics.ChanNormal) {
					break
				}
				if _, err := x.ep.Call(2, "hold", nil, ics.CallOpts{}, r.done("h"+strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
				accepted++
			}
		})
		// The server holds two, the window lets four more in flight, and
		// the queue takes four: the sender must be throttled by then.
		h.until(time.Second, func() bool { return false })
		h.do(1, func(x *testNode) {
			for x.ep.Send(2, ics.ChanNormal, "sink", nil) == nil {
				accepted++
			}
			throttled = x.ep.WouldThrottle(2, ics.ChanNormal)
			if err := x.ep.WaitForThrottle(2, ics.ChanNormal, func() { woke.Store(true) }); err != nil {
				t.Fatal(err)
			}
		})
		if !throttled || accepted > 2+4+4+1 {
			t.Fatalf("throttled=%v after %d accepted messages", throttled, accepted)
		}
		if woke.Load() {
			t.Fatal("woken while still full")
		}
		for range 20 {
			h.do(2, func(x *testNode) { x.releaseHeld("ok") })
			if h.until(100*time.Millisecond, woke.Load) {
				break
			}
		}
		if !woke.Load() {
			t.Fatal("WaitForThrottle never fired after the server drained")
		}
	})

	t.Run("cancellation reaches the server and completes the call once", func(t *testing.T) {
		h := mk(t, 1, nodes(1, 2)...)
		r := recOf(h)
		var call *ics.Call
		h.do(1, func(x *testNode) {
			var err error
			call, err = x.ep.Call(2, "hold", nil, ics.CallOpts{}, r.done("c"))
			if err != nil {
				t.Fatal(err)
			}
		})
		if !h.until(time.Second, func() bool { defer r.lock()(); return len(r.held[2]) == 1 }) {
			t.Fatal("call never reached the server")
		}
		h.do(1, func(*testNode) { call.Cancel(); call.Cancel() })
		if !h.until(time.Second, func() bool { defer r.lock()(); return r.canceled[2] == 1 }) {
			t.Fatal("server handler never saw the cancellation")
		}
		h.do(2, func(x *testNode) { x.releaseHeld("late") }) // a late reply is dropped
		h.until(100*time.Millisecond, func() bool { return false })
		defer r.lock()()
		if r.doneCnt["c"] != 1 || !errors.Is(r.results["c"], ics.ErrCanceled) {
			t.Fatalf("done ran %d times, last with %v", r.doneCnt["c"], r.results["c"])
		}
	})

	t.Run("context cancellation of a sync call travels to the server", func(t *testing.T) {
		h := mk(t, 1, nodes(1, 2)...)
		r := recOf(h)
		hold := ics.NewService[[]byte, []byte]("hold")
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			// Cancel once the server holds the call.
			for {
				r.mu.Lock()
				n := len(r.held[2])
				r.mu.Unlock()
				if n > 0 {
					cancel()
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		_, err := ics.CallSync(ctx, h.loop(1), nodeEP(h, 1), hold, 2, nil, ics.CallOpts{})
		errc <- err
		if !errors.Is(<-errc, ics.ErrCanceled) {
			t.Fatalf("sync call ended with %v", err)
		}
		if !h.until(time.Second, func() bool { defer r.lock()(); return r.canceled[2] == 1 }) {
			t.Fatal("the server's handler was not canceled")
		}
	})

	t.Run("nodedown completes every call exactly once and cancels handlers", func(t *testing.T) {
		h := mk(t, 1, nodes(1, 2)...)
		r := recOf(h)
		const n = 20
		h.do(1, func(x *testNode) {
			for i := range n {
				if _, err := x.ep.Call(2, "hold", nil, ics.CallOpts{}, r.done("d"+strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
		})
		if !h.until(time.Second, func() bool { defer r.lock()(); return len(r.held[2]) == n }) {
			t.Fatal("calls did not reach the server")
		}
		var waited atomic.Bool
		h.do(1, func(x *testNode) { x.ep.NodeDown(2, 0) })
		h.do(2, func(x *testNode) {
			x.ep.NodeDown(1, 0)
			x.ep.NodedownWait(1, func() { waited.Store(true) })
		})
		labels := make([]string, n)
		for i := range labels {
			labels[i] = "d" + strconv.Itoa(i)
		}
		if !h.until(time.Second, r.finished(labels...)) {
			t.Fatal("calls to a down node hang")
		}
		h.until(50*time.Millisecond, func() bool { return false })
		if waited.Load() {
			t.Fatal("NodedownWait fired while handlers still run")
		}
		func() {
			defer r.lock()()
			if r.canceled[2] != n {
				t.Fatalf("%d of %d handlers canceled", r.canceled[2], n)
			}
			for _, l := range labels {
				if r.doneCnt[l] != 1 || !errors.Is(r.results[l], ics.ErrNodeDown) {
					t.Fatalf("%s: done %d times with %v", l, r.doneCnt[l], r.results[l])
				}
			}
		}()
		h.do(2, func(x *testNode) { x.releaseHeld("too late") })
		if !h.until(time.Second, waited.Load) {
			t.Fatal("NodedownWait never fired")
		}
		// A new call to the down incarnation fails at once, never hangs.
		h.do(1, func(x *testNode) {
			if _, err := x.ep.Call(2, "echo", nil, ics.CallOpts{}, r.done("after")); !errors.Is(err, ics.ErrNodeDown) {
				t.Fatalf("call after nodedown: %v", err)
			}
		})
	})

	t.Run("a call continues on another path when one fails", func(t *testing.T) {
		h := mk(t, 2, nodes(1, 2)...)
		r := recOf(h)
		const n = 200
		for i := range n / 2 {
			h.do(1, func(x *testNode) {
				if _, err := x.ep.Call(2, "echo", []byte(strconv.Itoa(i)), ics.CallOpts{}, r.done("p"+strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			})
		}
		labels := make([]string, n)
		for i := range labels {
			labels[i] = "p" + strconv.Itoa(i)
		}
		if !h.until(10*time.Second, r.finished(labels[:n/2]...)) {
			t.Fatal("calls did not complete before the cut")
		}
		active := -1
		h.do(1, func(x *testNode) { active = x.ep.ActivePath(2) })
		if active < 0 {
			t.Fatal("no active path after 100 calls")
		}
		h.cutPath(1, 2, active)
		for i := n / 2; i < n; i++ {
			h.do(1, func(x *testNode) {
				if _, err := x.ep.Call(2, "echo", []byte(strconv.Itoa(i)), ics.CallOpts{}, r.done("p"+strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			})
		}
		if !h.until(20*time.Second, r.finished(labels...)) {
			t.Fatal("calls did not complete over the other path")
		}
		h.do(1, func(x *testNode) {
			if st := x.ep.Stats(); st.Failovers == 0 || x.ep.ActivePath(2) == active {
				t.Errorf("no failover: %d failovers, active path %d (cut %d)", st.Failovers, x.ep.ActivePath(2), active)
			}
		})
		defer r.lock()()
		for i, l := range labels {
			if r.results[l] != nil || r.replies[l] != strconv.Itoa(i) || r.doneCnt[l] != 1 {
				t.Fatalf("%s: %q %v (done %d times)", l, r.replies[l], r.results[l], r.doneCnt[l])
			}
		}
	})

	t.Run("frames with a wrong key, replayed, redirected or for an old incarnation are dropped", func(t *testing.T) {
		raw := &rawNode{}
		h := mk(t, 1, spec{id: 1}, spec{id: 3, factory: func(node.ID, node.Boot) node.Handler { return raw }})
		r := recOf(h)
		var inc1 uint64
		h.do(1, func(x *testNode) { inc1 = x.ep.Incarnation() })
		good := keyring(t, 1, testKey)
		bad := keyring(t, 1, []byte("another-cluster-key-another-cluster-key!!"))
		other := keyring(t, 9, []byte("another-cluster-key-another-cluster-key!!"))
		const rawInc = 5 << 20
		hello := func(kr *wire.Keyring) []byte {
			return sealRaw(t, kr, wire.Header{From: 3, To: 1, FromBoot: rawInc}, []byte{1, 1})
		}
		data := func(kr *wire.Keyring, to node.ID, toInc uint64, seq uint64, text string) []byte {
			p := []byte{3, byte(ics.ChanNormal), 3, 1, 0, 0, 0, 0, 0, 0, 0, 0}
			p = append(p, 0, 0, 0, byte(len(text)), 4, 's', 'i', 'n', 'k')
			p = append(p, text...)
			return sealRaw(t, kr, wire.Header{From: 3, To: to, FromBoot: rawInc, ToBoot: node.Boot(toInc), Seq: seq}, p)
		}
		first := data(good, 1, inc1, 1, "first")
		raw.script = [][]byte{
			hello(good),
			first,                                 // delivered
			first,                                 // replay: dropped
			data(bad, 1, inc1, 2, "badkey"),       // wrong key: dropped
			data(other, 1, inc1, 2, "unknownkey"), // key not in ring: dropped
			data(good, 2, inc1, 2, "redirected"),  // for another node: dropped
			data(good, 1, inc1-1, 2, "oldinc"),    // for an old incarnation: dropped
			data(good, 1, inc1, 2, "second"),      // delivered
		}
		h.do(3, func(*testNode) { raw.run() })
		if !h.until(5*time.Second, func() bool { defer r.lock()(); return len(r.msgs[1]) >= 2 }) {
			t.Fatal("the good frames were not delivered")
		}
		h.until(100*time.Millisecond, func() bool { return false })
		var drops map[string]uint64
		h.do(1, func(x *testNode) { drops = x.ep.Stats().Drops })
		defer r.lock()()
		if diff := cmp.Diff([]string{"first", "second"}, r.msgs[1]); diff != "" {
			t.Fatalf("delivered (-want +got):\n%s", diff)
		}
		want := map[string]uint64{"duplicate": 1, "mac": 1, "unknown-key": 1, "not-for-me": 1, "stale-incarnation": 1}
		for k, v := range want {
			if drops[k] != v {
				t.Errorf("drops[%q] = %d, want %d (all: %v)", k, drops[k], v, drops)
			}
		}
	})
}

// rawCounter numbers sealRaw's frames, so that no two share a GMAC nonce.
var rawCounter atomic.Uint64

func sealRaw(t testing.TB, kr *wire.Keyring, h wire.Header, payload []byte) []byte {
	h.Counter = rawCounter.Add(1)
	f, err := wire.Seal(nil, kr, h, payload)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// rawNode dials node 1 and sends a scripted list of frames, for tests of
// what a receiver refuses.
type rawNode struct {
	env    node.Env
	script [][]byte
}

func (r *rawNode) Start(env node.Env) { r.env = env }

// run dials node 1; the script goes once the stream is up.
func (r *rawNode) run() {
	if _, err := r.env.Net().Dial(1, 0); err != nil {
		panic(err)
	}
}
func (r *rawNode) Datagram(node.ID, int, []byte) {}
func (r *rawNode) StreamOpened(s node.Stream) {
	for _, f := range r.script {
		if err := s.Send(f); err != nil {
			panic(fmt.Sprint("raw send: ", err))
		}
	}
}
func (r *rawNode) StreamMessage(node.Stream, []byte) {}
func (r *rawNode) StreamWritable(node.Stream)        {}
func (r *rawNode) StreamClosed(node.Stream, error)   {}

var _ = bytes.Equal

func TestConformanceSim(t *testing.T) { conformance(t, newSimHarness) }
