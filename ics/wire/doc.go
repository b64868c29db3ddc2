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
// # Format, version 2
//
// All integers are big-endian.
//
//	offset size field
//	0      2    magic "CI"
//	2      1    version (2)
//	3      1    flags (reserved: 0, anything else rejected)
//	4      4    key ID (which key of the keyring sealed it)
//	8      4    from node ID
//	12     4    to node ID
//	16     8    from boot (sender incarnation)
//	24     8    to boot (receiver incarnation the sender believes in; 0 = unknown)
//	32     8    seq (per sender→receiver incarnation pair, strictly increasing from 1)
//	40     16   salt (per sender incarnation; selects the subkey)
//	56     8    counter (per sender incarnation, never repeated)
//	64     4    payload length N (at most MaxPayload)
//	68     N    payload (opaque to this package)
//	68+N   16   GMAC tag
//
// The tag is AES-256-GCM with an empty plaintext and bytes [0, 68+N) as
// additional data (that is, GMAC), under the subkey
//
//	HKDF-SHA256(secret = the key named by key ID, salt = salt,
//	            info = "clusterinfra ics wire v2 GMAC subkey" ‖ key ID(4) ‖ from(4) ‖ from boot(8))
//
// with the 12-byte nonce at offset 52: the last 4 bytes of the salt and
// the counter.
//
// Version 1 (HMAC-SHA256 over bytes [0, 44+N), a 44-byte header without
// salt and counter, a 32-byte tag) is refused with ErrVersion. It was
// replaced because HMAC-SHA256 bounded bulk transfers to about 1.6 GB/s
// per core and cost about 230 ns per small frame; GMAC with AES-NI and
// carry-less multiplication does about 12 GB/s and 50 ns (BenchmarkMAC).
//
// Why each field is there:
//
//   - Magic and version let a receiver reject stray traffic and frames from
//     another format at once, with a reason that says which. The flags
//     byte is reserved so that a version can grow an option without moving
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
//   - Salt and counter are GMAC's nonce, which must never repeat under one
//     key with different data (a repeat leaks the authentication key).
//     Every node holds the same cluster key, so no node could keep a
//     cluster-wide counter; instead each sender incarnation has its own
//     subkey (key, from, from boot and salt go into the derivation) and
//     numbers its frames with its own counter (Sealer). The salt covers
//     what the boot counter cannot: a restored state directory, two
//     processes configured as one node, two clusters sharing a key. A
//     resent frame is the same bytes, so it repeats its nonce only with
//     the same data, which is harmless. Neither field plays a part in
//     replay protection: Seq does that.
//   - The payload length makes a truncated or extended frame detectable
//     before anything is hashed.
//   - The tag covers every byte before it, so no field can be changed
//     without the key. GCM checks it in constant time.
//
// A receiver derives a sender incarnation's subkey once, on its first
// frame, and caches it in the Keyring only after a frame has verified
// under it, so forged salts cost a derivation each (a few microseconds,
// less than hashing one bulk chunk used to) but cannot fill the cache.
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
// Seal uses the ring's primary key (a Sealer derives its subkey anew when
// the primary changes); Open accepts any key in the ring. To
// rotate without downtime, add the new key on every node, then make it the
// primary on every node, then remove the old key everywhere. Each step
// keeps every pair of nodes able to talk; only a frame sealed with a
// removed key is refused (ErrUnknownKey).
//
// # Usage
//
//	kr, err := wire.NewKeyring(1, clusterKey) // clusterKey: at least 32 bytes
//	...
//	// Sender: one Sealer per incarnation, with a salt unique to it.
//	sealer, err := wire.NewSealer(kr, 1, myBoot, salt)
//	// seq counts from 1 for each peer incarnation.
//	h := wire.Header{From: 1, To: 2, FromBoot: myBoot, ToBoot: peerBoot, Seq: next}
//	frame, err := sealer.Seal(buf[:0], h, payload)
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
