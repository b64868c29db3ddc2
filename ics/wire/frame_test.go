package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterinfra/ci/node"
)

// testKey is a deterministic key of MinKeySize bytes, different per b.
func testKey(b byte) []byte {
	k := make([]byte, MinKeySize)
	for i := range k {
		k[i] = b ^ byte(i*37)
	}
	return k
}

func mustRing(t testing.TB, id uint32, key []byte) *Keyring {
	t.Helper()
	kr, err := NewKeyring(id, key)
	if err != nil {
		t.Fatalf("NewKeyring(%d): %v", id, err)
	}
	return kr
}

// mustSeal seals with Seal, so with h's own Salt and Counter: tests
// seal each frame once, or the same frame again.
func mustSeal(t testing.TB, kr *Keyring, h Header, payload []byte) []byte {
	t.Helper()
	f, err := Seal(nil, kr, h, payload)
	if err != nil {
		t.Fatalf("Seal(%v): %v", h, err)
	}
	return f
}

// testHeader is a valid header for node 1 boot 3 to node 2 boot 5.
var testHeader = Header{From: 1, To: 2, FromBoot: 3, ToBoot: 5, Seq: 42}

func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}

func TestRoundTrip(t *testing.T) {
	kr := mustRing(t, 9, testKey(1))
	for _, n := range []int{0, 1, 64, 64 << 10, 1 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			payload := pattern(n)
			prefix := []byte("prefix")
			frame, err := Seal(bytes.Clone(prefix), kr, testHeader, payload)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(frame[:len(prefix)], prefix) {
				t.Fatalf("Seal changed dst's existing bytes: %q", frame[:len(prefix)])
			}
			frame = frame[len(prefix):]
			if len(frame) != Overhead+n {
				t.Fatalf("frame is %d bytes, want %d", len(frame), Overhead+n)
			}
			h, got, err := Open(kr, frame)
			if err != nil {
				t.Fatal(err)
			}
			want := testHeader
			want.KeyID = 9
			if diff := cmp.Diff(want, h); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if !bytes.Equal(got, payload) {
				t.Errorf("payload differs")
			}
			if cap(got) != len(got) {
				t.Errorf("payload capacity %d reaches past its length %d into the MAC", cap(got), len(got))
			}
			if n > 0 && &got[0] != &frame[HeaderSize] {
				t.Errorf("payload is a copy, want a sub-slice of the frame")
			}
		})
	}
}

// TestGoldenFrame pins the byte layout: a change here is a format change
// and needs a new Version.
func TestGoldenFrame(t *testing.T) {
	kr := mustRing(t, 0x01020304, testKey(1))
	h := Header{From: 0x0a0b0c0d, To: 2, FromBoot: 0x1122334455667788, ToBoot: 5, Seq: 0x0102030405060708,
		Salt:    [SaltSize]byte{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf},
		Counter: 0x9192939495969798}
	frame := mustSeal(t, kr, h, []byte("hi"))
	wantHeader := []byte{
		'C', 'I', 2, 0,
		0x01, 0x02, 0x03, 0x04,
		0x0a, 0x0b, 0x0c, 0x0d,
		0, 0, 0, 2,
		0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
		0, 0, 0, 0, 0, 0, 0, 5,
		1, 2, 3, 4, 5, 6, 7, 8,
		0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
		0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
		0, 0, 0, 2,
		'h', 'i',
	}
	if diff := cmp.Diff(wantHeader, frame[:HeaderSize+2]); diff != "" {
		t.Errorf("layout (-want +got):\n%s", diff)
	}
	if got := fmt.Sprintf("%x", frame[HeaderSize+2:]); got != referenceMAC(testKey(1), frame[:HeaderSize+2]) {
		t.Errorf("MAC %s differs from the reference GMAC", got)
	}
	// And a constant, so that the reference cannot drift with the code.
	if got, want := fmt.Sprintf("%x", frame[HeaderSize+2:]), goldenMAC; got != want {
		t.Errorf("MAC %s, want %s", got, want)
	}
}

func TestSealKeepsPayloadWhenAliased(t *testing.T) {
	kr := mustRing(t, 1, testKey(1))
	want := mustSeal(t, kr, testHeader, []byte("payload built in place"))
	cases := map[string]func(buf []byte) (dst, payload []byte){
		// The payload written behind a reserved header, as a caller that
		// avoids a copy would do.
		"behind-header": func(buf []byte) ([]byte, []byte) {
			n := copy(buf[HeaderSize:], "payload built in place")
			return buf[:0], buf[HeaderSize : HeaderSize+n]
		},
		// The payload at the very start of dst's spare capacity, where the
		// header goes.
		"at-header": func(buf []byte) ([]byte, []byte) {
			n := copy(buf, "payload built in place")
			return buf[:0], buf[:n]
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			dst, payload := setup(make([]byte, 256))
			got, err := Seal(dst, kr, testHeader, payload)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("aliased Seal gave\n%x\nwant\n%x", got, want)
			}
		})
	}
}

