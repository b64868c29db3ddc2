package host

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterinfra/ci/node"
)

func TestBootCounterGrowsAcrossStarts(t *testing.T) {
	tn := startNode(t, 1, 1, nil, nil)
	var boots, factoryBoots []node.Boot
	for i := range 3 {
		if i > 0 {
			tn.start(t)
		}
		call(t, tn, func(r *rec) { boots = append(boots, r.env.Boot()) })
		factoryBoots = append(factoryBoots, tn.r().boot)
		if tn.Boot() != node.Boot(i+1) {
			t.Errorf("Node.Boot = %d, want %d", tn.Boot(), i+1)
		}
		tn.closeNode(t)
	}
	want := []node.Boot{1, 2, 3}
	if diff := cmp.Diff(want, boots); diff != "" {
		t.Errorf("Env.Boot over three starts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, factoryBoots); diff != "" {
		t.Errorf("Factory boot over three starts (-want +got):\n%s", diff)
	}
	b, err := os.ReadFile(filepath.Join(tn.dir, bootFile))
	if err != nil || strings.TrimSpace(string(b)) != "3" {
		t.Errorf("boot file holds %q (%v), want 3", b, err)
	}
}

func TestBootCounterCorruptIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, bootFile), []byte("seven\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(Config{Self: 1, Listen: loopback(1), StateDir: dir}, (&tnode{}).factory)
	if err == nil || !strings.HasPrefix(err.Error(), "host: ") {
		t.Fatalf("Start with a corrupt boot counter: %v, want a host: error", err)
	}
}

func TestStateDirIsLocked(t *testing.T) {
	tn := startNode(t, 1, 1, nil, nil)
	cfg := tn.cfg
	_, err := Start(cfg, (&tnode{}).factory)
	if !errors.Is(err, ErrStateDirLocked) {
		t.Fatalf("second Start on a state dir in use: %v, want ErrStateDirLocked", err)
	}
	tn.closeNode(t)
	tn.start(t) // the lock went with Close
	if tn.Boot() != 2 {
		t.Errorf("boot after the refused start = %d, want 2 (a refused start must not count)", tn.Boot())
	}
}

