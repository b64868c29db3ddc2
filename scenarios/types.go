package scenarios

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The limits and defaults below are the ones SCENARIOS.md fixes. They are
// exported so that a runner, and a scenario built in code, use the same
// numbers as the parser.
const (
	// MinNode and MaxNode bound every node number.
	MinNode = 1
	MaxNode = 1024

	// DefaultSeed is the seed of a file that names none.
	DefaultSeed uint64 = 1
	// DefaultMasterCount is how many of the lowest nodes are candidate
	// masters when the file does not list them (all, if there are fewer).
	DefaultMasterCount = 3

	DefaultHeartbeat       = 50 * time.Millisecond
	DefaultNodedownAfter   = 250 * time.Millisecond
	DefaultElectionTimeout = 300 * time.Millisecond

	DefaultLatency   = 1 * time.Millisecond
	DefaultJitter    = 0 * time.Second
	DefaultLoss      = 0.0
	DefaultDuplicate = 0.0

	// DefaultWaitTimeout bounds `wait: converged` without a timeout.
	DefaultWaitTimeout = 30 * time.Second
	// DefaultNemesisTimeout bounds the convergence at the end of a nemesis
	// without a timeout.
	DefaultNemesisTimeout = 2 * time.Minute

	// DriftLimitPPM bounds a clock drift in either direction, exclusive: a
	// drift of -1000000ppm would stop the clock and anything beyond would
	// run it backwards, which no real clock does.
	DriftLimitPPM = 1_000_000.0
)

// Actions, as written in a step. Step.Action holds one of these.
const (
	ActionBoot      = "boot"
	ActionCrash     = "crash"
	ActionRestart   = "restart"
	ActionLeave     = "leave"
	ActionPause     = "pause"
	ActionResume    = "resume"
	ActionPartition = "partition"
	ActionCut       = "cut"
	ActionLink      = "link"
	ActionClock     = "clock"
	ActionHeal      = "heal"
	ActionSleep     = "sleep"
	ActionWait      = "wait"
	ActionExpect    = "expect"
	ActionNemesis   = "nemesis"
)

// actions lists every action in the order of the table in SCENARIOS.md,
// which is also the order the error messages suggest them in.
var actions = []string{
	ActionBoot, ActionCrash, ActionRestart, ActionLeave, ActionPause,
	ActionResume, ActionPartition, ActionCut, ActionLink, ActionClock,
	ActionHeal, ActionSleep, ActionWait, ActionExpect, ActionNemesis,
}

// Actions returns every action a step may carry, in the order SCENARIOS.md
// lists them.
func Actions() []string { return slices.Clone(actions) }

// HasTimeout reports whether a step with this action takes a `timeout`:
// only the steps that wait for convergence do.
func HasTimeout(action string) bool {
	return action == ActionWait || action == ActionNemesis
}

// WaitConverged is the only condition `wait` knows today.
const WaitConverged = "converged"

// Fault is one kind of fault a nemesis may inject.
type Fault string

// The faults SCENARIOS.md defines for `nemesis`.
const (
	FaultCrash     Fault = "crash"
	FaultRestart   Fault = "restart"
	FaultPause     Fault = "pause"
	FaultPartition Fault = "partition"
	FaultCut       Fault = "cut"
	FaultLoss      Fault = "loss"
	FaultClock     Fault = "clock"
	FaultLeave     Fault = "leave"
	FaultMaster    Fault = "master"
)

var faults = []Fault{
	FaultCrash, FaultRestart, FaultPause, FaultPartition, FaultCut,
	FaultLoss, FaultClock, FaultLeave, FaultMaster,
}

// Faults returns every fault a nemesis knows, in the order SCENARIOS.md
// lists them.
func Faults() []Fault { return slices.Clone(faults) }

// Pos is a 1-based position in a scenario file. The zero Pos means the
// value did not come from a file (a default, or a scenario built in code).
type Pos struct {
	Line, Col int
}

// IsValid reports whether p points into a file.
func (p Pos) IsValid() bool { return p.Line > 0 }

// String formats p as LINE:COL, or "-" for the zero Pos.
func (p Pos) String() string {
	if !p.IsValid() {
		return "-"
	}
	return strconv.Itoa(p.Line) + ":" + strconv.Itoa(p.Col)
}

// before orders positions; the zero Pos sorts first.
func (p Pos) before(q Pos) bool {
	return p.Line < q.Line || p.Line == q.Line && p.Col < q.Col
}

