// Command clusterlab runs scenario files against a cluster and says
// whether every node kept the same membership view (see SCENARIOS.md).
//
//	clusterlab sim   [--seed N] [--runs K] [--report FILE.json] [--trace DIR] FILE|DIR ...
//	clusterlab netns [--report FILE.json] [--trace DIR] FILE|DIR ...
//	clusterlab vm    [--report FILE.json] [--trace DIR] [--keep] [--measure] FILE|DIR ...
//	clusterlab compare [--keep] FILE|DIR ...   # simulator and VMs must agree
//	clusterlab check FILE|DIR ...
//
// Exit status: 0 every scenario passed; 1 at least one ran and failed;
// 2 the input is invalid (nothing ran); 3 an internal error of the lab.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/clusterinfra/ci/scenarios"
	"github.com/clusterinfra/ci/scenarios/lab"
)

const (
	exitPass     = 0
	exitFail     = 1
	exitInvalid  = 2
	exitInternal = 3
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  clusterlab sim   [--seed N] [--runs K] [--report FILE.json] [--trace DIR] [--html FILE] FILE|DIR ...
  clusterlab netns [--report FILE.json] [--trace DIR] FILE|DIR ...
  clusterlab vm    [--report FILE.json] [--trace DIR] [--keep] [--measure] FILE|DIR ...
  clusterlab compare [--keep] FILE|DIR ...
  clusterlab check FILE|DIR ...
  clusterlab swarm --seeds N [--start S] [--jobs J] [--shard I/K] [--out DIR]
  clusterlab shrink [--seed N] [--out FILE] [--tries K] FILE
`)
}

func run(args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(stderr, "clusterlab: internal error: %v\n", p)
			code = exitInternal
		}
	}()
	if len(args) == 0 {
		usage(stderr)
		return exitInvalid
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "swarm":
		return swarm(rest, stdout, stderr)
	case "shrink":
		return shrink(rest, stdout, stderr)
	}
	fs := flag.NewFlagSet("clusterlab "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Uint64("seed", 0, "override every file's seed")
	runs := fs.Int("runs", 1, "run seeds N, N+1, ... N+K-1")
	report := fs.String("report", "", "write a JSON report to this file")
	traceDir := fs.String("trace", "", "write one trace file per run into this directory")
	htmlOut := fs.String("html", "", "write a timeline page per run (FILE.html, or FILE-NAME-seedN.html for several runs)")
	clusterd := fs.String("clusterd", "", "netns: the clusterd binary (default: built from this source tree)")
	keep := fs.Bool("keep", false, "netns, vm: keep each run's files (configs, state, logs, guest consoles and disks)")
	measure := fs.Bool("measure", false, "vm: also boot a bare VM and report boot-to-converged times, memory and nodedown detection beside the simulator's")
	switch cmd {
	case "sim", "netns", "vm", "check", "compare":
	case "-h", "--help", "help":
		usage(stdout)
		return exitPass
	default:
		fmt.Fprintf(stderr, "clusterlab: unknown command %q\n", cmd)
		usage(stderr)
		return exitInvalid
	}
	if err := fs.Parse(rest); err != nil {
		return exitInvalid
	}
	seedSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "seed" {
			seedSet = true
		}
		if cmd != "netns" && f.Name == "clusterd" {
			fmt.Fprintf(stderr, "clusterlab %s: --%s is only for netns (vm builds clusterd from this source tree)\n", cmd, f.Name)
			code = exitInvalid
		}
		if cmd != "netns" && cmd != "vm" && cmd != "compare" && f.Name == "keep" {
			fmt.Fprintf(stderr, "clusterlab %s: --keep is only for netns, vm and compare\n", cmd)
			code = exitInvalid
		}
		if cmd != "vm" && f.Name == "measure" {
			fmt.Fprintf(stderr, "clusterlab %s: --measure is only for vm\n", cmd)
			code = exitInvalid
		}
		if cmd == "compare" && (f.Name == "report" || f.Name == "trace" || f.Name == "html") {
			fmt.Fprintf(stderr, "clusterlab compare: --%s is not supported\n", f.Name)
			code = exitInvalid
		}
		if cmd != "sim" && (f.Name == "seed" || f.Name == "runs") {
			fmt.Fprintf(stderr, "clusterlab %s: --%s is only for sim\n", cmd, f.Name)
			code = exitInvalid
		}
		if cmd == "check" && (f.Name == "report" || f.Name == "trace" || f.Name == "html") {
			fmt.Fprintf(stderr, "clusterlab check: --%s: check runs nothing\n", f.Name)
			code = exitInvalid
		}
	})
	if code != 0 {
		return code
	}
	if *runs < 1 {
		fmt.Fprintf(stderr, "clusterlab: --runs must be at least 1, not %d\n", *runs)
		return exitInvalid
	}
	if fs.NArg() == 0 {
		fmt.Fprintf(stderr, "clusterlab %s: no scenario files given\n", cmd)
		return exitInvalid
	}
	files, err := scenarios.Expand(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "clusterlab: %v\n", err)
		return exitInvalid
	}
	// Everything is checked before anything runs, and every error is said.
	var scs []*scenarios.Scenario
	bad := false
	for _, f := range files {
		sc, err := scenarios.ParseFile(f)
		if err != nil {
			fmt.Fprintln(stderr, err)
			bad = true
			continue
		}
		scs = append(scs, sc)
	}
	if bad {
		return exitInvalid
	}
	if cmd == "check" {
		fmt.Fprintf(stdout, "%d scenario files valid\n", len(scs))
		return exitPass
	}
	var vmEnv *vmSetup
	if cmd == "vm" || cmd == "compare" {
		vmEnv, err = prepareVM(stdout, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "clusterlab %s: %v\n", cmd, err)
			return exitInternal
		}
		defer vmEnv.close()
		if cmd == "compare" {
			return compare(scs, vmEnv, *keep, stdout)
		}
		if *measure {
			vmEnv.measureBaseline(stdout)
		}
	}
	if cmd == "netns" {
		if os.Geteuid() != 0 {
			fmt.Fprintln(stderr, "clusterlab netns: needs root (it makes network namespaces, a bridge and packet filters)")
			return exitInternal
		}
		if *clusterd == "" {
			dir, err := os.MkdirTemp("", "clusterlab-bin-")
			if err != nil {
				fmt.Fprintf(stderr, "clusterlab netns: %v\n", err)
				return exitInternal
			}
			defer os.RemoveAll(dir)
			*clusterd = filepath.Join(dir, "clusterd")
			out, err := exec.Command("go", "build", "-o", *clusterd, "github.com/clusterinfra/ci/cmd/clusterd").CombinedOutput()
			if err != nil {
				fmt.Fprintf(stderr, "clusterlab netns: building clusterd (give --clusterd PATH to use a built one): %v\n%s", err, out)
				return exitInternal
			}
		}
	}
	if *traceDir != "" {
		if err := os.MkdirAll(*traceDir, 0o755); err != nil {
			fmt.Fprintf(stderr, "clusterlab: --trace: %v\n", err)
			return exitInvalid
		}
	}
	var results []*lab.Result
	total := len(scs) * *runs
	progress := total > 50 && isTerminal(stderr)
	passed, failed, internal, skipped := 0, 0, 0, 0
	for _, sc := range scs {
		if why, ok := sc.SkipOn[cmd]; ok {
			fmt.Fprintf(stdout, "SKIP  %-28s on %s: %s\n", sc.Name, cmd, why)
			skipped++
			continue
		}
		base := sc.Seed
		if seedSet {
			base = *seed
		}
		for k := 0; k < *runs; k++ {
			s := base + uint64(k)
			var tw io.Writer
			var tf *os.File
			if *traceDir != "" {
				tf, err = os.Create(filepath.Join(*traceDir, fmt.Sprintf("%s-seed%d.trace", sc.Name, s)))
				if err != nil {
					fmt.Fprintf(stderr, "clusterlab: --trace: %v\n", err)
					return exitInternal
				}
				tw = tf
			}
			var res *lab.Result
			if cmd == "vm" {
				res = vmEnv.run(sc, lab.Options{Seed: s, Trace: tw}, *keep, *measure, stdout)
			} else if cmd == "netns" {
				res = lab.RunNetns(sc, lab.NetnsOptions{Options: lab.Options{Seed: s, Trace: tw}, Clusterd: *clusterd, Keep: *keep})
			} else {
				res = lab.Run(sc, lab.Options{Seed: s, Trace: tw})
			}
			if tf != nil {
				_ = tf.Close()
			}
			results = append(results, res)
			if *htmlOut != "" {
				path := *htmlOut
				if total > 1 {
					path = fmt.Sprintf("%s-%s-seed%d.html", strings.TrimSuffix(*htmlOut, ".html"), sc.Name, s)
				}
				if err := writeHTML(path, res); err != nil {
					fmt.Fprintf(stderr, "clusterlab: --html: %v\n", err)
					return exitInternal
				}
			}
			switch {
			case res.InternalError != "":
				internal++
			case res.Passed:
				passed++
			default:
				failed++
			}
			if !res.Passed || !progress {
				printResult(stdout, sc, res)
			}
			if vmEnv != nil {
				vmEnv.printMeasures(stdout)
			}
			if progress {
				done := len(results)
				w := 40
				fill := done * w / total
				fmt.Fprintf(stderr, "\r[%s%s] %d/%d runs, %d failed", strings.Repeat("#", fill), strings.Repeat(".", w-fill), done, total, failed+internal)
				if done == total {
					fmt.Fprintln(stderr)
				}
			}
		}
	}
	if *report != "" {
		b, err := json.MarshalIndent(struct {
			Scenarios []*lab.Result `json:"scenarios"`
		}{results}, "", "  ")
		if err == nil {
			err = os.WriteFile(*report, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "clusterlab: --report: %v\n", err)
			return exitInternal
		}
	}
	if skipped > 0 {
		fmt.Fprintf(stdout, "%d passed, %d failed, %d skipped\n", passed, failed+internal, skipped)
	} else {
		fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed+internal)
	}
	switch {
	case internal > 0:
		return exitInternal
	case failed > 0:
		return exitFail
	}
	return exitPass
}

func printResult(w io.Writer, sc *scenarios.Scenario, res *lab.Result) {
	verdict := "PASS"
	if !res.Passed {
		verdict = "FAIL"
	}
	if res.InternalError != "" {
		verdict = "ERROR"
	}
	trace := res.TraceDigest
	if trace == "" {
		trace = "-" // only the simulator's runs are reproducible to the byte
	}
	fmt.Fprintf(w, "%-5s %-28s seed=%-6d sim=%8.3fs wall=%6.2fs events=%-8d trace=%s\n",
		verdict, res.Name, res.Seed, res.SimSeconds, res.WallSeconds, res.Events, trace)
	for _, warn := range res.Warnings {
		fmt.Fprintf(w, "      note: %s\n", warn)
	}
	if res.InternalError != "" {
		fmt.Fprintf(w, "      internal error of the lab: %s\n", res.InternalError)
	}
	if f := res.Failure; f != nil {
		fmt.Fprintf(w, "      scenario: %s (%s)\n", res.Name, res.File)
		fmt.Fprintf(w, "      seed:     %d\n", res.Seed)
		fmt.Fprintf(w, "      step:     %d (line %d)\n", f.Step, f.Line)
		fmt.Fprintf(w, "      expected: %s\n", f.Expected)
		fmt.Fprintf(w, "      seen:     %s\n", f.Seen)
		if res.Backend == "sim" {
			fmt.Fprintf(w, "      replay:   go run ./cmd/clusterlab sim --seed %d --trace /tmp/clusterlab-trace %s\n", res.Seed, res.File)
		} else {
			// Real daemons are not deterministic; the same file runs the
			// same steps, and the simulator replays the seed exactly.
			fmt.Fprintf(w, "      replay:   go run ./cmd/clusterlab %s --keep %s   (exactly: go run ./cmd/clusterlab sim --seed %d %s)\n", res.Backend, res.File, res.Seed, res.File)
		}
	}
	_ = errors.New
	_ = time.Second
}

func writeHTML(path string, res *lab.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := lab.WriteHTML(f, res); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// isTerminal reports whether w is a terminal: progress bars are for
// people, not for logs.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
