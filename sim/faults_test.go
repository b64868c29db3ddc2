package sim_test

import (
	"fmt"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/sim"
)

const ms = time.Millisecond

// chatter makes every node send one datagram to every other node every
// 10ms, numbered so that a test can count exactly what crossed.
func chatter(r *recNode) {
	r.onStart = func(r *recNode) {
		seq := 0
		every(r, 10*ms, func() {
			seq++
			for _, p := range r.w.Nodes() {
				if p != r.id {
					Expect(r.env.Net().SendDatagram(p, 0, []byte(strconv.Itoa(seq)))).To(Succeed())
				}
			}
		})
	}
}

var _ = Describe("the simulated network", func() {
	It("delivers exactly the traffic a partition does not cut", func() {
		c := newCluster(sim.Config{Seed: 1, Link: sim.Link{Latency: ms}}, 4, chatter)
		c.bootAll()
		Expect(c.w.RunUntil(1000*ms + 5*ms)).To(Succeed())
		// 100 rounds before the partition: everyone hears everyone.
		for _, id := range c.w.Nodes() {
			for _, p := range c.w.Nodes() {
				if p != id {
					Expect(c.cur(id).count("dgram", p)).To(Equal(100), "n%d from n%d", id, p)
				}
			}
		}
		Expect(c.w.Partition([]node.ID{1, 2}, []node.ID{3, 4})).To(Succeed())
		Expect(c.w.RunUntil(2000*ms + 5*ms)).To(Succeed())
		// 100 more rounds: only within the groups.
		same := map[node.ID]node.ID{1: 2, 2: 1, 3: 4, 4: 3}
		for _, id := range c.w.Nodes() {
			for _, p := range c.w.Nodes() {
				switch {
				case p == id:
				case same[id] == p:
					Expect(c.cur(id).count("dgram", p)).To(Equal(200), "n%d from n%d (same side)", id, p)
				default:
					Expect(c.cur(id).count("dgram", p)).To(Equal(100), "n%d from n%d (other side)", id, p)
				}
			}
		}
		c.w.Heal()
		Expect(c.w.RunUntil(3000*ms + 5*ms)).To(Succeed())
		Expect(c.cur(1).count("dgram", 3)).To(Equal(200))
	})

	It("drops one direction only under a one-way cut", func() {
		c := newCluster(sim.Config{Seed: 2, Link: sim.Link{Latency: ms}}, 3, chatter)
		c.bootAll()
		Expect(c.w.Cut(1, 3)).To(Succeed())
		Expect(c.w.RunUntil(500*ms + 5*ms)).To(Succeed())
		Expect(c.cur(3).count("dgram", 1)).To(Equal(0))
		Expect(c.cur(1).count("dgram", 3)).To(Equal(50))
		Expect(c.cur(3).count("dgram", 2)).To(Equal(50))
		Expect(c.cur(2).count("dgram", 1)).To(Equal(50))
	})

	It("cuts one path and leaves the other", func() {
		c := newCluster(sim.Config{Seed: 3, Paths: 2, Link: sim.Link{Latency: ms}}, 2, func(r *recNode) {
			r.onStart = func(r *recNode) {
				every(r, 10*ms, func() {
					peer := 3 - r.id
					Expect(r.env.Net().SendDatagram(peer, 0, []byte("p0"))).To(Succeed())
					Expect(r.env.Net().SendDatagram(peer, 1, []byte("p1"))).To(Succeed())
				})
			}
		})
		c.bootAll()
		Expect(c.w.CutPath(1, 2, 0)).To(Succeed())
		Expect(c.w.RunUntil(105 * ms)).To(Succeed())
		var p0, p1 int
		for _, g := range c.cur(2).find("dgram") {
			if g.path == 0 {
				p0++
			} else {
				p1++
			}
		}
		Expect(p0).To(Equal(0))
		Expect(p1).To(Equal(10))
		Expect(c.cur(1).count("dgram", 2)).To(Equal(20))
	})

	It("loses datagrams at the configured rate", func() {
		c := newCluster(sim.Config{Seed: 4, Link: sim.Link{Latency: ms, Loss: 0.2}}, 2, chatter)
		c.bootAll()
		Expect(c.w.RunUntil(10*time.Second + 5*ms)).To(Succeed())
		got := c.cur(2).count("dgram", 1)
		Expect(got).To(BeNumerically("~", 800, 60)) // 1000 sent, 20% lost
	})

	It("duplicates datagrams", func() {
		c := newCluster(sim.Config{Seed: 5, Link: sim.Link{Latency: ms, Duplicate: 1}}, 2, chatter)
		c.bootAll()
		Expect(c.w.RunUntil(100*ms + 5*ms)).To(Succeed())
		Expect(c.cur(2).count("dgram", 1)).To(Equal(20))
	})

	It("reorders datagrams under jitter", func() {
		c := newCluster(sim.Config{Seed: 6, Link: sim.Link{Latency: 20 * ms, Jitter: 15 * ms}}, 2, chatter)
		c.bootAll()
		Expect(c.w.RunUntil(time.Second)).To(Succeed())
		inversions := 0
		last := 0
		for _, g := range c.cur(2).find("dgram") {
			n, _ := strconv.Atoi(g.data)
			if n < last {
				inversions++
			}
			last = n
		}
		Expect(inversions).To(BeNumerically(">", 5))
	})

	It("drops what does not fit a clogged link and serializes by bandwidth", func() {
		c := newCluster(sim.Config{Seed: 7, Link: sim.Link{Latency: ms, MaxInFlight: 5}}, 2, func(r *recNode) {
			r.onStart = func(r *recNode) {
				if r.id == 1 {
					for i := range 20 {
						Expect(r.env.Net().SendDatagram(2, 0, []byte{byte(i)})).To(Succeed())
					}
				}
			}
		})
		c.bootAll()
		Expect(c.w.Run()).To(Succeed())
		Expect(c.cur(2).count("dgram", 1)).To(Equal(5))

		c = newCluster(sim.Config{Seed: 7, Link: sim.Link{Latency: ms, Bandwidth: 1000}}, 2, func(r *recNode) {
			r.onStart = func(r *recNode) {
				if r.id == 1 {
					for range 10 {
						Expect(r.env.Net().SendDatagram(2, 0, make([]byte, 100))).To(Succeed())
					}
				}
			}
		})
		c.bootAll()
		Expect(c.w.Run()).To(Succeed())
		d := c.cur(2).find("dgram")
		Expect(d).To(HaveLen(10))
		Expect(d[0].at).To(Equal(101 * ms))
		Expect(d[9].at).To(Equal(1001 * ms))
	})

	It("refuses oversized datagrams and unknown peers", func() {
		c := newCluster(sim.Config{Seed: 8}, 2, func(r *recNode) {
			r.onStart = func(r *recNode) {
				Expect(r.env.Net().SendDatagram(9, 0, nil)).To(MatchError(node.ErrBadPeer))
				Expect(r.env.Net().SendDatagram(2, 1, nil)).To(MatchError(node.ErrBadPeer))
				Expect(r.env.Net().SendDatagram(2, 0, make([]byte, node.MaxDatagram+1))).To(MatchError(node.ErrTooLarge))
			}
		})
		Expect(c.w.Boot(1)).To(Succeed())
		Expect(c.w.Run()).To(Succeed())
		Expect(c.cur(1).log).To(HaveLen(1))
	})
})

