package lab

import (
	"testing"
	"time"
)

// BenchmarkSwarm is the lab's own speed: random scenarios with a nemesis
// (see Swarm), run and judged one after the other on one goroutine, as a
// swarm job does; seeds/min is per job.
func BenchmarkSwarm(b *testing.B) {
	start := time.Now()
	for i := range b.N {
		res := Run(Swarm(uint64(i+1)), Options{Seed: uint64(i + 1)})
		if !res.Passed {
			b.Fatalf("swarm seed %d failed: %+v %s", i+1, res.Failure, res.InternalError)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Minutes(), "seeds/min")
}
