package clms

import (
	"fmt"
	"slices"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
)

// Subsystem is a part of the node that must act when others join or
// leave (the seed's optional registration system): ICS itself, a lock
// manager, a filesystem. A nodedown transition is complete only when every
// surviving node's subsystems have called done.
type Subsystem struct {
	Name string
	// NodeUp is called when a node enters the view.
	NodeUp func(n node.ID, inc uint64)
	// NodeDown is called when a node leaves the cluster (KCLEANUP); the
	// subsystem calls done, once, when it has finished cleaning up after
	// n:inc.
	NodeDown func(n node.ID, inc uint64, done func())
}

// Register adds a subsystem. Register before Start.
func (s *Service) Register(sub Subsystem) { s.subsystems = append(s.subsystems, sub) }

// KeyService registers this node's start and stop functions for key
// service name, which must be one of Config.KeyServices. The service runs
// on exactly one node of the view at a time, chosen by policy (the
// lowest-numbered member): when its node goes out, it moves, exactly once
// per transition, because every node computes the same placement from
// the same history.
func (s *Service) KeyService(name string, start, stop func()) error {
	if !slices.Contains(s.cfg.KeyServices, name) {
		return fmt.Errorf("%w: %q is not a configured key service", ErrConfig, name)
	}
	s.keyFuncs[name] = keyFuncs{start: start, stop: stop}
	return nil
}

// KeyServiceHolder is the node running key service name (0 if none).
func (s *Service) KeyServiceHolder(name string) node.ID { return s.keyHolders[name] }

func (s *Service) placeKeyServices(num uint64) {
	me := s.nodes[s.self]
	current := me != nil && me.inc == s.inc && me.state == StateUp && !s.departed
	for _, name := range s.cfg.KeyServices {
		var holder node.ID
		if len(s.view) > 0 {
			holder = s.view[0]
		}
		if old := s.keyHolders[name]; holder != old {
			s.keyHolders[name] = holder
			s.obs(Event{Kind: EvKeyService, Node: s.self, Name: name, Holder: holder, Num: num})
		}
		// Run it here only if the holder is this very incarnation: a node
		// replaying an old history after a restart sees its previous
		// incarnation as the holder, which is not itself.
		should := holder == s.self && current
		f := s.keyFuncs[name]
		switch {
		case should && !s.keyRunning[name]:
			s.keyRunning[name] = true
			if f.start != nil {
				f.start()
			}
		case !should && s.keyRunning[name]:
			s.keyRunning[name] = false
			if f.stop != nil {
				f.stop()
			}
		}
	}
}

// Leave starts a graceful leave: the node announces it, its key services
// move, the cluster takes it out without waiting for a timeout, and it
// shuts down. If it cannot reach a master it shuts down anyway after
// NodedownAfter.
func (s *Service) Leave() {
	if s.leaving || s.departed {
		return
	}
	s.leaving = true
	s.leaveAt = s.now()
	s.lastHBAt = -1 << 62
	if !s.memberNow() {
		s.depart()
		return
	}
	s.heartbeat()
	if s.m != nil {
		s.masterStep(s.self, false)
	}
}

// Departed reports whether the node has shut down after leaving.
func (s *Service) Departed() bool { return s.departed }

// Subscribe registers f to be told of new transitions: f(last) says the
// history now ends at entry last. Several transitions may come in one
// call (as one SIGCLUSTER could cover several); a subscriber catches up
// with Transitions, and misses nothing.
func (s *Service) Subscribe(f func(last uint64)) { s.subs = append(s.subs, f) }

// Membership is the view and the number of the last transition it
// reflects (libcluster's cluster_membership).
func (s *Service) Membership() (num uint64, view []node.ID) {
	return uint64(len(s.hist)), slices.Clone(s.view)
}

// History is every transition applied here, in order.
func (s *Service) History() []Transition { return slices.Clone(s.hist) }

// Last is the number of the last transition applied here.
func (s *Service) Last() uint64 { return uint64(len(s.hist)) }

// NextTransition is the first simple transition (into or out of the view)
// after number after (libcluster's cluster_transition).
func (s *Service) NextTransition(after uint64) (Transition, bool) {
	for n := after + 1; n <= uint64(len(s.hist)); n++ {
		if t := s.hist[n-1]; t.Simple() {
			return t, true
		}
	}
	return Transition{}, false
}

// Which selects a transition relative to a number, for Detailed.
type Which int

// The choices of cluster_detailedtransition.
const (
	This Which = iota
	Next
	Previous
	First
	LastOne
)

// Detailed is any transition, simple or not, relative to num
// (libcluster's cluster_detailedtransition).
func (s *Service) Detailed(which Which, num uint64) (Transition, error) {
	n := uint64(len(s.hist))
	var want uint64
	switch which {
	case This:
		want = num
	case Next:
		want = num + 1
	case Previous:
		want = num - 1
	case First:
		want = 1
	case LastOne:
		want = n
	}
	if want == 0 || want > n || (which == Previous && num == 0) {
		return Transition{}, fmt.Errorf("%w: %d", ErrNoTrans, want)
	}
	return s.hist[want-1], nil
}

// Info describes a node (libcluster's clusternode_info).
type Info struct {
	Node     node.ID
	Name     string
	State    State
	Inc      uint64
	Since    uint64 // the transition that put it in State
	Master   bool
	CPUs     int    // 0: unknown (ask the node: NodeInfoFrom)
	MemoryMB uint64 // 0: unknown
}

