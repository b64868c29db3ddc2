package failbench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterinfra/ci/internal/netlab"
)

// Systems are the labels of every system the benchmark knows, in the
// order it measures them.
var Systems = []string{"clusterd", "corosync-default", "corosync-token1000", "memberlist-lan", "memberlist-local"}

// Config says what to measure.
type Config struct {
	Clusterd string // the clusterd binary
	Agent    string // a binary whose AgentCommand runs AgentMain (the failbench binary)

	Systems []string // subset of Systems; nil means all
	Sizes   []int    // cluster sizes for failover; nil means 3 and 5
	Kinds   []string // "member", "master"; nil means both
	Rounds  int      // rounds per (system, size, kind)

	PollEvery   time.Duration // how often a polled view is read (5 ms)
	Settle      time.Duration // how long the full view must hold before a kill (1 s)
	RoundLimit  time.Duration // the longest a detection or recovery may take (60 s)
	RSSAfter    time.Duration // how long a converged 5-node clusterd runs before its RSS is read (30 s); 0: skip
	Soak        time.Duration // false-positive soak per system; 0: skip
	SoakNodes   int           // nodes of a soak cluster (5)
	SoakLoss    float64       // loss on every link (0.05)
	SoakJitter  time.Duration // jitter on every link (10 ms), where the lab can delay (netem or user space)
	SoakPoll    time.Duration // poll period during a soak (50 ms)
	SoakSerial  bool          // soak the systems one after the other, not at the same time
	Serial      bool          // run the peers' failover rounds one after the other, not at the same time
	InstallPeer bool          // apt-get install corosync when missing
	// MemberlistMaster also runs master rounds for memberlist, killing
	// node 1 (the join seed); memberlist has no master, so by default
	// its rounds kill members only.
	MemberlistMaster bool

	Dir  string               // work directory (configs, logs, state); "" for a temporary one kept only on failure
	Out  io.Writer            // benchmark lines
	Logf func(string, ...any) // progress, for a person
}

