package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clusterinfra/ci/node/stack"
)

// snapshot is what the metrics report, read off the loop once a second:
// a scrape never waits on the node's event loop.
type snapshot struct {
	quorate, master  bool
	members          int
	last, epoch      uint64
	framesSent       uint64
	framesRecv       uint64
	callsStarted     uint64
	callsDone        uint64
	resent           uint64
	failovers        uint64
	icsDrops         uint64
	datagramsDropped uint64
	datagramsReject  uint64
	streamsBroken    uint64
}

// refreshLoop keeps the snapshot fresh.
func (d *Daemon) refreshLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		var s snapshot
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := d.onLoop(ctx, func(n *stack.Node) {
			s.quorate, s.master = n.CLMS.Quorate(), n.CLMS.IsMaster()
			_, v := n.CLMS.Membership()
			s.members = len(v)
			s.last, s.epoch = n.CLMS.Last(), n.CLMS.MasterEpoch()
			st := n.ICS.Stats()
			s.framesSent, s.framesRecv, s.callsStarted, s.callsDone = st.FramesSent, st.FramesRecv, st.CallsStarted, st.CallsDone
			s.resent, s.failovers = st.Resent, st.Failovers
			for _, c := range st.Drops {
				s.icsDrops += c
			}
		})
		cancel()
		if err == nil {
			hs := d.host.Stats()
			s.datagramsDropped, s.datagramsReject, s.streamsBroken = hs.DatagramsDropped, hs.DatagramsRejected, hs.StreamsBroken
			d.mu.Lock()
			d.snap = s
			d.mu.Unlock()
		}
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
	}
}

func (d *Daemon) startMetrics() error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	get := func(f func(s *snapshot) float64) func() float64 {
		return func() float64 {
			d.mu.Lock()
			defer d.mu.Unlock()
			return f(&d.snap)
		}
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	gauge := func(name, help string, f func(s *snapshot) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "clusterd", Name: name, Help: help}, get(f)))
	}
	counter := func(name, help string, f func(s *snapshot) float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "clusterd", Name: name, Help: help}, get(f)))
	}
	gauge("quorate", "1 if this node reports itself quorate.", func(s *snapshot) float64 { return b2f(s.quorate) })
	gauge("master", "1 if this node is the master holding a quorum.", func(s *snapshot) float64 { return b2f(s.master) })
	gauge("members", "Nodes in this node's view.", func(s *snapshot) float64 { return float64(s.members) })
	gauge("last_transition", "Number of the last transition applied here.", func(s *snapshot) float64 { return float64(s.last) })
	gauge("master_epoch", "Epoch of the master as known here.", func(s *snapshot) float64 { return float64(s.epoch) })
	counter("ics_frames_sent_total", "ICS frames sent.", func(s *snapshot) float64 { return float64(s.framesSent) })
	counter("ics_frames_received_total", "ICS frames received.", func(s *snapshot) float64 { return float64(s.framesRecv) })
	counter("ics_frames_resent_total", "ICS frames sent again after a path failed.", func(s *snapshot) float64 { return float64(s.resent) })
	counter("ics_failovers_total", "ICS sessions moved to another path.", func(s *snapshot) float64 { return float64(s.failovers) })
	counter("ics_calls_started_total", "ICS calls made.", func(s *snapshot) float64 { return float64(s.callsStarted) })
	counter("ics_calls_done_total", "ICS calls completed (reply or error).", func(s *snapshot) float64 { return float64(s.callsDone) })
	counter("ics_drops_total", "ICS frames dropped (stale, duplicate, unauthenticated...).", func(s *snapshot) float64 { return float64(s.icsDrops) })
	counter("datagrams_dropped_total", "Datagrams dropped because the node's inbox was full.", func(s *snapshot) float64 { return float64(s.datagramsDropped) })
	counter("datagrams_rejected_total", "Datagrams rejected: malformed, misdirected or from an unknown node.", func(s *snapshot) float64 { return float64(s.datagramsReject) })
	counter("streams_broken_total", "Streams that ended with an error.", func(s *snapshot) float64 { return float64(s.streamsBroken) })

	l, err := net.Listen("tcp", d.opts.Metrics)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	d.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	d.wg.Go(func() { _ = d.metrics.Serve(l) })
	return nil
}
