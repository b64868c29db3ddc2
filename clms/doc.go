// Package clms is the CLuster Membership Service: a numbered history of
// membership transitions that is identical on every node, only moves
// forward, and is driven by a master chosen among the candidate masters.
//
// # Design
//
// Agreement. The candidates (Config.Candidates, the seed's CLUSTER_MASTER)
// are the voters of a Raft group, using etcd's raft library
// (go.etcd.io/raft/v3) as a sans-IO core. The raft leader is the CLMS
// master and its term is the master epoch. Every transition is a raft
// log entry: the master proposes it, more than half of the candidates
// persist it (hard state and entries are synced to stable storage before
// any message of the same Ready is sent), and every candidate applies it
// when it commits. A proposal is validated again at apply time, the same
// way on every candidate, so a stale one (say, appended by a master cut
// off in a minority and committed after the heal) is skipped by all.
// The voter set never changes; other nodes are not raft members at all.
//
// Dissemination. Non-candidates get the history from the master: its
// beacon to each node carries the entries that node lacks, and a node that
// is behind asks for more. A node that boots later gets the whole past
// from number 1. Entries carry their number, epoch and master, so a node
// applies exactly number last+1 and nothing else.
//
// Transport. CLMS uses only ICS datagrams (authenticated, bound to both
// incarnations, replay-protected): heartbeats, beacons, probes, joins and
// the raft messages themselves. A lost datagram costs one heartbeat
// interval; a stalled TCP stream could cost a retransmission timeout of
// 200ms or more and hide a live node behind a dead connection.
//
// Determinism. Raft's own election timer draws from a process-wide random
// source, which would make a seed irreproducible, so CLMS drives
// elections itself: raft's ElectionTick is set out of reach, and each
// candidate campaigns (with PreVote) when its own timer, drawn with the
// node's seeded randomness, finds the leader silent for ElectionTimeout:
// the timer aims at the leader's last message plus the timeout plus a
// stagger by rank among the other candidates, so that survivors rarely
// split the vote (see electionDelay). The lease that raft's CheckQuorum would enforce is
// enforced here too: a candidate that heard from a live leader within the
// election timeout ignores vote requests, and a master holds its lease
// while more than half of the candidates (itself included) answered it
// within the election timeout. Only then may it propose.
//
// Detection. Every node sends a heartbeat to the master every Heartbeat;
// the master beacons every node. That is O(n) messages per interval, never
// O(n²). When a node is silent for NodedownAfter (or a pluggable Detector
// says so), the master asks up to Probers other nodes to ping it
// (indirect probes, so one bad link does not evict a healthy node) and
// re-confirms its own mastership with the candidates (as raft's ReadIndex
// does): only when no probe answered and more than half of the candidates
// answered after the suspicion began does it propose the nodedown. A
// master that resumes from a pause grants everyone a fresh grace period
// before it suspects anybody. A new master measures the old master's
// silence from its own last message.
//
// Lifecycle. States are OpenSSI's: NEVERUP, COMINGUP, UP, SHUTDOWN,
// GOINGDOWN, KCLEANUP, UCLEANUP, DOWN, and only the changes Allowed lists
// are recorded. A joining incarnation becomes COMINGUP, and UP once it has
// applied the history up to its admission. A failed or evicted node goes
// to KCLEANUP; every node still in the cluster then runs its cleanup
// (ICS nodedown, registered Subsystems) and reports in its heartbeats the
// number up to which it has cleaned up; when all have, the master commits
// UCLEANUP, then DOWN. Only then may a new incarnation of the node be
// admitted. A graceful leave goes UP -> SHUTDOWN (key services move) ->
// KCLEANUP with no timeout. A join from n:k+1 while n:k is still up is
// itself the nodedown of n:k.
//
// Incarnations. A node's incarnation is its ICS endpoint's: boot << 20
// plus the number of times it rejoined. A running node that learns it was
// declared down (from the history, or from the master's beacon) takes a
// new incarnation and rejoins by itself: eviction is not exile.
//
// Quorate. A node reports itself quorate when it is UP in its own view
// and heard, within ElectionTimeout, from a master holding its lease that
// lists this incarnation as UP. A node that cannot hear the master, or
// was evicted, reports false even before it applies its own nodedown.
//
// # Use
//
// CLMS is composed with ICS on a node by package node/stack:
//
//	f := stack.Factory(stack.Config{
//		ICS:  ics.Config{Keyring: kr},
//		CLMS: clms.Config{Candidates: []node.ID{1, 2, 3}},
//	})
//
// The API mirrors OpenSSI's libcluster: Membership, NextTransition,
// Detailed, NodeInfo, NodeAvail, SetNodeState, MaxNodes, ClusterName,
// LocalNode, NodeByName; Subscribe is the SIGCLUSTER contract (several
// transitions may come in one call; a subscriber catches up by number).
package clms
