package clms_test

import (
	"fmt"
	"os"
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

// Goals in simulated time are exact numbers: these tests assert them.
// (Goals in wall time are benchmarks: see BenchmarkSimSpeed.)

type timedEvent struct {
	at time.Duration
	e  clms.Event
}

// perfCluster is a formed cluster of n nodes with a 1ms link model and
// the given loss, recording every event.
func perfCluster(t tb, seed uint64, n int, link sim.Link) (*simCluster, *[]timedEvent) {
	kr, _ := wire.NewKeyring(1, []byte("0123456789abcdef0123456789abcdef"))
	c := &simCluster{t: t, w: sim.New(sim.Config{Seed: seed, Link: link})}
	evs := &[]timedEvent{}
	cfg := stack.Config{
		ICS:     ics.Config{Keyring: kr},
		CLMS:    clms.Config{Candidates: []node.ID{1, 2, 3}},
		Observe: func(e clms.Event) { *evs = append(*evs, timedEvent{c.w.Now(), e}) },
	}
	for i := 1; i <= n; i++ {
		id := node.ID(i)
		c.ids = append(c.ids, id)
		_ = c.w.AddNode(id, stack.Factory(cfg))
		_ = c.w.Boot(id)
	}
	c.waitConverged(60 * time.Second)
	return c, evs
}

// appliedEverywhere is when the last of the given nodes applied the first
// transition matching match, after from.
func appliedEverywhere(evs []timedEvent, from time.Duration, nodes []node.ID, match func(clms.Transition) bool) (time.Duration, bool) {
	seen := map[node.ID]time.Duration{}
	for _, te := range evs {
		if te.at < from || te.e.Kind != clms.EvApplied || !match(te.e.T) {
			continue
		}
		if _, ok := seen[te.e.Node]; !ok {
			seen[te.e.Node] = te.at
		}
	}
	var last time.Duration
	for _, id := range nodes {
		at, ok := seen[id]
		if !ok {
			return 0, false
		}
		last = max(last, at)
	}
	return last, true
}

func p99(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)*99+99)/100-1]
}

// crashRounds crashes a member (or the master) of a formed cluster at a
// random moment and measures, in simulated time, how long until every
// survivor applied its nodedown, and then how long cleanup took (until
// every survivor applied DOWN).
func crashRounds(t tb, n, rounds int, master bool) (detect, cleanup []time.Duration) {
	for r := 0; r < rounds; r++ {
		seed := uint64(1000*n + r)
		c, evs := perfCluster(t, seed, n, sim.Link{Latency: time.Millisecond})
		// A random phase relative to the heartbeats.
		_ = c.w.RunFor(time.Duration(seed%97) * time.Millisecond)
		victim := node.ID(n)
		if master {
			victim = c.svc(1).Master()
		}
		inc := c.svc(victim).Incarnation()
		crashAt := c.w.Now()
		_ = c.w.Crash(victim)
		var survivors []node.ID
		for _, id := range c.ids {
			if id != victim {
				survivors = append(survivors, id)
			}
		}
		isDown := func(to clms.State) func(clms.Transition) bool {
			return func(tr clms.Transition) bool { return tr.Node == victim && tr.Inc == inc && tr.To == to }
		}
		var down, clean time.Duration
		for i := 0; i < 400; i++ {
			_ = c.w.RunFor(10 * time.Millisecond)
			if _, ok := appliedEverywhere(*evs, crashAt, survivors[:1], isDown(clms.StateDown)); !ok {
				continue // not even the first survivor is done
			}
			var ok1, ok2 bool
			down, ok1 = appliedEverywhere(*evs, crashAt, survivors, isDown(clms.StateKCleanup))
			clean, ok2 = appliedEverywhere(*evs, crashAt, survivors, isDown(clms.StateDown))
			if ok1 && ok2 {
				break
			}
		}
		if down == 0 || clean == 0 {
			t.Fatalf("n=%d seed %d: the nodedown of n%d never completed", n, seed, victim)
		}
		// Detection ends when the nodedown is committed; cleanup and
		// notification run from the first apply of it to DOWN everywhere.
		first, _ := appliedEverywhere(*evs, crashAt, survivors[:1], isDown(clms.StateKCleanup))
		detect = append(detect, down-crashAt)
		cleanup = append(cleanup, clean-first)
	}
	return detect, cleanup
}

