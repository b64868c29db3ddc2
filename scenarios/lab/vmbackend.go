package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/libcluster"
	"github.com/clusterinfra/ci/scenarios"
	"github.com/clusterinfra/ci/vm"
)

// VMOptions configure a run on QEMU virtual machines.
type VMOptions struct {
	Options
	// Image is the guest image (package vm: BuildImage).
	Image *vm.Image
	// KVM runs the guests under KVM; else TCG (software emulation).
	KVM bool
	// MemMiB is each guest's RAM (default vm.DefaultMemMiB).
	MemMiB int
	// Keep keeps the run's directory (disks, consoles) even if it passed;
	// a failed run's is always kept.
	Keep bool
	// OnConverged, if set, is called at the end of the run if a `wait:
	// converged` held, with the moment it first held and the QEMU
	// processes' resident memory then: for measurements. The moment is
	// when the last node applied the transition the converged view ends
	// with, as the guests stamped it (mapped to the lab's clock), not
	// when the lab noticed: the lab polls and holds events back for
	// vmReorderLag, which would add up to half a second to the figure.
	OnConverged func(at time.Duration, rss map[int]int64)
}

// RunVM runs sc with one QEMU guest per node, each booting the project's
// image (a Debian cloud kernel, an initramfs with vminit and clusterd)
// on a bridge in a namespace of the lab's own (package vm), and judges it
// exactly as the netns run is judged: each guest's clusterd -lab streams
// its CLMS and ICS events over the bridge, and the lab maps their stamps
// from the guest's clock to its own with clock probes. Crash is QMP quit,
// restart boots the VM again with the disk it had, pause and resume are
// QMP stop and cont, partitions, cuts and loss are nftables rules between
// taps, clock offsets go through the daemon's API. It needs root.
func RunVM(sc *scenarios.Scenario, o VMOptions) *Result {
	return run(sc, o.Options, "vm", func(r *runner) (backend, error) {
		return newVMBackend(sc, o, r)
	})
}

// vmReorderLag is how long a VM event waits before it is delivered in
// stamp order (see reorderLag): emulated guests stream more slowly than
// processes on the host.
const vmReorderLag = 250 * time.Millisecond

type vmBackend struct {
	sc      *scenarios.Scenario
	o       VMOptions
	r       *runner
	c       *vm.Cluster
	prober  *vm.Prober
	dir     string
	start   time.Time
	procs   map[node.ID]*vmProc
	evs     chan vmEv
	pending []vmEv
	nevents uint64
	timers  wallTimers
	blocks  map[[2]node.ID]bool
	loss    map[[2]node.ID]float64
	drift   map[node.ID]clockDrift
	warned  map[string]bool
	conv    bool
	// The first convergence, for OnConverged: when the lab saw it, the
	// number of the last transition then, and the QEMU memory.
	convAt   time.Duration
	convLast uint64
	convRSS  map[int]int64
	stopped  chan struct{}
	probeWG  sync.WaitGroup
}

// vmProc is one boot of a VM.
type vmProc struct {
	id     node.ID
	client *libcluster.Client
	cancel context.CancelFunc
	clk    guestClock
	ended  chan struct{} // the stream goroutine has finished
	// lastAt is the host time of the last event mapped: one stream is in
	// order, and a new clock probe must not put an event before the one
	// that preceded it.
	lastAt int64
}

// vmEv is an event from a guest, with the boot that sent it.
type vmEv struct {
	e   libcluster.LabEvent
	p   *vmProc
	err error
	at  int64 // host time, once mapped
}

// guestClock maps one boot's guest clock to the host's: a list of
// segments, each an offset valid from a guest time on. Probes add
// segments as they come; a pause adds one at the guest time it froze,
// since the guest's clocks stand still while QEMU is stopped.
type guestClock struct {
	mu       sync.Mutex
	segs     []clockSeg
	stoppedH time.Time // host time of the last stop, while paused
}

type clockSeg struct {
	from   int64 // guest ns
	offset int64 // host - guest, ns
}

