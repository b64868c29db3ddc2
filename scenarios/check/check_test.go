package check_test

import (
	"strings"
	"testing"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/scenarios/check"
)

// A recorded history, written as events, for a 3-node cluster whose
// candidates are 1, 2, 3: n1 masters epoch 1 and admits 1, 2, 3.
func tr(num uint64, n node.ID, inc uint64, from, to clms.State, epoch uint64, master node.ID) clms.Transition {
	return clms.Transition{Num: num, Time: time.Unix(0, int64(num)).UTC(), Node: n, Inc: inc, From: from, To: to, Cause: clms.CauseJoin, Epoch: epoch, Master: master}
}

type rec struct {
	at   time.Duration
	boot node.Boot
	e    clms.Event
}

func applied(at time.Duration, by node.ID, t clms.Transition, view []node.ID, index uint64) rec {
	return rec{at: at, boot: 1, e: clms.Event{Kind: clms.EvApplied, Node: by, T: t, View: view, Index: index}}
}

func persisted(at time.Duration, by node.ID, index uint64) rec {
	return rec{at: at, boot: 1, e: clms.Event{Kind: clms.EvPersisted, Node: by, Index: index}}
}

// good is a valid history: master n1 (epoch 1) admits n1, n2, n3.
func good() []rec {
	var rs []rec
	rs = append(rs, rec{boot: 1, e: clms.Event{Kind: clms.EvMaster, Node: 1, Epoch: 1}})
	ts := []clms.Transition{
		tr(1, 1, 1, clms.StateNeverUp, clms.StateComingUp, 1, 1),
		tr(2, 1, 1, clms.StateComingUp, clms.StateUp, 1, 1),
		tr(3, 2, 1, clms.StateNeverUp, clms.StateComingUp, 1, 1),
		tr(4, 2, 1, clms.StateComingUp, clms.StateUp, 1, 1),
	}
	views := [][]node.ID{nil, {1}, {1}, {1, 2}}
	for i, t := range ts {
		idx := uint64(i + 2)
		at := time.Duration(i+1) * time.Millisecond
		rs = append(rs,
			rec{at: at, boot: 1, e: clms.Event{Kind: clms.EvProposed, Node: 1, Epoch: 1, LeaseVoters: 2, T: t}},
			persisted(at, 1, idx), persisted(at, 2, idx),
			applied(at, 1, t, views[i], idx), applied(at, 2, t, views[i], idx))
	}
	return rs
}

func run(rs []rec) *check.Violation {
	c := check.New([]node.ID{1, 2, 3})
	for _, r := range rs {
		c.Event(r.at, r.boot, r.e)
	}
	return c.Violation()
}

func TestGoodHistoryPasses(t *testing.T) {
	if v := run(good()); v != nil {
		t.Fatal(v)
	}
}

