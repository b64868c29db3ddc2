// Package failbench measures failover and false positives of clusterd
// against two peers, corosync 3 and hashicorp/memberlist, in one run on
// one machine, so that the project's goals can be stated as ratios to
// the peers measured beside it (see internal/benchreport).
//
// Every system runs as real processes, one per node, each in its own
// network namespace of a netlab lab (10.213.0.N on a private bridge).
// The systems and their configurations:
//
//   - clusterd: the daemon with its defaults (heartbeat 50 ms, nodedown
//     after 250 ms, election timeout 300 ms); candidate masters are nodes
//     1-3 (all three nodes of a 3-node cluster, three of five otherwise).
//   - corosync-default and corosync-token1000: Debian's corosync 3 with
//     knet, crypto off (crypto_cipher and crypto_hash none, as Debian's
//     sample config ships), votequorum, and either the default token
//     (3000 ms) or token 1000 ms; the real token timeout grows by
//     token_coefficient (650 ms) per node beyond two, as corosync does by
//     default. Each instance runs in a private mount namespace with its
//     own tmpfs /run, because corosync's lock file is always
//     /run/corosync.pid, and its own state_dir.
//   - memberlist-lan and memberlist-local: a small agent (AgentMain) that
//     runs memberlist with DefaultLANConfig or DefaultLocalConfig
//     unchanged except for the node's name and address.
//
// # Failover
//
// A cluster of N nodes is started once per system and kept across
// rounds: each round waits until every node reports the full view for a
// settle time, SIGKILLs one node, measures the time until every
// survivor's API reports a view without it, then restarts the victim
// (clusterd with the same state directory, so it comes back as a new
// incarnation; corosync as a fresh process; memberlist under a new name,
// so that its old identity simply stays dead). Member and master rounds
// alternate so that slow drifts of a noisy machine hit both alike.
//
// What "master" means: for clusterd, the master the survivors report.
// corosync and memberlist have none. For corosync the victim of a master
// round is the lowest nodeid in the membership, which is the ring's
// representative (the first number of the ring id). memberlist is fully
// symmetric; its master round kills node 1, the node every other node
// joined through, and is reported only so the table is complete.
//
// How a view is read, per survivor:
//
//   - clusterd: libcluster Status over the node's Unix socket, polled
//     every PollEvery (5 ms); the view is Status.Members.
//   - memberlist: the agent's HTTP endpoint on a Unix socket, polled
//     every PollEvery; the view is Members() (alive and suspect nodes).
//   - corosync: `corosync-quorumtool -m` (the quorum API's change
//     notifications) runs in the node's namespace for the whole life of
//     the node and prints each new membership; the view is taken when
//     the block arrives. Polling with a new corosync-quorumtool process
//     every few milliseconds per node would load the two cores more than
//     the daemons themselves; the notification is at least as early as a
//     poll would see it.
//
// The latency of a round is the time from just before the SIGKILL to the
// moment the last survivor's view first excluded the victim.
//
// clusterd's rounds run alone: its figures are hundreds of milliseconds
// and would feel other load on two cores. The peers' rounds then run at
// the same time as each other, each system in its own lab, which is what
// brings the whole benchmark under an hour: their figures are seconds,
// set by their timeouts (corosync's token and consensus, memberlist's
// probe and suspicion timers), and a sequential run on this machine gave
// the same medians within a few milliseconds (memberlist's p99 moves by
// whole probe intervals, 1 s, from run to run either way). Config.Serial
// (flag -serial) runs them one after the other instead.
//
// # False positives
//
// Each system runs N nodes (5 by default) for the soak duration with 5%
// loss and 10 ms jitter on every link: the loss is nftables drops in the
// lab's bridge; the jitter gives each packet that survives the loss a
// delay uniform in 0±10 ms, clamped at zero (half the packets go at
// once, the others up to 10 ms late, and packets reorder). The lab
// delays with netem where the kernel has it and in user space otherwise
// (NFQUEUE; see package internal/netlab), which the report's notes and
// each soak's delay_method say; on a kernel that can do neither, the run
// says that the jitter was left out. A false nodedown is a node that was
// never killed disappearing from a survivor's view; for clusterd it is
// also counted from the agreed history (transitions to KCLEANUP).
// The systems soak at the same time, each in its own lab, so that the
// whole benchmark fits in an hour.
//
// # Memory
//
// The resident memory (VmRSS) of every clusterd of a 5-node cluster is
// read from /proc after the cluster converged and ran for 30 s.
//
// # Output
//
// Lines in the format of `go test -bench`, which internal/benchreport
// parses, for example:
//
//	BenchmarkFailover/clusterd/n3/member 20 412000000 p50-ns 530000000 p99-ns 530000000 max-ns
//	BenchmarkFalsePositives/clusterd/n5 1 0 false-nodedowns 600 soak-s
//	BenchmarkRSS/clusterd/n5 5 15000000 max-rss-bytes 14000000 mean-rss-bytes
//
// and, with Config.JSON, a file with every sample.
//
// Usage (root):
//
//	go build -o .bin/clusterd ./cmd/clusterd
//	go run ./internal/failbench/cmd/failbench -clusterd .bin/clusterd -json failbench.json
package failbench