// TestEveryBitFlipRejected flips each bit of a small frame in turn and
// checks that Open refuses it, for the reason the field calls for.
func TestEveryBitFlipRejected(t *testing.T) {
	kr := mustRing(t, 7, testKey(1))
	frame := mustSeal(t, kr, testHeader, []byte("eight by"))
	wantErr := func(off int) error {
		switch {
		case off < offVersion:
			return ErrMagic
		case off == offVersion:
			return ErrVersion
		case off == offFlags:
			return ErrFlags
		case off >= offKeyID && off < offFrom:
			return ErrUnknownKey // the ring holds only key 7
		case off >= offLength && off < HeaderSize:
			return ErrLength
		}
		return ErrMAC
	}
	for bit := range len(frame) * 8 {
		f := bytes.Clone(frame)
		f[bit/8] ^= 1 << (bit % 8)
		_, _, err := Open(kr, f)
		if want := wantErr(bit / 8); err != want {
			t.Errorf("bit %d (byte %d): Open = %v, want %v", bit, bit/8, err, want)
		}
	}
}

func TestTruncationAndExtensionRejected(t *testing.T) {
	kr := mustRing(t, 7, testKey(1))
	frame := mustSeal(t, kr, testHeader, []byte("some payload"))
	for n := range len(frame) {
		_, _, err := Open(kr, frame[:n])
		want := ErrLength
		if n < Overhead {
			want = ErrShort
		}
		if err != want {
			t.Errorf("truncated to %d bytes: Open = %v, want %v", n, err, want)
		}
	}
	_, _, err := Open(kr, append(bytes.Clone(frame), 0))
	if err != ErrLength {
		t.Errorf("extended by one byte: Open = %v, want %v", err, ErrLength)
	}
}

func TestOpenLengthField(t *testing.T) {
	kr := mustRing(t, 7, testKey(1))
	frame := mustSeal(t, kr, testHeader, nil)
	for _, n := range []uint32{1, MaxPayload, MaxPayload + 1, 1<<32 - 1} {
		f := bytes.Clone(frame)
		binary.BigEndian.PutUint32(f[offLength:], n)
		if _, _, err := Open(kr, f); err != ErrLength {
			t.Errorf("length field %d on an empty payload: Open = %v, want %v", n, err, ErrLength)
		}
	}
}

func TestKeysMustMatch(t *testing.T) {
	const idA, idB = 1, 2
	keyA, keyB := testKey('A'), testKey('B')
	frame := mustSeal(t, mustRing(t, idA, keyA), testHeader, []byte("hello"))

	both := mustRing(t, idB, keyB)
	if err := both.Add(idA, keyA); err != nil {
		t.Fatal(err)
	}
	onlyB := mustRing(t, idB, keyB)
	impostor := mustRing(t, idA, keyB) // A's ID, someone else's key

	for _, tc := range []struct {
		name string
		kr   *Keyring
		want error
	}{
		{"ring with A and B", both, nil},
		{"ring with only B", onlyB, ErrUnknownKey},
		{"other key under A's ID", impostor, ErrMAC},
		{"empty ring", &Keyring{}, ErrUnknownKey},
	} {
		h, _, err := Open(tc.kr, frame)
		if err != tc.want {
			t.Errorf("%s: Open = %v, want %v", tc.name, err, tc.want)
		}
		if err == nil && h.KeyID != idA {
			t.Errorf("%s: KeyID = %d, want %d", tc.name, h.KeyID, idA)
		}
	}
}

func TestSealErrors(t *testing.T) {
	kr := mustRing(t, 7, testKey(1))
	with := func(f func(*Header)) Header { h := testHeader; f(&h); return h }
	for _, tc := range []struct {
		name    string
		kr      *Keyring
		h       Header
		payload int
		want    error
	}{
		{"ok", kr, testHeader, 10, nil},
		{"to boot unknown", kr, with(func(h *Header) { h.ToBoot = 0 }), 0, nil},
		{"seq 0 is the caller's business", kr, with(func(h *Header) { h.Seq = 0 }), 0, nil},
		{"from 0", kr, with(func(h *Header) { h.From = 0 }), 0, ErrBadHeader},
		{"to 0", kr, with(func(h *Header) { h.To = 0 }), 0, ErrBadHeader},
		{"to self", kr, with(func(h *Header) { h.To = h.From }), 0, ErrBadHeader},
		{"from boot 0", kr, with(func(h *Header) { h.FromBoot = 0 }), 0, ErrBadHeader},
		{"too large", kr, testHeader, MaxPayload + 1, ErrTooLarge},
		{"empty ring", &Keyring{}, testHeader, 0, ErrEmptyKeyring},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := Seal(dst, tc.kr, tc.h, make([]byte, tc.payload))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Seal = %v, want %v", err, tc.want)
			}
			if err != nil && !bytes.Equal(got, dst) {
				t.Errorf("failed Seal returned %q, want dst unchanged", got)
			}
		})
	}
}