func (c *Config) defaults() {
	if c.Systems == nil {
		c.Systems = Systems
	}
	if c.Sizes == nil {
		c.Sizes = []int{3, 5}
	}
	if c.Kinds == nil {
		c.Kinds = []string{"member", "master"}
	}
	if c.Rounds == 0 {
		c.Rounds = 20
	}
	if c.PollEvery == 0 {
		c.PollEvery = 5 * time.Millisecond
	}
	if c.Settle == 0 {
		c.Settle = time.Second
	}
	if c.RoundLimit == 0 {
		c.RoundLimit = time.Minute
	}
	if c.SoakNodes == 0 {
		c.SoakNodes = 5
	}
	if c.SoakPoll == 0 {
		c.SoakPoll = 50 * time.Millisecond
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// Sample is one failover round.
type Sample struct {
	System  string           `json:"system"`
	Nodes   int              `json:"nodes"`
	Kind    string           `json:"kind"` // member or master
	Round   int              `json:"round"`
	Victim  int              `json:"victim"`
	Master  int              `json:"master"` // before the kill (0 if the system has none)
	KillAt  time.Time        `json:"kill_at"`
	Latency time.Duration    `json:"latency_ns"`           // until the last survivor's view excluded the victim
	PerNode map[string]int64 `json:"per_survivor_ns"`      // each survivor's own latency
	Recover time.Duration    `json:"recover_ns,omitempty"` // restart of the victim to the full view on every node
}

// Stats summarizes the samples of one (system, size, kind).
type Stats struct {
	System string        `json:"system"`
	Nodes  int           `json:"nodes"`
	Kind   string        `json:"kind"`
	Count  int           `json:"count"`
	P50    time.Duration `json:"p50_ns"`
	P99    time.Duration `json:"p99_ns"`
	Max    time.Duration `json:"max_ns"`
}

// Bench is the name of the stats' benchmark line.
func (s Stats) Bench() string { return fmt.Sprintf("Failover/%s/n%d/%s", s.System, s.Nodes, s.Kind) }

// SoakResult is one system's false-positive soak.
type SoakResult struct {
	System     string        `json:"system"`
	Nodes      int           `json:"nodes"`
	Duration   time.Duration `json:"duration_ns"`
	Loss       float64       `json:"loss"`
	Jitter     time.Duration `json:"jitter_ns"`              // 0 when the lab could not delay
	Delay      string        `json:"delay_method,omitempty"` // netlab.DelayMethod that applied Jitter
	Nodedowns  int           `json:"false_nodedowns"`
	ViewDrops  int           `json:"view_drops"` // (observer, node) pairs: a node vanishing from one survivor's view
	Events     []string      `json:"events,omitempty"`
	RSSMax     int64         `json:"rss_max_bytes"` // at the end of the soak
	RSSMean    int64         `json:"rss_mean_bytes"`
	KCleanups  int           `json:"kcleanup_transitions,omitempty"` // clusterd: from the agreed history
	Incomplete string        `json:"incomplete,omitempty"`
}

// RSS is the resident memory of each node of one cluster.
type RSS struct {
	System string        `json:"system"`
	Nodes  int           `json:"nodes"`
	After  time.Duration `json:"after_ns"`
	Bytes  map[int]int64 `json:"bytes"`
	Max    int64         `json:"max_bytes"`
	Mean   int64         `json:"mean_bytes"`
}

// Report is everything a run measured.
type Report struct {
	Start    time.Time     `json:"start"`
	Wall     time.Duration `json:"wall_ns"`
	Netem    bool          `json:"netem"` // the kernel has netem (else jitter is delayed in user space; see the notes)
	Notes    []string      `json:"notes"`
	Samples  []Sample      `json:"samples"`
	Stats    []Stats       `json:"stats"`
	Soaks    []SoakResult  `json:"soaks"`
	RSS      []RSS         `json:"rss"`
	Failures []string      `json:"failures,omitempty"`
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// runner carries one run's state.
type runner struct {
	cfg    Config
	rep    *Report
	mu     sync.Mutex // rep, from the soaks
	labSeq int
	pid    int
}

// Run measures what cfg asks for and returns the report. It always
// removes what it started (processes, namespaces), also when ctx ends.
// A system that fails is recorded in Report.Failures and the run goes
// on with the next one; Run's error is for a run that could not start.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	if os.Geteuid() != 0 {
		return nil, errors.New("failbench: needs root (network namespaces)")
	}
	for _, s := range cfg.Systems {
		if !slices.Contains(Systems, s) {
			return nil, fmt.Errorf("failbench: unknown system %q (have %s)", s, strings.Join(Systems, ", "))
		}
	}
	for _, k := range cfg.Kinds {
		if k != "member" && k != "master" {
			return nil, fmt.Errorf("failbench: unknown victim kind %q (member or master)", k)
		}
	}
	if slices.ContainsFunc(cfg.Systems, func(s string) bool { return strings.HasPrefix(s, "corosync") }) {
		if err := EnsureCorosync(cfg.InstallPeer, cfg.Logf); err != nil {
			return nil, err
		}
	}
	for _, b := range []struct{ what, path string }{{"clusterd", cfg.Clusterd}, {"agent", cfg.Agent}} {
		if b.path == "" {
			continue
		}
		if _, err := os.Stat(b.path); err != nil {
			return nil, fmt.Errorf("failbench: %s binary: %w", b.what, err)
		}
	}
	keep := cfg.Dir != ""
	if keep {
		if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
			return nil, err
		}
	} else {
		d, err := os.MkdirTemp("", "failbench-")
		if err != nil {
			return nil, err
		}
		cfg.Dir = d
	}
	r := &runner{cfg: cfg, rep: &Report{Start: time.Now()}, pid: os.Getpid()}
	r.note("failover: each system's cluster is kept across rounds; the victim is restarted after each round and the full view must hold for %v before the next kill", cfg.Settle)

	// clusterd alone: its figures are milliseconds and would feel the
	// peers' load. The peers' figures are seconds set by their timeouts,
	// so they run at the same time, each in its own lab, unless Serial.
	var peers []string
	for _, s := range cfg.Systems {
		if s != "clusterd" {
			peers = append(peers, s)
			continue
		}
		for _, n := range cfg.Sizes {
			if ctx.Err() == nil {
				if err := r.failover(ctx, s, n); err != nil {
					r.fail("failover %s n%d: %v", s, n, err)
				}
			}
		}
	}
	if !cfg.Serial && len(peers) > 1 {
		r.note("the peers' failover rounds ran at the same time as each other (not beside clusterd's); -serial runs them one by one")
	}
	var wg sync.WaitGroup
	for _, s := range peers {
		run := func() {
			for _, n := range cfg.Sizes {
				if ctx.Err() == nil {
					if err := r.failover(ctx, s, n); err != nil {
						r.fail("failover %s n%d: %v", s, n, err)
					}
				}
			}
		}
		startOrRun(&wg, cfg.Serial, run)
	}
	wg.Wait()
	slices.SortStableFunc(r.rep.Stats, func(a, b Stats) int {
		return cmp.Or(cmp.Compare(a.Nodes, b.Nodes), cmp.Compare(slices.Index(Systems, a.System), slices.Index(Systems, b.System)))
	})
	if cfg.RSSAfter > 0 && ctx.Err() == nil && slices.Contains(cfg.Systems, "clusterd") {
		if err := r.rss(ctx); err != nil {
			r.fail("rss: %v", err)
		}
	}
	if cfg.Soak > 0 && ctx.Err() == nil {
		r.soaks(ctx)
	}
	r.rep.Wall = time.Since(r.rep.Start)
	if ctx.Err() != nil {
		r.fail("interrupted: %v", ctx.Err())
	}
	if !keep && len(r.rep.Failures) == 0 {
		_ = os.RemoveAll(cfg.Dir)
	} else {
		r.note("logs and configs kept in %s", cfg.Dir)
	}
	return r.rep, nil
}

