package netlab

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

const (
	// tableName is the lab's nftables table in the hub (bridge family)
	// and in senders (ip family). The whole table is replaced on every
	// change, so it must hold nothing but the lab's rules.
	tableName = "netlab"
	// lossModulus is the range of the random number a loss rule draws;
	// it sets the resolution of LinkModel.Loss and Duplicate.
	lossModulus = 1_000_000
	// Offsets of the IPv4 source and destination in the network header.
	offSaddr = 12
	offDaddr = 16
)

// ruleBuilder builds the expressions of one transaction. Register 1 holds
// the address under test and is never overwritten after a match, so that
// dup can read the destination from it; register 2 is scratch.
type ruleBuilder struct {
	lab    *Lab
	c      *nftables.Conn
	t      *nftables.Table
	nsets  int
	groups map[int]*nftables.Set // partition group sets, shared by rules
	// suffix is appended to the names of sets and regular chains;
	// chains and sets record what was added, so that the next
	// transaction can delete it.
	suffix string
	chains []string
	sets   []string
}

func newRuleBuilder(l *Lab, fd int, fam nftables.TableFamily) (*ruleBuilder, error) {
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: tableName, Family: fam}
	// "add, delete, add" replaces the table whether or not it exists, in
	// the same transaction as the new rules: the old and new rule sets
	// never mix, and a partial state is never visible to a packet.
	c.AddTable(t)
	c.DelTable(t)
	return &ruleBuilder{lab: l, c: c, t: t, groups: map[int]*nftables.Set{}}, nil
}

func (b *ruleBuilder) addr4(n int) []byte {
	a := b.lab.Addr(n).As4()
	return a[:]
}

// set adds a named set holding the nodes' addresses.
func (b *ruleBuilder) set(nodes []int) (*nftables.Set, error) {
	b.nsets++
	s := &nftables.Set{Table: b.t, Name: fmt.Sprintf("s%d%s", b.nsets, b.suffix), KeyType: nftables.TypeIPAddr}
	b.sets = append(b.sets, s.Name)
	elems := make([]nftables.SetElement, len(nodes))
	for i, n := range nodes {
		elems[i] = nftables.SetElement{Key: b.addr4(n)}
	}
	if err := b.c.AddSet(s, elems); err != nil {
		return nil, fmt.Errorf("nftables set: %w", err)
	}
	return s, nil
}

// match loads the address at off into register 1 and matches it against
// the group (or, with negate, against everything outside it).
func (b *ruleBuilder) match(off uint32, g addrGroup, negate bool, s *nftables.Set) ([]expr.Any, error) {
	load := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}
	op := expr.CmpOpEq
	if negate {
		op = expr.CmpOpNeq
	}
	switch {
	case g.all:
		sub := b.lab.subnet
		mask := net.CIDRMask(sub.Bits(), 32)
		a := sub.Addr().As4()
		return []expr.Any{load,
			&expr.Bitwise{SourceRegister: 1, DestRegister: 2, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: op, Register: 2, Data: a[:]},
		}, nil
	case len(g.nodes) == 1:
		return []expr.Any{load, &expr.Cmp{Op: op, Register: 1, Data: b.addr4(g.nodes[0])}}, nil
	}
	if s == nil {
		var err error
		if s, err = b.set(g.nodes); err != nil {
			return nil, err
		}
	}
	return []expr.Any{load, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: negate}}, nil
}

// chance matches with probability p (nothing to add when p is 1).
func chance(p float64) []expr.Any {
	k := lossThreshold(p)
	if k >= lossModulus {
		return nil
	}
	var th [4]byte
	binary.BigEndian.PutUint32(th[:], k)
	return []expr.Any{
		&expr.Numgen{Register: 2, Modulus: lossModulus, Type: unix.NFT_NG_RANDOM},
		// numgen writes host byte order, but cmp "<" compares bytes
		// like memcmp: convert, as nft itself does.
		&expr.Byteorder{SourceRegister: 2, DestRegister: 2, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Cmp{Op: expr.CmpOpLt, Register: 2, Data: th[:]},
	}
}

func (b *ruleBuilder) rule(ch *nftables.Chain, exprs ...[]expr.Any) {
	var all []expr.Any
	for _, e := range exprs {
		all = append(all, e...)
	}
	b.c.AddRule(&nftables.Rule{Table: b.t, Chain: ch, Exprs: all})
}

var drop = []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}

