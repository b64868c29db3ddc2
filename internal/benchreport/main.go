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
	"bytes"
	"flag"
	"fmt"
	"io"
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
	absMin               // num must be at least bound; den is shown for reference
	info                 // num/den is shown, no verdict
)

// goal is one performance goal, in an area of the report.
type goal struct {
	area     string
	what     string
	kind     kind
	num, den figure
	bound    float64
}

func ns(bench string) figure { return figure{bench, "ns/op"} }

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

// row is one goal as measured.
type row struct {
	goal
	a, b     float64
	okA, okB bool
	verdict  string // "met", "NOT MET", "(info)", "MISSING"
}

func judge(figs map[figure]float64) (rows []row, missing bool) {
	for _, g := range goals {
		r := row{goal: g}
		r.a, r.okA = figs[g.num]
		r.b, r.okB = figs[g.den]
		needDen := g.kind == ratioMax || g.kind == ratioMin || (g.kind == info && g.den.bench != "")
		switch {
		case !r.okA || (needDen && !r.okB):
			r.verdict = "MISSING"
			if g.kind != info {
				missing = true
			}
		case g.kind == info:
			r.verdict = "(info)"
		default:
			met := false
			switch g.kind {
			case ratioMax:
				met = r.a/r.b <= g.bound
			case ratioMin:
				met = r.a/r.b >= g.bound
			case absMax:
				met = r.a <= g.bound
			case absMin:
				met = r.a >= g.bound
			}
			r.verdict = "met"
			if !met {
				r.verdict = "NOT MET"
			}
		}
		rows = append(rows, r)
	}
	return rows, missing
}

func (r row) ratioText() string {
	if r.okA && r.okB && r.b != 0 && (r.kind == ratioMax || r.kind == ratioMin || r.kind == info) {
		return fmt.Sprintf("%.2f", r.a/r.b)
	}
	return "-"
}

func fnum(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

func main() {
	md := flag.String("md", "", "also write the benchmark page (markdown) to this `file`, with its plots beside it")
	label := flag.String("label", "", "what ran (e.g. \"make bench QUICK=1\"), for the page")
	flag.Parse()
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(3)
	}
	figs, err := parse(bufio.NewScanner(bytes.NewReader(raw)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(3)
	}
	rows, missing := judge(figs)
	fmt.Printf("%-60s %14s %14s %8s %8s  %s\n", "goal", "figure", "baseline", "ratio", "bound", "verdict")
	for _, r := range rows {
		fmt.Printf("%-60s %14s %14s %8s %8s  %s\n", r.what, fnum(r.a, r.okA), fnum(r.b, r.okB), r.ratioText(), r.boundText(), r.verdict)
	}
	if *md != "" {
		if err := writePage(*md, *label, rows, figs); err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(3)
		}
		fmt.Println("wrote", *md)
	}
	if missing {
		os.Exit(1)
	}
}

// boundText is the bound as the table shows it.
func (g goal) boundText() string {
	switch g.kind {
	case ratioMax:
		return fmt.Sprintf("<=%.3g", g.bound)
	case ratioMin:
		return fmt.Sprintf(">=%.3g", g.bound)
	case absMax, absMin:
		op := "<="
		if g.kind == absMin {
			op = ">="
		}
		if strings.HasSuffix(g.num.unit, "-ns") {
			return op + time.Duration(g.bound).String()
		}
		if strings.HasSuffix(g.num.unit, "-bytes") {
			return fmt.Sprintf("%s%g MiB", op, g.bound/(1<<20))
		}
		return op + strconv.FormatFloat(g.bound, 'g', -1, 64)
	}
	return "-"
}
