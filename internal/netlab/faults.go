package netlab

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// maxDelay bounds Latency and Jitter: anything longer is not a network
// fault but a partition, and would fill the delay queue.
const maxDelay = time.Minute

// LinkModel describes how a link treats each packet, in each direction.
// The zero value is a perfect link.
type LinkModel struct {
	// Latency is added to every packet: microsecond resolution with
	// netem; with user-space delay, a Go timer's (see Caps.Delay and the
	// package documentation for the accuracy measured).
	Latency time.Duration
	// Jitter varies each packet's delay uniformly within Latency±Jitter
	// (never below zero; netem without a distribution table does the
	// same). Packets reorder when their draws say so.
	Jitter time.Duration
	// Loss is the probability in [0,1] that a packet is dropped, with a
	// resolution of 1e-6. Works on every kernel with nftables.
	Loss float64
	// Duplicate is the probability in [0,1] that a packet is sent twice.
	// Each copy is then lost or delayed independently.
	Duplicate float64
}

func (m LinkModel) delayed() bool { return m.Latency > 0 || m.Jitter > 0 }

func (m LinkModel) validate(c Caps) error {
	switch {
	case m.Latency < 0 || m.Latency > maxDelay:
		return fmt.Errorf("netlab: latency %v outside 0..%v", m.Latency, maxDelay)
	case m.Jitter < 0 || m.Jitter > maxDelay:
		return fmt.Errorf("netlab: jitter %v outside 0..%v", m.Jitter, maxDelay)
	case !(m.Loss >= 0 && m.Loss <= 1): // also rejects NaN
		return fmt.Errorf("netlab: loss %v outside 0..1", m.Loss)
	case !(m.Duplicate >= 0 && m.Duplicate <= 1):
		return fmt.Errorf("netlab: duplicate %v outside 0..1", m.Duplicate)
	case m.delayed() && !c.CanDelay():
		if c.Netem && !c.HTB {
			return ErrNoHTB
		}
		return ErrNoNetem
	case m.Duplicate > 0 && !c.Duplicate:
		return ErrNoDup
	}
	return nil
}

// pair is an ordered (from, to) pair of nodes, or an unordered one with
// from < to when used as a link key.
type pair struct{ from, to int }

func linkKey(a, b int) pair { return pair{min(a, b), max(a, b)} }

// faults is the whole fault state; the kernel state is a function of it.
type faults struct {
	blocked map[pair]bool
	// group maps each node to its partition group; nil means no
	// partition, a node missing from a non-nil map is isolated.
	group map[int]int
	links map[pair]LinkModel // overrides, keyed by linkKey
	def   LinkModel
}

func newFaults() faults {
	return faults{blocked: map[pair]bool{}, links: map[pair]LinkModel{}}
}

func (f faults) clone() faults {
	return faults{
		blocked: maps.Clone(f.blocked),
		group:   maps.Clone(f.group),
		links:   maps.Clone(f.links),
		def:     f.def,
	}
}

func (f *faults) model(from, to int) LinkModel {
	if m, ok := f.links[linkKey(from, to)]; ok {
		return m
	}
	return f.def
}

// update applies mut to a copy of the fault state, installs the result and
// commits it. If installing fails, the previous state is reinstalled so
// that what the kernel does keeps matching what the lab reports.
func (l *Lab) update(mut func(f *faults) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	next := l.f.clone()
	if err := mut(&next); err != nil {
		return err
	}
	prev := l.f
	l.f = next
	if err := l.install(); err != nil {
		l.f = prev
		if rerr := l.install(); rerr != nil {
			return errors.Join(err, fmt.Errorf("netlab: restoring the previous faults: %w", rerr))
		}
		return err
	}
	return nil
}

func (l *Lab) checkPair(from, to int) error {
	if !l.isNode(from) || !l.isNode(to) {
		return fmt.Errorf("netlab: %d->%d: not both nodes of lab %s", from, to, l.name)
	}
	if from == to {
		return fmt.Errorf("netlab: %d->%d: a node cannot be cut from itself", from, to)
	}
	return nil
}

// Block silently drops every IPv4 packet from node from to node to; the
// other direction is untouched. Senders see their sends succeed and
// receivers see nothing, as with a lost packet: TCP connects time out
// instead of being refused. Blocks add up and stay until Unblock or Heal.
func (l *Lab) Block(from, to int) error {
	if err := l.checkPair(from, to); err != nil {
		return err
	}
	return l.update(func(f *faults) error {
		f.blocked[pair{from, to}] = true
		return nil
	})
}

// Unblock removes a Block; it does not lift a partition. Unblocking a pair
// that is not blocked does nothing.
func (l *Lab) Unblock(from, to int) error {
	if err := l.checkPair(from, to); err != nil {
		return err
	}
	return l.update(func(f *faults) error {
		delete(f.blocked, pair{from, to})
		return nil
	})
}

