package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/scenarios"
	"github.com/clusterinfra/ci/scenarios/lab"
	"github.com/clusterinfra/ci/vm"
)

// vmSetup is what every VM run of one invocation shares: the image, the
// accelerator, the Ctrl-C handler, and the measurements to print.
type vmSetup struct {
	img      *vm.Image
	kvm      bool
	bin      string
	sigs     chan os.Signal
	done     chan struct{}
	baseline time.Duration
	lines    []string
	// bench are the same measurements as `go test -bench` lines, which
	// make bench hands to internal/benchreport with the Go benchmarks'.
	bench []string
}

// prepareVM sweeps what crashed runs left, builds the binaries and the
// image (cached), probes KVM and says once which accelerator the guests
// get, and arranges for Ctrl-C to remove every VM and namespace.
func prepareVM(stdout, stderr io.Writer) (*vmSetup, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("needs root (network namespaces, taps, packet filters); `sudo make vm`")
	}
	if swept, err := vm.Sweep(); err != nil {
		return nil, fmt.Errorf("removing leftovers of earlier runs: %w", err)
	} else if len(swept) > 0 {
		for _, l := range swept {
			fmt.Fprintf(stderr, "vm: removed a leftover of a run that died: %s\n", l)
		}
	}
	root, err := vm.ModuleRoot(".")
	if err != nil {
		return nil, err
	}
	bin, err := os.MkdirTemp("", "clusterlab-vm-bin-")
	if err != nil {
		return nil, err
	}
	s := &vmSetup{bin: bin, sigs: make(chan os.Signal, 1), done: make(chan struct{})}
	cd, in, err := vm.BuildBinaries(root, bin)
	if err != nil {
		s.close()
		return nil, err
	}
	cache := vm.DefaultCacheDir()
	if s.img, err = vm.BuildImage(cache, cd, in, stderr); err != nil {
		s.close()
		return nil, err
	}
	var why string
	s.kvm, why = vm.ProbeKVM(s.img, bin)
	if s.kvm {
		fmt.Fprintf(stdout, "vm: guests run under KVM (%s)\n", why)
	} else {
		fmt.Fprintf(stdout, "vm: guests run under software emulation (TCG), which is slow: %s\n", why)
	}
	signal.Notify(s.sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-s.sigs:
			fmt.Fprintf(stderr, "\nclusterlab: %v: stopping every VM and removing the lab's network\n", sig)
			vm.CloseAll()
			os.RemoveAll(bin)
			os.Exit(130)
		case <-s.done:
		}
	}()
	return s, nil
}

func (s *vmSetup) close() {
	if s.done != nil {
		signal.Stop(s.sigs)
		close(s.done)
		s.done = nil
	}
	vm.CloseAll()
	os.RemoveAll(s.bin)
}

// measureBaseline boots one bare VM (the same kernel, an init that only
// powers off) three times and keeps the median time from QEMU start to
// exit: one boot varies by a tenth on a shared machine, and every ratio
// of the run is taken against this figure.
func (s *vmSetup) measureBaseline(w io.Writer) {
	var ds []time.Duration
	for i := range 3 {
		d, err := vm.BootOnce(s.img, s.bin, fmt.Sprintf("baseline%d", i+1), s.kvm, 60*time.Second)
		if err != nil {
			fmt.Fprintf(w, "vm: baseline boot failed: %v\n", err)
			return
		}
		ds = append(ds, d)
	}
	txt := make([]string, len(ds))
	for i, d := range ds {
		txt[i] = fmt.Sprintf("%.2fs", d.Seconds())
	}
	slices.Sort(ds)
	d := ds[len(ds)/2]
	s.baseline = d
	fmt.Fprintf(w, "vm: one bare VM (same kernel, init powers off at once) boots and exits in %.2fs (median of %s)\n", d.Seconds(), strings.Join(txt, ", "))
	s.bench = append(s.bench, fmt.Sprintf("BenchmarkVMBoot/bare \t1\t%d boot-ns", d.Nanoseconds()))
}

func (s *vmSetup) run(sc *scenarios.Scenario, o lab.Options, keep, measure bool, _ io.Writer) *lab.Result {
	vo := lab.VMOptions{Options: o, Image: s.img, KVM: s.kvm, Keep: keep}
	if measure {
		n := len(sc.Nodes)
		vo.OnConverged = func(at time.Duration, rss map[int]int64) {
			line := fmt.Sprintf("measure: %d VMs from start to converged membership in %.2fs", n, at.Seconds())
			if s.baseline > 0 {
				line += fmt.Sprintf(" = %.2fx one bare VM's boot (%.2fs)", at.Seconds()/s.baseline.Seconds(), s.baseline.Seconds())
			}
			s.lines = append(s.lines, line)
			var tot int64
			var ids []int
			for id, b := range rss {
				tot += b
				ids = append(ids, id)
			}
			bl := fmt.Sprintf("BenchmarkVMBoot/%s/nodes=%d \t1\t%d converged-ns %d guest-ram-MiB", benchName(sc.Name), n, at.Nanoseconds(), vm.DefaultMemMiB)
			if len(rss) > 0 {
				sort.Ints(ids)
				mx := int64(0)
				for _, b := range rss {
					mx = max(mx, b)
				}
				bl += fmt.Sprintf(" %d qemu-rss-avg-bytes %d qemu-rss-max-bytes", tot/int64(len(rss)), mx)
				s.lines = append(s.lines, fmt.Sprintf("measure: guest RAM %d MiB each; QEMU resident memory per VM %.0f MiB on average, %.0f MiB at most (%d VMs)",
					vm.DefaultMemMiB, float64(tot)/float64(len(rss))/(1<<20), float64(mx)/(1<<20), len(rss)))
			}
			s.bench = append(s.bench, bl)
		}
	}
	res := lab.RunVM(sc, vo)
	if measure {
		simRes := lab.Run(sc, lab.Options{Seed: o.Seed})
		s.lines = append(s.lines, nodedownLines("vm ", res)...)
		s.lines = append(s.lines, nodedownLines("sim", simRes)...)
		s.bench = append(s.bench, nodedownBench(sc.Name, "vm", res)...)
		s.bench = append(s.bench, nodedownBench(sc.Name, "sim", simRes)...)
	}
	return res
}

