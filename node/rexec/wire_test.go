package rexec

import (
	"bytes"
	"errors"
	"math"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Sample messages: the round-trip tests use them, and so do the fuzz
// targets as seeds.
var (
	sampleStarts = []startMsg{
		{ID: 1, Argv: []string{"echo", "hi"}},
		{ID: 300, Argv: []string{"sh", "-c", "exit 3"}, Env: []string{"A=1", "B="}, Dir: "/tmp"},
		{ID: math.MaxUint64, Argv: []string{"x"}, Env: []string{"LANG=C.UTF-8"}},
	}
	sampleExits = []exitMsg{
		{Code: 0},
		{Code: 3},
		{Code: 130, Signal: "SIGINT"},
		{Code: 137, Signal: "SIGKILL"},
		{Code: 168, Signal: "SIG40"},
		{Kind: kindStart, Code: 127, Text: `exec: "nope": executable file not found in $PATH`},
		{Kind: kindBusy, Code: -1, Text: "n2: 64 sessions running (max 64)"},
		{Kind: kindClosed, Code: -1, Text: "rexec: server closed"},
		{Kind: kindProtocol, Code: math.MinInt32, Text: "x"},
	}
	sampleIns = []inMsg{
		{Kind: inData, ID: 1, Data: []byte("hello\n")},
		{Kind: inData, ID: 1 << 40, Data: bytes.Repeat([]byte{0xff}, ChunkSize)},
		{Kind: inEOF, ID: 7},
		{Kind: inSignal, ID: 7, Signal: syscall.SIGINT},
		{Kind: inSignal, ID: 7, Signal: 64},
	}
	sampleOuts = []outMsg{
		{Stream: Stdout, ID: 1, Data: []byte("out\n")},
		{Stream: Stderr, ID: 99999, Data: []byte{0}},
	}
	sampleLoads = []float64{0, 0.25, 1, 3.5, 1e9}
)

func TestWireRoundTrip(t *testing.T) {
	for _, m := range sampleStarts {
		b, err := m.encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeStart(b)
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if d := cmp.Diff(m, got); d != "" {
			t.Errorf("start (-sent +got):\n%s", d)
		}
	}
	for _, m := range sampleExits {
		got, err := decodeExit(m.encode())
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if d := cmp.Diff(m, got); d != "" {
			t.Errorf("exit (-sent +got):\n%s", d)
		}
	}
	for _, m := range sampleIns {
		got, err := decodeIn(m.encode())
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if d := cmp.Diff(m, got); d != "" {
			t.Errorf("in (-sent +got):\n%s", d)
		}
	}
	for _, m := range sampleOuts {
		got, err := decodeOut(m.encode())
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if d := cmp.Diff(m, got); d != "" {
			t.Errorf("out (-sent +got):\n%s", d)
		}
	}
	for _, l := range sampleLoads {
		got, err := decodeLoad(encodeLoad(l))
		if err != nil || got != l {
			t.Errorf("load %v: got %v, %v", l, got, err)
		}
	}
}

func TestWireRejects(t *testing.T) {
	good, _ := sampleStarts[0].encode()
	cases := []struct {
		name string
		dec  func([]byte) error
		b    []byte
	}{
		{"start empty", errOnly(decodeStart), nil},
		{"start version", errOnly(decodeStart), append([]byte{2}, good[1:]...)},
		{"start trailing", errOnly(decodeStart), append(bytes.Clone(good), 0)},
		{"start truncated", errOnly(decodeStart), good[:len(good)-1]},
		{"start id 0", errOnly(decodeStart), []byte{1, 0, 1, 1, 'x', 0, 0}},
		{"start non-minimal varint", errOnly(decodeStart), []byte{1, 0x81, 0x00, 1, 1, 'x', 0, 0}},
		{"start no argv", errOnly(decodeStart), []byte{1, 1, 0, 0, 0}},
		{"start NUL in argv", errOnly(decodeStart), []byte{1, 1, 1, 2, 'x', 0, 0, 0}},
		{"start env without =", errOnly(decodeStart), []byte{1, 1, 1, 1, 'x', 1, 1, 'A', 0}},
		{"start huge count", errOnly(decodeStart), []byte{1, 1, 0xff, 0xff, 0x03}},
		{"exit kind", errOnly(decodeExit), []byte{1, byte(numKinds), 0, 0, 1, 'x'}},
		{"exit signal", errOnly(decodeExit), []byte{1, 0, 0, 3, 'F', 'O', 'O', 0}},
		{"exit text without kind", errOnly(decodeExit), []byte{1, 0, 0, 0, 1, 'x'}},
		{"exit kind without text", errOnly(decodeExit), []byte{1, 1, 0, 0, 0}},
		{"exit code range", errOnly(decodeExit), append([]byte{1, 0}, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0)},
		{"in kind", errOnly(decodeIn), []byte{9, 1}},
		{"in empty data", errOnly(decodeIn), []byte{1, 1}},
		{"in big data", errOnly(decodeIn), append([]byte{1, 1}, make([]byte, ChunkSize+1)...)},
		{"in eof trailing", errOnly(decodeIn), []byte{2, 1, 0}},
		{"in signal 0", errOnly(decodeIn), []byte{3, 1, 0}},
		{"in signal 65", errOnly(decodeIn), []byte{3, 1, 65}},
		{"in id 0", errOnly(decodeIn), []byte{2, 0}},
		{"out stream", errOnly(decodeOut), []byte{3, 1, 'x'}},
		{"out empty", errOnly(decodeOut), []byte{1, 1}},
		{"out id 0", errOnly(decodeOut), []byte{1, 0, 'x'}},
		{"load short", errOnly(decodeLoad), []byte{0, 0, 0}},
		{"load NaN", errOnly(decodeLoad), encodeLoad(math.NaN())},
		{"load negative", errOnly(decodeLoad), encodeLoad(-1)},
		{"load -0", errOnly(decodeLoad), encodeLoad(math.Copysign(0, -1))},
		{"load inf", errOnly(decodeLoad), encodeLoad(math.Inf(1))},
	}
	for _, c := range cases {
		if err := c.dec(c.b); !errors.Is(err, errDecode) {
			t.Errorf("%s: %x decoded with %v, want errDecode", c.name, c.b, err)
		}
	}
}

func errOnly[T any](f func([]byte) (T, error)) func([]byte) error {
	return func(b []byte) error { _, err := f(b); return err }
}

func TestSignalNames(t *testing.T) {
	for s := syscall.Signal(1); s <= maxSignal; s++ {
		name := signalName(s)
		if name == "" || signalNum(name) != s {
			t.Errorf("signal %d: name %q maps back to %d", s, name, signalNum(name))
		}
	}
	if signalName(syscall.SIGINT) != "SIGINT" {
		t.Errorf("SIGINT is named %q", signalName(syscall.SIGINT))
	}
}

func TestParseLoadavg(t *testing.T) {
	l, err := parseLoadavg([]byte("2.00 1.00 0.50 1/123 4567\n"), 4)
	if err != nil || l != 0.5 {
		t.Fatalf("got %v, %v; want 0.5", l, err)
	}
	if _, err := parseLoadavg([]byte("x"), 4); err == nil {
		t.Fatal("parsed garbage")
	}
	if l, err := LocalLoad(); err != nil || l < 0 {
		t.Fatalf("local load %v, %v", l, err)
	}
}

// Every decoder is fuzzed: whatever it accepts must encode back to the
// very same bytes (the encoding is canonical, so nothing is read two
// ways), and it must never panic.

func FuzzDecodeStart(f *testing.F) {
	for _, m := range sampleStarts {
		b, _ := m.encode()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeStart(b)
		if err != nil {
			return
		}
		back, err := m.encode()
		if err != nil {
			t.Fatalf("accepted %x but cannot encode it: %v", b, err)
		}
		if !bytes.Equal(back, b) {
			t.Fatalf("%x decoded to %+v, which encodes as %x", b, m, back)
		}
	})
}