// Partition replaces the current partition: nodes in different groups
// cannot talk in either direction, and nodes in no group are isolated from
// every other node. Partition(nil) thus isolates everybody; one group with
// every node ends the partition (as does Heal). Blocks are kept.
func (l *Lab) Partition(groups [][]int) error {
	group := make(map[int]int)
	for g, nodes := range groups {
		for _, n := range nodes {
			if !l.isNode(n) {
				return fmt.Errorf("netlab: partition: %d is not a node of lab %s", n, l.name)
			}
			if _, dup := group[n]; dup {
				return fmt.Errorf("netlab: partition: node %d is in two groups", n)
			}
			group[n] = g
		}
	}
	return l.update(func(f *faults) error {
		f.group = group
		return nil
	})
}

// SetLink sets the model of the link between a and b, in both directions;
// it overrides the default model until Heal. A zero a or b means every
// other node: SetLink(3, 0, m) gives all of node 3's links model m. The
// state is unchanged on error; a model with delay fails with ErrNoNetem on
// kernels that can delay neither with netem nor in user space.
func (l *Lab) SetLink(a, b int, m LinkModel) error {
	if err := m.validate(l.caps); err != nil {
		return fmt.Errorf("netlab: link %d<->%d: %w", a, b, err)
	}
	var keys []pair
	switch {
	case a == b:
		return fmt.Errorf("netlab: link %d<->%d: need two different nodes", a, b)
	case a == 0 || b == 0:
		n := max(a, b)
		if !l.isNode(n) {
			return fmt.Errorf("netlab: link %d<->%d: %d is not a node of lab %s", a, b, n, l.name)
		}
		for _, o := range l.nodes {
			if o != n {
				keys = append(keys, linkKey(n, o))
			}
		}
	default:
		if err := l.checkPair(a, b); err != nil {
			return err
		}
		keys = []pair{linkKey(a, b)}
	}
	return l.update(func(f *faults) error {
		for _, k := range keys {
			f.links[k] = m
		}
		return nil
	})
}

// SetDefault sets the model of every link that has no SetLink override.
// Heal keeps it: the default is the lab's baseline, not a fault. The zero
// model is accepted on every kernel.
func (l *Lab) SetDefault(m LinkModel) error {
	if err := m.validate(l.caps); err != nil {
		return fmt.Errorf("netlab: default link: %w", err)
	}
	return l.update(func(f *faults) error {
		f.def = m
		return nil
	})
}

// Heal returns the network to its baseline: it removes every block, the
// partition and every SetLink override, so every link follows the default
// model again (SetDefault(LinkModel{}) removes that too). This matches the
// scenario runner's heal, which ends partitions, cuts and link changes.
func (l *Lab) Heal() error {
	return l.update(func(f *faults) error {
		def := f.def
		*f = newFaults()
		f.def = def
		return nil
	})
}

// dropped reports whether the hub must drop everything from -> to.
func (f *faults) dropped(from, to int) bool {
	if f.blocked[pair{from, to}] {
		return true
	}
	if f.group == nil {
		return false
	}
	gf, okf := f.group[from]
	gt, okt := f.group[to]
	return !okf || !okt || gf != gt
}

// addrGroup is a set of peer nodes that share one treatment; all says the
// set is every node but the one it is about, which rules match with a
// prefix instead of listing addresses.
type addrGroup struct {
	nodes []int
	all   bool
}

type lossGroup struct {
	p     float64
	peers addrGroup
}

type dupGroup struct {
	p     float64
	peers addrGroup
}

type delayKey struct{ latency, jitter time.Duration }

type delayGroup struct {
	delayKey
	peers addrGroup
}

// destFaults is what the hub does to packets addressed to one node.
type destFaults struct {
	to int
	// partitioned: the node is in a partition group that is not the
	// whole lab; isolated: it is in no group at all.
	partitioned, isolated bool
	group                 int
	blocked               []int
	loss                  []lossGroup
}

func (d destFaults) empty() bool {
	return !d.partitioned && !d.isolated && len(d.blocked) == 0 && len(d.loss) == 0
}

// plan is the kernel state derived from the fault state. Everything is
// sorted, so that the same faults always give the same rules.
type plan struct {
	groups map[int][]int // partition group -> its nodes
	dest   []destFaults
	dup    map[int][]dupGroup   // by sender
	delay  map[int][]delayGroup // by receiver
	// model is the delay part of the fault state, for the delayer.
	model *delayModel
}

func (l *Lab) peersOf(nodes []int) addrGroup {
	slices.Sort(nodes)
	return addrGroup{nodes: nodes, all: len(nodes) == len(l.nodes)-1}
}

// grouped is one value of groupBy with the peers that have it.
type grouped[K cmp.Ordered] struct {
	k     K
	peers addrGroup
}

// groupBy collects the peers of node self by a per-peer value, skipping
// zero values; the result is sorted by value.
func groupBy[K cmp.Ordered](l *Lab, self int, val func(peer int) K) []grouped[K] {
	by := map[K][]int{}
	var zero K
	for _, p := range l.nodes {
		if p == self {
			continue
		}
		if k := val(p); k != zero {
			by[k] = append(by[k], p)
		}
	}
	out := make([]grouped[K], 0, len(by))
	for _, k := range slices.Sorted(maps.Keys(by)) {
		out = append(out, grouped[K]{k, l.peersOf(by[k])})
	}
	return out
}

