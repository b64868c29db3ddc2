package clms

import (
	"slices"
	"time"

	"github.com/clusterinfra/ci/node"
)

// becomeMaster starts master duties at the start of a term. What the old
// master knew about liveness is gone, so everyone gets a grace period,
// except the old master itself, whose silence this candidate measured.
func (s *Service) becomeMaster() {
	now := s.now()
	s.m = &masterState{
		epoch: s.term, since: now,
		heard: map[node.ID]*heard{}, suspects: map[node.ID]*suspicion{},
		pending: map[node.ID]pendingProp{}, joiners: map[node.ID]joiner{},
		sent: map[node.ID]sentMark{},
	}
	// Joins heard before this term, recent enough that the joiner is
	// likely still waiting, are admitted once the lease is held.
	for id, j := range s.joinSeen {
		if now-j.at < 2*s.cfg.ElectionTimeout {
			s.m.joiners[id] = j
		}
	}
	clear(s.joinSeen)
	if !s.memberNow() && !s.leaving && !s.departed {
		s.m.joiners[s.self] = joiner{inc: s.inc, at: now}
	}
	for id, r := range s.nodes {
		if r.state.live() {
			at := now
			if slices.Contains(s.cfg.Candidates, id) && id != s.self {
				at = min(now, s.leaderMsgFrom(id))
			}
			s.m.heard[id] = &heard{at: at, inc: r.inc}
		}
	}
	s.masterID, s.masterEpoch, s.beaconAt = s.self, s.term, now
	s.leasePing() // a new master holds no lease until the voters answer
	s.obs(Event{Kind: EvMaster, Node: s.self, Epoch: s.term})
	s.logf("n%d is master of epoch %d", s.self, s.term)
}

// leaderMsgFrom is when this candidate last heard from id as leader (the
// previous master), or now if id was not the leader.
func (s *Service) leaderMsgFrom(id node.ID) time.Duration {
	if id == s.prevLead {
		return s.leaderMsgAt
	}
	return s.now()
}

func (s *Service) stepDown() {
	if s.m == nil {
		return
	}
	for _, id := range sortedKeys(s.m.suspects) { // sorted: stopping timers must replay alike
		if sp := s.m.suspects[id]; sp.timer != nil {
			sp.timer.Stop()
		}
	}
	s.m = nil
	if s.masterID == s.self {
		// Not master any more: find the new one from its beacons (or by
		// asking every candidate) rather than talking to ourselves.
		s.masterID, s.beaconAt = 0, -1<<62
	}
}

// propose puts a transition to the candidates, if this node may: it must
// be the master and hold its lease.
func (s *Service) propose(id node.ID, inc uint64, from, to State, cause Cause) {
	if s.m == nil || !s.holdsQuorum() {
		return
	}
	if p, ok := s.m.pending[id]; ok && s.now()-p.at < 2*s.cfg.ElectionTimeout {
		return // one proposal per node at a time; retried if it got lost
	}
	p := proposal{node: id, inc: inc, from: from, to: to, cause: cause, time: s.env.Clock().Wall().UnixNano(), master: s.self}
	if err := s.rn.Propose(p.encode()); err != nil {
		return
	}
	s.m.pending[id] = pendingProp{at: s.now(), to: to}
	s.obs(Event{Kind: EvProposed, Node: s.self, Epoch: s.term, LeaseVoters: s.leaseVoters(s.now() - s.cfg.ElectionTimeout),
		T: Transition{Time: time.Unix(0, p.time).UTC(), Node: id, Inc: inc, From: from, To: to, Cause: cause, Epoch: s.term, Master: s.self}})
	s.ready()
}

