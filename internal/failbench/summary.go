package failbench

import (
	"fmt"
	"io"
	"time"

	"github.com/clusterinfra/ci/internal/netlab"
)

// Goal is one of the issues' goals, judged on figures of one run.
type Goal struct {
	What    string
	Num     string  // benchmark/unit of the figure
	Den     string  // benchmark/unit of the baseline; "" for an absolute bound
	Bound   float64 // the ratio (or, with no Den, the value) must be at most this
	Value   float64
	Base    float64
	Present bool
}

// Met says whether the goal holds.
func (g Goal) Met() bool {
	if !g.Present {
		return false
	}
	if g.Den == "" {
		return g.Value <= g.Bound
	}
	return g.Value/g.Base <= g.Bound
}

// Goals are issue 6's goals as this benchmark measures them, computed
// from the report. The same expressions are what internal/benchreport
// checks from the benchmark lines.
func (r *Report) Goals() []Goal {
	fig := map[string]float64{}
	for _, s := range r.Stats {
		fig[s.Bench()+" p50-ns"] = float64(s.P50)
		fig[s.Bench()+" p99-ns"] = float64(s.P99)
	}
	for _, s := range r.Soaks {
		fig[fmt.Sprintf("FalsePositives/%s/n%d false-nodedowns", s.System, s.Nodes)] = float64(s.Nodedowns)
	}
	for _, x := range r.RSS {
		fig[fmt.Sprintf("RSS/%s/n%d max-rss-bytes", x.System, x.Nodes)] = float64(x.Max)
	}
	gs := []Goal{
		{What: "member kill: clusterd p99 vs corosync token=1000 p50, 3 nodes", Num: "Failover/clusterd/n3/member p99-ns", Den: "Failover/corosync-token1000/n3/member p50-ns", Bound: 1.0 / 7},
		{What: "master kill: clusterd p99 vs corosync token=1000 p50, 3 nodes", Num: "Failover/clusterd/n3/master p99-ns", Den: "Failover/corosync-token1000/n3/member p50-ns", Bound: 1.0 / 2},
		{What: "no false nodedown at 5% loss, clusterd, 5 nodes", Num: "FalsePositives/clusterd/n5 false-nodedowns", Bound: 0},
		{What: "clusterd RSS, 5-node cluster (bytes)", Num: "RSS/clusterd/n5 max-rss-bytes", Bound: 30 << 20},
	}
	for i := range gs {
		g := &gs[i]
		var okN, okD bool
		g.Value, okN = fig[g.Num]
		okD = true
		if g.Den != "" {
			g.Base, okD = fig[g.Den]
		}
		g.Present = okN && okD
	}
	return gs
}

// Summary writes a table for a person: p50 and p99 of every (system,
// size, kind), clusterd's ratio to each peer, the soaks, RSS and goals.
func (r *Report) Summary(w io.Writer) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }
	cd := map[string]Stats{}
	for _, s := range r.Stats {
		if s.System == "clusterd" {
			cd[fmt.Sprintf("n%d/%s", s.Nodes, s.Kind)] = s
		}
	}
	fmt.Fprintf(w, "\n%-20s %-4s %-7s %6s %10s %10s %10s  %s\n", "system", "N", "victim", "rounds", "p50", "p99", "max", "clusterd/peer (p50, p99)")
	for _, s := range r.Stats {
		ratio := ""
		if c, ok := cd[fmt.Sprintf("n%d/%s", s.Nodes, s.Kind)]; ok && s.System != "clusterd" && s.P50 > 0 && s.P99 > 0 {
			ratio = fmt.Sprintf("%.3f, %.3f", float64(c.P50)/float64(s.P50), float64(c.P99)/float64(s.P99))
		}
		fmt.Fprintf(w, "%-20s %-4d %-7s %6d %10s %10s %10s  %s\n", s.System, s.Nodes, s.Kind, s.Count, ms(s.P50), ms(s.P99), ms(s.Max), ratio)
	}
	if len(r.Soaks) > 0 {
		fmt.Fprintf(w, "\n%-20s %-4s %8s %6s %11s %16s %11s %12s\n", "soak", "N", "minutes", "loss", "jitter", "false nodedowns", "view drops", "RSS max MiB")
		for _, s := range r.Soaks {
			jit := "none"
			if s.Jitter > 0 {
				jit = s.Jitter.String()
				if s.Delay == string(netlab.DelayQueue) {
					jit += " (nfq)"
				}
			}
			fmt.Fprintf(w, "%-20s %-4d %8.1f %5.0f%% %11s %16d %11d %12.1f\n", s.System, s.Nodes, s.Duration.Minutes(), s.Loss*100, jit, s.Nodedowns, s.ViewDrops, float64(s.RSSMax)/(1<<20))
		}
	}
	for _, x := range r.RSS {
		fmt.Fprintf(w, "\n%s, %d nodes, after %v: RSS max %.1f MiB, mean %.1f MiB\n", x.System, x.Nodes, x.After, float64(x.Max)/(1<<20), float64(x.Mean)/(1<<20))
	}
	fmt.Fprintln(w, "\ngoals (issue 6):")
	for _, g := range r.Goals() {
		v := "MISSING"
		switch {
		case g.Present && g.Met():
			v = "met"
		case g.Present:
			v = "NOT MET"
		}
		fig := "-"
		if g.Present && g.Den != "" {
			fig = fmt.Sprintf("%.3f (%.0f ms / %.0f ms), bound %.3f", g.Value/g.Base, g.Value/1e6, g.Base/1e6, g.Bound)
		} else if g.Present {
			fig = fmt.Sprintf("%.0f, bound %.0f", g.Value, g.Bound)
		}
		fmt.Fprintf(w, "  %-64s %-50s %s\n", g.What, fig, v)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "FAILED: %s\n", f)
	}
	fmt.Fprintf(w, "wall time: %v\n", r.Wall.Round(time.Second))
}
