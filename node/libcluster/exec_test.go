package libcluster

import (
	"bufio"
	"bytes"
	"testing"
)

func TestExecFramesRoundTrip(t *testing.T) {
	var b bytes.Buffer
	frames := []struct {
		kind byte
		data []byte
	}{{ExecStdin, []byte("hello")}, {ExecStdinEOF, nil}, {ExecSignal, []byte{2}}, {ExecExitFrame, []byte(`{"code":3}`)}}
	for _, f := range frames {
		if err := WriteExecFrame(&b, f.kind, f.data); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(&b)
	for _, f := range frames {
		k, d, err := ReadExecFrame(r)
		if err != nil || k != f.kind || !bytes.Equal(d, f.data) {
			t.Fatalf("got %d %q %v, want %d %q", k, d, err, f.kind, f.data)
		}
	}
	if err := WriteExecFrame(&b, ExecStdin, make([]byte, MaxExecFrame+1)); err == nil {
		t.Fatal("oversized frame written")
	}
	for _, bad := range [][]byte{{0, 0, 0, 0, 0}, {9, 0, 0, 0, 0}, {ExecStdin, 0xff, 0xff, 0xff, 0xff}, {ExecStdout, 0, 0, 0, 5, 'a'}} {
		if _, _, err := ReadExecFrame(bufio.NewReader(bytes.NewReader(bad))); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func FuzzReadExecFrame(f *testing.F) {
	var b bytes.Buffer
	_ = WriteExecFrame(&b, ExecStdout, []byte("out"))
	f.Add(b.Bytes())
	f.Add([]byte{ExecSignal, 0, 0, 0, 1, 2})
	f.Add([]byte{ExecStdin, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			k, d, err := ReadExecFrame(r)
			if err != nil {
				return
			}
			if len(d) > MaxExecFrame || k < ExecStdin || k > ExecExitFrame {
				t.Fatalf("accepted kind %d with %d bytes", k, len(d))
			}
			var out bytes.Buffer
			if err := WriteExecFrame(&out, k, d); err != nil {
				t.Fatal(err)
			}
		}
	})
}
