package clms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/clusterinfra/ci/node"
)

// CLMS speaks in ICS datagrams (see doc.go for why). Every message starts
// with a kind byte; integers are big-endian.

type kind uint8

const (
	mHeartbeat kind = iota + 1 // member -> master: applied, cleaned, flags
	mBeacon                    // master -> node: epoch, quorum, last, your state, entries
	mJoin                      // joiner -> candidates
	mFetch                     // member -> master: send entries from N
	mProbeReq                  // master -> helper: probe target
	mPing                      // helper -> target
	mPong                      // target -> helper
	mProbeAck                  // helper -> master: target answered
	mRaft                      // candidate <-> candidate: a consensus message
	mRefused                   // master -> joiner: not allowed
	mLease                     // master -> candidate: still there? (nonce: send time)
	mLeaseAck                  // candidate -> master: yes (nonce echoed, epoch: its term)
	numKinds
)

const (
	flagLeave      = 1 << 0 // the node asks to leave
	flagLeaveReady = 1 << 1 // its key services have moved: it may go
)

// message is a decoded CLMS message; which fields mean something depends
// on kind.
type message struct {
	kind      kind
	applied   uint64 // heartbeat
	cleaned   uint64 // heartbeat
	flags     uint8  // heartbeat
	epoch     uint64 // heartbeat (seen), beacon
	quorum    bool   // beacon
	last      uint64 // beacon
	yourInc   uint64 // beacon
	yourState State  // beacon
	entries   []Transition
	from      uint64 // fetch
	target    node.ID
	targetInc uint64
	nonce     uint64
	raft      []byte
	reason    string
}

var errDecode = errors.New("clms: malformed message")

const transitionSize = 8 + 8 + 4 + 8 + 1 + 1 + 8 + 4 + 1 // plus the cause

func appendTransition(b []byte, t *Transition) []byte {
	b = binary.BigEndian.AppendUint64(b, t.Num)
	b = binary.BigEndian.AppendUint64(b, uint64(t.Time.UnixNano()))
	b = binary.BigEndian.AppendUint32(b, uint32(t.Node))
	b = binary.BigEndian.AppendUint64(b, t.Inc)
	b = append(b, byte(t.From), byte(t.To))
	b = binary.BigEndian.AppendUint64(b, t.Epoch)
	b = binary.BigEndian.AppendUint32(b, uint32(t.Master))
	b = append(b, byte(len(t.Cause)))
	return append(b, t.Cause...)
}

func readTransition(p []byte) (Transition, []byte, error) {
	var t Transition
	if len(p) < transitionSize {
		return t, nil, fmt.Errorf("%w: short transition", errDecode)
	}
	t.Num = binary.BigEndian.Uint64(p)
	t.Time = time.Unix(0, int64(binary.BigEndian.Uint64(p[8:]))).UTC()
	t.Node = node.ID(binary.BigEndian.Uint32(p[16:]))
	t.Inc = binary.BigEndian.Uint64(p[20:])
	t.From, t.To = State(p[28]), State(p[29])
	t.Epoch = binary.BigEndian.Uint64(p[30:])
	t.Master = node.ID(binary.BigEndian.Uint32(p[38:]))
	n := int(p[42])
	p = p[transitionSize:]
	if len(p) < n {
		return t, nil, fmt.Errorf("%w: short cause", errDecode)
	}
	t.Cause = Cause(p[:n])
	if !t.Node.Valid() || !t.Master.Valid() || !Allowed(t.From, t.To) || t.Num == 0 || t.Inc == 0 {
		return t, nil, fmt.Errorf("%w: invalid transition %v", errDecode, t)
	}
	return t, p[n:], nil
}

func encode(b []byte, m *message) []byte {
	b = append(b, byte(m.kind))
	switch m.kind {
	case mHeartbeat:
		b = binary.BigEndian.AppendUint64(b, m.applied)
		b = binary.BigEndian.AppendUint64(b, m.cleaned)
		b = binary.BigEndian.AppendUint64(b, m.epoch)
		b = append(b, m.flags)
	case mBeacon:
		b = binary.BigEndian.AppendUint64(b, m.epoch)
		q := byte(0)
		if m.quorum {
			q = 1
		}
		b = append(b, q)
		b = binary.BigEndian.AppendUint64(b, m.last)
		b = binary.BigEndian.AppendUint64(b, m.yourInc)
		b = append(b, byte(m.yourState))
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.entries)))
		for i := range m.entries {
			b = appendTransition(b, &m.entries[i])
		}
	case mJoin:
	case mFetch:
		b = binary.BigEndian.AppendUint64(b, m.from)
	case mProbeReq, mProbeAck:
		b = binary.BigEndian.AppendUint32(b, uint32(m.target))
		b = binary.BigEndian.AppendUint64(b, m.targetInc)
		b = binary.BigEndian.AppendUint64(b, m.nonce)
	case mPing, mPong:
		b = binary.BigEndian.AppendUint64(b, m.nonce)
	case mLease, mLeaseAck:
		b = binary.BigEndian.AppendUint64(b, m.nonce)
		b = binary.BigEndian.AppendUint64(b, m.epoch)
	case mRaft:
		b = append(b, m.raft...)
	case mRefused:
		b = append(b, m.reason...)
	}
	return b
}

