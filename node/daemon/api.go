package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/libcluster"
	"github.com/clusterinfra/ci/node/stack"
)

// The control API: HTTP with JSON on a Unix socket (see package
// libcluster for the client and the wire types). The socket is the
// access control: only who may open it (root, by its mode) may use it.

func (d *Daemon) startAPI() error {
	// A socket file left by a daemon that died is removed; one that
	// answers belongs to a running daemon, which we must not steal from.
	if c, err := net.DialTimeout("unix", d.opts.Socket, 200*time.Millisecond); err == nil {
		_ = c.Close()
		return fmt.Errorf("control socket %s: another clusterd is running", d.opts.Socket)
	}
	_ = os.Remove(d.opts.Socket)
	l, err := net.Listen("unix", d.opts.Socket)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(d.opts.Socket, 0o600); err != nil {
		_ = l.Close()
		return err
	}
	d.apiL = l
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.hStatus)
	mux.HandleFunc("GET /v1/transitions", d.hTransitions)
	mux.HandleFunc("GET /v1/watch", d.hWatch)
	mux.HandleFunc("GET /v1/nodes/{n}", d.hInfo)
	mux.HandleFunc("POST /v1/nodes/{n}/state", d.hSetState)
	mux.HandleFunc("POST /v1/leave", d.hLeave)
	mux.HandleFunc("POST /v1/add", d.hAdd)
	mux.HandleFunc("GET /v1/loads", d.hLoads)
	mux.HandleFunc("POST /v1/exec", d.hExec)
	if d.opts.Lab {
		mux.HandleFunc("GET /v1/lab/events", d.hLabEvents)
		mux.HandleFunc("POST /v1/lab/clock", d.hLabClock)
	}
	d.api = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	d.wg.Go(func() { _ = d.api.Serve(l) })
	if d.opts.LabAPI != "" {
		tl, err := net.Listen("tcp", d.opts.LabAPI)
		if err != nil {
			return fmt.Errorf("lab API: %w", err)
		}
		d.labL = tl
		d.wg.Go(func() { _ = d.api.Serve(tl) })
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, libcluster.Error{Error: fmt.Sprintf(format, args...)})
}

func (d *Daemon) loopErr(w http.ResponseWriter, err error) {
	writeErr(w, http.StatusServiceUnavailable, "%v", err)
}

func toAPI(t clms.Transition) libcluster.Transition {
	return libcluster.Transition{Num: t.Num, Time: t.Time, Node: int(t.Node), Inc: clms.IncString(t.Inc), From: t.From.String(), To: t.To.String(),
		Cause: string(t.Cause), Master: int(t.Master), Epoch: t.Epoch, Simple: t.Simple()}
}