// masterDuties runs on every tick of the master.
func (s *Service) masterDuties() {
	m := s.m
	now := s.now()
	// Detection.
	for _, id := range s.sortedNodes() {
		r := s.nodes[id]
		if id == s.self || !r.state.live() {
			continue
		}
		h := m.heard[id]
		if h == nil || h.inc != r.inc {
			h = &heard{at: max(m.since, now), inc: r.inc}
			m.heard[id] = h
		}
		silence := now - h.at
		suspect := silence > s.cfg.NodedownAfter
		if s.cfg.Detector != nil {
			suspect = s.cfg.Detector.Suspect(id, silence)
		}
		if suspect && m.suspects[id] == nil {
			s.suspect(id, r.inc)
		}
	}
	// Moving nodes along their lifecycle: the same steps as after news
	// from a node, taken for every node once a tick in case news was lost.
	for _, id := range s.sortedNodes() {
		s.masterStep(id, false)
	}
	s.masterStep(s.self, true)
	// Admissions.
	for _, id := range sortedKeys(m.joiners) {
		j := m.joiners[id]
		if now-j.at > 2*s.cfg.ElectionTimeout {
			delete(m.joiners, id)
			continue
		}
		s.admit(id, j.inc)
	}
	s.pushAll()
}

// cleanedEverywhere reports whether every node still in the cluster that
// owes cleanup for entry num has done it.
func (s *Service) cleanedEverywhere(target node.ID, num uint64) bool {
	for id, r := range s.nodes {
		if id == target || !(r.state == StateUp || r.state == StateShutdown || r.state == StateGoingDown) {
			continue
		}
		if r.num > num && r.state == StateUp && s.hist[r.num-1].From == StateComingUp {
			continue // joined after the entry: it owes nothing for it
		}
		var cleaned uint64
		if id == s.self {
			if r.inc != s.inc {
				return false
			}
			cleaned = s.cleaned
		} else if h := s.m.heard[id]; h != nil && h.inc == r.inc {
			cleaned = h.cleaned
		}
		if cleaned < num {
			return false
		}
	}
	return true
}

// suspect starts indirect probes of a silent node: before declaring it
// down, the master asks a few others to reach it, so that one bad link
// does not evict a healthy node.
func (s *Service) suspect(id node.ID, inc uint64) {
	m := s.m
	m.nonce++
	sp := &suspicion{start: s.now(), nonce: m.nonce<<16 | uint64(s.self)}
	m.suspects[id] = sp
	var helpers []node.ID
	for _, h := range s.view {
		if h != id && h != s.self {
			helpers = append(helpers, h)
		}
	}
	r := s.env.Rand()
	r.Shuffle(len(helpers), func(i, j int) { helpers[i], helpers[j] = helpers[j], helpers[i] })
	if len(helpers) > s.cfg.Probers {
		helpers = helpers[:s.cfg.Probers]
	}
	for _, h := range helpers {
		s.send(h, &message{kind: mProbeReq, target: id, targetInc: inc, nonce: sp.nonce})
	}
	s.send(id, &message{kind: mPing, nonce: sp.nonce})
	if s.probes == nil {
		s.probes = map[uint64]probeWait{}
	}
	// Confirm we are still master (as raft's ReadIndex does): voters
	// must answer a ping sent after the suspicion began.
	s.leasePing()
	wait := s.cfg.Heartbeat + s.cfg.Heartbeat/2
	sp.timer = s.env.Clock().AfterFunc(wait, func() { s.verdict(id, sp) })
}

// verdict declares a suspect down once probes had their chance and a
// quorum of candidates confirmed this master after the suspicion began.
func (s *Service) verdict(id node.ID, sp *suspicion) {
	if s.m == nil || s.m.suspects[id] != sp {
		return
	}
	r := s.nodes[id]
	if r == nil || !r.state.live() {
		delete(s.m.suspects, id)
		return
	}
	if s.leaseVoters(sp.start) <= len(s.cfg.Candidates)/2 {
		sp.timer = s.env.Clock().AfterFunc(s.cfg.Heartbeat/2, func() { s.verdict(id, sp) })
		if s.now()-sp.start > 2*s.cfg.ElectionTimeout {
			delete(s.m.suspects, id) // no quorum: not ours to decide
		}
		return
	}
	delete(s.m.suspects, id)
	s.logf("n%d declares n%d:%s down", s.self, id, IncString(r.inc))
	s.propose(id, r.inc, r.state, StateKCleanup, CauseNodedown)
}

