package lab

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/clusterinfra/ci/scenarios"
)

// Swarm derives a random scenario from a seed, as TigerBeetle's VOPR
// does: a cluster size, a set of candidates, a fault mix and a timing, a
// safety phase with faults (a nemesis), then a heal and a required
// convergence within a bound. The scenario carries the seed, so the file
// alone replays the run.
func Swarm(seed uint64) *scenarios.Scenario {
	r := rand.New(rand.NewPCG(seed, 0x737761726d))
	n := 3 + r.IntN(7) // 3..9 nodes
	nodes := make([]int, n)
	for i := range nodes {
		nodes[i] = i + 1
	}
	masters := []int{1}
	switch k := r.IntN(4); {
	case k > 0 && n >= 5 && r.IntN(2) == 0:
		masters = []int{1, 2, 3, 4, 5}
	case k > 0:
		masters = []int{1, 2, 3}
	}
	all := scenarios.Faults()
	var faults []scenarios.Fault
	for _, f := range all {
		if r.IntN(3) > 0 {
			faults = append(faults, f)
		}
	}
	if len(faults) == 0 {
		faults = []scenarios.Fault{all[r.IntN(len(all))]}
	}
	cfg := scenarios.DefaultConfig()
	if r.IntN(3) == 0 { // sometimes slower timings
		cfg.Heartbeat = 100 * time.Millisecond
		cfg.NodedownAfter = 500 * time.Millisecond
		cfg.ElectionTimeout = 600 * time.Millisecond
	}
	net := scenarios.DefaultNetwork()
	net.Jitter = time.Duration(r.IntN(3)) * time.Millisecond
	if r.IntN(4) == 0 {
		net.Loss = float64(r.IntN(11)) / 100
	}
	d := func(x time.Duration) *time.Duration { return &x }
	boot := &scenarios.NodeSet{All: true}
	sc := &scenarios.Scenario{
		Name:        fmt.Sprintf("swarm-%d", seed),
		Description: fmt.Sprintf("Random scenario derived from swarm seed %d.", seed),
		File:        fmt.Sprintf("swarm-%d.yaml", seed),
		Seed:        seed,
		SeedSet:     true,
		Nodes:       nodes,
		Masters:     masters,
		Config:      cfg,
		Network:     net,
		Steps: []scenarios.Step{
			{Action: scenarios.ActionBoot, Boot: boot},
			{Action: scenarios.ActionWait, Wait: &scenarios.Wait{Condition: "converged"}, Timeout: d(30 * time.Second)},
			{Action: scenarios.ActionNemesis, Timeout: d(2 * time.Minute), Nemesis: &scenarios.Nemesis{
				Duration: time.Duration(5+r.IntN(26)) * time.Second,
				Interval: time.Duration(200+r.IntN(2800)) * time.Millisecond,
				Faults:   faults,
			}},
			{Action: scenarios.ActionExpect, Expect: &scenarios.Expect{Members: &scenarios.NodeSet{All: true}}},
		},
	}
	// Round-trip through the file form, so that the run of the written
	// file is the very same run, positions included.
	back, err := scenarios.Parse(sc.File, sc.Format())
	if err != nil {
		panic(fmt.Sprintf("lab: a generated scenario does not parse: %v\n%s", err, sc.Format()))
	}
	return back
}
