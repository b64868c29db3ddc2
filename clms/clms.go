package clms

import (
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/clusterinfra/ci/ics"
	"github.com/clusterinfra/ci/node"
)

// Service is CLMS on one node: a deterministic state machine on the
// node's Env and ICS endpoint. Not safe for concurrent use: call it only
// from the node's callbacks.
type Service struct {
	env  node.Env
	ep   *ics.Endpoint
	cfg  Config
	self node.ID
	cand bool
	inc  uint64 // our incarnation (the ICS endpoint's)
	sbuf []byte // send's encoding buffer
	// hbSoon asks for a heartbeat as soon as the current message is
	// handled (see flushHeartbeat).
	hbSoon bool

	// Consensus, on candidates only.
	rn          *raft.RawNode
	log         *raftLog
	leaderMsgAt time.Duration // last message from the raft leader
	electTimer  node.Timer
	voterSeen   map[node.ID]time.Duration // leader: last answer of each voter
	// joinSeen are the joins a candidate heard while not master, so that
	// it can admit them as soon as it becomes master instead of waiting
	// for the joiners to learn of it and ask again (a heartbeat or two).
	joinSeen      map[node.ID]joiner
	lead          node.ID
	prevLead      node.ID
	inStep        bool
	term          uint64
	leader        bool
	persistedIdx  uint64
	appliedIdx    uint64
	skippedStales uint64
	entriesSent   uint64 // history entries carried by this node's beacons

	// The replicated state, as applied here.
	hist  []Transition
	nodes map[node.ID]*nodeRec
	view  []node.ID

	// This node's own lifecycle.
	cleaned      uint64 // cleanup duties done for every entry up to this
	jobs         []*cleanupJob
	leaving      bool
	leaveAt      time.Duration
	leaveReady   bool
	departed     bool
	joinedOnce   bool
	quorate      bool
	lastFetchAt  time.Duration
	lastHBAt     time.Duration
	lastTickAt   time.Duration
	tickTimer    node.Timer
	masterID     node.ID
	masterEpoch  uint64
	beaconAt     time.Duration // last beacon from masterID
	qBeaconAt    time.Duration // last beacon saying the master holds a quorum
	beaconInc    uint64
	beaconState  State
	refusedLogAt time.Duration

	m      *masterState // non-nil while this node is the raft leader
	probes map[uint64]probeWait

	obs        func(Event)
	subs       []func(uint64)
	notifyDue  bool
	subsystems []Subsystem
	keyHolders map[string]node.ID
	keyRunning map[string]bool
	cleaning   map[node.ID]bool // nodes in KCLEANUP or UCLEANUP
	pushDue    bool
	keyFuncs   map[string]keyFuncs
}

type nodeRec struct {
	state State
	inc   uint64
	num   uint64 // the entry that put it in this state
}

type cleanupJob struct {
	num     uint64
	waiting int
}

type keyFuncs struct{ start, stop func() }

// masterState is what the master keeps in memory; a new master rebuilds it.
type masterState struct {
	epoch    uint64
	since    time.Duration
	heard    map[node.ID]*heard
	suspects map[node.ID]*suspicion
	pending  map[node.ID]pendingProp
	joiners  map[node.ID]joiner
	nonce    uint64
	// leased is set once the new master first holds its lease: it then
	// does its duties at once (admitting the joiners it already knows)
	// rather than at its next tick.
	leased bool
	// sent is, per node, the last history entry a beacon carried to one
	// of its incarnations, and when. Until the heartbeat that
	// acknowledges them can have come back, later beacons carry only
	// newer entries: resending everything past what a node applied on
	// every beacon made forming n nodes cost O(n²) entries per round.
	sent map[node.ID]sentMark
}

type sentMark struct {
	inc, num uint64
	at       time.Duration
}

type heard struct {
	at      time.Duration
	inc     uint64
	applied uint64
	cleaned uint64
	flags   uint8
}

type suspicion struct {
	start time.Duration
	nonce uint64
	timer node.Timer
}

