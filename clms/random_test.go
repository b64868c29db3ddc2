package clms_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/stack"
	"github.com/clusterinfra/ci/scenarios/check"
	"github.com/clusterinfra/ci/sim"
)

// randomRun runs a cluster through random faults for a while (the safety
// phase), then heals everything and requires convergence (the liveness
// phase), with the invariant checker watching every event.
func randomRun(t tb, seed uint64) {
	kr, _ := wire.NewKeyring(1, []byte("0123456789abcdef0123456789abcdef"))
	fr := rand.New(rand.NewPCG(seed, 3))
	n := 3 + fr.IntN(5)
	cands := []node.ID{1, 2, 3}
	if n >= 5 && fr.IntN(2) == 0 {
		cands = []node.ID{1, 2, 3, 4, 5}
	}
	w := sim.New(sim.Config{Seed: seed, Link: sim.Link{Latency: time.Millisecond, Jitter: 500 * time.Microsecond}})
	ck := check.New(cands)
	c := &simCluster{t: t, w: w}
	cfg := stack.Config{
		ICS:  ics.Config{Keyring: kr},
		CLMS: clms.Config{Candidates: cands},
	}
	for i := 1; i <= n; i++ {
		id := node.ID(i)
		c.ids = append(c.ids, id)
		cfgN := cfg
		cfgN.Observe = func(e clms.Event) { ck.Event(w.Now(), w.BootCount(e.Node), e) }
		if err := w.AddNode(id, stack.Factory(cfgN)); err != nil {
			t.Fatalf("%v", err)
		}
		_ = w.Boot(id)
	}
	c.waitConverged(10 * time.Second)
	down := func() int { // candidates crashed or paused
		k := 0
		for _, id := range cands {
			if w.State(id) != sim.Running {
				k++
			}
		}
		return k
	}
	end := w.Now() + 20*time.Second
	for w.Now() < end && ck.Violation() == nil {
		id := c.ids[fr.IntN(n)]
		isCand := int(id) <= len(cands)
		switch fr.IntN(9) {
		case 0:
			if w.State(id) == sim.Running && (!isCand || down() < (len(cands)-1)/2) {
				_ = w.Crash(id)
			}
		case 1:
			_ = w.Restart(id)
		case 2:
			if w.State(id) == sim.Running && (!isCand || down() < (len(cands)-1)/2) {
				_ = w.Pause(id)
			}
		case 3:
			_ = w.Resume(id)
		case 4:
			perm := fr.Perm(n)
			k := 1 + fr.IntN(n-1)
			var a, b []node.ID
			for i, p := range perm {
				if i < k {
					a = append(a, c.ids[p])
				} else {
					b = append(b, c.ids[p])
				}
			}
			_ = w.Partition(a, b)
		case 5:
			_ = w.Cut(id, c.ids[fr.IntN(n)])
		case 6:
			_ = w.SetLink(id, c.ids[fr.IntN(n)], -1, sim.Link{Latency: time.Millisecond, Loss: fr.Float64() * 0.3})
		case 7:
			_ = w.SetClock(id, time.Duration(fr.IntN(2000)-1000)*time.Millisecond, int64(fr.IntN(2001)-1000))
		case 8:
			w.Heal()
		}
		_ = w.RunFor(time.Duration(50+fr.IntN(1500)) * time.Millisecond)
	}
	if v := ck.Violation(); v != nil {
		t.Fatalf("seed %d: %v (replay: go test ./clms -ginkgo.focus='seed %d\\)')", seed, v, seed)
	}
	w.Heal()
	for _, id := range c.ids {
		_ = w.Resume(id)
		_ = w.Restart(id)
	}
	c.waitConverged(30 * time.Second)
	if v := ck.Violation(); v != nil {
		t.Fatalf("seed %d: %v", seed, v)
	}
}

func TestCLMS(t *testing.T) {
	gomega.RegisterFailHandler(Fail)
	RunSpecs(t, "clms")
}

// The always-on invariants hold across random faults, and after healing
// every live node converges to the same view: 50 seeds in make test,
// 5,000 in make soak.
var _ = Describe("CLMS under random faults", func() {
	seeds := 50
	if os.Getenv("SOAK") != "" {
		seeds = 5000
	}
	for seed := 1; seed <= seeds; seed++ {
		It(fmt.Sprintf("keeps every invariant and converges after healing (seed %d)", seed), func() {
			randomRun(GinkgoT(), uint64(seed))
		})
	}
})