func TestStorageSurvivesRestartOnlyWhenSynced(t *testing.T) {
	tn := startNode(t, 1, 1, nil, nil)
	call(t, tn, func(r *rec) {
		st := r.env.Storage()
		for _, err := range []error{st.Put("synced", []byte("yes")), st.Sync(), st.Put("unsynced", []byte("no"))} {
			if err != nil {
				t.Errorf("storage: %v", err)
			}
		}
	})
	tn.closeNode(t)
	tn.start(t)
	call(t, tn, func(r *rec) {
		keys, err := r.env.Storage().Keys()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"synced"}, keys); diff != "" {
			t.Errorf("keys after restart (-want +got):\n%s", diff)
		}
	})
}

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	ok := func() Config { return Config{Self: 1, Listen: loopback(1), StateDir: dir} }
	addr := netip.MustParseAddrPort("127.0.0.1:7000")
	tests := []struct {
		name string
		mod  func(c *Config)
	}{
		{"self zero", func(c *Config) { c.Self = 0 }},
		{"self too big", func(c *Config) { c.Self = node.MaxID + 1 }},
		{"no listen", func(c *Config) { c.Listen = nil }},
		{"invalid listen", func(c *Config) { c.Listen = []netip.AddrPort{{}} }},
		{"duplicate listen", func(c *Config) { c.Listen = []netip.AddrPort{addr, addr} }},
		{"no state dir", func(c *Config) { c.StateDir = "" }},
		{"negative timeout", func(c *Config) { c.StreamTimeout = -time.Second }},
		{"sub-ms timeout", func(c *Config) { c.StreamTimeout = time.Microsecond }},
		{"negative buffer", func(c *Config) { c.StreamBuffer = -1 }},
		{"negative max message", func(c *Config) { c.MaxMessage = -1 }},
		{"huge max message", func(c *Config) { c.MaxMessage = 1 << 40 }},
		{"negative inbox", func(c *Config) { c.Inbox = -1 }},
		{"bad peer id", func(c *Config) { c.Peers = map[node.ID][]netip.AddrPort{0: {addr}} }},
		{"peer without address", func(c *Config) { c.Peers = map[node.ID][]netip.AddrPort{2: {}} }},
		{"peer with more paths", func(c *Config) { c.Peers = map[node.ID][]netip.AddrPort{2: {addr, addr}} }},
		{"peer on port 0", func(c *Config) {
			c.Peers = map[node.ID][]netip.AddrPort{2: {netip.MustParseAddrPort("127.0.0.1:0")}}
		}},
		{"peer unspecified", func(c *Config) {
			c.Peers = map[node.ID][]netip.AddrPort{2: {netip.MustParseAddrPort("0.0.0.0:7000")}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok()
			tt.mod(&c)
			n, err := Start(c, (&tnode{}).factory)
			if err == nil {
				n.Close()
				t.Fatal("Start accepted a bad config")
			}
			if !errors.Is(err, ErrConfig) || !strings.HasPrefix(err.Error(), "host: ") {
				t.Errorf("error %q: want ErrConfig with the host: prefix", err)
			}
		})
	}
	t.Run("nil factory", func(t *testing.T) {
		if _, err := Start(ok(), nil); !errors.Is(err, ErrConfig) {
			t.Errorf("nil factory: %v", err)
		}
	})
	t.Run("nil handler", func(t *testing.T) {
		_, err := Start(ok(), func(node.ID, node.Boot) node.Handler { return nil })
		if !errors.Is(err, ErrConfig) {
			t.Errorf("nil handler: %v", err)
		}
	})
	t.Run("SetPeers validates", func(t *testing.T) {
		tn := startNode(t, 1, 1, nil, nil)
		if err := tn.SetPeers(map[node.ID][]netip.AddrPort{2: {addr, addr}}); !errors.Is(err, ErrConfig) {
			t.Errorf("SetPeers with two paths on a one-path node: %v", err)
		}
	})
}

func TestAddrsAreBoundForTCPAndUDP(t *testing.T) {
	tn := startNode(t, 1, 2, nil, nil)
	addrs := tn.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("Addrs = %v, want 2", addrs)
	}
	for i, a := range addrs {
		if a.Port() == 0 || a.Addr() != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("path %d bound to %v", i, a)
		}
		if got := tn.udp[i].LocalAddr().String(); got != a.String() {
			t.Errorf("path %d: UDP on %s, TCP on %s", i, got, a)
		}
	}
	if addrs[0] == addrs[1] {
		t.Errorf("two paths share %v", addrs[0])
	}
}

func TestClock(t *testing.T) {
	tn := startNode(t, 1, 1, nil, nil)
	var now1, now2 time.Duration
	var wall time.Time
	call(t, tn, func(r *rec) { now1, wall = r.env.Clock().Now(), r.env.Clock().Wall() })
	if d := time.Since(wall); d < -time.Second || d > time.Second {
		t.Errorf("Wall is %v off the OS clock", d)
	}
	tn.SetClockOffset(time.Hour)
	call(t, tn, func(r *rec) { now2, wall = r.env.Clock().Now(), r.env.Clock().Wall() })
	if d := time.Until(wall); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("Wall after a +1h step is %v ahead, want about 1h", d)
	}
	if now2 < now1 || now2 > 10*time.Second {
		t.Errorf("Now went %v → %v; want monotonic and counted from Start", now1, now2)
	}
	fired := make(chan time.Duration, 1)
	var set time.Duration
	call(t, tn, func(r *rec) {
		set = r.env.Clock().Now()
		r.env.Clock().AfterFunc(30*time.Millisecond, func() { fired <- r.env.Clock().Now() })
	})
	select {
	case at := <-fired:
		if at-set < 30*time.Millisecond {
			t.Errorf("AfterFunc(30ms) fired after %v", at-set)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc never fired")
	}
}

