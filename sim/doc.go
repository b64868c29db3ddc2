// Package sim is a deterministic discrete-event simulator for cluster
// nodes: it implements node.Env for any number of nodes on one goroutine,
// with a network and faults modelled closely enough that what passes here
// is worth trying on real hosts.
//
// One priority queue holds every pending event, ordered by simulated time
// and then by the order in which events were scheduled, so a run is a
// pure function of its seed and its inputs. Nodes are node.Handlers called
// one event at a time. The network is modelled per link, direction and
// path: latency with jitter, loss, duplication, reordering, bandwidth and
// in-flight caps (clogging), symmetric partitions and one-way cuts.
// Datagrams suffer those faults directly; streams behave like TCP (see
// stream.go). Nodes can crash (memory and unsynced writes lost), restart
// as a new incarnation, pause and resume, and have their clocks stepped or
// drifted.
//
// Every processed event folds into the trace digest, and can be written
// as one readable line. The same seed gives the same digest.
//
//	w := sim.New(sim.Config{Seed: 7, Link: sim.Link{Latency: time.Millisecond}})
//	for id := node.ID(1); id <= 3; id++ {
//		_ = w.AddNode(id, newMyNode)
//		_ = w.Boot(id)
//	}
//	w.After(time.Second, func() { _ = w.Crash(2) })
//	_ = w.RunFor(5 * time.Second)
//	fmt.Println(w.Digest())
package sim
