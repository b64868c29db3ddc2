package netlab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Bounds on what a lab may contain. Interface names are limited to 15 bytes
// by the kernel: "<name>-v1024" is at most 8+6 bytes.
const (
	maxNameLen = 8
	maxNode    = 1024
)

// DefaultSubnet is used when Options.Subnet is the zero value. It is a
// private range; because every lab is its own isolated L2 segment, labs
// running at the same time may share it.
var DefaultSubnet = netip.MustParsePrefix("10.213.0.0/16")

// Errors returned by Lab methods.
var (
	// ErrClosed is returned by every fault method after Close.
	ErrClosed = errors.New("netlab: lab is closed")
	// ErrNoNetem is returned when a link model asks for latency or jitter
	// and the lab has no way to delay packets: the kernel has neither
	// netem with htb nor what user-space delay needs (see Caps.Delay).
	ErrNoNetem = errors.New("netlab: latency and jitter need either the kernel's netem and htb qdiscs (CONFIG_NET_SCH_NETEM, CONFIG_NET_SCH_HTB) or user-space delay through NFQUEUE (CONFIG_NETFILTER_NETLINK_QUEUE, CONFIG_NETFILTER_XT_TARGET_NFQUEUE, CONFIG_NFT_COMPAT, CONFIG_BRIDGE_NETFILTER); this kernel has neither")
	// ErrNoHTB is returned when a link model asks for latency or jitter on
	// a kernel that has netem but not the htb qdisc that routes each
	// source to its own netem, and the lab cannot delay in user space
	// either (or was told to use netem, see Options.Delay).
	ErrNoHTB = errors.New("netlab: latency and jitter with netem need the kernel's htb qdisc (CONFIG_NET_SCH_HTB), which this kernel lacks")
	// ErrNoDup is returned when a link model asks for duplication on a
	// kernel without the nftables dup statement (CONFIG_NFT_DUP_IPV4).
	ErrNoDup = errors.New("netlab: duplication needs the nftables dup statement (CONFIG_NFT_DUP_IPV4), which this kernel lacks")
)

// Options describe a lab.
type Options struct {
	// Name prefixes every namespace and link of the lab: namespaces are
	// "<Name>-hub" and "<Name>-n<N>". It must match [a-z0-9]{1,8} and be
	// unique among the labs alive on the host (include the PID in tests).
	Name string
	// Nodes are the node numbers, each in 1..1024, without duplicates.
	Nodes []int
	// Subnet is an IPv4 prefix; node N gets Subnet.Addr()+N. The zero
	// value means DefaultSubnet. It must be large enough that the highest
	// node's address is neither the network nor the broadcast address.
	Subnet netip.Prefix
	// Delay chooses how Latency and Jitter are emulated: "" (the
	// default) uses netem where the kernel has it and user space
	// otherwise; DelayNetem or DelayQueue use only that method (tests
	// use this to check the user-space path on kernels with netem).
	Delay DelayMethod
}

// DelayMethod is how a lab delays packets.
type DelayMethod string

const (
	// DelayNetem: a netem qdisc per distinct delay on the hub port
	// towards the receiver (htb classes and u32 filters pick it).
	DelayNetem DelayMethod = "netem"
	// DelayQueue: an ip-family table in the hub, which br_netfilter runs
	// for bridged IPv4, queues the packets of delayed links to this
	// process over NFQUEUE, which lets each one go on when its delay has
	// passed (see the package documentation).
	DelayQueue DelayMethod = "nfqueue"
	// DelayNone: the kernel offers neither; models with delay are
	// refused with ErrNoNetem.
	DelayNone DelayMethod = "none"
)

// Caps says which faults the running kernel can inject. It is probed once
// in New, inside the lab's hub namespace.
type Caps struct {
	// Netem: the netem qdisc exists, the preferred way to delay.
	Netem bool
	// HTB: the htb qdisc exists, needed to give each link its own netem.
	HTB bool
	// Duplicate: the nftables dup statement for IPv4 exists.
	Duplicate bool
	// Queue: the hub can queue bridged packets to user space (the xt
	// NFQUEUE target through nft_compat, and nfnetlink_queue).
	Queue bool
	// Delay is the method used for Latency and Jitter: DelayNetem when
	// Netem and HTB (unless Options.Delay says otherwise), else
	// DelayQueue when Queue, else DelayNone.
	Delay DelayMethod
}

// CanDelay reports whether the lab can apply Latency and Jitter.
func (c Caps) CanDelay() bool { return c.Delay == DelayNetem || c.Delay == DelayQueue }