func (g *guestClock) add(from, offset int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := len(g.segs); n > 0 && from <= g.segs[n-1].from {
		return
	}
	g.segs = append(g.segs, clockSeg{from, offset})
}

// host maps a guest stamp; ok is false before the first probe.
func (g *guestClock) host(t int64) (int64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.segs) == 0 {
		return 0, false
	}
	i := sort.Search(len(g.segs), func(i int) bool { return g.segs[i].from > t }) - 1
	if i < 0 {
		i = 0
	}
	return t + g.segs[i].offset, true
}

func (g *guestClock) last() (clockSeg, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.segs) == 0 {
		return clockSeg{}, false
	}
	return g.segs[len(g.segs)-1], true
}

func newVMBackend(sc *scenarios.Scenario, o VMOptions, r *runner) (*vmBackend, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("vm: needs root (network namespaces, taps, packet filters)")
	}
	if o.Image == nil {
		return nil, errors.New("vm: no guest image")
	}
	dir, err := os.MkdirTemp("", "clusterlab-vm-")
	if err != nil {
		return nil, err
	}
	b := &vmBackend{sc: sc, o: o, r: r, dir: dir, procs: map[node.ID]*vmProc{}, evs: make(chan vmEv, 1<<16),
		blocks: map[[2]node.ID]bool{}, loss: map[[2]node.ID]float64{}, drift: map[node.ID]clockDrift{},
		warned: map[string]bool{}, stopped: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	c := sc.Config
	b.c, err = vm.NewCluster(vm.Options{Name: vm.NewName(), Nodes: sc.Nodes, Masters: sc.Masters, Image: o.Image,
		KVM: o.KVM, MemMiB: o.MemMiB, Dir: dir, Args: []string{
			"-log-level", "info",
			"-join-timeout", "24h",
			"-heartbeat", c.Heartbeat.String(),
			"-nodedown-after", c.NodedownAfter.String(),
			"-election-timeout", c.ElectionTimeout.String(),
		}})
	if err != nil {
		return nil, err
	}
	if b.prober, err = b.c.NewProber(); err != nil {
		return nil, err
	}
	if sc.Network.Latency > 0 || sc.Network.Jitter > 0 {
		if b.c.Network().HasNetem() {
			b.warn(fmt.Sprintf("the baseline latency %v and jitter %v are not emulated on VMs (the bridge is as fast as the taps)", sc.Network.Latency, sc.Network.Jitter))
		} else {
			b.warn(fmt.Sprintf("this kernel has no netem: the baseline latency %v and jitter %v are not emulated; links are as fast as the taps", sc.Network.Latency, sc.Network.Jitter))
		}
	}
	if sc.Network.Duplicate > 0 {
		b.warn("duplication is not emulated on VMs")
	}
	if sc.Network.Loss > 0 {
		for _, a := range sc.Nodes {
			for _, z := range sc.Nodes {
				if a != z {
					b.loss[[2]node.ID{node.ID(a), node.ID(z)}] = sc.Network.Loss
				}
			}
		}
		if err := b.install(); err != nil {
			return nil, err
		}
	}
	b.note("vm run in " + dir)
	b.start = time.Now()
	ok = true
	return b, nil
}

func (b *vmBackend) warn(msg string) {
	if !b.warned[msg] {
		b.warned[msg] = true
		b.r.res.Warnings = append(b.r.res.Warnings, msg)
	}
}

func (b *vmBackend) now() time.Duration { return time.Since(b.start) }

func (b *vmBackend) note(msg string) {
	if b.o.Trace != nil {
		fmt.Fprintf(b.o.Trace, "%12.6f note %s\n", b.now().Seconds(), msg)
	}
}

