package ics

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The payload of every wire frame is one ICS message. Its encoding, all
// integers big-endian:
//
//	hello, hello-ack: kind(1) proto(1)
//	ack:              kind(1) recvSeq(8) consumed(8 x NumChannels)
//	data:             kind(1) channel(1) flags(1) type(1) callID(8)
//	                  [first chunk only: total(4) svcLen(1) svc(svcLen)]
//	                  chunk bytes
//
// A message larger than one chunk travels as several data frames on its
// channel, first to last, with nothing else of that channel between them.

type msgKind uint8

const (
	kindHello msgKind = iota + 1
	kindHelloAck
	kindData
	kindAck
)

type dataType uint8

const (
	typeOneway dataType = iota + 1
	typeCall
	typeReply
	typeError
	typeCancel
)

const (
	flagFirst = 1 << 0
	flagLast  = 1 << 1

	protoVersion = 1
	maxSvcName   = 255
	dataHdr      = 12
	firstHdr     = 5
	ackSize      = 9 + 8*int(NumChannels)
)

// msg is a decoded ICS message.
type msg struct {
	kind     msgKind
	proto    uint8
	recvSeq  uint64
	consumed [NumChannels]uint64
	ch       Channel
	flags    uint8
	typ      dataType
	callID   uint64
	total    uint32 // first chunk only
	svc      []byte // first chunk only; aliases the frame (see svcName)
	chunk    []byte // aliases the frame
}

var errMsg = errors.New("ics: malformed message")

func appendHello(b []byte, k msgKind) []byte { return append(b, byte(k), protoVersion) }

func appendAck(b []byte, recvSeq uint64, consumed *[NumChannels]uint64) []byte {
	b = append(b, byte(kindAck))
	b = binary.BigEndian.AppendUint64(b, recvSeq)
	for _, c := range consumed {
		b = binary.BigEndian.AppendUint64(b, c)
	}
	return b
}

// appendData encodes a data frame; total and svc are written only when
// flags has flagFirst.
func appendData(b []byte, ch Channel, flags uint8, typ dataType, callID uint64, total uint32, svc string, chunk []byte) []byte {
	b = append(b, byte(kindData), byte(ch), flags, byte(typ))
	b = binary.BigEndian.AppendUint64(b, callID)
	if flags&flagFirst != 0 {
		b = binary.BigEndian.AppendUint32(b, total)
		b = append(b, byte(len(svc)))
		b = append(b, svc...)
	}
	return append(b, chunk...)
}

// decodeMsg parses p. It checks everything that can be checked without
// state; the returned chunk aliases p.
func decodeMsg(p []byte, maxMessage int) (msg, error) {
	var m msg
	if len(p) < 1 {
		return m, fmt.Errorf("%w: empty", errMsg)
	}
	m.kind = msgKind(p[0])
	switch m.kind {
	case kindHello, kindHelloAck:
		if len(p) != 2 {
			return m, fmt.Errorf("%w: hello of %d bytes", errMsg, len(p))
		}
		m.proto = p[1]
		if m.proto != protoVersion {
			return m, fmt.Errorf("%w: protocol version %d", errMsg, m.proto)
		}
	case kindAck:
		if len(p) != ackSize {
			return m, fmt.Errorf("%w: ack of %d bytes", errMsg, len(p))
		}
		m.recvSeq = binary.BigEndian.Uint64(p[1:])
		for i := range m.consumed {
			m.consumed[i] = binary.BigEndian.Uint64(p[9+8*i:])
		}
	case kindData:
		if len(p) < dataHdr {
			return m, fmt.Errorf("%w: data header of %d bytes", errMsg, len(p))
		}
		m.ch = Channel(p[1])
		m.flags = p[2]
		m.typ = dataType(p[3])
		m.callID = binary.BigEndian.Uint64(p[4:])
		if m.ch >= NumChannels {
			return m, fmt.Errorf("%w: channel %d", errMsg, m.ch)
		}
		if m.flags&^(flagFirst|flagLast) != 0 {
			return m, fmt.Errorf("%w: flags %#x", errMsg, m.flags)
		}
		if m.typ < typeOneway || m.typ > typeCancel {
			return m, fmt.Errorf("%w: type %d", errMsg, m.typ)
		}
		rest := p[dataHdr:]
		if m.flags&flagFirst != 0 {
			if len(rest) < firstHdr {
				return m, fmt.Errorf("%w: first chunk header", errMsg)
			}
			m.total = binary.BigEndian.Uint32(rest)
			n := int(rest[4])
			rest = rest[firstHdr:]
			if len(rest) < n {
				return m, fmt.Errorf("%w: service name", errMsg)
			}
			m.svc = rest[:n:n]
			rest = rest[n:]
			if int64(m.total) > int64(maxMessage) {
				return m, fmt.Errorf("%w: message of %d bytes", errMsg, m.total)
			}
			if m.flags&flagLast != 0 && int(m.total) != len(rest) {
				return m, fmt.Errorf("%w: single chunk of %d bytes, total %d", errMsg, len(rest), m.total)
			}
		}
		m.chunk = rest
	default:
		return m, fmt.Errorf("%w: kind %d", errMsg, m.kind)
	}
	return m, nil
}
