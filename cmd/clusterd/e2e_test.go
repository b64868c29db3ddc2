package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterinfra/ci/internal/e2e"
)

// TestEndToEndFiveDaemons is the acceptance run of real daemons: five
// clusterd in network namespaces form a cluster, the master is killed,
// the rest are partitioned and healed, and `cluster -v` shows the same
// view on every node at each stage.
func TestEndToEndFiveDaemons(t *testing.T) {
	nodes := []int{1, 2, 3, 4, 5}
	e := e2e.New(t, nodes, []int{1, 2, 3})
	for _, n := range nodes {
		e.Start(n)
	}
	v := e.SameView(nodes, nodes, 15*time.Second)
	t.Logf("formed:\n%s", v)

	m := e.Master(1)
	if m < 1 || m > 3 {
		t.Fatalf("master %d is not a candidate", m)
	}
	e.Kill(m)
	var rest []int
	for _, n := range nodes {
		if n != m {
			rest = append(rest, n)
		}
	}
	v = e.SameView(rest, rest, 5*time.Second)
	if !strings.Contains(v, fmt.Sprintf("node%d", m)) || !strings.Contains(v, "DOWN") {
		t.Fatalf("the killed master n%d is not shown DOWN:\n%s", m, v)
	}
	t.Logf("after killing master n%d:\n%s", m, v)

	// The two remaining candidates and one member keep a majority; the
	// last member is cut off from everyone.
	var cands, members []int
	for _, n := range rest {
		if n <= 3 {
			cands = append(cands, n)
		} else {
			members = append(members, n)
		}
	}
	major := append(slices.Clone(cands), members[0])
	slices.Sort(major)
	alone := members[1]
	if err := e.Lab.Partition([][]int{major, {alone}}); err != nil {
		t.Fatal(err)
	}
	v = e.SameView(major, major, 5*time.Second)
	t.Logf("partitioned %v | %d:\n%s", major, alone, v)

	if err := e.Lab.Heal(); err != nil {
		t.Fatal(err)
	}
	v = e.SameView(rest, rest, 10*time.Second)
	t.Logf("healed:\n%s", v)

	// The killed master restarts and rejoins with a new incarnation.
	e.Start(m)
	v = e.SameView(nodes, nodes, 10*time.Second)
	if !strings.Contains(v, "2.0") {
		t.Fatalf("the restarted n%d does not show its second boot:\n%s", m, v)
	}
}
