package sim

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/clusterinfra/ci/node"
)

// Config sets up a World. The zero value of every field has a sensible
// default, given in its comment.
type Config struct {
	// Seed derives every random choice of the run: the network's and each
	// node's. The same seed and the same inputs give the same trace.
	Seed uint64
	// Link is the model of every link, each direction and path, unless
	// SetLink overrides it. The zero Link is a perfect 0-latency link.
	Link Link
	// Paths is the number of paths between every pair of nodes (default 1).
	Paths int
	// StreamTimeout is how long a stream segment (or a connection attempt)
	// may go unacknowledged before the connection breaks with
	// node.ErrStreamTimeout, like TCP_USER_TIMEOUT (default 10s).
	StreamTimeout time.Duration
	// RTOMin is the first retransmission timeout of a stream segment; each
	// retry doubles it (default 200ms, Linux's TCP_RTO_MIN).
	RTOMin time.Duration
	// RTOMax caps the doubling (default 60s).
	RTOMax time.Duration
	// SynRTO is the first retransmission timeout of a connection attempt
	// (default 1s, as in Linux).
	SynRTO time.Duration
	// StreamBuffer is the send buffer of each stream direction in bytes:
	// a Send that would exceed it fails with node.ErrStreamFull (default
	// 4 MiB). A message larger than the buffer is accepted when the buffer
	// is empty.
	StreamBuffer int
	// MaxMessage is the largest stream message (default 64 MiB + 64 KiB).
	MaxMessage int
	// HeldDatagrams is how many datagrams a paused node's socket buffer
	// keeps; more are dropped (default 256).
	HeldDatagrams int
	// MaxEvents bounds a run: processing more events than this makes Run
	// return ErrEventLimit (default 2^40).
	MaxEvents uint64
	// Trace, if set, receives one readable line per event.
	Trace io.Writer
}

func (c *Config) fill() {
	if c.Paths <= 0 {
		c.Paths = 1
	}
	if c.StreamTimeout <= 0 {
		c.StreamTimeout = 10 * time.Second
	}
	if c.RTOMin <= 0 {
		c.RTOMin = 200 * time.Millisecond
	}
	if c.RTOMax <= 0 {
		c.RTOMax = 60 * time.Second
	}
	if c.SynRTO <= 0 {
		c.SynRTO = time.Second
	}
	if c.StreamBuffer <= 0 {
		c.StreamBuffer = 4 << 20
	}
	if c.MaxMessage <= 0 {
		c.MaxMessage = 64<<20 + 64<<10
	}
	if c.HeldDatagrams <= 0 {
		c.HeldDatagrams = 256
	}
	if c.MaxEvents == 0 {
		c.MaxEvents = 1 << 40
	}
}

// State is the lifecycle state of a simulated node.
type State int

// Node states in the simulator.
const (
	NeverBooted State = iota // added, never started
	Running                  // processing events
	Paused                   // frozen: events wait until Resume
	Crashed                  // stopped; memory and unsynced writes lost
)

