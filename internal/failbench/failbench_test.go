package failbench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterinfra/ci/internal/netlab"
)

func TestStats(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 20; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	st := stats("x", 3, "member", ds)
	if st.P50 != 10*time.Millisecond || st.P99 != 20*time.Millisecond || st.Max != 20*time.Millisecond || st.Count != 20 {
		t.Errorf("stats of 1..20 ms: %+v", st)
	}
	if st.Bench() != "Failover/x/n3/member" {
		t.Errorf("bench name %q", st.Bench())
	}
}

func TestCorosyncParse(t *testing.T) {
	out := `Quorum information
------------------
Nodes:            2
Ring ID:          1.d

Membership information
----------------------
    Nodeid      Votes Name
         1          1 n1
         2          1 n2 (local)

`
	c := &corosync{base: base{tr: newTracker()}}
	c.parse(2, strings.NewReader(out))
	vs, _ := c.tr.snapshot()
	if !slices.Equal(vs[2].members, []int{1, 2}) {
		t.Errorf("parsed %v, want [1 2]", vs[2].members)
	}
}

func TestNodeOfName(t *testing.T) {
	for in, want := range map[string]int{"n1.0": 1, "n12.7": 12} {
		if got, err := nodeOfName(in); err != nil || got != want {
			t.Errorf("nodeOfName(%q) = %d, %v", in, got, err)
		}
	}
}

// TestRoundsSane runs two rounds of clusterd and of memberlist (Local
// configuration: a Go module, so nothing to install) on 3 nodes and
// checks that the figures are plausible and that nothing is left.
func TestRoundsSane(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces; run as root (CI does)")
	}
	if testing.Short() {
		t.Skip("-short: starts real daemons for about a minute")
	}
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+"/",
		"github.com/clusterinfra/ci/cmd/clusterd", "github.com/clusterinfra/ci/internal/failbench/cmd/failbench").CombinedOutput()
	if err != nil {
		t.Fatalf("building: %v\n%s", err, out)
	}
	var lines strings.Builder
	cfg := Config{
		Clusterd: filepath.Join(dir, "clusterd"), Agent: filepath.Join(dir, "failbench"),
		Systems: []string{"clusterd", "memberlist-local"}, Sizes: []int{3}, Rounds: 2,
		Settle: 500 * time.Millisecond, RoundLimit: 30 * time.Second,
		Out: &lines, Logf: t.Logf,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Failures {
		t.Errorf("failure: %s", f)
	}
	limit := map[string]time.Duration{"clusterd": 3 * time.Second, "memberlist-local": 15 * time.Second}
	want := map[string]bool{"clusterd/member": true, "clusterd/master": true, "memberlist-local/member": true}
	for _, st := range rep.Stats {
		delete(want, st.System+"/"+st.Kind)
		if st.Count != 2 {
			t.Errorf("%s: %d rounds, want 2", st.Bench(), st.Count)
		}
		if st.P50 <= 0 || st.P99 < st.P50 || st.Max > limit[st.System] {
			t.Errorf("%s: p50 %v p99 %v max %v: not within (0, %v]", st.Bench(), st.P50, st.P99, st.Max, limit[st.System])
		}
		if !strings.Contains(lines.String(), "Benchmark"+st.Bench()+" 2 ") {
			t.Errorf("no benchmark line for %s in:\n%s", st.Bench(), lines.String())
		}
	}
	for k := range want {
		t.Errorf("no figures for %s", k)
	}
	for _, s := range rep.Samples {
		for n, d := range s.PerNode {
			if d <= 0 || time.Duration(d) > s.Latency {
				t.Errorf("%s %s round %d: survivor %s latency %v outside (0, %v]", s.System, s.Kind, s.Round, n, time.Duration(d), s.Latency)
			}
		}
	}

	// Nothing left: no namespace of this run, no process of its binaries.
	left, err := netlab.Leftovers(labName(os.Getpid(), 0)[:6] + "*")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	for _, p := range runningExes(dir) {
		t.Errorf("process left: %s", p)
	}
}

// runningExes lists the processes whose executable is under dir.
func runningExes(dir string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && strings.HasPrefix(exe, dir+"/") {
			out = append(out, e.Name()+" "+exe)
		}
	}
	return out
}

// TestSoakAppliesJitter runs a short clusterd soak and checks that the
// 10 ms jitter was applied with the 5% loss, as the report says, on any
// kernel that can delay (with netem or in user space).
func TestSoakAppliesJitter(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces; run as root (CI does)")
	}
	if testing.Short() {
		t.Skip("-short: starts real daemons for about half a minute")
	}
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/clusterinfra/ci/cmd/clusterd").CombinedOutput()
	if err != nil {
		t.Fatalf("building: %v\n%s", err, out)
	}
	cfg := Config{
		Clusterd: filepath.Join(dir, "clusterd"), Systems: []string{"clusterd"},
		Soak: 15 * time.Second, SoakLoss: 0.05, SoakJitter: 10 * time.Millisecond,
		Dir: dir, Logf: t.Logf,
	}
	cfg.defaults()
	r := &runner{cfg: cfg, rep: &Report{Start: time.Now()}, pid: os.Getpid()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := r.soak(ctx, "clusterd")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("soak: %+v; notes %q", *res, r.rep.Notes)
	if res.Loss != 0.05 {
		t.Errorf("soak loss %v, want 0.05", res.Loss)
	}
	switch {
	case res.Delay == "":
		// Only a kernel that can delay neither way may leave it out,
		// and the report must say so.
		if res.Jitter != 0 || !slices.ContainsFunc(r.rep.Notes, func(n string) bool { return strings.Contains(n, "NOT applied") }) {
			t.Errorf("jitter %v without a delay method, notes %q", res.Jitter, r.rep.Notes)
		}
	case res.Jitter != 10*time.Millisecond:
		t.Errorf("soak jitter %v, want 10ms", res.Jitter)
	case !slices.ContainsFunc(r.rep.Notes, func(n string) bool { return strings.Contains(n, "5% loss and 10ms jitter") }):
		t.Errorf("notes do not say what was applied: %q", r.rep.Notes)
	}
	if res.Nodedowns != 0 {
		// The goal is checked by the benchmark, over minutes; here it
		// is only reported.
		t.Logf("note: %d false nodedowns in %v", res.Nodedowns, res.Duration)
	}
	if left, _ := netlab.Leftovers(labName(os.Getpid(), 0)[:6] + "*"); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
}

// TestRemoveQBFiles checks that a killed corosync's libqb files (its
// blackbox and its IPC connections' directories) are removed and that
// nobody else's are.
func TestRemoveQBFiles(t *testing.T) {
	dir := t.TempDir()
	mine := []string{"qb-corosync-4242-blackbox-data", "qb-corosync-4242-blackbox-header", "qb-4242-5151-29-ELmRxF"}
	others := []string{"qb-corosync-42420-blackbox-data", "qb-1234-5151-29-AbCdEf", "not-qb-4242", "pulse-shm-4242"}
	for _, n := range append(slices.Clone(mine), others...) {
		if strings.Count(n, "-") == 4 && !strings.Contains(n, "blackbox") {
			if err := os.MkdirAll(filepath.Join(dir, n), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, n, "request"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeQBFiles(dir, 4242); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	slices.Sort(left)
	want := slices.Sorted(slices.Values(others))
	if !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}
