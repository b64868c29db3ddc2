package wire

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKeyringOperations(t *testing.T) {
	kr := &Keyring{}
	step := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", what, err, want)
		}
	}
	state := func(primary uint32, ids ...uint32) {
		t.Helper()
		if got := kr.Primary(); got != primary {
			t.Errorf("Primary = %d, want %d", got, primary)
		}
		if diff := cmp.Diff(ids, kr.IDs()); diff != "" {
			t.Errorf("IDs (-want +got):\n%s", diff)
		}
	}

	state(0)
	step("Add 31-byte key", kr.Add(5, testKey(1)[:MinKeySize-1]), ErrWeakKey)
	step("Add nil key", kr.Add(5, nil), ErrWeakKey)
	state(0)
	step("SetPrimary on empty ring", kr.SetPrimary(5), ErrUnknownKey)
	step("Remove on empty ring", kr.Remove(5), ErrUnknownKey)

	step("Add 5 to empty ring", kr.Add(5, testKey(5)), nil)
	state(5, 5) // the first key becomes primary
	step("Add 3", kr.Add(3, testKey(3)), nil)
	step("Add 900", kr.Add(900, append(testKey(9), testKey(9)...)), nil) // long keys are fine
	step("Add 0", kr.Add(0, testKey(0)), nil)
	state(5, 0, 3, 5, 900)
	step("Add 3 again, same key", kr.Add(3, testKey(3)), nil)
	step("Add 3 again, other key", kr.Add(3, testKey(4)), ErrDuplicateKey)
	step("Remove primary", kr.Remove(5), ErrRemovePrimary)
	step("Remove unknown", kr.Remove(4), ErrUnknownKey)
	step("SetPrimary unknown", kr.SetPrimary(4), ErrUnknownKey)
	step("SetPrimary 3", kr.SetPrimary(3), nil)
	step("Remove 5", kr.Remove(5), nil)
	step("Remove 0", kr.Remove(0), nil)
	state(3, 3, 900)
}

func TestKeyringCopiesKey(t *testing.T) {
	key := testKey(1)
	kr := mustRing(t, 1, key)
	frame := mustSeal(t, kr, testHeader, []byte("x"))
	key[0] ^= 0xff // the caller reuses its buffer
	if _, _, err := Open(kr, frame); err != nil {
		t.Fatalf("Open after the caller changed its key buffer: %v", err)
	}
	if err := kr.Add(1, testKey(1)); err != nil {
		t.Errorf("re-adding the original key: %v", err)
	}
}

func TestNewKeyringWeakKey(t *testing.T) {
	if kr, err := NewKeyring(1, make([]byte, 16)); !errors.Is(err, ErrWeakKey) || kr != nil {
		t.Fatalf("NewKeyring with 16 bytes = %v, %v; want nil, %v", kr, err, ErrWeakKey)
	}
}

// TestRotation walks the rotation procedure between two nodes and checks
// after each step that both directions work, and that a frame recorded
// under the old key dies with it.
func TestRotation(t *testing.T) {
	const oldID, newID = 1, 2
	oldKey, newKey := testKey('o'), testKey('n')
	ring := map[string]*Keyring{
		"n1": mustRing(t, oldID, oldKey),
		"n2": mustRing(t, oldID, oldKey),
	}
	h12 := Header{From: 1, To: 2, FromBoot: 1, ToBoot: 1, Seq: 1}
	h21 := Header{From: 2, To: 1, FromBoot: 1, ToBoot: 1, Seq: 1}
	recorded := mustSeal(t, ring["n1"], h12, []byte("recorded under the old key"))

	// talk seals a frame each way and checks it opens, under the key
	// each sender's primary names.
	talk := func(step string, key12, key21 uint32) {
		t.Helper()
		for _, d := range []struct {
			from, to string
			h        Header
			key      uint32
		}{{"n1", "n2", h12, key12}, {"n2", "n1", h21, key21}} {
			frame := mustSeal(t, ring[d.from], d.h, []byte(step))
			h, p, err := Open(ring[d.to], frame)
			if err != nil {
				t.Fatalf("%s: %s→%s: %v", step, d.from, d.to, err)
			}
			if h.KeyID != d.key || string(p) != step {
				t.Fatalf("%s: %s→%s: key %d payload %q, want key %d", step, d.from, d.to, h.KeyID, p, d.key)
			}
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	talk("start", oldID, oldID)

	must(ring["n1"].Add(newID, newKey))
	talk("1a: n1 has the new key", oldID, oldID)
	must(ring["n2"].Add(newID, newKey))
	talk("1b: everyone has the new key", oldID, oldID)

	must(ring["n2"].SetPrimary(newID))
	talk("2a: n2 seals with the new key", oldID, newID)
	must(ring["n1"].SetPrimary(newID))
	talk("2b: everyone seals with the new key", newID, newID)

	if _, _, err := Open(ring["n2"], recorded); err != nil {
		t.Fatalf("old frame before the old key is removed: %v", err)
	}
	must(ring["n1"].Remove(oldID))
	must(ring["n2"].Remove(oldID))
	talk("3: the old key is gone", newID, newID)
	if _, _, err := Open(ring["n2"], recorded); err != ErrUnknownKey {
		t.Fatalf("old frame after the old key is removed: %v, want %v", err, ErrUnknownKey)
	}
}

// TestRotationOutOfOrder shows why the new key must reach every node
// before any node seals with it.
func TestRotationOutOfOrder(t *testing.T) {
	n1 := mustRing(t, 1, testKey('o'))
	n2 := mustRing(t, 1, testKey('o'))
	if err := n1.Add(2, testKey('n')); err != nil {
		t.Fatal(err)
	}
	if err := n1.SetPrimary(2); err != nil {
		t.Fatal(err)
	}
	frame := mustSeal(t, n1, testHeader, nil)
	if _, _, err := Open(n2, frame); err != ErrUnknownKey {
		t.Fatalf("Open at a node without the new key = %v, want %v", err, ErrUnknownKey)
	}
}

// TestKeyringConcurrent seals and opens from several goroutines while
// another rotates keys; run it with -race. Keys 1 and 2 both stay in the
// ring throughout, so every frame must open.
func TestKeyringConcurrent(t *testing.T) {
	kr := mustRing(t, 1, testKey(1))
	if err := kr.Add(2, testKey(2)); err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 4, 500
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range rounds {
			id := uint32(3 + i%5)
			if err := kr.Add(id, testKey(byte(id))); err != nil {
				errs <- err
				return
			}
			if err := kr.SetPrimary(uint32(1 + i%2)); err != nil {
				errs <- err
				return
			}
			if err := kr.Remove(id); err != nil {
				errs <- err
				return
			}
			_ = kr.IDs()
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for i := range rounds {
				payload := fmt.Appendf(nil, "w%d r%d", w, i)
				var err error
				buf, err = Seal(buf[:0], kr, testHeader, payload)
				if err != nil {
					errs <- err
					return
				}
				if _, p, err := Open(kr, buf); err != nil || string(p) != string(payload) {
					errs <- fmt.Errorf("worker %d round %d: %q, %v", w, i, p, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
