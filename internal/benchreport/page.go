package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// writePage writes the benchmark page: the machine, every goal next to
// its figure by area, the tables behind them, and the plots.
func writePage(path, label string, rows []row, figs map[figure]float64) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(filepath.Join(dir, "bench"), 0o755); err != nil {
		return err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `internal/benchreport` from one run of %s on %s. Every comparison is a ratio of two figures measured in the same run (the machine is shared and noisy); absolute figures are shown beside them. Times marked *sim* are simulated time, exact for their seed.\n\n",
		orDefault(label, "`make bench`"), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("## Machine\n\n")
	b.WriteString(machine())
	b.WriteString("\n## Goals\n\n")
	met, notMet, miss := 0, 0, 0
	for _, r := range rows {
		switch r.verdict {
		case "met":
			met++
		case "NOT MET":
			notMet++
		case "MISSING":
			miss++
		}
	}
	fmt.Fprintf(&b, "%d goals met, %d not met, %d not measured in this run.\n\n", met, notMet, miss)
	for _, a := range areas {
		var rs []row
		for _, r := range rows {
			if r.area == a {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			continue
		}
		fmt.Fprintf(&b, "### %s\n\n| goal | figure | baseline | ratio | bound | verdict |\n| --- | ---: | ---: | ---: | ---: | --- |\n", a)
		for _, r := range rs {
			v := r.verdict
			if v == "NOT MET" || v == "MISSING" {
				v = "**" + v + "**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.what, fnum(r.a, r.okA), fnum(r.b, r.okB), r.ratioText(), strings.ReplaceAll(r.boundText(), "|", "\\|"), v)
		}
		b.WriteString("\n")
		if m, ok := methods[a]; ok {
			b.WriteString(m + "\n\n")
		}
	}
	b.WriteString(scaleSection(figs, dir))
	b.WriteString(failoverSection(figs))
	b.WriteString("## Every figure\n\nThe raw figures of this run, benchmark by benchmark.\n\n| benchmark | unit | value |\n| --- | --- | ---: |\n")
	var keys []figure
	for f := range figs {
		keys = append(keys, f)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].bench != keys[j].bench {
			return keys[i].bench < keys[j].bench
		}
		return keys[i].unit < keys[j].unit
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", k.bench, k.unit, strconv.FormatFloat(figs[k], 'g', 6, 64))
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// methods say how each area was measured.
var methods = map[string]string{
	areaSim:      "Method: `sim` benchmarks. The bare simulator passes messages round a ring with no protocol; its cost per event is compared with `container/heap` push+pop on a queue of the same size, in the same run.",
	areaICS:      "Method: `ics` benchmarks on loopback TCP: a synchronous 64-byte RPC against a raw Go TCP ping-pong, 32 concurrent callers against `net/rpc`, a 64 MiB out-of-line message against `io.Copy` over one socket, with small calls timed beside it; and ICS over the simulator against the bare simulator.",
	areaCLMS:     "Method: `clms` benchmarks, defaults of SCENARIOS.md, 1 ms links. Formation is boot of every node to one view; detection is a member crash to its nodedown committed on every survivor; speed is simulated seconds per wall second with heartbeats on.",
	areaFailover: "Method: `internal/failbench`: real processes in network namespaces on a private bridge; SIGKILL of one node, then the time until every survivor's own API (clusterd's control socket, corosync's quorum tool, memberlist's member list) no longer lists it.",
	areaLab:      "Method: `scenarios/lab` benchmark: random scenarios with a nemesis, run and judged one after another on one goroutine. VMs: `clusterlab vm --measure` boots one bare VM (the same kernel, an init that only powers off) and times QEMU start to exit, then runs scenarios/vm/form-5.yaml (five VMs, QEMU start to one view on all, as the lab's event stream shows it) and scenarios/vm/ci-3.yaml (a crash and a partition of n3), and runs the same files in the simulator for the nodedown times beside them; guests run under TCG when KVM does not boot here.",
}

func machine() string {
	var b strings.Builder
	model := "unknown"
	if c, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(c), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					model = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	mem := "unknown"
	if c, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(c), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				f := strings.Fields(l)
				if len(f) >= 2 {
					if kb, err := strconv.Atoi(f[1]); err == nil {
						mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
					}
				}
			}
		}
	}
	kernel := "unknown"
	if k, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(k))
	}
	fmt.Fprintf(&b, "| | |\n| --- | --- |\n| CPU | %s, %d logical cores |\n| memory | %s |\n| kernel | Linux %s |\n| Go | %s |\n", model, runtime.NumCPU(), mem, kernel, runtime.Version())
	return b.String()
}

