package clms_test

// Interaction tests, in the style of etcd raft's: each file in testdata/
// is a script in a small command language, run on the deterministic
// simulator, with the expected output under each command. Regenerate the
// expected output with
//
//	go test ./clms/ -run TestInteraction -rewrite
//
// and commit the change only if you understand it. Every event of every
// node goes to the invariant checker (scenarios/check); a violation is
// printed as "VIOLATION: ..." and fails the test, so a rewrite cannot
// bless a broken history. The harness adds checks of its own, each with
// a kind:
//
//	refused-member        a node not in Config.Allowed is in a transition
//	stale-lease           a master proposes in an epoch older than the
//	                      newest elected one (invariant 6: its lease
//	                      cannot hold)
//	keyservice-nonmember  a key service starts on a node that is not UP
//	                      as its current incarnation in its own history
//
// Their findings are violations too, unless the command that ran names
// the kind in known-bug=KIND: then they print as "KNOWN BUG (KIND): ..."
// and the test passes, until the bug is fixed and the line goes away.
//
// Commands (node sets are "all", "3", "1,2,4", "1-5" or "1-3,7"; any
// command may carry known-bug=KIND[,KIND]):
//
//	cluster nodes=5 [masters=1,2,3] [seed=1] [allowed=1-4] [keyservices=key]
//	    a new simulated world of stack nodes, not booted; 1ms links and
//	    the default CLMS timings (heartbeat 50ms, nodedown after 250ms,
//	    election timeout 300ms).
//	boot NODES | crash NODES | restart NODES | pause NODES | resume NODES
//	    restart boots a crashed (or departed) node as a new incarnation.
//	leave NODES       a graceful leave (Service.Leave on the node).
//	partition A | B [| C...]   only nodes in the same group can talk.
//	cut A->B          drop everything from nodes A to nodes B (one way).
//	heal              undo partitions and cuts (paused nodes stay paused).
//	run DURATION      advance simulated time; print what happened.
//	stabilize [nodes=NODES] [timeout=10s] [quiet] [expect-timeout]
//	    run until converged: every node of NODES (default: the running,
//	    non-departed, allowed nodes) is quorate, has the same last number,
//	    the same master (one of them) and the view NODES, and no node is
//	    in a transient state anywhere. Prints the time it took. A timeout
//	    fails the test unless expect-timeout is given.
//	await node=N state=STATE [on=M] [timeout=5s]
//	    run event by event until some running node (or M) has N in STATE.
//	status [NODES]    per node: sim state, quorate flag, master, last
//	                  number, own incarnation, view.
//	history [node=N] [from=K]
//	    the committed history (as first applied anywhere), or node N's.
//	subscribe node=N  Service.Subscribe on N now, or at N's next start.
//	events node=N     what N's subscriber saw, checked against history.
//	keyservice        per key service: the holder each running node
//	                  names, and the start/stop calls of every incarnation.
//
// What happened during run, stabilize and await is printed one line per
// event: a transition when it is first applied (committed), a new
// master, a refusal, an eviction, a departure, a key service start/stop.
// Incarnations print as BOOT.REJOIN (inc>>20 . inc&0xfffff).

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/stack"
	"github.com/clusterinfra/ci/scenarios/check"
	"github.com/clusterinfra/ci/sim"
)

func TestInteraction(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no interaction scripts in testdata/ (%v)", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) { runScript(t, path) })
	}
}

func runScript(t *testing.T, path string) {
	var h *iharness
	datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
		if d.Cmd == "cluster" {
			h = newIHarness(t, d)
			return h.flush(t)
		}
		if h == nil {
			d.Fatalf(t, "%s: no cluster yet (start with a cluster command)", d.Cmd)
		}
		h.t = t
		h.known = nil
		if d.HasArg("known-bug") {
			h.known = strings.Split(argVal(t, d, "known-bug"), ",")
		}
		out := h.command(t, d)
		out += h.flush(t)
		if t.Failed() {
			t.Logf("%s: %s gave:\n%s", d.Pos, d.Cmd, out)
		}
		return out
	})
}

