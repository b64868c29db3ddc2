package failbench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterinfra/ci/internal/netlab"
)

// episodeGap merges the drops of one node seen by several survivors (or
// by one survivor, flapping) into one false nodedown.
const episodeGap = 10 * time.Second

// soaks runs the false-positive soak of every system, at the same time
// unless SoakSerial, and emits one line per system.
func (r *runner) soaks(ctx context.Context) {
	var wg sync.WaitGroup
	results := make([]*SoakResult, len(r.cfg.Systems))
	for i, label := range r.cfg.Systems {
		run := func() {
			res, err := r.soak(ctx, label)
			if err != nil {
				r.fail("soak %s: %v", label, err)
				return
			}
			results[i] = res
		}
		startOrRun(&wg, r.cfg.SoakSerial, run)
	}
	wg.Wait()
	for _, res := range results {
		if res == nil {
			continue
		}
		r.mu.Lock()
		r.rep.Soaks = append(r.rep.Soaks, *res)
		r.mu.Unlock()
		r.emit(fmt.Sprintf("FalsePositives/%s/n%d", res.System, res.Nodes), 1,
			res.Nodedowns, "false-nodedowns", res.ViewDrops, "view-drops", res.Duration.Seconds(), "soak-s", res.Loss, "loss")
		if res.RSSMax > 0 {
			r.emit(fmt.Sprintf("SoakRSS/%s/n%d", res.System, res.Nodes), res.Nodes, res.RSSMax, "max-rss-bytes", res.RSSMean, "mean-rss-bytes")
		}
	}
}

// soak runs one system for the soak duration under loss and jitter (the
// jitter only where the lab can delay, which it says in the report) and
// counts the nodes that vanished from a view.
func (r *runner) soak(ctx context.Context, label string) (res *SoakResult, err error) {
	lab, err := r.newLab(r.cfg.SoakNodes)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, lab.Close()) }()
	sys, err := r.newSystem(label, lab, r.cfg.SoakPoll)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, sys.close()) }()
	all := lab.Nodes()
	for _, n := range all {
		if err := sys.start(n); err != nil {
			return nil, err
		}
	}
	if err := r.settled(ctx, sys, all); err != nil {
		return nil, fmt.Errorf("formation: %w", err)
	}
	var last uint64
	cd, isClusterd := sys.(*clusterd)
	if isClusterd {
		st, err := cd.status(ctx, all[0])
		if err != nil {
			return nil, err
		}
		last = st.Last
	}

	res = &SoakResult{System: label, Nodes: len(all), Loss: r.cfg.SoakLoss}
	model := netlab.LinkModel{Loss: r.cfg.SoakLoss}
	caps := lab.Capabilities()
	r.mu.Lock()
	r.rep.Netem = caps.Netem
	r.mu.Unlock()
	switch {
	case r.cfg.SoakJitter <= 0:
	case caps.CanDelay():
		// Jitter without latency, as netem's "delay 0 10ms": each
		// packet's delay is uniform in ±10 ms and clamped at zero, so
		// half the packets go at once, the rest up to 10 ms late, and
		// packets reorder.
		model.Jitter = r.cfg.SoakJitter
		res.Jitter = r.cfg.SoakJitter
		res.Delay = string(caps.Delay)
		r.noteOnce("soak: %.0f%% loss and %v jitter (delay uniform in 0±%v, clamped at 0) on every link, delayed with %s", r.cfg.SoakLoss*100, r.cfg.SoakJitter, r.cfg.SoakJitter, delayName(caps.Delay))
	default:
		r.noteOnce("soak: the %v jitter was NOT applied: this kernel can delay neither with netem nor in user space (netlab.ErrNoNetem); the soaks ran with %.0f%% loss only", r.cfg.SoakJitter, r.cfg.SoakLoss*100)
	}

	var mu sync.Mutex
	lastDrop := map[int]time.Time{}
	sys.views().setHook(func(c change) {
		for _, v := range c.old {
			if slices.Contains(c.new, v) {
				continue
			}
			mu.Lock()
			res.ViewDrops++
			if t, ok := lastDrop[v]; !ok || c.at.Sub(t) > episodeGap {
				res.Nodedowns++
			}
			lastDrop[v] = c.at
			if len(res.Events) < 100 {
				res.Events = append(res.Events, fmt.Sprintf("%s n%d saw n%d go: %v -> %v", c.at.Format(time.RFC3339Nano), c.observer, v, c.old, c.new))
			}
			mu.Unlock()
		}
	})
	if err := lab.SetDefault(model); err != nil {
		return nil, fmt.Errorf("link model %+v: %w", model, err)
	}
	r.cfg.Logf("%s: soaking %d nodes for %v with %+v", label, len(all), r.cfg.Soak, model)
	start := time.Now()
	select {
	case <-ctx.Done():
		res.Incomplete = "interrupted"
	case <-time.After(r.cfg.Soak):
	}
	res.Duration = time.Since(start)
	res.RSSMax, res.RSSMean, _ = rssOf(sys.pids())
	sys.views().setHook(nil)
	if err := lab.Heal(); err != nil {
		return nil, err
	}
	if isClusterd {
		// The agreed history is the authority: every KCLEANUP since the
		// soak began, by node and incarnation, on any node.
		seen := map[string]bool{}
		for _, n := range all {
			ts, err := cd.transitions(context.Background(), n, last)
			if err != nil {
				continue
			}
			for _, t := range ts {
				if t.To == "KCLEANUP" {
					seen[fmt.Sprintf("%d:%s", t.Node, t.Inc)] = true
				}
			}
		}
		res.KCleanups = len(seen)
		res.Nodedowns = max(res.Nodedowns, res.KCleanups)
	}
	mu.Lock()
	defer mu.Unlock()
	r.cfg.Logf("%s: %d false nodedowns (%d view drops) in %v", label, res.Nodedowns, res.ViewDrops, res.Duration.Round(time.Second))
	return res, nil
}

