package wire

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterinfra/ci/node"
)

var rewrite = flag.Bool("rewrite", false, "regenerate the seed corpus files under testdata/fuzz")

// The fuzz targets' keyring: key 7 (primary) and key 9.
var fuzzKeys = map[uint32][]byte{7: testKey(7), 9: testKey(9)}

func fuzzRing(t testing.TB) *Keyring {
	kr := mustRing(t, 7, fuzzKeys[7])
	if err := kr.Add(9, fuzzKeys[9]); err != nil {
		t.Fatal(err)
	}
	return kr
}

// referenceMAC is the format's GMAC computed the plain way from the
// spec in doc.go, in hex: data is the frame up to its tag.
func referenceMAC(key, data []byte) string {
	be := func(b []byte) uint64 {
		var v uint64
		for _, c := range b {
			v = v<<8 | uint64(c)
		}
		return v
	}
	info := []byte("clusterinfra ics wire v2 GMAC subkey")
	info = binary.BigEndian.AppendUint32(info, uint32(be(data[4:8])))    // key ID
	info = binary.BigEndian.AppendUint32(info, uint32(be(data[8:12])))   // from
	info = binary.BigEndian.AppendUint64(info, be(data[16:24]))          // from boot
	sub, err := hkdf.Key(sha256.New, key, data[40:56], string(info), 32) // salt
	if err != nil {
		panic(err)
	}
	blk, err := aes.NewCipher(sub)
	if err != nil {
		panic(err)
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		panic(err)
	}
	return hex.EncodeToString(g.Seal(nil, data[52:64], nil, data))
}

// referenceOpen is a second, deliberately plain reading of the format
// spec: which error should Open return for frame, given keys?
func referenceOpen(keys map[uint32][]byte, frame []byte) error {
	be := func(b []byte) uint64 {
		var v uint64
		for _, c := range b {
			v = v<<8 | uint64(c)
		}
		return v
	}
	switch {
	case len(frame) < 84:
		return ErrShort
	case string(frame[0:2]) != "CI":
		return ErrMagic
	case frame[2] != 2:
		return ErrVersion
	case frame[3] != 0:
		return ErrFlags
	}
	n := be(frame[64:68])
	if n > 64<<20+64<<10 || uint64(len(frame)) != 68+n+16 {
		return ErrLength
	}
	key, ok := keys[uint32(be(frame[4:8]))]
	if !ok {
		return ErrUnknownKey
	}
	if referenceMAC(key, frame[:68+n]) != hex.EncodeToString(frame[68+n:]) {
		return ErrMAC
	}
	from, to, fromBoot := be(frame[8:12]), be(frame[12:16]), be(frame[16:24])
	if from == 0 || to == 0 || from == to || fromBoot == 0 {
		return ErrBadHeader
	}
	return nil
}

