package scenarios

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// The decoders of the scenario's fields, one per field or action. Each
// reports what is wrong with its part at the key or value at fault and
// goes on, so that every mistake in a file comes out in one pass.

var topKeys = []string{"name", "description", "seed", "nodes", "masters", "config", "network", "skip_on", "steps"}

// Backends are the places a scenario can run; skip_on names them.
var Backends = []string{"sim", "netns", "vm"}

func (d *decoder) scenario(body ast.Node) *Scenario {
	s := &Scenario{
		File:    d.file,
		Seed:    DefaultSeed,
		Config:  DefaultConfig(),
		Network: DefaultNetwork(),
	}
	top := d.resolve(body)
	if top == nil {
		return nil
	}
	if _, ok := mappingPairs(top); !ok {
		d.errorf(startPos(body), "a scenario is a mapping with at least name, nodes and steps; got %s", describe(top))
		return nil
	}
	fs := d.fields(top, d.knownKeys("", topKeys))
	byName := map[string]field{}
	for _, f := range fs {
		byName[f.name] = f
	}
	// Nodes first: every node number elsewhere is checked against them.
	if f, ok := byName["nodes"]; ok {
		s.Nodes = d.nodeList(f)
	}
	d.nodes = s.Nodes
	if d.nodes != nil {
		d.states = newStateTracker(d.nodes)
	}
	for _, f := range fs {
		if f.value == nil {
			continue
		}
		switch f.name {
		case "name":
			s.Name = d.name(f)
		case "description":
			s.Description = d.description(f)
		case "seed":
			s.Seed, s.SeedSet = d.seed(f)
		case "masters":
			s.Masters = d.masters(f)
		case "config":
			d.config(f, &s.Config)
		case "network":
			d.network(f, &s.Network)
		case "skip_on":
			s.SkipOn = d.skipOn(f)
		case "steps":
			s.Steps = d.steps(f)
		}
	}
	for _, req := range []string{"name", "nodes", "steps"} {
		if _, ok := byName[req]; !ok {
			d.errorf(startPos(top), "%s: required field is missing", req)
		}
	}
	if _, ok := byName["masters"]; !ok && s.Nodes != nil {
		s.Masters = slices.Clone(s.Nodes[:min(DefaultMasterCount, len(s.Nodes))])
	}
	return s
}

// skipOn reads `skip_on: {BACKEND: REASON, ...}`: the backends that must
// not run the file, each with the reason a reader is told.
func (d *decoder) skipOn(f field) map[string]string {
	fs, ok := d.object("skip_on", f, Backends, true, "a mapping of backend (sim, netns, vm) to the reason it skips this file")
	if !ok {
		return nil
	}
	out := map[string]string{}
	for _, g := range fs {
		if g.value == nil {
			continue
		}
		text, ok := scalarText(g.value)
		if !ok || g.missing() || strings.TrimSpace(text) == "" {
			d.errorf(g.valuePos, "skip_on.%s: want the reason as text, got %s", g.name, describe(g.value))
			continue
		}
		out[g.name] = text
	}
	return out
}

func (d *decoder) name(f field) string {
	text, ok := scalarText(f.value)
	if !ok || text == "" {
		d.errorf(f.valuePos, "name: want a name matching [a-z0-9-]+, got %s", describe(f.value))
		return ""
	}
	if !namePattern.MatchString(text) {
		d.errorf(f.valuePos, "name: %s does not match [a-z0-9-]+", quoteShort(text))
		return ""
	}
	return text
}

func (d *decoder) description(f field) string {
	if f.missing() {
		return ""
	}
	text, ok := scalarText(f.value)
	if !ok {
		d.errorf(f.valuePos, "description: want text, got %s", describe(f.value))
		return ""
	}
	return text
}

func (d *decoder) seed(f field) (uint64, bool) {
	if v, ok := f.value.(*ast.IntegerNode); ok {
		switch n := v.Value.(type) {
		case int64:
			if n >= 0 {
				return uint64(n), true
			}
		case uint64:
			return n, true
		}
	}
	d.errorf(f.valuePos, "seed: want an integer in 0-%d, got %s", uint64(1<<64-1), describe(f.value))
	return DefaultSeed, false
}