// startOrRun runs f now if serial, else on a goroutine of wg.
func startOrRun(wg *sync.WaitGroup, serial bool, f func()) {
	if serial {
		f()
		return
	}
	wg.Go(f)
}

// record appends a note or failure to the report and logs it.
func (r *runner) record(to *[]string, prefix, f string, a ...any) {
	s := fmt.Sprintf(f, a...)
	r.mu.Lock()
	*to = append(*to, s)
	r.mu.Unlock()
	r.cfg.Logf("%s%s", prefix, s)
}

func (r *runner) note(f string, a ...any) { r.record(&r.rep.Notes, "note: ", f, a...) }

func (r *runner) fail(f string, a ...any) { r.record(&r.rep.Failures, "FAILED: ", f, a...) }

// emit prints one benchmark line.
func (r *runner) emit(bench string, n int, metrics ...any) {
	var b strings.Builder
	fmt.Fprintf(&b, "Benchmark%s %d", bench, n)
	for i := 0; i+1 < len(metrics); i += 2 {
		switch v := metrics[i].(type) {
		case time.Duration:
			fmt.Fprintf(&b, " %d %s", v.Nanoseconds(), metrics[i+1])
		case float64:
			fmt.Fprintf(&b, " %s %s", strconv.FormatFloat(v, 'f', -1, 64), metrics[i+1])
		default:
			fmt.Fprintf(&b, " %v %s", v, metrics[i+1])
		}
	}
	r.mu.Lock()
	fmt.Fprintln(r.cfg.Out, b.String())
	r.mu.Unlock()
}

