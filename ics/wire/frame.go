package wire

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/clusterinfra/ci/node"
)

// Version is the frame format version this package writes and the only
// one it reads. A change to the layout or to what the MAC covers gets a
// new version, so an old node rejects a new frame loudly (ErrVersion)
// instead of misreading it. Version 2 replaced version 1's HMAC-SHA256
// with GMAC under per-sender subkeys (see doc.go for why).
const Version = 2

// Sizes of the fixed parts of a frame.
const (
	// HeaderSize is the number of bytes before the payload.
	HeaderSize = 68
	// SaltSize is the size of the sender's random salt (Header.Salt).
	SaltSize = 16
	// MACSize is the size of the GMAC tag after the payload.
	MACSize = 16
	// Overhead is what a frame adds to its payload.
	Overhead = HeaderSize + MACSize
)

// nonceSize is the GCM nonce: the last 4 bytes of the salt and the
// 8-byte counter, which lie next to each other in the header, so that
// the nonce is read from the frame in place.
const nonceSize = 12

// MaxPayload is the largest payload a frame may carry: 64 MiB of bulk data
// plus 64 KiB for the message around it. It bounds what one frame can make
// a receiver buffer and hash. It is a constant, not a variable, so that
// sender and receiver cannot come to disagree about it at run time. Open
// checks it before it hashes anything.
const MaxPayload = 64<<20 + 64<<10

// magic opens every frame. It lets a receiver tell a frame from stray
// traffic (another protocol on the port, a misdirected stream) before it
// looks anything up.
const magic0, magic1 = 'C', 'I'

// Field offsets, in the order of the format table in doc.go.
const (
	offMagic    = 0
	offVersion  = 2
	offFlags    = 3
	offKeyID    = 4
	offFrom     = 8
	offTo       = 12
	offFromBoot = 16
	offToBoot   = 24
	offSeq      = 32
	offSalt     = 40
	offCounter  = 56
	offLength   = 64
	// offNonce is where the GCM nonce starts: salt[12:16] ‖ counter.
	offNonce = offCounter - 4
)

// Errors returned by Seal, Open and Header.Check. Open's errors come from
// unauthenticated input, so they carry no detail and cost no allocation:
// a flood of garbage must not also be a flood of garbage collection. Use
// Reason to turn any of them into a DropReason for counting.
var (
	ErrShort      = errors.New("wire: frame shorter than the fixed overhead")
	ErrMagic      = errors.New("wire: bad magic (not a frame)")
	ErrVersion    = errors.New("wire: unsupported frame version")
	ErrFlags      = errors.New("wire: reserved flags set")
	ErrLength     = errors.New("wire: payload length does not match the frame size")
	ErrUnknownKey = errors.New("wire: unknown key ID")
	ErrMAC        = errors.New("wire: MAC mismatch")
	ErrBadHeader  = errors.New("wire: invalid header")
	ErrTooLarge   = errors.New("wire: payload too large")
	ErrNotForMe   = errors.New("wire: frame addressed to another node")
	ErrStaleBoot  = errors.New("wire: frame addressed to another incarnation")
	// ErrReplay is not returned by this package (ReplayWindow.Accept
	// returns a bool); it exists so that a caller can report a replay
	// drop through the same error and Reason path as every other drop.
	ErrReplay = errors.New("wire: replayed or too old sequence number")
	// ErrExhausted is returned by Sealer.Seal after 2^64-1 frames: its
	// counter would wrap and repeat a nonce.
	ErrExhausted = errors.New("wire: sealer counter exhausted")
)

// Header is the authenticated envelope of a frame: who sealed it, for
// whom, for which incarnations, in which order and with which key.
// Everything in it is covered by the MAC.
type Header struct {
	// KeyID names the keyring key that sealed the frame. Seal sets it to
	// the ring's primary; Open reports the key that verified the frame.
	KeyID uint32
	// From is the sending node and To the node the sender means to reach.
	// Binding both stops a frame from being redirected to another node.
	From, To node.ID
	// FromBoot is the sender's incarnation and ToBoot the receiver's
	// incarnation as the sender last knew it (0: not known yet, which the
	// caller allows only for hello-type payloads). Binding both stops a
	// frame from being replayed from an old incarnation into a new one.
	FromBoot, ToBoot node.Boot
	// Seq numbers frames from one sender incarnation to one receiver
	// incarnation, strictly increasing from 1. ReplayWindow never accepts
	// 0, so a caller that sends 0 (in a hello, say) must not pass such
	// frames through a window.
	Seq uint64
	// Salt and Counter make the MAC's nonce. Salt is random per sender
	// incarnation and selects, with KeyID, From and FromBoot, the subkey
	// the frame is authenticated with; Counter numbers the frames sealed
	// under that subkey and never repeats. A Sealer sets both; Open
	// reports them. They play no part in replay protection (Seq does).
	Salt    [SaltSize]byte
	Counter uint64
}

