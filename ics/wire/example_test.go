package wire_test

import (
	"bytes"
	"fmt"

	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
)

// Example shows one frame from n1 to n2 and the receiver's checks, in the
// order the ICS core makes them.
func Example() {
	clusterKey := bytes.Repeat([]byte("k"), wire.MinKeySize) // from configuration, never a constant
	sender, _ := wire.NewKeyring(1, clusterKey)
	receiver, _ := wire.NewKeyring(1, clusterKey)

	// n1 (boot 4) sends its first frame to n2, whose boot (7) it knows.
	// Its sealer's salt must be unique to it (random, say).
	sealer, err := wire.NewSealer(sender, 1, 4, [wire.SaltSize]byte{0x5a, 0x17})
	if err != nil {
		panic(err)
	}
	h := wire.Header{From: 1, To: 2, FromBoot: 4, ToBoot: 7, Seq: 1}
	frame, err := sealer.Seal(nil, h, []byte("ping"))
	if err != nil {
		panic(err)
	}

	// n2, boot 7, receives it twice (the network duplicated it).
	const self, selfBoot = node.ID(2), node.Boot(7)
	var window wire.ReplayWindow // one per sender incarnation (From, FromBoot)
	var drops [wire.NumDropReasons]int
	for range 2 {
		got, payload, err := wire.Open(receiver, frame)
		if err == nil {
			err = got.Check(self, selfBoot)
		}
		if err == nil && !window.Accept(got.Seq) {
			err = wire.ErrReplay
		}
		if err != nil {
			drops[wire.Reason(err)]++
			continue
		}
		fmt.Printf("%v: %s\n", got, payload)
	}
	fmt.Println("replays dropped:", drops[wire.DropReplay])
	// Output:
	// k1 n1/4→n2/7 #1: ping
	// replays dropped: 1
}

// ExampleKeyring shows key rotation on one node; every node does the same
// steps, each step everywhere before the next begins.
func ExampleKeyring() {
	oldKey := bytes.Repeat([]byte("o"), 32)
	newKey := bytes.Repeat([]byte("n"), 32)
	kr, _ := wire.NewKeyring(1, oldKey)

	_ = kr.Add(2, newKey) // 1: every node learns the new key
	_ = kr.SetPrimary(2)  // 2: every node seals with it
	_ = kr.Remove(1)      // 3: every node forgets the old one
	fmt.Println(kr.Primary(), kr.IDs())
	// Output: 2 [2]
}
