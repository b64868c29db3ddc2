package daemon

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/libcluster"
)

// The lab's hooks (clusterd -lab): the scenario lab runs real daemons and
// checks the same invariants as in the simulator, so it needs the same
// observations: every CLMS event and every ICS call event, in order,
// stamped with the host's clock (all of a netns lab's daemons share it).

// labQueue bounds the events waiting for one slow reader. A reader that
// falls this far behind is cut off with an error rather than silently
// skipped: the checker must see everything or say it could not.
const labQueue = 1 << 16

type labHub struct {
	mu   sync.Mutex
	subs map[*labSub]bool
	done bool
	// Until the first reader comes, events wait in early (bounded by
	// labQueue), so that the lab, which connects once the daemon has
	// opened its socket, still sees the daemon's first events.
	early      [][]byte
	earlyLost  bool
	hadReaders bool
}

type labSub struct {
	ch     chan []byte
	lagged bool
}

func (h *labHub) init() { h.subs = map[*labSub]bool{} }

func (h *labHub) publish(e *libcluster.LabEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 && h.hadReaders {
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	b = append(b, '\n')
	if !h.hadReaders {
		if len(h.early) < labQueue {
			h.early = append(h.early, b)
		} else {
			h.earlyLost = true
		}
		return
	}
	for s := range h.subs {
		select {
		case s.ch <- b:
		default:
			s.lagged = true
			close(s.ch)
			delete(h.subs, s)
		}
	}
}

func (h *labHub) clms(self node.ID, boot uint64, e clms.Event) {
	raw, err := json.Marshal(e)
	if err != nil {
		return
	}
	h.publish(&libcluster.LabEvent{Kind: "clms", At: time.Now().UnixNano(), Node: int(self), Boot: boot, CLMS: raw})
}

func (h *labHub) call(self node.ID, boot uint64, e ics.CallEvent) {
	c := &libcluster.CallEvent{Done: e.Done, ID: e.ID, Peer: int(e.Peer), PeerInc: e.PeerInc}
	if e.Err != nil {
		c.Err = e.Err.Error()
	}
	h.publish(&libcluster.LabEvent{Kind: "call", At: time.Now().UnixNano(), Node: int(self), Boot: boot, Call: c})
}

func (h *labHub) subscribe() *labSub {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &labSub{ch: make(chan []byte, labQueue+1)}
	if h.done {
		close(s.ch)
		return s
	}
	if !h.hadReaders {
		h.hadReaders = true
		for _, b := range h.early {
			s.ch <- b
		}
		h.early = nil
		if h.earlyLost {
			s.lagged = true
			close(s.ch)
			return s
		}
	}
	h.subs[s] = true
	return s
}

func (h *labHub) unsubscribe(s *labSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[s] {
		delete(h.subs, s)
		close(s.ch)
	}
}

func (h *labHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = true
	for s := range h.subs {
		close(s.ch)
		delete(h.subs, s)
	}
}

func (d *Daemon) hLabEvents(w http.ResponseWriter, r *http.Request) {
	s := d.lab.subscribe()
	defer d.lab.unsubscribe(s)
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	// A first line tells the reader it is subscribed.
	_ = json.NewEncoder(w).Encode(libcluster.LabEvent{Kind: "hello", At: time.Now().UnixNano(), Node: int(d.opts.Self)})
	if fl != nil {
		fl.Flush()
	}
	for {
		select {
		case b, ok := <-s.ch:
			if !ok {
				if s.lagged {
					_ = json.NewEncoder(w).Encode(libcluster.LabEvent{Kind: "error", At: time.Now().UnixNano(), Node: int(d.opts.Self), CLMS: mustJSON(errLagged.Error())})
				}
				return
			}
			if _, err := w.Write(b); err != nil {
				return
			}
			// Drain what is already queued before flushing.
			for more := true; more; {
				select {
				case b, ok := <-s.ch:
					if !ok {
						more = false
						break
					}
					if _, err := w.Write(b); err != nil {
						return
					}
				default:
					more = false
				}
			}
			if fl != nil {
				fl.Flush()
			}
		case <-r.Context().Done():
			return
		}
	}
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