// String formats a header for traces: "k1 n1/2→n3/4 #5".
func (h Header) String() string {
	return fmt.Sprintf("k%d %v/%d→%v/%d #%d", h.KeyID, h.From, h.FromBoot, h.To, h.ToBoot, h.Seq)
}

// problem says what makes h unfit to be sent, or "" if nothing does.
// Seal and Open both apply it: what is checked when sending is checked
// again on receipt, so a peer with a bug (or a stolen key used carelessly)
// is caught at the door rather than deep in the core. It deliberately does
// not check node.MaxID: the wire format carries 32 bits, and cluster
// membership (which the caller checks) is the stricter test anyway.
func (h Header) problem() string {
	switch {
	case h.From == 0:
		return "from node is 0"
	case h.To == 0:
		return "to node is 0"
	case h.From == h.To:
		return "from and to are the same node"
	case h.FromBoot == 0:
		return "from boot is 0"
	}
	return ""
}

// Check applies the receiver's addressing policy to a header that Open
// accepted: the frame must be meant for node self, and for incarnation
// selfBoot unless the sender did not know it yet (ToBoot 0). Whether a
// ToBoot of 0 is acceptable for this particular payload is for the caller
// to decide; Check only refuses the frames that are certainly misdirected
// or addressed to an earlier (or later) incarnation of this node.
func (h Header) Check(self node.ID, selfBoot node.Boot) error {
	if h.To != self {
		return ErrNotForMe
	}
	if h.ToBoot != 0 && h.ToBoot != selfBoot {
		return ErrStaleBoot
	}
	return nil
}

// Seal appends to dst a frame carrying payload with header h, sealed with
// kr's primary key (h.KeyID is overwritten with that key's ID), and
// returns the extended slice. When dst has room for Overhead+len(payload)
// more bytes it does not allocate.
//
// Seal takes h.Salt and h.Counter as given: the caller must never seal
// two different frames with the same key, From, FromBoot, Salt and
// Counter, or GMAC's nonce repeats and its key leaks. Use a Sealer, which
// chooses them so; Seal is for tests and for re-sealing a frame exactly.
//
// payload may alias dst, including its spare capacity: the payload is
// copied into place before anything else is written, so a caller can
// build the payload in place behind HeaderSize reserved bytes.
//
// It fails with ErrTooLarge if payload is longer than MaxPayload, with
// ErrBadHeader if h names node 0, the same node at both ends, or boot 0
// for the sender, and with ErrEmptyKeyring if kr has no key. On error dst
// is returned unchanged. A nil kr is a programming error and panics.
func Seal(dst []byte, kr *Keyring, h Header, payload []byte) ([]byte, error) {
	if err := sealCheck(h, payload); err != nil {
		return dst, err
	}
	k := kr.primaryKey()
	if k == nil {
		return dst, ErrEmptyKeyring
	}
	return seal(dst, k.aead(h.From, h.FromBoot, h.Salt), k.id, h, payload), nil
}

// sealCheck applies Seal's checks of its arguments.
func sealCheck(h Header, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), MaxPayload)
	}
	if p := h.problem(); p != "" {
		return fmt.Errorf("%w: %s", ErrBadHeader, p)
	}
	return nil
}

// seal writes the frame with subkey a, which must be the one of key id,
// h.From, h.FromBoot and h.Salt.
func seal(dst []byte, a cipher.AEAD, id uint32, h Header, payload []byte) []byte {
	h.KeyID = id
	start := len(dst)
	end := start + HeaderSize + len(payload)
	out := slices.Grow(dst, Overhead+len(payload))[:end]
	// Payload first: if it aliases out, writing the header could
	// otherwise overwrite it before it is copied.
	if len(payload) > 0 && &out[start+HeaderSize] != &payload[0] {
		// A payload built in place needs no copy.
		copy(out[start:end][HeaderSize:], payload)
	}
	putHeader(out[start:start+HeaderSize], h, uint32(len(payload)))
	// GMAC: GCM with nothing to encrypt, the whole frame so far as
	// additional data. The tag is appended in place.
	nonce := out[start+offNonce : start+offNonce+nonceSize]
	tag := a.Seal(out[end:end], nonce, nil, out[start:end])
	if len(tag) != MACSize || &tag[0] != &out[:end+1][end] {
		panic(fmt.Sprintf("wire: GMAC wrote %d bytes out of place", len(tag)))
	}
	return out[:end+MACSize]
}

