package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, dir, name, body string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const passing = `name: ok
nodes: 3
steps:
  - boot: all
  - wait: converged
    timeout: 5s
  - expect: {members: all}
`

const failing = `name: wrong
nodes: 3
steps:
  - boot: all
  - wait: converged
    timeout: 5s
  - expect:
      members: [1, 2]
`

func clusterlab(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	ok := write(t, dir, "ok.yaml", passing)
	bad := write(t, dir, "wrong.yaml", failing)
	if code, out, _ := clusterlab("sim", ok); code != 0 || !strings.Contains(out, "1 passed, 0 failed") || !strings.Contains(out, "trace=") {
		t.Fatalf("passing: exit %d\n%s", code, out)
	}
	code, out, _ := clusterlab("sim", "--seed", "5", bad)
	if code != 1 {
		t.Fatalf("failing: exit %d\n%s", code, out)
	}
	for _, want := range []string{"scenario: wrong", "seed:     5", "step:     3 (line 7)", "expected: members (line 8):", "seen:", "replay:   go run ./cmd/clusterlab sim --seed 5"} {
		if !strings.Contains(out, want) {
			t.Errorf("failure output lacks %q:\n%s", want, out)
		}
	}
	if code, _, _ := clusterlab("check", ok, bad); code != 0 {
		t.Fatalf("check of valid files: exit %d", code)
	}
	// The vm backend itself runs in `make vm` and package vm's tests;
	// here only its command line is checked, which boots nothing.
	if code, _, errs := clusterlab("vm", "--seed", "3", ok); code != 2 || !strings.Contains(errs, "only for sim") {
		t.Fatalf("vm --seed: exit %d %s", code, errs)
	}
	if code, _, errs := clusterlab("vm", "--clusterd", "/bin/true", ok); code != 2 || !strings.Contains(errs, "only for netns") {
		t.Fatalf("vm --clusterd: exit %d %s", code, errs)
	}
	if code, _, errs := clusterlab("sim", "--measure", ok); code != 2 || !strings.Contains(errs, "only for vm") {
		t.Fatalf("sim --measure: exit %d %s", code, errs)
	}
	if code, _, errs := clusterlab("compare", "--report", "x.json", ok); code != 2 || !strings.Contains(errs, "compare") {
		t.Fatalf("compare --report: exit %d %s", code, errs)
	}
	if code, _, errs := clusterlab("netns", "--seed", "3", ok); code != 2 || !strings.Contains(errs, "only for sim") {
		t.Fatalf("netns --seed: exit %d %s", code, errs)
	}
	if code, _, _ := clusterlab("sim", "--runs", "0", ok); code != 2 {
		t.Fatalf("--runs 0: exit %d", code)
	}
	if code, _, _ := clusterlab("bogus"); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
}

func TestInvalidFilesExit2WithPositions(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct{ body, want string }{
		"duration.yaml":  {"name: a\nnodes: 3\nsteps:\n  - sleep: 5 parsecs\n", "duration.yaml:4:"},
		"unknown.yaml":   {"name: a\nnodes: 3\nbogus: 1\nsteps:\n  - boot: all\n", "unknown.yaml:3:1:"},
		"node.yaml":      {"name: a\nnodes: 5\nsteps:\n  - crash: 9\n", "node.yaml:4:"},
		"partition.yaml": {"name: a\nnodes: 3\nsteps:\n  - partition: [[1], [2]]\n", "partition.yaml:4:"},
		"yaml.yaml":      {"name: a\nnodes: [1, 2, 3}\nsteps:\n  - boot: all\n", "yaml.yaml:2:"},
	}
	var files []string
	for name, c := range cases {
		files = append(files, write(t, dir, name, c.body))
	}
	code, out, errs := clusterlab(append([]string{"sim"}, files...)...)
	if code != 2 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if out != "" {
		t.Fatalf("something ran:\n%s", out)
	}
	for _, c := range cases {
		if !strings.Contains(errs, c.want) {
			t.Errorf("errors lack %q:\n%s", c.want, errs)
		}
	}
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	ok := write(t, dir, "ok.yaml", passing)
	rep := filepath.Join(dir, "r.json")
	tr := filepath.Join(dir, "traces")
	if code, out, errs := clusterlab("sim", "--runs", "2", "--report", rep, "--trace", tr, ok); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	var r struct {
		Scenarios []map[string]any `json:"scenarios"`
	}
	b, err := os.ReadFile(rep)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Scenarios) != 2 {
		t.Fatalf("%d runs in the report", len(r.Scenarios))
	}
	for _, k := range []string{"name", "file", "seed", "backend", "passed", "failure", "trace_digest", "sim_seconds", "wall_seconds", "events", "transitions", "nodedowns", "false_nodedowns"} {
		if _, ok := r.Scenarios[0][k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
	if r.Scenarios[0]["seed"].(float64) != 1 || r.Scenarios[1]["seed"].(float64) != 2 {
		t.Errorf("seeds %v %v, want 1 and 2", r.Scenarios[0]["seed"], r.Scenarios[1]["seed"])
	}
	traces, _ := filepath.Glob(filepath.Join(tr, "*.trace"))
	if len(traces) != 2 {
		t.Errorf("%d trace files", len(traces))
	}
}

func TestShrinkCommand(t *testing.T) {
	dir := t.TempDir()
	bad := write(t, dir, "wrong.yaml", failing)
	code, out, errs := clusterlab("shrink", bad)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "wrong.min.yaml")); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := clusterlab("sim", filepath.Join(dir, "wrong.min.yaml")); code != 1 {
		t.Fatalf("the shrunk scenario does not fail: exit %d", code)
	}
}

