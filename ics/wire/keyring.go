package wire

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/clusterinfra/ci/node"
)

// MinKeySize is the shortest key a Keyring accepts: 32 bytes, the size
// of the AES-256 subkeys derived from it. A shorter key would make the
// key, not the MAC, the cheapest thing to guess.
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

// ringKey is one key with the subkeys derived from it. It is immutable
// once made, apart from its cache, which is safe for concurrent use, so
// Seal and Open use it outside the ring's lock, and an operation that
// looked a key up just before a Remove still completes with it.
type ringKey struct {
	id     uint32
	secret []byte // our own copy
	// subkeys caches the GMAC states of the sender incarnations seen,
	// keyed by From, FromBoot and Salt. Deriving one costs an HKDF and an
	// AES key schedule (a few microseconds); looking one up, a map read.
	// The map is copied on write and read without a lock, because reads
	// (every frame) vastly outnumber writes (a new sender incarnation).
	subkeys atomic.Pointer[map[subkeyID]cipher.AEAD]
	mu      sync.Mutex // serializes writers of subkeys
}

// subkeyID names one sender incarnation's subkey under a ring key.
type subkeyID struct {
	from     node.ID
	fromBoot node.Boot
	salt     [SaltSize]byte
}

// maxSubkeys bounds a key's cache. Only subkeys that authenticated a
// frame are cached, so only cluster members can fill it, one entry per
// incarnation; when it is full it starts again empty, and the live
// senders' subkeys come back on their next frames.
const maxSubkeys = 4096

// subkeyInfo labels the HKDF output, so that the cluster key used for
// anything else can never yield the same bytes.
const subkeyInfo = "clusterinfra ics wire v2 GMAC subkey"

func newRingKey(id uint32, secret []byte) *ringKey {
	return &ringKey{id: id, secret: bytes.Clone(secret)}
}

// derive computes the AES-256-GCM state of the subkey for one sender
// incarnation: HKDF-SHA256 with the ring key as secret, the frame's salt
// as salt, and the key ID, From and FromBoot in the info.
func (k *ringKey) derive(from node.ID, fromBoot node.Boot, salt [SaltSize]byte) cipher.AEAD {
	var info [len(subkeyInfo) + 16]byte
	copy(info[:], subkeyInfo)
	binary.BigEndian.PutUint32(info[len(subkeyInfo):], k.id)
	binary.BigEndian.PutUint32(info[len(subkeyInfo)+4:], uint32(from))
	binary.BigEndian.PutUint64(info[len(subkeyInfo)+8:], uint64(fromBoot))
	sub, err := hkdf.Key(sha256.New, k.secret, salt[:], string(info[:]), 32)
	if err != nil {
		panic(fmt.Sprintf("wire: HKDF: %v", err)) // only a bug makes this fail
	}
	b, err := aes.NewCipher(sub)
	if err != nil {
		panic(fmt.Sprintf("wire: AES: %v", err))
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic(fmt.Sprintf("wire: GCM: %v", err))
	}
	return a
}

// cachedAEAD returns the cached subkey state, if any.
func (k *ringKey) cachedAEAD(from node.ID, fromBoot node.Boot, salt [SaltSize]byte) (cipher.AEAD, bool) {
	if m := k.subkeys.Load(); m != nil {
		if a := (*m)[subkeyID{from, fromBoot, salt}]; a != nil {
			return a, true
		}
	}
	return nil, false
}

// aead returns the subkey state, from the cache or derived (and cached).
func (k *ringKey) aead(from node.ID, fromBoot node.Boot, salt [SaltSize]byte) cipher.AEAD {
	if a, ok := k.cachedAEAD(from, fromBoot, salt); ok {
		return a
	}
	a := k.derive(from, fromBoot, salt)
	k.remember(from, fromBoot, salt, a)
	return a
}

// remember caches a subkey state; call it only for one that sealed or
// authenticated a frame.
func (k *ringKey) remember(from node.ID, fromBoot node.Boot, salt [SaltSize]byte, a cipher.AEAD) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var m map[subkeyID]cipher.AEAD
	if old := k.subkeys.Load(); old != nil && len(*old) < maxSubkeys {
		m = make(map[subkeyID]cipher.AEAD, len(*old)+1)
		maps.Copy(m, *old)
	} else {
		m = make(map[subkeyID]cipher.AEAD, 1)
	}
	m[subkeyID{from, fromBoot, salt}] = a
	k.subkeys.Store(&m)
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
		if subtle.ConstantTimeCompare(old.secret, key) == 1 {
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