func FuzzDecodeExit(f *testing.F) {
	for _, m := range sampleExits {
		f.Add(m.encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeExit(b)
		if err != nil {
			return
		}
		if back := m.encode(); !bytes.Equal(back, b) {
			t.Fatalf("%x decoded to %+v, which encodes as %x", b, m, back)
		}
	})
}

func FuzzDecodeIn(f *testing.F) {
	for _, m := range sampleIns {
		if len(m.Data) > 256 {
			continue // large seeds slow the mutator down for nothing
		}
		f.Add(m.encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeIn(b)
		if err != nil {
			return
		}
		if m.Kind == inData && (len(m.Data) == 0 || len(m.Data) > ChunkSize) {
			t.Fatalf("accepted a stdin chunk of %d bytes", len(m.Data))
		}
		if back := m.encode(); !bytes.Equal(back, b) {
			t.Fatalf("%x decoded to %+v, which encodes as %x", b, m, back)
		}
	})
}

func FuzzDecodeOut(f *testing.F) {
	for _, m := range sampleOuts {
		f.Add(m.encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeOut(b)
		if err != nil {
			return
		}
		if len(m.Data) == 0 || len(m.Data) > ChunkSize {
			t.Fatalf("accepted an output chunk of %d bytes", len(m.Data))
		}
		if back := m.encode(); !bytes.Equal(back, b) {
			t.Fatalf("%x decoded to %+v, which encodes as %x", b, m, back)
		}
	})
}

func FuzzDecodeLoad(f *testing.F) {
	for _, l := range sampleLoads {
		f.Add(encodeLoad(l))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLoad(b)
		if err != nil {
			return
		}
		if l < 0 || math.IsNaN(l) || math.IsInf(l, 0) {
			t.Fatalf("accepted load %v", l)
		}
		if back := encodeLoad(l); !bytes.Equal(back, b) {
			t.Fatalf("%x decoded to %v, which encodes as %x", b, l, back)
		}
	})
}
