package ics_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/sim"
)

// soakNode issues calls to random peers and serves echo, some replies
// late. It records every call it makes in the shared ledger.
type soakNode struct {
	testNode
	led   *ledger
	peers []node.ID
	rate  time.Duration
}

type callKey struct {
	caller node.ID
	boot   node.Boot
	n      int
}

// ledger is the checker's view: every call made and how often its done
// ran. It lives outside the nodes, as checkers must.
type ledger struct {
	made    map[callKey]bool
	done    map[callKey]int
	errs    map[string]int
	budget  int // calls still to make
	issued  int
	maxSeen map[string]int
}

func (n *soakNode) Start(env node.Env) {
	n.testNode.Start(env)
	_ = n.ep.Handle("slow", func(r *ics.Request, b []byte) {
		env.Clock().AfterFunc(time.Duration(env.Rand().IntN(20))*time.Millisecond, func() { _ = r.Reply(b) })
	})
	count := 0
	var tick func()
	tick = func() {
		r := env.Rand()
		if n.led.budget > 0 {
			peer := n.peers[r.IntN(len(n.peers))]
			if peer != n.id {
				size := r.IntN(200)
				if r.IntN(100) == 0 {
					size = 200 << 10 // now and then a multi-chunk call
				}
				svc := "echo"
				if r.IntN(3) == 0 {
					svc = "slow"
				}
				opts := ics.CallOpts{Channel: []ics.Channel{ics.ChanNormal, ics.ChanBulk, ics.ChanNested}[r.IntN(3)]}
				if r.IntN(4) == 0 {
					opts.Timeout = time.Duration(50+r.IntN(500)) * time.Millisecond
				}
				count++
				k := callKey{n.id, env.Boot(), count}
				_, err := n.ep.Call(peer, svc, make([]byte, size), opts, func(_ []byte, err error) {
					n.led.done[k]++
					n.led.errs[errKind(err)]++
				})
				if err == nil {
					n.led.made[k] = true
					n.led.budget--
					n.led.issued++
				}
			}
		}
		env.Clock().AfterFunc(time.Duration(1+r.IntN(int(2*n.rate))), tick)
	}
	tick()
}

func errKind(err error) string {
	if err == nil {
		return "ok"
	}
	for _, e := range []error{ics.ErrNodeDown, ics.ErrTimeout, ics.ErrCanceled, ics.ErrNoService} {
		if errorsIs(err, e) {
			return e.Error()
		}
	}
	return err.Error()
}

