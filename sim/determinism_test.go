package sim_test

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/sim"
)

// chaosNode is a randomized workload: it sends datagrams and stream
// messages to random peers, answers some, opens and closes streams and
// writes and syncs storage, all driven by its Env's random source.
type chaosNode struct {
	env     node.Env
	peers   []node.ID
	streams map[node.ID]node.Stream
	order   []node.ID // peers with a stream, in the order they opened
}

func newChaos(peers []node.ID) node.Factory {
	return func(id node.ID, boot node.Boot) node.Handler {
		return &chaosNode{peers: peers, streams: map[node.ID]node.Stream{}}
	}
}

func (c *chaosNode) Start(env node.Env) {
	c.env = env
	st := env.Storage()
	v, _, _ := st.Get("boots")
	_ = st.Put("boots", append(v, byte(env.Boot())))
	_ = st.Sync()
	c.tick()
}

func (c *chaosNode) tick() {
	r := c.env.Rand()
	peer := c.peers[r.IntN(len(c.peers))]
	if peer != c.env.Self() {
		switch r.IntN(5) {
		case 0, 1:
			_ = c.env.Net().SendDatagram(peer, r.IntN(c.env.Net().Paths(peer)), []byte{byte(r.Uint32())})
		case 2:
			if s, ok := c.streams[peer]; ok {
				if err := s.Send(make([]byte, r.IntN(2000))); err != nil && err != node.ErrStreamFull {
					c.forget(peer)
				}
			} else {
				if s, err := c.env.Net().Dial(peer, r.IntN(c.env.Net().Paths(peer))); err == nil {
					c.streams[peer] = s
					c.order = append(c.order, peer)
				}
			}
		case 3:
			_ = c.env.Storage().Put("k", []byte{byte(r.Uint32())})
			if r.IntN(2) == 0 {
				_ = c.env.Storage().Sync()
			}
		case 4:
			if len(c.order) > 0 && r.IntN(4) == 0 {
				p := c.order[0]
				c.streams[p].Close()
				c.forget(p)
			}
		}
	}
	c.env.Trace("tick")
	c.env.Clock().AfterFunc(time.Duration(1+r.IntN(20))*time.Millisecond, c.tick)
}

