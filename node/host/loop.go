package host

import (
	"context"

	"github.com/clusterinfra/ci/node"
)

// Loop is how code on other goroutines (an API server, a command, a
// test) runs something on the node's event loop and waits for what it
// started there: ics.CallSync takes one (Loop satisfies ics.Loop without
// this package knowing ICS). The zero Loop is not usable; get one from
// Node.Loop.
type Loop struct{ n *Node }

// Loop returns n's Loop.
func (n *Node) Loop() Loop { return Loop{n: n} }

// Do runs f on the node's loop. If the node is idle f runs at once on the
// calling goroutine (TryDo), which spares two goroutine switches per
// synchronous call; otherwise it is queued (Do) and Do returns before it
// runs. It fails once the node is closed. Like Node.Do it must not be
// called from inside a callback.
func (l Loop) Do(f func()) error {
	g := func(node.Handler) { f() }
	if l.n.TryDo(g) {
		return nil
	}
	return l.n.Do(g)
}

// Wait returns nil when done is closed, ctx's error if ctx ends first,
// and ErrClosed if the node closes first: a callback that was to close
// done will then never run, and a caller must not wait for it forever.
// done takes precedence over the others when both are ready.
func (l Loop) Wait(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-l.n.quit:
		select {
		case <-done:
			return nil
		default:
			return ErrClosed
		}
	}
}
