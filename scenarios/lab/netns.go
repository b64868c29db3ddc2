package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/internal/netlab"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/libcluster"
	"github.com/clusterinfra/ci/scenarios"
)

// NetnsOptions configure a run with real daemons in network namespaces.
type NetnsOptions struct {
	Options
	// Clusterd is the clusterd binary to run (required).
	Clusterd string
	// Keep, if set, keeps the run's directory (configs, state, logs)
	// instead of removing it; the directory is reported either way.
	Keep bool
}

// RunNetns runs sc with one clusterd per node, each in its own network
// namespace on a private bridge (package internal/netlab), and judges it
// exactly as the simulator run is judged: the daemons stream every CLMS
// and ICS call event to the lab (clusterd -lab), stamped with the host's
// clock, which all namespaces share. Crash is SIGKILL, pause SIGSTOP,
// partitions and cuts are nftables drops inside the namespaces, loss and
// duplication are nftables rules, latency and jitter are netem where the
// kernel has it and are delayed in user space (NFQUEUE) otherwise (see
// package internal/netlab). It needs root.
func RunNetns(sc *scenarios.Scenario, o NetnsOptions) *Result {
	return run(sc, o.Options, "netns", func(r *runner) (backend, error) {
		return newNetnsBackend(sc, o, r)
	})
}

// netnsBackend implements backend with real processes.
type netnsBackend struct {
	sc      *scenarios.Scenario
	o       NetnsOptions
	r       *runner
	lab     *netlab.Lab
	dir     string
	key     string
	start   time.Time
	procs   map[node.ID]*proc
	evs     chan labEv
	pending []labEv // received, waiting to be delivered in time order
	nevents uint64
	timers  wallTimers
	blocks  map[[2]node.ID]bool
	lost    map[[2]node.ID]bool // links at 100% loss
	drift   map[node.ID]clockDrift
	warned  map[string]bool
}

type labTimer struct {
	at time.Duration
	f  func()
}

// wallTimers are a real backend's pending `after` calls, in due order.
type wallTimers []labTimer

func (t *wallTimers) add(at time.Duration, f func()) {
	*t = append(*t, labTimer{at: at, f: f})
	sort.SliceStable(*t, func(i, j int) bool { return (*t)[i].at < (*t)[j].at })
}

// fire runs the timers due at now.
func (t *wallTimers) fire(now time.Duration) {
	for len(*t) > 0 && (*t)[0].at <= now {
		f := (*t)[0].f
		*t = (*t)[1:]
		f()
	}
}

// wallTurn is a real backend's duties between drains: due timers, and
// drifting clocks moved on; it reports the run's internal error, if any.
func wallTurn(now time.Duration, t *wallTimers, drift map[node.ID]clockDrift, apply func(node.ID) error, note func(string), res *Result) error {
	t.fire(now)
	for id := range drift {
		if err := apply(id); err != nil {
			note(fmt.Sprintf("clock of n%d: %v", id, err))
		}
	}
	if res.InternalError != "" {
		return errors.New(res.InternalError)
	}
	return nil
}

// runWall is runFor for the backends that run in wall-clock time
// (netns, vm): each turn runs the backend's own duties (due timers, clock
// drift; an error ends the run), checks stop, and otherwise drains events
// for at most step.
func runWall(now func() time.Duration, d, step time.Duration, turn func() error, stop func() bool, drain func(time.Duration)) (bool, error) {
	end := now() + d
	for {
		if err := turn(); err != nil {
			return false, err
		}
		if stop != nil && stop() {
			return true, nil
		}
		left := end - now()
		if left <= 0 {
			return false, nil
		}
		drain(min(step, left))
	}
}

type clockDrift struct {
	offset time.Duration
	ppm    float64
	since  time.Duration
}

// proc is one incarnation of a daemon.
type proc struct {
	id     node.ID
	cmd    *exec.Cmd
	client *libcluster.Client
	cancel context.CancelFunc
	exited chan struct{}
	log    *os.File
}

// labEv is an event from a daemon, or the end of its stream.
type labEv struct {
	e   libcluster.LabEvent
	err error
	id  node.ID
}

