package sim

import (
	"strconv"
	"time"

	"github.com/clusterinfra/ci/node"
)

// kind says what an event is. Some kinds are only ever traced (crash,
// partition...): they are things the world did rather than things it
// scheduled.
type kind uint8

const (
	kStart     kind = iota // a node's incarnation starts
	kTimer                 // a timer fires
	kDgram                 // a datagram arrives
	kSegTry                // a stream segment is (re)transmitted
	kSegArrive             // a stream segment reaches the receiver
	kSynTry                // a connection attempt is (re)sent
	kSynArrive             // a connection attempt reaches the acceptor
	kSynAck                // the acceptor's answer reaches the dialler
	kWritable              // a full stream has room again
	kClosed                // a node learns that a stream ended
	kDo                    // an API call into a node
	kAction                // a world action (scenario step, test hook)
	// Traced only.
	kCrash
	kPause
	kResume
	kClock
	kPartition
	kCut
	kLink
	kHeal
	kDrop
	kDup
	kRetx
	kBreak
	kNote
	kDial
	kSend
	kHeld
	numKinds
)

var kindNames = [numKinds]string{
	kStart: "start", kTimer: "timer", kDgram: "dgram", kSegTry: "seg-try",
	kSegArrive: "seg", kSynTry: "syn-try", kSynArrive: "accept", kSynAck: "connected",
	kWritable: "writable", kClosed: "closed", kDo: "call", kAction: "action",
	kCrash: "crash", kPause: "pause", kResume: "resume", kClock: "clock",
	kPartition: "partition", kCut: "cut", kLink: "link", kHeal: "heal",
	kDrop: "drop", kDup: "dup", kRetx: "retx", kBreak: "break", kNote: "note",
	kDial: "dial", kSend: "send", kHeld: "held",
}

type fieldFormat func(b []byte, peer uint32, x, y uint64) []byte

func fmtNone(b []byte, _ uint32, _, _ uint64) []byte { return b }

func fmtPeerPath(b []byte, peer uint32, x, y uint64) []byte {
	b = append(b, " from=n"...)
	b = strconv.AppendUint(b, uint64(peer), 10)
	b = append(b, " path="...)
	b = strconv.AppendUint(b, x, 10)
	b = append(b, " len="...)
	return strconv.AppendUint(b, y, 10)
}

func fmtConnSeq(b []byte, peer uint32, x, y uint64) []byte {
	b = append(b, " c"...)
	b = strconv.AppendUint(b, x, 10)
	b = append(b, " peer=n"...)
	b = strconv.AppendUint(b, uint64(peer), 10)
	b = append(b, " seq="...)
	return strconv.AppendUint(b, y, 10)
}

func fmtConn(b []byte, peer uint32, x, y uint64) []byte {
	b = append(b, " c"...)
	b = strconv.AppendUint(b, x, 10)
	b = append(b, " peer=n"...)
	b = strconv.AppendUint(b, uint64(peer), 10)
	if y != 0 {
		b = append(b, " path="...)
		b = strconv.AppendUint(b, y-1, 10)
	}
	return b
}

func fmtBoot(b []byte, _ uint32, x, _ uint64) []byte {
	b = append(b, " boot="...)
	return strconv.AppendUint(b, x, 10)
}

func fmtTimer(b []byte, _ uint32, x, _ uint64) []byte {
	b = append(b, " slot="...)
	return strconv.AppendUint(b, x, 10)
}

func fmtClock(b []byte, _ uint32, x, y uint64) []byte {
	b = append(b, " step="...)
	b = append(b, time.Duration(int64(x)).String()...)
	b = append(b, " drift="...)
	b = strconv.AppendInt(b, int64(y), 10)
	return append(b, "ppm"...)
}

func fmtCount(b []byte, _ uint32, x, _ uint64) []byte {
	b = append(b, " held="...)
	return strconv.AppendUint(b, x, 10)
}

func fmtLinkPair(b []byte, peer uint32, x, _ uint64) []byte {
	b = append(b, " to=n"...)
	b = strconv.AppendUint(b, uint64(peer), 10)
	if x != 0 {
		b = append(b, " path="...)
		b = strconv.AppendUint(b, x-1, 10)
	}
	return b
}