func FuzzOpen(f *testing.F) {
	for _, s := range openSeeds(f) {
		f.Add(s.frame)
	}
	kr := fuzzRing(f)
	single := map[uint32]*Keyring{}
	for id, key := range fuzzKeys {
		single[id] = mustRing(f, id, key)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		orig := bytes.Clone(frame)
		h, payload, err := Open(kr, frame)
		if !bytes.Equal(frame, orig) {
			t.Fatalf("Open modified its input")
		}
		if want := referenceOpen(fuzzKeys, frame); err != want {
			t.Fatalf("Open = %v, the spec says %v", err, want)
		}
		if err != nil {
			if h != (Header{}) || payload != nil {
				t.Fatalf("failed Open returned %v and %d payload bytes", h, len(payload))
			}
			if r := Reason(err); r == DropNone || r == DropOther {
				t.Fatalf("Reason(%v) = %v", err, r)
			}
			return
		}
		if !bytes.Equal(payload, frame[HeaderSize:len(frame)-MACSize]) {
			t.Fatalf("payload is not the frame's payload bytes")
		}
		again, err := Seal(nil, single[h.KeyID], h, payload)
		if err != nil {
			t.Fatalf("re-Seal of an accepted frame (%v): %v", h, err)
		}
		if !bytes.Equal(again, frame) {
			t.Fatalf("re-Seal differs:\n got %x\nwant %x", again, frame)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	for _, s := range roundTripSeeds() {
		f.Add(s.keyID, s.key, s.from, s.to, s.fromBoot, s.toBoot, s.seq, s.payload)
	}
	f.Fuzz(func(t *testing.T, keyID uint32, key []byte, from, to uint32, fromBoot, toBoot, seq uint64, payload []byte) {
		kr, err := NewKeyring(keyID, key)
		if len(key) < MinKeySize {
			if !errors.Is(err, ErrWeakKey) {
				t.Fatalf("NewKeyring with a %d-byte key: %v, want %v", len(key), err, ErrWeakKey)
			}
			return
		}
		if err != nil {
			t.Fatalf("NewKeyring: %v", err)
		}
		h := Header{
			KeyID: ^keyID, // Seal must overwrite it
			From:  node.ID(from), To: node.ID(to),
			FromBoot: node.Boot(fromBoot), ToBoot: node.Boot(toBoot),
			Seq: seq, Counter: seq ^ toBoot,
		}
		copy(h.Salt[:], payload) // anything: the salt only has to be there
		prefix := []byte{0xde, 0xad}
		frame, err := Seal(bytes.Clone(prefix), kr, h, payload)
		if from == 0 || to == 0 || from == to || fromBoot == 0 {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("Seal(%v) = %v, want %v", h, err, ErrBadHeader)
			}
			return
		}
		if err != nil {
			t.Fatalf("Seal(%v): %v", h, err)
		}
		if !bytes.HasPrefix(frame, prefix) || len(frame) != len(prefix)+Overhead+len(payload) {
			t.Fatalf("Seal appended %d bytes to %x, want %d after it", len(frame)-len(prefix), frame[:min(2, len(frame))], Overhead+len(payload))
		}
		frame = frame[len(prefix):]
		if want := referenceOpen(map[uint32][]byte{keyID: key}, frame); want != nil {
			t.Fatalf("the spec rejects the sealed frame: %v", want)
		}
		got, p, err := Open(kr, frame)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		h.KeyID = keyID
		if diff := cmp.Diff(h, got); diff != "" {
			t.Fatalf("header (-sealed +opened):\n%s", diff)
		}
		if !bytes.Equal(p, payload) {
			t.Fatalf("payload differs")
		}
		// A Sealer numbers its frames: the same header and payload twice
		// are two frames, each of which opens.
		sl, err := NewSealer(kr, h.From, h.FromBoot, h.Salt)
		if err != nil {
			t.Fatalf("NewSealer: %v", err)
		}
		f1, err1 := sl.Seal(nil, h, payload)
		f2, err2 := sl.Seal(nil, h, payload)
		if err1 != nil || err2 != nil {
			t.Fatalf("Sealer.Seal: %v, %v", err1, err2)
		}
		g1, _, err1 := Open(kr, f1)
		g2, _, err2 := Open(kr, f2)
		if err1 != nil || err2 != nil || g1.Counter != 1 || g2.Counter != 2 || bytes.Equal(f1, f2) {
			t.Fatalf("Sealer frames: counters %d, %d, errors %v, %v", g1.Counter, g2.Counter, err1, err2)
		}
	})
}

func FuzzReplayWindow(f *testing.F) {
	for _, s := range replaySeeds() {
		f.Add(s.ops)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		var w ReplayWindow
		m := newReplayModel()
		var maxSeen uint64 // highest seq offered so far, accepted or not
		anySeen := false
		for i, seq := range decodeReplayOps(ops) {
			got := w.Accept(seq)
			wasAccepted := m.seen[seq]
			if want := m.accept(seq); got != want {
				t.Fatalf("op %d: Accept(%d) = %v, model says %v (top %d)", i, seq, got, want, m.top)
			}
			if got && wasAccepted {
				t.Fatalf("op %d: Accept(%d) accepted it a second time", i, seq)
			}
			if seq != 0 && (!anySeen || seq > maxSeen) && !got {
				t.Fatalf("op %d: Accept(%d) refused a seq above every one seen (max %d)", i, seq, maxSeen)
			}
			if seq == 0 && got {
				t.Fatalf("op %d: accepted seq 0", i)
			}
			maxSeen, anySeen = max(maxSeen, seq), true
		}
	})
}

// decodeReplayOps turns fuzz bytes into a sequence of seqs that stays
// near the window's edges: each op is a kind byte and its operand.
//
//	kind%5 == 0: absolute seq, 8 bytes big-endian
//	kind%5 == 1: prev + (1 byte)
//	kind%5 == 2: prev - (2 bytes), to probe the far edge of the window
//	kind%5 == 3: repeat the seq of (1 byte) ops ago
//	kind%5 == 4: prev + (2 bytes), to slide by about a window
//
// At most 4096 ops are decoded, to bound a run.
func decodeReplayOps(b []byte) []uint64 {
	var out []uint64
	var prev uint64
	take := func(n int) uint64 {
		var v uint64
		for range n {
			v <<= 8
			if len(b) > 0 {
				v |= uint64(b[0])
				b = b[1:]
			}
		}
		return v
	}
	for len(b) > 0 && len(out) < 4096 {
		var seq uint64
		switch take(1) % 5 {
		case 0:
			seq = take(8)
		case 1:
			seq = prev + take(1)
		case 2:
			seq = prev - take(2)
		case 3:
			back := int(take(1))
			if back < len(out) {
				seq = out[len(out)-1-back]
			} else {
				seq = prev
			}
		case 4:
			seq = prev + take(2)
		}
		out = append(out, seq)
		prev = seq
	}
	return out
}

// The seed corpora. They are also committed under testdata/fuzz, so that
// the fuzzer starts from them; TestSeedCorpus keeps the files in step
// with the functions below.

type openSeed struct {
	name  string
	frame []byte
}