var netnsSeq struct {
	sync.Mutex
	n int
}

func newNetnsBackend(sc *scenarios.Scenario, o NetnsOptions, r *runner) (*netnsBackend, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netns: needs root (network namespaces, bridges and packet filters)")
	}
	if o.Clusterd == "" {
		return nil, errors.New("netns: no clusterd binary given")
	}
	if _, err := os.Stat(o.Clusterd); err != nil {
		return nil, fmt.Errorf("netns: clusterd binary: %w", err)
	}
	netnsSeq.Lock()
	netnsSeq.n++
	seq := netnsSeq.n
	netnsSeq.Unlock()
	name := fmt.Sprintf("l%x", (os.Getpid()*64+seq)%0xfffffff)
	if len(name) > 8 {
		name = name[:8]
	}
	nodes := make([]int, len(sc.Nodes))
	copy(nodes, sc.Nodes)
	dir, err := os.MkdirTemp("", "clusterlab-netns-")
	if err != nil {
		return nil, err
	}
	b := &netnsBackend{sc: sc, o: o, r: r, dir: dir, procs: map[node.ID]*proc{}, evs: make(chan labEv, 1<<16),
		blocks: map[[2]node.ID]bool{}, lost: map[[2]node.ID]bool{}, drift: map[node.ID]clockDrift{}, warned: map[string]bool{}}
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	b.lab, err = netlab.New(netlab.Options{Name: name, Nodes: nodes})
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	b.key = filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(b.key, []byte(fmt.Sprintf("clusterlab-netns-key-%d-%d\n", os.Getpid(), time.Now().UnixNano())), 0o600); err != nil {
		return nil, err
	}
	var masters string
	for i, m := range sc.Masters {
		if i > 0 {
			masters += ","
		}
		masters += fmt.Sprintf("%d:%s", m, b.lab.Addr(m))
	}
	for _, n := range sc.Nodes {
		conf := fmt.Sprintf("# clusterlab netns: %s\nCLUSTER_NODENUM=%d\nCLUSTER_MASTER=%s\nIFCONFIG=eth0:%s:255.255.0.0\n", sc.Name, n, masters, b.lab.Addr(n))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("n%d.conf", n)), []byte(conf), 0o600); err != nil {
			return nil, err
		}
	}
	base := netlab.LinkModel{Loss: sc.Network.Loss, Duplicate: sc.Network.Duplicate}
	if c := b.lab.Capabilities(); c.CanDelay() {
		base.Latency, base.Jitter = sc.Network.Latency, sc.Network.Jitter
	} else if sc.Network.Latency > 0 || sc.Network.Jitter > 0 {
		b.warn(fmt.Sprintf("this kernel can delay neither with netem nor in user space (NFQUEUE): the baseline latency %v and jitter %v are not emulated; links are as fast as the veth bridge", sc.Network.Latency, sc.Network.Jitter))
	}
	if err := b.lab.SetDefault(base); err != nil {
		return nil, fmt.Errorf("netns: baseline network: %w", err)
	}
	if o.Trace != nil {
		b.note("netns run in " + dir)
	}
	b.start = time.Now()
	ok = true
	return b, nil
}

// warn records a limitation of this run in the report, once.
func (b *netnsBackend) warn(msg string) {
	if !b.warned[msg] {
		b.warned[msg] = true
		b.r.res.Warnings = append(b.r.res.Warnings, msg)
	}
}

func (b *netnsBackend) now() time.Duration { return time.Since(b.start) }

func (b *netnsBackend) note(msg string) {
	if b.o.Trace != nil {
		fmt.Fprintf(b.o.Trace, "%12.6f note %s\n", b.now().Seconds(), msg)
	}
}

func (b *netnsBackend) socket(id node.ID) string {
	return filepath.Join(b.dir, fmt.Sprintf("n%d.sock", id))
}