// status builds the API's view, on the loop.
func (d *Daemon) status(n *stack.Node, dir map[node.ID]entry) libcluster.Status {
	c := n.CLMS
	num, view := c.Membership()
	st := libcluster.Status{Cluster: c.ClusterName(), Self: int(d.opts.Self), Name: d.opts.Name, Master: int(c.Master()),
		Epoch: c.MasterEpoch(), Quorate: c.Quorate(), Last: num, Members: []int{}, Nodes: []libcluster.Node{}}
	for _, id := range view {
		st.Members = append(st.Members, int(id))
	}
	ids := map[node.ID]bool{}
	for id := range dir {
		ids[id] = true
	}
	for _, t := range c.History() {
		ids[t.Node] = true
	}
	sorted := make([]node.ID, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	slices.Sort(sorted)
	for _, id := range sorted {
		info, err := c.NodeInfo(id)
		if err != nil {
			continue
		}
		nd := libcluster.Node{Node: int(id), Name: nameOf(id, dir), State: info.State.String(), Master: info.Master}
		if e, ok := dir[id]; ok {
			nd.Address = e.Addr.String()
		}
		if info.Inc != 0 {
			nd.Incarnation = clms.IncString(info.Inc)
		}
		st.Nodes = append(st.Nodes, nd)
	}
	return st
}

func nameOf(id node.ID, dir map[node.ID]entry) string {
	if e, ok := dir[id]; ok && e.Name != "" {
		return e.Name
	}
	return fmt.Sprintf("node%d", id)
}

func (d *Daemon) hStatus(w http.ResponseWriter, r *http.Request) {
	dir := d.dir.snapshot()
	var st libcluster.Status
	if err := d.onLoop(r.Context(), func(n *stack.Node) { st = d.status(n, dir) }); err != nil {
		d.loopErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func parseAfter(r *http.Request) (uint64, error) {
	s := r.URL.Query().Get("after")
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("after=%q: not a transition number", s)
	}
	return v, nil
}

// transitionsAfter reads at most max transitions after number after.
func (d *Daemon) transitionsAfter(ctx context.Context, after uint64, max int) ([]libcluster.Transition, error) {
	out := []libcluster.Transition{}
	err := d.onLoop(ctx, func(n *stack.Node) {
		last := n.CLMS.Last()
		for k := after + 1; k <= last && len(out) < max; k++ {
			if t, err := n.CLMS.Detailed(clms.This, k); err == nil {
				out = append(out, toAPI(t))
			}
		}
	})
	return out, err
}

func (d *Daemon) hTransitions(w http.ResponseWriter, r *http.Request) {
	after, err := parseAfter(r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	ts, err := d.transitionsAfter(r.Context(), after, 1<<20)
	if err != nil {
		d.loopErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ts)
}

// hWatch streams the history after a number, then every new transition,
// one JSON object per line. Reading the history by number is what makes
// it lossless: a slow reader only falls behind, it never misses one.
func (d *Daemon) hWatch(w http.ResponseWriter, r *http.Request) {
	after, err := parseAfter(r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		wait := d.hist.wait() // before reading, so no transition slips between
		ts, err := d.transitionsAfter(r.Context(), after, 256)
		if err != nil {
			return
		}
		for _, t := range ts {
			if enc.Encode(t) != nil {
				return
			}
			after = t.Num
		}
		if fl != nil {
			fl.Flush()
		}
		if len(ts) == 256 {
			continue
		}
		select {
		case <-wait:
		case <-r.Context().Done():
			return
		case <-d.stop:
			return
		case <-time.After(10 * time.Second):
			// A blank line now and then finds a reader that went away.
			if _, err := w.Write([]byte("\n")); err != nil {
				return
			}
		}
	}
}

func parseNode(s string) (node.ID, error) {
	v, err := strconv.Atoi(s)
	if err != nil || !node.ID(v).Valid() {
		return 0, fmt.Errorf("node %q: need a number 1-%d", s, node.MaxID)
	}
	return node.ID(v), nil
}

func (d *Daemon) hInfo(w http.ResponseWriter, r *http.Request) {
	id, err := parseNode(r.PathValue("n"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	type result struct {
		i   clms.Info
		err error
	}
	ch := make(chan result, 1)
	if err := d.onLoop(r.Context(), func(n *stack.Node) {
		n.CLMS.NodeInfoFrom(id, func(i clms.Info, err error) { ch <- result{i, err} })
	}); err != nil {
		d.loopErr(w, err)
		return
	}
	var res result
	select {
	case res = <-ch:
	case <-r.Context().Done():
		return
	}
	dir := d.dir.snapshot()
	i := res.i
	out := libcluster.NodeInfo{Node: int(id), Name: nameOf(id, dir), State: i.State.String(), Since: i.Since, Master: i.Master, CPUs: i.CPUs, MemoryMB: i.MemoryMB}
	if e, ok := dir[id]; ok {
		out.Address = e.Addr.String()
	}
	if i.Inc != 0 {
		out.Incarnation = clms.IncString(i.Inc)
	}
	if res.err != nil && i.State.InView() {
		// A member that does not answer is still described from the
		// history; say what could not be learned.
		d.log.Debug("node info", "node", id, "err", res.err)
	}
	if l, err := d.loadOf(r.Context(), id); err == nil {
		out.Load = &l
	}
	writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) hSetState(w http.ResponseWriter, r *http.Request) {
	id, err := parseNode(r.PathValue("n"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	var req libcluster.StateRequest
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	to, err := clms.ParseState(req.State)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "state %q: not one of UP, SHUTDOWN, GOINGDOWN", req.State)
		return
	}
	var serr error
	if err := d.onLoop(r.Context(), func(n *stack.Node) { serr = n.CLMS.SetNodeState(id, to) }); err != nil {
		d.loopErr(w, err)
		return
	}
	if serr != nil {
		writeErr(w, http.StatusConflict, "%v", serr)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

func (d *Daemon) hLeave(w http.ResponseWriter, r *http.Request) {
	var member bool
	if err := d.onLoop(r.Context(), func(n *stack.Node) {
		member = n.CLMS.NodeAvail(d.opts.Self)
		if member {
			n.CLMS.Leave()
		}
	}); err != nil {
		d.loopErr(w, err)
		return
	}
	if !member {
		// Not a member: nothing to announce; the daemon just stops.
		d.leftOne.Do(func() { close(d.left) })
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// allowService carries an online add to the candidates.
var allowService = ics.NewService[libcluster.AddRequest, struct{}]("clusterd.allow")

func (d *Daemon) hAdd(w http.ResponseWriter, r *http.Request) {
	var req libcluster.AddRequest
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	id := node.ID(req.Node)
	if !id.Valid() {
		writeErr(w, http.StatusBadRequest, "node %d: need a number 1-%d", req.Node, node.MaxID)
		return
	}
	addr, err := netip.ParseAddr(req.Address)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "address %q: %v", req.Address, err)
		return
	}
	if err := d.dir.allow(id, addr, req.Name); err != nil {
		d.log.Warn("saving the directory", "err", err)
	}
	// Tell every candidate, so that whichever the node asks admits it.
	type res struct {
		id  node.ID
		err error
	}
	ch := make(chan res, len(d.opts.Masters))
	var asked int
	if err := d.onLoop(r.Context(), func(n *stack.Node) {
		for c := range d.opts.Masters {
			if c == d.opts.Self {
				continue
			}
			asked++
			if _, err := allowService.Call(n.ICS, c, req, ics.CallOpts{Timeout: 3 * time.Second}, func(_ struct{}, err error) { ch <- res{c, err} }); err != nil {
				ch <- res{c, err}
			}
		}
	}); err != nil {
		d.loopErr(w, err)
		return
	}
	var failed []string
	for range asked {
		select {
		case x := <-ch:
			if x.err != nil {
				failed = append(failed, fmt.Sprintf("n%d: %v", x.id, x.err))
			}
		case <-r.Context().Done():
			return
		}
	}
	if len(failed) == asked && asked > 0 {
		writeErr(w, http.StatusBadGateway, "no candidate master took the addition: %v", failed)
		return
	}
	d.log.Info("node added", "node", id, "addr", addr, "name", req.Name, "unreached", failed)
	writeJSON(w, http.StatusOK, struct{}{})
}

// serveAllow is the candidates' side of an online add.
func (d *Daemon) serveAllow(n *stack.Node) error {
	return allowService.Serve(n.ICS, func(_ *ics.Request, req libcluster.AddRequest) (struct{}, error) {
		addr, err := netip.ParseAddr(req.Address)
		if err != nil || !node.ID(req.Node).Valid() {
			return struct{}{}, fmt.Errorf("bad addition %+v", req)
		}
		// The file write is small; it happens on the loop once per add.
		if err := d.dir.allow(node.ID(req.Node), addr, req.Name); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, nil
	})
}

func (d *Daemon) hLoads(w http.ResponseWriter, r *http.Request) {
	var view []node.ID
	if err := d.onLoop(r.Context(), func(n *stack.Node) { _, view = n.CLMS.Membership() }); err != nil {
		d.loopErr(w, err)
		return
	}
	out := map[string]float64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range view {
		wg.Go(func() {
			if l, err := d.loadOf(r.Context(), id); err == nil {
				mu.Lock()
				out[strconv.Itoa(int(id))] = l
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) hLabClock(w http.ResponseWriter, r *http.Request) {
	var req libcluster.ClockRequest
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	d.host.SetClockOffset(time.Duration(req.OffsetNS))
	writeJSON(w, http.StatusOK, struct{}{})
}

// bcast wakes every waiter once per fire.
type bcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *bcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *bcast) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

var errLagged = errors.New("lab event reader fell too far behind")
