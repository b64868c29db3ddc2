package vm_test

import (
	"os"
	"strings"
	"testing"

	"github.com/clusterinfra/ci/scenarios"
	"github.com/clusterinfra/ci/scenarios/lab"
	"github.com/clusterinfra/ci/vm"
)

// A scenario that fails on VMs (its expect is wrong) reports the failure
// like any backend, keeps the guest consoles, and leaves no QEMU process,
// namespace, bridge or tap behind.
func TestFailedScenarioLeavesNothing(t *testing.T) {
	img := image(t)
	sc, err := scenarios.Parse("wrong.yaml", []byte(`name: vm-wrong
nodes: 2
masters: [1]
config: {heartbeat: 200ms, nodedown_after: 2s, election_timeout: 2s}
network: {latency: 0s}
steps:
  - boot: all
  - wait: converged
    timeout: 90s
  - expect:
      members: [1]
`))
	if err != nil {
		t.Fatal(err)
	}
	res := lab.RunVM(sc, lab.VMOptions{Options: lab.Options{Seed: 1}, Image: img})
	if res.InternalError != "" {
		t.Fatalf("internal error: %s", res.InternalError)
	}
	if res.Passed || res.Failure == nil || res.Failure.Step != 3 {
		t.Fatalf("want a failure at step 3, got passed=%v %+v", res.Passed, res.Failure)
	}
	kept := ""
	for _, w := range res.Warnings {
		if i := strings.Index(w, "kept in "); i >= 0 {
			kept = w[i+len("kept in "):]
		}
	}
	if kept == "" {
		t.Fatalf("no kept directory in %v", res.Warnings)
	}
	defer os.RemoveAll(kept)
	if b, err := os.ReadFile(kept + "/n1.console"); err != nil || !strings.Contains(string(b), "clusterd started") {
		t.Errorf("console of n1 not kept or incomplete: %v", err)
	}
	noLeftovers(t)
	if ls, _ := vm.Leftovers(false); len(ls) > 0 {
		t.Errorf("leftovers: %v", ls)
	}
}