// streamer opens a stream from node 1 to node 2 and sends n numbered
// messages as fast as the send buffer allows.
func streamer(n int) func(r *recNode) {
	return func(r *recNode) {
		r.onStart = func(r *recNode) {
			if r.id != 1 {
				return
			}
			s, err := r.env.Net().Dial(2, 0)
			Expect(err).NotTo(HaveOccurred())
			for i := 1; i <= n; i++ {
				Expect(s.Send([]byte(strconv.Itoa(i)))).To(Succeed())
			}
		}
	}
}

func inOrder(msgs []got) []int {
	var out []int
	for _, g := range msgs {
		n, err := strconv.Atoi(g.data)
		Expect(err).NotTo(HaveOccurred())
		out = append(out, n)
	}
	return out
}

func seqTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

var _ = Describe("simulated streams", func() {
	It("stay ordered and lose nothing under jitter and loss, paying retransmissions", func() {
		c := newCluster(sim.Config{Seed: 10, Link: sim.Link{Latency: 5 * ms, Jitter: 5 * ms, Loss: 0.2}}, 2, streamer(1000))
		c.bootAll()
		Expect(c.w.Run()).To(Succeed())
		Expect(inOrder(c.cur(2).find("msg"))).To(Equal(seqTo(1000)))
		Expect(c.w.Stats().Retrans).To(BeNumerically(">", 100))
	})

	It("cost at least one 200ms retransmission timeout for a lost segment", func() {
		// Loss 0.5 on one message: with this seed the first try is lost.
		c := newCluster(sim.Config{Seed: 11, Link: sim.Link{Latency: ms}}, 2, nil)
		c.bootAll()
		Expect(c.w.RunUntil(10 * ms)).To(Succeed())
		Expect(c.w.SetLink(1, 2, -1, sim.Link{Latency: ms, Loss: 1})).To(Succeed())
		var s node.Stream
		Expect(c.w.Do(1, func(h node.Handler) {
			var err error
			s, err = h.(*recNode).env.Net().Dial(2, 0)
			Expect(err).NotTo(HaveOccurred())
		})).To(Succeed())
		// Connection attempts fail while the link loses everything.
		Expect(c.w.RunUntil(20 * ms)).To(Succeed())
		c.w.Heal()
		Expect(c.w.RunUntil(2 * time.Second)).To(Succeed())
		Expect(c.cur(1).find("open")).To(HaveLen(1))
		Expect(c.cur(1).find("open")[0].at).To(BeNumerically(">=", 1010*ms)) // SYN retried after 1s
		Expect(c.w.SetLink(1, 2, -1, sim.Link{Latency: ms, Loss: 1})).To(Succeed())
		sent := c.w.Now()
		Expect(s.Send([]byte("x"))).To(Succeed())
		c.w.After(100*ms, c.w.Heal)
		Expect(c.w.RunUntil(sent + time.Second)).To(Succeed())
		m := c.cur(2).find("msg")
		Expect(m).To(HaveLen(1))
		Expect(m[0].at - sent).To(Equal(201 * ms)) // first RTO 200ms, then 1ms latency
	})

	It("stall under a partition and deliver in order once it heals", func() {
		c := newCluster(sim.Config{Seed: 12, Link: sim.Link{Latency: ms}}, 2, nil)
		c.bootAll()
		var s node.Stream
		Expect(c.w.Do(1, func(h node.Handler) { s, _ = h.(*recNode).env.Net().Dial(2, 0) })).To(Succeed())
		Expect(c.w.RunUntil(10 * ms)).To(Succeed())
		Expect(c.w.Partition([]node.ID{1}, []node.ID{2})).To(Succeed())
		for i := 1; i <= 50; i++ {
			Expect(s.Send([]byte(strconv.Itoa(i)))).To(Succeed())
		}
		Expect(c.w.RunUntil(3 * time.Second)).To(Succeed())
		Expect(c.cur(2).find("msg")).To(BeEmpty())
		c.w.Heal()
		Expect(c.w.RunUntil(8 * time.Second)).To(Succeed())
		msgs := c.cur(2).find("msg")
		Expect(inOrder(msgs)).To(Equal(seqTo(50)))
		Expect(msgs[0].at).To(BeNumerically(">", 3*time.Second))
		Expect(c.cur(1).find("closed")).To(BeEmpty())
	})

	It("break at both ends when a stall outlasts the stream timeout", func() {
		c := newCluster(sim.Config{Seed: 13, Link: sim.Link{Latency: ms}, StreamTimeout: 5 * time.Second}, 2, nil)
		c.bootAll()
		var s node.Stream
		Expect(c.w.Do(1, func(h node.Handler) { s, _ = h.(*recNode).env.Net().Dial(2, 0) })).To(Succeed())
		Expect(c.w.RunUntil(10 * ms)).To(Succeed())
		Expect(c.w.Partition([]node.ID{1}, []node.ID{2})).To(Succeed())
		Expect(s.Send([]byte("lost"))).To(Succeed())
		Expect(c.w.RunUntil(30 * time.Second)).To(Succeed())
		for _, id := range []node.ID{1, 2} {
			cl := c.cur(id).find("closed")
			Expect(cl).To(HaveLen(1), "n%d", id)
			Expect(cl[0].err).To(MatchError(node.ErrStreamTimeout))
			Expect(cl[0].at).To(BeNumerically("~", 10*ms+5*time.Second, 7*time.Second))
		}
		Expect(s.Send([]byte("after"))).To(MatchError(node.ErrStreamClosed))
	})

	It("are reset when the peer restarted", func() {
		c := newCluster(sim.Config{Seed: 14, Link: sim.Link{Latency: ms}}, 2, nil)
		c.bootAll()
		var s node.Stream
		Expect(c.w.Do(1, func(h node.Handler) { s, _ = h.(*recNode).env.Net().Dial(2, 0) })).To(Succeed())
		Expect(c.w.RunUntil(10 * ms)).To(Succeed())
		Expect(c.w.Crash(2)).To(Succeed())
		Expect(c.w.Restart(2)).To(Succeed())
		Expect(c.w.RunUntil(20 * ms)).To(Succeed())
		Expect(s.Send([]byte("to the old one"))).To(Succeed())
		Expect(c.w.RunUntil(100 * ms)).To(Succeed())
		cl := c.cur(1).find("closed")
		Expect(cl).To(HaveLen(1))
		Expect(cl[0].err).To(MatchError(node.ErrStreamReset))
		Expect(c.cur(2).find("msg")).To(BeEmpty())
	})

	It("push back when the send buffer is full and say when it has room", func() {
		c := newCluster(sim.Config{Seed: 15, Link: sim.Link{Latency: ms}, StreamBuffer: 1000}, 2, nil)
		c.bootAll()
		var s node.Stream
		Expect(c.w.Do(1, func(h node.Handler) { s, _ = h.(*recNode).env.Net().Dial(2, 0) })).To(Succeed())
		Expect(c.w.RunUntil(10 * ms)).To(Succeed())
		sent := 0
		for {
			err := s.Send(make([]byte, 300))
			if err != nil {
				Expect(err).To(MatchError(node.ErrStreamFull))
				break
			}
			sent++
		}
		Expect(sent).To(Equal(3))
		Expect(s.Buffered()).To(Equal(900))
		Expect(c.w.RunUntil(20 * ms)).To(Succeed())
		Expect(c.cur(1).find("writable")).To(HaveLen(1))
		Expect(c.cur(2).find("msg")).To(HaveLen(3))
	})

	It("report a backlog over a mark and say once when it drained below it", func() {
		c := newCluster(sim.Config{Seed: 15, Link: sim.Link{Latency: ms}, StreamBuffer: 1000}, 2, nil)
		c.bootAll()
		var s node.Stream
		Expect(c.w.Do(1, func(h node.Handler) { s, _ = h.(*recNode).env.Net().Dial(2, 0) })).To(Succeed())
		Expect(c.w.RunUntil(10 * ms)).To(Succeed())
		for range 3 {
			Expect(s.Send(make([]byte, 300))).To(Succeed())
		}
		Expect(s.Backlogged(901)).To(BeFalse())
		Expect(s.Backlogged(500)).To(BeTrue())
		Expect(c.w.RunUntil(20 * ms)).To(Succeed())
		Expect(c.cur(1).find("writable")).To(HaveLen(1))
		Expect(s.Buffered()).To(BeNumerically("<", 500))
		Expect(c.cur(2).find("msg")).To(HaveLen(3))
	})

	It("close cleanly after what was queued", func() {
		c := newCluster(sim.Config{Seed: 16, Link: sim.Link{Latency: ms, Jitter: ms}}, 2, func(r *recNode) {
			r.onStart = func(r *recNode) {
				if r.id != 1 {
					return
				}
				s, err := r.env.Net().Dial(2, 0)
				Expect(err).NotTo(HaveOccurred())
				for i := 1; i <= 10; i++ {
					Expect(s.Send([]byte(strconv.Itoa(i)))).To(Succeed())
				}
				s.Close() // before the connection is even up
				Expect(s.Send([]byte("late"))).To(MatchError(node.ErrStreamClosed))
			}
		})
		c.bootAll()
		Expect(c.w.Run()).To(Succeed())
		Expect(inOrder(c.cur(2).find("msg"))).To(Equal(seqTo(10)))
		cl := c.cur(2).find("closed")
		Expect(cl).To(HaveLen(1))
		Expect(cl[0].err).NotTo(HaveOccurred())
	})
})

