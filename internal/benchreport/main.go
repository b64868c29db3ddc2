// Command benchreport reads `go test -bench` output on standard input and
// prints each performance goal as a ratio of two figures measured in the
// same run, next to the goal, so that a shared, noisy machine cannot make
// a goal pass or fail by itself. It exits 1 if a goal's figures are
// missing from the input (a benchmark that did not run is not a pass).
//
//	go test -run '^$' -bench . ./sim/ ./ics/ | go run ./internal/benchreport
//
// A figure is one metric of one benchmark: ns/op, or a unit the
// benchmark reports itself (p50-ns, calls/s, MB/s...). A few goals are
// stated as an absolute bound rather than a ratio (a latency ceiling);
// those print the baseline's figure for reference only, and lines marked
// info carry no verdict.
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// figure names one number of the input: a benchmark, without the
// -GOMAXPROCS suffix, and the unit of one of its metrics.
type figure struct{ bench, unit string }

// kind says how a goal judges its figures.
type kind int

const (
	ratioMax kind = iota // num/den must be at most bound
	ratioMin             // num/den must be at least bound
	absMax               // num must be at most bound; den is shown for reference
	info                 // num/den is shown, no verdict
)

// goal is one performance goal.
type goal struct {
	what     string
	kind     kind
	num, den figure
	bound    float64
}

func ns(bench string) figure { return figure{bench, "ns/op"} }

var goals = []goal{
	{"bare simulator vs container/heap, 10 nodes", ratioMax, ns("SimBare/nodes=10"), ns("HeapBaseline/nodes=10"), 3},
	{"bare simulator vs container/heap, 100 nodes", ratioMax, ns("SimBare/nodes=100"), ns("HeapBaseline/nodes=100"), 3},
	{"bare simulator vs container/heap, 1000 nodes", ratioMax, ns("SimBare/nodes=1000"), ns("HeapBaseline/nodes=1000"), 3},
	{"bare simulator vs container/heap, 10000 nodes", ratioMax, ns("SimBare/nodes=10000"), ns("HeapBaseline/nodes=10000"), 3},
	{"cost per event, 10000 vs 10 nodes, fixed load", ratioMax, ns("SimScale/nodes=10000"), ns("SimScale/nodes=10"), 1.5},

	{"ICS sync RPC p50 vs raw TCP ping-pong (ns)", ratioMax,
		figure{"RPCLatency/ics", "p50-ns"}, figure{"RPCLatency/rawtcp", "p50-ns"}, 2},
	{"ICS sync RPC p99 vs raw TCP ping-pong (ns)", info,
		figure{"RPCLatency/ics", "p99-ns"}, figure{"RPCLatency/rawtcp", "p99-ns"}, 0},
	{"ICS vs net/rpc, 32 callers (calls/s)", ratioMin,
		figure{"RPCThroughput/ics", "calls/s"}, figure{"RPCThroughput/netrpc", "calls/s"}, 1.5},
	{"ICS 64 MiB bulk vs raw TCP copy (MB/s)", ratioMin,
		figure{"Bulk/ics", "MB/s"}, figure{"Bulk/rawtcp", "MB/s"}, 0.5},
	{"small-call p99 beside bulk, ICS (raw) (ns)", absMax,
		figure{"Bulk/ics", "small-p99-ns"}, figure{"Bulk/rawtcp", "small-p99-ns"}, 5e6},
	{"ICS on sim ns/msg vs bare sim ns/event", ratioMax,
		figure{"SimTransport/ics", "ns/msg"}, figure{"SimTransport/bare", "ns/event"}, 3},
}

var line = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+\d+\s+(.*)$`)

// parse reads benchmark lines: the name, the iteration count, then pairs
// of value and unit. A later line for the same benchmark wins.
func parse(sc *bufio.Scanner) (map[figure]float64, error) {
	figs := map[figure]float64{}
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break // not a metric: something the benchmark printed
			}
			figs[figure{m[1], f[i+1]}] = v
		}
	}
	return figs, sc.Err()
}

func main() {
	figs, err := parse(bufio.NewScanner(os.Stdin))
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(3)
	}
	missing := false
	fmt.Printf("%-48s %12s %12s %8s %8s  %s\n", "goal", "figure", "baseline", "ratio", "bound", "verdict")
	for _, g := range goals {
		a, okA := figs[g.num]
		b, okB := figs[g.den]
		if !okA || (!okB && g.kind != absMax) {
			if g.kind == info {
				fmt.Printf("%-48s %12s %12s %8s %8s  (info: benchmark did not run)\n", g.what, "-", "-", "-", "-")
				continue
			}
			fmt.Printf("%-48s %12s %12s %8s %8s  MISSING (benchmark did not run)\n", g.what, "-", "-", "-", g.boundText())
			missing = true
			continue
		}
		base, ratio := "-", "-"
		if okB {
			base = fmt.Sprintf("%12.1f", b)
		}
		var met bool
		switch g.kind {
		case ratioMax:
			met = a/b <= g.bound
		case ratioMin:
			met = a/b >= g.bound
		case absMax:
			met = a <= g.bound
		}
		if g.kind != absMax {
			ratio = fmt.Sprintf("%8.2f", a/b)
		}
		verdict := "met"
		switch {
		case g.kind == info:
			verdict = "(info)"
		case !met:
			verdict = "NOT MET"
		}
		fmt.Printf("%-48s %12.1f %12s %8s %8s  %s\n", g.what, a, base, ratio, g.boundText(), verdict)
	}
	if missing {
		os.Exit(1)
	}
}

// boundText is the bound as the table shows it.
func (g goal) boundText() string {
	switch g.kind {
	case ratioMax:
		return fmt.Sprintf("<=%.1f", g.bound)
	case ratioMin:
		return fmt.Sprintf(">=%.1f", g.bound)
	case absMax:
		if strings.HasSuffix(g.num.unit, "-ns") {
			return "<=" + time.Duration(g.bound).String()
		}
		return "<=" + strconv.FormatFloat(g.bound, 'g', -1, 64)
	}
	return "-"
}
