package wire

import (
	"bytes"
	"errors"
	"testing"
)

var testSalt = [SaltSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

func mustSealer(t testing.TB, kr *Keyring, h Header, salt [SaltSize]byte) *Sealer {
	t.Helper()
	s, err := NewSealer(kr, h.From, h.FromBoot, salt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSealerNeverRepeatsANonce seals the same header and payload many
// times: every frame must carry a new counter (so a new GMAC nonce), the
// sealer's salt, and open.
func TestSealerNeverRepeatsANonce(t *testing.T) {
	kr := mustRing(t, 3, testKey(1))
	s := mustSealer(t, kr, testHeader, testSalt)
	seen := map[string]bool{}
	for i := range 100 {
		f, err := s.Seal(nil, testHeader, []byte("same"))
		if err != nil {
			t.Fatal(err)
		}
		h, p, err := Open(kr, f)
		if err != nil || string(p) != "same" {
			t.Fatalf("frame %d: Open = %q, %v", i, p, err)
		}
		if h.Counter != uint64(i+1) || h.Salt != testSalt || h.KeyID != 3 {
			t.Fatalf("frame %d: counter %d, salt %x, key %d", i, h.Counter, h.Salt, h.KeyID)
		}
		nonce := string(f[offNonce : offNonce+nonceSize])
		if seen[nonce] {
			t.Fatalf("frame %d repeats a nonce", i)
		}
		seen[nonce] = true
	}
}

// TestSealerSubkeys checks that the subkey depends on everything that
// names a sender incarnation: a frame whose salt, sender or sender boot
// is changed (and the key ID) fails its MAC even with the tag kept.
func TestSealerSubkeys(t *testing.T) {
	kr := mustRing(t, 3, testKey(1))
	f, err := mustSealer(t, kr, testHeader, testSalt).Seal(nil, testHeader, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{offFrom + 3, offFromBoot + 7, offSalt, offSalt + 15, offCounter + 7, offSeq} {
		g := bytes.Clone(f)
		g[off] ^= 1
		if _, _, err := Open(kr, g); err != ErrMAC {
			t.Errorf("byte %d changed: Open = %v, want %v", off, err, ErrMAC)
		}
	}
}

func TestSealerRefusesOtherSenders(t *testing.T) {
	kr := mustRing(t, 3, testKey(1))
	s := mustSealer(t, kr, testHeader, testSalt)
	for _, h := range []Header{
		{From: 9, To: 2, FromBoot: 3, Seq: 1},
		{From: 1, To: 2, FromBoot: 4, Seq: 1},
		{From: 1, To: 1, FromBoot: 3, Seq: 1},
	} {
		if _, err := s.Seal(nil, h, nil); !errors.Is(err, ErrBadHeader) {
			t.Errorf("Seal(%v) = %v, want %v", h, err, ErrBadHeader)
		}
	}
	if _, err := NewSealer(kr, 0, 1, testSalt); !errors.Is(err, ErrBadHeader) {
		t.Errorf("NewSealer for node 0: %v", err)
	}
	if _, err := NewSealer(kr, 1, 0, testSalt); !errors.Is(err, ErrBadHeader) {
		t.Errorf("NewSealer for boot 0: %v", err)
	}
}

func TestSealerExhausted(t *testing.T) {
	kr := mustRing(t, 3, testKey(1))
	s := mustSealer(t, kr, testHeader, testSalt)
	s.counter.Store(^uint64(0) - 1)
	if _, err := s.Seal(nil, testHeader, nil); err != nil {
		t.Fatalf("last counter: %v", err)
	}
	for range 2 {
		if _, err := s.Seal(nil, testHeader, nil); err != ErrExhausted {
			t.Fatalf("Seal after the last counter = %v, want %v", err, ErrExhausted)
		}
	}
}

// TestSealerFollowsRotation rotates the key under a sealer: frames follow
// the primary, old frames open until their key is removed.
func TestSealerFollowsRotation(t *testing.T) {
	kr := mustRing(t, 1, testKey(1))
	rx := mustRing(t, 1, testKey(1))
	s := mustSealer(t, kr, testHeader, testSalt)
	old, _ := s.Seal(nil, testHeader, []byte("old"))
	for _, r := range []*Keyring{kr, rx} {
		if err := r.Add(2, testKey(2)); err != nil {
			t.Fatal(err)
		}
		if err := r.SetPrimary(2); err != nil {
			t.Fatal(err)
		}
	}
	rotated, _ := s.Seal(nil, testHeader, []byte("new"))
	if h, _, err := Open(rx, rotated); err != nil || h.KeyID != 2 {
		t.Fatalf("after rotation: key %d, %v", h.KeyID, err)
	}
	if _, _, err := Open(rx, old); err != nil {
		t.Fatalf("old frame before removal: %v", err)
	}
	if err := rx.Remove(1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(rx, old); err != ErrUnknownKey {
		t.Fatalf("old frame after removal: %v, want %v", err, ErrUnknownKey)
	}
}

// TestSubkeyCache checks that only subkeys that verified a frame are
// cached, and that the cache stays bounded.
func TestSubkeyCache(t *testing.T) {
	kr := mustRing(t, 3, testKey(1))
	other := mustRing(t, 3, testKey(2)) // same ID, another key: a forger
	forged, _ := mustSealer(t, other, testHeader, testSalt).Seal(nil, testHeader, nil)
	if _, _, err := Open(kr, forged); err != ErrMAC {
		t.Fatalf("forged frame: %v", err)
	}
	k := kr.key(3)
	if _, ok := k.cachedAEAD(testHeader.From, testHeader.FromBoot, testSalt); ok {
		t.Fatal("a forged frame's subkey was cached")
	}
	good, _ := mustSealer(t, mustRing(t, 3, testKey(1)), testHeader, testSalt).Seal(nil, testHeader, nil)
	if _, _, err := Open(kr, good); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.cachedAEAD(testHeader.From, testHeader.FromBoot, testSalt); !ok {
		t.Fatal("an authentic frame's subkey was not cached")
	}
	var salt [SaltSize]byte
	for i := range maxSubkeys + 10 {
		salt[0], salt[1] = byte(i), byte(i>>8)
		k.aead(1, 3, salt)
	}
	if n := len(*k.subkeys.Load()); n > maxSubkeys {
		t.Fatalf("cache holds %d subkeys, bound %d", n, maxSubkeys)
	}
}