// newLab makes a lab with a name unique to this run (see labName).
func (r *runner) newLab(nodes int) (*netlab.Lab, error) {
	r.mu.Lock()
	k := r.labSeq
	r.labSeq++
	r.mu.Unlock()
	name := labName(r.pid, k)
	ns := make([]int, nodes)
	for i := range ns {
		ns[i] = i + 1
	}
	return netlab.New(netlab.Options{Name: name, Nodes: ns})
}

// labName is the name of a run's k-th lab: "f", five digits of the
// pid, two letters.
func labName(pid, k int) string {
	return fmt.Sprintf("f%05d%c%c", pid%100000, 'a'+k/26%26, 'a'+k%26)
}

// newSystem builds system label on lab, with its files under a fresh
// directory.
func (r *runner) newSystem(label string, lab *netlab.Lab, every time.Duration) (system, error) {
	dir, err := os.MkdirTemp(r.cfg.Dir, label+"-")
	if err != nil {
		return nil, err
	}
	switch label {
	case "clusterd":
		if r.cfg.Clusterd == "" {
			return nil, errors.New("no clusterd binary given")
		}
		return newClusterd(lab, dir, r.cfg.Clusterd, every)
	case "corosync-default":
		return newCorosync(label, lab, dir, 0)
	case "corosync-token1000":
		return newCorosync(label, lab, dir, time.Second)
	case "memberlist-lan", "memberlist-local":
		if r.cfg.Agent == "" {
			return nil, errors.New("no memberlist agent binary given")
		}
		return newMemberlist(label, lab, dir, r.cfg.Agent, strings.TrimPrefix(label, "memberlist-"), every), nil
	}
	return nil, fmt.Errorf("unknown system %q", label)
}

// fullView is true when every node in want runs and reports exactly want.
func fullView(want []int) func(map[int]view) bool {
	return func(vs map[int]view) bool {
		for _, n := range want {
			v, ok := vs[n]
			if !ok || !slices.Equal(v.members, want) {
				return false
			}
		}
		return true
	}
}

// settled waits until every node of want reports want and has for the
// settle time.
func (r *runner) settled(ctx context.Context, sys system, want []int) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RoundLimit)
	defer cancel()
	full := fullView(want)
	for {
		if err := sys.views().waitFor(ctx, full); err != nil {
			vs, _ := sys.views().snapshot()
			return fmt.Errorf("no full view %v within %v: %s", want, r.cfg.RoundLimit, describe(vs))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.cfg.Settle):
		}
		vs, _ := sys.views().snapshot()
		stable := full(vs)
		for _, v := range vs {
			stable = stable && time.Since(v.since) >= r.cfg.Settle
		}
		if stable {
			return nil
		}
	}
}