func (l *Lab) plan() plan {
	f := &l.f
	p := plan{dup: map[int][]dupGroup{}, delay: map[int][]delayGroup{}}
	if f.group != nil {
		p.groups = map[int][]int{}
		for _, n := range l.nodes {
			if g, ok := f.group[n]; ok {
				p.groups[g] = append(p.groups[g], n)
			}
		}
	}
	for _, to := range l.nodes {
		d := destFaults{to: to}
		if f.group != nil {
			g, ok := f.group[to]
			d.isolated = !ok
			d.partitioned = ok && len(p.groups[g]) < len(l.nodes)
			d.group = g
		}
		for _, from := range l.nodes {
			if from != to && f.blocked[pair{from, to}] {
				d.blocked = append(d.blocked, from)
			}
		}
		for _, g := range groupBy(l, to, func(from int) float64 {
			if f.dropped(from, to) {
				return 0 // already dropped in full
			}
			return f.model(from, to).Loss
		}) {
			d.loss = append(d.loss, lossGroup{g.k, g.peers})
		}
		// Delay and duplication do not depend on blocks, so that a Block
		// never rebuilds (and flushes) a netem queue.
		for _, g := range groupBy(l, to, func(from int) string {
			m := f.model(from, to)
			if !m.delayed() {
				return ""
			}
			// A string key, because groupBy wants an ordered one; the
			// group's delay is read back from its first member.
			return fmt.Sprintf("%020d/%020d", m.Latency, m.Jitter)
		}) {
			m := f.model(g.peers.nodes[0], to)
			p.delay[to] = append(p.delay[to], delayGroup{delayKey{m.Latency, m.Jitter}, g.peers})
		}
		if !d.empty() {
			p.dest = append(p.dest, d)
		}
	}
	if l.caps.Delay == DelayQueue {
		p.model = &delayModel{def: delayKey{f.def.Latency, f.def.Jitter}, links: map[pair]delayKey{}}
		for k, m := range f.links {
			p.model.links[k] = delayKey{m.Latency, m.Jitter}
		}
	}
	for _, from := range l.nodes {
		for _, g := range groupBy(l, from, func(to int) float64 { return f.model(from, to).Duplicate }) {
			p.dup[from] = append(p.dup[from], dupGroup{g.k, g.peers})
		}
	}
	return p
}

// install makes the kernel match l.f: the hub's rules in one transaction,
// then only the senders and receiver ports whose share changed.
func (l *Lab) install() error {
	p := l.plan()
	if l.caps.Delay == DelayQueue {
		if err := l.installQueue(p); err != nil {
			return err
		}
	}
	// Every change but a no-op one (Unblock of an open pair, the same
	// model again) changes the hub; skipping no-ops saves a transaction.
	key := fmt.Sprint(p.dest, p.groups)
	if l.caps.Delay == DelayQueue {
		key += fmt.Sprint(p.delay)
	}
	if key != l.appliedHub {
		if err := l.installHub(p); err != nil {
			return err
		}
		l.appliedHub = key
	}
	for _, n := range l.nodes {
		key := planKey(p.dup[n])
		if key == l.appliedDup[n] {
			continue
		}
		if err := l.installDup(n, p.dup[n]); err != nil {
			return fmt.Errorf("netlab: duplication from node %d: %w", n, err)
		}
		l.appliedDup[n] = key
	}
	if l.caps.Delay != DelayNetem {
		return nil
	}
	for _, n := range l.nodes {
		key := planKey(p.delay[n])
		if key == l.appliedTC[n] {
			continue
		}
		if err := l.installDelay(n, p.delay[n], netemLeaf); err != nil {
			return fmt.Errorf("netlab: delay towards node %d: %w", n, err)
		}
		l.appliedTC[n] = key
	}
	return nil
}

// installQueue prepares the delayer for plan p, before the hub's rules
// queue anything to it: it starts the delayer with the first delayed
// link (a queue rule without a delayer would drop the packets) and gives
// it the new delays. The delayer then runs until Close.
func (l *Lab) installQueue(p plan) error {
	if l.delay == nil {
		if len(p.delay) == 0 {
			return nil
		}
		d, err := l.startDelayer()
		if err != nil {
			return err
		}
		l.delay = d
	}
	if err := l.delay.failure(); err != nil {
		return err
	}
	l.delay.setModel(p.model)
	return nil
}

// planKey fingerprints what is installed for one node; "" is nothing,
// which is also the state of a fresh node.
func planKey[T any](groups []T) string {
	if len(groups) == 0 {
		return ""
	}
	return fmt.Sprint(groups)
}

// lossThreshold converts a probability into a numgen threshold out of
// lossModulus; 0 means "never", lossModulus "always".
func lossThreshold(p float64) uint32 {
	return uint32(math.Round(p * lossModulus))
}