// intValue returns an integer node's value if it fits in an int.
func intValue(n ast.Node) (int, bool) {
	v, ok := n.(*ast.IntegerNode)
	if !ok {
		return 0, false
	}
	switch x := v.Value.(type) {
	case int64:
		if int64(int(x)) == x {
			return int(x), true
		}
	case uint64:
		if x <= uint64(int(^uint(0)>>1)) {
			return int(x), true
		}
	}
	return 0, false
}

// nodeList decodes `nodes`: a count N or a list of distinct node numbers.
// It returns nil when there is any error, which turns membership checks
// off for the rest of the file.
func (d *decoder) nodeList(f field) []int {
	if f.value == nil {
		return nil
	}
	if _, ok := f.value.(*ast.IntegerNode); ok {
		n, ok := intValue(f.value)
		if !ok || n < MinNode || n > MaxNode {
			d.errorf(f.valuePos, "nodes: want a node count in %d-%d or a list of node numbers, got %s", MinNode, MaxNode, describe(f.value))
			return nil
		}
		nodes := make([]int, n)
		for i := range nodes {
			nodes[i] = i + 1
		}
		return nodes
	}
	items, ok := sequenceItems(f.value)
	if !ok {
		d.errorf(f.valuePos, "nodes: want a node count in %d-%d or a list of node numbers, got %s", MinNode, MaxNode, describe(f.value))
		return nil
	}
	if len(items) == 0 {
		d.errorf(f.valuePos, "nodes: empty list; a scenario needs at least one node")
		return nil
	}
	seen := map[int]Pos{}
	bad := false
	for _, item := range items {
		pos := startPos(item)
		v := d.resolve(item)
		if v == nil {
			bad = true
			continue
		}
		n, ok := intValue(v)
		switch {
		case !ok:
			d.errorf(pos, "nodes: want a node number in %d-%d, got %s", MinNode, MaxNode, describe(v))
			bad = true
		case n < MinNode || n > MaxNode:
			d.errorf(pos, "nodes: node %d is not in %d-%d", n, MinNode, MaxNode)
			bad = true
		default:
			if p, dup := seen[n]; dup {
				d.errorf(pos, "nodes: node %d is listed twice (first at %s)", n, p)
				bad = true
				continue
			}
			seen[n] = pos
		}
	}
	if bad {
		return nil
	}
	nodes := make([]int, 0, len(seen))
	for n := range seen {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	return nodes
}

// nodeRef checks one node number written at pos; path names the field.
func (d *decoder) nodeRef(path string, v ast.Node, pos Pos) (int, bool) {
	n, ok := intValue(v)
	if !ok {
		d.errorf(pos, "%s: want a node number, got %s", path, describe(v))
		return 0, false
	}
	if d.nodes == nil {
		if n < MinNode || n > MaxNode {
			d.errorf(pos, "%s: node %d is not in %d-%d", path, n, MinNode, MaxNode)
			return 0, false
		}
		return n, true
	}
	if _, found := slices.BinarySearch(d.nodes, n); !found {
		d.errorf(pos, "%s: node %d is not in nodes (%s)", path, n, FormatNodes(d.nodes))
		return 0, false
	}
	return n, true
}

// idList decodes a non-empty list of distinct node numbers. It returns
// them ascending with where each is written, and false on any error.
func (d *decoder) idList(path string, v ast.Node, pos Pos) ([]int, map[int]Pos, bool) {
	items, _ := sequenceItems(v)
	if len(items) == 0 {
		d.errorf(pos, "%s: empty list; want at least one node", path)
		return nil, nil, false
	}
	ok := true
	where := map[int]Pos{}
	for _, item := range items {
		ipos := startPos(item)
		iv := d.resolve(item)
		if iv == nil {
			ok = false
			continue
		}
		n, good := d.nodeRef(path, iv, ipos)
		if !good {
			ok = false
			continue
		}
		if p, dup := where[n]; dup {
			d.errorf(ipos, "%s: node %d is listed twice (first at %s)", path, n, p)
			ok = false
			continue
		}
		where[n] = ipos
	}
	ids := make([]int, 0, len(where))
	for n := range where {
		ids = append(ids, n)
	}
	slices.Sort(ids)
	return ids, where, ok
}

const nodeSetWant = "all, master, a node number or a list of node numbers"

// nodeSet decodes NODES: all, master, a number or a list of numbers. The
// map says where each explicit number is written.
func (d *decoder) nodeSet(path string, f field) (NodeSet, map[int]Pos, bool) {
	set := NodeSet{Pos: f.valuePos}
	v := f.value
	if v == nil {
		return set, nil, false
	}
	if f.missing() {
		d.errorf(f.keyPos, "%s: missing value; want %s", path, nodeSetWant)
		return set, nil, false
	}
	if _, isInt := v.(*ast.IntegerNode); isInt {
		n, ok := d.nodeRef(path, v, f.valuePos)
		if !ok {
			return set, nil, false
		}
		set.IDs = []int{n}
		return set, map[int]Pos{n: f.valuePos}, true
	}
	if _, isSeq := v.(*ast.SequenceNode); isSeq {
		ids, where, ok := d.idList(path, v, f.valuePos)
		set.IDs = ids
		return set, where, ok
	}
	if text, ok := v.(*ast.StringNode); ok {
		switch text.Value {
		case "all":
			set.All = true
			return set, nil, true
		case "master":
			set.Master = true
			return set, nil, true
		}
	}
	d.errorf(f.valuePos, "%s: want %s, got %s", path, nodeSetWant, describe(v))
	return set, nil, false
}

func (d *decoder) masters(f field) []int {
	if f.value == nil {
		return nil
	}
	if f.missing() {
		d.errorf(f.keyPos, "masters: missing value; want a list of node numbers")
		return nil
	}
	switch v := f.value.(type) {
	case *ast.IntegerNode:
		n, ok := d.nodeRef("masters", v, f.valuePos)
		if !ok {
			return nil
		}
		return []int{n}
	case *ast.SequenceNode:
		ids, _, ok := d.idList("masters", v, f.valuePos)
		if !ok {
			return nil
		}
		return ids
	case *ast.StringNode:
		if v.Value == "all" {
			return slices.Clone(d.nodes)
		}
	}
	d.errorf(f.valuePos, "masters: want a list of node numbers, got %s", describe(f.value))
	return nil
}

// Durations and rates.

// durationKind says which durations a field takes.
type durationKind int

const (
	anyDuration      durationKind = iota // clock offsets
	nonNegative                          // at, sleep, latency, jitter
	positiveDuration                     // timeouts, intervals, config
)

// duration decodes a Go duration ("250ms"). A bare 0 is a Go duration too.
func (d *decoder) duration(path string, f field, kind durationKind) (time.Duration, bool) {
	if f.value == nil {
		return 0, false
	}
	if f.missing() {
		d.errorf(f.keyPos, "%s: missing value; want a duration like 250ms, 2s or 1m", path)
		return 0, false
	}
	text, ok := scalarText(f.value)
	var dur time.Duration
	var err error
	if ok {
		dur, err = time.ParseDuration(text)
	}
	if !ok || err != nil {
		d.errorf(f.valuePos, "%s: want a duration like 250ms, 2s or 1m, got %s", path, describe(f.value))
		return 0, false
	}
	switch {
	case kind == nonNegative && dur < 0:
		d.errorf(f.valuePos, "%s: must not be negative, got %s", path, text)
		return 0, false
	case kind == positiveDuration && dur <= 0:
		d.errorf(f.valuePos, "%s: must be positive, got %s", path, text)
		return 0, false
	}
	return dur, true
}

// decimalPattern is a plain decimal number; ParseFloat alone would also
// take hex floats, "Inf", "NaN" and underscores.
var decimalPattern = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$`)

// rate decodes a percentage ("20%") into a fraction in [0, 1]. A bare
// number is refused: 0.2 could mean 20% or 0.2%.
func (d *decoder) rate(path string, f field) (float64, bool) {
	if f.value == nil {
		return 0, false
	}
	if f.missing() {
		d.errorf(f.keyPos, "%s: missing value; want a percentage like 20%%", path)
		return 0, false
	}
	text, ok := scalarText(f.value)
	num, isPct := strings.CutSuffix(text, "%")
	if !ok || !isPct || !decimalPattern.MatchString(num) {
		d.errorf(f.valuePos, "%s: want a percentage like 20%%, got %s", path, describe(f.value))
		return 0, false
	}
	pct, err := strconv.ParseFloat(num, 64)
	if err != nil || pct < 0 || pct > 100 {
		d.errorf(f.valuePos, "%s: %s is not in [0%%, 100%%]", path, text)
		return 0, false
	}
	return pct / 100, true
}

// drift decodes a clock drift in parts per million ("100ppm", "-50ppm").
func (d *decoder) drift(path string, f field) (float64, bool) {
	if f.value == nil {
		return 0, false
	}
	if f.missing() {
		d.errorf(f.keyPos, "%s: missing value; want parts per million like 100ppm or -50ppm", path)
		return 0, false
	}
	text, ok := scalarText(f.value)
	num, isPPM := strings.CutSuffix(text, "ppm")
	if !ok || !isPPM || !decimalPattern.MatchString(num) {
		d.errorf(f.valuePos, "%s: want parts per million like 100ppm or -50ppm, got %s", path, describe(f.value))
		return 0, false
	}
	ppm, err := strconv.ParseFloat(num, 64)
	if err != nil || ppm <= -DriftLimitPPM || ppm >= DriftLimitPPM {
		d.errorf(f.valuePos, "%s: %s is not strictly within ±%.0fppm", path, text, DriftLimitPPM)
		return 0, false
	}
	if ppm == 0 {
		ppm = 0 // no negative zero: -0ppm and 0ppm mean the same
	}
	return ppm, true
}

// count decodes a non-negative integer.
func (d *decoder) count(path string, f field) (int, bool) {
	if f.value == nil {
		return 0, false
	}
	n, ok := intValue(f.value)
	if !ok || n < 0 {
		pos := f.valuePos
		if f.missing() {
			pos = f.keyPos
		}
		d.errorf(pos, "%s: want a non-negative integer, got %s", path, describe(f.value))
		return 0, false
	}
	return n, true
}

// object checks that f holds a mapping (or nothing, when empty is
// allowed) and returns its fields, reporting unknown keys.
func (d *decoder) object(path string, f field, known []string, emptyOK bool, want string) ([]field, bool) {
	if f.value == nil {
		return nil, false
	}
	if f.missing() {
		if emptyOK {
			return nil, true
		}
		d.errorf(f.keyPos, "%s: missing value; want %s", path, want)
		return nil, false
	}
	if _, ok := mappingPairs(f.value); !ok {
		d.errorf(f.valuePos, "%s: want %s, got %s", path, want, describe(f.value))
		return nil, false
	}
	return d.fields(f.value, d.knownKeys(path+".", known)), true
}

// require reports the keys of known that fs lacks, at the key of the
// mapping that lacks them.
func (d *decoder) require(path string, parent field, fs []field, names ...string) bool {
	ok := true
	for _, name := range names {
		if !slices.ContainsFunc(fs, func(f field) bool { return f.name == name }) {
			d.errorf(parent.keyPos, "%s.%s: required field is missing", path, name)
			ok = false
		}
	}
	return ok
}

func (d *decoder) config(f field, c *Config) {
	fs, _ := d.object("config", f, []string{"heartbeat", "nodedown_after", "election_timeout"}, true,
		"a mapping of heartbeat, nodedown_after and election_timeout")
	for _, g := range fs {
		var dst *time.Duration
		switch g.name {
		case "heartbeat":
			dst = &c.Heartbeat
		case "nodedown_after":
			dst = &c.NodedownAfter
		case "election_timeout":
			dst = &c.ElectionTimeout
		}
		if v, ok := d.duration("config."+g.name, g, positiveDuration); ok {
			*dst = v
		}
	}
}

var linkKeys = []string{"latency", "jitter", "loss", "duplicate"}

func (d *decoder) network(f field, l *Link) {
	fs, _ := d.object("network", f, linkKeys, true, "a mapping of latency, jitter, loss and duplicate")
	for _, g := range fs {
		path := "network." + g.name
		switch g.name {
		case "latency":
			if v, ok := d.duration(path, g, nonNegative); ok {
				l.Latency = v
			}
		case "jitter":
			if v, ok := d.duration(path, g, nonNegative); ok {
				l.Jitter = v
			}
		case "loss":
			if v, ok := d.rate(path, g); ok {
				l.Loss = v
			}
		case "duplicate":
			if v, ok := d.rate(path, g); ok {
				l.Duplicate = v
			}
		}
	}
}

// Steps.

func (d *decoder) steps(f field) []Step {
	if f.missing() {
		d.errorf(f.keyPos, "steps: missing value; a scenario needs at least one step")
		return nil
	}
	items, ok := sequenceItems(f.value)
	if !ok {
		d.errorf(f.valuePos, "steps: want a list of steps, got %s", describe(f.value))
		return nil
	}
	if len(items) == 0 {
		d.errorf(f.valuePos, "steps: empty list; a scenario needs at least one step")
		return nil
	}
	steps := make([]Step, 0, len(items))
	for i, item := range items {
		if st, ok := d.step(i+1, item); ok {
			steps = append(steps, st)
		}
	}
	return steps
}

var stepKeys = append(slices.Clone(actions), "at", "timeout")

var stepWant = "an action (" + strings.Join(actions, ", ") + ") and optionally at and timeout"

func (d *decoder) step(num int, item ast.Node) (Step, bool) {
	pos := startPos(item)
	st := Step{Line: pos.Line, Col: pos.Col}
	v := d.resolve(item)
	if v == nil {
		return st, false
	}
	if _, ok := mappingPairs(v); !ok || isNull(v) {
		d.errorf(pos, "steps: step %d is %s; want a mapping such as `- boot: all`", num, describe(v))
		return st, false
	}
	if _, isAlias := item.(*ast.AliasNode); !isAlias {
		// The step starts at its first key, not at its "-".
		pos = startPos(v)
		st.Line, st.Col = pos.Line, pos.Col
	}
	fs := d.fields(v, func(name string, kpos Pos) bool {
		if slices.Contains(stepKeys, name) {
			return true
		}
		if guess := suggest(name, stepKeys); guess != "" {
			d.errorf(kpos, "%s: unknown key (did you mean %s?)", label(name), guess)
		} else {
			d.errorf(kpos, "%s: unknown key; a step takes %s", label(name), stepWant)
		}
		return false
	})
	var action field
	var timeout *field
	ok := true
	for _, g := range fs {
		switch g.name {
		case "at":
			if at, good := d.duration("at", g, nonNegative); good {
				st.At, st.AtPos = &at, g.keyPos
			} else {
				ok = false
			}
		case "timeout":
			timeout = &g
		default:
			if action.name != "" {
				d.errorf(g.keyPos, "%s: a step has exactly one action, and this one already has %s (at %s)", g.name, action.name, action.keyPos)
				ok = false
				if g.value != nil {
					// Its value may hold mistakes of its own; the node
					// states follow the first action only.
					states := d.states
					d.states = nil
					d.action(&Step{}, g)
					d.states = states
				}
				continue
			}
			action = g
		}
	}
	if action.name == "" {
		d.errorf(pos, "steps: step %d has no action; want one of %s", num, strings.Join(actions, ", "))
		return st, false
	}
	st.Action = action.name
	if timeout != nil {
		switch {
		case !HasTimeout(action.name):
			d.errorf(timeout.keyPos, "timeout: only wait and nemesis steps take a timeout, not %s", action.name)
			ok = false
		default:
			if t, good := d.duration("timeout", *timeout, positiveDuration); good {
				st.Timeout, st.TimeoutPos = &t, timeout.keyPos
			} else {
				ok = false
			}
		}
	}
	if st.Timeout == nil && HasTimeout(action.name) {
		t := DefaultWaitTimeout
		if action.name == ActionNemesis {
			t = DefaultNemesisTimeout
		}
		st.Timeout = &t
	}
	if action.value == nil {
		return st, false
	}
	if !d.action(&st, action) {
		ok = false
	}
	return st, ok
}

// action decodes the value of a step's action key into st.
func (d *decoder) action(st *Step, f field) bool {
	switch f.name {
	case ActionBoot, ActionCrash, ActionRestart, ActionLeave, ActionPause, ActionResume:
		set, where, ok := d.nodeSet(f.name, f)
		if !ok {
			return false
		}
		switch f.name {
		case ActionBoot:
			st.Boot = &set
		case ActionCrash:
			st.Crash = &set
		case ActionRestart:
			st.Restart = &set
		case ActionLeave:
			st.Leave = &set
		case ActionPause:
			st.Pause = &set
		case ActionResume:
			st.Resume = &set
		}
		if d.states != nil {
			good := true
			d.states.apply(f.name, set, func(id int, msg string) {
				p, ok := where[id]
				if !ok {
					p = set.Pos
				}
				d.errorf(p, "%s: %s", f.name, msg)
				good = false
			})
			return good
		}
		return true
	case ActionPartition:
		p, ok := d.partition(f)
		st.Partition = p
		return ok
	case ActionCut:
		c, ok := d.cut(f)
		st.Cut = c
		return ok
	case ActionLink:
		l, ok := d.link(f)
		st.Link = l
		return ok
	case ActionClock:
		c, ok := d.clock(f)
		st.Clock = c
		return ok
	case ActionHeal:
		text, ok := scalarText(f.value)
		if !ok || text != "all" {
			p := f.valuePos
			if f.missing() {
				p = f.keyPos
			}
			d.errorf(p, "heal: want all, got %s", describe(f.value))
			return false
		}
		st.Heal = true
		if d.states != nil {
			d.states.heal()
		}
		return true
	case ActionSleep:
		dur, ok := d.duration("sleep", f, nonNegative)
		if ok {
			st.Sleep = &dur
		}
		return ok
	case ActionWait:
		text, ok := scalarText(f.value)
		if !ok || text != WaitConverged {
			p := f.valuePos
			if f.missing() {
				p = f.keyPos
			}
			d.errorf(p, "wait: want converged, got %s", describe(f.value))
			return false
		}
		st.Wait = &Wait{Condition: WaitConverged}
		return true
	case ActionExpect:
		e, ok := d.expect(f)
		st.Expect = e
		return ok
	case ActionNemesis:
		n, ok := d.nemesis(f)
		st.Nemesis = n
		if d.states != nil {
			d.states.nemesis()
		}
		return ok
	}
	return false
}

func (d *decoder) partition(f field) (*Partition, bool) {
	const want = "a list of groups of node numbers such as [[1, 2], [3, 4, 5]]"
	if f.missing() {
		d.errorf(f.keyPos, "partition: missing value; want %s", want)
		return nil, false
	}
	groups, ok := sequenceItems(f.value)
	if !ok {
		d.errorf(f.valuePos, "partition: want %s, got %s", want, describe(f.value))
		return nil, false
	}
	if len(groups) == 0 {
		d.errorf(f.valuePos, "partition: empty list; want %s", want)
		return nil, false
	}
	p := &Partition{}
	good := true
	where := map[int]Pos{}
	for i, g := range groups {
		gpos := startPos(g)
		gv := d.resolve(g)
		if gv == nil {
			good = false
			continue
		}
		items, isSeq := sequenceItems(gv)
		if !isSeq {
			d.errorf(gpos, "partition: group %d: want a list of node numbers, got %s", i+1, describe(gv))
			good = false
			continue
		}
		if len(items) == 0 {
			d.errorf(gpos, "partition: group %d is empty", i+1)
			good = false
			continue
		}
		var group []int
		for _, item := range items {
			ipos := startPos(item)
			iv := d.resolve(item)
			if iv == nil {
				good = false
				continue
			}
			n, ok := d.nodeRef("partition", iv, ipos)
			if !ok {
				good = false
				continue
			}
			if first, dup := where[n]; dup {
				if slices.Contains(group, n) {
					d.errorf(ipos, "partition: node %d is listed twice in group %d (first at %s)", n, i+1, first)
				} else {
					d.errorf(ipos, "partition: node %d is in two groups (first at %s)", n, first)
				}
				good = false
				continue
			}
			where[n] = ipos
			group = append(group, n)
		}
		slices.Sort(group)
		p.Groups = append(p.Groups, group)
	}
	if d.nodes != nil {
		for _, n := range d.nodes {
			if _, in := where[n]; !in {
				d.errorf(f.valuePos, "partition: node %d is in no group; every node in nodes must be in exactly one", n)
				good = false
			}
		}
	}
	return p, good
}

func (d *decoder) cut(f field) (*Cut, bool) {
	fs, ok := d.object("cut", f, []string{"from", "to"}, false, "a mapping {from: NODES, to: NODES}")
	if !ok {
		return nil, false
	}
	c := &Cut{}
	good := d.require("cut", f, fs, "from", "to")
	for _, g := range fs {
		set, _, ok := d.nodeSet("cut."+g.name, g)
		if !ok {
			good = false
		}
		if g.name == "from" {
			c.From = set
		} else {
			c.To = set
		}
	}
	return c, good
}

func (d *decoder) link(f field) (*LinkChange, bool) {
	fs, ok := d.object("link", f, append([]string{"between"}, linkKeys...), false,
		"a mapping {between: [A, B], latency:, jitter:, loss:, duplicate:}")
	if !ok {
		return nil, false
	}
	l := &LinkChange{}
	good := d.require("link", f, fs, "between")
	for _, g := range fs {
		path := "link." + g.name
		switch g.name {
		case "between":
			if g.value == nil {
				good = false
				continue
			}
			if _, isSeq := g.value.(*ast.SequenceNode); !isSeq {
				p := g.valuePos
				if g.missing() {
					p = g.keyPos
				}
				d.errorf(p, "%s: want two node numbers [A, B], got %s", path, describe(g.value))
				good = false
				continue
			}
			ids, _, ok := d.idList(path, g.value, g.valuePos)
			if !ok {
				good = false
				continue
			}
			if len(ids) != 2 {
				d.errorf(g.valuePos, "%s: want exactly two nodes, got %d", path, len(ids))
				good = false
				continue
			}
			l.Between = [2]int{ids[0], ids[1]}
		case "latency", "jitter":
			if v, ok := d.duration(path, g, nonNegative); ok {
				if g.name == "latency" {
					l.Latency = &v
				} else {
					l.Jitter = &v
				}
			} else {
				good = false
			}
		case "loss", "duplicate":
			if v, ok := d.rate(path, g); ok {
				if g.name == "loss" {
					l.Loss = &v
				} else {
					l.Duplicate = &v
				}
			} else {
				good = false
			}
		}
	}
	return l, good
}

func (d *decoder) clock(f field) (*Clock, bool) {
	fs, ok := d.object("clock", f, []string{"node", "offset", "drift"}, false,
		"a mapping {node: N, offset: DURATION, drift: PPM}")
	if !ok {
		return nil, false
	}
	c := &Clock{}
	good := d.require("clock", f, fs, "node")
	for _, g := range fs {
		switch g.name {
		case "node":
			if g.value == nil {
				good = false
				continue
			}
			if g.missing() {
				d.errorf(g.keyPos, "clock.node: missing value; want one node number")
				good = false
				continue
			}
			if _, isInt := g.value.(*ast.IntegerNode); !isInt {
				d.errorf(g.valuePos, "clock.node: want one node number, got %s", describe(g.value))
				good = false
				continue
			}
			n, ok := d.nodeRef("clock.node", g.value, g.valuePos)
			if !ok {
				good = false
			}
			c.Node = n
		case "offset":
			if v, ok := d.duration("clock.offset", g, anyDuration); ok {
				c.Offset = &v
			} else {
				good = false
			}
		case "drift":
			if v, ok := d.drift("clock.drift", g); ok {
				c.DriftPPM = &v
			} else {
				good = false
			}
		}
	}
	return c, good
}

var expectKeys = []string{
	"members", "down", "master", "quorate", "inquorate", "view_of",
	"transitions_at_least", "detected_within", "false_nodedowns",
}

func (d *decoder) expect(f field) (*Expect, bool) {
	fs, ok := d.object("expect", f, expectKeys, true, "a mapping of "+oneOf(expectKeys))
	if !ok {
		return nil, false
	}
	e := &Expect{FieldPos: map[string]Pos{}}
	good := true
	for _, g := range fs {
		path := "expect." + g.name
		e.FieldPos[g.name] = g.keyPos
		switch g.name {
		case "members", "down", "master", "quorate", "inquorate":
			set, _, ok := d.nodeSet(path, g)
			if !ok {
				good = false
				continue
			}
			switch g.name {
			case "members":
				e.Members = &set
			case "down":
				e.Down = &set
			case "master":
				e.Master = &set
			case "quorate":
				e.Quorate = &set
			case "inquorate":
				e.Inquorate = &set
			}
		case "view_of":
			v, ok := d.viewOf(path, g)
			e.ViewOf = v
			good = good && ok
		case "transitions_at_least", "false_nodedowns":
			n, ok := d.count(path, g)
			if !ok {
				good = false
				continue
			}
			if g.name == "transitions_at_least" {
				e.TransitionsAtLeast = &n
			} else {
				e.FalseNodedowns = &n
			}
		case "detected_within":
			v, ok := d.duration(path, g, positiveDuration)
			if !ok {
				good = false
				continue
			}
			e.DetectedWithin = &v
		}
	}
	return e, good
}

func (d *decoder) viewOf(path string, f field) (*ViewOf, bool) {
	fs, ok := d.object(path, f, []string{"node", "members"}, false, "a mapping {node: N, members: NODES}")
	if !ok {
		return nil, false
	}
	v := &ViewOf{}
	good := d.require(path, f, fs, "node", "members")
	for _, g := range fs {
		switch g.name {
		case "node":
			if g.value == nil {
				good = false
				continue
			}
			if _, isInt := g.value.(*ast.IntegerNode); !isInt {
				p := g.valuePos
				if g.missing() {
					p = g.keyPos
				}
				d.errorf(p, "%s.node: want one node number, got %s", path, describe(g.value))
				good = false
				continue
			}
			n, ok := d.nodeRef(path+".node", g.value, g.valuePos)
			v.Node = n
			good = good && ok
		case "members":
			set, _, ok := d.nodeSet(path+".members", g)
			v.Members = set
			good = good && ok
		}
	}
	return v, good
}

func (d *decoder) nemesis(f field) (*Nemesis, bool) {
	known := []string{"duration", "interval", "faults"}
	fs, ok := d.object("nemesis", f, known, false, "a mapping {duration:, interval:, faults: [...]}")
	if !ok {
		return nil, false
	}
	n := &Nemesis{}
	good := d.require("nemesis", f, fs, known...)
	for _, g := range fs {
		path := "nemesis." + g.name
		switch g.name {
		case "duration", "interval":
			v, ok := d.duration(path, g, positiveDuration)
			if !ok {
				good = false
				continue
			}
			if g.name == "duration" {
				n.Duration = v
			} else {
				n.Interval = v
			}
		case "faults":
			fl, ok := d.faults(path, g)
			n.Faults = fl
			good = good && ok
		}
	}
	return n, good
}

func (d *decoder) faults(path string, f field) ([]Fault, bool) {
	if f.value == nil {
		return nil, false
	}
	want := "a list of faults from " + oneOf(faultNames())
	if f.missing() {
		d.errorf(f.keyPos, "%s: missing value; want %s", path, want)
		return nil, false
	}
	items, ok := sequenceItems(f.value)
	if !ok {
		d.errorf(f.valuePos, "%s: want %s, got %s", path, want, describe(f.value))
		return nil, false
	}
	if len(items) == 0 {
		d.errorf(f.valuePos, "%s: empty list; want %s", path, want)
		return nil, false
	}
	good := true
	var out []Fault
	seen := map[Fault]Pos{}
	for _, item := range items {
		ipos := startPos(item)
		iv := d.resolve(item)
		if iv == nil {
			good = false
			continue
		}
		text, isText := iv.(*ast.StringNode)
		if !isText || !slices.Contains(faults, Fault(text.Value)) {
			d.errorf(ipos, "%s: unknown fault %s; want %s", path, describe(iv), oneOf(faultNames()))
			good = false
			continue
		}
		fl := Fault(text.Value)
		if p, dup := seen[fl]; dup {
			d.errorf(ipos, "%s: %s is listed twice (first at %s)", path, fl, p)
			good = false
			continue
		}
		seen[fl] = ipos
		out = append(out, fl)
	}
	return out, good
}

func faultNames() []string {
	names := make([]string, len(faults))
	for i, f := range faults {
		names[i] = string(f)
	}
	return names
}
