package clms_test

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/clusterinfra/ci/sim"
)

// BenchmarkScale is how the membership grows, in the simulator, for the
// benchmark report: formation time (boot of every node to one view on
// all), member-crash detection (crash to nodedown committed on every
// survivor), simulated seconds per wall second with heartbeats on, and
// messages delivered per heartbeat interval, at 3 to 1024 nodes. The
// times are simulated, so exact for the seed; the speed is wall time.
func BenchmarkScale(b *testing.B) {
	sizes := []int{3, 32, 125, 512, 1024}
	if os.Getenv("BENCH_QUICK") != "" {
		sizes = sizes[:3] // make bench QUICK=1: the large sizes take minutes
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var form, detect []time.Duration
			var speed, perBeat float64
			for i := range b.N {
				c, _ := perfCluster(b, uint64(7000+i), n, sim.Link{Latency: time.Millisecond})
				form = append(form, c.w.Now())
				// Steady state: one simulated second of heartbeats, after
				// one more for the last acknowledgements of the joins to
				// reach the master (see BenchmarkSimSpeed).
				_ = c.w.RunFor(time.Second)
				st0 := c.w.Stats()
				t0 := time.Now()
				_ = c.w.RunFor(time.Second)
				wall := time.Since(t0)
				st1 := c.w.Stats()
				speed += 1 / wall.Seconds()
				perBeat += float64(st1.Delivered-st0.Delivered) / (float64(time.Second) / float64(50*time.Millisecond))
				d, _ := crashRounds(b, n, 1, false)
				detect = append(detect, d...)
			}
			slices.Sort(form)
			slices.Sort(detect)
			b.ReportMetric(float64(form[len(form)-1].Milliseconds()), "form-sim-ms")
			b.ReportMetric(float64(detect[len(detect)-1].Milliseconds()), "detect-sim-ms")
			b.ReportMetric(speed/float64(b.N), "sim-s/wall-s")
			b.ReportMetric(perBeat/float64(b.N), "msgs/heartbeat")
		})
	}
}

// TestBeaconsCarryEachEntryAboutOnce bounds what forming a cluster costs
// on the wire: every member needs each history entry once, and the master
// must not resend what is still on its way at every beacon (that made
// forming n nodes cost O(n²) entries per beacon round, 37 s of wall time
// for 1000 nodes).
func TestBeaconsCarryEachEntryAboutOnce(t *testing.T) {
	const n = 150
	c, _ := perfCluster(t, 3, n, sim.Link{Latency: time.Millisecond})
	_ = c.w.RunFor(time.Second)
	var sent uint64
	for _, id := range c.ids {
		sent += c.svc(id).Stats().EntriesSent
	}
	hist := c.svc(c.ids[0]).Last()
	// Candidates get the history through raft, the others from beacons.
	need := uint64(n-3) * hist
	t.Logf("%d nodes, %d entries: beacons carried %d entries, %.2f per member and entry", n, hist, sent, float64(sent)/float64(need))
	if sent < need {
		t.Fatalf("beacons carried %d entries, fewer than the %d the members needed", sent, need)
	}
	if float64(sent) > 1.5*float64(need) {
		t.Fatalf("beacons carried %d entries, %.2fx what the members needed", sent, float64(sent)/float64(need))
	}
}
