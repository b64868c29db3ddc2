package lab_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/clusterinfra/ci/scenarios"
	"github.com/clusterinfra/ci/scenarios/lab"
)

func library(t *testing.T) []*scenarios.Scenario {
	files, err := scenarios.Expand([]string{".."})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 25 {
		t.Fatalf("the library has %d scenarios, want at least 25", len(files))
	}
	var out []*scenarios.Scenario
	for _, f := range files {
		sc, err := scenarios.ParseFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sc)
	}
	return out
}

// TestLibraryPassesTwiceWithTheSameDigest runs every scenario of the
// library twice with its seed: each must pass, and both runs must give the
// same trace digest, byte-for-byte the same trace.
func TestLibraryPassesTwiceWithTheSameDigest(t *testing.T) {
	for _, sc := range library(t) {
		t.Run(sc.Name, func(t *testing.T) {
			var ta, tb bytes.Buffer
			a := lab.Run(sc, lab.Options{Seed: sc.Seed, Trace: &ta})
			b := lab.Run(sc, lab.Options{Seed: sc.Seed, Trace: &tb})
			if !a.Passed {
				t.Fatalf("failed: %+v %s (replay: go run ./cmd/clusterlab sim --seed %d %s)", a.Failure, a.InternalError, sc.Seed, sc.File)
			}
			if a.TraceDigest != b.TraceDigest || !bytes.Equal(ta.Bytes(), tb.Bytes()) {
				t.Fatalf("seed %d: two runs differ: %s vs %s", sc.Seed, a.TraceDigest, b.TraceDigest)
			}
			if c := lab.Run(sc, lab.Options{Seed: sc.Seed + 1}); c.TraceDigest == a.TraceDigest && a.Events > 100 {
				t.Fatalf("seeds %d and %d give the same digest", sc.Seed, sc.Seed+1)
			}
		})
	}
}

// TestSwarm runs 100 random scenarios (2,000 in make soak).
func TestSwarm(t *testing.T) {
	n := 100
	if os.Getenv("SOAK") != "" {
		n = 2000
	}
	for s := uint64(1); s <= uint64(n); s++ {
		sc := lab.Swarm(s)
		if res := lab.Run(sc, lab.Options{Seed: s}); !res.Passed {
			dir := t.TempDir()
			path := filepath.Join(dir, sc.Name+".yaml")
			_ = os.WriteFile(path, sc.Format(), 0o644)
			t.Fatalf("swarm seed %d: %+v %s (replay: go run ./cmd/clusterlab swarm --seeds 1 --start %d)", s, res.Failure, res.InternalError, s)
		}
	}
}

// TestSwarmScenarioReplays: a generated scenario, written out and parsed
// back, runs exactly the same.
func TestSwarmScenarioReplays(t *testing.T) {
	sc := lab.Swarm(42)
	back, err := scenarios.Parse("swarm-42.yaml", sc.Format())
	if err != nil {
		t.Fatal(err)
	}
	a, b := lab.Run(sc, lab.Options{Seed: 42}), lab.Run(back, lab.Options{Seed: back.Seed})
	if a.TraceDigest != b.TraceDigest {
		t.Fatalf("the written scenario replays differently: %s vs %s", a.TraceDigest, b.TraceDigest)
	}
}

const twenty = `name: long-and-wrong
description: Twenty steps of churn ending in a wrong expectation.
nodes: 5
steps:
  - boot: all
  - wait: converged
    timeout: 10s
  - crash: 5
  - wait: converged
    timeout: 3s
  - restart: 5
  - wait: converged
    timeout: 5s
  - crash: 4
  - wait: converged
    timeout: 3s
  - restart: 4
  - wait: converged
    timeout: 5s
  - pause: 3
  - sleep: 100ms
  - resume: 3
  - sleep: 1s
  - clock: {node: 2, offset: 5s}
  - sleep: 1s
  - leave: 5
  - wait: converged
    timeout: 3s
  - sleep: 500ms
  - expect:
      members: [1, 2, 3]
`

// TestShrink: a failing 20-step scenario shrinks to at most 5 steps that
// fail the same way.
func TestShrink(t *testing.T) {
	sc, err := scenarios.Parse("long.yaml", []byte(twenty))
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Steps) != 20 {
		t.Fatalf("%d steps", len(sc.Steps))
	}
	res := lab.Run(sc, lab.Options{Seed: 1})
	if res.Passed {
		t.Fatal("the scenario passes")
	}
	small, f := lab.Shrink(sc, 1, 300)
	if small == nil {
		t.Fatal("shrink found nothing")
	}
	if len(small.Steps) > 5 {
		t.Fatalf("shrunk to %d steps:\n%s", len(small.Steps), small.Format())
	}
	if f.Signature() != res.Failure.Signature() {
		t.Fatalf("fails differently: %q, was %q", f.Signature(), res.Failure.Signature())
	}
	t.Logf("shrunk to %d steps:\n%s", len(small.Steps), small.Format())
}

// TestReportCountsEachNodedownOnce runs a file whose expect asks for the
// detection times mid-run: the report at the end must still list each
// nodedown once, and count each transition once.
func TestReportCountsEachNodedownOnce(t *testing.T) {
	sc, err := scenarios.ParseFile("../vm/ci-3.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res := lab.Run(sc, lab.Options{Seed: sc.Seed})
	if !res.Passed {
		t.Fatalf("failed: %+v %s", res.Failure, res.InternalError)
	}
	// A crash of n3 and a partition that cuts it off: two nodedowns.
	if len(res.Nodedowns) != 2 {
		t.Fatalf("%d nodedowns in the report, want 2: %+v", len(res.Nodedowns), res.Nodedowns)
	}
	for _, d := range res.Nodedowns {
		if d.Node != 3 || d.FaultAt == nil || d.CommittedAllAt == nil {
			t.Fatalf("nodedown %+v: want n3, with its fault and its commit on all", d)
		}
	}
	if res.Nodedowns[0].DetectedAt == res.Nodedowns[1].DetectedAt {
		t.Fatalf("the two nodedowns are one listed twice: %+v", res.Nodedowns)
	}
	// Simple transitions (into or out of the view): three nodes come up,
	// n3 goes out and comes back twice: 3 + 2*2 = 7.
	if res.Transitions != 7 {
		t.Fatalf("%d transitions in the report, want 7", res.Transitions)
	}
}
