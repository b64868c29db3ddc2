package stack

import (
	"time"

	"github.com/clusterinfra/ci/ics"
)

// LabEcho is the service of the lab's background workload.
var LabEcho = ics.NewService[[]byte, []byte]("lab.echo")

// LabWorkload keeps ICS calls in flight on a node throughout a lab run,
// so that the no-hanging-RPC invariant is checked under every fault:
// every 25ms the node calls a random member of its view. The simulator
// lab and clusterd -lab both run it, so the two check the same thing.
func LabWorkload(n *Node) {
	_ = LabEcho.Serve(n.ICS, func(_ *ics.Request, b []byte) ([]byte, error) { return b, nil })
	env := n.Env()
	var tick func()
	tick = func() {
		_, view := n.CLMS.Membership()
		if len(view) > 1 && n.CLMS.Quorate() {
			peer := view[env.Rand().IntN(len(view))]
			if peer != env.Self() {
				_, _ = LabEcho.Call(n.ICS, peer, []byte("ping"), ics.CallOpts{}, func([]byte, error) {})
			}
		}
		env.Clock().AfterFunc(25*time.Millisecond, tick)
	}
	env.Clock().AfterFunc(25*time.Millisecond, tick)
}