// soak runs calls RPCs across 8 nodes with random loss, partitions and
// crashes; it returns the ledger for checks.
func soak(t *testing.T, seed uint64, calls int) {
	const nn = 8
	w := sim.New(sim.Config{Seed: seed, Paths: 2, Link: sim.Link{Latency: 200 * time.Microsecond, Jitter: 100 * time.Microsecond}})
	led := &ledger{made: map[callKey]bool{}, done: map[callKey]int{}, errs: map[string]int{}, budget: calls, maxSeen: map[string]int{}}
	r := newRec()
	cfg := ics.Config{Keyring: keyring(t, 1, testKey), QueueMsgs: 64, Window: 32}
	var ids []node.ID
	for i := 1; i <= nn; i++ {
		ids = append(ids, node.ID(i))
	}
	live := map[node.ID]*soakNode{}
	for _, id := range ids {
		if err := w.AddNode(id, func(id node.ID, boot node.Boot) node.Handler {
			n := &soakNode{testNode: testNode{id: id, r: r, cfg: cfg}, led: led, peers: ids, rate: time.Millisecond * nn}
			live[id] = n
			return n
		}); err != nil {
			t.Fatal(err)
		}
		_ = w.Boot(id)
	}
	fr := rand.New(rand.NewPCG(seed, 7))
	crashed := map[node.ID]bool{}
	// The membership oracle: what CLMS will do. A crash is followed by a
	// nodedown on every survivor a little later.
	nodedown := func(id node.ID, inc uint64) {
		w.After(time.Duration(100+fr.IntN(300))*time.Millisecond, func() {
			for _, o := range ids {
				if o != id && w.Handler(o) != nil {
					_ = w.Do(o, func(h node.Handler) { h.(*soakNode).ep.NodeDown(id, inc) })
				}
			}
		})
	}
	var fault func()
	fault = func() {
		id := ids[fr.IntN(nn)]
		switch fr.IntN(6) {
		case 0:
			if !crashed[id] && len(crashed) < 2 {
				inc := live[id].ep.Incarnation()
				_ = w.Crash(id)
				crashed[id] = true
				nodedown(id, inc)
			}
		case 1:
			for c := range crashed {
				_ = w.Restart(c)
				delete(crashed, c)
				break
			}
		case 2:
			perm := fr.Perm(nn)
			var a, b []node.ID
			for i, p := range perm {
				if i < nn/2 {
					a = append(a, ids[p])
				} else {
					b = append(b, ids[p])
				}
			}
			_ = w.Partition(a, b)
			w.After(time.Duration(50+fr.IntN(800))*time.Millisecond, w.Heal)
		case 3:
			_ = w.SetLink(id, ids[fr.IntN(nn)], -1, sim.Link{Latency: time.Millisecond, Loss: fr.Float64() * 0.3})
		case 4:
			_ = w.CutPath(id, ids[fr.IntN(nn)], fr.IntN(2))
		case 5:
			w.Heal()
		}
		if led.budget > 0 {
			w.After(time.Duration(20+fr.IntN(200))*time.Millisecond, fault)
		}
	}
	w.After(100*time.Millisecond, fault)
	// Queue bounds, checked every simulated millisecond.
	bad := ""
	var check func()
	check = func() {
		for _, a := range ids {
			h, ok := w.Handler(a).(*soakNode)
			if !ok || h.ep == nil {
				continue
			}
			for _, b := range ids {
				for ch := ics.Channel(0); ch < ics.NumChannels; ch++ {
					q, f := h.ep.QueueLen(b, ch)
					if ch != ics.ChanReply && ch != ics.ChanUrgent && q > cfg.QueueMsgs && bad == "" {
						bad = fmt.Sprintf("n%d->n%d %s: %d queued > %d", a, b, ch, q, cfg.QueueMsgs)
					}
					if f > cfg.Window && bad == "" {
						bad = fmt.Sprintf("n%d->n%d %s: %d in flight > %d", a, b, ch, f, cfg.Window)
					}
				}
			}
		}
		if bad == "" {
			w.After(time.Millisecond, check)
		}
	}
	w.After(time.Millisecond, check)
	limit := time.Duration(calls/500+60) * time.Second
	for led.budget > 0 && w.Now() < limit && bad == "" {
		_ = w.RunFor(100 * time.Millisecond)
	}
	// Liveness phase: heal, restart, and every call of a live caller must
	// complete.
	w.Heal()
	for c := range crashed {
		_ = w.Restart(c)
	}
	pending := func() (n int, ex callKey) {
		for k := range led.made {
			if led.done[k] == 0 && w.BootCount(k.caller) == k.boot && w.State(k.caller) == sim.Running {
				n++
				ex = k
			}
		}
		return
	}
	for i := 0; i < 600; i++ {
		if n, _ := pending(); n == 0 {
			break
		}
		_ = w.RunFor(100 * time.Millisecond)
	}
	if bad != "" {
		t.Fatalf("seed %d: queue bound broken: %s", seed, bad)
	}
	if led.budget > 0 {
		t.Fatalf("seed %d: only %d of %d calls made in %s", seed, led.issued, calls, limit)
	}
	if n, ex := pending(); n > 0 {
		t.Fatalf("seed %d: %d calls never completed, e.g. %+v (replay: go test ./ics -run Soak)", seed, n, ex)
	}
	for k, c := range led.done {
		if c != 1 {
			t.Fatalf("seed %d: call %+v completed %d times", seed, k, c)
		}
	}
	t.Logf("soak seed %d: %d calls in %.1fs simulated, outcomes %v", seed, led.issued, w.Now().Seconds(), led.errs)
	if led.errs["ok"] < led.issued/2 {
		t.Fatalf("seed %d: too few calls succeeded (%v): the faults drown the test", seed, led.errs)
	}
}

// TestSoakRPC makes 50,000 calls in `make test` and 1,000,000 (and more
// seeds) in `make soak`.
func TestSoakRPC(t *testing.T) {
	calls, seeds := 50_000, 2
	if os.Getenv("SOAK") != "" {
		calls, seeds = 1_000_000, 5
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		soak(t, seed, calls)
	}
}