func openSeeds(t testing.TB) []openSeed {
	kr := fuzzRing(t)
	valid7 := mustSeal(t, kr, Header{From: 1, To: 2, FromBoot: 1, ToBoot: 1, Seq: 1}, []byte("hello"))
	empty7 := mustSeal(t, kr, Header{From: 3, To: 1, FromBoot: 2, ToBoot: 0, Seq: 1}, nil)
	k9 := mustRing(t, 9, fuzzKeys[9])
	valid9 := mustSeal(t, k9, Header{From: 1024, To: 5, FromBoot: math.MaxUint64, ToBoot: 77, Seq: math.MaxUint64,
		Salt: [SaltSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, Counter: math.MaxUint64}, pattern(300))
	badMAC := bytes.Clone(valid7)
	badMAC[len(badMAC)-1] ^= 1
	badHeader := forge(kr, Header{KeyID: 7, From: 4, To: 4, FromBoot: 1}, []byte("loop"))
	return []openSeed{
		{"valid-key7", valid7},
		{"valid-key7-empty-payload", empty7},
		{"valid-key9", valid9},
		{"bad-mac", badMAC},
		{"bad-header-from-is-to", badHeader},
		{"truncated", valid7[:len(valid7)-1]},
		{"short", []byte("CI\x02\x00")},
		{"version-1", version1Frame},
		{"not-a-frame", []byte("GET / HTTP/1.1\r\nHost: n2\r\n\r\nGET / HTTP/1.1\r\nHost: n2\r\n\r\nGET / HTTP/1.1\r\n\r\n")},
	}
}

// version1Frame is a frame of format version 1 (HMAC-SHA256), which
// version 2 must refuse by its version byte alone.
var version1Frame = append(append([]byte("CI\x01\x00\x00\x00\x00\x07\x00\x00\x00\x01\x00\x00\x00\x02"),
	make([]byte, 24)...), append([]byte{0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}, make([]byte, 32)...)...)

type roundTripSeed struct {
	name                  string
	keyID                 uint32
	key                   []byte
	from, to              uint32
	fromBoot, toBoot, seq uint64
	payload               []byte
}

func roundTripSeeds() []roundTripSeed {
	return []roundTripSeed{
		{"simple", 7, testKey(7), 1, 2, 1, 1, 1, []byte("hello")},
		{"hello-unknown-boot", 1, testKey(1), 2, 1, 3, 0, 1, nil},
		{"extremes", math.MaxUint32, bytes.Repeat([]byte{0xff}, 100), math.MaxUint32, 1, math.MaxUint64, math.MaxUint64, math.MaxUint64, pattern(200)},
		{"from-is-to", 0, testKey(0), 5, 5, 1, 1, 1, []byte("x")},
		{"weak-key", 3, []byte("too short a key"), 1, 2, 1, 1, 1, nil},
	}
}

type replaySeed struct {
	name string
	ops  []byte
}

func replaySeeds() []replaySeed {
	return []replaySeed{
		{"in-order", bytes.Repeat([]byte{1, 1}, 50)},
		{"reorder-and-repeat", []byte{1, 5, 2, 0, 2, 1, 1, 3, 0, 3, 2, 1, 1, 1, 1, 9}},
		{"slide-by-window", []byte{1, 1, 4, 4, 0, 2, 4, 0, 3, 2, 3, 255, 4, 3, 255, 2, 4, 1}},
		{"huge-jump", []byte{1, 1, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 2, 0, 3, 3, 1}},
		{"top-of-uint64", []byte{0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 1, 1, 3, 0, 2, 0, 5, 2, 4, 0}},
		{"zero", []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 1}},
	}
}

// corpusFile formats one seed in the go test fuzz v1 encoding.
func corpusFile(args ...any) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch a := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", a)
		case uint32:
			fmt.Fprintf(&b, "uint32(%d)\n", a)
		case uint64:
			fmt.Fprintf(&b, "uint64(%d)\n", a)
		default:
			panic(fmt.Sprintf("corpusFile: %T", a))
		}
	}
	return []byte(b.String())
}

// TestSeedCorpus checks that the committed seed files are what the seed
// functions above produce (a format or key change must regenerate them,
// or the valid frames would silently stop being valid), and rewrites them
// with -rewrite. Only commit a rewrite you understand.
func TestSeedCorpus(t *testing.T) {
	files := map[string][]byte{}
	for _, s := range openSeeds(t) {
		files[filepath.Join("FuzzOpen", s.name)] = corpusFile(s.frame)
	}
	for _, s := range roundTripSeeds() {
		files[filepath.Join("FuzzRoundTrip", s.name)] = corpusFile(s.keyID, s.key, s.from, s.to, s.fromBoot, s.toBoot, s.seq, s.payload)
	}
	for _, s := range replaySeeds() {
		files[filepath.Join("FuzzReplayWindow", s.name)] = corpusFile(s.ops)
	}
	for name, want := range files {
		path := filepath.Join("testdata", "fuzz", name)
		if *rewrite {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (regenerate with: go test ./ics/wire/ -run TestSeedCorpus -rewrite)", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale (regenerate with: go test ./ics/wire/ -run TestSeedCorpus -rewrite)", path)
		}
	}
}