// spawn starts node id's daemon and its event stream.
func (b *netnsBackend) spawn(id node.ID) error {
	if p := b.procs[id]; p != nil {
		return fmt.Errorf("n%d is already running", id)
	}
	c := b.sc.Config
	args := []string{
		"-config", filepath.Join(b.dir, fmt.Sprintf("n%d.conf", id)),
		"-key", b.key,
		"-state", filepath.Join(b.dir, fmt.Sprintf("n%d.state", id)),
		"-socket", b.socket(id),
		"-metrics", "",
		"-name", fmt.Sprintf("n%d", id),
		"-lab",
		"-log-level", "info",
		"-join-timeout", "24h", // the scenario decides what waiting means
		"-heartbeat", c.Heartbeat.String(),
		"-nodedown-after", c.NodedownAfter.String(),
		"-election-timeout", c.ElectionTimeout.String(),
	}
	cmd := b.lab.Command(int(id), b.o.Clusterd, args...)
	if cmd.Err != nil {
		return cmd.Err
	}
	logf, err := os.OpenFile(filepath.Join(b.dir, fmt.Sprintf("n%d.log", id)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	_ = os.Remove(b.socket(id))
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("starting clusterd for n%d: %w", id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{id: id, cmd: cmd, client: libcluster.New(b.socket(id)), cancel: cancel, exited: make(chan struct{}), log: logf}
	b.procs[id] = p
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	// The daemon keeps its lab events from its start until the first
	// reader comes, so connecting a little later loses nothing.
	connected := make(chan error, 1)
	go b.stream(ctx, p, connected)
	select {
	case err := <-connected:
		if err != nil {
			return fmt.Errorf("n%d: %w (see %s)", id, err, logf.Name())
		}
	case <-p.exited:
		return fmt.Errorf("n%d: clusterd exited at start: %s", id, tail(logf.Name()))
	case <-time.After(10 * time.Second):
		return fmt.Errorf("n%d: clusterd did not open its socket within 10s", id)
	}
	return nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 400 {
		b = b[len(b)-400:]
	}
	return string(b)
}

// stream forwards p's lab events to the runner until p ends.
func (b *netnsBackend) stream(ctx context.Context, p *proc, connected chan<- error) {
	first := true
	var err error
	// The socket file appears at bind, a moment before the daemon
	// listens: until the first line comes, refusals are retried.
	for deadline := time.Now().Add(10 * time.Second); first; {
		err = p.client.LabEvents(ctx, func(e libcluster.LabEvent) error {
			if first {
				first = false
				connected <- nil
			}
			if e.Kind == "hello" {
				return nil
			}
			select {
			case b.evs <- labEv{e: e, id: p.id}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if !first || !errors.Is(err, libcluster.ErrNoDaemon) || time.Now().After(deadline) {
			break
		}
		select {
		case <-p.exited:
			connected <- errors.New("clusterd exited")
			return
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	if first {
		connected <- err
		return
	}
	if ctx.Err() == nil {
		select {
		case <-p.exited:
		case <-time.After(2 * time.Second):
			// The stream broke while the daemon runs: the checker would
			// miss events, so the run cannot be trusted.
			select {
			case b.evs <- labEv{id: p.id, err: fmt.Errorf("event stream of n%d broke: %v", p.id, err)}:
			case <-ctx.Done():
			}
		}
	}
}

// kill ends p at once (SIGKILL) and waits for it.
func (b *netnsBackend) kill(id node.ID) error {
	p := b.procs[id]
	if p == nil {
		return fmt.Errorf("n%d is not running", id)
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
	b.drain(reorderLag)
	p.cancel()
	p.client.Close()
	_ = p.log.Close()
	delete(b.procs, id)
	return nil
}

func (b *netnsBackend) boot(id node.ID) error    { return b.spawn(id) }
func (b *netnsBackend) crash(id node.ID) error   { return b.kill(id) }
func (b *netnsBackend) restart(id node.ID) error { return b.spawn(id) }

func (b *netnsBackend) pause(id node.ID) error {
	p := b.procs[id]
	if p == nil {
		return fmt.Errorf("n%d is not running", id)
	}
	return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGSTOP)
}

func (b *netnsBackend) resume(id node.ID) error {
	p := b.procs[id]
	if p == nil {
		return fmt.Errorf("n%d is not running", id)
	}
	return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGCONT)
}

func (b *netnsBackend) leave(id node.ID) error {
	p := b.procs[id]
	if p == nil {
		return fmt.Errorf("n%d is not running", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.client.Leave(ctx)
}

func ints(ids []node.ID) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

func (b *netnsBackend) partition(groups [][]node.ID) error {
	var gs [][]int
	for _, g := range groups {
		gs = append(gs, ints(g))
	}
	if err := b.lab.Partition(gs); err != nil {
		return err
	}
	in := map[node.ID]int{}
	for i, g := range groups {
		for _, id := range g {
			in[id] = i + 1
		}
	}
	for _, a := range b.r.nodes {
		for _, c := range b.r.nodes {
			if a != c && (in[a] == 0 || in[a] != in[c]) {
				b.blocks[[2]node.ID{a, c}] = true
			}
		}
	}
	return nil
}

func (b *netnsBackend) cut(from, to node.ID) error {
	if err := b.lab.Block(int(from), int(to)); err != nil {
		return err
	}
	b.blocks[[2]node.ID{from, to}] = true
	return nil
}

func (b *netnsBackend) link(a, c node.ID, lc *scenarios.LinkChange) error {
	m := netlab.LinkModel{Loss: b.sc.Network.Loss, Duplicate: b.sc.Network.Duplicate}
	if caps := b.lab.Capabilities(); caps.CanDelay() {
		m.Latency, m.Jitter = b.sc.Network.Latency, b.sc.Network.Jitter
	}
	if lc.Latency != nil {
		m.Latency = *lc.Latency
	}
	if lc.Jitter != nil {
		m.Jitter = *lc.Jitter
	}
	if lc.Loss != nil {
		m.Loss = *lc.Loss
	}
	if lc.Duplicate != nil {
		m.Duplicate = *lc.Duplicate
	}
	if err := b.lab.SetLink(int(a), int(c), m); err != nil {
		return err
	}
	full := m.Loss >= 1
	b.lost[[2]node.ID{a, c}], b.lost[[2]node.ID{c, a}] = full, full
	return nil
}

func (b *netnsBackend) clock(id node.ID, offset time.Duration, driftPPM float64) error {
	if b.procs[id] == nil {
		return fmt.Errorf("n%d is not running", id)
	}
	b.drift[id] = clockDrift{offset: offset, ppm: driftPPM, since: b.now()}
	return b.applyClock(id)
}

// applyClock sets node id's clock offset as its drift has it now. The
// daemon only takes offsets, so a drift is applied as an offset that the
// lab moves every few milliseconds while time passes.
func (b *netnsBackend) applyClock(id node.ID) error {
	d, ok := b.drift[id]
	p := b.procs[id]
	if !ok || p == nil {
		return nil
	}
	off := d.offset + time.Duration(float64(b.now()-d.since)*d.ppm/1e6)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return p.client.SetClockOffset(ctx, off)
}

func (b *netnsBackend) heal() {
	if err := b.lab.Heal(); err != nil {
		b.r.res.InternalError = "netns: heal: " + err.Error()
	}
	base := netlab.LinkModel{Loss: b.sc.Network.Loss, Duplicate: b.sc.Network.Duplicate}
	if caps := b.lab.Capabilities(); caps.CanDelay() {
		base.Latency, base.Jitter = b.sc.Network.Latency, b.sc.Network.Jitter
	}
	if err := b.lab.SetDefault(base); err != nil {
		b.r.res.InternalError = "netns: heal: " + err.Error()
	}
	clear(b.blocks)
	clear(b.lost)
}

func (b *netnsBackend) after(d time.Duration, f func()) {
	b.timers.add(b.now()+d, f)
}

func (b *netnsBackend) blocked(a, c node.ID) bool {
	return b.blocks[[2]node.ID{a, c}] || b.lost[[2]node.ID{a, c}]
}

// deliver hands one daemon event to the runner, as the simulator's
// observers would have.
func (b *netnsBackend) deliver(ev labEv) error {
	e := ev.e
	at := time.Unix(0, e.At).Sub(b.start)
	switch e.Kind {
	case "clms":
		var ce clms.Event
		if err := json.Unmarshal(e.CLMS, &ce); err != nil {
			return fmt.Errorf("n%d sent a bad CLMS event: %w", ev.id, err)
		}
		b.nevents++
		b.r.observe(at, node.Boot(e.Boot), ce)
	case "call":
		if e.Call == nil {
			return fmt.Errorf("n%d sent a call event without a call", ev.id)
		}
		c := ics.CallEvent{Done: e.Call.Done, ID: e.Call.ID, Peer: node.ID(e.Call.Peer), PeerInc: e.Call.PeerInc}
		if e.Call.Err != "" {
			c.Err = errors.New(e.Call.Err)
		}
		b.nevents++
		b.r.ck.Call(at, node.ID(e.Node), node.Boot(e.Boot), c)
	case "error":
		return fmt.Errorf("n%d: %s", ev.id, e.CLMS)
	default:
		return fmt.Errorf("n%d sent an event of unknown kind %q", ev.id, e.Kind)
	}
	return nil
}

// reorderLag is how long an event waits before it is delivered. Each
// daemon's stream is in order, but the streams are read independently:
// a member's "applied" can reach the lab before the candidate's
// "persisted" that caused it. All daemons stamp events with the one host
// clock, so holding events this long and delivering them by stamp gives
// the checker the order in which they happened.
const reorderLag = 50 * time.Millisecond

// drain receives the events that arrive within d and delivers, in time
// order, those older than reorderLag (all of them if flush).
func (b *netnsBackend) drain(d time.Duration) { b.drainOpt(d, false) }

func (b *netnsBackend) drainOpt(d time.Duration, flush bool) {
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
	sort.SliceStable(b.pending, func(i, j int) bool { return b.pending[i].e.At < b.pending[j].e.At })
	cut := time.Now().Add(-reorderLag).UnixNano()
	k := 0
	for k < len(b.pending) && (flush || b.pending[k].e.At <= cut) {
		if err := b.deliver(b.pending[k]); err != nil {
			b.internal(err)
		}
		k++
	}
	b.pending = append(b.pending[:0], b.pending[k:]...)
}

// flush waits out the reorder lag, so that every stream has caught up
// with now, and delivers everything.
func (b *netnsBackend) flush() { b.drainOpt(reorderLag, true) }

func (b *netnsBackend) internal(err error) {
	if b.r.res.InternalError == "" {
		b.r.res.InternalError = "netns: " + err.Error()
	}
}

// runFor lets d of wall-clock time pass, delivering events and due
// timers, and checking stop every 20ms.
func (b *netnsBackend) runFor(d time.Duration, stop func() bool) (bool, error) {
	return runWall(b.now, d, 20*time.Millisecond, b.turn, stop, b.drain)
}

// turn runs due timers and moves drifting clocks; it reports the run's
// internal error, if any.
func (b *netnsBackend) turn() error {
	return wallTurn(b.now(), &b.timers, b.drift, b.applyClock, b.note, b.r.res)
}

func (b *netnsBackend) report(id node.ID) (report, bool) {
	p := b.procs[id]
	if p == nil {
		return report{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
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

func (b *netnsBackend) digest() string { return "" }

func (b *netnsBackend) events() uint64 { return b.nevents }

// close kills every daemon and removes the network and, unless kept,
// the run's directory.
func (b *netnsBackend) close() {
	for id := range b.procs {
		_ = b.kill(id)
	}
	if b.lab != nil {
		if err := b.lab.Close(); err != nil && b.r.res.InternalError == "" {
			b.r.res.InternalError = "netns: cleanup: " + err.Error()
		}
	}
	if b.o.Keep || (b.r.res.Failure != nil || b.r.res.InternalError != "") {
		b.warn("the run's files (configs, logs, state) are kept in " + b.dir)
		return
	}
	_ = os.RemoveAll(b.dir)
}
