package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clusterinfra/ci/node"
)

// Link models one direction of one path between two nodes. Datagrams
// suffer every fault directly. Streams never lose or reorder a message:
// a lost segment costs a retransmission timeout instead (see Config).
type Link struct {
	// Latency is the one-way delay.
	Latency time.Duration
	// Jitter spreads the delay uniformly over Latency ± Jitter (never
	// below zero); it reorders datagrams.
	Jitter time.Duration
	// Loss is the probability (0 to 1) that a datagram, or one
	// transmission of a stream segment, is lost. 1 blocks the link.
	Loss float64
	// Duplicate is the probability that a datagram is delivered twice.
	Duplicate float64
	// Reorder is the probability that a datagram is held back by an extra
	// ReorderDelay, so that later ones overtake it.
	Reorder float64
	// ReorderDelay is the extra delay of a reordered datagram (default
	// 10ms when Reorder is set).
	ReorderDelay time.Duration
	// Bandwidth, in bytes per second, serializes what crosses the link:
	// a message occupies it for len/Bandwidth (0: unlimited).
	Bandwidth int64
	// MaxInFlight caps the datagrams in flight on the link; more are
	// dropped, as a clogged queue would (0: unlimited).
	MaxInFlight int
}

// Validate reports a link model that makes no sense.
func (l Link) Validate() error {
	switch {
	case l.Latency < 0 || l.Jitter < 0 || l.ReorderDelay < 0:
		return fmt.Errorf("%w: negative duration in link model", ErrBadFault)
	case l.Loss < 0 || l.Loss > 1 || l.Duplicate < 0 || l.Duplicate > 1 || l.Reorder < 0 || l.Reorder > 1:
		return fmt.Errorf("%w: probability outside [0, 1] in link model", ErrBadFault)
	case l.Bandwidth < 0 || l.MaxInFlight < 0:
		return fmt.Errorf("%w: negative bandwidth or in-flight cap", ErrBadFault)
	}
	return nil
}

// linkKey names one direction of a path; path -1 means every path.
type linkKey struct {
	from, to node.ID
	path     int
}

type pair struct{ from, to node.ID }

// linkState is what a link remembers between messages when it models
// bandwidth or an in-flight cap.
type linkState struct {
	busyUntil int64
	inFlight  int
}

// netState is the network's fault configuration. faults counts the
// partitions, cuts and link overrides in force, so that the common case
// (no fault at all) costs one comparison per message.
type netState struct {
	base     Link
	links    map[linkKey]Link
	state    map[linkKey]*linkState
	group    map[node.ID]int // partition group of each node; absent: isolated
	parted   bool
	cuts     map[pair]bool
	pathCuts map[linkKey]bool
	faults   int
}

func (s *netState) init(base Link) {
	s.base = base
	s.links = map[linkKey]Link{}
	s.state = map[linkKey]*linkState{}
	s.cuts = map[pair]bool{}
	s.pathCuts = map[linkKey]bool{}
	s.recount()
}

func (s *netState) recount() {
	s.faults = len(s.links) + len(s.cuts) + len(s.pathCuts)
	if s.parted {
		s.faults++
	}
}

// model is the link model from one node to another over path.
func (s *netState) model(from, to node.ID, path int) Link {
	if s.faults == 0 {
		return s.base
	}
	if l, ok := s.links[linkKey{from, to, path}]; ok {
		return l
	}
	if l, ok := s.links[linkKey{from, to, -1}]; ok {
		return l
	}
	return s.base
}

// blocked reports whether a partition or cut stops traffic from one node
// to another over path.
func (s *netState) blocked(from, to node.ID, path int) bool {
	if s.faults == 0 {
		return false
	}
	if s.parted {
		gf, okf := s.group[from]
		gt, okt := s.group[to]
		if !okf || !okt || gf != gt {
			return true
		}
	}
	if s.cuts[pair{from, to}] {
		return true
	}
	return s.pathCuts[linkKey{from, to, path}]
}

func (s *netState) linkState(from, to node.ID, path int) *linkState {
	k := linkKey{from, to, path}
	ls := s.state[k]
	if ls == nil {
		ls = &linkState{}
		s.state[k] = ls
	}
	return ls
}

// delay draws the time a message of size bytes takes over a link,
// counting bandwidth serialization, latency and jitter.
func (w *World) delay(l Link, from, to node.ID, path int, size int) int64 {
	d := int64(l.Latency)
	if l.Jitter > 0 {
		d += w.rng.Int64N(2*int64(l.Jitter)+1) - int64(l.Jitter)
		if d < 0 {
			d = 0
		}
	}
	if l.Bandwidth > 0 {
		ls := w.net.linkState(from, to, path)
		start := max(ls.busyUntil, w.now)
		ls.busyUntil = start + int64(size)*int64(time.Second)/l.Bandwidth
		d += ls.busyUntil - w.now
	}
	return d
}

func (w *World) paths(peer node.ID) int {
	if w.node(peer) == nil {
		return 0
	}
	return w.cfg.Paths
}

// SendDatagram implements node.Network.
func (e *simEnv) SendDatagram(peer node.ID, path int, payload []byte) error {
	w := e.w
	if e.dead {
		return node.ErrUnreachable
	}
	if w.node(peer) == nil || path < 0 || path >= w.cfg.Paths {
		return fmt.Errorf("%w: n%d path %d", node.ErrBadPeer, peer, path)
	}
	if len(payload) > node.MaxDatagram {
		return fmt.Errorf("%w: datagram of %d bytes (max %d)", node.ErrTooLarge, len(payload), node.MaxDatagram)
	}
	w.sendDatagram(e.id, peer, path, payload)
	return nil
}

