package failbench

import (
	"context"
	"slices"
	"sync"
	"time"
)

// view is one node's membership as its own API last reported it.
type view struct {
	members []int     // sorted node numbers
	since   time.Time // when the node first reported exactly these members
}

// change is one observed change of a node's view.
type change struct {
	observer int
	old, new []int
	at       time.Time
}

// tracker holds the current view of every running node. Readers (the
// pollers and monitors) set views; the round loop waits on conditions.
// A hook sees every change, in order, for the false-positive count.
type tracker struct {
	mu      sync.Mutex
	views   map[int]view
	changed chan struct{} // closed and replaced on every change
	hook    func(change)
}

func newTracker() *tracker {
	return &tracker{views: map[int]view{}, changed: make(chan struct{})}
}

// set records that node n reported members at time at. A report equal to
// the current view changes nothing (its since stays the first report).
func (t *tracker) set(n int, members []int, at time.Time) {
	members = slices.Clone(members)
	slices.Sort(members)
	t.mu.Lock()
	defer t.mu.Unlock()
	old, ok := t.views[n]
	if ok && slices.Equal(old.members, members) {
		return
	}
	t.views[n] = view{members: members, since: at}
	if t.hook != nil && ok {
		t.hook(change{observer: n, old: old.members, new: members, at: at})
	}
	close(t.changed)
	t.changed = make(chan struct{})
}

// forget drops node n's view (the node was killed).
func (t *tracker) forget(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.views, n)
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *tracker) setHook(h func(change)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hook = h
}

// snapshot returns the current views and a channel closed at the next
// change.
func (t *tracker) snapshot() (map[int]view, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[int]view, len(t.views))
	for n, v := range t.views {
		out[n] = v
	}
	return out, t.changed
}

// waitFor waits until cond holds for the views, checking at every change
// and at least every 10 ms, until ctx ends.
func (t *tracker) waitFor(ctx context.Context, cond func(map[int]view) bool) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		vs, ch := t.snapshot()
		if cond(vs) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-tick.C:
		}
	}
}