func TestTimerStop(t *testing.T) {
	tn := startNode(t, 1, 1, nil, nil)
	r := tn.r()
	var ran atomic.Int32

	t.Run("before firing", func(t *testing.T) {
		ran.Store(0)
		var tm node.Timer
		call(t, tn, func(r *rec) { tm = r.env.Clock().AfterFunc(40*time.Millisecond, func() { ran.Add(1) }) })
		if !tm.Stop() {
			t.Fatal("Stop of a pending timer = false")
		}
		if tm.Stop() {
			t.Error("second Stop = true")
		}
		time.Sleep(120 * time.Millisecond)
		call(t, tn, func(*rec) {}) // anything due has had its turn
		if ran.Load() != 0 {
			t.Error("a stopped timer ran")
		}
	})

	t.Run("far future", func(t *testing.T) {
		ran.Store(0)
		var tm node.Timer
		call(t, tn, func(r *rec) { tm = r.env.Clock().AfterFunc(math.MaxInt64, func() { ran.Add(1) }) })
		call(t, tn, func(*rec) {})
		if ran.Load() != 0 || !tm.Stop() {
			t.Error("a timer set for the far future fired or could not be stopped")
		}
	})

	t.Run("after firing", func(t *testing.T) {
		ran.Store(0)
		var tm node.Timer
		call(t, tn, func(r *rec) { tm = r.env.Clock().AfterFunc(time.Millisecond, func() { ran.Add(1) }) })
		waitFor(t, func() bool { return ran.Load() == 1 }, "timer to fire")
		if tm.Stop() {
			t.Error("Stop after the callback ran = true")
		}
	})

	t.Run("due but not yet run", func(t *testing.T) {
		// Both timers are due when the first one runs; the second has
		// fired in OS terms, but Stop must still win.
		ran.Store(0)
		var stopped atomic.Bool
		call(t, tn, func(r *rec) {
			var second node.Timer
			r.env.Clock().AfterFunc(0, func() { stopped.Store(second.Stop()) })
			second = r.env.Clock().AfterFunc(0, func() { ran.Add(1) })
			time.Sleep(5 * time.Millisecond) // both deadlines pass inside this callback
		})
		call(t, tn, func(*rec) {})
		time.Sleep(20 * time.Millisecond)
		call(t, tn, func(*rec) {})
		if !stopped.Load() {
			t.Error("Stop of a due timer whose callback had not run = false")
		}
		if ran.Load() != 0 {
			t.Error("a timer stopped while due still ran")
		}
	})

	t.Run("zero delay runs after the current callback, in order", func(t *testing.T) {
		var mu sync.Mutex
		var order []int
		note := func(i int) { mu.Lock(); order = append(order, i); mu.Unlock() }
		call(t, tn, func(r *rec) {
			for i := range 5 {
				r.env.Clock().AfterFunc(-time.Second, func() { note(i) })
			}
			r.env.Clock().AfterFunc(0, func() { note(5) })
			note(-1)
		})
		waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 7 }, "timers to run")
		if diff := cmp.Diff([]int{-1, 0, 1, 2, 3, 4, 5}, order); diff != "" {
			t.Errorf("order (-want +got):\n%s", diff)
		}
	})

	t.Run("Stop from another goroutine", func(t *testing.T) {
		ran.Store(0)
		var timers []node.Timer
		call(t, tn, func(r *rec) {
			for range 200 {
				timers = append(timers, r.env.Clock().AfterFunc(time.Duration(r.env.Rand().IntN(4))*time.Millisecond, func() { ran.Add(1) }))
			}
		})
		stops := 0
		for _, tm := range timers {
			if tm.Stop() {
				stops++
			}
		}
		time.Sleep(20 * time.Millisecond)
		call(t, tn, func(*rec) {})
		if got := int(ran.Load()) + stops; got != len(timers) {
			t.Errorf("%d ran + %d stopped = %d, want exactly %d", ran.Load(), stops, got, len(timers))
		}
	})
	if r.overlaps.Load() != 0 {
		t.Errorf("%d overlapping callbacks", r.overlaps.Load())
	}
}

