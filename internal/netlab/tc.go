package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// htbRate is the rate of every delay class. The classes exist only to give
// each source its own netem; the rate is far above what veths carry in a
// test, so htb never shapes.
const htbRate = 10_000_000_000 // bit/s

// leafFunc makes the qdisc that delays one class's packets. It is a
// parameter so that the htb and filter part can be tested on kernels
// without netem.
type leafFunc func(linkIndex int, parent, handle uint32, d delayKey) netlink.Qdisc

func netemLeaf(linkIndex int, parent, handle uint32, d delayKey) netlink.Qdisc {
	return netlink.NewNetem(
		netlink.QdiscAttrs{LinkIndex: linkIndex, Parent: parent, Handle: handle},
		netlink.NetemQdiscAttrs{
			Latency: uint32(d.latency.Microseconds()),
			Jitter:  uint32(d.jitter.Microseconds()),
		})
}

// installDelay rebuilds the egress qdiscs of the hub port towards node to,
// which carries every packet for that node: an htb root, one class per
// distinct delay with the leaf from leaf (netem), and u32 filters that
// send each source address to its class. Sources without delay match no
// filter and leave unclassified, straight through htb. Rebuilding drops
// the packets queued on that port, which is why only changed ports are
// rebuilt.
func (l *Lab) installDelay(to int, groups []delayGroup, leaf leafFunc) error {
	h := l.hubNL
	port, err := h.LinkByName(l.portName(to))
	if err != nil {
		return err
	}
	idx := port.Attrs().Index
	root := netlink.MakeHandle(1, 0)
	if l.appliedTC[to] != "" {
		q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: idx, Parent: netlink.HANDLE_ROOT, Handle: root})
		if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete root qdisc: %w", err)
		}
		l.appliedTC[to] = ""
	}
	if len(groups) == 0 {
		return nil
	}
	if len(groups) > 0xfff0 {
		return fmt.Errorf("%d delay classes is too many", len(groups))
	}
	if err := h.QdiscAdd(netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: idx, Parent: netlink.HANDLE_ROOT, Handle: root})); err != nil {
		return fmt.Errorf("add htb: %w", err)
	}
	// From here on the port has our root qdisc; record it so that a
	// failure below is cleaned up by the next install or by Close.
	l.appliedTC[to] = "partial"
	for i, g := range groups {
		minor := uint16(i + 1)
		classID := netlink.MakeHandle(1, minor)
		cls := netlink.NewHtbClass(
			netlink.ClassAttrs{LinkIndex: idx, Parent: root, Handle: classID},
			netlink.HtbClassAttrs{Rate: htbRate, Ceil: htbRate})
		if err := h.ClassAdd(cls); err != nil {
			return fmt.Errorf("add htb class: %w", err)
		}
		if leaf != nil {
			q := leaf(idx, classID, netlink.MakeHandle(0x10+minor, 0), g.delayKey)
			if err := h.QdiscAdd(q); err != nil {
				return fmt.Errorf("add %s under class %x: %w", q.Type(), classID, err)
			}
		}
		keys := l.srcKeys(g.peers)
		for _, k := range keys {
			f := &netlink.U32{
				FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: root, Priority: 1, Protocol: unix.ETH_P_IP},
				ClassId:     classID,
				Sel:         &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{k}},
			}
			if err := h.FilterAdd(f); err != nil {
				return fmt.Errorf("add u32 filter: %w", err)
			}
		}
	}
	return nil
}

// srcKeys are u32 keys matching the group's source addresses: the subnet
// when the group is every peer, else one key per node.
func (l *Lab) srcKeys(g addrGroup) []netlink.TcU32Key {
	if g.all {
		a := l.subnet.Addr().As4()
		m := net.CIDRMask(l.subnet.Bits(), 32)
		return []netlink.TcU32Key{{Mask: binary.BigEndian.Uint32(m), Val: binary.BigEndian.Uint32(a[:]), Off: offSaddr}}
	}
	keys := make([]netlink.TcU32Key, len(g.nodes))
	for i, n := range g.nodes {
		a := l.Addr(n).As4()
		keys[i] = netlink.TcU32Key{Mask: 0xffffffff, Val: binary.BigEndian.Uint32(a[:]), Off: offSaddr}
	}
	return keys
}

// probe finds out, inside the hub, what the kernel supports: it adds and
// removes each qdisc on the hub's lo, tries a dup rule and a queue rule
// and binds a scratch queue. It takes a few netlink round trips. want is
// Options.Delay.
func (l *Lab) probe(want DelayMethod) Caps {
	var c Caps
	lo, err := l.hubNL.LinkByName("lo")
	if err == nil {
		attrs := netlink.QdiscAttrs{LinkIndex: lo.Attrs().Index, Parent: netlink.HANDLE_ROOT, Handle: netlink.MakeHandle(1, 0)}
		c.Netem = l.probeQdisc(netlink.NewNetem(attrs, netlink.NetemQdiscAttrs{Latency: 1000}))
		c.HTB = l.probeQdisc(netlink.NewHtb(attrs))
	}
	c.Duplicate = l.probeDup()
	c.Queue = l.probeQueue()
	netem := c.Netem && c.HTB
	switch {
	case netem && want != DelayQueue:
		c.Delay = DelayNetem
	case c.Queue && want != DelayNetem:
		c.Delay = DelayQueue
	default:
		c.Delay = DelayNone
	}
	return c
}

func (l *Lab) probeQdisc(q netlink.Qdisc) bool {
	if err := l.hubNL.QdiscAdd(q); err != nil {
		return false
	}
	_ = l.hubNL.QdiscDel(q)
	return true
}