func (c *chaosNode) forget(p node.ID) {
	delete(c.streams, p)
	for i, q := range c.order {
		if q == p {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}

func (c *chaosNode) Datagram(from node.ID, path int, p []byte) {
	if len(p) > 0 && p[0]%3 == 0 {
		_ = c.env.Net().SendDatagram(from, path, []byte{p[0] + 1})
	}
}

func (c *chaosNode) StreamOpened(s node.Stream) {
	if _, ok := c.streams[s.Peer()]; !ok {
		c.streams[s.Peer()] = s
		c.order = append(c.order, s.Peer())
	}
}

func (c *chaosNode) StreamMessage(s node.Stream, msg []byte) {
	if len(msg)%7 == 0 {
		_ = s.Send(msg[:len(msg)/2])
	}
}

func (c *chaosNode) StreamWritable(node.Stream) {}

func (c *chaosNode) StreamClosed(s node.Stream, err error) {
	if c.streams[s.Peer()] == s {
		c.forget(s.Peer())
	}
}

// runChaos runs the randomized workload with every fault the simulator
// has, drawn from seed, and returns the world.
func runChaos(t testing.TB, seed uint64, trace *bytes.Buffer) *sim.World {
	cfg := sim.Config{
		Seed:          seed,
		Paths:         2,
		Link:          sim.Link{Latency: time.Millisecond, Jitter: 500 * time.Microsecond},
		StreamTimeout: 2 * time.Second,
		StreamBuffer:  16 << 10,
	}
	if trace != nil {
		cfg.Trace = trace
	}
	w := sim.New(cfg)
	const n = 8
	var ids []node.ID
	for i := 1; i <= n; i++ {
		ids = append(ids, node.ID(i))
	}
	for _, id := range ids {
		if err := w.AddNode(id, newChaos(ids)); err != nil {
			t.Fatal(err)
		}
		if err := w.Boot(id); err != nil {
			t.Fatal(err)
		}
	}
	fr := rand.New(rand.NewPCG(seed, 99)) // the fault schedule
	var fault func()
	fault = func() {
		id := ids[fr.IntN(n)]
		other := ids[fr.IntN(n)]
		switch fr.IntN(11) {
		case 0:
			_ = w.Crash(id)
		case 1:
			_ = w.Restart(id)
		case 2:
			_ = w.Pause(id)
		case 3:
			_ = w.Resume(id)
		case 4:
			cut := 1 + fr.IntN(n-1)
			perm := fr.Perm(n)
			var a, b []node.ID
			for i, p := range perm {
				if i < cut {
					a = append(a, ids[p])
				} else {
					b = append(b, ids[p])
				}
			}
			_ = w.Partition(a, b)
		case 5:
			_ = w.Cut(id, other)
		case 6:
			_ = w.CutPath(id, other, fr.IntN(2))
		case 7:
			_ = w.SetLink(id, other, fr.IntN(3)-1, sim.Link{
				Latency:     time.Duration(fr.IntN(20)) * time.Millisecond,
				Jitter:      time.Duration(fr.IntN(10)) * time.Millisecond,
				Loss:        fr.Float64() * 0.5,
				Duplicate:   fr.Float64() * 0.2,
				Reorder:     fr.Float64() * 0.2,
				Bandwidth:   int64(fr.IntN(2)) * 100000,
				MaxInFlight: fr.IntN(2) * 4,
			})
		case 8:
			_ = w.SetClock(id, time.Duration(fr.IntN(2000)-1000)*time.Millisecond, int64(fr.IntN(2001)-1000))
		case 9:
			w.Heal()
		case 10:
			_ = w.Do(id, func(node.Handler) {})
		}
		w.After(time.Duration(10+fr.IntN(200))*time.Millisecond, fault)
	}
	w.After(50*time.Millisecond, fault)
	if err := w.RunUntil(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestDeterminismSameSeedSameDigest(t *testing.T) {
	seeds := 50
	if testing.Short() {
		seeds = 10
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		a := runChaos(t, seed, nil)
		b := runChaos(t, seed, nil)
		if a.Digest() != b.Digest() {
			t.Fatalf("seed %d: digests differ: %s vs %s (replay: go test ./sim -run TestDeterminism)", seed, a.Digest(), b.Digest())
		}
		if diff := cmp.Diff(a.Stats(), b.Stats()); diff != "" {
			t.Fatalf("seed %d: stats differ (-first +second):\n%s", seed, diff)
		}
		// The workload must really exercise the faults, or this proves little.
		st := a.Stats()
		if st.Delivered < 500 || st.Dropped == 0 || st.Retrans == 0 {
			t.Fatalf("seed %d: workload too tame: %+v", seed, st)
		}
	}
}

func TestDeterminismTraceIsByteForByte(t *testing.T) {
	var ta, tb bytes.Buffer
	a := runChaos(t, 7, &ta)
	b := runChaos(t, 7, &tb)
	if !bytes.Equal(ta.Bytes(), tb.Bytes()) {
		t.Fatalf("traces differ:\n%s", cmp.Diff(ta.String(), tb.String()))
	}
	// Keeping the text does not change the digest.
	c := runChaos(t, 7, nil)
	if a.Digest() != c.Digest() || a.Digest() != b.Digest() {
		t.Fatalf("digest depends on tracing: %s %s %s", a.Digest(), b.Digest(), c.Digest())
	}
	kinds := map[string]bool{}
	for _, line := range strings.Split(ta.String(), "\n") {
		if f := strings.Fields(line); len(f) > 2 {
			kinds[f[2]] = true
		}
	}
	for _, k := range []string{"crash", "partition", "cut", "link", "heal", "retx", "break", "dgram", "seg", "timer", "drop", "pause", "clock", "accept", "connected", "closed"} {
		if !kinds[k] {
			t.Errorf("trace has no %q line", k)
		}
	}
}

func TestDeterminismSeedChangesDigest(t *testing.T) {
	seen := map[string]uint64{}
	for seed := uint64(1); seed <= 20; seed++ {
		d := runChaos(t, seed, nil).Digest()
		if prev, ok := seen[d]; ok {
			t.Fatalf("seeds %d and %d give the same digest %s", prev, seed, d)
		}
		seen[d] = seed
	}
}
