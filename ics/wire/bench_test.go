package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"sync"
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

// BenchmarkMACState measures the choice ringKey makes, on a 108-byte
// frame (a 64-byte payload): a fresh hmac.New per frame (rehashing the
// key each time), one keyed state per key behind a mutex, and the
// sync.Pool of keyed states the package uses; serially and from every P.
func BenchmarkMACState(b *testing.B) {
	key := testKey(1)
	data := pattern(HeaderSize + 64)
	var mu sync.Mutex
	shared := hmac.New(sha256.New, key)
	shared.Reset()
	rk := newRingKey(1, key)
	var out [MACSize]byte
	strategies := []struct {
		name string
		mac  func(out *[MACSize]byte)
	}{
		{"new-per-frame", func(out *[MACSize]byte) {
			m := hmac.New(sha256.New, key)
			m.Write(data)
			m.Sum(out[:0])
		}},
		{"mutex", func(out *[MACSize]byte) {
			mu.Lock()
			shared.Reset()
			shared.Write(data)
			copy(out[:], shared.Sum(out[:0]))
			mu.Unlock()
		}},
		{"pool", func(out *[MACSize]byte) { rk.sum(data, out) }},
	}
	for _, s := range strategies {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.mac(&out)
			}
		})
		b.Run(s.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var out [MACSize]byte
				for pb.Next() {
					s.mac(&out)
				}
			})
		})
	}
}
