package ics

import (
	"fmt"

	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
)

// Datagrams are ICS's unreliable service: one authenticated frame per
// datagram, never queued behind a stream, so a stalled or retransmitting
// connection cannot delay them. CLMS sends its heartbeats, probes and
// consensus traffic this way: a lost datagram costs one interval, where a
// stalled TCP stream would cost a retransmission timeout of 200ms or more.
//
// Each datagram names both incarnations like a stream frame does (the
// receiver's may be 0 when unknown); replays are caught by a sliding
// window per sender incarnation.

// MaxDatagram is the largest payload SendDatagram takes.
const MaxDatagram = node.MaxDatagram - wire.Overhead

// DatagramFunc receives a datagram: the sender, its incarnation, and the
// payload (which the callee owns).
type DatagramFunc func(from node.ID, inc uint64, payload []byte)

type dgramPeer struct {
	seq    uint64
	inc    uint64 // newest incarnation seen sending datagrams
	window wire.ReplayWindow
}

// HandleDatagrams sets the receiver of datagrams.
func (e *Endpoint) HandleDatagrams(f DatagramFunc) { e.onDgram = f }

// SendDatagram sends payload to peer over path as one authenticated
// datagram. Loss is silent; only misuse is an error.
func (e *Endpoint) SendDatagram(id node.ID, path int, payload []byte) error {
	if e.closed {
		return ErrClosed
	}
	if len(payload) > MaxDatagram {
		return fmt.Errorf("%w: datagram of %d bytes (max %d)", ErrTooLarge, len(payload), MaxDatagram)
	}
	if id == e.self || !id.Valid() {
		return fmt.Errorf("%w: %d", ErrBadPeer, id)
	}
	dp := e.dgram(id)
	dp.seq++
	var toInc uint64
	if p := e.peers[id]; p != nil {
		toInc = p.inc
	}
	h := wire.Header{From: e.self, To: id, FromBoot: node.Boot(e.inc), ToBoot: node.Boot(toInc), Seq: dp.seq}
	f, err := wire.Seal(e.dbuf[:0], e.cfg.Keyring, h, payload)
	if err != nil {
		return err
	}
	e.dbuf = f
	return e.env.Net().SendDatagram(id, path, f)
}

func (e *Endpoint) dgram(id node.ID) *dgramPeer {
	dp := e.dgrams[id]
	if dp == nil {
		dp = &dgramPeer{}
		e.dgrams[id] = dp
	}
	return dp
}

// Datagram is the node's Datagram, for ICS datagrams.
func (e *Endpoint) Datagram(from node.ID, _ int, frame []byte) {
	if e.closed {
		return
	}
	h, payload, err := wire.Open(e.cfg.Keyring, frame)
	if err != nil {
		e.drop("dgram-" + wire.Reason(err).String())
		return
	}
	switch {
	case h.From != from:
		e.drop("dgram-wrong-sender")
		return
	case h.To != e.self:
		e.drop("dgram-not-for-me")
		return
	case h.ToBoot != 0 && uint64(h.ToBoot) != e.inc:
		e.drop("dgram-stale-incarnation")
		return
	}
	// A node declared down may still send datagrams: that is how it
	// learns it was evicted and rejoins. Only older incarnations than the
	// newest seen are refused here; what an incarnation may do is the
	// receiver's policy.
	inc := uint64(h.FromBoot)
	if p := e.peers[from]; p != nil && inc < p.inc {
		e.drop("dgram-stale-incarnation")
		return
	}
	dp := e.dgram(from)
	switch {
	case inc < dp.inc:
		e.drop("dgram-stale-incarnation")
		return
	case inc > dp.inc:
		dp.inc = inc
		dp.window.Reset()
	}
	if !dp.window.Accept(h.Seq) {
		e.drop("dgram-replay")
		return
	}
	if e.onDgram != nil {
		e.onDgram(from, inc, payload)
	}
}