func TestDoAndEnvAfterClose(t *testing.T) {
	a := startNode(t, 1, 1, nil, nil)
	b := startNode(t, 2, 1, nil, nil)
	introduce(t, a, b)
	env := a.r().env
	a.closeNode(t)
	if err := a.Do(func(node.Handler) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := env.Net().Dial(2, 0); !errors.Is(err, node.ErrUnreachable) {
		t.Errorf("Dial after Close: %v", err)
	}
	if err := env.Net().SendDatagram(2, 0, []byte("x")); !errors.Is(err, node.ErrUnreachable) {
		t.Errorf("SendDatagram after Close: %v", err)
	}
	if tm := env.Clock().AfterFunc(0, func() { t.Error("timer ran after Close") }); tm.Stop() {
		t.Error("a timer made after Close could be stopped")
	}
	if err := env.Storage().Put("k", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Storage.Put after Close: %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	if a.r().late.Load() != 0 {
		t.Error("a callback ran after Close")
	}
}

// TestCallbacksNeverOverlap floods one node from two peers (datagrams and
// stream messages), from several goroutines (Do) and from its own
// timers, and checks that no callback ever starts while another runs.
func TestCallbacksNeverOverlap(t *testing.T) {
	work := func(r *rec) { runtime.Gosched() }
	target := startNode(t, 1, 1, nil, func(r *rec) {
		r.onMsg = func(r *rec, _ node.Stream, _ []byte) { work(r) }
	})
	p2 := startNode(t, 2, 1, nil, nil)
	p3 := startNode(t, 3, 1, nil, nil)
	introduce(t, target, p2, p3)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range []*tnode{p2, p3} {
		s, _ := dial(t, p, target, 0)
		call(t, p, func(r *rec) {
			var tick func()
			tick = func() {
				select {
				case <-stop:
					return
				default:
				}
				for i := range 20 {
					_ = r.env.Net().SendDatagram(1, 0, []byte{byte(i)})
					_ = s.Send([]byte{byte(i)})
				}
				r.env.Clock().AfterFunc(time.Millisecond, tick)
			}
			tick()
		})
	}
	var ticks, doRuns atomic.Int64
	call(t, target, func(r *rec) {
		var tick func()
		tick = func() {
			r.enter()
			defer r.exit()
			ticks.Add(1)
			work(r)
			select {
			case <-stop:
				return
			default:
			}
			r.env.Clock().AfterFunc(0, tick)
		}
		tick()
	})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := target.Do(func(h node.Handler) {
					r := h.(*rec)
					r.enter()
					defer r.exit()
					doRuns.Add(1)
					work(r)
				}); err != nil {
					t.Errorf("Do: %v", err)
					return
				}
				// Pace the callers a little: four goroutines blocked on
				// a full inbox would otherwise take every free slot, and
				// datagrams (which never wait) would all be dropped.
				time.Sleep(50 * time.Microsecond)
			}
		})
	}
	// Run until every source has had many turns; the flood goes on
	// throughout. Blocking Do calls keep the inbox full, so most
	// datagrams are dropped by design, but enough get through.
	r := target.r()
	load := func() string {
		return fmt.Sprintf("%d datagrams, %d messages, %d Do, %d timer ticks", r.count("dgram"), r.count("msg"), doRuns.Load(), ticks.Load())
	}
	deadline := time.Now().Add(10 * time.Second)
	for !(r.count("dgram") >= 1000 && r.count("msg") >= 2000 && doRuns.Load() >= 2000 && ticks.Load() >= 2000) {
		if time.Now().After(deadline) {
			t.Errorf("too little load after 10s: %s", load())
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if r.overlaps.Load() != 0 {
		t.Fatalf("%d callbacks overlapped another (%s)", r.overlaps.Load(), load())
	}
}

// TestCloseStopsEverything closes nodes in the middle of traffic and
// checks that Close leaves no goroutine behind and that no callback runs
// after it returns.
func TestCloseStopsEverything(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		a := startNode(t, 1, 2, nil, nil)
		b := startNode(t, 2, 2, nil, nil)
		introduce(t, a, b)
		dial(t, a, b, 0)
		sb, _ := dial(t, b, a, 1)
		// A dial that never completes: nobody answers the handshake.
		silent, err := netListen()
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		peers := introduce(t, a, b)
		peers[3] = []netip.AddrPort{silent.addr, silent.addr}
		if err := a.SetPeers(peers); err != nil {
			t.Fatal(err)
		}
		call(t, a, func(r *rec) {
			if _, err := r.env.Net().Dial(3, 0); err != nil {
				t.Error(err)
			}
			// A pending timer and a stream with queued data.
			r.env.Clock().AfterFunc(time.Hour, func() {})
		})
		// b floods a with datagrams and stream messages while a closes.
		call(t, b, func(r *rec) {
			var tick func()
			tick = func() {
				for range 10 {
					_ = r.env.Net().SendDatagram(1, 0, []byte("flood"))
					_ = sb.Send([]byte("flood"))
				}
				r.env.Clock().AfterFunc(100*time.Microsecond, tick)
			}
			tick()
		})
		waitFor(t, func() bool { return a.r().count("dgram") > 10 }, "flood to arrive")
		a.closeNode(t)
		time.Sleep(50 * time.Millisecond)
		if late := a.r().late.Load(); late != 0 {
			t.Errorf("%d callbacks ran after Close returned", late)
		}
		waitFor(t, func() bool { return b.r().count("closed") == 2 }, "b to see both streams break")
		b.closeNode(t)
	}()
	settleGoroutines(t, base)
}

