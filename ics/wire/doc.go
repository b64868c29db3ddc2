// Package wire is the authenticated frame layer of ICS: it turns a
// payload into a frame that a receiver can verify came from a cluster
// member holding the key, was meant for it and for its current
// incarnation, and is not a replay.
//
// It is pure in the house style (no goroutines, clock, global randomness
// or I/O), so the simulator and the real runtime run it unchanged. The ICS
// core carries one frame per stream message or datagram. Streams are
// already message-framed below this layer, so a frame has no outer length
// prefix; its payload length must match its size exactly.
//
// # Format, version 1
//
// All integers are big-endian.
//
//	offset size field
//	0      2    magic "CI"
//	2      1    version (1)
//	3      1    flags (reserved: 0 in version 1, anything else rejected)
//	4      4    key ID (which key of the keyring sealed it)
//	8      4    from node ID
//	12     4    to node ID
//	16     8    from boot (sender incarnation)
//	24     8    to boot (receiver incarnation the sender believes in; 0 = unknown)
//	32     8    seq (per sender→receiver incarnation pair, strictly increasing from 1)
//	40     4    payload length N (at most MaxPayload)
//	44     N    payload (opaque to this package)
//	44+N   32   HMAC-SHA256 over bytes [0, 44+N) with the key named by key ID
//
// Why each field is there:
//
//   - Magic and version let a receiver reject stray traffic and frames from
//     a future format at once, with a reason that says which. The flags
//     byte is reserved so that version 1 can grow an option without moving
//     anything; it must be 0 until a version gives it a meaning, so nobody
//     can come to depend on junk in it.
//   - Key ID names the key, so that keys can be rotated while frames are in
//     flight (see Keyring). It is under the MAC like everything else.
//   - From and To bind the frame to its sender and its receiver: a frame
//     captured on the way to one node cannot be redirected to another
//     (Header.Check), and a receiver knows who sent it without trusting
//     the transport's idea of the peer.
//   - FromBoot and ToBoot bind it to both incarnations. A node that
//     restarts gets a new boot, so frames recorded while it or its peer
//     ran before are refused (ToBoot by Header.Check, FromBoot because the
//     caller keys its ReplayWindow and its peer state by incarnation), and
//     sequence numbers can start again at 1 after every restart without
//     opening a replay hole. ToBoot 0 lets a node speak to a peer whose
//     incarnation it has not learnt yet; the caller allows it only for
//     hello-type payloads.
//   - Seq orders frames within one pair of incarnations; ReplayWindow
//     rejects duplicates and frames that are too old, while accepting the
//     reordering datagrams suffer.
//   - The payload length makes a truncated or extended frame detectable
//     before anything is hashed.
//   - The HMAC covers every byte before it, so no field can be changed
//     without the key. It is compared in constant time.
//
// Open checks in this order and returns the first failure: size, magic,
// version, flags, length, key ID, MAC, then the sender-side header rules
// (no node 0, From different from To, FromBoot not 0). It does not judge
// the header against local state; Header.Check and ReplayWindow are the
// helpers for that, and Reason maps every error to a DropReason for
// counting drops.
//
// # Key rotation
//
// Seal uses the ring's primary key; Open accepts any key in the ring. To
// rotate without downtime, add the new key on every node, then make it the
// primary on every node, then remove the old key everywhere. Each step
// keeps every pair of nodes able to talk; only a frame sealed with a
// removed key is refused (ErrUnknownKey).
//
// # Usage
//
//	kr, err := wire.NewKeyring(1, clusterKey) // clusterKey: at least 32 bytes
//	...
//	// Sender: seq counts from 1 for each peer incarnation.
//	h := wire.Header{From: 1, To: 2, FromBoot: myBoot, ToBoot: peerBoot, Seq: next}
//	frame, err := wire.Seal(buf[:0], kr, h, payload)
//	...
//	// Receiver:
//	h, payload, err := wire.Open(kr, frame)
//	if err == nil {
//		err = h.Check(self, selfBoot)
//	}
//	if err == nil && !windowFor(h.From, h.FromBoot).Accept(h.Seq) {
//		err = wire.ErrReplay
//	}
//	if err != nil {
//		drops[wire.Reason(err)]++
//		return
//	}
//	deliver(h, payload) // payload aliases frame: copy it to keep it
package wire