// hubTable is what the lab last installed in one of the hub's tables.
type hubTable struct {
	built        bool
	chains, sets []string
}

// installHub replaces the rules of the hub's tables in one transaction.
// The bridge table's forward chain sends each IPv4 packet for a node with
// faults to that node's chain, which drops it if the sender is
// partitioned away, blocked, or loses the draw. With DelayQueue, the ip
// table's forward chain then queues the packets of delayed links to the
// delayer; bridged IPv4 packets reach it through br_netfilter, after the
// bridge's filter chains (priority -200 against br_netfilter's 0), so
// what the bridge table drops is never queued.
//
// Unlike the senders' tables, the hub's are not deleted and re-added:
// their base chains, once created, stay, and a change flushes them and
// replaces the regular chains and sets. Deleting a base chain unregisters
// its hook, and the kernel then drops every packet queued to user space
// in the namespace, i.e. everything the delayer holds.
func (l *Lab) installHub(p plan) error {
	queue := l.caps.Delay == DelayQueue && (len(p.delay) > 0 || l.hubIP.built)
	if !l.hubBridge.built && len(p.dest) == 0 && !queue {
		return nil // nothing was ever installed, nothing to install
	}
	c, err := nftables.New(nftables.WithNetNSFd(l.hub.fd))
	if err != nil {
		return fmt.Errorf("netlab: hub: nftables: %w", err)
	}
	suffix := fmt.Sprintf("-g%d", l.hubGen+1)
	br, brFwd := l.beginHub(c, nftables.TableFamilyBridge, l.hubBridge, suffix)
	if len(p.dest) > 0 {
		if err := br.hubRules(p, brFwd); err != nil {
			return fmt.Errorf("netlab: hub: %w", err)
		}
	}
	var ip *ruleBuilder
	if queue {
		var ipFwd *nftables.Chain
		ip, ipFwd = l.beginHub(c, nftables.TableFamilyIPv4, l.hubIP, suffix)
		if err := ip.queueRules(p, ipFwd); err != nil {
			return fmt.Errorf("netlab: hub: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netlab: hub nftables: %w", err)
	}
	l.hubGen++
	l.hubBridge = hubTable{built: true, chains: br.chains, sets: br.sets}
	if ip != nil {
		l.hubIP = hubTable{built: true, chains: ip.chains, sets: ip.sets}
	}
	return nil
}

// beginHub starts replacing one of the hub's tables in transaction c: it
// creates the table and its forward chain the first time, and otherwise
// flushes the forward chain and deletes the previous generation's regular
// chains (with their rules) and then their sets.
func (l *Lab) beginHub(c *nftables.Conn, fam nftables.TableFamily, prev hubTable, suffix string) (*ruleBuilder, *nftables.Chain) {
	t := &nftables.Table{Name: tableName, Family: fam}
	accept := nftables.ChainPolicyAccept
	fwd := &nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	}
	if !prev.built {
		c.AddTable(t)
		c.AddChain(fwd)
	} else {
		c.FlushChain(fwd)
		for _, name := range prev.chains {
			c.DelChain(&nftables.Chain{Name: name, Table: t})
		}
		for _, name := range prev.sets {
			c.DelSet(&nftables.Set{Name: name, Table: t})
		}
	}
	return &ruleBuilder{lab: l, c: c, t: t, groups: map[int]*nftables.Set{}, suffix: suffix}, fwd
}

// queueRules fills the hub's ip table: per receiver with delayed links, a
// chain that queues the packets of the delayed senders (the compat
// NFQUEUE target). The queue verdict ends the ip forward hook for the
// packet; the delayer's ACCEPT sends it on through the bridge.
func (b *ruleBuilder) queueRules(p plan, fwd *nftables.Chain) error {
	for _, to := range b.lab.nodes {
		groups := p.delay[to]
		if len(groups) == 0 {
			continue
		}
		ch := b.c.AddChain(&nftables.Chain{Name: fmt.Sprintf("delay-n%d%s", to, b.suffix), Table: b.t})
		b.chains = append(b.chains, ch.Name)
		m, _ := b.match(offDaddr, addrGroup{nodes: []int{to}}, false, nil)
		b.rule(fwd, m, []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name}})
		for _, g := range groups {
			m, err := b.match(offSaddr, g.peers, false, nil)
			if err != nil {
				return err
			}
			b.rule(ch, m, []expr.Any{nfqueueTarget()})
		}
	}
	return nil
}

