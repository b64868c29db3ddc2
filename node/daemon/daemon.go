// Package daemon is clusterd: CLMS and ICS (package node/stack) on a real
// host (package node/host), with what a daemon needs around them: the
// introduction protocol that tells nodes each other's addresses, the
// local control API on a Unix socket (package node/libcluster is its
// client), Prometheus metrics, structured logs, remote execution for
// onnode, and a clean leave on SIGTERM.
//
// The protocol code is the very code the simulator runs; this package
// only wires it to the world, so everything here is I/O and plumbing.
// The event loop of the host runtime owns the node's state: the API,
// metrics and introduction goroutines reach it only through onLoop.
package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/host"
	"github.com/clusterinfra/ci/node/stack"
)

// Options configure a daemon. cmd/clusterd fills them from
// /etc/cluster.conf and its flags.
type Options struct {
	Self    node.ID
	Name    string                 // default "node<N>"
	Addr    netip.Addr             // this node's ICS address (IFCONFIG)
	Port    uint16                 // ICS port, the same on every node; introductions use Port+1
	Masters map[node.ID]netip.Addr // the candidate masters (CLUSTER_MASTER)
	Key     []byte                 // the cluster key
	// Allowed, if not nil, lists the only nodes that may join; the
	// candidates are always allowed. `cluster add` extends it online.
	Allowed  []node.ID
	StateDir string // persistent state: boot counter, raft log, directory
	Socket   string // the control API's Unix socket
	Metrics  string // Prometheus listen address; "" for none
	// JoinTimeout bounds the wait to become a member at start: past it
	// the daemon exits with the reason (default 60s).
	JoinTimeout time.Duration
	// IntroEvery is how often the node re-introduces itself to the
	// candidates (default 1s).
	IntroEvery time.Duration
	// CLMS timings (0: CLMS's defaults).
	Heartbeat, NodedownAfter, ElectionTimeout time.Duration
	// Lab enables the lab's hooks in the API: the event stream the
	// scenario checker reads, the clock offset, and the lab's background
	// RPC workload.
	Lab bool
	// LabAPI, with Lab, also serves the control API over TCP on this
	// address, for a lab that cannot reach the Unix socket (a VM's).
	// It is unauthenticated: only for a lab's private network.
	LabAPI string
	Logger *slog.Logger
}

// Daemon is one running clusterd.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	host    *host.Node
	dir     *directory
	introL  net.Listener
	api     *http.Server
	apiL    net.Listener
	labL    net.Listener
	metrics *http.Server
	hist    bcast
	lab     labHub
	fatal   chan error
	left    chan struct{}
	leftOne sync.Once
	wg      sync.WaitGroup
	stop    chan struct{}
	closeMu sync.Once

	boot      atomic.Uint64 // the running incarnation's boot number
	exec      execState
	mu        sync.Mutex
	joined    bool
	introErrs map[node.ID]error // the last round's failures
	answered  map[node.ID]bool  // candidates that ever answered
	snap      snapshot          // for metrics, refreshed every second
}

