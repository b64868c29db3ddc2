package daemon

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

var testKey = bytes.Repeat([]byte("k"), 32)

func TestIntroSealOpen(t *testing.T) {
	m := &introMsg{V: introVersion, Self: &entry{Node: 4, Addr: netip.MustParseAddr("10.0.0.4"), Name: "four", Boot: 2}}
	b, err := seal(testKey, m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := open(testKey, b, false)
	if err != nil || got.Self == nil || *got.Self != *m.Self {
		t.Fatalf("open: %+v %v", got, err)
	}
	other := bytes.Repeat([]byte("x"), 32)
	if _, err := open(other, b, false); !errors.Is(err, errBadMAC) {
		t.Fatalf("another key: %v", err)
	}
	// A refusal cannot be signed for a key the answerer lacks; only then
	// is an unsigned message taken, and only if asked for.
	r, _ := seal(nil, &introMsg{V: introVersion, Refusal: "key", Error: "no"})
	if _, err := open(testKey, r, false); !errors.Is(err, errBadMAC) {
		t.Fatalf("unsigned refusal accepted where not allowed: %v", err)
	}
	if got, err := open(testKey, r, true); err != nil || got.Refusal != "key" {
		t.Fatalf("unsigned refusal: %+v %v", got, err)
	}
	d, _ := seal(nil, &introMsg{V: introVersion, Dir: []entry{{Node: 9}}})
	if _, err := open(testKey, d, true); !errors.Is(err, errBadMAC) {
		t.Fatalf("unsigned directory accepted: %v", err)
	}
	tampered := bytes.Replace(b, []byte("four"), []byte("fivv"), 1)
	if _, err := open(testKey, tampered, false); !errors.Is(err, errBadMAC) {
		t.Fatalf("tampered message: %v", err)
	}
}

func FuzzOpenIntro(f *testing.F) {
	b, _ := seal(testKey, &introMsg{V: introVersion, Self: &entry{Node: 4, Addr: netip.MustParseAddr("10.0.0.4")}})
	f.Add(b)
	r, _ := seal(nil, &introMsg{V: introVersion, Refusal: "allowed", Error: "no"})
	f.Add(r)
	f.Add([]byte(`{"body":{"v":1},"mac":""}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := open(testKey, in, true)
		if err != nil {
			return
		}
		if m.V != introVersion {
			t.Fatalf("accepted version %d", m.V)
		}
		// Only a correctly signed message or an unsigned refusal passes.
		if m.Refusal == "" {
			if _, err := open(testKey, in, false); err != nil {
				t.Fatalf("passed only as unsigned without being a refusal: %v", err)
			}
		}
	})
}