// Scenario is one parsed and validated scenario file. Every default of
// SCENARIOS.md is already applied, so a runner reads the fields as they
// are and never needs to know which were written.
type Scenario struct {
	// Name matches [a-z0-9-]+.
	Name        string
	Description string
	// File is the name the scenario was parsed under, for messages.
	File string
	// Seed is the file's seed, DefaultSeed if it names none; SeedSet says
	// whether it named one (a --seed flag overrides either way).
	Seed    uint64
	SeedSet bool
	// Nodes are the node numbers, ascending and distinct.
	Nodes []int
	// Masters are the candidate masters, ascending, distinct and a subset
	// of Nodes.
	Masters []int
	Config  Config
	// Network is the baseline model of every link.
	Network Link
	// SkipOn maps a backend (sim, netns, vm) that must not run this file
	// to the reason, e.g. an expectation that only the simulator's seeded
	// elections make certain. Empty: every backend runs it.
	SkipOn map[string]string
	// Steps run in order; there is at least one.
	Steps []Step
}

// Config holds the membership timing of every node.
type Config struct {
	// Heartbeat is how often liveness is signalled.
	Heartbeat time.Duration
	// NodedownAfter is the silence after which a node is suspected.
	NodedownAfter time.Duration
	// ElectionTimeout is the silence from the master after which a
	// candidate stands; the actual wait is drawn from [1x, 2x).
	ElectionTimeout time.Duration
}

// DefaultConfig returns the config of a file without one.
func DefaultConfig() Config {
	return Config{
		Heartbeat:       DefaultHeartbeat,
		NodedownAfter:   DefaultNodedownAfter,
		ElectionTimeout: DefaultElectionTimeout,
	}
}

// Link is a model of a link, one way. Loss and Duplicate are fractions in
// [0, 1] (the file writes them as percentages).
type Link struct {
	Latency   time.Duration
	Jitter    time.Duration
	Loss      float64
	Duplicate float64
}

// DefaultNetwork returns the baseline link model of a file without one.
func DefaultNetwork() Link {
	return Link{
		Latency:   DefaultLatency,
		Jitter:    DefaultJitter,
		Loss:      DefaultLoss,
		Duplicate: DefaultDuplicate,
	}
}

// Step is one step of a scenario. Exactly one of the action fields is
// set, the one Action names.
type Step struct {
	// Line and Col are where the step starts in the file (its first key),
	// for failure messages; zero for a step built in code.
	Line, Col int
	// At, when set, is the scenario time to wait for before the step
	// runs; if that time has already passed when the step is reached, the
	// step fails (a run-time failure, not a parse error).
	At    *time.Duration
	AtPos Pos
	// Timeout is set exactly for wait and nemesis steps, to the file's
	// value or the action's default; TimeoutPos is zero when defaulted.
	Timeout    *time.Duration
	TimeoutPos Pos
	// Action is one of the Action constants.
	Action string

	Boot    *NodeSet
	Crash   *NodeSet
	Restart *NodeSet
	Leave   *NodeSet
	Pause   *NodeSet
	Resume  *NodeSet

	Partition *Partition
	Cut       *Cut
	Link      *LinkChange
	Clock     *Clock
	// Heal is true for `heal: all`, the only form heal takes.
	Heal bool
	// Sleep is how long to let time pass (may be zero).
	Sleep   *time.Duration
	Wait    *Wait
	Expect  *Expect
	Nemesis *Nemesis
}

// Pos returns where the step starts.
func (s *Step) Pos() Pos { return Pos{s.Line, s.Col} }

// Nodes returns the node set of a boot, crash, restart, leave, pause or
// resume step, and nil for any other action.
func (s *Step) Nodes() *NodeSet {
	switch s.Action {
	case ActionBoot:
		return s.Boot
	case ActionCrash:
		return s.Crash
	case ActionRestart:
		return s.Restart
	case ActionLeave:
		return s.Leave
	case ActionPause:
		return s.Pause
	case ActionResume:
		return s.Resume
	}
	return nil
}

// NodeSet is a set of nodes as a step names it: `all`, `master`, one
// number or a list of numbers. Exactly one of All, Master and IDs is set.
type NodeSet struct {
	// All is every node in nodes, whatever its state.
	All bool
	// Master is the master named by the nodes reporting themselves
	// quorate when the step runs.
	Master bool
	// IDs are explicit node numbers, ascending and distinct (the order in
	// the file carries no meaning).
	IDs []int
	// Pos is where the set is written, for failure messages.
	Pos Pos
}

