package main

import (
	"bufio"
	"strings"
	"testing"
)

// TestParse reads go test's lines (with the -GOMAXPROCS suffix) and the
// lines clusterlab vm --measure and failbench print (without one), whose
// names may contain dashes and digits.
func TestParse(t *testing.T) {
	in := strings.Join([]string{
		"BenchmarkSimBare/nodes=10-2   \t18241810\t63.27 ns/op\t63.27 ns/event",
		"BenchmarkVMBoot/bare \t1\t1831547052 boot-ns",
		"BenchmarkVMBoot/vm-form-5/nodes=5 \t1\t11940145760 converged-ns 128 guest-ram-MiB",
		"BenchmarkVMNodedown/vm-ci-3/1-n3/vm \t1\t2076343999 detect-ns 2167705000 applied-ns",
		"BenchmarkFailover/clusterd/n3/member 20 335803424 p50-ns 350556204 p99-ns",
		"PASS  vm-form-5   seed=1",
	}, "\n")
	figs, err := parse(bufio.NewScanner(strings.NewReader(in)))
	if err != nil {
		t.Fatal(err)
	}
	for f, want := range map[figure]float64{
		{"SimBare/nodes=10", "ns/op"}:                 63.27,
		{"VMBoot/bare", "boot-ns"}:                    1831547052,
		{"VMBoot/vm-form-5/nodes=5", "converged-ns"}:  11940145760,
		{"VMBoot/vm-form-5/nodes=5", "guest-ram-MiB"}: 128,
		{"VMNodedown/vm-ci-3/1-n3/vm", "applied-ns"}:  2167705000,
		{"Failover/clusterd/n3/member", "p99-ns"}:     350556204,
	} {
		if got, ok := figs[f]; !ok || got != want {
			t.Errorf("%v: %v (found %v), want %v", f, got, ok, want)
		}
	}
	rows, _ := judge(figs)
	for _, r := range rows {
		if strings.HasPrefix(r.what, "five VMs") && r.verdict != "NOT MET" {
			t.Errorf("five VMs at 6.5x a bare boot judged %q, want NOT MET", r.verdict)
		}
	}
}