func TestDetectionAndCleanupTimes(t *testing.T) {
	rounds := 10
	if os.Getenv("SOAK") != "" {
		rounds = 100
	}
	for _, tc := range []struct {
		n             int
		master        bool
		detect, clean time.Duration
	}{
		{3, false, 500 * time.Millisecond, 20 * time.Millisecond},
		{5, false, 500 * time.Millisecond, 100 * time.Millisecond},
		{5, true, time.Second, 100 * time.Millisecond},
		{32, false, 500 * time.Millisecond, 100 * time.Millisecond},
		{125, false, 500 * time.Millisecond, 100 * time.Millisecond},
		{125, true, time.Second, 100 * time.Millisecond},
	} {
		name := fmt.Sprintf("n=%d/member", tc.n)
		if tc.master {
			name = fmt.Sprintf("n=%d/master", tc.n)
		}
		t.Run(name, func(t *testing.T) {
			r := rounds
			if tc.n >= 100 {
				r = max(3, rounds/5)
			}
			d, c := crashRounds(t, tc.n, r, tc.master)
			t.Logf("%s: nodedown committed on every survivor p99 %v (goal %v); cleanup+notification p99 %v (goal %v); %d rounds",
				name, p99(d), tc.detect, p99(c), tc.clean, r)
			if p99(d) > tc.detect {
				t.Errorf("detection p99 %v > %v: %v", p99(d), tc.detect, d)
			}
			if p99(c) > tc.clean {
				t.Errorf("cleanup p99 %v > %v: %v", p99(c), tc.clean, c)
			}
		})
	}
}

// TestNoFalseNodedowns runs healthy clusters on lossy, jittery links and
// counts nodedowns: there must be none. make test covers 10 node-hours;
// make soak 1,000.
func TestNoFalseNodedowns(t *testing.T) {
	nodes, hours := 10, 1.0
	if os.Getenv("SOAK") != "" {
		nodes, hours = 20, 50
	}
	link := sim.Link{Latency: time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.05}
	c, evs := perfCluster(t, 77, nodes, link)
	start := len(*evs)
	d := time.Duration(hours * float64(time.Hour))
	began := time.Now()
	for el := time.Duration(0); el < d; el += time.Minute {
		_ = c.w.RunFor(time.Minute)
	}
	downs := 0
	for _, te := range (*evs)[start:] {
		if te.e.Kind == clms.EvApplied && te.e.T.To == clms.StateKCleanup && te.e.Node == 1 {
			downs++
			t.Logf("false nodedown at %v: %v", te.at, te.e.T)
		}
	}
	t.Logf("%d nodes for %.0f simulated hours (%.0f node-hours) at 5%% loss, 5ms jitter: %d false nodedowns (%.0fx real time)",
		nodes, hours, float64(nodes)*hours, downs, d.Seconds()/time.Since(began).Seconds())
	if downs != 0 {
		t.Fatalf("%d false nodedowns", downs)
	}
}

// BenchmarkSimSpeed measures simulated seconds per wall second with
// heartbeats on (goals: 100x for 100 nodes, 10x for 1000).
func BenchmarkSimSpeed(b *testing.B) {
	for _, n := range []int{5, 100, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			c, _ := perfCluster(b, 1, n, sim.Link{Latency: time.Millisecond})
			// Converged means every node applied the whole history, not
			// that the master heard so: the first beacons after it still
			// carry the join entries to nodes whose acknowledgements are on
			// their way. The goal is about a formed cluster's heartbeats,
			// so one simulated second passes before the clock starts.
			_ = c.w.RunFor(time.Second)
			b.ResetTimer()
			simStart := c.w.Now()
			for range b.N {
				_ = c.w.RunFor(time.Second)
			}
			b.ReportMetric((c.w.Now()-simStart).Seconds()/b.Elapsed().Seconds(), "sim-s/wall-s")
		})
	}
}