// spawn boots node id's VM and starts following it: its clock probes and
// its event stream. It returns once QEMU runs; the guest boots while the
// lab goes on (VMs boot in parallel), and the runner sees it once its
// daemon answers.
func (b *vmBackend) spawn(id node.ID) error {
	if b.procs[id] != nil {
		return fmt.Errorf("n%d is already running", id)
	}
	if err := b.c.Boot(int(id)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &vmProc{id: id, client: libcluster.New(b.c.APISocket(int(id))), cancel: cancel, ended: make(chan struct{})}
	b.procs[id] = p
	b.probeWG.Add(1)
	go b.probe(ctx, p)
	go b.stream(ctx, p)
	return nil
}

// probe keeps p's clock mapping fresh: a burst of probes every 500ms,
// the one with the shortest round trip kept if it is short enough.
func (b *vmBackend) probe(ctx context.Context, p *vmProc) {
	defer b.probeWG.Done()
	for {
		ck, err := b.prober.Probe(int(p.id), 4, 100*time.Millisecond)
		if err == nil && ck.RTT < 10*time.Millisecond {
			p.clk.add(ck.Guest, int64(ck.Offset))
		}
		wait := 500 * time.Millisecond
		if _, ok := p.clk.last(); !ok {
			wait = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// stream forwards p's lab events until p ends. A guest takes seconds to
// boot: until its daemon answers, connections are retried for up to 2m.
func (b *vmBackend) stream(ctx context.Context, p *vmProc) {
	defer close(p.ended)
	first := true
	var err error
	for deadline := time.Now().Add(2 * time.Minute); first; {
		err = p.client.LabEvents(ctx, func(e libcluster.LabEvent) error {
			first = false
			if e.Kind == "hello" {
				return nil
			}
			select {
			case b.evs <- vmEv{e: e, p: p}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if !first || ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	if ctx.Err() != nil {
		return
	}
	if first {
		b.evs <- vmEv{p: p, err: fmt.Errorf("n%d: the daemon did not answer within 2m of boot: %v (console %s)", p.id, err, b.c.Console(int(p.id)))}
		return
	}
	// The stream ended while the VM was meant to run: either the guest
	// powered off (after a leave, which the runner learns from the
	// events), or the stream broke and the checker would miss events.
	select {
	case <-b.c.Exited(int(p.id)):
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		select {
		case b.evs <- vmEv{p: p, err: fmt.Errorf("event stream of n%d broke: %v", p.id, err)}:
		case <-ctx.Done():
		}
	}
}

// stop ends p's VM at once and stops following it.
func (b *vmBackend) stop(id node.ID) error {
	p := b.procs[id]
	if p == nil {
		return fmt.Errorf("n%d is not running", id)
	}
	err := b.c.Crash(int(id))
	b.drain(vmReorderLag)
	p.cancel()
	p.client.Close()
	delete(b.procs, id)
	return err
}

func (b *vmBackend) boot(id node.ID) error    { return b.spawn(id) }
func (b *vmBackend) crash(id node.ID) error   { return b.stop(id) }
func (b *vmBackend) restart(id node.ID) error { return b.spawn(id) }

func (b *vmBackend) pause(id node.ID) error {
	p := b.procs[id]
	if p == nil {
		return fmt.Errorf("n%d is not running", id)
	}
	if err := b.c.Pause(int(id)); err != nil {
		return err
	}
	p.clk.mu.Lock()
	p.clk.stoppedH = time.Now()
	p.clk.mu.Unlock()
	return nil
}

func (b *vmBackend) resume(id node.ID) error {
	p := b.procs[id]
	if p == nil {
		return fmt.Errorf("n%d is not running", id)
	}
	// The guest's clocks stood still while it was stopped: from the guest
	// time at which it froze on, its offset is larger by the pause.
	p.clk.mu.Lock()
	stopped := p.clk.stoppedH
	p.clk.stoppedH = time.Time{}
	p.clk.mu.Unlock()
	if seg, ok := p.clk.last(); ok && !stopped.IsZero() {
		frozeAt := stopped.UnixNano() - seg.offset
		p.clk.add(frozeAt, seg.offset+int64(time.Since(stopped)))
	}
	return b.c.Resume(int(id))
}

func (b *vmBackend) leave(id node.ID) error {
	p := b.procs[id]
	if p == nil {
		return fmt.Errorf("n%d is not running", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return p.client.Leave(ctx)
}

// install puts the blocks and losses into the bridge's rules.
func (b *vmBackend) install() error {
	f := vm.Filters{Blocked: map[[2]int]bool{}, Loss: map[[2]int]float64{}}
	for k, v := range b.blocks {
		if v {
			f.Blocked[[2]int{int(k[0]), int(k[1])}] = true
		}
	}
	for k, v := range b.loss {
		f.Loss[[2]int{int(k[0]), int(k[1])}] = v
	}
	return b.c.Network().SetFilters(f)
}

func (b *vmBackend) partition(groups [][]node.ID) error {
	in := map[node.ID]int{}
	for i, g := range groups {
		for _, id := range g {
			in[id] = i + 1
		}
	}
	// A new partition replaces the previous one; cuts stay.
	for _, a := range b.r.nodes {
		for _, c := range b.r.nodes {
			if a != c && (in[a] == 0 || in[a] != in[c]) {
				b.blocks[[2]node.ID{a, c}] = true
			}
		}
	}
	return b.install()
}

func (b *vmBackend) cut(from, to node.ID) error {
	b.blocks[[2]node.ID{from, to}] = true
	return b.install()
}

func (b *vmBackend) link(a, c node.ID, lc *scenarios.LinkChange) error {
	if (lc.Latency != nil && *lc.Latency > 0) || (lc.Jitter != nil && *lc.Jitter > 0) {
		if !b.c.Network().HasNetem() {
			return vm.ErrNoNetem
		}
		return errors.New("vm: per-link latency and jitter are not implemented on VMs")
	}
	if lc.Duplicate != nil && *lc.Duplicate > 0 {
		return errors.New("vm: duplication is not emulated on VMs")
	}
	l := b.sc.Network.Loss
	if lc.Loss != nil {
		l = *lc.Loss
	}
	b.loss[[2]node.ID{a, c}], b.loss[[2]node.ID{c, a}] = l, l
	return b.install()
}

func (b *vmBackend) clock(id node.ID, offset time.Duration, driftPPM float64) error {
	if b.procs[id] == nil {
		return fmt.Errorf("n%d is not running", id)
	}
	b.drift[id] = clockDrift{offset: offset, ppm: driftPPM, since: b.now()}
	return b.applyClock(id)
}

func (b *vmBackend) applyClock(id node.ID) error {
	d, ok := b.drift[id]
	p := b.procs[id]
	if !ok || p == nil {
		return nil
	}
	off := d.offset + time.Duration(float64(b.now()-d.since)*d.ppm/1e6)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return p.client.SetClockOffset(ctx, off)
}

func (b *vmBackend) heal() {
	clear(b.blocks)
	for k := range b.loss {
		b.loss[k] = b.sc.Network.Loss
	}
	if err := b.install(); err != nil {
		b.internal(fmt.Errorf("heal: %w", err))
	}
}

func (b *vmBackend) after(d time.Duration, f func()) {
	b.timers.add(b.now()+d, f)
}

func (b *vmBackend) blocked(a, c node.ID) bool {
	return b.blocks[[2]node.ID{a, c}] || b.loss[[2]node.ID{a, c}] >= 1
}

func (b *vmBackend) deliver(ev vmEv) error {
	e := ev.e
	at := time.Unix(0, ev.at).Sub(b.start)
	switch e.Kind {
	case "clms":
		var ce clms.Event
		if err := json.Unmarshal(e.CLMS, &ce); err != nil {
			return fmt.Errorf("n%d sent a bad CLMS event: %w", ev.p.id, err)
		}
		b.nevents++
		b.r.observe(at, node.Boot(e.Boot), ce)
	case "call":
		if e.Call == nil {
			return fmt.Errorf("n%d sent a call event without a call", ev.p.id)
		}
		c := ics.CallEvent{Done: e.Call.Done, ID: e.Call.ID, Peer: node.ID(e.Call.Peer), PeerInc: e.Call.PeerInc}
		if e.Call.Err != "" {
			c.Err = errors.New(e.Call.Err)
		}
		b.nevents++
		b.r.ck.Call(at, node.ID(e.Node), node.Boot(e.Boot), c)
	case "error":
		return fmt.Errorf("n%d: %s", ev.p.id, e.CLMS)
	default:
		return fmt.Errorf("n%d sent an event of unknown kind %q", ev.p.id, e.Kind)
	}
	return nil
}

func (b *vmBackend) drain(d time.Duration) { b.drainOpt(d, false) }

// drainOpt receives events for d, maps their stamps to the host clock
// (an event of a guest not yet probed waits), and delivers in stamp order
// those older than vmReorderLag (all mapped ones if flush).
func (b *vmBackend) drainOpt(d time.Duration, flush bool) {
	t := time.NewTimer(d)
	defer t.Stop()
recv:
	for {
		select {
		case ev := <-b.evs:
			if ev.err != nil {
				b.internal(ev.err)
				continue
			}
			b.pending = append(b.pending, ev)
		case <-t.C:
			break recv
		}
	}
	var ready, wait []vmEv
	blocked := map[*vmProc]bool{}
	for _, ev := range b.pending {
		if ev.at == 0 && !blocked[ev.p] {
			if h, ok := ev.p.clk.host(ev.e.At); ok {
				ev.at = max(h, ev.p.lastAt)
				ev.p.lastAt = ev.at
			}
		}
		if ev.at == 0 {
			blocked[ev.p] = true // keep this stream's order
			wait = append(wait, ev)
		} else {
			ready = append(ready, ev)
		}
	}
	sort.SliceStable(ready, func(i, j int) bool { return ready[i].at < ready[j].at })
	causalOrder(ready)
	cut := time.Now().Add(-vmReorderLag).UnixNano()
	// A guest not yet probed holds back everything after the time its
	// events could have been sent, bounded: a guest that never answers a
	// probe fails the run through its stream instead.
	if len(wait) > 0 {
		cut = min(cut, time.Now().Add(-10*time.Second).UnixNano())
	}
	k := 0
	for k < len(ready) && (flush || ready[k].at <= cut) {
		if err := b.deliver(ready[k]); err != nil {
			b.internal(err)
		}
		k++
	}
	b.pending = append(append(b.pending[:0], wait...), ready[k:]...)
}

func (b *vmBackend) flush() { b.drainOpt(vmReorderLag, true) }

// clockSlack is how far apart two guests' mapped stamps can be for
// events that happened in the other order: a probe is kept if its round
// trip is under 10ms, so each guest's mapping is off by up to 5ms, and
// it drifts until the next probe.
const clockSlack = 10 * time.Millisecond

// causalRank orders the CLMS events whose order the checker judges and
// causality fixes: a candidate syncs an entry to its log (persisted)
// before the master can apply it, and the master applies it before any
// other node learns it (applied with a raft index on candidates, without
// one on members, which learn it from the master's beacons). Other events
// have no rank.
func causalRank(ev vmEv) (int, bool) {
	if ev.e.Kind != "clms" {
		return 0, false
	}
	var e struct {
		Kind  clms.EventKind
		Index uint64
	}
	if json.Unmarshal(ev.e.CLMS, &e) != nil {
		return 0, false
	}
	switch {
	case e.Kind == clms.EvPersisted:
		return 0, true
	case e.Kind == clms.EvApplied && e.Index != 0:
		return 1, true
	case e.Kind == clms.EvApplied:
		return 2, true
	}
	return 0, false
}

// causalOrder moves, among events sorted by stamp, a ranked event ahead
// of adjacent ranked events of a higher rank stamped less than
// clockSlack before it, taking their stamp: within the guests' clock
// error the stamps cannot tell the order, and causality can. Without it
// a member's apply stamped 2ms before its master's (a clock off by 3ms)
// reads as a violation of invariant 4. Stamps further apart are left as
// they are, so the checker still sees a real reordering, and one guest's
// own events are never reordered.
func causalOrder(evs []vmEv) {
	ranks := make([]int, len(evs))
	ok := make([]bool, len(evs))
	for i := range evs {
		ranks[i], ok[i] = causalRank(evs[i])
	}
	for i := 1; i < len(evs); i++ {
		for j := i; j > 0 && ok[j] && ok[j-1] && evs[j].p != evs[j-1].p && ranks[j] < ranks[j-1] && evs[j].at-evs[j-1].at < int64(clockSlack); j-- {
			evs[j].at = evs[j-1].at
			evs[j], evs[j-1] = evs[j-1], evs[j]
			ranks[j], ranks[j-1] = ranks[j-1], ranks[j]
		}
	}
}

func (b *vmBackend) internal(err error) {
	if b.r.res.InternalError == "" {
		b.r.res.InternalError = "vm: " + err.Error()
	}
}

// runFor lets d pass, delivering events and timers, checking stop every
// 100ms (each check asks every guest for its status).
func (b *vmBackend) runFor(d time.Duration, stop func() bool) (bool, error) {
	if stop != nil {
		inner := stop
		stop = func() bool {
			if !inner() {
				return false
			}
			if !b.conv && b.o.OnConverged != nil {
				b.conv = true
				b.convAt, b.convRSS = b.now(), b.c.RSS()
				for _, id := range slices.Sorted(maps.Keys(b.procs)) {
					if rep, ok := b.report(id); ok {
						b.convLast = rep.last
						break
					}
				}
			}
			return true
		}
	}
	return runWall(b.now, d, 100*time.Millisecond, b.turn, stop, b.drain)
}

// turn runs due timers and moves drifting clocks; it reports the run's
// internal error, if any.
func (b *vmBackend) turn() error {
	return wallTurn(b.now(), &b.timers, b.drift, b.applyClock, b.note, b.r.res)
}

func (b *vmBackend) report(id node.ID) (report, bool) {
	p := b.procs[id]
	if p == nil {
		return report{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := p.client.Status(ctx)
	if err != nil {
		return report{}, false
	}
	r := report{quorate: st.Quorate, last: st.Last, master: node.ID(st.Master), states: map[node.ID]clms.State{}}
	for _, m := range st.Members {
		r.view = append(r.view, node.ID(m))
	}
	slices.Sort(r.view)
	for _, n := range st.Nodes {
		s, err := clms.ParseState(n.State)
		if err == nil {
			r.states[node.ID(n.Node)] = s
		}
	}
	return r, true
}

func (b *vmBackend) digest() string { return "" }
func (b *vmBackend) events() uint64 { return b.nevents }

// close ends every VM, removes the network and, unless the run failed
// or Keep is set, the run's directory (disks and console logs).
// convergedAt is when the first convergence happened: the latest time a
// node applied the transition the view then ended with, if the lab has
// those events, else when the lab saw it.
func (b *vmBackend) convergedAt() time.Duration {
	m := b.r.applied[b.convLast]
	if len(m) == 0 {
		return b.convAt
	}
	var last time.Duration
	for _, at := range m {
		last = max(last, at)
	}
	return min(last, b.convAt)
}

func (b *vmBackend) close() {
	if b.conv && b.o.OnConverged != nil {
		b.o.OnConverged(b.convergedAt(), b.convRSS)
	}
	for id, p := range b.procs {
		p.cancel()
		p.client.Close()
		delete(b.procs, id)
	}
	if b.c != nil {
		if err := b.c.Close(); err != nil && b.r.res.InternalError == "" {
			b.r.res.InternalError = "vm: cleanup: " + err.Error()
		}
	}
	b.probeWG.Wait()
	if b.prober != nil {
		b.prober.Close()
	}
	if b.o.Keep || b.r.res.Failure != nil || b.r.res.InternalError != "" {
		var cons []string
		for _, n := range b.sc.Nodes {
			cons = append(cons, fmt.Sprintf("n%d.console", n))
		}
		b.warn("the run's files (guest consoles " + strings.Join(cons, ", ") + ", disks) are kept in " + b.dir)
		return
	}
	_ = os.RemoveAll(b.dir)
}

// RunRecorded runs sc in the simulator and also returns the committed
// history, as the checker saw it (for Compare).
func RunRecorded(sc *scenarios.Scenario, o Options) (*Result, []clms.Transition) {
	var rr *runner
	res := run(sc, o, "sim", func(r *runner) (backend, error) {
		rr = r
		return newSimBackend(sc, o.Seed, o.Trace, r.observe, r.ck.Call)
	})
	return res, applied(rr)
}

// RunVMRecorded is RunVM, also returning the committed history.
func RunVMRecorded(sc *scenarios.Scenario, o VMOptions) (*Result, []clms.Transition) {
	var rr *runner
	res := run(sc, o.Options, "vm", func(r *runner) (backend, error) {
		rr = r
		return newVMBackend(sc, o, r)
	})
	return res, applied(rr)
}

func applied(r *runner) []clms.Transition {
	if r == nil || r.ck == nil {
		return nil
	}
	return r.ck.Applied()
}

// Comparison is the outcome of Compare.
type Comparison struct {
	// Same: both runs end with the same view, and every node went
	// through the same sequence of its own state changes.
	Same bool
	// ViewA and ViewB are the final views (nodes UP at the end).
	ViewA, ViewB []int
	// Text shows each node's history side by side, differences marked.
	Text string
}

// Compare checks two runs' histories for conformance, leaving timing
// and the order of simultaneous events on different nodes aside: the
// final views must be equal, and for every node the sequence of its own
// state changes (incarnations numbered in order of appearance, so that
// boot counters need not match) must be equal.
func Compare(nodes []int, a, b []clms.Transition, nameA, nameB string) Comparison {
	seqA, seqB := perNode(a), perNode(b)
	c := Comparison{Same: true, ViewA: finalView(a), ViewB: finalView(b)}
	var sb strings.Builder
	if !slices.Equal(c.ViewA, c.ViewB) {
		c.Same = false
	}
	fmt.Fprintf(&sb, "  final view: %s %v, %s %v\n", nameA, c.ViewA, nameB, c.ViewB)
	for _, n := range nodes {
		sa, sb2 := seqA[node.ID(n)], seqB[node.ID(n)]
		same := slices.EqualFunc(sa, sb2, func(x, y nodeStep) bool { return x.key == y.key })
		if !same {
			c.Same = false
		}
		mark := "same"
		if !same {
			mark = "DIFFERENT"
		}
		fmt.Fprintf(&sb, "  n%d: %s\n", n, mark)
		if same {
			continue
		}
		fmt.Fprintf(&sb, "      %-36s | %s\n", nameA, nameB)
		for i := range max(len(sa), len(sb2)) {
			var x, y string
			var kx, ky string
			if i < len(sa) {
				x, kx = sa[i].text, sa[i].key
			}
			if i < len(sb2) {
				y, ky = sb2[i].text, sb2[i].key
			}
			m := " "
			if kx != ky {
				m = "*"
			}
			fmt.Fprintf(&sb, "    %s %-36s | %s\n", m, x, y)
		}
	}
	c.Text = sb.String()
	return c
}

type nodeStep struct{ key, text string }

func perNode(h []clms.Transition) map[node.ID][]nodeStep {
	out := map[node.ID][]nodeStep{}
	incs := map[node.ID]map[uint64]int{}
	for _, t := range h {
		m := incs[t.Node]
		if m == nil {
			m = map[uint64]int{}
			incs[t.Node] = m
		}
		k, ok := m[t.Inc]
		if !ok {
			k = len(m) + 1
			m[t.Inc] = k
		}
		key := fmt.Sprintf("inc%d %s->%s", k, t.From, t.To)
		out[t.Node] = append(out[t.Node], nodeStep{key: key, text: fmt.Sprintf("%s (%s, #%d)", key, t.Cause, t.Num)})
	}
	return out
}

func finalView(h []clms.Transition) []int {
	last := map[node.ID]clms.State{}
	for _, t := range h {
		last[t.Node] = t.To
	}
	var v []int
	for n, s := range last {
		if s.InView() {
			v = append(v, int(n))
		}
	}
	slices.Sort(v)
	return v
}
