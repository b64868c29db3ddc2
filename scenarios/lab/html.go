package lab

import (
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/node"
)

// Timeline is what a run looked like, for the HTML report: when each
// node's process was up, when it reported itself quorate, every fault the
// lab injected, every transition and master change.
type Timeline struct {
	End    time.Duration
	Nodes  []node.ID
	Spans  []Span // process and quorate states per node
	Marks  []Mark // faults, transitions, masters, the failure
	Steps  []Mark // scenario steps, at the time they started
	Failed *Failure
}

// Span is a node in one state from Start to End.
type Span struct {
	Node       node.ID
	State      string // "running", "paused", "quorate", ...
	Start, End time.Duration
}

// Mark is one instant worth showing.
type Mark struct {
	At   time.Duration
	Node node.ID // 0: the whole cluster
	Kind string  // "fault", "transition", "master", "failure", "step"
	Text string
}

type tlRecorder struct {
	tl      Timeline
	open    map[node.ID]*Span // process state
	quorate map[node.ID]*Span
}

func newRecorder(nodes []node.ID) *tlRecorder {
	return &tlRecorder{tl: Timeline{Nodes: nodes}, open: map[node.ID]*Span{}, quorate: map[node.ID]*Span{}}
}

func (t *tlRecorder) state(at time.Duration, n node.ID, s string) {
	if sp := t.open[n]; sp != nil {
		if sp.State == s {
			return
		}
		sp.End = at
		t.tl.Spans = append(t.tl.Spans, *sp)
	}
	t.open[n] = &Span{Node: n, State: s, Start: at}
	if s != "running" && s != "leaving" {
		t.setQuorate(at, n, false)
	}
}

func (t *tlRecorder) setQuorate(at time.Duration, n node.ID, q bool) {
	sp := t.quorate[n]
	switch {
	case q && sp == nil:
		t.quorate[n] = &Span{Node: n, State: "quorate", Start: at}
	case !q && sp != nil:
		sp.End = at
		t.tl.Spans = append(t.tl.Spans, *sp)
		delete(t.quorate, n)
	}
}

func (t *tlRecorder) mark(at time.Duration, n node.ID, kind, text string) {
	t.tl.Marks = append(t.tl.Marks, Mark{At: at, Node: n, Kind: kind, Text: text})
}

func (t *tlRecorder) event(at time.Duration, e clms.Event, first bool) {
	switch e.Kind {
	case clms.EvQuorate:
		t.setQuorate(at, e.Node, e.Quorate)
	case clms.EvMaster:
		t.mark(at, e.Node, "master", fmt.Sprintf("n%d master of epoch %d", e.Node, e.Epoch))
	case clms.EvApplied:
		if first {
			t.mark(at, e.T.Node, "transition", e.T.String())
		}
	case clms.EvEvicted:
		t.mark(at, e.Node, "fault", fmt.Sprintf("n%d learns it was declared down", e.Node))
	}
}

func (t *tlRecorder) finish(end time.Duration, f *Failure) Timeline {
	for _, n := range t.tl.Nodes {
		if sp := t.open[n]; sp != nil {
			sp.End = end
			t.tl.Spans = append(t.tl.Spans, *sp)
		}
		if sp := t.quorate[n]; sp != nil {
			sp.End = end
			t.tl.Spans = append(t.tl.Spans, *sp)
		}
	}
	t.tl.End = end
	t.tl.Failed = f
	if f != nil {
		t.mark(end, 0, "failure", fmt.Sprintf("step %d (line %d): expected %s; seen %s", f.Step, f.Line, f.Expected, f.Seen))
	}
	return t.tl
}

var laneColor = map[string]string{
	"running": "#cfe8cf", "leaving": "#f3e3b5", "paused": "#f6c89f",
	"crashed": "#e6a3a3", "departed": "#d0d0d0", "quorate": "#3a8f3a",
}

var markColor = map[string]string{"fault": "#c0392b", "transition": "#2c3e99", "master": "#8e44ad", "failure": "#000", "step": "#888"}