// iharness is one simulated cluster driven by a script.
type iharness struct {
	t         *testing.T
	w         *sim.World
	ids       []node.ID
	cands     []node.ID
	allowed   []node.ID
	keySvcs   []string
	ck        *check.Checker
	reported  bool     // a violation was already printed
	known     []string // kinds of finding the running command expects (known-bug=)
	log       []string // what happened since the last command
	lastNum   uint64   // highest transition number applied anywhere
	maxEpoch  uint64   // highest epoch a master was elected in
	maxMaster node.ID  // and its master
	ks        []ksCall
	subs      map[node.ID]*isub
	leaving   map[node.ID]node.Boot // leave asked, not departed yet
}

type ksCall struct {
	node  node.ID
	inc   uint64
	name  string
	start bool
}

// isub is a subscriber on one incarnation of a node.
type isub struct {
	pending bool   // subscribe at the node's next start
	after   uint64 // the last transition seen
	notes   []inote
}

type inote struct {
	last uint64
	seen []clms.Transition
}

func newIHarness(t *testing.T, d *datadriven.TestData) *iharness {
	n := 0
	d.ScanArgs(t, "nodes", &n)
	seed := uint64(1)
	if d.HasArg("seed") {
		d.ScanArgs(t, "seed", &seed)
	}
	h := &iharness{t: t, subs: map[node.ID]*isub{}, leaving: map[node.ID]node.Boot{}}
	for i := 1; i <= n; i++ {
		h.ids = append(h.ids, node.ID(i))
	}
	h.cands = h.ids[:min(3, n)]
	if d.HasArg("masters") {
		h.cands = h.nodeSet(t, d, argVal(t, d, "masters"))
	}
	if d.HasArg("allowed") {
		h.allowed = h.nodeSet(t, d, argVal(t, d, "allowed"))
	}
	if d.HasArg("keyservices") {
		h.keySvcs = strings.Split(argVal(t, d, "keyservices"), ",")
	}
	kr, err := wire.NewKeyring(1, []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	h.w = sim.New(sim.Config{Seed: seed, Link: sim.Link{Latency: time.Millisecond}})
	h.ck = check.New(h.cands)
	cfg := stack.Config{
		ICS:     ics.Config{Keyring: kr},
		CLMS:    clms.Config{Candidates: h.cands, Allowed: h.allowed, KeyServices: h.keySvcs},
		Observe: h.observe,
		Setup:   h.setup,
	}
	for _, id := range h.ids {
		if err := h.w.AddNode(id, stack.Factory(cfg)); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// observe sees every event of every node: the checker gets all of them;
// the notable ones go to the log.
func (h *iharness) observe(e clms.Event) {
	now := h.w.Now()
	h.ck.Event(now, h.w.BootCount(e.Node), e)
	at := fmt.Sprintf("%7.3fs ", now.Seconds())
	switch e.Kind {
	case clms.EvApplied:
		if len(h.allowed) > 0 && !slices.Contains(h.allowed, e.T.Node) {
			h.find("refused-member", "n%d applied %s about n%d, which is not in the allowed list", e.Node, fmtT(e.T), e.T.Node)
		}
		if e.T.Num > h.lastNum {
			h.lastNum = e.T.Num
			h.log = append(h.log, at+fmtT(e.T))
		}
	case clms.EvProposed:
		// The lease: a master of a newer epoch was elected by candidates
		// that had not heard from this one for an election timeout, so
		// it cannot have more than half of them answering within it.
		if e.Epoch < h.maxEpoch {
			h.find("stale-lease", "invariant 6: n%d proposed n%d:%s %s->%s in epoch %d (claiming %d lease voters) after n%d was elected master of epoch %d",
				e.Node, e.T.Node, incS(e.T.Inc), e.T.From, e.T.To, e.Epoch, e.LeaseVoters, h.maxMaster, h.maxEpoch)
		}
	case clms.EvMaster:
		if e.Epoch > h.maxEpoch {
			h.maxEpoch, h.maxMaster = e.Epoch, e.Node
		}
		h.log = append(h.log, at+fmt.Sprintf("n%d is master of epoch %d", e.Node, e.Epoch))
	case clms.EvRefused:
		h.log = append(h.log, at+fmt.Sprintf("n%d refuses n%d:%s", e.Node, e.Target, incS(e.Inc)))
	case clms.EvEvicted:
		h.log = append(h.log, at+fmt.Sprintf("n%d:%s learns it was declared down: rejoins", e.Node, incS(e.Inc)))
	case clms.EvDeparted:
		delete(h.leaving, e.Node)
		h.log = append(h.log, at+fmt.Sprintf("n%d:%s departed", e.Node, incS(e.Inc)))
	}
}

// setup runs on every start of every node, before CLMS starts.
func (h *iharness) setup(n *stack.Node) {
	id := n.Env().Self()
	svc := n.CLMS
	for _, name := range h.keySvcs {
		call := func(start bool) func() {
			return func() {
				h.ks = append(h.ks, ksCall{node: id, inc: svc.Incarnation(), name: name, start: start})
				if i, _ := svc.NodeInfo(id); start && (i.State != clms.StateUp || i.Inc != svc.Incarnation()) {
					// The service belongs on a member: this incarnation, UP
					// in its own history.
					h.find("keyservice-nonmember", "n%d:%s starts key service %s while its own history has n%d:%s %s",
						id, incS(svc.Incarnation()), name, id, incS(i.Inc), i.State)
					return
				}
				verb := "stops"
				if start {
					verb = "starts"
				}
				h.log = append(h.log, fmt.Sprintf("%7.3fs n%d:%s %s key service %s", h.w.Now().Seconds(), id, incS(svc.Incarnation()), verb, name))
			}
		}
		if err := svc.KeyService(name, call(true), call(false)); err != nil {
			panic(err)
		}
	}
	if sb := h.subs[id]; sb != nil && sb.pending {
		sb.pending = false
		h.attach(sb, svc)
	}
}

// attach subscribes sb to svc: on every notification it catches up with
// NextTransition, as a libcluster client would.
func (h *iharness) attach(sb *isub, svc *clms.Service) {
	svc.Subscribe(func(last uint64) {
		note := inote{last: last}
		for {
			tr, ok := svc.NextTransition(sb.after)
			if !ok || tr.Num > last {
				break
			}
			note.seen = append(note.seen, tr)
			sb.after = tr.Num
		}
		sb.after = max(sb.after, last)
		sb.notes = append(sb.notes, note)
	})
}

func (h *iharness) svc(id node.ID) *clms.Service {
	if n, ok := h.w.Handler(id).(*stack.Node); ok && n.CLMS != nil {
		return n.CLMS
	}
	return nil
}

// running reports whether a node is running and has not departed (it may
// not have started yet: Boot and Restart start it at the next event).
func (h *iharness) running(id node.ID) bool {
	s := h.svc(id)
	return h.w.State(id) == sim.Running && (s == nil || !s.Departed())
}

// find records what one of the harness's own checks found, in the log:
// a known bug if the running command names its kind in known-bug=KIND,
// else a violation that fails the test.
func (h *iharness) find(kind, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	at := fmt.Sprintf("%7.3fs ", h.w.Now().Seconds())
	if slices.Contains(h.known, kind) {
		h.log = append(h.log, at+fmt.Sprintf("KNOWN BUG (%s): %s", kind, msg))
		return
	}
	h.log = append(h.log, at+"VIOLATION: "+msg)
	h.t.Errorf("VIOLATION: %s (seed %d)", msg, h.w.Seed())
}

// flush prints what happened and the invariant checker's violation, if
// there is one: it always fails the test.
func (h *iharness) flush(t *testing.T) string {
	out := h.flushLog()
	if cv := h.ck.Violation(); cv != nil && !h.reported {
		h.reported = true
		out += fmt.Sprintf("VIOLATION: %s\n", cv)
		t.Errorf("VIOLATION: %s (seed %d)", cv, h.w.Seed())
	}
	return out
}

func (h *iharness) command(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "boot", "crash", "restart", "pause", "resume", "leave":
		for _, id := range h.nodeSet(t, d, positional(d)) {
			if err := h.lifecycle(d.Cmd, id); err != nil {
				d.Fatalf(t, "%v", err)
			}
		}
		return ""
	case "partition":
		var groups [][]node.ID
		for _, g := range strings.Split(positional(d), "|") {
			groups = append(groups, h.nodeSet(t, d, strings.TrimSpace(g)))
		}
		if err := h.w.Partition(groups...); err != nil {
			d.Fatalf(t, "%v", err)
		}
		return ""
	case "cut":
		from, to, ok := strings.Cut(positional(d), "->")
		if !ok {
			d.Fatalf(t, "cut: want FROM->TO")
		}
		for _, a := range h.nodeSet(t, d, from) {
			for _, b := range h.nodeSet(t, d, to) {
				if a != b {
					if err := h.w.Cut(a, b); err != nil {
						d.Fatalf(t, "%v", err)
					}
				}
			}
		}
		return ""
	case "heal":
		h.w.Heal()
		return ""
	case "run":
		dur, err := time.ParseDuration(positional(d))
		if err != nil {
			d.Fatalf(t, "run: %v", err)
		}
		_ = h.w.RunFor(dur)
		if len(h.log) == 0 {
			return "nothing happened\n"
		}
		return ""
	case "stabilize":
		return h.stabilize(t, d)
	case "await":
		return h.await(t, d)
	case "status":
		return h.status(t, d)
	case "history":
		return h.history(t, d)
	case "subscribe":
		return h.subscribe(t, d)
	case "events":
		return h.events(t, d)
	case "keyservice":
		return h.keyservice()
	}
	d.Fatalf(t, "unknown command %q", d.Cmd)
	return ""
}

func (h *iharness) lifecycle(cmd string, id node.ID) error {
	w := h.w
	switch cmd {
	case "boot":
		return w.Boot(id)
	case "crash":
		return w.Crash(id)
	case "restart":
		if s := h.svc(id); s != nil && s.Departed() && w.State(id) == sim.Running {
			// A departed node's process is gone in all but name.
			if err := w.Crash(id); err != nil {
				return err
			}
		}
		return w.Restart(id)
	case "pause":
		return w.Pause(id)
	case "resume":
		return w.Resume(id)
	case "leave":
		h.leaving[id] = w.BootCount(id)
		return w.Do(id, func(hd node.Handler) { hd.(*stack.Node).CLMS.Leave() })
	}
	return fmt.Errorf("unknown lifecycle command %q", cmd)
}

// members is the default set stabilize waits for: running, non-departed
// nodes that may join.
func (h *iharness) members() []node.ID {
	var out []node.ID
	for _, id := range h.ids {
		if h.running(id) && (len(h.allowed) == 0 || slices.Contains(h.allowed, id)) {
			out = append(out, id)
		}
	}
	return out
}

var transient = []clms.State{clms.StateComingUp, clms.StateShutdown, clms.StateGoingDown, clms.StateKCleanup, clms.StateUCleanup}

func (h *iharness) converged(want []node.ID) (bool, string) {
	if len(want) == 0 {
		return false, "no node to converge"
	}
	for _, id := range sortedIDs(h.leaving) {
		if h.w.BootCount(id) == h.leaving[id] && h.w.State(id) != sim.Crashed {
			return false, fmt.Sprintf("n%d is leaving", id)
		}
	}
	var last uint64
	var master node.ID
	for i, id := range want {
		s := h.svc(id)
		if !h.running(id) || s == nil {
			return false, fmt.Sprintf("n%d is not running", id)
		}
		if !s.Quorate() {
			return false, fmt.Sprintf("n%d is not quorate", id)
		}
		num, view := s.Membership()
		if !slices.Equal(view, want) {
			return false, fmt.Sprintf("n%d has view %s, want %s", id, fmtSet(view), fmtSet(want))
		}
		if i == 0 {
			last, master = num, s.Master()
		} else if num != last || s.Master() != master {
			return false, fmt.Sprintf("n%d is at #%d with master n%d, n%d at #%d with master n%d", id, num, s.Master(), want[0], last, master)
		}
		for _, x := range h.ids {
			if st := s.State(x); slices.Contains(transient, st) {
				return false, fmt.Sprintf("n%d sees n%d in %s", id, x, st)
			}
		}
	}
	if !slices.Contains(want, master) {
		return false, fmt.Sprintf("the master n%d is not one of %s", master, fmtSet(want))
	}
	return true, ""
}

func (h *iharness) stabilize(t *testing.T, d *datadriven.TestData) string {
	timeout := 10 * time.Second
	if d.HasArg("timeout") {
		timeout = argDur(t, d, "timeout")
	}
	var fixed []node.ID
	if d.HasArg("nodes") {
		fixed = h.nodeSet(t, d, argVal(t, d, "nodes"))
	}
	start := h.w.Now()
	firstNum := h.lastNum + 1
	why := ""
	ok := false
	for {
		want := fixed
		if want == nil {
			want = h.members()
		}
		if ok, why = h.converged(want); ok || h.w.Now()-start >= timeout {
			break
		}
		_ = h.w.RunFor(time.Millisecond)
	}
	var b strings.Builder
	if d.HasArg("quiet") {
		// Only findings, if any.
		h.log = slices.DeleteFunc(h.log, func(l string) bool {
			return !strings.Contains(l, "VIOLATION") && !strings.Contains(l, "KNOWN BUG")
		})
		b.WriteString(h.flushLog())
		if h.lastNum >= firstNum {
			fmt.Fprintf(&b, "committed #%d-#%d\n", firstNum, h.lastNum)
		}
	} else {
		b.WriteString(h.flushLog())
	}
	took := (h.w.Now() - start).Round(time.Millisecond)
	if ok {
		fmt.Fprintf(&b, "stable after %v\n", took)
		return b.String()
	}
	fmt.Fprintf(&b, "NOT STABLE after %v: %s\n", took, why)
	if !d.HasArg("expect-timeout") {
		t.Errorf("seed %d: not stable after %v: %s", h.w.Seed(), took, why)
	}
	return b.String()
}

func (h *iharness) flushLog() string {
	var b strings.Builder
	for _, l := range h.log {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	h.log = h.log[:0]
	return b.String()
}

func (h *iharness) await(t *testing.T, d *datadriven.TestData) string {
	target := argNode(t, d, "node")
	st, err := clms.ParseState(argVal(t, d, "state"))
	if err != nil {
		d.Fatalf(t, "%v", err)
	}
	timeout := 5 * time.Second
	if d.HasArg("timeout") {
		timeout = argDur(t, d, "timeout")
	}
	on := h.ids
	if d.HasArg("on") {
		on = h.nodeSet(t, d, argVal(t, d, "on"))
	}
	start := h.w.Now()
	for h.w.Now()-start < timeout {
		for _, id := range on {
			if s := h.svc(id); h.running(id) && s != nil && s.State(target) == st {
				return h.flushLog() + fmt.Sprintf("n%d sees n%d in %s after %v\n", id, target, st, (h.w.Now()-start).Round(time.Millisecond))
			}
		}
		if !h.w.Step() {
			break
		}
	}
	t.Errorf("no node saw n%d in %s within %v", target, st, timeout)
	return h.flushLog() + fmt.Sprintf("no node saw n%d in %s within %v\n", target, st, timeout)
}

func (h *iharness) status(t *testing.T, d *datadriven.TestData) string {
	ids := h.ids
	if p := positional(d); p != "" {
		ids = h.nodeSet(t, d, p)
	}
	var b strings.Builder
	width := len(fmt.Sprint(uint32(slices.Max(h.ids)))) + 1
	for _, id := range ids {
		ws := h.w.State(id)
		s := h.svc(id)
		name := fmt.Sprintf("%-*s", width, fmt.Sprintf("n%d", id))
		if s == nil {
			fmt.Fprintf(&b, "%s %s\n", name, ws)
			continue
		}
		state := ws.String()
		if s.Departed() {
			state = "departed"
		}
		q := "inquorate"
		if s.Quorate() {
			q = "quorate"
		}
		m := "-"
		if s.Master() != 0 {
			m = fmt.Sprintf("n%d", s.Master())
		}
		num, view := s.Membership()
		fmt.Fprintf(&b, "%s %-8s %-9s master=%-3s epoch=%d last=%d inc=%s view=%s\n",
			name, state, q, m, s.MasterEpoch(), num, incS(s.Incarnation()), fmtSet(view))
	}
	return b.String()
}

func (h *iharness) history(t *testing.T, d *datadriven.TestData) string {
	var hist []clms.Transition
	if d.HasArg("node") {
		id := argNode(t, d, "node")
		s := h.svc(id)
		if s == nil {
			return fmt.Sprintf("n%d is %s\n", id, h.w.State(id))
		}
		hist = s.History()
	} else {
		hist = h.ck.Applied()
	}
	from := uint64(1)
	if d.HasArg("from") {
		d.ScanArgs(t, "from", &from)
	}
	var b strings.Builder
	for _, tr := range hist {
		if tr.Num >= from {
			b.WriteString(fmtT(tr))
			b.WriteByte('\n')
		}
	}
	if b.Len() == 0 {
		return "empty\n"
	}
	return b.String()
}

func (h *iharness) subscribe(t *testing.T, d *datadriven.TestData) string {
	id := argNode(t, d, "node")
	sb := &isub{}
	h.subs[id] = sb
	if h.w.State(id) != sim.Running {
		sb.pending = true
		return fmt.Sprintf("n%d will subscribe when it starts\n", id)
	}
	if err := h.w.Do(id, func(hd node.Handler) { h.attach(sb, hd.(*stack.Node).CLMS) }); err != nil {
		d.Fatalf(t, "%v", err)
	}
	return fmt.Sprintf("n%d subscribes now, after #%d\n", id, h.svc(id).Last())
}

// events prints what a subscriber saw, and checks it saw every simple
// transition of the committed history up to its last notification
// exactly once, in order.
func (h *iharness) events(t *testing.T, d *datadriven.TestData) string {
	id := argNode(t, d, "node")
	sb := h.subs[id]
	if sb == nil {
		d.Fatalf(t, "n%d has no subscriber", id)
	}
	var b strings.Builder
	var seen []clms.Transition
	var last uint64
	for i, n := range sb.notes {
		fmt.Fprintf(&b, "notification %d: history ends at #%d, %d simple transition(s)\n", i+1, n.last, len(n.seen))
		for _, tr := range n.seen {
			fmt.Fprintf(&b, "  %s\n", fmtT(tr))
		}
		seen = append(seen, n.seen...)
		last = max(last, n.last)
	}
	var want []clms.Transition
	for _, tr := range h.ck.Applied() {
		if tr.Num <= last && tr.Simple() {
			want = append(want, tr)
		}
	}
	if slices.Equal(seen, want) {
		fmt.Fprintf(&b, "n%d saw all %d simple transitions up to #%d, each exactly once\n", id, len(want), last)
	} else {
		fmt.Fprintf(&b, "MISMATCH: n%d saw %d simple transitions up to #%d, the history has %d\n", id, len(seen), last, len(want))
		t.Errorf("subscriber on n%d: saw %v, want %v", id, seen, want)
	}
	return b.String()
}

func (h *iharness) keyservice() string {
	var b strings.Builder
	for _, name := range h.keySvcs {
		byHolder := map[node.ID][]node.ID{}
		for _, id := range h.ids {
			if s := h.svc(id); h.running(id) && s != nil {
				hd := s.KeyServiceHolder(name)
				byHolder[hd] = append(byHolder[hd], id)
			}
		}
		for _, hd := range sortedIDs(byHolder) {
			fmt.Fprintf(&b, "%s: holder n%d, as named by %s\n", name, hd, fmtSet(byHolder[hd]))
		}
		type tally struct{ starts, stops int }
		calls := map[string]*tally{}
		var order []string
		for _, c := range h.ks {
			if c.name != name {
				continue
			}
			k := fmt.Sprintf("n%d:%s", c.node, incS(c.inc))
			if calls[k] == nil {
				calls[k] = &tally{}
				order = append(order, k)
			}
			if c.start {
				calls[k].starts++
			} else {
				calls[k].stops++
			}
		}
		for _, k := range order {
			fmt.Fprintf(&b, "%s: %s started %d time(s), stopped %d time(s)\n", name, k, calls[k].starts, calls[k].stops)
		}
	}
	return b.String()
}

// ---- formatting and parsing ---------------------------------------------

// incS prints an incarnation as BOOT.REJOIN.
func incS(inc uint64) string { return fmt.Sprintf("%d.%d", inc>>20, inc&0xfffff) }

func fmtT(t clms.Transition) string {
	return fmt.Sprintf("#%d n%d:%s %s->%s %s by n%d epoch %d", t.Num, t.Node, incS(t.Inc), t.From, t.To, t.Cause, t.Master, t.Epoch)
}

// fmtSet prints a sorted set of nodes compactly: "1-3,5".
func fmtSet(ids []node.ID) string {
	if len(ids) == 0 {
		return "-"
	}
	ids = slices.Sorted(slices.Values(ids))
	var parts []string
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		switch {
		case j == i:
			parts = append(parts, fmt.Sprint(uint32(ids[i])))
		case j == i+1:
			parts = append(parts, fmt.Sprint(uint32(ids[i])), fmt.Sprint(uint32(ids[j])))
		default:
			parts = append(parts, fmt.Sprintf("%d-%d", ids[i], ids[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func sortedIDs[V any](m map[node.ID]V) []node.ID {
	var ids []node.ID
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// positional is the directive's arguments that are not key=value, joined
// by spaces: "1,2,4 | 3,5", "4->1,2,3", "500ms".
func positional(d *datadriven.TestData) string {
	var parts []string
	for _, a := range d.CmdArgs {
		if len(a.Vals) == 0 && !isFlag(a.Key) {
			parts = append(parts, a.Key)
		}
	}
	return strings.Join(parts, " ")
}

func isFlag(k string) bool { return k == "quiet" || k == "expect-timeout" }

func argVal(t *testing.T, d *datadriven.TestData, key string) string {
	for _, a := range d.CmdArgs {
		if a.Key == key {
			return strings.Join(a.Vals, ",")
		}
	}
	d.Fatalf(t, "missing argument %s", key)
	return ""
}

func argNode(t *testing.T, d *datadriven.TestData, key string) node.ID {
	var i int
	d.ScanArgs(t, key, &i)
	return node.ID(i)
}

func argDur(t *testing.T, d *datadriven.TestData, key string) time.Duration {
	v, err := time.ParseDuration(argVal(t, d, key))
	if err != nil {
		d.Fatalf(t, "%s: %v", key, err)
	}
	return v
}

// nodeSet parses "all", "3", "1,2,4", "1-5" or "1-3,7".
func (h *iharness) nodeSet(t *testing.T, d *datadriven.TestData, s string) []node.ID {
	s = strings.TrimSpace(s)
	if s == "all" {
		return slices.Clone(h.ids)
	}
	var out []node.ID
	for _, p := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(p), "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 1 || b < a {
			d.Fatalf(t, "bad node set %q", s)
		}
		for i := a; i <= b; i++ {
			id := node.ID(i)
			if !slices.Contains(h.ids, id) {
				d.Fatalf(t, "node %d is not in the cluster", i)
			}
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	slices.Sort(out)
	return out
}
