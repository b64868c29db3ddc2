package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterinfra/ci/scenarios"
	"github.com/clusterinfra/ci/scenarios/lab"
)

// swarm runs random scenarios, one per seed.
func swarm(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("clusterlab swarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seeds := fs.Int("seeds", 100, "how many seeds to run")
	start := fs.Uint64("start", 1, "the first seed")
	jobs := fs.Int("jobs", 1, "runs at once")
	shard := fs.String("shard", "0/1", "run only shard I of K (seed % K == I), for spreading over machines")
	out := fs.String("out", "swarm-failures", "where failing runs are written as scenario files")
	if err := fs.Parse(args); err != nil {
		return exitInvalid
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "clusterlab swarm: unexpected arguments %q\n", fs.Args())
		return exitInvalid
	}
	i, k, err := parseShard(*shard)
	if err != nil {
		fmt.Fprintf(stderr, "clusterlab swarm: --shard: %v\n", err)
		return exitInvalid
	}
	if *seeds < 1 || *jobs < 1 || *jobs > 256 {
		fmt.Fprintf(stderr, "clusterlab swarm: --seeds and --jobs must be positive (jobs at most 256)\n")
		return exitInvalid
	}
	var todo []uint64
	for s := *start; s < *start+uint64(*seeds); s++ {
		if s%uint64(k) == uint64(i) {
			todo = append(todo, s)
		}
	}
	began := time.Now()
	var (
		mu              sync.Mutex
		passed, failed  int
		internal, doneN int
		wg              sync.WaitGroup
		next            = make(chan uint64)
		progress        = len(todo) > 20 && isTerminal(stderr)
	)
	for range *jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range next {
				sc := lab.Swarm(s)
				res := lab.Run(sc, lab.Options{Seed: s})
				mu.Lock()
				doneN++
				switch {
				case res.InternalError != "":
					internal++
				case res.Passed:
					passed++
				default:
					failed++
				}
				if !res.Passed {
					path := writeFailure(*out, sc, stderr)
					res.File = path
					printResult(stdout, sc, res)
				}
				if progress {
					w := 40
					fill := doneN * w / len(todo)
					fmt.Fprintf(stderr, "\r[%s%s] %d/%d seeds, %d failed", strings.Repeat("#", fill), strings.Repeat(".", w-fill), doneN, len(todo), failed+internal)
				}
				mu.Unlock()
			}
		}()
	}
	for _, s := range todo {
		next <- s
	}
	close(next)
	wg.Wait()
	if progress {
		fmt.Fprintln(stderr)
	}
	el := time.Since(began)
	fmt.Fprintf(stdout, "swarm: %d seeds in %.1fs (%.0f seeds/min, %d jobs)\n", len(todo), el.Seconds(), float64(len(todo))/el.Minutes(), *jobs)
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed+internal)
	switch {
	case internal > 0:
		return exitInternal
	case failed > 0:
		return exitFail
	}
	return exitPass
}

func parseShard(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	k, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || k < 1 || i < 0 || i >= k {
		return 0, 0, fmt.Errorf("want I/K with 0 <= I < K, got %q", s)
	}
	return i, k, nil
}

// writeFailure saves a failing generated scenario so that it can be
// replayed and shrunk; it returns the path.
func writeFailure(dir string, sc *scenarios.Scenario, stderr io.Writer) string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(stderr, "clusterlab: %v\n", err)
		return sc.File
	}
	path := filepath.Join(dir, sc.Name+".yaml")
	if err := os.WriteFile(path, sc.Format(), 0o644); err != nil {
		fmt.Fprintf(stderr, "clusterlab: %v\n", err)
		return sc.File
	}
	return path
}

// shrink makes a failing scenario smaller.
func shrink(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("clusterlab shrink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Uint64("seed", 0, "the seed that fails (default: the file's)")
	out := fs.String("out", "", "where to write the smallest scenario (default FILE with .min.yaml)")
	tries := fs.Int("tries", 500, "at most this many runs")
	if err := fs.Parse(args); err != nil {
		return exitInvalid
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: clusterlab shrink [--seed N] [--out FILE] [--tries K] FILE")
		return exitInvalid
	}
	sc, err := scenarios.ParseFile(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitInvalid
	}
	s := sc.Seed
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "seed" {
			s = *seed
		}
	})
	small, f := lab.Shrink(sc, s, *tries)
	if small == nil {
		fmt.Fprintf(stderr, "clusterlab shrink: %s passes with seed %d: nothing to shrink\n", fs.Arg(0), s)
		return exitInvalid
	}
	small.Seed, small.SeedSet = s, true
	small.Description = strings.TrimSpace(small.Description + " (shrunk from " + filepath.Base(fs.Arg(0)) + ")")
	path := *out
	if path == "" {
		path = strings.TrimSuffix(fs.Arg(0), ".yaml") + ".min.yaml"
	}
	if err := os.WriteFile(path, small.Format(), 0o644); err != nil {
		fmt.Fprintf(stderr, "clusterlab shrink: %v\n", err)
		return exitInternal
	}
	fmt.Fprintf(stdout, "shrunk %d steps to %d; it still fails at step %d (line %d): expected %s\n", len(sc.Steps), len(small.Steps), f.Step, f.Line, f.Expected)
	fmt.Fprintf(stdout, "wrote %s\n", path)
	return exitPass
}