// putHeader writes the fixed header into b, which is HeaderSize long.
func putHeader(b []byte, h Header, n uint32) {
	_ = b[HeaderSize-1] // one bounds check for the stores below
	b[offMagic] = magic0
	b[offMagic+1] = magic1
	b[offVersion] = Version
	b[offFlags] = 0
	binary.BigEndian.PutUint32(b[offKeyID:], h.KeyID)
	binary.BigEndian.PutUint32(b[offFrom:], uint32(h.From))
	binary.BigEndian.PutUint32(b[offTo:], uint32(h.To))
	binary.BigEndian.PutUint64(b[offFromBoot:], uint64(h.FromBoot))
	binary.BigEndian.PutUint64(b[offToBoot:], uint64(h.ToBoot))
	binary.BigEndian.PutUint64(b[offSeq:], h.Seq)
	copy(b[offSalt:offSalt+SaltSize], h.Salt[:])
	binary.BigEndian.PutUint64(b[offCounter:], h.Counter)
	binary.BigEndian.PutUint32(b[offLength:], n)
}

// Open verifies frame with kr and returns its header and payload. The
// payload is a sub-slice of frame, not a copy (its capacity ends where the
// payload does, so appending to it never overwrites the MAC): the caller
// must copy it if it keeps it beyond the life of frame's buffer.
//
// Checks run in this order, cheapest and least trusting first, and the
// first failure is returned: length at least Overhead (ErrShort), magic
// (ErrMagic), version (ErrVersion), reserved flags zero (ErrFlags),
// payload length equal to what the frame holds and at most MaxPayload
// (ErrLength), key ID in kr (ErrUnknownKey), MAC in constant time (ErrMAC),
// and last, on an authentic frame, the sender-side header rules that Seal
// enforces (ErrBadHeader). Nothing is hashed before the length is known
// to be sane, and no error allocates.
//
// Open does not judge the header against local state: that the frame is
// for this node and incarnation (Header.Check) and not a replay
// (ReplayWindow) is the caller's policy. A nil kr panics.
func Open(kr *Keyring, frame []byte) (Header, []byte, error) {
	if len(frame) < Overhead {
		return Header{}, nil, ErrShort
	}
	if frame[offMagic] != magic0 || frame[offMagic+1] != magic1 {
		return Header{}, nil, ErrMagic
	}
	if frame[offVersion] != Version {
		return Header{}, nil, ErrVersion
	}
	if frame[offFlags] != 0 {
		return Header{}, nil, ErrFlags
	}
	// Compare in uint64 so that neither a huge length field nor a huge
	// frame can overflow int on a 32-bit platform.
	n := binary.BigEndian.Uint32(frame[offLength:])
	if n > MaxPayload || uint64(len(frame)) != uint64(Overhead)+uint64(n) {
		return Header{}, nil, ErrLength
	}
	h := Header{
		KeyID:    binary.BigEndian.Uint32(frame[offKeyID:]),
		From:     node.ID(binary.BigEndian.Uint32(frame[offFrom:])),
		To:       node.ID(binary.BigEndian.Uint32(frame[offTo:])),
		FromBoot: node.Boot(binary.BigEndian.Uint64(frame[offFromBoot:])),
		ToBoot:   node.Boot(binary.BigEndian.Uint64(frame[offToBoot:])),
		Seq:      binary.BigEndian.Uint64(frame[offSeq:]),
		Counter:  binary.BigEndian.Uint64(frame[offCounter:]),
	}
	copy(h.Salt[:], frame[offSalt:offSalt+SaltSize])
	k := kr.key(h.KeyID)
	if k == nil {
		return Header{}, nil, ErrUnknownKey
	}
	end := HeaderSize + int(n)
	// A subkey seen before comes from the key's cache; a new one is
	// derived here but cached only once a frame has proved it authentic,
	// so forged salts cannot fill the cache.
	a, cached := k.cachedAEAD(h.From, h.FromBoot, h.Salt)
	if a == nil {
		a = k.derive(h.From, h.FromBoot, h.Salt)
	}
	// GCM's Open checks the tag in constant time.
	if _, err := a.Open(nil, frame[offNonce:offNonce+nonceSize], frame[end:], frame[:end]); err != nil {
		return Header{}, nil, ErrMAC
	}
	if !cached {
		k.remember(h.From, h.FromBoot, h.Salt, a)
	}
	if h.problem() != "" {
		return Header{}, nil, ErrBadHeader
	}
	return h, frame[HeaderSize:end:end], nil
}
