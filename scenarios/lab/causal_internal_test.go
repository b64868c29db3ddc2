package lab

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/clusterinfra/ci/clms"
	"github.com/clusterinfra/ci/node/libcluster"
)

func clmsEv(t *testing.T, p *vmProc, at time.Duration, kind clms.EventKind, index uint64) vmEv {
	b, err := json.Marshal(clms.Event{Kind: kind, Index: index})
	if err != nil {
		t.Fatal(err)
	}
	return vmEv{e: libcluster.LabEvent{Kind: "clms", CLMS: b}, p: p, at: int64(at)}
}

// TestCausalOrder: within the guests' clock error, a candidate's persist
// comes before the master's apply, which comes before a member's apply;
// further apart, or within one guest, the stamps stand.
func TestCausalOrder(t *testing.T) {
	master, follower, member := &vmProc{id: 1}, &vmProc{id: 2}, &vmProc{id: 4}
	ms := time.Millisecond
	evs := []vmEv{
		clmsEv(t, member, 100*ms, clms.EvApplied, 0),     // stamped 2ms early
		clmsEv(t, master, 102*ms, clms.EvApplied, 7),     //
		clmsEv(t, follower, 103*ms, clms.EvPersisted, 7), // stamped 3ms late
		clmsEv(t, member, 200*ms, clms.EvApplied, 0),     // 50ms early: a real reordering
		clmsEv(t, master, 250*ms, clms.EvApplied, 8),
		clmsEv(t, master, 300*ms, clms.EvApplied, 9), // one guest's own order stands
		clmsEv(t, master, 301*ms, clms.EvPersisted, 10),
	}
	causalOrder(evs)
	var got []string
	for _, ev := range evs {
		r, _ := causalRank(ev)
		got = append(got, string(rune('0'+ev.p.id))+string(rune('a'+r)))
	}
	want := []string{"2a", "1b", "4c", "4c", "1b", "1b", "1a"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].at < evs[i-1].at {
			t.Fatalf("stamps go back at %d: %v after %v", i, evs[i].at, evs[i-1].at)
		}
	}
}