// TestTryDo checks TryDo's promise: it runs f at once on an idle node,
// and refuses (so the caller falls back to Do) while the loop holds the
// token or an event waits, so that it never overtakes an earlier Do.
func TestTryDo(t *testing.T) {
	a := startNode(t, 1, 1, nil, nil)
	waitFor(t, func() bool { return a.pending.Load() == 0 }, "n1 idle")
	ran := false
	if !a.TryDo(func(h node.Handler) { ran = h.(*rec) != nil }) || !ran {
		t.Fatal("TryDo on an idle node did not run f")
	}
	// A Do that blocks the loop: TryDo must not run meanwhile, and must
	// not run while a second Do waits behind it.
	release := make(chan struct{})
	entered := make(chan struct{})
	if err := a.Do(func(node.Handler) { close(entered); <-release }); err != nil {
		t.Fatal(err)
	}
	<-entered
	var order []int
	if err := a.Do(func(node.Handler) { order = append(order, 1) }); err != nil {
		t.Fatal(err)
	}
	if a.TryDo(func(node.Handler) { order = append(order, 2) }) {
		t.Fatal("TryDo ran while the loop was busy")
	}
	close(release)
	waitFor(t, func() bool { return a.pending.Load() == 0 }, "the queued Do ran")
	if !a.TryDo(func(node.Handler) { order = append(order, 3) }) {
		t.Fatal("TryDo refused on an idle node")
	}
	if len(order) != 2 || order[0] != 1 || order[1] != 3 {
		t.Fatalf("order %v, want [1 3]", order)
	}
	a.closeNode(t)
	if a.TryDo(func(node.Handler) { t.Error("ran after Close") }) {
		t.Fatal("TryDo ran after Close")
	}
}

// TestAlloc checks env.Alloc: a small buffer is handed over at once; a
// large one later, on the loop (it comes through the inbox like a Do),
// zeroed and of the size asked for.
func TestAlloc(t *testing.T) {
	a := startNode(t, 1, 1, nil, nil)
	done := make(chan []byte, 2)
	if err := a.Do(func(node.Handler) {
		small := false
		a.env.Alloc(100, func(b []byte) { small = len(b) == 100 })
		if !small {
			t.Error("a small Alloc was not handed over at once")
		}
		a.env.Alloc(allocInline, func(b []byte) {
			if !a.loopMu.TryLock() {
				done <- b // the token is held: by this callback
				return
			}
			a.loopMu.Unlock()
			t.Error("Alloc's callback ran without the loop token")
			done <- b
		})
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-done:
		if len(b) != allocInline || slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) {
			t.Fatalf("Alloc handed over %d bytes, not %d zeroed ones", len(b), allocInline)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a large Alloc never came")
	}
	a.closeNode(t)
}