func (w *World) sendDatagram(from, to node.ID, path int, payload []byte) {
	if w.net.blocked(from, to, path) {
		w.stats.Dropped++
		w.trace(kDrop, to, from, uint64(path), uint64(len(payload)), "cut")
		return
	}
	l := w.net.model(from, to, path)
	if l.Loss > 0 && w.rng.Float64() < l.Loss {
		w.stats.Dropped++
		w.trace(kDrop, to, from, uint64(path), uint64(len(payload)), "loss")
		return
	}
	copies := 1
	if l.Duplicate > 0 && w.rng.Float64() < l.Duplicate {
		copies = 2
		w.trace(kDup, to, from, uint64(path), uint64(len(payload)), "")
	}
	for range copies {
		var ls *linkState
		if l.MaxInFlight > 0 {
			ls = w.net.linkState(from, to, path)
			if ls.inFlight >= l.MaxInFlight {
				w.stats.Dropped++
				w.trace(kDrop, to, from, uint64(path), uint64(len(payload)), "clog")
				continue
			}
			ls.inFlight++
		}
		d := w.delay(l, from, to, path, len(payload))
		if l.Reorder > 0 && w.rng.Float64() < l.Reorder {
			rd := l.ReorderDelay
			if rd == 0 {
				rd = 10 * time.Millisecond
			}
			d += int64(rd)
		}
		ev := w.newEvent(kDgram, to)
		ev.peer = from
		ev.path = path
		ev.data = slices.Clone(payload)
		if ls != nil {
			ev.gen = 1 // counted against the in-flight cap
		}
		w.push(w.now+d, ev)
	}
}

// arrived releases a datagram's place under the in-flight cap.
func (s *netState) arrived(ev *event) {
	if ev.gen == 1 {
		if ls := s.state[linkKey{ev.peer, ev.node, ev.path}]; ls != nil && ls.inFlight > 0 {
			ls.inFlight--
		}
	}
}

// Partition splits the nodes into groups that can talk only among
// themselves. A node in no group is cut off from every other. It replaces
// any earlier partition; cuts and link models stay.
func (w *World) Partition(groups ...[]node.ID) error {
	g := map[node.ID]int{}
	var desc []string
	for i, grp := range groups {
		var ids []string
		for _, id := range grp {
			if w.node(id) == nil {
				return fmt.Errorf("%w: partition: %w %d", ErrBadFault, ErrNoNode, id)
			}
			if _, dup := g[id]; dup {
				return fmt.Errorf("%w: partition: node %d in two groups", ErrBadFault, id)
			}
			g[id] = i
			ids = append(ids, fmt.Sprint(uint32(id)))
		}
		desc = append(desc, "["+strings.Join(ids, " ")+"]")
	}
	w.net.group = g
	w.net.parted = true
	w.net.recount()
	w.trace(kPartition, 0, 0, 0, 0, strings.Join(desc, " "))
	return nil
}

// Cut drops everything from one node to another, on every path (one way;
// call it twice for both ways). Cuts add up until Heal.
func (w *World) Cut(from, to node.ID) error {
	if w.node(from) == nil || w.node(to) == nil {
		return fmt.Errorf("%w: cut: %w", ErrBadFault, ErrNoNode)
	}
	w.net.cuts[pair{from, to}] = true
	w.net.recount()
	w.trace(kCut, from, to, 0, 0, "")
	return nil
}

// CutPath drops everything from one node to another on one path only, as
// when one of two interconnects fails.
func (w *World) CutPath(from, to node.ID, path int) error {
	if w.node(from) == nil || w.node(to) == nil || path < 0 || path >= w.cfg.Paths {
		return fmt.Errorf("%w: cut path: no such node or path", ErrBadFault)
	}
	w.net.pathCuts[linkKey{from, to, path}] = true
	w.net.recount()
	w.trace(kCut, from, to, uint64(path+1), 0, "")
	return nil
}

// SetLink changes the model of the link from one node to another, on
// every path (path -1) or on one.
func (w *World) SetLink(from, to node.ID, path int, l Link) error {
	if w.node(from) == nil || w.node(to) == nil || path < -1 || path >= w.cfg.Paths {
		return fmt.Errorf("%w: link: no such node or path", ErrBadFault)
	}
	if err := l.Validate(); err != nil {
		return err
	}
	w.net.links[linkKey{from, to, path}] = l
	w.net.recount()
	w.trace(kLink, from, to, uint64(path+1), 0, "")
	return nil
}

// Heal undoes every partition, cut and link change: the network is back
// to its base model. It does not resume paused nodes.
func (w *World) Heal() {
	w.net.group = nil
	w.net.parted = false
	clear(w.net.cuts)
	clear(w.net.pathCuts)
	clear(w.net.links)
	w.net.recount()
	w.trace(kHeal, 0, 0, 0, 0, "")
}

// Blocked reports whether traffic from one node to another over path is
// stopped by a partition or cut right now.
func (w *World) Blocked(from, to node.ID, path int) bool { return w.net.blocked(from, to, path) }

// LinkModel is the model in force from one node to another over path.
func (w *World) LinkModel(from, to node.ID, path int) Link { return w.net.model(from, to, path) }
