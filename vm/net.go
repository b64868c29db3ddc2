package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"unsafe"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NamePrefix starts the name of every namespace and QEMU process of a VM
// lab: "civm-<pid>-<seq>". Sweep finds leftovers by it.
const NamePrefix = "civm-"

const (
	netnsDir     = "/run/netns"
	threadNetNS  = "/proc/thread-self/ns/net"
	bridgeName   = "br0"
	nftTableName = "civm"
	lossModulus  = 1_000_000
)

// Subnet is the VMs' network: node N is Subnet.Addr()+N, the lab itself
// (the bridge's own address) is HostAddr.
var (
	Subnet   = netip.MustParsePrefix("10.214.0.0/16")
	HostAddr = netip.MustParseAddr("10.214.255.254")
)

// ErrNoNetem says the host kernel has no netem qdisc, so link latency and
// jitter cannot be emulated on the taps.
var ErrNoNetem = errors.New("vm: latency and jitter need the host kernel's netem qdisc (CONFIG_NET_SCH_NETEM), which this kernel lacks")

// Network is the VMs' switch: a bridge in a network namespace of its own,
// one tap per VM on it, and nftables rules in the bridge family that drop
// traffic between taps (cuts, partitions, loss). The bridge itself has
// HostAddr, so the lab reaches every guest from inside the namespace
// (Dial) without crossing the filters, which only see forwarded frames.
// Nothing of it exists in the host's namespace: removing the namespace
// removes everything.
type Network struct {
	name string
	fd   int
	nl   *netlink.Handle

	mu     sync.Mutex
	closed bool
	netem  *bool
}

// NewNetwork creates the namespace (mounted at /run/netns/name, like
// `ip netns add`), its bridge and address.
func NewNetwork(name string) (_ *Network, err error) {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return nil, err
	}
	p := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("vm: namespace %s: %w", name, err)
	}
	f.Close()
	n := &Network{name: name, fd: -1}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()
	err = onThread(func() error { return unix.Unshare(unix.CLONE_NEWNET) }, func() error {
		return unix.Mount(threadNetNS, p, "none", unix.MS_BIND, "")
	})
	if err != nil {
		return n, fmt.Errorf("vm: create namespace %s: %w", name, err)
	}
	if n.fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return n, err
	}
	if n.nl, err = netlink.NewHandleAt(netns.NsHandle(n.fd)); err != nil {
		return n, err
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return n, err
	}
	if err := n.nl.LinkSetUp(lo); err != nil {
		return n, err
	}
	snoop := false
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}, MulticastSnooping: &snoop}
	if err := n.nl.LinkAdd(br); err != nil {
		return n, fmt.Errorf("vm: bridge: %w", err)
	}
	ipnet := &net.IPNet{IP: net.IP(HostAddr.AsSlice()), Mask: net.CIDRMask(Subnet.Bits(), 32)}
	if err := n.nl.AddrAdd(br, &netlink.Addr{IPNet: ipnet}); err != nil {
		return n, fmt.Errorf("vm: bridge address: %w", err)
	}
	if err := n.nl.LinkSetUp(br); err != nil {
		return n, err
	}
	return n, nil
}

// Name is the namespace's name (`ip netns exec NAME ...` to look inside).
func (n *Network) Name() string { return n.name }

// Addr is node id's address.
func Addr(id int) netip.Addr {
	b := Subnet.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + uint32(id)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// MAC is node id's fixed MAC address (locally administered).
func MAC(id int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, 0xc1, byte(id >> 8), byte(id)}
}

// TapName is node id's tap on the bridge.
func TapName(id int) string { return fmt.Sprintf("tap%d", id) }

// ifreq is struct ifreq for TUNSETIFF.
type ifreq struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

