package lab

import (
	"fmt"
	"slices"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/scenarios"
)

// expect checks an expect step, field by field; the first field that
// does not hold is the failure.
func (r *runner) expect(e *scenarios.Expect, fail func(string, string) *Failure) *Failure {
	var q []node.ID
	reps := map[node.ID]report{}
	for _, id := range r.nodes {
		if !r.running(id) {
			continue
		}
		if rep, ok := r.b.report(id); ok {
			reps[id] = rep
			if rep.quorate {
				q = append(q, id)
			}
		}
	}
	ids := func(ns *scenarios.NodeSet) ([]node.ID, error) {
		got, err := ns.Resolve(r.sc.Nodes, int(r.quorateMaster()))
		var out []node.ID
		for _, id := range got {
			out = append(out, node.ID(id))
		}
		return out, err
	}
	at := func(field string) func(string, string) *Failure {
		return func(exp, seen string) *Failure {
			if p, ok := e.FieldPos[field]; ok {
				field = fmt.Sprintf("%s (line %d)", field, p.Line)
			}
			return fail(field+": "+exp, seen)
		}
	}
	needQuorate := func(field string) *Failure {
		if len(q) == 0 {
			return at(field)("some node to report itself quorate", "no node reports itself quorate")
		}
		return nil
	}
	if e.Members != nil {
		if f := needQuorate("members"); f != nil {
			return f
		}
		want, err := ids(e.Members)
		if err != nil {
			return at("members")("members "+e.Members.String(), err.Error())
		}
		for _, id := range q {
			if !slices.Equal(reps[id].view, want) {
				return at("members")("every quorate node's view to be "+fmtIDs(want), fmt.Sprintf("n%d's view is %s", id, fmtIDs(reps[id].view)))
			}
		}
	}
	if e.Down != nil {
		if f := needQuorate("down"); f != nil {
			return f
		}
		want, err := ids(e.Down)
		if err != nil {
			return at("down")("down "+e.Down.String(), err.Error())
		}
		for _, id := range q {
			for _, d := range want {
				if s := reps[id].states[d]; s != clms.StateDown {
					return at("down")(fmt.Sprintf("n%d DOWN on every quorate node", d), fmt.Sprintf("n%d sees n%d in %s", id, d, s))
				}
			}
		}
	}
	if e.Master != nil {
		if f := needQuorate("master"); f != nil {
			return f
		}
		want, err := ids(e.Master)
		if err != nil {
			return at("master")("master "+e.Master.String(), err.Error())
		}
		m := r.quorateMaster()
		if m == 0 || !slices.Contains(want, m) {
			seen := "the quorate nodes name no single master"
			if m != 0 {
				seen = fmt.Sprintf("the master is n%d", m)
			}
			return at("master")("the master to be one of "+fmtIDs(want), seen)
		}
	}
	for _, c := range []struct {
		field string
		ns    *scenarios.NodeSet
		want  bool
	}{{"quorate", e.Quorate, true}, {"inquorate", e.Inquorate, false}} {
		if c.ns == nil {
			continue
		}
		want, err := ids(c.ns)
		if err != nil {
			return at(c.field)(c.field+" "+c.ns.String(), err.Error())
		}
		for _, id := range want {
			got := false
			if rep, ok := reps[id]; ok {
				got = rep.quorate
			}
			if got != c.want {
				return at(c.field)(fmt.Sprintf("n%d to report quorate=%v", id, c.want), fmt.Sprintf("n%d (%s) reports quorate=%v", id, r.st[id], got))
			}
		}
	}
	if v := e.ViewOf; v != nil {
		want, err := ids(&v.Members)
		if err != nil {
			return at("view_of")("view_of members", err.Error())
		}
		rep, ok := reps[node.ID(v.Node)]
		if !ok {
			return at("view_of")(fmt.Sprintf("n%d's view to be %s", v.Node, fmtIDs(want)), fmt.Sprintf("n%d is %s", v.Node, r.st[node.ID(v.Node)]))
		}
		if !slices.Equal(rep.view, want) {
			return at("view_of")(fmt.Sprintf("n%d's view to be %s", v.Node, fmtIDs(want)), fmt.Sprintf("it is %s", fmtIDs(rep.view)))
		}
	}
	if e.TransitionsAtLeast != nil {
		n := 0
		for _, t := range r.ck.Applied() {
			if t.Simple() {
				n++
			}
		}
		if n < *e.TransitionsAtLeast {
			return at("transitions_at_least")(fmt.Sprintf("at least %d transitions", *e.TransitionsAtLeast), fmt.Sprintf("%d", n))
		}
	}
	if e.DetectedWithin != nil || e.FalseNodedowns != nil {
		r.finishReportPartial()
	}
	if e.DetectedWithin != nil {
		lim := *e.DetectedWithin
		for _, d := range r.res.Nodedowns {
			if d.FaultAt == nil {
				return at("detected_within")(fmt.Sprintf("every nodedown within %v of a fault", lim), fmt.Sprintf("n%d went down with no fault on it", d.Node))
			}
			if d.CommittedAllAt == nil {
				return at("detected_within")(fmt.Sprintf("every nodedown within %v of a fault", lim), fmt.Sprintf("n%d's nodedown is not yet applied on the survivors", d.Node))
			}
			took := time.Duration((*d.CommittedAllAt - *d.FaultAt) * float64(time.Second))
			if took > lim {
				return at("detected_within")(fmt.Sprintf("every nodedown within %v of a fault", lim), fmt.Sprintf("n%d took %v (fault at %.3fs, committed on all at %.3fs)", d.Node, took.Round(time.Millisecond), *d.FaultAt, *d.CommittedAllAt))
			}
		}
	}
	if e.FalseNodedowns != nil && r.res.FalseNodedowns > *e.FalseNodedowns {
		return at("false_nodedowns")(fmt.Sprintf("at most %d false nodedowns", *e.FalseNodedowns), fmt.Sprintf("%d", r.res.FalseNodedowns))
	}
	return nil
}

// finishReportPartial computes the nodedown figures so far.
func (r *runner) finishReportPartial() { r.finishReport() }