var kindFormat = [numKinds]fieldFormat{
	kStart: fmtBoot, kTimer: fmtTimer, kDgram: fmtPeerPath, kSegTry: fmtConnSeq,
	kSegArrive: fmtConnSeq, kSynTry: fmtConn, kSynArrive: fmtConn, kSynAck: fmtConn,
	kWritable: fmtConn, kClosed: fmtConn, kDo: fmtNone, kAction: fmtNone,
	kCrash: fmtBoot, kPause: fmtNone, kResume: fmtCount, kClock: fmtClock,
	kPartition: fmtNone, kCut: fmtLinkPair, kLink: fmtLinkPair, kHeal: fmtNone,
	kDrop: fmtPeerPath, kDup: fmtPeerPath, kRetx: fmtConnSeq, kBreak: fmtConn,
	kNote: fmtNone, kDial: fmtConn, kSend: fmtConnSeq, kHeld: fmtNone,
}

// event is one scheduled happening. Events are recycled through a free
// list, so a field that one kind does not use is always zero.
type event struct {
	k    kind
	node node.ID   // the node it happens to (0 for world actions)
	boot node.Boot // the incarnation it is for; stale ones are dropped
	peer node.ID
	path int
	c    *conn
	dir  int8
	seq  uint64
	slot uint32
	gen  uint32
	data []byte
	err  error
	fn   func()
	do   func(node.Handler)
}

// heldWhilePaused reports whether a kind of event waits for a paused node.
// Arrivals of stream data and connection attempts are not held: a paused
// host does not acknowledge, so the sender retransmits, as on a real host.
func (k kind) heldWhilePaused() bool {
	switch k {
	case kSegArrive, kSynArrive, kAction:
		return false
	}
	return true
}

// dispatch processes one event popped from the queue.
func (w *World) dispatch(ev *event) {
	if ev.k == kAction {
		w.actions++
		fn := ev.fn
		w.release(ev)
		w.trace(kAction, 0, 0, 0, 0, "")
		fn()
		return
	}
	// The common case, a datagram for a running node, needs only the
	// node's env. It does exactly what the general path below does for it.
	if ev.k == kDgram {
		if e := w.runningEnv(ev.node); e != nil && (ev.boot == 0 || ev.boot == e.boot) {
			w.stats.Events++
			w.deliverDatagram(e.h, ev)
			return
		}
	}
	n := w.node(ev.node)
	if n == nil {
		w.release(ev)
		return
	}
	// Events meant for an incarnation that is gone are dropped: what was
	// addressed to a crashed process never reaches its successor.
	if ev.boot != 0 && ev.boot != n.boot {
		w.release(ev)
		return
	}
	switch n.state {
	case Crashed, NeverBooted:
		if ev.k != kSegArrive && ev.k != kSynArrive {
			w.release(ev)
			return
		}
	case Paused:
		if ev.k.heldWhilePaused() {
			if ev.k == kDgram {
				if n.heldDgrams >= w.cfg.HeldDatagrams {
					w.stats.Dropped++
					w.trace(kDrop, ev.node, ev.peer, uint64(ev.path), uint64(len(ev.data)), "paused-overflow")
					w.release(ev)
					return
				}
				n.heldDgrams++
			}
			n.held = append(n.held, ev)
			return
		}
	}
	w.stats.Events++
	switch ev.k {
	case kStart:
		w.trace(kStart, n.id, 0, uint64(n.boot), 0, "")
		w.release(ev)
		n.h.Start(n.env)
	case kTimer:
		w.fireTimer(n, ev)
	case kDgram:
		w.deliverDatagram(n.h, ev)
	case kDo:
		w.trace(kDo, n.id, 0, 0, 0, "")
		f := ev.do
		w.release(ev)
		f(n.h)
	default:
		w.streamEvent(n, ev)
	}
}

// deliverDatagram hands a datagram event to the Handler of its node.
func (w *World) deliverDatagram(h node.Handler, ev *event) {
	w.net.arrived(ev)
	w.stats.Delivered++
	w.trace(kDgram, ev.node, ev.peer, uint64(ev.path), uint64(len(ev.data)), "")
	peer, path, data := ev.peer, ev.path, ev.data
	w.release(ev)
	h.Datagram(peer, path, data)
}