// delayName says how the lab delays, for the report's notes.
func delayName(m netlab.DelayMethod) string {
	switch m {
	case netlab.DelayNetem:
		return "netem qdiscs in the lab's hub namespace"
	case netlab.DelayQueue:
		return "user-space delay (NFQUEUE in the lab's hub namespace; see internal/netlab)"
	}
	return string(m)
}

func (r *runner) noteOnce(f string, a ...any) {
	s := fmt.Sprintf(f, a...)
	r.mu.Lock()
	dup := slices.Contains(r.rep.Notes, s)
	r.mu.Unlock()
	if !dup {
		r.note("%s", s)
	}
}

// rss measures a converged 5-node clusterd cluster after RSSAfter.
func (r *runner) rss(ctx context.Context) (err error) {
	lab, err := r.newLab(5)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, lab.Close()) }()
	sys, err := r.newSystem("clusterd", lab, r.cfg.SoakPoll)
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
	if err := r.settled(ctx, sys, all); err != nil {
		return fmt.Errorf("formation: %w", err)
	}
	r.cfg.Logf("clusterd n5: converged; reading RSS in %v", r.cfg.RSSAfter)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(r.cfg.RSSAfter):
	}
	res := RSS{System: "clusterd", Nodes: len(all), After: r.cfg.RSSAfter, Bytes: map[int]int64{}}
	for n, pid := range sys.pids() {
		b, err := vmRSS(pid)
		if err != nil {
			return err
		}
		res.Bytes[n] = b
	}
	res.Max, res.Mean, err = rssOf(sys.pids())
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.rep.RSS = append(r.rep.RSS, res)
	r.mu.Unlock()
	r.emit("RSS/clusterd/n5", len(all), res.Max, "max-rss-bytes", res.Mean, "mean-rss-bytes")
	r.cfg.Logf("clusterd n5 RSS after %v: max %.1f MiB, mean %.1f MiB", r.cfg.RSSAfter, float64(res.Max)/(1<<20), float64(res.Mean)/(1<<20))
	return nil
}

// rssOf is the largest and the mean VmRSS of the processes.
func rssOf(pids map[int]int) (maxB, meanB int64, err error) {
	var sum int64
	for _, pid := range pids {
		b, e := vmRSS(pid)
		if e != nil {
			err = errors.Join(err, e)
			continue
		}
		sum += b
		maxB = max(maxB, b)
	}
	if len(pids) > 0 {
		meanB = sum / int64(len(pids))
	}
	return maxB, meanB, err
}

// vmRSS reads a process's resident set size from /proc/PID/status.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("pid %d: odd VmRSS %q", pid, v)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS in /proc/%d/status", pid, pid)
}