func (o *Options) fill() error {
	if !o.Self.Valid() {
		return fmt.Errorf("node number %d is outside 1-%d", o.Self, node.MaxID)
	}
	if !o.Addr.IsValid() {
		return errors.New("no ICS address")
	}
	if o.Port == 0 || o.Port == 65535 {
		return fmt.Errorf("ICS port %d: need 1-65534 (introductions use the next port)", o.Port)
	}
	if len(o.Masters) == 0 {
		return errors.New("no candidate masters")
	}
	if len(o.Key) < wire.MinKeySize {
		return fmt.Errorf("cluster key of %d bytes: need at least %d", len(o.Key), wire.MinKeySize)
	}
	if o.LabAPI != "" && !o.Lab {
		return errors.New("the TCP control API is only for the lab (-lab)")
	}
	if o.StateDir == "" || o.Socket == "" {
		return errors.New("state directory and socket are required")
	}
	if o.Name == "" {
		o.Name = fmt.Sprintf("node%d", o.Self)
	}
	if o.JoinTimeout <= 0 {
		o.JoinTimeout = 60 * time.Second
	}
	if o.IntroEvery <= 0 {
		o.IntroEvery = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Allowed != nil {
		for m := range o.Masters {
			if !slices.Contains(o.Allowed, m) {
				o.Allowed = append(o.Allowed, m)
			}
		}
		if !slices.Contains(o.Allowed, o.Self) {
			return fmt.Errorf("node %d is not in its own allowed list", o.Self)
		}
	}
	return nil
}

// Start starts the daemon: it listens, starts the node and begins to
// introduce itself. Run then waits for it to end.
func Start(o Options) (*Daemon, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, err
	}
	d := &Daemon{opts: o, log: o.Logger, fatal: make(chan error, 1), left: make(chan struct{}), stop: make(chan struct{}), introErrs: map[node.ID]error{}, answered: map[node.ID]bool{}}
	d.lab.init()
	self := entry{Node: o.Self, Addr: o.Addr, Name: o.Name}
	d.dir = newDirectory(statePath(o.StateDir), self, o.Allowed, d.setPeers)
	for id, a := range o.Masters {
		if id != o.Self {
			d.dir.merge([]entry{{Node: id, Addr: a, Name: ""}}, nil)
		}
	}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()

	var err error
	d.introL, err = net.Listen("tcp", introPath(o.Addr, o.Port).String())
	if err != nil {
		return nil, fmt.Errorf("introductions: %w", err)
	}
	kr, err := wire.NewKeyring(1, o.Key)
	if err != nil {
		return nil, err
	}
	cands := make([]node.ID, 0, len(o.Masters))
	for id := range o.Masters {
		cands = append(cands, id)
	}
	slices.Sort(cands)
	cfg := stack.Config{
		ICS: ics.Config{Keyring: kr, OnCall: d.onCall, Entropy: rand.Reader},
		CLMS: clms.Config{
			Candidates: cands, Heartbeat: o.Heartbeat, NodedownAfter: o.NodedownAfter, ElectionTimeout: o.ElectionTimeout,
			ClusterName: "cluster", Names: map[node.ID]string{o.Self: o.Name},
			CPUs: runtime.NumCPU(), MemoryMB: memoryMB(),
			Logf: func(format string, args ...any) { d.log.Info(fmt.Sprintf(format, args...)) },
		},
		Observe: d.observe,
		Setup:   d.setup,
	}
	hc := host.Config{
		Self:     o.Self,
		Listen:   []netip.AddrPort{netip.AddrPortFrom(o.Addr, o.Port)},
		Peers:    peersOf(d.dir.snapshot(), o.Port),
		StateDir: filepath.Join(o.StateDir, "host"),
		Logger:   o.Logger,
	}
	mk := stack.Factory(cfg)
	d.host, err = host.Start(hc, func(id node.ID, boot node.Boot) node.Handler {
		// The loop may call observe before host.Start returns.
		d.boot.Store(uint64(boot))
		return mk(id, boot)
	})
	if err != nil {
		return nil, err
	}
	d.dir.mu.Lock()
	e := d.dir.nodes[o.Self]
	e.Boot = uint64(d.host.Boot())
	d.dir.nodes[o.Self] = e
	d.dir.mu.Unlock()

	if err := d.startAPI(); err != nil {
		return nil, err
	}
	if o.Metrics != "" {
		if err := d.startMetrics(); err != nil {
			return nil, err
		}
	}
	d.wg.Go(func() { d.introServer(d.introL) })
	d.wg.Go(d.introLoop)
	d.wg.Go(d.joinWatch)
	d.wg.Go(d.refreshLoop)
	ok = true
	d.log.Info("clusterd started", "node", o.Self, "name", o.Name, "addr", o.Addr, "port", o.Port, "boot", d.host.Boot())
	return d, nil
}

func peersOf(dir map[node.ID]entry, port uint16) map[node.ID][]netip.AddrPort {
	m := map[node.ID][]netip.AddrPort{}
	for id, e := range dir {
		m[id] = []netip.AddrPort{netip.AddrPortFrom(e.Addr, port)}
	}
	return m
}

// setPeers hands a changed directory to the host runtime.
func (d *Daemon) setPeers(dir map[node.ID]entry) {
	if d.host == nil {
		return
	}
	if err := d.host.SetPeers(peersOf(dir, d.opts.Port)); err != nil && !errors.Is(err, host.ErrClosed) {
		d.log.Error("directory", "err", err)
	}
}

// setup runs on the loop when an incarnation's services are made.
func (d *Daemon) setup(n *stack.Node) {
	n.CLMS.Subscribe(func(uint64) { d.hist.fire() })
	if d.opts.Lab {
		stack.LabWorkload(n)
	}
	if _, ok := d.opts.Masters[d.opts.Self]; ok {
		if err := d.serveAllow(n); err != nil {
			d.log.Error("online add unavailable", "err", err)
		}
	}
	if err := serveExec(d, n); err != nil {
		d.log.Error("remote execution unavailable", "err", err)
	}
}

// observe sees every CLMS event, on the loop.
func (d *Daemon) observe(e clms.Event) {
	switch e.Kind {
	case clms.EvApplied:
		d.log.Info("transition", "num", e.T.Num, "node", e.T.Node, "inc", clms.IncString(e.T.Inc), "from", e.T.From, "to", e.T.To, "cause", e.T.Cause, "master", e.T.Master)
	case clms.EvMaster:
		d.log.Info("became master", "epoch", e.Epoch)
	case clms.EvRefused:
		d.log.Warn("refused a node", "node", e.Target)
	case clms.EvEvicted:
		d.log.Warn("declared down by the cluster: rejoining")
	case clms.EvDeparted:
		d.leftOne.Do(func() { close(d.left) })
	}
	if d.opts.Lab {
		d.lab.clms(d.opts.Self, d.boot.Load(), e)
	}
}