type pendingProp struct {
	at time.Duration
	to State
}

type joiner struct {
	inc uint64
	at  time.Duration
}

// EventKind says what an Event reports.
type EventKind uint8

// What a node emits for checkers outside it.
const (
	EvApplied     EventKind = iota + 1 // T applied; View is the view after it
	EvQuorate                          // the node's reported quorate flag changed
	EvProposed                         // this node proposed T (Epoch, LeaseVoters)
	EvMaster                           // this node became master of Epoch
	EvPersisted                        // a candidate synced its log up to Index
	EvCleanupDone                      // cleanup duties for entry Num (Target:Inc) done
	EvDeparted                         // the node shut down after leaving
	EvKeyService                       // key service Name moved to Holder at Num
	EvRefused                          // the master refused Target
	EvEvicted                          // the node learned it was declared down
)

// Event is one thing a node did that a checker may want to see.
type Event struct {
	Kind        EventKind
	Node        node.ID
	T           Transition
	View        []node.ID
	Quorate     bool
	Epoch       uint64
	LeaseVoters int // for EvProposed: voters (self included) answering within the lease
	Index       uint64
	Num         uint64
	Target      node.ID
	Inc         uint64
	Name        string
	Holder      node.ID
}

// New makes CLMS for the node of env, on its ICS endpoint. obs, if not
// nil, receives every Event. Call Start once the node is up.
func New(env node.Env, ep *ics.Endpoint, cfg Config, obs func(Event)) (*Service, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s := &Service{
		env: env, ep: ep, cfg: cfg, self: env.Self(), inc: ep.Incarnation(),
		nodes: map[node.ID]*nodeRec{}, obs: obs,
		keyHolders: map[string]node.ID{}, keyFuncs: map[string]keyFuncs{}, keyRunning: map[string]bool{}, cleaning: map[node.ID]bool{},
	}
	if s.obs == nil {
		s.obs = func(Event) {}
	}
	s.refusedLogAt = -1 << 62 // the first refusal is always logged
	s.cand = slices.Contains(cfg.Candidates, s.self)
	if s.cand {
		l, err := openRaftLog(env.Storage(), cfg.Candidates)
		if err != nil {
			return nil, err
		}
		s.log = l
		rn, err := raft.NewRawNode(&raft.Config{
			ID: uint64(s.self),
			// Elections are driven here, from the node's own clock and
			// seeded randomness, so that a seed replays exactly: raft's own
			// election timer draws from a process-wide random source. With
			// this many ticks it never fires; see campaign.
			ElectionTick:    1 << 30,
			HeartbeatTick:   1,
			Storage:         l.mem,
			MaxSizePerMsg:   16 << 10,
			MaxInflightMsgs: 64,
			// The lease (CheckQuorum's job) is ours too: see voteAllowed and
			// holdsQuorum. PreVote keeps a node that lost touch from
			// disrupting a healthy master with a higher term.
			PreVote: true,
			Logger:  quietLogger{},
		})
		if err != nil {
			return nil, fmt.Errorf("clms: %w", err)
		}
		s.rn = rn
		s.voterSeen = map[node.ID]time.Duration{}
	}
	ep.HandleDatagrams(s.datagram)
	if err := infoService.Serve(ep, func(*ics.Request, struct{}) (hostInfo, error) {
		return hostInfo{CPUs: s.cfg.CPUs, MemoryMB: s.cfg.MemoryMB}, nil
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// Start begins heartbeats and joining.
func (s *Service) Start() {
	now := s.now()
	s.lastTickAt = now
	s.leaderMsgAt = now
	s.tick()
	if s.cand {
		s.electTimer = s.env.Clock().AfterFunc(s.bootElectionDelay(), s.campaign)
		s.ready()
	}
}

func (s *Service) now() time.Duration { return s.env.Clock().Now() }

func (s *Service) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
	if s.env.Tracing() {
		s.env.Trace(fmt.Sprintf("clms: "+format, args...))
	}
}

// tick runs every heartbeat: consensus ticks, master duties, heartbeats.
func (s *Service) tick() {
	if s.departed {
		return
	}
	now := s.now()
	starved := now-s.lastTickAt > 3*s.cfg.Heartbeat
	s.lastTickAt = now
	if s.cand {
		s.rn.Tick()
		s.ready()
	}
	if s.leader {
		s.leasePing()
	}
	if s.m != nil {
		if starved {
			// Resuming from a pause (or a starved process): what we did
			// not hear while frozen says nothing about the others.
			s.regrace(now)
		}
		s.masterDuties()
	}
	s.heartbeat()
	s.leaveTimeout()
	s.updateQuorate()
	s.tickTimer = s.env.Clock().AfterFunc(s.cfg.Heartbeat, s.tick)
}

func (s *Service) regrace(now time.Duration) {
	for _, h := range s.m.heard {
		h.at = max(h.at, now)
	}
	for _, id := range sortedKeys(s.m.suspects) { // sorted: stopping timers must replay alike
		if sp := s.m.suspects[id]; sp.timer != nil {
			sp.timer.Stop()
		}
		delete(s.m.suspects, id)
	}
	// The lease is not re-granted: the voters' answers from before the
	// pause say nothing about now, so the master proposes nothing until
	// they answer again.
}

// send sends a CLMS message to peer as an ICS datagram.
func (s *Service) send(to node.ID, m *message) {
	if to == s.self {
		return
	}
	// ICS seals the payload into a frame of its own: the encoding buffer
	// can be reused at once.
	s.sbuf = encode(s.sbuf[:0], m)
	_ = s.ep.SendDatagram(to, 0, s.sbuf)
}

// flushHeartbeat sends the heartbeat something applied asked for, once
// the message or raft batch that applied it is handled.
func (s *Service) flushHeartbeat() {
	if !s.hbSoon {
		return
	}
	s.hbSoon = false
	s.lastHBAt = -1 << 62
	s.heartbeat()
}

// ---- consensus -------------------------------------------------------

func (s *Service) armElection(campaigned bool) {
	if s.electTimer != nil {
		s.electTimer.Stop()
	}
	s.electTimer = s.env.Clock().AfterFunc(s.electionDelay(campaigned), s.campaign)
}

// electionDelay is when this candidate next looks at the leader's
// silence. Right after standing for election it waits [0.5x, 1.5x) of
// ElectionTimeout for a winner before trying again. Otherwise it aims at
// the moment the leader will have been silent for the election timeout
// plus a stagger by rank: the candidates other than the leader, in list
// order, a quarter of the timeout apart, each with a random quarter of
// its own. A periodic timer, blind to when the leader last spoke, started
// elections anywhere up to a whole period late; equal random draws let
// two survivors campaign at once and split the vote, which cost another
// round (the tail of master failover on real daemons: 1.95 s).
func (s *Service) electionDelay(campaigned bool) time.Duration {
	et := s.cfg.ElectionTimeout
	if s.lead == 0 && s.prevLead == 0 {
		return s.bootElectionDelay()
	}
	if campaigned {
		return et/2 + time.Duration(s.env.Rand().Int64N(int64(et)))
	}
	rank := 0
	for _, c := range s.cfg.Candidates {
		if c == s.self {
			break
		}
		if c != s.lead && c != s.prevLead {
			rank++
		}
	}
	at := s.leaderMsgAt + et + s.cfg.Heartbeat/2 + time.Duration(rank)*et/4 + time.Duration(s.env.Rand().Int64N(int64(et/4)+1))
	return max(at-s.now(), s.cfg.Heartbeat/2)
}

// bootElectionDelay is how long a candidate that has never known a
// leader waits before it (again) stands for election: two heartbeats,
// time for an existing master's beacon to reach it, plus half an
// election timeout per place in the candidate list (OpenSSI's
// CLUSTER_MASTER order), so that a cluster that boots together elects its
// first candidate and operators and scenarios can tell who it is. No need
// to wait a whole election timeout as raft does: with PreVote and the
// lease (voteAllowed) a candidate that stands while a master lives only
// costs a few messages, and one that stands before a majority is up just
// tries again, two heartbeats later.
func (s *Service) bootElectionDelay() time.Duration {
	et := s.cfg.ElectionTimeout
	rank := slices.Index(s.cfg.Candidates, s.self)
	return 2*s.cfg.Heartbeat + time.Duration(rank)*et/2 + time.Duration(s.env.Rand().Int64N(int64(et/8)+1))
}

// campaign stands for election if the leader has been silent for the
// whole election timeout.
func (s *Service) campaign() {
	s.electTimer = nil
	if s.departed {
		return
	}
	stood := false
	if !s.leader && (s.now()-s.leaderMsgAt >= s.cfg.ElectionTimeout || s.lead == 0 && s.prevLead == 0) {
		_ = s.rn.Campaign()
		s.ready()
		stood = true
	}
	s.armElection(stood)
}

// voteAllowed is the lease: a candidate that heard from a live leader
// within the election timeout ignores vote requests, so a node that lost
// touch with the master cannot depose it.
func (s *Service) voteAllowed() bool {
	if s.leader {
		return !s.holdsQuorum()
	}
	return s.lead == 0 || s.now()-s.leaderMsgAt >= s.cfg.ElectionTimeout
}

func (s *Service) stepRaft(from node.ID, b []byte) {
	m := &pb.Message{}
	if err := proto.Unmarshal(b, m); err != nil {
		return
	}
	if node.ID(m.GetFrom()) != from || node.ID(m.GetTo()) != s.self || !slices.Contains(s.cfg.Candidates, from) {
		return
	}
	switch m.GetType() {
	case pb.MessageType_MsgPreVote, pb.MessageType_MsgVote:
		if !s.voteAllowed() {
			return
		}
	case pb.MessageType_MsgHeartbeat, pb.MessageType_MsgApp, pb.MessageType_MsgSnap:
		if m.GetTerm() >= s.term {
			s.leaderMsgAt = s.now()
		}
	}
	if err := s.rn.Step(m); err != nil {
		return
	}
	s.ready()
}

// ready processes everything raft has for us: persist, then send, then
// apply, then advance.
func (s *Service) ready() {
	for s.rn.HasReady() {
		rd := s.rn.Ready()
		if err := s.log.save(&rd); err != nil {
			panic(fmt.Sprintf("clms: persisting the log: %v", err))
		}
		if n := len(rd.Entries); n > 0 {
			s.persistedIdx = rd.Entries[n-1].GetIndex()
			s.obs(Event{Kind: EvPersisted, Node: s.self, Index: s.persistedIdx})
		}
		for _, m := range rd.Messages {
			b, err := proto.Marshal(m)
			if err != nil {
				panic(fmt.Sprintf("clms: encoding a raft message: %v", err))
			}
			to := node.ID(m.GetTo())
			if to == s.self {
				continue
			}
			if len(b)+1 > ics.MaxDatagram {
				continue // raft retries with smaller batches
			}
			s.send(to, &message{kind: mRaft, raft: b})
		}
		for _, e := range rd.CommittedEntries {
			s.applyEntry(e)
		}
		s.rn.Advance(rd)
		s.afterRaft()
	}
	if s.pushDue && s.m != nil {
		s.pushDue = false
		s.pushAll()
		// What just committed may let other transitions go at once.
		for _, id := range sortedKeys(s.m.heard) {
			if r := s.nodes[id]; r != nil && (r.state == StateComingUp || r.state == StateShutdown) {
				s.masterStep(id, false)
			}
		}
		s.masterStep(s.self, true)
	}
	s.flushHeartbeat()
	s.flushNotify()
}

// afterRaft notices leadership changes.
func (s *Service) afterRaft() {
	st := s.rn.BasicStatus()
	s.term = st.HardState.GetTerm()
	if l := node.ID(st.Lead); l != s.lead {
		if s.lead != 0 {
			s.prevLead = s.lead
		}
		s.lead = l
	}
	isLeader := st.RaftState == raft.StateLeader
	switch {
	case isLeader && !s.leader:
		s.leader = true
		s.becomeMaster()
	case !isLeader && s.leader:
		s.leader = false
		s.stepDown()
	}
}

// leasePing asks every other candidate to confirm this master's term; the
// ping carries its send time, which the answer echoes.
func (s *Service) leasePing() {
	now := uint64(s.now())
	for _, c := range s.cfg.Candidates {
		if c != s.self {
			s.send(c, &message{kind: mLease, nonce: now, epoch: s.term})
		}
	}
}

// holdsQuorum reports whether more than half of the candidates, this one
// included, answered this leader within the election timeout.
func (s *Service) holdsQuorum() bool {
	return s.leader && s.leaseVoters(s.now()-s.cfg.ElectionTimeout) > len(s.cfg.Candidates)/2
}

// leaseVoters counts the voters (self included) heard after t.
func (s *Service) leaseVoters(t time.Duration) int {
	n := 1
	for _, v := range s.cfg.Candidates {
		if v != s.self {
			if at, ok := s.voterSeen[v]; ok && at > t {
				n++
			}
		}
	}
	return n
}

func (s *Service) applyEntry(e *pb.Entry) {
	s.appliedIdx = e.GetIndex()
	if e.GetType() != pb.EntryType_EntryNormal || len(e.GetData()) == 0 {
		return
	}
	p, err := decodeProposal(e.GetData())
	if err != nil {
		panic(fmt.Sprintf("clms: undecodable committed entry %d: %v", e.GetIndex(), err))
	}
	rec := s.rec(p.node)
	// A proposal is checked again when it commits, the same way on every
	// candidate: one made against a state that has moved on since (a
	// master cut off in a minority, a retried proposal) is skipped by all.
	valid := rec.state == p.from && Allowed(p.from, p.to)
	if p.to == StateComingUp {
		valid = valid && p.inc > rec.inc
	} else {
		valid = valid && p.inc == rec.inc
	}
	if !valid {
		s.skippedStales++
		return
	}
	t := Transition{
		Num: uint64(len(s.hist)) + 1, Time: time.Unix(0, p.time).UTC(), Node: p.node, Inc: p.inc,
		From: p.from, To: p.to, Cause: p.cause, Epoch: e.GetTerm(), Master: p.master,
	}
	s.apply(t, e.GetIndex())
	if s.m != nil {
		delete(s.m.pending, t.Node)
		s.pushDue = true // once per batch of commits, not per entry
	}
}

func (s *Service) rec(id node.ID) *nodeRec {
	r := s.nodes[id]
	if r == nil {
		r = &nodeRec{}
		s.nodes[id] = r
	}
	return r
}

// ---- applying the history (every node) --------------------------------

// apply appends t to the history and carries out what it means here.
func (s *Service) apply(t Transition, index uint64) {
	if t.Num != uint64(len(s.hist))+1 {
		panic(fmt.Sprintf("clms: applying %v after %d entries", t, len(s.hist)))
	}
	r := s.rec(t.Node)
	if r.state != t.From {
		panic(fmt.Sprintf("clms: applying %v to n%d in %s", t, t.Node, r.state))
	}
	s.hist = append(s.hist, t)
	wasIn := r.state.InView()
	r.state, r.inc, r.num = t.To, t.Inc, t.Num
	if t.To == StateKCleanup || t.To == StateUCleanup {
		s.cleaning[t.Node] = true
	} else {
		delete(s.cleaning, t.Node)
	}
	// The view changes by one node at a time: keep it sorted by inserting
	// or removing that node, not by rebuilding it from every record (which
	// made forming a 1000-node cluster cost n log n per transition on
	// every node).
	if in := r.state.InView(); wasIn != in {
		i, found := slices.BinarySearch(s.view, t.Node)
		switch {
		case in && !found:
			s.view = slices.Insert(s.view, i, t.Node)
		case !in && found:
			s.view = slices.Delete(s.view, i, i+1)
		}
	}
	s.obs(Event{Kind: EvApplied, Node: s.self, T: t, View: slices.Clone(s.view), Index: index})
	s.notifyDue = true

	self := t.Node == s.self
	switch {
	case self && t.Inc == s.inc && t.To == StateComingUp:
		// The master moves us to UP once we report this entry applied:
		// say so now rather than at the next heartbeat.
		s.hbSoon = true
	case self && t.Inc == s.inc && t.To == StateUp:
		s.joinedOnce = true
	case self && t.Inc == s.inc && t.To == StateShutdown:
		s.leaveReady = true
		s.lastHBAt = -1 << 62 // tell the master at once
	case self && t.Inc == s.inc && t.To == StateKCleanup:
		if s.leaving {
			s.depart()
			return
		}
		s.evicted()
	}
	// Cleanup duties: every node still in the cluster cleans up after a
	// node that went out, and says so in its heartbeats.
	mine := r.state == StateKCleanup || r.state == StateUCleanup
	me := s.nodes[s.self]
	if mine && !self && me != nil && me.inc == s.inc && (me.state == StateUp || me.state == StateShutdown || me.state == StateGoingDown) {
		s.startCleanup(t)
	} else {
		s.jobDone(nil, t.Num)
	}
	if t.To == StateUp && !self {
		for _, sub := range s.subsystems {
			if sub.NodeUp != nil {
				sub.NodeUp(t.Node, t.Inc)
			}
		}
	}
	s.placeKeyServices(t.Num)
}

func (s *Service) startCleanup(t Transition) {
	j := &cleanupJob{num: t.Num, waiting: 1}
	s.jobs = append(s.jobs, j)
	done := func() { s.jobDone(j, t.Num) }
	if t.To == StateKCleanup {
		s.ep.NodeDown(t.Node, t.Inc)
		for _, sub := range s.subsystems {
			if sub.NodeDown != nil {
				j.waiting++
				once := false
				sub.NodeDown(t.Node, t.Inc, func() {
					if !once {
						once = true
						done()
					}
				})
			}
		}
		j.waiting++
		s.ep.NodedownWait(t.Node, done)
	}
	done() // the job's own share
	_ = t
}

// jobDone records progress on cleanup duties: cleaned moves up to just
// before the oldest unfinished job.
func (s *Service) jobDone(j *cleanupJob, num uint64) {
	if j != nil {
		j.waiting--
		if j.waiting > 0 {
			return
		}
		s.obs(Event{Kind: EvCleanupDone, Node: s.self, Num: j.num, Target: s.hist[j.num-1].Node, Inc: s.hist[j.num-1].Inc})
	}
	for len(s.jobs) > 0 && s.jobs[0].waiting <= 0 {
		s.jobs = s.jobs[1:]
	}
	old := s.cleaned
	if len(s.jobs) > 0 {
		s.cleaned = s.jobs[0].num - 1
	} else {
		s.cleaned = uint64(len(s.hist))
	}
	if s.cleaned > old && j != nil {
		s.lastHBAt = -1 << 62 // tell the master without waiting for the tick
		s.env.Clock().AfterFunc(0, s.heartbeat)
	}
}

// evicted: the cluster declared this incarnation down while it runs.
// Eviction is not exile: it rejoins as a new incarnation.
func (s *Service) evicted() {
	s.logf("n%d:%s was declared down; rejoining as a new incarnation", s.self, IncString(s.inc))
	s.obs(Event{Kind: EvEvicted, Node: s.self, Inc: s.inc})
	s.inc = s.ep.Reincarnate()
	s.joinedOnce = false
	s.qBeaconAt = -1 << 62
	s.placeKeyServices(uint64(len(s.hist))) // this incarnation holds nothing
	s.updateQuorate()
}

func (s *Service) depart() {
	if s.departed {
		return
	}
	s.departed = true
	s.stepDown()
	s.masterID = 0
	s.quorate = false
	s.obs(Event{Kind: EvQuorate, Node: s.self, Quorate: false})
	s.obs(Event{Kind: EvDeparted, Node: s.self, Inc: s.inc})
	s.placeKeyServices(uint64(len(s.hist)))
	if s.tickTimer != nil {
		s.tickTimer.Stop()
	}
	if s.electTimer != nil {
		s.electTimer.Stop()
	}
	s.ep.Close()
}

func (s *Service) flushNotify() {
	if !s.notifyDue {
		return
	}
	s.notifyDue = false
	n := uint64(len(s.hist))
	for _, f := range s.subs {
		f(n)
	}
}

// ---- messages ----------------------------------------------------------

func (s *Service) datagram(from node.ID, inc uint64, b []byte) {
	if s.departed {
		return
	}
	m, err := decode(b)
	if err != nil {
		return
	}
	switch m.kind {
	case mRaft:
		if s.cand {
			s.stepRaft(from, m.raft)
		}
	case mHeartbeat:
		s.onHeartbeat(from, inc, &m)
	case mBeacon:
		s.onBeacon(from, &m)
	case mJoin:
		s.onJoin(from, inc)
	case mFetch:
		if s.m != nil {
			if h := s.m.heard[from]; h != nil && h.inc == inc {
				// It asks again: what was in flight was lost or reordered.
				h.applied = min(h.applied, m.from-1)
			}
			if sm, ok := s.m.sent[from]; ok && sm.inc == inc {
				sm.num = min(sm.num, m.from-1)
				s.m.sent[from] = sm
			}
			s.push(from, inc, m.from)
		}
	case mProbeReq:
		s.send(m.target, &message{kind: mPing, nonce: m.nonce})
		s.pendingProbes(from, m)
	case mPing:
		s.send(from, &message{kind: mPong, nonce: m.nonce})
	case mLease:
		if s.cand && slices.Contains(s.cfg.Candidates, from) {
			s.send(from, &message{kind: mLeaseAck, nonce: m.nonce, epoch: s.term})
		}
	case mLeaseAck:
		// An answer proves the voter was with this master's term when the
		// ping it answers was sent, not when the answer arrives: a burst
		// of answers held up by a pause must not renew the lease.
		if s.leader && m.epoch == s.term && slices.Contains(s.cfg.Candidates, from) {
			if sent := time.Duration(m.nonce); sent <= s.now() && sent > s.voterSeen[from] {
				s.voterSeen[from] = sent
			}
			if s.m != nil && !s.m.leased && s.holdsQuorum() {
				s.m.leased = true
				s.masterDuties()
			}
		}
	case mPong:
		s.onPong(from, inc, m.nonce)
	case mProbeAck:
		if s.m != nil {
			if sp := s.m.suspects[m.target]; sp != nil && sp.nonce == m.nonce {
				s.cleared(m.target)
			}
		}
	case mRefused:
		if s.now()-s.refusedLogAt > time.Second {
			s.refusedLogAt = s.now()
			s.logf("n%d refused admission by n%d: %s", s.self, from, m.reason)
		}
	}
	s.flushHeartbeat()
	s.flushNotify()
}

// probeWaits remembers probes this node runs for the master, by nonce.
type probeWait struct {
	master node.ID
	target node.ID
	inc    uint64
}

func (s *Service) pendingProbes(master node.ID, m message) {
	if s.probes == nil {
		s.probes = map[uint64]probeWait{}
	}
	if len(s.probes) > 256 {
		clear(s.probes) // a bound: stale probes are simply forgotten
	}
	s.probes[m.nonce] = probeWait{master: master, target: m.target, inc: m.targetInc}
}

func (s *Service) onPong(from node.ID, inc uint64, nonce uint64) {
	if pw, ok := s.probes[nonce]; ok && pw.target == from && inc == pw.inc {
		delete(s.probes, nonce)
		s.send(pw.master, &message{kind: mProbeAck, target: from, targetInc: inc, nonce: nonce})
	}
	if s.m != nil {
		if sp := s.m.suspects[from]; sp != nil && sp.nonce == nonce {
			if r := s.nodes[from]; r != nil && r.inc == inc {
				s.cleared(from)
			}
		}
	}
}

// heartbeat sends this node's heartbeat to the master it knows or, if it
// knows none, to every candidate.
func (s *Service) heartbeat() {
	if s.departed {
		return
	}
	now := s.now()
	if now-s.lastHBAt < s.cfg.Heartbeat/2 {
		return
	}
	s.lastHBAt = now
	m := &message{kind: mHeartbeat, applied: uint64(len(s.hist)), cleaned: min(s.cleaned, uint64(len(s.hist))), epoch: s.masterEpoch}
	if s.leaving {
		m.flags |= flagLeave
		if s.leaveReady {
			m.flags |= flagLeaveReady
		}
	}
	member := s.memberNow()
	if s.masterID != 0 && now-s.beaconAt < s.cfg.ElectionTimeout {
		if s.masterID == s.self {
			s.onHeartbeat(s.self, s.inc, m)
			if !member && s.m != nil {
				s.onJoin(s.self, s.inc)
			}
			return
		}
		s.send(s.masterID, m)
		if !member {
			s.send(s.masterID, &message{kind: mJoin})
		}
		return
	}
	for _, c := range s.cfg.Candidates {
		if c == s.self {
			continue
		}
		s.send(c, m)
		if !member {
			s.send(c, &message{kind: mJoin})
		}
	}
	if !member && s.m != nil {
		s.onJoin(s.self, s.inc)
	}
}

// memberNow reports whether this incarnation is live in the history.
func (s *Service) memberNow() bool {
	r := s.nodes[s.self]
	return r != nil && r.inc == s.inc && r.state.live()
}

func (s *Service) onBeacon(from node.ID, m *message) {
	if m.epoch < s.masterEpoch || (s.cand && s.leader && from != s.self) {
		return // an old master's beacon
	}
	now := s.now()
	s.masterID, s.masterEpoch, s.beaconAt = from, m.epoch, now
	if m.quorum {
		s.qBeaconAt = now
		s.beaconInc, s.beaconState = m.yourInc, m.yourState
		// The master does not list this incarnation as live: it was
		// declared down while we ran (paused, cut off). Rejoin.
		// (Also when this incarnation was taken out before it ever got
		// UP: a join with an incarnation the history already has is never
		// admitted again.)
		if m.yourInc == s.inc && (m.yourState == StateKCleanup || m.yourState == StateUCleanup || m.yourState == StateDown) && !s.leaving {
			s.evicted()
		}
	}
	if !s.cand {
		for _, t := range m.entries {
			if t.Num == uint64(len(s.hist))+1 {
				s.apply(t, 0)
			}
		}
		if m.last > uint64(len(s.hist)) && now-s.lastFetchAt > s.cfg.Heartbeat/2 {
			s.lastFetchAt = now
			s.send(from, &message{kind: mFetch, from: uint64(len(s.hist)) + 1})
		}
	}
	s.updateQuorate()
}

// updateQuorate recomputes the flag this node reports.
func (s *Service) updateQuorate() {
	q := false
	me := s.nodes[s.self]
	up := me != nil && me.inc == s.inc && me.state == StateUp && !s.departed
	switch {
	case !up:
	case s.m != nil:
		q = s.holdsQuorum()
	default:
		q = s.now()-s.qBeaconAt < s.cfg.ElectionTimeout && s.beaconInc == s.inc && s.beaconState == StateUp
	}
	if q != s.quorate {
		s.quorate = q
		s.obs(Event{Kind: EvQuorate, Node: s.self, Quorate: q})
	}
}

func (s *Service) leaveTimeout() {
	if s.leaving && !s.departed && s.now()-s.leaveAt >= s.cfg.NodedownAfter && !s.reachableMaster() {
		s.logf("n%d leaving without the master: shutting down anyway", s.self)
		s.depart()
	}
}

func (s *Service) reachableMaster() bool {
	return s.now()-s.qBeaconAt < s.cfg.ElectionTimeout || s.holdsQuorum()
}
