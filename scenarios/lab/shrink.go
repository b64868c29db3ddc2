package lab

import (
	"slices"
	"time"

	"github.com/clusterinfra/ci/scenarios"
)

// Signature is how a failure is recognized while shrinking: the broken
// invariant, or else the expectation that did not hold.
func (f *Failure) Signature() string {
	if f.Invariant > 0 {
		return "invariant " + string(rune('0'+f.Invariant))
	}
	return f.Expected
}

// Shrink looks for a smaller scenario that fails the same way as sc with
// this seed: it removes steps, shortens nemesis runs and drops their
// faults while the failure reproduces, and returns the smallest it found
// with its failure. tries bounds the number of runs. It returns nil if sc
// does not fail.
func Shrink(sc *scenarios.Scenario, seed uint64, tries int) (*scenarios.Scenario, *Failure) {
	res := Run(sc, Options{Seed: seed})
	if res.Passed || res.Failure == nil {
		return nil, nil
	}
	want := res.Failure.Signature()
	best, bestF := clone(sc), res.Failure
	fails := func(c *scenarios.Scenario) *Failure {
		if tries <= 0 {
			return nil
		}
		tries--
		r := Run(c, Options{Seed: seed})
		if r.Passed || r.Failure == nil || r.Failure.Signature() != want {
			return nil
		}
		return r.Failure
	}
	for changed := true; changed && tries > 0; {
		changed = false
		// Drop steps after the failing one: they never ran.
		if bestF.Step > 0 && bestF.Step < len(best.Steps) {
			c := clone(best)
			c.Steps = c.Steps[:bestF.Step]
			if f := fails(c); f != nil {
				best, bestF, changed = c, f, true
			}
		}
		// Remove one step at a time, last first.
		for i := len(best.Steps) - 1; i >= 0 && tries > 0; i-- {
			c := clone(best)
			c.Steps = slices.Delete(c.Steps, i, i+1)
			if len(c.Steps) == 0 {
				continue
			}
			if f := fails(c); f != nil {
				best, bestF, changed = c, f, true
			}
		}
		// Make nemesis runs shorter and poorer.
		for i := range best.Steps {
			st := &best.Steps[i]
			if st.Nemesis == nil {
				continue
			}
			if st.Nemesis.Duration > time.Second {
				c := clone(best)
				c.Steps[i].Nemesis.Duration /= 2
				if f := fails(c); f != nil {
					best, bestF, changed = c, f, true
				}
			}
			for k := len(best.Steps[i].Nemesis.Faults) - 1; k >= 0 && len(best.Steps[i].Nemesis.Faults) > 1; k-- {
				c := clone(best)
				c.Steps[i].Nemesis.Faults = slices.Delete(c.Steps[i].Nemesis.Faults, k, k+1)
				if f := fails(c); f != nil {
					best, bestF, changed = c, f, true
				}
			}
		}
	}
	return best, bestF
}

// clone copies a scenario deeply enough for Shrink to edit steps.
func clone(sc *scenarios.Scenario) *scenarios.Scenario {
	c := *sc
	c.Steps = slices.Clone(sc.Steps)
	for i := range c.Steps {
		if n := c.Steps[i].Nemesis; n != nil {
			nn := *n
			nn.Faults = slices.Clone(n.Faults)
			c.Steps[i].Nemesis = &nn
		}
	}
	return &c
}