// TestMaxPayloadFits seals and opens the largest payload allowed.
func TestMaxPayloadFits(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB frame")
	}
	kr := mustRing(t, 7, testKey(1))
	frame := mustSeal(t, kr, testHeader, make([]byte, MaxPayload))
	if _, p, err := Open(kr, frame); err != nil || len(p) != MaxPayload {
		t.Fatalf("Open = %d bytes, %v", len(p), err)
	}
}

// TestOpenRejectsBadHeader forges, with the key, frames that Seal refuses
// to make, and checks that Open refuses them too.
func TestOpenRejectsBadHeader(t *testing.T) {
	kr := mustRing(t, 7, testKey(1))
	for _, h := range []Header{
		{KeyID: 7, From: 0, To: 2, FromBoot: 1},
		{KeyID: 7, From: 1, To: 0, FromBoot: 1},
		{KeyID: 7, From: 3, To: 3, FromBoot: 1},
		{KeyID: 7, From: 1, To: 2, FromBoot: 0},
	} {
		frame := forge(kr, h, []byte("x"))
		if _, _, err := Open(kr, frame); err != ErrBadHeader {
			t.Errorf("%v: Open = %v, want %v", h, err, ErrBadHeader)
		}
	}
}

// forge seals a frame without Seal's header rules.
func forge(kr *Keyring, h Header, payload []byte) []byte {
	k := kr.key(h.KeyID)
	return seal(nil, k.derive(h.From, h.FromBoot, h.Salt), k.id, h, payload)
}

func TestCheck(t *testing.T) {
	h := Header{From: 1, To: 2, FromBoot: 3, ToBoot: 5}
	toBoot := func(b node.Boot) Header { x := h; x.ToBoot = b; return x }
	for _, tc := range []struct {
		name     string
		h        Header
		self     node.ID
		selfBoot node.Boot
		want     error
	}{
		{"for me", h, 2, 5, nil},
		{"boot unknown to sender", toBoot(0), 2, 5, nil},
		{"other node", h, 3, 5, ErrNotForMe},
		{"the sender itself", h, 1, 5, ErrNotForMe},
		{"other node wins over boot", h, 3, 9, ErrNotForMe},
		{"my previous incarnation", h, 2, 6, ErrStaleBoot},
		{"a later incarnation", h, 2, 4, ErrStaleBoot},
	} {
		if got := tc.h.Check(tc.self, tc.selfBoot); got != tc.want {
			t.Errorf("%s: Check(%v, %d) = %v, want %v", tc.name, tc.self, tc.selfBoot, got, tc.want)
		}
	}
}

func TestHeaderString(t *testing.T) {
	h := Header{KeyID: 1, From: 1, To: 3, FromBoot: 2, ToBoot: 4, Seq: 5}
	if got, want := h.String(), "k1 n1/2→n3/4 #5"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

func TestAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool allocate")
	}
	kr := mustRing(t, 7, testKey(1))
	payload := pattern(1000)
	frame := mustSeal(t, kr, testHeader, payload)
	buf := make([]byte, 0, len(frame))
	garbage := bytes.Clone(frame)
	garbage[len(garbage)-1] ^= 1
	for _, tc := range []struct {
		name string
		max  float64
		f    func()
	}{
		{"Open", 0, func() { _, _, _ = Open(kr, frame) }},
		{"Open, bad MAC", 0, func() { _, _, _ = Open(kr, garbage) }},
		{"Open, short", 0, func() { _, _, _ = Open(kr, frame[:10]) }},
		{"Seal into room", 0, func() { _, _ = Seal(buf[:0], kr, testHeader, payload) }},
		{"Seal into nil", 1, func() { _, _ = Seal(nil, kr, testHeader, payload) }},
	} {
		if got := testing.AllocsPerRun(200, tc.f); got > tc.max {
			t.Errorf("%s: %v allocations per run, want at most %v", tc.name, got, tc.max)
		}
	}
}

// goldenMAC is TestGoldenFrame's tag, computed once with referenceMAC.
const goldenMAC = "6dee11046a271424130f5fe67207e35d"
