package ics

import (
	"bytes"
	"testing"
)

func TestMsgRoundTrip(t *testing.T) {
	var consumed [NumChannels]uint64
	for i := range consumed {
		consumed[i] = uint64(i * 1000)
	}
	cases := [][]byte{
		appendHello(nil, kindHello),
		appendHello(nil, kindHelloAck),
		appendAck(nil, 42, &consumed),
		appendData(nil, ChanBulk, flagFirst|flagLast, typeCall, 7, 5, "echo", []byte("hello")),
		appendData(nil, ChanNormal, flagFirst, typeOneway, 0, 100, "sink", []byte("part")),
		appendData(nil, ChanNormal, flagLast, typeOneway, 0, 0, "", []byte("rest")),
		appendData(nil, ChanReply, flagFirst|flagLast, typeReply, 9, 0, "", nil),
	}
	for _, c := range cases {
		m, err := decodeMsg(c, 1<<20)
		if err != nil {
			t.Fatalf("%x: %v", c, err)
		}
		if got := reencode(m); !bytes.Equal(got, c) {
			t.Fatalf("re-encoded %x, want %x", got, c)
		}
	}
}

func reencode(m msg) []byte {
	switch m.kind {
	case kindHello, kindHelloAck:
		return appendHello(nil, m.kind)
	case kindAck:
		return appendAck(nil, m.recvSeq, &m.consumed)
	}
	return appendData(nil, m.ch, m.flags, m.typ, m.callID, m.total, string(m.svc), m.chunk)
}

func TestMsgRejects(t *testing.T) {
	good := appendData(nil, ChanNormal, flagFirst|flagLast, typeCall, 7, 5, "echo", []byte("hello"))
	bad := map[string][]byte{
		"empty":           nil,
		"unknown kind":    {9},
		"hello too long":  {1, 1, 0},
		"hello version":   {1, 2},
		"short ack":       {4, 0},
		"short data":      good[:5],
		"bad channel":     append([]byte{3, 99}, good[2:]...),
		"bad flags":       append([]byte{3, 3, 0x80}, good[3:]...),
		"bad type":        append([]byte{3, 3, 3, 0}, good[4:]...),
		"short name":      good[:dataHdr+6],
		"wrong total":     appendData(nil, ChanNormal, flagFirst|flagLast, typeCall, 7, 6, "echo", []byte("hello")),
		"message too big": appendData(nil, ChanNormal, flagFirst, typeCall, 7, 1<<21, "echo", nil),
	}
	for name, b := range bad {
		if _, err := decodeMsg(b, 1<<20); err == nil {
			t.Errorf("%s: accepted %x", name, b)
		}
	}
}

func FuzzDecodeMsg(f *testing.F) {
	var consumed [NumChannels]uint64
	f.Add(appendHello(nil, kindHello))
	f.Add(appendAck(nil, 3, &consumed))
	f.Add(appendData(nil, ChanBulk, flagFirst|flagLast, typeCall, 7, 5, "echo", []byte("hello")))
	f.Add(appendData(nil, ChanNormal, flagFirst, typeOneway, 0, 100, "sink", []byte("part")))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMsg(b, 1<<20)
		if err != nil {
			return
		}
		// Whatever is accepted re-encodes to the same bytes: the decoder
		// ignores nothing.
		if got := reencode(m); !bytes.Equal(got, b) {
			t.Fatalf("accepted %x, re-encodes as %x", b, got)
		}
	})
}
