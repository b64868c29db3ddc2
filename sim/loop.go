package sim

import (
	"context"
	"fmt"

	"github.com/clusterinfra/ci/node"
)

// Loop is how the code that drives a World runs something on one node's
// turn and waits for what it started there: ics.CallSync takes one (Loop
// satisfies ics.Loop without this package knowing ICS). Waiting runs the
// world, event by event, on the caller's goroutine, so only the goroutine
// that drives the World may use it.
type Loop struct {
	w    *World
	id   node.ID
	boot node.Boot // the incarnation Do ran for; 0 before the first Do
}

// Loop returns node id's Loop.
func (w *World) Loop(id node.ID) *Loop { return &Loop{w: w, id: id} }

// Do queues f to run on the node's turn (World.Do), for the incarnation
// running now: Wait gives up if that one ends.
func (l *Loop) Do(f func()) error {
	if err := l.w.Do(l.id, func(node.Handler) { f() }); err != nil {
		return err
	}
	l.boot = l.w.BootCount(l.id)
	return nil
}

// Wait steps the world until done is closed. It gives up with ctx's
// error when ctx ends (checked between events), with ErrNodeState when
// the incarnation that Do ran for crashed or was replaced (what it
// started there is lost with its memory, so done would never close), and
// with ErrIdle when the world runs out of events.
func (l *Loop) Wait(ctx context.Context, done <-chan struct{}) error {
	for {
		select {
		case <-done:
			return nil
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if l.boot != 0 {
			if st, b := l.w.State(l.id), l.w.BootCount(l.id); b != l.boot || (st != Running && st != Paused) {
				return fmt.Errorf("%w: n%d's incarnation %d ended (now %s, boot %d) before the wait was over", ErrNodeState, l.id, l.boot, st, b)
			}
		}
		if !l.w.Step() {
			return fmt.Errorf("%w: waiting on n%d", ErrIdle, l.id)
		}
	}
}