// WriteHTML writes one self-contained page: a lane per node over time
// showing its process state and, as a bar inside, when it reported itself
// quorate; faults, transitions and masters as ticks on the lanes; the
// scenario's steps along the top; the failure, if any, in red.
func WriteHTML(w io.Writer, res *Result) error {
	tl := res.Timeline
	if tl == nil {
		return fmt.Errorf("lab: no timeline recorded for %s", res.Name)
	}
	const left, laneH, top = 70, 34, 60
	width := 1100
	end := max(tl.End, time.Millisecond)
	x := func(d time.Duration) float64 {
		return left + float64(d)/float64(end)*float64(width-left-20)
	}
	height := top + laneH*len(tl.Nodes) + 40
	var b strings.Builder
	verdict := "passed"
	if !res.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "<!doctype html><html><head><meta charset=utf-8><title>%s seed %d: %s</title>", html.EscapeString(res.Name), res.Seed, verdict)
	b.WriteString(`<style>body{font:13px sans-serif;margin:20px}svg text{font:11px sans-serif}.k span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}table{border-collapse:collapse;margin-top:12px}td{padding:2px 8px;border-bottom:1px solid #eee;vertical-align:top}</style></head><body>`)
	fmt.Fprintf(&b, "<h2>%s &mdash; seed %d &mdash; %s</h2>", html.EscapeString(res.Name), res.Seed, verdict)
	fmt.Fprintf(&b, "<p>%s; %.3fs simulated, %d events, %d transitions, trace %s</p>", html.EscapeString(res.File), res.SimSeconds, res.Events, res.Transitions, res.TraceDigest)
	if f := res.Failure; f != nil {
		fmt.Fprintf(&b, `<p style="color:#c0392b"><b>Failure at step %d (line %d):</b> expected %s; seen %s</p>`, f.Step, f.Line, html.EscapeString(f.Expected), html.EscapeString(f.Seen))
	}
	b.WriteString(`<p class=k>`)
	for _, k := range []string{"running", "quorate", "paused", "leaving", "crashed", "departed"} {
		fmt.Fprintf(&b, `<span style="background:%s"></span>%s`, laneColor[k], k)
	}
	for _, k := range []string{"fault", "transition", "master"} {
		fmt.Fprintf(&b, `<span style="background:%s"></span>%s`, markColor[k], k)
	}
	b.WriteString("</p>")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">`, width, height)
	// Time axis.
	for i := 0; i <= 10; i++ {
		d := end * time.Duration(i) / 10
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/><text x="%.1f" y="%d" text-anchor="middle">%.2fs</text>`,
			x(d), top-8, x(d), height-30, x(d), height-15, d.Seconds())
	}
	for _, s := range tl.Steps {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="2,2"><title>%s</title></line>`,
			x(s.At), 20, x(s.At), height-30, markColor["step"], html.EscapeString(s.Text))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#888">%s</text>`, x(s.At)+2, 30, html.EscapeString(strings.SplitN(s.Text, ":", 2)[0]))
	}
	lane := func(n node.ID) int { return top + slices.Index(tl.Nodes, n)*laneH }
	for _, n := range tl.Nodes {
		fmt.Fprintf(&b, `<text x="8" y="%d">n%d</text>`, lane(n)+laneH/2+4, n)
	}
	for _, sp := range tl.Spans {
		y, h := lane(sp.Node)+4, laneH-10
		if sp.State == "quorate" {
			y, h = lane(sp.Node)+laneH/2-3, 6
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>n%d %s %.3fs-%.3fs</title></rect>`,
			x(sp.Start), y, max(0.5, x(sp.End)-x(sp.Start)), h, laneColor[sp.State], sp.Node, sp.State, sp.Start.Seconds(), sp.End.Seconds())
	}
	for _, m := range tl.Marks {
		y1, y2 := top, height-30
		if m.Node != 0 && slices.Contains(tl.Nodes, m.Node) {
			y1, y2 = lane(m.Node)+2, lane(m.Node)+laneH-6
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"><title>%.3fs %s</title></line>`,
			x(m.At), y1, x(m.At), y2, markColor[m.Kind], m.At.Seconds(), html.EscapeString(m.Text))
	}
	b.WriteString("</svg><table><tr><td><b>time</b></td><td><b>node</b></td><td><b>what</b></td></tr>")
	all := append(slices.Clone(tl.Steps), tl.Marks...)
	slices.SortStableFunc(all, func(a, c Mark) int { return int(a.At - c.At) })
	for _, m := range all {
		who := "-"
		if m.Node != 0 {
			who = fmt.Sprintf("n%d", m.Node)
		}
		fmt.Fprintf(&b, `<tr><td>%.3fs</td><td>%s</td><td style="color:%s">%s: %s</td></tr>`, m.At.Seconds(), who, markColor[m.Kind], m.Kind, html.EscapeString(m.Text))
	}
	b.WriteString("</table></body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