// A Lab is a running test network. Its methods are safe for concurrent use;
// fault changes are serialized.
type Lab struct {
	name   string
	subnet netip.Prefix
	nodes  []int // sorted
	caps   Caps

	mu     sync.Mutex
	closed bool
	hub    *nsRef
	hubNL  *netlink.Handle
	nodeNS map[int]*nsRef
	f      faults
	// What was last installed per sender (dup) and per receiver port
	// (delay), so that a change touches only the namespaces it concerns
	// and a Block never resets a netem queue.
	appliedHub string
	appliedDup map[int]string
	appliedTC  map[int]string
	// The hub's tables: bridge (drops) and ip (queueing for delay).
	// Their base chains, once created, are kept, because unregistering a
	// netfilter hook drops every packet queued to user space in the
	// namespace (nf_queue_nf_hook_drop), which would lose the packets
	// the delayer holds on every fault change. Each change flushes the
	// base chains and replaces the regular chains and sets, whose names
	// carry the generation hubGen so that old and new never clash.
	hubGen           int
	hubBridge, hubIP hubTable
	// delay holds packets for DelayQueue; started with the first
	// delayed link, stopped by Close.
	delay *delayer
}

// nsRef is a namespace the lab created: its name under /run/netns and an
// open fd that keeps netlink and nftables connections cheap to open.
type nsRef struct {
	name string
	fd   int
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// addrOf maps node n into the subnet; the caller checked that it fits.
func addrOf(subnet netip.Prefix, n int) netip.Addr {
	b := subnet.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (o *Options) validate() error {
	if !validName(o.Name) {
		return fmt.Errorf("netlab: name %q must match [a-z0-9]{1,%d}", o.Name, maxNameLen)
	}
	if len(o.Nodes) == 0 {
		return errors.New("netlab: a lab needs at least one node")
	}
	seen := make(map[int]bool, len(o.Nodes))
	maxN := 0
	for _, n := range o.Nodes {
		if n < 1 || n > maxNode {
			return fmt.Errorf("netlab: node %d is outside 1..%d", n, maxNode)
		}
		if seen[n] {
			return fmt.Errorf("netlab: node %d listed twice", n)
		}
		seen[n] = true
		maxN = max(maxN, n)
	}
	if !o.Subnet.IsValid() {
		o.Subnet = DefaultSubnet
	}
	if !o.Subnet.Addr().Is4() {
		return fmt.Errorf("netlab: subnet %v is not IPv4", o.Subnet)
	}
	o.Subnet = o.Subnet.Masked()
	switch o.Delay {
	case "", DelayNetem, DelayQueue:
	default:
		return fmt.Errorf("netlab: delay method %q is not %q or %q", o.Delay, DelayNetem, DelayQueue)
	}
	// Host addresses 1..size-2 are usable; node N uses offset N.
	if hostBits := 32 - o.Subnet.Bits(); hostBits < 2 || maxN > 1<<hostBits-2 {
		return fmt.Errorf("netlab: subnet %v has no room for node %d", o.Subnet, maxN)
	}
	return nil
}

// New builds the lab: the hub namespace with its bridge, then each node's
// namespace with lo and eth0 up and addressed. If anything fails, what was
// already built is removed before New returns the error. A name that is
// already in use (for example by a crashed run; see Sweep) is an error, not
// something New deletes.
func New(o Options) (_ *Lab, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := ensureNetnsDir(); err != nil {
		return nil, err
	}
	l := &Lab{
		name:       o.Name,
		subnet:     o.Subnet,
		nodes:      slices.Sorted(slices.Values(o.Nodes)),
		nodeNS:     make(map[int]*nsRef, len(o.Nodes)),
		f:          newFaults(),
		appliedDup: make(map[int]string),
		appliedTC:  make(map[int]string),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	if err := l.buildHub(); err != nil {
		return nil, err
	}
	l.caps = l.probe(o.Delay)
	for _, n := range l.nodes {
		if err := l.buildNode(n); err != nil {
			return nil, fmt.Errorf("netlab: node %d: %w", n, err)
		}
	}
	return l, nil
}

func (l *Lab) hubName() string         { return l.name + "-hub" }
func (l *Lab) bridgeName() string      { return l.name + "-br" }
func (l *Lab) portName(n int) string   { return fmt.Sprintf("%s-v%d", l.name, n) }
func (l *Lab) nodeNSName(n int) string { return fmt.Sprintf("%s-n%d", l.name, n) }

func (l *Lab) buildHub() error {
	hub, err := createNS(l.hubName())
	if err != nil {
		return err
	}
	l.hub = hub
	h, err := netlink.NewHandleAt(netns.NsHandle(hub.fd))
	if err != nil {
		return fmt.Errorf("netlab: netlink in %s: %w", hub.name, err)
	}
	l.hubNL = h
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("netlab: hub lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("netlab: hub lo up: %w", err)
	}
	// Snooping would make the bridge filter multicast by what it has
	// seen; a lab switch should be plain and predictable.
	snoop := false
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: l.bridgeName()}, MulticastSnooping: &snoop}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("netlab: add bridge %s: %w", br.Name, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("netlab: bridge %s up: %w", br.Name, err)
	}
	return nil
}

func (l *Lab) buildNode(n int) error {
	ns, err := createNS(l.nodeNSName(n))
	if err != nil {
		return err
	}
	l.nodeNS[n] = ns
	br, err := l.hubNL.LinkByName(l.bridgeName())
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	// The peer is born inside the node namespace: no interface of the lab
	// ever exists in the host's namespace, not even for a moment.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: l.portName(n)},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(ns.fd),
	}
	if err := l.hubNL.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", veth.Name, err)
	}
	port, err := l.hubNL.LinkByName(veth.Name)
	if err != nil {
		return fmt.Errorf("veth %s: %w", veth.Name, err)
	}
	if err := l.hubNL.LinkSetMaster(port, br); err != nil {
		return fmt.Errorf("enslave %s: %w", veth.Name, err)
	}
	if err := l.hubNL.LinkSetUp(port); err != nil {
		return fmt.Errorf("%s up: %w", veth.Name, err)
	}

	h, err := netlink.NewHandleAt(netns.NsHandle(ns.fd))
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", ns.name, err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("eth0: %w", err)
	}
	// The lab is IPv4-only: every fault rule matches IPv4. Without IPv6
	// on eth0 there is no link-local path around the faults, and no
	// router solicitation or DAD chatter on the bridge.
	err = onThread(enterNS(filepath.Join(netnsDir, ns.name)), func() error {
		err := os.WriteFile("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", []byte("1"), 0)
		if errors.Is(err, os.ErrNotExist) {
			return nil // kernel without IPv6
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("disable IPv6 on eth0: %w", err)
	}
	a := l.Addr(n)
	ipnet := &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(l.subnet.Bits(), 32)}
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: ipnet}); err != nil {
		return fmt.Errorf("address %v: %w", ipnet, err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// Name returns the lab's name, the prefix of all its namespaces.
func (l *Lab) Name() string { return l.name }

// Nodes returns the node numbers in ascending order.
func (l *Lab) Nodes() []int { return slices.Clone(l.nodes) }

// Subnet returns the prefix the node addresses are taken from.
func (l *Lab) Subnet() netip.Prefix { return l.subnet }

// Capabilities returns what the kernel can emulate, as probed once by New.
func (l *Lab) Capabilities() Caps { return l.caps }

func (l *Lab) isNode(n int) bool {
	_, ok := slices.BinarySearch(l.nodes, n)
	return ok
}

// Addr returns node n's address on eth0, or the zero Addr if n is not a
// node of the lab.
func (l *Lab) Addr(n int) netip.Addr {
	if !l.isNode(n) {
		return netip.Addr{}
	}
	return addrOf(l.subnet, n)
}

// NSName returns the name of node n's namespace (usable with
// `ip netns exec`), or "" if n is not a node of the lab.
func (l *Lab) NSName(n int) string {
	if !l.isNode(n) {
		return ""
	}
	return l.nodeNSName(n)
}

// HubNSName returns the name of the namespace holding the bridge and the
// fault rules, for debugging (`ip netns exec <hub> tc qdisc`).
func (l *Lab) HubNSName() string { return l.hubName() }

// Close stops the user-space delayer (its goroutines and socket; the
// packets it still held are dropped), removes the lab's namespaces, and
// with them every link, qdisc and nftables rule of the lab, and kills every process still running inside
// them (they can only have been started for the lab, e.g. by Command
// without Wait; Wait on such a Cmd returns soon after). It also removes a
// partially built lab. Close is idempotent: a
// second call does nothing and returns nil.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	refs := make([]*nsRef, 0, len(l.nodeNS)+1)
	for _, n := range l.nodes {
		if r := l.nodeNS[n]; r != nil {
			refs = append(refs, r)
		}
	}
	if l.hub != nil {
		refs = append(refs, l.hub)
	}
	var errs []error
	ids := make(map[nsID]bool, len(refs))
	for _, r := range refs {
		if id, err := fdNSID(r.fd); err == nil {
			ids[id] = true
		} else {
			errs = append(errs, err)
		}
	}
	if l.hubNL != nil {
		l.hubNL.Close()
		l.hubNL = nil
	}
	// The delayer's socket lives in the hub (and keeps it alive): close
	// it before the namespaces go.
	if l.delay != nil {
		if err := l.delay.close(); err != nil {
			errs = append(errs, err)
		}
		if err := l.delay.failure(); err != nil {
			errs = append(errs, err)
		}
		l.delay = nil
	}
	// Unmount first, then kill: a process Command is just starting either
	// is already inside (and is killed) or finds the mount gone and exits
	// (see reexec). A live process would otherwise keep its namespace, and
	// with it eth0, alive where no one could find it any more.
	for _, r := range refs {
		if err := removeNS(r.name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := killProcsIn(ids); err != nil {
		errs = append(errs, err)
	}
	for _, r := range refs {
		r.closeFD()
	}
	return errors.Join(errs...)
}