func (b *ruleBuilder) hubRules(p plan, fwd *nftables.Chain) error {
	// ARP and everything else but IPv4 passes: a cut link still answers
	// ARP in real switches too, and the address offsets below are IPv4's.
	b.rule(fwd, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x08, 0x00}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	})
	for _, d := range p.dest {
		ch := b.c.AddChain(&nftables.Chain{Name: fmt.Sprintf("to-n%d%s", d.to, b.suffix), Table: b.t})
		b.chains = append(b.chains, ch.Name)
		to, _ := b.match(offDaddr, addrGroup{nodes: []int{d.to}}, false, nil)
		b.rule(fwd, to, []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name}})
		switch {
		case d.isolated:
			b.rule(ch, drop)
		case d.partitioned:
			members := p.groups[d.group]
			s := b.groups[d.group]
			if s == nil && len(members) > 1 {
				var err error
				if s, err = b.set(members); err != nil {
					return err
				}
				b.groups[d.group] = s
			}
			m, err := b.match(offSaddr, addrGroup{nodes: members}, true, s)
			if err != nil {
				return err
			}
			b.rule(ch, m, drop)
		}
		if len(d.blocked) > 0 {
			m, err := b.match(offSaddr, addrGroup{nodes: d.blocked}, false, nil)
			if err != nil {
				return err
			}
			b.rule(ch, m, drop)
		}
		for _, g := range d.loss {
			if lossThreshold(g.p) == 0 {
				continue
			}
			m, err := b.match(offSaddr, g.peers, false, nil)
			if err != nil {
				return err
			}
			b.rule(ch, m, chance(g.p), drop)
		}
	}
	return nil
}

// ifname pads an interface name the way meta oifname compares it.
func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

// installDup replaces node n's ip table, which sends a second copy of a
// packet to its destination with the group's probability. It runs in
// postrouting of the sender, so the copy then crosses the hub like any
// packet. The kernel's recursion guard keeps a copy from being copied.
func (l *Lab) installDup(n int, groups []dupGroup) error {
	b, err := newRuleBuilder(l, l.nodeNS[n].fd, nftables.TableFamilyIPv4)
	if err != nil {
		return err
	}
	if len(groups) > 0 {
		b.c.AddTable(b.t)
		accept := nftables.ChainPolicyAccept
		ch := b.c.AddChain(&nftables.Chain{
			Name: "postrouting", Table: b.t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityFilter, Policy: &accept,
		})
		// Only what leaves on eth0: the "every peer" prefix match would
		// otherwise also copy the node's traffic to itself over lo.
		b.rule(ch, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("eth0")},
			&expr.Verdict{Kind: expr.VerdictAccept},
		})
		for _, g := range groups {
			if lossThreshold(g.p) == 0 {
				continue
			}
			m, err := b.match(offDaddr, g.peers, false, nil)
			if err != nil {
				return err
			}
			b.rule(ch, m, chance(g.p), []expr.Any{&expr.Dup{RegAddr: 1}})
		}
	}
	if err := b.c.Flush(); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

// probeDup checks, inside the hub, that the kernel accepts an ip-family
// dup expression. The batch creates and deletes a scratch table, so
// nothing stays behind; the kernel validates every expression anyway.
func (l *Lab) probeDup() bool {
	c, err := nftables.New(nftables.WithNetNSFd(l.hub.fd))
	if err != nil {
		return false
	}
	t := c.AddTable(&nftables.Table{Name: "netlab-probe", Family: nftables.TableFamilyIPv4})
	ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Immediate{Register: 1, Data: []byte{127, 0, 0, 1}},
		&expr.Dup{RegAddr: 1},
	}})
	c.DelTable(t)
	return c.Flush() == nil
}
