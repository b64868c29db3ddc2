package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"maps"
	"slices"
	"sync"
)

// MinKeySize is the shortest key a Keyring accepts: 32 bytes, the
// HMAC-SHA256 output size. A shorter key would make the key, not the MAC,
// the cheapest thing to guess.
const MinKeySize = 32

// Keyring errors.
var (
	ErrWeakKey       = errors.New("wire: key shorter than MinKeySize")
	ErrDuplicateKey  = errors.New("wire: key ID already holds a different key")
	ErrRemovePrimary = errors.New("wire: cannot remove the primary key")
	ErrEmptyKeyring  = errors.New("wire: keyring has no key")
)

// Keyring holds the cluster's frame keys by ID. Seal uses the primary
// key; Open accepts any key in the ring. That split is what allows key
// rotation without downtime:
//
//  1. Add the new key on every node. Nothing changes on the wire yet, but
//     every node can now open frames sealed with it.
//  2. SetPrimary to the new key on every node, in any order. Frames sealed
//     with either key open everywhere throughout.
//  3. Remove the old key on every node. From then on a frame sealed with
//     it, or recorded earlier and replayed, fails with ErrUnknownKey.
//
// Doing step 2 on a node before step 1 has reached all of them makes that
// node's frames fail with ErrUnknownKey at the nodes that lag.
//
// A Keyring is safe for concurrent use. The zero Keyring is an empty ring:
// Seal fails with ErrEmptyKeyring, Open with ErrUnknownKey, and the first
// key added becomes the primary. A Keyring must not be copied after first
// use.
type Keyring struct {
	mu      sync.RWMutex
	keys    map[uint32]*ringKey
	primary *ringKey // nil only while keys is empty
}

// ringKey is one key with its precomputed HMAC states. It is immutable
// once made (the pool is safe for concurrent use), so Seal and Open use it
// outside the ring's lock, and an operation that looked a key up just
// before a Remove still completes with it.
type ringKey struct {
	id     uint32
	secret []byte // our own copy
	// macs holds ready HMAC states for this key. Creating one hashes the
	// key and then records the keyed inner and outer SHA-256 states
	// (crypto/hmac does that on the first Reset), so reusing it costs a
	// state restore instead of two extra compression-function calls and
	// an allocation per frame. A pool rather than one state under a mutex
	// lets frames to different peers be sealed in parallel; see
	// BenchmarkMACState for the measurements.
	macs sync.Pool // of *macState
}

// macState is a reusable HMAC with room for its output, so that computing
// a tag allocates nothing.
type macState struct {
	h   hash.Hash
	out [MACSize]byte
}

func newRingKey(id uint32, secret []byte) *ringKey {
	k := &ringKey{id: id, secret: bytes.Clone(secret)}
	k.macs.New = func() any {
		m := &macState{h: hmac.New(sha256.New, k.secret)}
		m.h.Reset() // precompute the keyed states now, not on first use
		return m
	}
	return k
}

// sum writes the HMAC-SHA256 of data under k into mac.
func (k *ringKey) sum(data []byte, mac *[MACSize]byte) {
	m := k.macs.Get().(*macState)
	m.h.Reset()
	m.h.Write(data)
	if got := m.h.Sum(m.out[:0]); len(got) != MACSize || &got[0] != &m.out[0] {
		panic("wire: HMAC-SHA256 did not produce a MACSize tag in place")
	}
	*mac = m.out
	k.macs.Put(m)
}

// NewKeyring makes a ring holding key under id, as its primary key. It
// fails with ErrWeakKey if key is shorter than MinKeySize. The ring keeps
// its own copy of key.
func NewKeyring(id uint32, key []byte) (*Keyring, error) {
	kr := &Keyring{}
	if err := kr.Add(id, key); err != nil {
		return nil, err
	}
	return kr, nil
}

// Add puts key into the ring under id, so that Open accepts frames sealed
// with it. It does not change the primary, unless the ring was empty. The
// ring keeps its own copy of key.
//
// Adding the same key under the same ID again is a no-op, so that a
// configuration can be re-applied; a different key under an ID already in
// use fails with ErrDuplicateKey, because silently replacing it would make
// every frame in flight under the old key fail its MAC. A key shorter
// than MinKeySize fails with ErrWeakKey.
func (kr *Keyring) Add(id uint32, key []byte) error {
	if len(key) < MinKeySize {
		return fmt.Errorf("%w: %d bytes, need %d", ErrWeakKey, len(key), MinKeySize)
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if old, ok := kr.keys[id]; ok {
		if hmac.Equal(old.secret, key) {
			return nil
		}
		return fmt.Errorf("%w: %d", ErrDuplicateKey, id)
	}
	if kr.keys == nil {
		kr.keys = make(map[uint32]*ringKey)
	}
	k := newRingKey(id, key)
	kr.keys[id] = k
	if kr.primary == nil {
		kr.primary = k
	}
	kr.checkLocked()
	return nil
}

// SetPrimary makes key id the one Seal uses. It fails with ErrUnknownKey
// if id is not in the ring. Only do this once every peer has the key
// (see the rotation steps on Keyring).
func (kr *Keyring) SetPrimary(id uint32) error {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	k, ok := kr.keys[id]
	if !ok {
		return fmt.Errorf("%w: %d", ErrUnknownKey, id)
	}
	kr.primary = k
	kr.checkLocked()
	return nil
}

// Remove takes key id out of the ring: frames sealed with it no longer
// open. It fails with ErrUnknownKey if id is not in the ring and with
// ErrRemovePrimary if id is the primary (make another key primary first),
// because a ring must always be able to seal.
func (kr *Keyring) Remove(id uint32) error {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	k, ok := kr.keys[id]
	if !ok {
		return fmt.Errorf("%w: %d", ErrUnknownKey, id)
	}
	if k == kr.primary {
		return fmt.Errorf("%w: %d", ErrRemovePrimary, id)
	}
	delete(kr.keys, id)
	kr.checkLocked()
	return nil
}

// Primary is the ID of the key Seal uses, or 0 if the ring is empty.
func (kr *Keyring) Primary() uint32 {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	if kr.primary == nil {
		return 0
	}
	return kr.primary.id
}

// IDs lists the IDs of the keys in the ring, in increasing order.
func (kr *Keyring) IDs() []uint32 {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	return slices.Sorted(maps.Keys(kr.keys))
}

func (kr *Keyring) primaryKey() *ringKey {
	if kr == nil {
		panic("wire: Seal with a nil *Keyring")
	}
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	return kr.primary
}

func (kr *Keyring) key(id uint32) *ringKey {
	if kr == nil {
		panic("wire: Open with a nil *Keyring")
	}
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	return kr.keys[id]
}

// checkLocked asserts the ring's invariant after every change: the
// primary is nil exactly when the ring is empty, and otherwise is the key
// stored under its own ID.
func (kr *Keyring) checkLocked() {
	if (kr.primary == nil) != (len(kr.keys) == 0) {
		panic(fmt.Sprintf("wire: keyring has %d keys but primary %p", len(kr.keys), kr.primary))
	}
	if kr.primary != nil && kr.keys[kr.primary.id] != kr.primary {
		panic(fmt.Sprintf("wire: keyring primary %d is not in the ring", kr.primary.id))
	}
}