func decode(p []byte) (message, error) {
	var m message
	if len(p) == 0 {
		return m, fmt.Errorf("%w: empty", errDecode)
	}
	m.kind = kind(p[0])
	p = p[1:]
	need := func(n int) error {
		if len(p) != n {
			return fmt.Errorf("%w: %d bytes for kind %d, want %d", errDecode, len(p), m.kind, n)
		}
		return nil
	}
	switch m.kind {
	case mHeartbeat:
		if err := need(25); err != nil {
			return m, err
		}
		m.applied = binary.BigEndian.Uint64(p)
		m.cleaned = binary.BigEndian.Uint64(p[8:])
		m.epoch = binary.BigEndian.Uint64(p[16:])
		m.flags = p[24]
		if m.flags&^(flagLeave|flagLeaveReady) != 0 || m.cleaned > m.applied {
			return m, fmt.Errorf("%w: heartbeat fields", errDecode)
		}
	case mBeacon:
		if len(p) < 28 {
			return m, fmt.Errorf("%w: short beacon", errDecode)
		}
		m.epoch = binary.BigEndian.Uint64(p)
		if p[8] > 1 {
			return m, fmt.Errorf("%w: quorum flag %d", errDecode, p[8])
		}
		m.quorum = p[8] == 1
		m.last = binary.BigEndian.Uint64(p[9:])
		m.yourInc = binary.BigEndian.Uint64(p[17:])
		m.yourState = State(p[25])
		if m.yourState >= numStates {
			return m, fmt.Errorf("%w: state %d", errDecode, m.yourState)
		}
		n := int(binary.BigEndian.Uint16(p[26:]))
		p = p[28:]
		prev := uint64(0)
		for range n {
			t, rest, err := readTransition(p)
			if err != nil {
				return m, err
			}
			if (prev != 0 && t.Num != prev+1) || t.Num > m.last {
				return m, fmt.Errorf("%w: entries out of sequence", errDecode)
			}
			prev = t.Num
			m.entries = append(m.entries, t)
			p = rest
		}
		if len(p) != 0 {
			return m, fmt.Errorf("%w: %d trailing bytes", errDecode, len(p))
		}
	case mJoin:
		if err := need(0); err != nil {
			return m, err
		}
	case mFetch:
		if err := need(8); err != nil {
			return m, err
		}
		m.from = binary.BigEndian.Uint64(p)
	case mProbeReq, mProbeAck:
		if err := need(20); err != nil {
			return m, err
		}
		m.target = node.ID(binary.BigEndian.Uint32(p))
		m.targetInc = binary.BigEndian.Uint64(p[4:])
		m.nonce = binary.BigEndian.Uint64(p[12:])
		if !m.target.Valid() {
			return m, fmt.Errorf("%w: probe target %d", errDecode, m.target)
		}
	case mPing, mPong:
		if err := need(8); err != nil {
			return m, err
		}
		m.nonce = binary.BigEndian.Uint64(p)
	case mLease, mLeaseAck:
		if err := need(16); err != nil {
			return m, err
		}
		m.nonce = binary.BigEndian.Uint64(p)
		m.epoch = binary.BigEndian.Uint64(p[8:])
	case mRaft:
		if len(p) == 0 {
			return m, fmt.Errorf("%w: empty raft message", errDecode)
		}
		m.raft = p
	case mRefused:
		if len(p) > 200 {
			return m, fmt.Errorf("%w: long refusal", errDecode)
		}
		m.reason = string(p)
	default:
		return m, fmt.Errorf("%w: kind %d", errDecode, m.kind)
	}
	return m, nil
}

// proposal is what a master puts in the consensus log: one transition
// without its number and epoch, which committing gives it.
type proposal struct {
	node   node.ID
	inc    uint64
	from   State
	to     State
	cause  Cause
	time   int64
	master node.ID
}

func (p *proposal) encode() []byte {
	t := Transition{Num: 1, Time: time.Unix(0, p.time), Node: p.node, Inc: p.inc, From: p.from, To: p.to, Cause: p.cause, Epoch: 0, Master: p.master}
	return appendTransition(nil, &t)
}

func decodeProposal(b []byte) (proposal, error) {
	t, rest, err := readTransition(b)
	if err != nil {
		return proposal{}, err
	}
	if len(rest) != 0 {
		return proposal{}, fmt.Errorf("%w: trailing bytes in proposal", errDecode)
	}
	return proposal{node: t.Node, inc: t.Inc, from: t.From, to: t.To, cause: t.Cause, time: t.Time.UnixNano(), master: t.Master}, nil
}