func (s *Service) cleared(id node.ID) {
	sp := s.m.suspects[id]
	if sp == nil {
		return
	}
	if sp.timer != nil {
		sp.timer.Stop()
	}
	delete(s.m.suspects, id)
	if h := s.m.heard[id]; h != nil {
		h.at = s.now()
	}
}

func (s *Service) onHeartbeat(from node.ID, inc uint64, hb *message) {
	if s.m == nil {
		return
	}
	if len(s.cfg.Allowed) > 0 && !slices.Contains(s.cfg.Allowed, from) {
		return // refused at its join; it gets nothing, not even the history
	}
	h := s.m.heard[from]
	if h == nil {
		h = &heard{}
		s.m.heard[from] = h
	}
	if inc < h.inc {
		return
	}
	moved := hb.cleaned > h.cleaned || inc != h.inc
	h.at, h.inc, h.applied, h.cleaned, h.flags = s.now(), inc, hb.applied, hb.cleaned, hb.flags
	if sp := s.m.suspects[from]; sp != nil {
		if r := s.nodes[from]; r != nil && r.inc == inc {
			s.cleared(from)
		}
	}
	if from != s.self && hb.applied < uint64(len(s.hist)) {
		// Behind: send what it lacks now, unless a beacon already on its
		// way carries all of it.
		if sent, ok := s.inFlight(from, inc); !ok || sent < uint64(len(s.hist)) {
			s.push(from, inc, hb.applied+1)
		}
	}
	s.masterStep(from, moved)
}

// masterStep moves node id along at once after news from it, rather than
// at the next tick: leaves and cleanups then take a round trip, not a
// heartbeat. It looks at id itself and, when id reported cleanup
// progress, at the nodes being cleaned up after: never at every node,
// which would make each heartbeat cost O(n).
func (s *Service) masterStep(id node.ID, cleanedMoved bool) {
	if s.m == nil || s.inStep {
		return
	}
	s.inStep = true
	defer func() { s.inStep = false }()
	if r := s.nodes[id]; r != nil {
		h := s.m.heard[id]
		if id == s.self {
			h = s.selfHeard()
		}
		switch {
		case h == nil || h.inc != r.inc:
		case r.state == StateComingUp && h.applied >= r.num:
			s.propose(id, r.inc, StateComingUp, StateUp, CauseJoin)
		case r.state == StateUp && h.flags&flagLeave != 0:
			s.propose(id, r.inc, StateUp, StateShutdown, CauseLeave)
		case r.state == StateShutdown && h.flags&flagLeaveReady != 0 && h.applied >= r.num:
			s.propose(id, r.inc, StateShutdown, StateKCleanup, CauseLeave)
		}
	}
	if !cleanedMoved {
		return
	}
	for _, c := range sortedKeys(s.cleaning) {
		r := s.nodes[c]
		if s.cleanedEverywhere(c, r.num) {
			next := StateUCleanup
			if r.state == StateUCleanup {
				next = StateDown
			}
			s.propose(c, r.inc, r.state, next, CauseCleanup)
		}
	}
}

// selfHeard is the master's own entry, as its heartbeat would say.
func (s *Service) selfHeard() *heard {
	h := &heard{at: s.now(), inc: s.inc, applied: uint64(len(s.hist)), cleaned: s.cleaned}
	if s.leaving {
		h.flags = flagLeave
		if s.leaveReady {
			h.flags |= flagLeaveReady
		}
	}
	return h
}