func TestEachInvariantIsCaught(t *testing.T) {
	cases := []struct {
		name string
		inv  int
		msg  string
		edit func([]rec) []rec
	}{
		{"a node applies a different transition under the same number", 1, "#4: n3 applied", func(rs []rec) []rec {
			bad := tr(4, 3, 1, clms.StateNeverUp, clms.StateComingUp, 1, 1)
			return append(rs, applied(9*time.Millisecond, 3, tr(1, 1, 1, clms.StateNeverUp, clms.StateComingUp, 1, 1), nil, 2),
				applied(9*time.Millisecond, 3, tr(2, 1, 1, clms.StateComingUp, clms.StateUp, 1, 1), []node.ID{1}, 3),
				applied(9*time.Millisecond, 3, tr(3, 2, 1, clms.StateNeverUp, clms.StateComingUp, 1, 1), []node.ID{1}, 4),
				applied(9*time.Millisecond, 3, bad, []node.ID{1}, 5))
		}},
		{"a node reaches a different view", 1, "reached view", func(rs []rec) []rec {
			return append(rs, applied(9*time.Millisecond, 3, tr(1, 1, 1, clms.StateNeverUp, clms.StateComingUp, 1, 1), []node.ID{3}, 2))
		}},
		{"a node skips a number", 2, "applied #2 after #0", func(rs []rec) []rec {
			return append(rs, applied(9*time.Millisecond, 3, tr(2, 1, 1, clms.StateComingUp, clms.StateUp, 1, 1), []node.ID{1}, 3))
		}},
		{"a node applies a number twice", 2, "applied #4 after #4", func(rs []rec) []rec {
			return append(rs, rs[len(rs)-1])
		}},
		{"a readmission before the old incarnation is cleaned up", 3, "admitted at #5", func(rs []rec) []rec {
			t := tr(5, 2, 2, clms.StateUp, clms.StateComingUp, 1, 1)
			return append(rs, persisted(9*time.Millisecond, 1, 6), persisted(9*time.Millisecond, 2, 6), applied(9*time.Millisecond, 1, t, []node.ID{1}, 6))
		}},
		{"two masters in one epoch", 4, "epoch 1 has two masters", func(rs []rec) []rec {
			return append(rs, rec{at: 9 * time.Millisecond, boot: 1, e: clms.Event{Kind: clms.EvMaster, Node: 2, Epoch: 1}})
		}},
		{"applied before a quorum persisted it", 4, "only 1 of 3 candidates had persisted", func(rs []rec) []rec {
			t := tr(5, 3, 1, clms.StateNeverUp, clms.StateComingUp, 1, 1)
			return append(rs, persisted(9*time.Millisecond, 1, 6), applied(9*time.Millisecond, 1, t, []node.ID{1, 2}, 6))
		}},
		{"a proposal without the lease", 6, "with only 1 of 3 candidates", func(rs []rec) []rec {
			return append(rs, rec{at: 9 * time.Millisecond, boot: 1, e: clms.Event{Kind: clms.EvProposed, Node: 1, Epoch: 1, LeaseVoters: 1,
				T: tr(0, 3, 1, clms.StateNeverUp, clms.StateComingUp, 1, 1)}})
		}},
		{"a proposal by a node that is not master of the epoch", 6, "without being its master", func(rs []rec) []rec {
			return append(rs, rec{at: 9 * time.Millisecond, boot: 1, e: clms.Event{Kind: clms.EvProposed, Node: 2, Epoch: 1, LeaseVoters: 3,
				T: tr(0, 3, 1, clms.StateNeverUp, clms.StateComingUp, 1, 2)}})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := run(c.edit(good()))
			if v == nil {
				t.Fatal("not caught")
			}
			if v.Invariant != c.inv || !strings.Contains(v.Msg, c.msg) {
				t.Fatalf("caught as invariant %d %q, want invariant %d containing %q", v.Invariant, v.Msg, c.inv, c.msg)
			}
		})
	}
}

func TestHangingOrDoubleCallIsCaught(t *testing.T) {
	c := check.New([]node.ID{1, 2, 3})
	for _, r := range good() {
		c.Event(r.at, r.boot, r.e)
	}
	c.Call(10*time.Millisecond, 1, 1, ics.CallEvent{ID: 7, Peer: 2, PeerInc: 1})
	c.Call(11*time.Millisecond, 1, 1, ics.CallEvent{ID: 8, Peer: 2, PeerInc: 1})
	c.Call(12*time.Millisecond, 1, 1, ics.CallEvent{Done: true, ID: 8, Peer: 2, PeerInc: 1})
	if v := c.Violation(); v != nil {
		t.Fatal(v)
	}
	// n1 finishes its cleanup for n2:1 with call 7 still open.
	c.Event(20*time.Millisecond, 1, clms.Event{Kind: clms.EvCleanupDone, Node: 1, Num: 5, Target: 2, Inc: 1})
	v := c.Violation()
	if v == nil || v.Invariant != 5 || !strings.Contains(v.Msg, "call 7 to it") {
		t.Fatalf("hanging call: %v", v)
	}

	c = check.New([]node.ID{1, 2, 3})
	c.Call(10*time.Millisecond, 1, 1, ics.CallEvent{ID: 7, Peer: 2})
	c.Call(11*time.Millisecond, 1, 1, ics.CallEvent{Done: true, ID: 7, Peer: 2})
	c.Call(12*time.Millisecond, 1, 1, ics.CallEvent{Done: true, ID: 7, Peer: 2})
	if v := c.Violation(); v == nil || v.Invariant != 5 || !strings.Contains(v.Msg, "completed twice") {
		t.Fatalf("double completion: %v", v)
	}
}
