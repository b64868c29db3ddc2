package clms

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sampleMessages() []*message {
	t1 := Transition{Num: 1, Time: time.Unix(0, 12345).UTC(), Node: 3, Inc: 1 << 20, From: StateNeverUp, To: StateComingUp, Cause: CauseJoin, Epoch: 2, Master: 1}
	t2 := t1
	t2.Num, t2.From, t2.To = 2, StateComingUp, StateUp
	return []*message{
		{kind: mHeartbeat, applied: 9, cleaned: 7, epoch: 3, flags: flagLeave},
		{kind: mBeacon, epoch: 3, quorum: true, last: 2, yourInc: 1 << 20, yourState: StateUp, entries: []Transition{t1, t2}},
		{kind: mBeacon, epoch: 1, last: 0},
		{kind: mJoin},
		{kind: mFetch, from: 5},
		{kind: mProbeReq, target: 4, targetInc: 2 << 20, nonce: 99},
		{kind: mProbeAck, target: 4, targetInc: 2 << 20, nonce: 99},
		{kind: mPing, nonce: 1},
		{kind: mPong, nonce: 2},
		{kind: mRaft, raft: []byte{1, 2, 3}},
		{kind: mRefused, reason: "not allowed"},
		{kind: mLease, nonce: 123456789, epoch: 4},
		{kind: mLeaseAck, nonce: 123456789, epoch: 5},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b := encode(nil, m)
		got, err := decode(b)
		if err != nil {
			t.Fatalf("%d: %v", m.kind, err)
		}
		if diff := cmp.Diff(*m, got, cmp.AllowUnexported(message{})); diff != "" {
			t.Fatalf("kind %d (-want +got):\n%s", m.kind, diff)
		}
	}
}

func TestCodecRejects(t *testing.T) {
	good := encode(nil, sampleMessages()[1])
	bad := map[string][]byte{
		"empty":            nil,
		"unknown kind":     {99},
		"short heartbeat":  {byte(mHeartbeat), 0},
		"cleaned>applied":  encode(nil, &message{kind: mHeartbeat, applied: 1, cleaned: 2}),
		"truncated beacon": good[:len(good)-3],
		"trailing bytes":   append(append([]byte{}, good...), 0),
		"bad state":        func() []byte { b := append([]byte{}, good...); b[26] = 77; return b }(),
		"probe of node 0":  encode(nil, &message{kind: mProbeReq}),
		"empty raft":       {byte(mRaft)},
	}
	for name, b := range bad {
		if _, err := decode(b); err == nil {
			t.Errorf("%s: accepted %x", name, b)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(encode(nil, m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			return
		}
		// What is accepted re-encodes to the same bytes.
		if got := encode(nil, &m); !bytes.Equal(got, b) {
			t.Fatalf("accepted %x, re-encodes as %x", b, got)
		}
	})
}