func TestHTMLTimeline(t *testing.T) {
	dir := t.TempDir()
	bad := write(t, dir, "wrong.yaml", failing)
	page := filepath.Join(dir, "run.html")
	if code, out, errs := clusterlab("sim", "--html", page, bad); code != 1 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	for _, want := range []string{"<svg", ">n1<", ">n2<", ">n3<", "quorate", "master of epoch", "NEVERUP-&gt;COMINGUP", "Failure at step 3", "FAILED"} {
		if !strings.Contains(html, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(html, "http://") && !strings.Contains(html, "http://www.w3.org/2000/svg") {
		t.Error("the page is not self-contained")
	}
}

// TestNetnsRunsRealDaemons runs the same two files under netns: real
// clusterd processes in namespaces, the same verdicts and exit codes, a
// report naming the backend, and nothing left behind.
func TestNetnsRunsRealDaemons(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces (CI runs as root)")
	}
	dir := t.TempDir()
	ok := write(t, dir, "ok.yaml", passing)
	bad := write(t, dir, "wrong.yaml", failing)
	skip := write(t, dir, "skip.yaml", "name: skipped\nnodes: 1\nskip_on: {netns: not here}\nsteps: [{boot: all}]\n")
	bin := filepath.Join(dir, "clusterd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/clusterinfra/ci/cmd/clusterd").CombinedOutput(); err != nil {
		t.Fatalf("building clusterd: %v\n%s", err, out)
	}
	report := filepath.Join(dir, "r.json")
	code, out, errs := clusterlab("netns", "--clusterd", bin, "--report", report, ok, skip)
	if code != 0 || !strings.Contains(out, "1 passed, 0 failed, 1 skipped") || !strings.Contains(out, "SKIP  skipped") {
		t.Fatalf("passing under netns: exit %d\n%s\n%s", code, out, errs)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Scenarios []struct {
			Backend     string `json:"backend"`
			Passed      bool   `json:"passed"`
			Transitions int    `json:"transitions"`
		} `json:"scenarios"`
	}
	if err := json.Unmarshal(b, &r); err != nil || len(r.Scenarios) != 1 || r.Scenarios[0].Backend != "netns" || !r.Scenarios[0].Passed || r.Scenarios[0].Transitions < 3 {
		t.Fatalf("report: %v\n%s", err, b)
	}
	code, out, _ = clusterlab("netns", "--clusterd", bin, bad)
	if code != 1 || !strings.Contains(out, "expected: members (line 8):") || !strings.Contains(out, "replay:   go run ./cmd/clusterlab netns") {
		t.Fatalf("failing under netns: exit %d\n%s", code, out)
	}
	// Other packages' tests make labs at the same time; only the names
	// this process can have made (see lab.newNetnsBackend) count.
	out2, _ := exec.Command("ip", "netns", "list").Output()
	for seq := 1; seq < 64; seq++ {
		name := fmt.Sprintf("l%x-", (os.Getpid()*64+seq)%0xfffffff)
		if strings.Contains(string(out2), name) {
			t.Fatalf("namespaces %s* left behind:\n%s", name, out2)
		}
	}
}
