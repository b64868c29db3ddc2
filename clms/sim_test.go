package clms_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/stack"
	"github.com/clusterinfra/ci/sim"
)

// tb is what the cluster helpers need of a test: testing.T and GinkgoT()
// both have it.
type tb interface {
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

type simCluster struct {
	t      tb
	w      *sim.World
	ids    []node.ID
	events []clms.Event
}

func newSimCluster(t tb, seed uint64, n int, cands []node.ID) *simCluster {
	kr, err := wire.NewKeyring(1, []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatalf("%v", err)
	}
	c := &simCluster{t: t, w: sim.New(sim.Config{Seed: seed, Link: sim.Link{Latency: time.Millisecond}})}
	cfg := stack.Config{
		ICS:     ics.Config{Keyring: kr},
		CLMS:    clms.Config{Candidates: cands},
		Observe: func(e clms.Event) { c.events = append(c.events, e) },
	}
	for i := 1; i <= n; i++ {
		id := node.ID(i)
		c.ids = append(c.ids, id)
		if err := c.w.AddNode(id, stack.Factory(cfg)); err != nil {
			t.Fatalf("%v", err)
		}
	}
	return c
}

func (c *simCluster) svc(id node.ID) *clms.Service {
	if h, ok := c.w.Handler(id).(*stack.Node); ok && h.CLMS != nil {
		return h.CLMS
	}
	return nil
}

// converged reports whether every running node is quorate with the same
// view and last number, equal to the set of running nodes.
func (c *simCluster) converged() (bool, string) {
	var running []node.ID
	for _, id := range c.ids {
		if c.w.State(id) == sim.Running {
			running = append(running, id)
		}
	}
	var last uint64
	var master node.ID
	for i, id := range running {
		s := c.svc(id)
		if s == nil || !s.Quorate() {
			return false, fmt.Sprintf("n%d not quorate", id)
		}
		num, view := s.Membership()
		if !slices.Equal(view, running) {
			return false, fmt.Sprintf("n%d view %v, running %v", id, view, running)
		}
		if i == 0 {
			last, master = num, s.Master()
		} else if num != last || s.Master() != master {
			return false, fmt.Sprintf("n%d at #%d master n%d, others #%d n%d", id, num, s.Master(), last, master)
		}
	}
	return true, ""
}

func (c *simCluster) waitConverged(d time.Duration) time.Duration {
	start := c.w.Now()
	why := ""
	for c.w.Now()-start < d {
		_ = c.w.RunFor(5 * time.Millisecond)
		var ok bool
		if ok, why = c.converged(); ok {
			return c.w.Now() - start
		}
	}
	c.t.Fatalf("not converged after %v: %s", d, why)
	return 0
}

func TestFormAndMasterCrash(t *testing.T) {
	c := newSimCluster(t, 1, 5, []node.ID{1, 2, 3})
	for _, id := range c.ids {
		_ = c.w.Boot(id)
	}
	took := c.waitConverged(10 * time.Second)
	t.Logf("formed in %v", took)
	m := c.svc(1).Master()
	if err := c.w.Crash(m); err != nil {
		t.Fatalf("%v", err)
	}
	took = c.waitConverged(5 * time.Second)
	t.Logf("master n%d crash: converged in %v", m, took)
	h := c.svc(c.ids[4]).History()
	for _, tr := range h {
		t.Log(tr)
	}
}

func TestCleanupReachesDown(t *testing.T) {
	c := newSimCluster(t, 2, 5, []node.ID{1, 2, 3})
	for _, id := range c.ids {
		_ = c.w.Boot(id)
	}
	c.waitConverged(10 * time.Second)
	start := c.w.Now()
	_ = c.w.Crash(5)
	c.waitConverged(5 * time.Second)
	_ = c.w.RunFor(time.Second)
	for _, tr := range c.svc(1).History()[10:] {
		t.Log(tr)
	}
	if st := c.svc(1).State(5); st != clms.StateDown {
		t.Fatalf("n5 is %v", st)
	}
	for _, e := range c.events {
		if e.Kind == clms.EvApplied && e.T.Node == 5 && e.T.To == clms.StateKCleanup {
			t.Logf("n%d applied nodedown at +%v", e.Node, e.T.Time.Sub(c.events[0].T.Time))
		}
	}
	_ = start
	_ = c.w.Restart(5)
	c.waitConverged(5 * time.Second)
	for _, tr := range c.svc(1).History()[10:] {
		t.Log(tr)
	}
}

func TestNodeInfoFromAMember(t *testing.T) {
	kr, _ := wire.NewKeyring(1, []byte("0123456789abcdef0123456789abcdef"))
	c := &simCluster{t: t, w: sim.New(sim.Config{Seed: 3, Link: sim.Link{Latency: time.Millisecond}})}
	for i := 1; i <= 3; i++ {
		id := node.ID(i)
		cfg := stack.Config{ICS: ics.Config{Keyring: kr}, CLMS: clms.Config{Candidates: []node.ID{1, 2, 3}, CPUs: i * 2, MemoryMB: uint64(i) * 1024,
			Names: map[node.ID]string{1: "alpha", 2: "beta", 3: "gamma"}}}
		c.ids = append(c.ids, id)
		_ = c.w.AddNode(id, stack.Factory(cfg))
		_ = c.w.Boot(id)
	}
	c.waitConverged(5 * time.Second)
	var got clms.Info
	var gerr error
	called := 0
	_ = c.w.Do(1, func(h node.Handler) {
		h.(*stack.Node).CLMS.NodeInfoFrom(3, func(i clms.Info, err error) { got, gerr = i, err; called++ })
	})
	_ = c.w.RunFor(100 * time.Millisecond)
	if called != 1 || gerr != nil {
		t.Fatalf("done ran %d times, err %v", called, gerr)
	}
	if got.CPUs != 6 || got.MemoryMB != 3072 || got.Name != "gamma" || got.State != clms.StateUp {
		t.Fatalf("info %+v", got)
	}
	if id, err := c.svc(2).NodeByName("beta"); err != nil || id != 2 {
		t.Fatalf("NodeByName: %v %v", id, err)
	}
	if c.svc(1).MaxNodes() != node.MaxID || !c.svc(1).NodeAvail(2) || c.svc(1).ClusterName() == "" || c.svc(3).LocalNode() != 3 {
		t.Fatal("libcluster basics wrong")
	}
	if _, err := c.svc(1).Detailed(clms.First, 0); err != nil {
		t.Fatal(err)
	}
	if tr, ok := c.svc(1).NextTransition(0); !ok || !tr.Simple() {
		t.Fatalf("NextTransition: %v %v", tr, ok)
	}
	_ = c.w.Crash(3)
	c.waitConverged(3 * time.Second)
	called = 0
	_ = c.w.Do(1, func(h node.Handler) {
		h.(*stack.Node).CLMS.NodeInfoFrom(3, func(i clms.Info, err error) { gerr = err; called++ })
	})
	_ = c.w.RunFor(100 * time.Millisecond)
	if called != 1 || gerr == nil {
		t.Fatalf("asking a down node: done %d times, err %v", called, gerr)
	}
}
