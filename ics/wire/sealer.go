package wire

import (
	"crypto/cipher"
	"fmt"
	"sync/atomic"

	"github.com/clusterinfra/ci/node"
)

// Sealer seals the frames of one sender incarnation (From, FromBoot). It
// picks each frame's Salt and Counter so that no GMAC nonce is ever used
// twice under one subkey, which is the one thing GMAC cannot survive: a
// repeated nonce leaks the authentication key.
//
// Every node holds the same cluster key, so the nonce alone could not be
// kept unique across the cluster; instead every sender incarnation
// authenticates under its own subkey, derived from the ring key, From,
// FromBoot and a unique salt, and numbers its frames with a counter. The
// boot counter makes each start a new incarnation; the salt covers what
// it cannot (a state directory restored from a backup, two processes
// configured as the same node, two clusters sharing a key).
//
// Make one Sealer per sender incarnation, with a fresh salt; it follows
// the ring's primary key as it rotates. It is safe for concurrent use.
type Sealer struct {
	kr       *Keyring
	from     node.ID
	fromBoot node.Boot
	salt     [SaltSize]byte
	counter  atomic.Uint64 // the last counter used
	cur      atomic.Pointer[sealKey]
}

// sealKey is a Sealer's subkey under one ring key.
type sealKey struct {
	k *ringKey
	a cipher.AEAD
}

// NewSealer makes the sealer of sender incarnation from, fromBoot, with
// salt, which must never be given to another Sealer of the same sender
// incarnation under the same key: it need not be secret, only unique
// (ics takes the wall clock and, in daemons, crypto/rand). It fails with ErrBadHeader if
// from or fromBoot is 0. A nil kr panics.
func NewSealer(kr *Keyring, from node.ID, fromBoot node.Boot, salt [SaltSize]byte) (*Sealer, error) {
	if kr == nil {
		panic("wire: NewSealer with a nil *Keyring")
	}
	if from == 0 || fromBoot == 0 {
		return nil, fmt.Errorf("%w: sealer for node %d boot %d", ErrBadHeader, from, fromBoot)
	}
	return &Sealer{kr: kr, from: from, fromBoot: fromBoot, salt: salt}, nil
}

// From is the sender node the sealer seals for.
func (s *Sealer) From() node.ID { return s.from }

// FromBoot is the sender incarnation the sealer seals for.
func (s *Sealer) FromBoot() node.Boot { return s.fromBoot }

// Seal is the package's Seal with the ring's primary key, the sealer's
// salt and its next counter: h.From and h.FromBoot must be the sealer's
// (ErrBadHeader otherwise), and h.KeyID, h.Salt and h.Counter are
// overwritten. Every call uses a new counter, even one that fails after
// taking it. It fails with ErrExhausted once the counter has run out.
func (s *Sealer) Seal(dst []byte, h Header, payload []byte) ([]byte, error) {
	if h.From != s.from || h.FromBoot != s.fromBoot {
		return dst, fmt.Errorf("%w: sealer of n%d/%d asked to seal as n%d/%d", ErrBadHeader, s.from, s.fromBoot, h.From, h.FromBoot)
	}
	if err := sealCheck(h, payload); err != nil {
		return dst, err
	}
	k := s.kr.primaryKey()
	if k == nil {
		return dst, ErrEmptyKeyring
	}
	sk := s.cur.Load()
	if sk == nil || sk.k != k {
		// First frame, or the primary key changed: one derivation per
		// rotation. The subkey is cached in the ring too, so that a node
		// talking to itself through a shared ring opens without deriving.
		sk = &sealKey{k: k, a: k.aead(s.from, s.fromBoot, s.salt)}
		s.cur.Store(sk)
	}
	c := s.counter.Add(1)
	if c == 0 {
		s.counter.Store(^uint64(0)) // stay exhausted
		return dst, ErrExhausted
	}
	h.Salt, h.Counter = s.salt, c
	return seal(dst, sk.a, k.id, h, payload), nil
}
