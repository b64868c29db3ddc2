package ics_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/sim"
)

// startOnly is a node that only makes an endpoint, keeping what New said.
type startOnly struct {
	cfg ics.Config
	err error
}

func (n *startOnly) Start(env node.Env)                { _, n.err = ics.New(env, n.cfg) }
func (n *startOnly) Datagram(node.ID, int, []byte)     {}
func (n *startOnly) StreamOpened(node.Stream)          {}
func (n *startOnly) StreamMessage(node.Stream, []byte) {}
func (n *startOnly) StreamWritable(node.Stream)        {}
func (n *startOnly) StreamClosed(node.Stream, error)   {}

// TestEntropySaltsTheSealer checks that Config.Entropy is where an
// incarnation's salt comes from when it is set: its bytes are consumed,
// and a source that fails makes New fail with ErrConfig rather than seal
// under a salt that may repeat.
func TestEntropySaltsTheSealer(t *testing.T) {
	run := func(src io.Reader) error {
		w := sim.New(sim.Config{Seed: 1})
		n := &startOnly{cfg: ics.Config{Keyring: keyring(t, 1, testKey), Entropy: src}}
		if err := w.AddNode(1, func(node.ID, node.Boot) node.Handler { return n }); err != nil {
			t.Fatal(err)
		}
		if err := w.Boot(1); err != nil {
			t.Fatal(err)
		}
		w.Step()
		return n.err
	}
	src := bytes.NewReader(make([]byte, 64))
	if err := run(src); err != nil {
		t.Fatalf("New with 64 bytes of entropy: %v", err)
	}
	if used := 64 - src.Len(); used != 8 {
		t.Fatalf("New read %d bytes of entropy, want 8 (half the salt)", used)
	}
	if err := run(bytes.NewReader(make([]byte, 3))); !errors.Is(err, ics.ErrConfig) {
		t.Fatalf("New with a source that runs dry: %v, want ErrConfig", err)
	}
}