var _ = Describe("simulated nodes", func() {
	It("lose unsynced writes, timers and memory when they crash", func() {
		c := newCluster(sim.Config{Seed: 20}, 1, func(r *recNode) {
			r.onStart = func(r *recNode) {
				st := r.env.Storage()
				if r.boot == 1 {
					Expect(st.Put("synced", []byte("a"))).To(Succeed())
					Expect(st.Sync()).To(Succeed())
					Expect(st.Put("unsynced", []byte("b"))).To(Succeed())
					Expect(st.Delete("synced")).To(Succeed()) // unsynced delete
					r.env.Clock().AfterFunc(time.Second, func() { r.add(got{kind: "timer"}) })
				}
			}
		})
		c.bootAll()
		Expect(c.w.RunUntil(500 * ms)).To(Succeed())
		Expect(c.w.Crash(1)).To(Succeed())
		Expect(c.w.State(1)).To(Equal(sim.Crashed))
		Expect(c.w.Restart(1)).To(Succeed())
		Expect(c.w.RunUntil(5 * time.Second)).To(Succeed())
		Expect(c.incs[1]).To(HaveLen(2))
		Expect(c.incs[1][0].find("timer")).To(BeEmpty())
		Expect(c.incs[1][1].find("timer")).To(BeEmpty())
		st := c.w.Storage(1)
		v, ok, _ := st.Get("synced")
		Expect(ok).To(BeTrue())
		Expect(string(v)).To(Equal("a"))
		_, ok, _ = st.Get("unsynced")
		Expect(ok).To(BeFalse())
		Expect(c.w.BootCount(1)).To(Equal(node.Boot(2)))
	})

	It("hand datagrams in flight to whoever runs at arrival, never to the crashed incarnation", func() {
		c := newCluster(sim.Config{Seed: 21, Link: sim.Link{Latency: 50 * ms}}, 2, chatter)
		c.bootAll()
		Expect(c.w.RunUntil(105 * ms)).To(Succeed())
		Expect(c.w.Crash(2)).To(Succeed())
		Expect(c.w.Restart(2)).To(Succeed())
		Expect(c.w.RunUntil(106 * ms)).To(Succeed())
		// The datagrams in flight to n2 when it crashed arrive at the new
		// incarnation's host: a datagram is addressed to a node, not to an
		// incarnation, which is why ICS stamps incarnations in its frames.
		Expect(c.incs[2][0].count("dgram", 1)).To(Equal(5)) // sent at 10..50ms
		Expect(c.w.RunUntil(155 * ms)).To(Succeed())
		Expect(c.incs[2][0].count("dgram", 1)).To(Equal(5))
		Expect(c.incs[2][1].count("dgram", 1)).To(Equal(5)) // sent at 60..100ms
	})

	It("process nothing while paused and catch up on resume, with the clock running", func() {
		c := newCluster(sim.Config{Seed: 22, Link: sim.Link{Latency: ms}}, 3, chatter)
		c.bootAll()
		Expect(c.w.RunUntil(100 * ms)).To(Succeed())
		Expect(c.w.Pause(2)).To(Succeed())
		before := len(c.cur(2).log)
		Expect(c.w.RunUntil(1100 * ms)).To(Succeed())
		Expect(c.cur(2).log).To(HaveLen(before))
		Expect(c.w.Resume(2)).To(Succeed())
		var nowAtResume time.Duration
		Expect(c.w.Do(2, func(h node.Handler) { nowAtResume = h.(*recNode).env.Clock().Now() })).To(Succeed())
		Expect(c.w.RunUntil(1100 * ms)).To(Succeed())
		// Held datagrams (up to the socket buffer) arrive at resume time.
		after := c.cur(2).log[before:]
		Expect(len(after)).To(BeNumerically(">", 100))
		for _, g := range after {
			Expect(g.at).To(Equal(1100 * ms))
		}
		Expect(nowAtResume).To(Equal(1100 * ms))
	})

	It("drift and step only the clock of the node they are applied to", func() {
		fired := map[node.ID]time.Duration{}
		c := newCluster(sim.Config{Seed: 23}, 2, func(r *recNode) {
			r.onStart = func(r *recNode) {
				r.env.Clock().AfterFunc(10*time.Second, func() { fired[r.id] = r.w.Now() })
			}
		})
		c.bootAll()
		Expect(c.w.SetClock(2, time.Hour, 100000)).To(Succeed()) // 10% fast, +1h
		Expect(c.w.RunUntil(20 * time.Second)).To(Succeed())
		Expect(fired[1]).To(Equal(10 * time.Second))
		Expect(fired[2]).To(BeNumerically("~", 9090909091, 2)) // 10s / 1.1
		e1, e2 := c.cur(1).env.Clock(), c.cur(2).env.Clock()
		Expect(e1.Now()).To(Equal(20 * time.Second))
		Expect(e2.Now()).To(Equal(22 * time.Second))
		Expect(e2.Wall().Sub(e1.Wall())).To(Equal(time.Hour + 2*time.Second))
	})

	It("refuse actions in the wrong state", func() {
		c := newCluster(sim.Config{Seed: 24}, 2, nil)
		Expect(c.w.Crash(1)).To(MatchError(sim.ErrNodeState))
		Expect(c.w.Boot(1)).To(Succeed())
		Expect(c.w.Boot(1)).To(MatchError(sim.ErrNodeState))
		Expect(c.w.Restart(1)).To(MatchError(sim.ErrNodeState))
		Expect(c.w.Resume(1)).To(MatchError(sim.ErrNodeState))
		Expect(c.w.Pause(9)).To(MatchError(sim.ErrNoNode))
		Expect(c.w.Partition([]node.ID{1}, []node.ID{1})).To(MatchError(sim.ErrBadFault))
		Expect(c.w.SetLink(1, 2, 0, sim.Link{Loss: 2})).To(MatchError(sim.ErrBadFault))
		Expect(fmt.Sprint(c.w.State(1))).To(Equal("running"))
	})
})