// scaleSection tabulates BenchmarkScale and plots how cost grows.
func scaleSection(figs map[figure]float64, dir string) string {
	var ns []int
	for f := range figs {
		if n, ok := strings.CutPrefix(f.bench, "Scale/nodes="); ok && f.unit == "msgs/heartbeat" {
			if v, err := strconv.Atoi(n); err == nil {
				ns = append(ns, v)
			}
		}
	}
	if len(ns) == 0 {
		return ""
	}
	sort.Ints(ns)
	var b strings.Builder
	b.WriteString("## Scale in the simulator\n\n| nodes | formation (sim ms) | member crash to nodedown on all (sim ms) | messages per heartbeat interval | sim s per wall s |\n| ---: | ---: | ---: | ---: | ---: |\n")
	var xs, msgs, speed []float64
	for _, n := range ns {
		k := fmt.Sprintf("Scale/nodes=%d", n)
		fmt.Fprintf(&b, "| %d | %.0f | %.0f | %.0f | %.1f |\n", n, figs[figure{k, "form-sim-ms"}], figs[figure{k, "detect-sim-ms"}], figs[figure{k, "msgs/heartbeat"}], figs[figure{k, "sim-s/wall-s"}])
		xs = append(xs, float64(n))
		msgs = append(msgs, figs[figure{k, "msgs/heartbeat"}])
		speed = append(speed, figs[figure{k, "sim-s/wall-s"}])
	}
	b.WriteString("\nMessages per heartbeat interval grow linearly with the nodes (each node heartbeats the master and hears its beacon); the master's work per interval is what bounds the size.\n\n")
	if err := (chart{title: "Messages per heartbeat interval", xLabel: "nodes", yLabel: "messages", logX: true, logY: true,
		series: []series{{name: "CLMS", xs: xs, ys: msgs}}}).write(filepath.Join(dir, "bench", "scale-messages.svg")); err == nil {
		b.WriteString("![messages per heartbeat interval against nodes](bench/scale-messages.svg)\n\n")
	}
	if err := (chart{title: "Simulation speed with heartbeats", xLabel: "nodes", yLabel: "simulated s per wall s", logX: true, logY: true,
		series: []series{{name: "sim speed", xs: xs, ys: speed}}}).write(filepath.Join(dir, "bench", "scale-speed.svg")); err == nil {
		b.WriteString("![simulation speed against nodes](bench/scale-speed.svg)\n\n")
	}
	return b.String()
}

// failoverSection tabulates every Failover/... figure: system, size and
// victim, p50 and p99.
func failoverSection(figs map[figure]float64) string {
	seen := map[string]bool{}
	var names []string
	for f := range figs {
		if strings.HasPrefix(f.bench, "Failover/") && !seen[f.bench] {
			seen[f.bench] = true
			names = append(names, f.bench)
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("## Failover, side by side\n\n| system / nodes / victim | p50 | p99 | max |\n| --- | ---: | ---: | ---: |\n")
	d := func(v float64, ok bool) string {
		if !ok {
			return "-"
		}
		return time.Duration(v).Round(time.Millisecond).String()
	}
	for _, n := range names {
		p50, ok50 := figs[figure{n, "p50-ns"}]
		p99, ok99 := figs[figure{n, "p99-ns"}]
		mx, okm := figs[figure{n, "max-ns"}]
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", strings.TrimPrefix(n, "Failover/"), d(p50, ok50), d(p99, ok99), d(mx, okm))
	}
	b.WriteString("\n")
	return b.String()
}