// benchName is a scenario name as one element of a benchmark name. A
// benchmark line's name must not end in -N (go test's GOMAXPROCS suffix,
// which readers strip), so callers put another element after it.
func benchName(s string) string { return strings.Join(strings.Fields(s), "_") }

// nodedownBench is each nodedown of res as a benchmark line, named by its
// place in the run and its node: the fault to its proposal, and to its
// commit on every survivor.
func nodedownBench(scenario, env string, res *lab.Result) []string {
	var out []string
	for i, d := range res.Nodedowns {
		if d.FaultAt == nil {
			continue
		}
		l := fmt.Sprintf("BenchmarkVMNodedown/%s/%d-n%d/%s \t1\t%d detect-ns", benchName(scenario), i+1, d.Node, env, int64((d.DetectedAt-*d.FaultAt)*1e9))
		if d.CommittedAllAt != nil {
			l += fmt.Sprintf(" %d applied-ns", int64((*d.CommittedAllAt-*d.FaultAt)*1e9))
		}
		out = append(out, l)
	}
	return out
}

// nodedownLines reports each nodedown's detection and commit delay.
func nodedownLines(tag string, res *lab.Result) []string {
	var out []string
	for _, d := range res.Nodedowns {
		if d.FaultAt == nil {
			continue
		}
		line := fmt.Sprintf("measure: %s nodedown of n%d: proposed %.3fs after the fault", tag, d.Node, d.DetectedAt-*d.FaultAt)
		if d.CommittedAllAt != nil {
			line += fmt.Sprintf(", applied on every survivor %.3fs after it", *d.CommittedAllAt-*d.FaultAt)
		}
		out = append(out, line)
	}
	return out
}

func (s *vmSetup) printMeasures(w io.Writer) {
	for _, l := range slices.Compact(s.lines) {
		fmt.Fprintf(w, "      %s\n", l)
	}
	s.lines = s.lines[:0]
	for _, l := range s.bench {
		fmt.Fprintln(w, l)
	}
	s.bench = s.bench[:0]
}

// compare runs each scenario in the simulator and on VMs and checks that
// they conform: the same final view, and every node through the same
// sequence of its own state changes. Exit 0 if all conform, 1 if some
// differ or fail, 3 on an internal error.
func compare(scs []*scenarios.Scenario, s *vmSetup, keep bool, w io.Writer) int {
	same, differ, internal := 0, 0, 0
	for _, sc := range scs {
		if why, ok := sc.SkipOn["vm"]; ok {
			fmt.Fprintf(w, "SKIP  %-28s on vm: %s\n", sc.Name, why)
			continue
		}
		simRes, simH := lab.RunRecorded(sc, lab.Options{Seed: sc.Seed})
		vmRes, vmH := lab.RunVMRecorded(sc, lab.VMOptions{Options: lab.Options{Seed: sc.Seed}, Image: s.img, KVM: s.kvm, Keep: keep})
		c := lab.Compare(sc.Nodes, simH, vmH, "sim", "vm")
		verdict := "SAME"
		switch {
		case vmRes.InternalError != "" || simRes.InternalError != "":
			verdict = "ERROR"
			internal++
		case !simRes.Passed || !vmRes.Passed || !c.Same:
			verdict = "DIFF"
			differ++
		default:
			same++
		}
		fmt.Fprintf(w, "%-5s %-28s sim: %s, %d transitions | vm: %s, %d transitions, wall=%.1fs\n", verdict, sc.Name,
			passWord(simRes), len(simH), passWord(vmRes), len(vmH), vmRes.WallSeconds)
		for _, r := range []*lab.Result{simRes, vmRes} {
			if r.InternalError != "" {
				fmt.Fprintf(w, "      %s internal error: %s\n", r.Backend, r.InternalError)
			}
			if f := r.Failure; f != nil {
				fmt.Fprintf(w, "      %s failed at step %d (line %d): expected %s; seen %s\n", r.Backend, f.Step, f.Line, f.Expected, f.Seen)
			}
			for _, warn := range r.Warnings {
				fmt.Fprintf(w, "      %s note: %s\n", r.Backend, warn)
			}
		}
		if verdict != "SAME" {
			fmt.Fprint(w, c.Text)
		} else {
			var ls []string
			ls = append(ls, nodedownLines("vm ", vmRes)...)
			ls = append(ls, nodedownLines("sim", simRes)...)
			for _, l := range slices.Compact(ls) {
				fmt.Fprintf(w, "      %s\n", strings.TrimPrefix(l, "measure: "))
			}
		}
	}
	fmt.Fprintf(w, "%d same, %d different\n", same, differ+internal)
	switch {
	case internal > 0:
		return exitInternal
	case differ > 0:
		return exitFail
	}
	return exitPass
}

func passWord(r *lab.Result) string {
	if r.Passed {
		return "passed"
	}
	return "failed"
}
