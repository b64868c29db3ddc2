// Command benchreport reads `go test -bench` output on standard input and
// prints each performance goal as a ratio of two figures measured in the
// same run, next to the goal, so that a shared, noisy machine cannot make
// a goal pass or fail by itself. It exits 1 if a goal's figures are
// missing from the input (a benchmark that did not run is not a pass).
//
//	go test -run '^$' -bench . ./sim/ | go run ./internal/benchreport
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
)

// goal is one ratio with its bound: num/den must be at most max.
type goal struct {
	what     string
	num, den string
	max      float64
}

var goals = []goal{
	{"bare simulator vs container/heap, 10 nodes", "SimBare/nodes=10", "HeapBaseline/nodes=10", 3},
	{"bare simulator vs container/heap, 100 nodes", "SimBare/nodes=100", "HeapBaseline/nodes=100", 3},
	{"bare simulator vs container/heap, 1000 nodes", "SimBare/nodes=1000", "HeapBaseline/nodes=1000", 3},
	{"bare simulator vs container/heap, 10000 nodes", "SimBare/nodes=10000", "HeapBaseline/nodes=10000", 3},
	{"cost per event, 10000 vs 10 nodes, fixed load", "SimScale/nodes=10000", "SimScale/nodes=10", 1.5},
}

var line = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+\d+\s+([0-9.]+) ns/op`)

func main() {
	ns := map[string]float64{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if m := line.FindStringSubmatch(sc.Text()); m != nil {
			v, err := strconv.ParseFloat(m[3], 64)
			if err == nil {
				ns[m[1]] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(3)
	}
	missing := false
	fmt.Printf("%-48s %12s %12s %8s %6s  %s\n", "goal", "ns/event", "baseline", "ratio", "max", "verdict")
	for _, g := range goals {
		a, okA := ns[g.num]
		b, okB := ns[g.den]
		if !okA || !okB {
			fmt.Printf("%-48s %12s %12s %8s %6.1f  MISSING (benchmark did not run)\n", g.what, "-", "-", "-", g.max)
			missing = true
			continue
		}
		r := a / b
		verdict := "met"
		if r > g.max {
			verdict = "NOT MET"
		}
		fmt.Printf("%-48s %12.1f %12.1f %8.2f %6.1f  %s\n", g.what, a, b, r, g.max, verdict)
	}
	if missing {
		os.Exit(1)
	}
}