func (s *Service) onJoin(from node.ID, inc uint64) {
	if s.m == nil {
		allowed := len(s.cfg.Allowed) == 0 || slices.Contains(s.cfg.Allowed, from)
		if s.cand && allowed && len(s.joinSeen) < int(node.MaxID) { // a bound
			if s.joinSeen == nil {
				s.joinSeen = map[node.ID]joiner{}
			}
			s.joinSeen[from] = joiner{inc: inc, at: s.now()}
		}
		return
	}
	if len(s.cfg.Allowed) > 0 && !slices.Contains(s.cfg.Allowed, from) {
		s.send(from, &message{kind: mRefused, reason: "not in the allowed members list"})
		if s.now()-s.refusedLogAt > time.Second {
			s.refusedLogAt = s.now()
			s.logf("n%d refused n%d: not in the allowed members list", s.self, from)
			s.obs(Event{Kind: EvRefused, Node: s.self, Target: from, Inc: inc})
		}
		return
	}
	if len(s.m.joiners) > 4*int(node.MaxID) {
		return // a bound
	}
	s.m.joiners[from] = joiner{inc: inc, at: s.now()}
	s.admit(from, inc)
	s.push(from, inc, 1)
}

// admit moves a joining incarnation towards COMINGUP: at once if its node
// is out, or by first taking its older incarnation out (a join from n:k+1
// while n:k is up is itself the nodedown of n:k).
func (s *Service) admit(id node.ID, inc uint64) {
	r := s.rec(id)
	switch {
	case inc <= r.inc:
		if r.state.live() && inc == r.inc {
			delete(s.m.joiners, id)
		}
	case r.state == StateNeverUp || r.state == StateDown:
		s.propose(id, inc, r.state, StateComingUp, CauseJoin)
	case r.state.live():
		s.propose(id, r.inc, r.state, StateKCleanup, CauseRejoin)
	}
}

// push sends node id the beacon, with the entries from num on if it is
// behind.
func (s *Service) push(id node.ID, inc uint64, from uint64) {
	m := &message{kind: mBeacon, epoch: s.term, quorum: s.holdsQuorum(), last: uint64(len(s.hist))}
	if r := s.nodes[id]; r != nil {
		m.yourInc, m.yourState = r.inc, r.state
	}
	if from == 0 {
		from = 1
	}
	if !slices.Contains(s.cfg.Candidates, id) {
		if sent, ok := s.inFlight(id, inc); ok && sent >= from {
			from = sent + 1
		}
		size := 64
		for n := from; n <= uint64(len(s.hist)) && len(m.entries) < 512; n++ {
			t := s.hist[n-1]
			size += transitionSize + len(t.Cause)
			if size > 48<<10 {
				break
			}
			m.entries = append(m.entries, t)
		}
		s.entriesSent += uint64(len(m.entries))
		if s.m != nil && len(m.entries) > 0 && id != s.self {
			s.m.sent[id] = sentMark{inc: inc, num: m.entries[len(m.entries)-1].Num, at: s.now()}
		}
	}
	if id == s.self {
		s.onBeacon(s.self, m)
		return
	}
	s.send(id, m)
}

// inFlight returns the last entry sent to incarnation inc of id while
// it may still be on its way (less than two heartbeats ago, time for the
// heartbeat that acknowledges it); ok is false otherwise, and then the
// next beacon resends everything past what id applied.
func (s *Service) inFlight(id node.ID, inc uint64) (num uint64, ok bool) {
	if s.m == nil {
		return 0, false
	}
	sm, found := s.m.sent[id]
	if !found || sm.inc != inc || s.now()-sm.at >= 2*s.cfg.Heartbeat {
		return 0, false
	}
	return sm.num, true
}

// pushAll sends every live node and joiner its beacon.
func (s *Service) pushAll() {
	if s.m == nil {
		return
	}
	for _, id := range s.sortedNodes() {
		r := s.nodes[id]
		if !r.state.live() && r.state != StateKCleanup && r.state != StateUCleanup {
			continue
		}
		var applied uint64
		if h := s.m.heard[id]; h != nil && h.inc == r.inc {
			applied = h.applied
		}
		s.push(id, r.inc, applied+1)
	}
	for _, id := range sortedKeys(s.m.joiners) {
		if r := s.nodes[id]; r == nil || !r.state.live() {
			s.push(id, s.m.joiners[id].inc, 1)
		}
	}
}

func (s *Service) sortedNodes() []node.ID { return sortedKeys(s.nodes) }

func sortedKeys[V any](m map[node.ID]V) []node.ID {
	ids := make([]node.ID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