// NodeInfo describes node n as this node's history has it; CPUs and
// memory are known here for the local node only (see NodeInfoFrom).
func (s *Service) NodeInfo(n node.ID) (Info, error) {
	if !n.Valid() {
		return Info{}, fmt.Errorf("%w: %d", ErrNoSuchNode, n)
	}
	i := Info{Node: n, Name: s.name(n), Master: n == s.Master()}
	if r := s.nodes[n]; r != nil {
		i.State, i.Inc, i.Since = r.state, r.inc, r.num
	}
	if n == s.self {
		i.CPUs, i.MemoryMB = s.cfg.CPUs, s.cfg.MemoryMB
	}
	return i, nil
}

// hostInfo is what a node tells others about its hardware.
type hostInfo struct {
	CPUs     int    `json:"cpus"`
	MemoryMB uint64 `json:"memory_mb"`
}

var infoService = ics.NewService[struct{}, hostInfo]("clms.info")

// NodeInfoFrom asks member n itself, over ICS, for its CPUs and memory,
// and completes NodeInfo with them; done gets the result exactly once
// (an error if n is not a member or goes down first).
func (s *Service) NodeInfoFrom(n node.ID, done func(Info, error)) {
	i, err := s.NodeInfo(n)
	switch {
	case err != nil:
		done(i, err)
		return
	case n == s.self:
		done(i, nil)
		return
	case !s.NodeAvail(n):
		done(i, fmt.Errorf("%w: n%d is %s", ErrNotMember, n, i.State))
		return
	}
	_, err = infoService.Call(s.ep, n, struct{}{}, ics.CallOpts{Timeout: 2 * s.cfg.ElectionTimeout}, func(h hostInfo, err error) {
		if err == nil {
			i.CPUs, i.MemoryMB = h.CPUs, h.MemoryMB
		}
		done(i, err)
	})
	if err != nil {
		done(i, err)
	}
}

func (s *Service) name(n node.ID) string {
	if nm, ok := s.cfg.Names[n]; ok {
		return nm
	}
	return fmt.Sprintf("node%d", n)
}

// NodeAvail reports whether n is a member (clusternode_avail).
func (s *Service) NodeAvail(n node.ID) bool {
	r := s.nodes[n]
	return r != nil && r.state.InView()
}

// State is n's state in this node's history.
func (s *Service) State(n node.ID) State {
	if r := s.nodes[n]; r != nil {
		return r.state
	}
	return StateNeverUp
}

// Incarnation is this node's current incarnation.
func (s *Service) Incarnation() uint64 { return s.inc }

// MaxNodes is the largest node number (cluster_maxnodes).
func (s *Service) MaxNodes() node.ID { return node.MaxID }

// ClusterName is the cluster's name (cluster_name).
func (s *Service) ClusterName() string { return s.cfg.ClusterName }

// LocalNode is this node's number (clusternode_num).
func (s *Service) LocalNode() node.ID { return s.self }

// NodeByName finds a node by name (cluster_getnodebyname).
func (s *Service) NodeByName(name string) (node.ID, error) {
	for id, nm := range s.cfg.Names {
		if nm == name {
			return id, nil
		}
	}
	var id node.ID
	if _, err := fmt.Sscanf(name, "node%d", &id); err == nil && id.Valid() {
		return id, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrNoSuchNode, name)
}

// Quorate is the flag this node reports: it is up in its own view and
// heard, within the election timeout, from a master that holds a quorum
// and lists it as up.
func (s *Service) Quorate() bool { return s.quorate }

// Master is the master this node believes in (0 if none recently).
func (s *Service) Master() node.ID {
	if s.m != nil {
		return s.self
	}
	if s.now()-s.beaconAt < s.cfg.ElectionTimeout {
		return s.masterID
	}
	return 0
}

// MasterEpoch is the epoch of Master.
func (s *Service) MasterEpoch() uint64 { return s.masterEpoch }

// IsMaster reports whether this node is the master and holds its lease.
func (s *Service) IsMaster() bool { return s.m != nil && s.holdsQuorum() }

// SetNodeState asks the master to move node n to state to, as an
// administrator may (clusternode_setinfo SETSTATE). Only changes the
// lifecycle allows are accepted, and only on the master.
func (s *Service) SetNodeState(n node.ID, to State) error {
	if s.m == nil {
		return ErrNotMaster
	}
	r := s.nodes[n]
	if r == nil || !Allowed(r.state, to) || to == StateComingUp {
		return fmt.Errorf("%w: n%d %v -> %v", ErrBadState, n, s.State(n), to)
	}
	s.propose(n, r.inc, r.state, to, CauseAdmin)
	return nil
}

// Stats are counters of this node's CLMS work since it started, for
// metrics and for tests that bound the protocol's cost.
type Stats struct {
	// EntriesSent is how many history entries this node's beacons
	// carried while it was master (each node needs every entry once).
	EntriesSent uint64
	// StaleProposalsSkipped is how many committed proposals were found
	// invalid against the state they committed on and skipped.
	StaleProposalsSkipped uint64
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{EntriesSent: s.entriesSent, StaleProposalsSkipped: s.skippedStales}
}
