package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"testing"
)

var benchSizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"64KiB", 64 << 10}}

func BenchmarkSeal(b *testing.B) {
	kr := mustRing(b, 1, testKey(1))
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			payload := pattern(s.n)
			buf := make([]byte, 0, Overhead+s.n)
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				buf, err = Seal(buf[:0], kr, testHeader, payload)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		// The same with no buffer to reuse: one allocation per frame.
		b.Run(s.name+"-nil-dst", func(b *testing.B) {
			payload := pattern(s.n)
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Seal(nil, kr, testHeader, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	kr := mustRing(b, 1, testKey(1))
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			frame := mustSeal(b, kr, testHeader, pattern(s.n))
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Open(kr, frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealParallel seals 64-byte frames from every P at once, as a
// runtime that shares one Keyring across connections would.
func BenchmarkSealParallel(b *testing.B) {
	kr := mustRing(b, 1, testKey(1))
	payload := pattern(64)
	b.SetBytes(64)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, Overhead+64)
		for pb.Next() {
			buf, _ = Seal(buf[:0], kr, testHeader, payload)
		}
	})
}

// BenchmarkMAC measures the choice behind version 2 of the format, on a
// small frame (a 64-byte payload) and a bulk chunk: HMAC-SHA256 (version
// 1's MAC, with a keyed state reused) against GMAC with a cached subkey,
// as Seal and Open compute it. On amd64 with SHA-NI and VAES, GMAC is
// about 5x faster on small frames and 7x on 64 KiB.
func BenchmarkMAC(b *testing.B) {
	key := testKey(1)
	rk := newRingKey(1, key)
	var salt [SaltSize]byte
	a := rk.aead(1, 3, salt)
	for _, s := range benchSizes {
		data := pattern(HeaderSize + s.n)
		b.Run("hmac-sha256-"+s.name, func(b *testing.B) {
			m := hmac.New(sha256.New, key)
			var out [sha256.Size]byte
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				m.Reset()
				m.Write(data)
				m.Sum(out[:0])
			}
		})
		b.Run("gmac-"+s.name, func(b *testing.B) {
			out := make([]byte, 0, MACSize)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				out = a.Seal(out[:0], data[offNonce:offNonce+nonceSize], nil, data)
			}
		})
	}
}

// BenchmarkSubkey measures what a new sender incarnation costs a
// receiver (derive) against a frame from a known one (cached).
func BenchmarkSubkey(b *testing.B) {
	rk := newRingKey(1, testKey(1))
	var salt [SaltSize]byte
	b.Run("derive", func(b *testing.B) {
		for b.Loop() {
			rk.derive(1, 3, salt)
		}
	})
	rk.aead(1, 3, salt)
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := rk.cachedAEAD(1, 3, salt); !ok {
				b.Fatal("not cached")
			}
		}
	})
}
