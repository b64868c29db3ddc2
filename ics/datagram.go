package ics

import (
	"fmt"
	"time"

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
	seq      uint64
	inc      uint64 // newest incarnation seen sending datagrams
	window   wire.ReplayWindow
	noticeAt time.Duration // last incarnation notice sent to it
	noticed  bool
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
	// The newest incarnation known from either side: a peer that restarted
	// and only sends datagrams must not be addressed as its old self.
	toInc := dp.inc
	if p := e.peers[id]; p != nil && p.inc > toInc {
		toInc = p.inc
	}
	h := wire.Header{From: e.self, To: id, FromBoot: node.Boot(e.inc), ToBoot: node.Boot(toInc), Seq: dp.seq}
	f, err := e.sealer.Seal(e.dbuf[:0], h, payload)
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

// notice sends peer an incarnation notice: an empty frame with seq 0.
func (e *Endpoint) notice(peer node.ID, path int) {
	dp := e.dgram(peer)
	now := e.env.Clock().Now()
	if dp.noticed && now-dp.noticeAt < 100*time.Millisecond {
		return
	}
	dp.noticed, dp.noticeAt = true, now
	h := wire.Header{From: e.self, To: peer, FromBoot: node.Boot(e.inc), Seq: 0}
	if f, err := e.sealer.Seal(nil, h, nil); err == nil {
		_ = e.env.Net().SendDatagram(peer, path, f)
	}
}

// Datagram is the node's Datagram, for ICS datagrams.
func (e *Endpoint) Datagram(from node.ID, path int, frame []byte) {
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
	case h.Seq == 0 && len(payload) == 0:
		// An incarnation notice: the peer tells us which incarnation it
		// is, because we addressed an older one.
		if dp := e.dgram(from); uint64(h.FromBoot) > dp.inc {
			dp.inc = uint64(h.FromBoot)
			dp.window.Reset()
		}
		return
	case h.ToBoot != 0 && uint64(h.ToBoot) != e.inc:
		// Meant for an older incarnation of ours: drop it, and tell the
		// sender who we are now (at most every 100ms), or a peer that
		// only sends datagrams would keep addressing our past.
		e.drop("dgram-stale-incarnation")
		e.notice(from, path)
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
	// A newer incarnation proves the old one gone: streams and calls bound
	// to it end now, as when a stream hello shows it.
	if p := e.peers[from]; p != nil && p.inc != 0 && inc > p.inc && inc > p.downInc {
		e.learn(p, inc)
	}
	if e.onDgram != nil {
		e.onDgram(from, inc, payload)
	}
}
