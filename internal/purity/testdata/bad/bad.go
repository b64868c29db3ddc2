package bad

import (
	"math/rand/v2"
	"net"
	tm "time"
)

func Bad() {
	_ = tm.Now()
	go func() {}()
	_ = rand.IntN(3)
	_, _ = net.Dial("tcp", "127.0.0.1:1")
	r := rand.New(rand.NewPCG(1, 2)) // allowed: explicit seed
	_ = r.IntN(3)                    // allowed: a seeded source
	_ = tm.Duration(5)               // allowed: a type
}
