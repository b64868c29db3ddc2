package clms

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/clusterinfra/ci/node"
)

// State is a node's state in the membership history, as OpenSSI had them.
type State uint8

// Node states.
const (
	StateNeverUp   State = iota // never admitted
	StateComingUp               // admitted, catching up; not yet in the view
	StateUp                     // a member: in the view
	StateShutdown               // leaving cleanly; still in the view
	StateGoingDown              // being taken out on request; still in the view
	StateKCleanup               // out; kernel-level cleanup under way on every node
	StateUCleanup               // out; user-level cleanup and notification under way
	StateDown                   // out, cleanup finished: may be readmitted
	numStates
)

var stateNames = [numStates]string{"NEVERUP", "COMINGUP", "UP", "SHUTDOWN", "GOINGDOWN", "KCLEANUP", "UCLEANUP", "DOWN"}

func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// ParseState parses a state name as String writes it.
func ParseState(s string) (State, error) {
	for i, n := range stateNames {
		if n == s {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("clms: no state %q", s)
}

// InView reports whether a node in state s counts as a member.
func (s State) InView() bool { return s == StateUp }

// live reports whether a node in state s is taking part in the cluster.
func (s State) live() bool {
	return s == StateComingUp || s == StateUp || s == StateShutdown || s == StateGoingDown
}

// allowed lists the state changes the history may record. Any live state
// may go to KCLEANUP on failure; the rest follow OpenSSI's lifecycle.
var allowed = map[[2]State]bool{
	{StateNeverUp, StateComingUp}:   true,
	{StateDown, StateComingUp}:      true,
	{StateComingUp, StateUp}:        true,
	{StateUp, StateShutdown}:        true,
	{StateShutdown, StateUp}:        true,
	{StateUp, StateGoingDown}:       true,
	{StateComingUp, StateKCleanup}:  true,
	{StateUp, StateKCleanup}:        true,
	{StateShutdown, StateKCleanup}:  true,
	{StateGoingDown, StateKCleanup}: true,
	{StateKCleanup, StateUCleanup}:  true,
	{StateUCleanup, StateDown}:      true,
}

// Allowed reports whether the history may take a node from one state to
// another.
func Allowed(from, to State) bool { return allowed[[2]State{from, to}] }

// Cause says why a transition happened.
type Cause string

// Causes.
const (
	CauseJoin     Cause = "join"
	CauseNodedown Cause = "nodedown" // detected failure
	CauseRejoin   Cause = "rejoin"   // a newer incarnation asked to join
	CauseLeave    Cause = "leave"
	CauseCleanup  Cause = "cleanup" // cleanup phase finished everywhere
	CauseAdmin    Cause = "admin"   // SetNodeState
)

// Transition is one entry of the membership history: the same on every
// node for the same number.
type Transition struct {
	Num    uint64    // 1, 2, 3...: every entry has a number
	Time   time.Time // the master's wall clock when it proposed it
	Node   node.ID
	Inc    uint64 // the incarnation of Node it is about
	From   State
	To     State
	Cause  Cause
	Epoch  uint64  // the master epoch (consensus term) that committed it
	Master node.ID // the master that proposed it
}

func (t Transition) String() string {
	return fmt.Sprintf("#%d n%d:%s %s->%s (%s) by n%d@%d", t.Num, t.Node, IncString(t.Inc), t.From, t.To, t.Cause, t.Master, t.Epoch)
}

// IncString writes an incarnation as boot.rejoins ("2.0" is the second
// boot; "1.1" the first boot after one rejoin), which is how the
// incarnation number is made.
func IncString(inc uint64) string { return fmt.Sprintf("%d.%d", inc>>20, inc&(1<<20-1)) }

// Simple reports whether t takes a node into or out of the view: the
// transitions libcluster's cluster_transition reports and the scenario
// lab counts.
func (t Transition) Simple() bool { return t.From.InView() != t.To.InView() }

// Config configures CLMS on a node. Every node of a cluster must have the
// same Candidates, Allowed, timings and key services.
type Config struct {
	// Candidates are the nodes that may be master (CLUSTER_MASTER). They
	// vote on every transition; the list never changes at run time.
	Candidates []node.ID
	// Allowed, if not empty, lists the only nodes that may join. Any other
	// node is refused, and the refusal is logged.
	Allowed []node.ID
	// Heartbeat is how often liveness is signalled (default 50ms).
	Heartbeat time.Duration
	// NodedownAfter is the silence after which a node is suspected and,
	// unless indirect probes reach it, declared down (default 250ms).
	NodedownAfter time.Duration
	// ElectionTimeout is the silence from the master after which a
	// candidate stands for election; the wait is drawn from [1x, 2x) of it
	// (default 300ms). It is also the lease: a master holds a quorum while
	// more than half of the candidates answered it within this time.
	ElectionTimeout time.Duration
	// Probers is how many other nodes the master asks to probe a suspect
	// before declaring it down (default 3).
	Probers int
	// ClusterName is reported by the API.
	ClusterName string
	// Names maps node numbers to names, for the API.
	Names map[node.ID]string
	// KeyServices are the names of the key services (see KeyService).
	KeyServices []string
	// CPUs and MemoryMB describe this node for NodeInfo (the daemon
	// fills them from the host; 0 means unknown).
	CPUs     int
	MemoryMB uint64
	// Detector, if set, replaces the built-in nodedown detector's
	// verdicts (see Detector).
	Detector Detector
	// Logf, if set, receives important events (refusals, evictions).
	Logf func(format string, args ...any)
}

func (c *Config) fill() error {
	if len(c.Candidates) == 0 {
		return fmt.Errorf("%w: no candidate masters", ErrConfig)
	}
	seen := map[node.ID]bool{}
	for _, id := range c.Candidates {
		if !id.Valid() || seen[id] {
			return fmt.Errorf("%w: bad or repeated candidate %d", ErrConfig, id)
		}
		seen[id] = true
	}
	c.Candidates = slices.Clone(c.Candidates)
	slices.Sort(c.Candidates)
	if c.Heartbeat <= 0 {
		c.Heartbeat = 50 * time.Millisecond
	}
	if c.NodedownAfter <= 0 {
		c.NodedownAfter = 250 * time.Millisecond
	}
	if c.ElectionTimeout <= 0 {
		c.ElectionTimeout = 300 * time.Millisecond
	}
	if c.Probers <= 0 {
		c.Probers = 3
	}
	if c.ClusterName == "" {
		c.ClusterName = "cluster"
	}
	return nil
}

// Detector is the pluggable part of nodedown detection (the seed's
// "largely separate nodedown detection technology"). The master asks it
// whether a node it has not heard from should be suspected; the default
// suspects after NodedownAfter of silence.
type Detector interface {
	// Suspect reports whether node n, last heard silence ago, is suspect.
	Suspect(n node.ID, silence time.Duration) bool
}

// Errors.
var (
	ErrConfig     = errors.New("clms: bad configuration")
	ErrNotMember  = errors.New("clms: not a member")
	ErrNoSuchNode = errors.New("clms: no such node")
	ErrBadState   = errors.New("clms: state change not allowed")
	ErrNotMaster  = errors.New("clms: not the master")
	ErrNoTrans    = errors.New("clms: no such transition")
)