func describe(vs map[int]view) string {
	var ns []int
	for n := range vs {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	var parts []string
	for _, n := range ns {
		parts = append(parts, fmt.Sprintf("n%d sees %v", n, vs[n].members))
	}
	if len(parts) == 0 {
		return "no node reports a view"
	}
	return strings.Join(parts, ", ")
}

// failover runs the rounds of one system at one size.
func (r *runner) failover(ctx context.Context, label string, nodes int) (err error) {
	lab, err := r.newLab(nodes)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, lab.Close()) }()
	sys, err := r.newSystem(label, lab, r.cfg.PollEvery)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sys.close()) }()
	all := lab.Nodes()
	for _, n := range all {
		if err := sys.start(n); err != nil {
			return err
		}
	}
	r.cfg.Logf("%s n%d: starting %d nodes", label, nodes, nodes)
	if err := r.settled(ctx, sys, all); err != nil {
		return fmt.Errorf("formation: %w", err)
	}
	kinds := r.cfg.Kinds
	if _, ok := sys.(*memberlistSys); ok && !r.cfg.MemberlistMaster && slices.Contains(kinds, "master") {
		kinds = slices.DeleteFunc(slices.Clone(kinds), func(k string) bool { return k == "master" })
		r.noteOnce("memberlist has no master: its rounds kill a member only (any node is alike; -memberlist-master kills node 1, the join seed, as a master round)")
	}
	samples := map[string][]time.Duration{}
	for round := 0; round < r.cfg.Rounds; round++ {
		for _, kind := range kinds {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s, err := r.round(ctx, sys, all, kind, round)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", kind, round, err)
			}
			s.System, s.Nodes = label, nodes
			r.mu.Lock()
			r.rep.Samples = append(r.rep.Samples, s)
			r.mu.Unlock()
			samples[kind] = append(samples[kind], s.Latency)
			r.cfg.Logf("%s n%d %s round %d: killed n%d, new view everywhere after %v (recovery %v)",
				label, nodes, kind, round, s.Victim, s.Latency.Round(time.Millisecond), s.Recover.Round(time.Millisecond))
		}
	}
	for _, kind := range kinds {
		st := stats(label, nodes, kind, samples[kind])
		r.mu.Lock()
		r.rep.Stats = append(r.rep.Stats, st)
		r.mu.Unlock()
		r.emit(st.Bench(), st.Count, st.P50, "p50-ns", st.P99, "p99-ns", st.Max, "max-ns")
	}
	return nil
}

// round waits for the full view, kills a victim of the given kind,
// measures, and restarts the victim.
func (r *runner) round(ctx context.Context, sys system, all []int, kind string, round int) (Sample, error) {
	var s Sample
	if err := r.settled(ctx, sys, all); err != nil {
		return s, err
	}
	m, err := sys.master(ctx)
	if err != nil {
		return s, err
	}
	victim := m
	if kind == "member" {
		others := slices.DeleteFunc(slices.Clone(all), func(n int) bool { return n == m })
		victim = others[round%len(others)]
	}
	s.Master = m
	survivors := slices.DeleteFunc(slices.Clone(all), func(n int) bool { return n == victim })
	s.Kind, s.Round, s.Victim = kind, round, victim
	s.KillAt = time.Now()
	if err := sys.kill(victim); err != nil {
		return s, err
	}
	dctx, cancel := context.WithTimeout(ctx, r.cfg.RoundLimit)
	defer cancel()
	gone := func(vs map[int]view) bool {
		for _, n := range survivors {
			v, ok := vs[n]
			if !ok || slices.Contains(v.members, victim) {
				return false
			}
		}
		return true
	}
	if err := sys.views().waitFor(dctx, gone); err != nil {
		vs, _ := sys.views().snapshot()
		return s, fmt.Errorf("n%d still in a survivor's view after %v: %s", victim, r.cfg.RoundLimit, describe(vs))
	}
	vs, _ := sys.views().snapshot()
	s.PerNode = map[string]int64{}
	for _, n := range survivors {
		d := vs[n].since.Sub(s.KillAt)
		s.PerNode["n"+strconv.Itoa(n)] = d.Nanoseconds()
		s.Latency = max(s.Latency, d)
	}
	restart := time.Now()
	if err := sys.start(victim); err != nil {
		return s, err
	}
	rctx, cancel2 := context.WithTimeout(ctx, r.cfg.RoundLimit)
	defer cancel2()
	if err := sys.views().waitFor(rctx, fullView(all)); err != nil {
		vs, _ := sys.views().snapshot()
		return s, fmt.Errorf("n%d not back in every view after %v: %s", victim, r.cfg.RoundLimit, describe(vs))
	}
	s.Recover = time.Since(restart)
	return s, nil
}

// stats computes nearest-rank percentiles.
func stats(label string, nodes int, kind string, ds []time.Duration) Stats {
	st := Stats{System: label, Nodes: nodes, Kind: kind, Count: len(ds)}
	if len(ds) == 0 {
		return st
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	st.P50, st.P99, st.Max = rank(0.50), rank(0.99), s[len(s)-1]
	return st
}