func (d *Daemon) onCall(e ics.CallEvent) {
	if d.opts.Lab {
		d.lab.call(d.opts.Self, d.boot.Load(), e)
	}
}

// errNotRunning says the node has no running incarnation (closing).
var errNotRunning = errors.New("clusterd: the node is shutting down")

// onLoop runs f on the node's event loop and waits for it, or for ctx.
// f must not block.
func (d *Daemon) onLoop(ctx context.Context, f func(n *stack.Node)) error {
	done := make(chan bool, 1)
	err := d.host.Do(func(h node.Handler) {
		n, ok := h.(*stack.Node)
		if ok && n.CLMS != nil {
			f(n)
		}
		done <- ok && n.CLMS != nil
	})
	if err != nil {
		return errNotRunning
	}
	select {
	case ok := <-done:
		if !ok {
			return errNotRunning
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// introLoop introduces the node to the candidates every IntroEvery,
// for as long as it runs.
func (d *Daemon) introLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-d.stop
		cancel()
	}()
	t := time.NewTicker(d.opts.IntroEvery)
	defer t.Stop()
	for {
		_, fails, fatal := d.introRound(ctx)
		if fatal != nil {
			d.fail(fatal)
			return
		}
		d.mu.Lock()
		d.introErrs = fails
		for id := range d.candidateAddrs() {
			if _, failed := fails[id]; !failed {
				d.answered[id] = true
			}
		}
		d.mu.Unlock()
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
	}
}

// joinWatch fails the daemon if it is not a member within JoinTimeout,
// saying why as well as it can.
func (d *Daemon) joinWatch() {
	deadline := time.NewTimer(d.opts.JoinTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-deadline.C:
			d.fail(d.joinFailure())
			return
		case <-tick.C:
			var up bool
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = d.onLoop(ctx, func(n *stack.Node) { up = n.CLMS.NodeAvail(d.opts.Self) })
			cancel()
			if up {
				d.mu.Lock()
				d.joined = true
				d.mu.Unlock()
				d.log.Info("joined the cluster")
				return
			}
		}
	}
}

func (d *Daemon) joinFailure() error {
	d.mu.Lock()
	errs, answered := d.introErrs, len(d.answered)
	d.mu.Unlock()
	if others := d.candidateAddrs(); len(others) > 0 && answered == 0 {
		var parts []string
		for id := range others {
			why := "no answer yet"
			if err := errs[id]; err != nil {
				why = err.Error()
			}
			parts = append(parts, fmt.Sprintf("n%d at %v: %s", id, d.opts.Masters[id], why))
		}
		sort.Strings(parts)
		return fmt.Errorf("no master reachable after %v: %s", d.opts.JoinTimeout, strings.Join(parts, "; "))
	}
	return fmt.Errorf("not admitted to the cluster after %v: the masters answered, but no quorate master admitted this node (are more than half of the %d candidate masters running?)", d.opts.JoinTimeout, len(d.opts.Masters))
}

func (d *Daemon) fail(err error) {
	select {
	case d.fatal <- err:
	default:
	}
}

// Run waits until the daemon ends: ctx is canceled (SIGTERM: it leaves
// the cluster cleanly first), the API asked it to leave, or a fatal
// error. It returns that error, or nil after a clean leave.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.Close()
	select {
	case err := <-d.fatal:
		return err // the caller says it, once
	case <-d.left:
		d.log.Info("left the cluster")
		return nil
	case <-ctx.Done():
	}
	d.log.Info("shutting down: leaving the cluster")
	if err := d.Leave(10 * time.Second); err != nil {
		d.log.Warn("leave did not complete", "err", err)
	}
	return nil
}

// Leave leaves the cluster and waits (up to timeout) for the node to
// have left. A node that is not a member just stops.
func (d *Daemon) Leave(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	member := false
	if err := d.onLoop(ctx, func(n *stack.Node) {
		member = n.CLMS.NodeAvail(d.opts.Self)
		if member {
			n.CLMS.Leave()
		}
	}); err != nil {
		return err
	}
	if !member {
		return nil
	}
	select {
	case <-d.left:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("not departed within %v", timeout)
	}
}

// Close stops everything the daemon started. It is idempotent.
func (d *Daemon) Close() {
	d.closeMu.Do(func() {
		close(d.stop)
		if d.api != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = d.api.Shutdown(ctx)
			cancel()
			_ = d.api.Close()
		}
		if d.apiL != nil {
			_ = d.apiL.Close()
			_ = os.Remove(d.opts.Socket)
		}
		if d.labL != nil {
			_ = d.labL.Close()
		}
		if d.metrics != nil {
			_ = d.metrics.Close()
		}
		if d.introL != nil {
			_ = d.introL.Close()
		}
		d.lab.close()
		d.killExec()
		if d.host != nil {
			if err := d.host.Close(); err != nil {
				d.log.Warn("closing the node", "err", err)
			}
		}
		d.wg.Wait()
	})
}

// memoryMB is the host's memory, for NodeInfo.
func memoryMB() uint64 {
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit) >> 20
}
