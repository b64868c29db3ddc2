package sim_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/clusterinfra/ci/sim"
)

var _ = Describe("a node's Loop", func() {
	It("runs the world until what Do started is done, in simulated time", func() {
		c := newCluster(sim.Config{Seed: 1}, 1, nil)
		c.bootAll()
		l := c.w.Loop(1)
		done := make(chan struct{})
		var started time.Duration
		Expect(l.Do(func() {
			r := c.cur(1)
			started = r.env.Clock().Now()
			r.env.Clock().AfterFunc(300*ms, func() { close(done) })
		})).To(Succeed())
		Expect(l.Wait(context.Background(), done)).To(Succeed())
		Expect(c.w.Now() - started).To(Equal(300 * ms))
	})

	It("gives up when the incarnation it called crashes", func() {
		c := newCluster(sim.Config{Seed: 1}, 1, chatter)
		c.bootAll()
		l := c.w.Loop(1)
		never := make(chan struct{})
		Expect(l.Do(func() {})).To(Succeed())
		c.w.At(50*ms, func() { Expect(c.w.Crash(1)).To(Succeed()) })
		Expect(l.Wait(context.Background(), never)).To(MatchError(sim.ErrNodeState))
		Expect(c.w.Now()).To(Equal(50 * ms))

		// A new incarnation is not the one the call was made on.
		Expect(c.w.Restart(1)).To(Succeed())
		Expect(l.Do(func() {})).To(Succeed())
		c.w.At(c.w.Now()+20*ms, func() {
			Expect(c.w.Crash(1)).To(Succeed())
			Expect(c.w.Restart(1)).To(Succeed())
		})
		Expect(l.Wait(context.Background(), never)).To(MatchError(sim.ErrNodeState))
	})

	It("gives up when nothing is left to happen, or ctx ends", func() {
		c := newCluster(sim.Config{Seed: 1}, 1, nil)
		c.bootAll()
		l := c.w.Loop(1)
		never := make(chan struct{})
		Expect(l.Do(func() {})).To(Succeed())
		Expect(l.Wait(context.Background(), never)).To(MatchError(sim.ErrIdle))

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		Expect(l.Wait(ctx, never)).To(MatchError(context.Canceled))
	})

	It("refuses a node that is not running", func() {
		c := newCluster(sim.Config{Seed: 1}, 1, nil)
		Expect(c.w.Loop(1).Do(func() {})).To(MatchError(sim.ErrNodeState))
	})
})