// OpenTap creates node id's tap inside the namespace, puts it on the
// bridge and returns its file, for QEMU (-netdev tap,fd=). The tap lives
// as long as a descriptor of it is open: when QEMU exits and the caller
// has closed its copy, it disappears with everything on it.
func (n *Network) OpenTap(id int) (*os.File, error) {
	var f *os.File
	err := onThread(n.enter, func() error {
		// The tap is created in the namespace of the thread that opens
		// /dev/net/tun.
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		var req ifreq
		copy(req.name[:], TapName(id))
		req.flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); e != 0 {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", TapName(id), e)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun")
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("vm: tap for n%d: %w", id, err)
	}
	link, err := n.nl.LinkByName(TapName(id))
	if err == nil {
		var br netlink.Link
		if br, err = n.nl.LinkByName(bridgeName); err == nil {
			if err = n.nl.LinkSetMaster(link, br); err == nil {
				err = n.nl.LinkSetUp(link)
			}
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("vm: tap for n%d: %w", id, err)
	}
	return f, nil
}

func (n *Network) enter() error {
	return unix.Setns(n.fd, unix.CLONE_NEWNET)
}

// DialContext connects from inside the namespace (from the bridge's own
// address): the way the lab talks to the guests.
func (n *Network) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := onThread(n.enter, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// ListenPacket opens a UDP socket inside the namespace.
func (n *Network) ListenPacket() (*net.UDPConn, error) {
	var c *net.UDPConn
	err := onThread(n.enter, func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(HostAddr.AsSlice())})
		return err
	})
	return c, err
}

// Filters are the drops between VMs: Blocked[[2]int{a, b}] drops every
// IPv4 frame from a's tap to b's; Loss drops that share of them.
type Filters struct {
	Blocked map[[2]int]bool
	Loss    map[[2]int]float64
}

// SetFilters replaces the bridge's rules with f in one transaction, so a
// partition starts and heals at one instant for every VM.
func (n *Network) SetFilters(f Filters) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("vm: network closed")
	}
	c, err := nftables.New(nftables.WithNetNSFd(n.fd))
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: nftTableName, Family: nftables.TableFamilyBridge}
	c.AddTable(t)
	c.DelTable(t)
	type rule struct {
		from, to int
		loss     float64
	}
	var rules []rule
	for p, ok := range f.Blocked {
		if ok {
			rules = append(rules, rule{p[0], p[1], 1})
		}
	}
	for p, l := range f.Loss {
		if l > 0 && !f.Blocked[p] {
			rules = append(rules, rule{p[0], p[1], l})
		}
	}
	sort.Slice(rules, func(i, j int) bool {
		if rules[i].from != rules[j].from {
			return rules[i].from < rules[j].from
		}
		return rules[i].to < rules[j].to
	})
	if len(rules) > 0 {
		c.AddTable(t)
		accept := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		// ARP passes, as through a real switch with a cut cable behind it.
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x08, 0x00}},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
		for _, r := range rules {
			ex := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(TapName(r.from))},
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(TapName(r.to))},
			}
			if k := uint32(r.loss * lossModulus); k < lossModulus {
				th := []byte{byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}
				ex = append(ex,
					&expr.Numgen{Register: 2, Modulus: lossModulus, Type: unix.NFT_NG_RANDOM},
					&expr.Byteorder{SourceRegister: 2, DestRegister: 2, Op: expr.ByteorderHton, Len: 4, Size: 4},
					&expr.Cmp{Op: expr.CmpOpLt, Register: 2, Data: th})
			}
			ex = append(ex, &expr.Verdict{Kind: expr.VerdictDrop})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: ex})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("vm: bridge filters: %w", err)
	}
	return nil
}

func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

// HasNetem reports whether the host kernel can add a netem qdisc (probed
// once, on the bridge's loopback).
func (n *Network) HasNetem() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.netem == nil {
		ok := false
		if lo, err := n.nl.LinkByName("lo"); err == nil {
			q := netlink.NewNetem(netlink.QdiscAttrs{LinkIndex: lo.Attrs().Index, Parent: netlink.HANDLE_ROOT, Handle: netlink.MakeHandle(1, 0)},
				netlink.NetemQdiscAttrs{Latency: 1000})
			if err := n.nl.QdiscAdd(q); err == nil {
				ok = true
				_ = n.nl.QdiscDel(q)
			}
		}
		n.netem = &ok
	}
	return *n.netem
}

// Close removes the namespace and with it the bridge, the rules and the
// taps (once the QEMU processes holding them have exited). Idempotent.
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if n.nl != nil {
		n.nl.Close()
	}
	if n.fd >= 0 {
		unix.Close(n.fd)
	}
	return removeNS(n.name)
}

func removeNS(name string) error {
	p := filepath.Join(netnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("vm: unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// onThread runs enter and f on a goroutine locked to its own OS thread,
// then puts the thread back into its namespace; if that fails the thread
// stays locked and dies with the goroutine, so no other goroutine ever
// runs inside the lab's namespace.
func onThread(enter, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open(threadNetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(orig)
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
