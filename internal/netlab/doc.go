// Package netlab builds a private test network out of Linux network
// namespaces and injects network faults into it, so that the real cluster
// daemons can be tested on one host under partitions, one-way cuts, loss,
// duplication and delay (latency and jitter).
//
// # Topology
//
// A lab named "cl1" with nodes 1, 2 and 3 looks like this:
//
//	                namespace cl1-hub
//	+------------------------------------------------+
//	|                 bridge cl1-br                  |
//	|     cl1-v1           cl1-v2           cl1-v3   |
//	+-------|----------------|----------------|------+
//	        | veth           | veth           | veth
//	+-------|------+ +-------|------+ +-------|------+
//	|     eth0     | |     eth0     | |     eth0     |
//	|  10.213.0.1  | |  10.213.0.2  | |  10.213.0.3  |
//	|  ns cl1-n1   | |  ns cl1-n2   | |  ns cl1-n3   |
//	+--------------+ +--------------+ +--------------+
//
// Every node namespace has lo (up) and one interface, eth0, whose peer is a
// port of the bridge in the hub namespace. The lab is IPv4-only: IPv6 is
// disabled on eth0, so that no link-local path bypasses the faults, which
// apply to unicast IPv4 between nodes (ARP always passes, as it would
// through a real switch). Node N gets the address
// Subnet.Addr()+N with the subnet's prefix length (10.213.0.N/16 for nodes
// up to 255 in the default subnet, 10.213.4.0 for node 1024) and no other
// route than the connected one.
//
// Why a hub namespace: the bridge, every veth and every fault rule live in
// namespaces the lab owns. Nothing is created in, attached to or routed
// through the host's namespace, so a lab cannot disturb the host's network,
// test traffic can never leave the lab, two labs (even with the same
// subnet) cannot see each other, and removing the namespaces removes
// everything. The veths are created inside the hub with their peer placed
// straight into the node namespace, so no name ever appears on the host.
// The namespaces are bind-mounted under /run/netns like iproute2 does, so
// `ip netns exec cl1-n2 ...` works for debugging and Sweep can find the
// leftovers of a crashed run.
//
// # Faults
//
// The fault state (one-way blocks, a partition, a default link model and
// per-link overrides) is kept in Go and the kernel state is recomputed from
// it after every change:
//
//   - Drops (Block, Partition and LinkModel.Loss) are nftables rules in a
//     bridge-family table in the hub, replaced in one netlink transaction,
//     so a partition starts and heals at one instant for every node. The
//     switch drops the packet: the sender's send succeeds and the receiver
//     sees nothing, exactly like a lost packet. (A drop in the sender's own
//     output hook would instead fail the send with EPERM, and a reject would
//     tell the peer; neither looks like a cut cable.)
//   - Duplicate is the nftables dup statement in the sender's namespace
//     (ip family, postrouting), so the copy crosses the hub like any packet
//     and meets the same blocks, loss and delay as the original.
//   - Latency and Jitter use one of two methods, which Caps.Delay reports
//     (Options.Delay can force one). Both delay in the hub, not on the
//     sender's eth0, which keeps the delayed packets off the sender's
//     socket accounting (TCP small queues would otherwise throttle the
//     sender; the veth hop already orphans the packet). A kernel with
//     neither method refuses models with delay with ErrNoNetem; every
//     other fault works without them.
//   - DelayNetem, where the kernel has netem and htb: netem qdiscs on the
//     hub port towards the receiver, one htb class per distinct delay and
//     u32 filters on the source address.
//   - DelayQueue, where it has not (CONFIG_NET_SCH_NETEM unset, as on this
//     project's machines): the packets are delayed in this process. An
//     ip-family table in the hub, which br_netfilter runs for bridged
//     IPv4 after the bridge table, queues the packets of delayed links
//     with the xt NFQUEUE target through nft_compat (nft's own queue
//     expression, CONFIG_NFT_QUEUE, is often missing, and compat targets
//     are refused in bridge-family base chains); New turns on
//     bridge-nf-call-iptables in the hub (the default in a new namespace
//     anyway). The hub rather than each receiver's namespace: one queue
//     and one socket serve the whole lab, next to the other faults, and
//     the node namespaces hold nothing but the senders' dup rules. A
//     delayer goroutine
//     reads each packet's addresses over nfnetlink_queue
//     (github.com/florianl/go-nfqueue), draws its delay, Latency plus a
//     uniform draw in ±Jitter and at least zero as netem does, and gives
//     the ACCEPT verdict when the delay has passed; the packet waits in
//     the kernel meanwhile and packets reorder as their draws say. The
//     kernel queue holds at most 4096 packets for the whole lab (netem's
//     default limit is 1000 per qdisc); a packet that finds it full, or
//     that finds no delayer (there always is one while a delayed link
//     exists), is dropped, never passed on undelayed. The delayer starts
//     with the first delayed link; Close stops it and its socket, and the
//     packets it still holds are dropped. Measured on this project's
//     2-core machines (UDP between two lab nodes, TestLatencyQueue and
//     TestJitterQueue): a fixed 50 ms each way gives round trips of
//     100.5-104.3 ms (median about 101.5 ms), i.e. each packet 0.25-2 ms
//     late; 10 ms ± 5 ms gives one-way delays of 5.2-16.1 ms (mean
//     10.2-11.0 ms, standard deviation 2.8-3.0 ms against 2.9 for the
//     uniform draw, about half the packets overtaken at 1 ms spacing),
//     and up to 19.4 ms with both cores busy with other work. A packet
//     is late by as long as the delayer goroutine waits for a CPU.
//
// The order in which faults apply to a packet: duplication in the
// sender (each copy then goes on independently), then in the hub the
// partition and blocks, then loss, then delay; a packet dropped by any of
// them is never delayed. Packets already held when a partition or block
// starts are still delivered, as packets on the wire would be (and as
// netem's queue does). The hub's tables keep their base chains across
// changes: deleting one would make the kernel drop every queued packet.
//
// # Usage
//
//	_ = netlab.Sweep("cl*") // leftovers of crashed runs
//	lab, err := netlab.New(netlab.Options{Name: "cl1", Nodes: []int{1, 2, 3}})
//	if err != nil {
//		return err
//	}
//	defer lab.Close()
//	cmd := lab.Command(1, "clusterd", "--listen", lab.Addr(1).String()+":7000")
//	...
//	_ = lab.Partition([][]int{{1}, {2, 3}}) // 1 is cut off
//	_ = lab.Block(2, 3)                     // 3 no longer hears 2; 2 still hears 3
//	_ = lab.SetLink(1, 2, netlab.LinkModel{Loss: 0.2})
//	_ = lab.Heal()
//
// Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).
package netlab