// ErrNoMaster is what NodeSet.Resolve returns for `master` when the
// runner found no master (no quorate node, or they disagree).
var ErrNoMaster = errors.New("scenarios: no master: no node reports itself quorate, or the quorate nodes disagree")

// Resolve returns the node numbers s stands for, ascending. nodes is the
// scenario's node list; master is the master named by the quorate nodes
// when the step runs, or 0 when there is none or they disagree, in which
// case a `master` set fails with ErrNoMaster. It checks that every number
// is in nodes, so a hand-built scenario cannot slip a stray node past it.
func (s NodeSet) Resolve(nodes []int, master int) ([]int, error) {
	switch {
	case s.All:
		return slices.Clone(nodes), nil
	case s.Master:
		if master == 0 {
			return nil, ErrNoMaster
		}
		if !slices.Contains(nodes, master) {
			return nil, fmt.Errorf("scenarios: master %d is not in nodes (%s)", master, FormatNodes(nodes))
		}
		return []int{master}, nil
	}
	ids := slices.Clone(s.IDs)
	slices.Sort(ids)
	for _, id := range ids {
		if !slices.Contains(nodes, id) {
			return nil, fmt.Errorf("scenarios: node %d is not in nodes (%s)", id, FormatNodes(nodes))
		}
	}
	return ids, nil
}

// String writes s as a scenario file would.
func (s NodeSet) String() string {
	switch {
	case s.All:
		return "all"
	case s.Master:
		return "master"
	case len(s.IDs) == 1:
		return strconv.Itoa(s.IDs[0])
	}
	return formatIntList(s.IDs)
}

// Partition splits the nodes into groups that only talk within
// themselves; every node is in exactly one group.
type Partition struct {
	// Groups are in file order; each is ascending.
	Groups [][]int
}

// Cut drops messages from From to To, one way.
type Cut struct {
	From, To NodeSet
}

// LinkChange changes the model of the link between two nodes, both ways.
// Only the parameters given are changed; a nil one keeps its value.
type LinkChange struct {
	// Between are two distinct nodes, ascending.
	Between   [2]int
	Latency   *time.Duration
	Jitter    *time.Duration
	Loss      *float64
	Duplicate *float64
}

// Clock steps and skews one node's clocks. A nil field is left as it is.
type Clock struct {
	Node int
	// Offset steps the node's wall clock; it may be negative.
	Offset *time.Duration
	// DriftPPM sets the rate error of both its clocks, in parts per
	// million, strictly within ±DriftLimitPPM.
	DriftPPM *float64
}

// Wait waits for a condition; the step's Timeout bounds it.
type Wait struct {
	// Condition is WaitConverged.
	Condition string
}

// Expect asserts now. Every field is optional; those given must all hold.
type Expect struct {
	Members   *NodeSet
	Down      *NodeSet
	Master    *NodeSet
	Quorate   *NodeSet
	Inquorate *NodeSet
	ViewOf    *ViewOf
	// TransitionsAtLeast is a lower bound on transitions committed.
	TransitionsAtLeast *int
	// DetectedWithin bounds every nodedown's detection time.
	DetectedWithin *time.Duration
	// FalseNodedowns is an upper bound on false nodedowns.
	FalseNodedowns *int
	// FieldPos maps each field given (by its name in the file, such as
	// "members") to where its key is, so that a failure can cite the very
	// line of the check that failed.
	FieldPos map[string]Pos
}

// ViewOf asserts one node's own view, converged or not.
type ViewOf struct {
	Node    int
	Members NodeSet
}

// Nemesis injects random faults drawn from the seed for Duration, one at
// exponentially distributed intervals with mean Interval; the step's
// Timeout bounds the convergence at its end.
type Nemesis struct {
	Duration time.Duration
	Interval time.Duration
	// Faults are distinct, in file order.
	Faults []Fault
}

// FormatNodes writes a list of node numbers compactly for messages, with
// runs as ranges: "1-5", "1-3, 7, 9-10".
func FormatNodes(nodes []int) string {
	ns := slices.Clone(nodes)
	slices.Sort(ns)
	ns = slices.Compact(ns)
	var b strings.Builder
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(ns[i]))
		if j > i {
			b.WriteString("-")
			b.WriteString(strconv.Itoa(ns[j]))
		}
		i = j + 1
	}
	return b.String()
}

// formatIntList writes a flow sequence of numbers: "[1, 2, 3]".
func formatIntList(ids []int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(id))
	}
	b.WriteByte(']')
	return b.String()
}