func (s State) String() string {
	switch s {
	case NeverBooted:
		return "never-booted"
	case Running:
		return "running"
	case Paused:
		return "paused"
	case Crashed:
		return "crashed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Errors of the simulator's control API.
var (
	ErrNoNode     = errors.New("sim: no such node")
	ErrNodeState  = errors.New("sim: node is in the wrong state for this")
	ErrEventLimit = errors.New("sim: event limit reached")
	ErrBadFault   = errors.New("sim: bad fault")
	// ErrIdle: the world has no event left, so nothing can happen any
	// more (Loop.Wait).
	ErrIdle = errors.New("sim: no event left")
)

// World is a deterministic discrete-event simulation of a cluster: nodes,
// the network between them and the faults that befall both. One goroutine
// (the caller's) drives everything; a World is not safe for concurrent
// use.
type World struct {
	cfg  Config
	now  int64
	seq  uint64
	q    queue
	free []*event

	nodes []*simNode // indexed by node.ID; nil where there is no node
	ids   []node.ID  // sorted
	// running is indexed by node.ID like nodes: the env of a node that is
	// Running, nil otherwise. Delivering a datagram to a running node
	// needs nothing but its env, so the hot path touches one small
	// per-node object (see simEnv) instead of the node record as well.
	running []*simEnv

	rng *rand.Rand // the network's randomness
	tr  *tracer

	net netState

	nextConn uint64
	stats    Stats
	actions  uint64 // world actions run (not counted as events)
}

// Stats counts what a run did.
type Stats struct {
	Events    uint64 // events processed (deliveries, timers, node calls)
	Delivered uint64 // datagrams and stream messages handed to nodes
	Timers    uint64 // timer callbacks run
	Dropped   uint64 // datagrams dropped by faults
	Retrans   uint64 // stream segment retransmissions
}

// New makes an empty World.
func New(cfg Config) *World {
	cfg.fill()
	w := &World{
		cfg: cfg,
		rng: rand.New(rand.NewPCG(cfg.Seed, 0x6e6574776f726b)), // "network"
		tr:  newTracer(cfg.Trace),
	}
	w.net.init(cfg.Link)
	return w
}

// Now is the current simulated time since the start of the run.
func (w *World) Now() time.Duration { return time.Duration(w.now) }

// Seed is the run's seed.
func (w *World) Seed() uint64 { return w.cfg.Seed }

// Digest is the hex digest of the trace so far.
func (w *World) Digest() string { return w.tr.digest() }

// Stats reports counters for the run so far.
func (w *World) Stats() Stats { return w.stats }

// Pending is the number of scheduled events.
func (w *World) Pending() int { return w.q.len() }

// Nodes lists the node numbers in the world, sorted.
func (w *World) Nodes() []node.ID { return slices.Clone(w.ids) }

// AddNode adds node id, which will run Handlers made by f. It does not
// start it: see Boot.
func (w *World) AddNode(id node.ID, f node.Factory) error {
	if id == 0 || id > 1<<22 {
		return fmt.Errorf("sim: node number %d out of range", id)
	}
	if int(id) < len(w.nodes) && w.nodes[id] != nil {
		return fmt.Errorf("sim: node %d already exists", id)
	}
	if f == nil {
		return fmt.Errorf("sim: node %d: nil factory", id)
	}
	for int(id) >= len(w.nodes) {
		w.nodes = append(w.nodes, nil)
		w.running = append(w.running, nil)
	}
	w.nodes[id] = &simNode{id: id, factory: f, store: newMemStore()}
	i, _ := slices.BinarySearch(w.ids, id)
	w.ids = slices.Insert(w.ids, i, id)
	return nil
}

func (w *World) node(id node.ID) *simNode {
	if int(id) < len(w.nodes) {
		return w.nodes[id]
	}
	return nil
}

// runningEnv is the env of node id if it is Running, or nil.
func (w *World) runningEnv(id node.ID) *simEnv {
	if int(id) < len(w.running) {
		return w.running[id]
	}
	return nil
}

func (w *World) mustNode(id node.ID) (*simNode, error) {
	n := w.node(id)
	if n == nil {
		return nil, fmt.Errorf("%w: %d", ErrNoNode, id)
	}
	return n, nil
}

// State is node id's lifecycle state.
func (w *World) State(id node.ID) State {
	if n := w.node(id); n != nil {
		return n.state
	}
	return NeverBooted
}

// Handler is the Handler of node id's current incarnation, or nil if it
// is not running or paused. Tests and checkers use it to look inside a
// node; they must not call it in ways that change it.
func (w *World) Handler(id node.ID) node.Handler {
	if n := w.node(id); n != nil && (n.state == Running || n.state == Paused) {
		return n.h
	}
	return nil
}

// BootCount is node id's current boot count (0 if it never booted).
func (w *World) BootCount(id node.ID) node.Boot {
	if n := w.node(id); n != nil {
		return n.boot
	}
	return 0
}

// Storage is node id's stable storage, as the node would find it after a
// crash now (synced writes only) when synced is true, or as it sees it.
func (w *World) Storage(id node.ID) node.Storage {
	if n := w.node(id); n != nil {
		return n.store
	}
	return nil
}

// Boot starts a node that has never run.
func (w *World) Boot(id node.ID) error {
	n, err := w.mustNode(id)
	if err != nil {
		return err
	}
	if n.state != NeverBooted {
		return fmt.Errorf("%w: boot n%d: it is %s", ErrNodeState, id, n.state)
	}
	w.start(n)
	return nil
}

// Restart boots a crashed node again as a new incarnation, with the
// storage it had synced.
func (w *World) Restart(id node.ID) error {
	n, err := w.mustNode(id)
	if err != nil {
		return err
	}
	if n.state != Crashed {
		return fmt.Errorf("%w: restart n%d: it is %s", ErrNodeState, id, n.state)
	}
	w.start(n)
	return nil
}

func (w *World) start(n *simNode) {
	n.boot++
	n.state = Running
	n.resetIncarnation(w)
	n.env = &simEnv{w: w, n: n, id: n.id, boot: n.boot}
	n.env.rng = rand.New(rand.NewPCG(w.cfg.Seed^0x9e3779b97f4a7c15, uint64(n.id)<<32|uint64(n.boot)))
	w.running[n.id] = n.env
	n.h = n.factory(n.id, n.boot)
	n.env.h = n.h
	ev := w.newEvent(kStart, n.id)
	ev.boot = n.boot
	w.push(w.now, ev)
}

// Crash stops a running or paused node at once: its memory, its pending
// timers and its unsynced storage writes are lost, and its ends of every
// stream die without a word to the peer (a host that lost power).
func (w *World) Crash(id node.ID) error {
	n, err := w.mustNode(id)
	if err != nil {
		return err
	}
	if n.state != Running && n.state != Paused {
		return fmt.Errorf("%w: crash n%d: it is %s", ErrNodeState, id, n.state)
	}
	w.trace(kCrash, id, 0, uint64(n.boot), 0, "")
	n.state = Crashed
	n.store.crash()
	for _, ev := range n.held {
		w.release(ev)
	}
	n.held = nil
	n.heldDgrams = 0
	w.dropConns(n)
	n.h = nil
	n.env.h = nil
	n.env.dead = true
	n.env = nil
	w.running[id] = nil
	n.timers = nil
	n.freeSlots = nil
	return nil
}

// Pause freezes a running node: it processes nothing (timers, datagrams,
// stream data) until Resume, while its clocks keep running. Streams to it
// stall as if its host stopped answering; datagrams wait in a bounded
// socket buffer.
func (w *World) Pause(id node.ID) error {
	n, err := w.mustNode(id)
	if err != nil {
		return err
	}
	if n.state != Running {
		return fmt.Errorf("%w: pause n%d: it is %s", ErrNodeState, id, n.state)
	}
	w.trace(kPause, id, 0, 0, 0, "")
	n.state = Paused
	w.running[id] = nil
	return nil
}

// Resume thaws a paused node. Everything that waited for it is processed
// now, in the order it would have been.
func (w *World) Resume(id node.ID) error {
	n, err := w.mustNode(id)
	if err != nil {
		return err
	}
	if n.state != Paused {
		return fmt.Errorf("%w: resume n%d: it is %s", ErrNodeState, id, n.state)
	}
	w.trace(kResume, id, 0, uint64(len(n.held)), 0, "")
	n.state = Running
	w.running[id] = n.env
	held := n.held
	n.held = nil
	n.heldDgrams = 0
	for _, ev := range held {
		w.push(w.now, ev)
	}
	return nil
}

// SetClock steps node id's wall clock by offset (which may be negative)
// and sets the drift of both its clocks to driftPPM parts per million (a
// positive drift runs fast). Pending timers move with the new rate.
func (w *World) SetClock(id node.ID, offset time.Duration, driftPPM int64) error {
	n, err := w.mustNode(id)
	if err != nil {
		return err
	}
	if driftPPM <= -500000 || driftPPM >= 500000 {
		return fmt.Errorf("%w: drift %dppm out of range (-500000, 500000)", ErrBadFault, driftPPM)
	}
	w.trace(kClock, id, 0, uint64(offset), uint64(driftPPM), "")
	n.wallOffset += int64(offset)
	n.setDrift(w, driftPPM)
	return nil
}

// Do runs f against node id's Handler on the node's turn, as an API call
// from outside would (for example a leave request). It runs now if the
// node is running, on resume if it is paused, and never if the node
// crashes first. It fails if the node is not running or paused.
func (w *World) Do(id node.ID, f func(h node.Handler)) error {
	n, err := w.mustNode(id)
	if err != nil {
		return err
	}
	if n.state != Running && n.state != Paused {
		return fmt.Errorf("%w: call into n%d: it is %s", ErrNodeState, id, n.state)
	}
	ev := w.newEvent(kDo, id)
	ev.boot = n.boot
	ev.do = f
	w.push(w.now, ev)
	return nil
}

// At schedules f to run at simulated time t (or now, if t has passed) as
// a world action: f may crash nodes, change the network or inspect state.
func (w *World) At(t time.Duration, f func()) {
	ev := w.newEvent(kAction, 0)
	ev.fn = f
	at := int64(t)
	if at < w.now {
		at = w.now
	}
	w.push(at, ev)
}

// After is At(Now()+d, f).
func (w *World) After(d time.Duration, f func()) { w.At(w.Now()+d, f) }

// Step processes the next event. It reports false when there is none.
func (w *World) Step() bool {
	if w.q.len() == 0 {
		return false
	}
	it := w.q.pop()
	w.now = it.at
	w.dispatch(it.ev)
	return true
}

// RunUntil processes every event scheduled up to and including time t,
// then sets the clock to t. It stops early with ErrEventLimit if the run
// has processed more than Config.MaxEvents events.
func (w *World) RunUntil(t time.Duration) error {
	end := int64(t)
	for w.q.len() > 0 && w.q.peek().at <= end {
		if w.stats.Events >= w.cfg.MaxEvents {
			return fmt.Errorf("%w (%d events)", ErrEventLimit, w.cfg.MaxEvents)
		}
		w.Step()
	}
	if end > w.now {
		w.now = end
	}
	return nil
}

// RunFor is RunUntil(Now()+d).
func (w *World) RunFor(d time.Duration) error { return w.RunUntil(w.Now() + d) }

// Run processes events until none is left (or the event limit).
func (w *World) Run() error {
	for w.q.len() > 0 {
		if w.stats.Events >= w.cfg.MaxEvents {
			return fmt.Errorf("%w (%d events)", ErrEventLimit, w.cfg.MaxEvents)
		}
		w.Step()
	}
	return nil
}

// Note adds a line from outside the nodes (a scenario step, a checker's
// finding) to the trace and its digest.
func (w *World) Note(msg string) { w.trace(kNote, 0, 0, 0, 0, msg) }

func (w *World) trace(k kind, id node.ID, peer node.ID, a, b uint64, note string) {
	w.tr.record(w.now, k, uint32(id), uint32(peer), a, b, note)
}

func (w *World) push(at int64, ev *event) {
	w.seq++
	w.q.push(item{at: at, seq: w.seq, ev: ev})
}

func (w *World) newEvent(k kind, id node.ID) *event {
	var ev *event
	if n := len(w.free); n > 0 {
		ev = w.free[n-1]
		w.free = w.free[:n-1]
	} else {
		ev = new(event)
	}
	ev.k = k
	ev.node = id
	return ev
}

func (w *World) release(ev *event) {
	*ev = event{}
	w.free = append(w.free, ev)
}
