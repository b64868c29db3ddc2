package netlab

import (
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/florianl/go-nfqueue/v2"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// User-space delay (DelayQueue): the hub's ip table hands each IPv4
// packet of a delayed link to NFQUEUE queue hubQueue, after the bridge
// table's drop and loss rules (see installHub). A delayer in this
// process receives the packet's first bytes over nfnetlink_queue (with
// github.com/florianl/go-nfqueue), draws the packet's delay
// (Latency plus a uniform draw in ±Jitter, at least zero, as netem does
// without a distribution table) and issues the ACCEPT verdict when the
// delay has passed. The packet itself stays in the kernel meanwhile; the
// verdict lets it continue through the bridge to the receiver's port.
// Verdicts are given per packet in release order, so packets reorder
// when their draws say so, like with netem.
const (
	// hubQueue is the NFQUEUE number in the hub; queue numbers are per
	// namespace, and the hub belongs to the lab.
	hubQueue = 0
	// queueMaxLen bounds the packets the kernel holds for the delayer
	// (queued and not yet given a verdict), for all links of the lab
	// together; netem's default limit is 1000 per qdisc. A packet that
	// finds the queue full is dropped (no fail-open: delivering it
	// undelayed would overtake the held ones, and a full queue dropping
	// is what netem and a real switch do). Each held packet is one
	// element of the delayer's hold heap, so this bounds the heap too.
	queueMaxLen = 4096
	// copyLen is how much of each packet the kernel copies to the
	// delayer: the IPv4 header up to the destination address.
	copyLen = offDaddr + 4
	// queueRcvBuf is the delayer's netlink receive buffer. A message is
	// about 150 bytes, so it holds a full queue's worth. If it ever
	// overflows, the kernel drops the packets it could not announce
	// (they never enter the queue, so none is stranded).
	queueRcvBuf = 2 << 20
)

// nfqueueTarget is the xt NFQUEUE target (revision 3) used through
// nft_compat, because kernels may lack nft's own queue expression
// (CONFIG_NFT_QUEUE), as this project's machines do. The kernel refuses
// compat targets in bridge-family base chains (ENOENT), hence the ip
// table. Its info is struct xt_NFQ_info_v3 in
// host byte order: queuenum, queues_total, flags, padded to 8 bytes.
// Flags are 0: no NFQ_FLAG_BYPASS, so a packet with no delayer to take
// it is dropped rather than sent on undelayed.
func nfqueueTarget() *expr.Target {
	info := make(xt.Unknown, 8)
	binary.NativeEndian.PutUint16(info[0:], hubQueue)
	binary.NativeEndian.PutUint16(info[2:], 1)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
}

// delayModel is the delay part of the fault state, as the delayer reads
// it for each packet: the default model's delay and the overrides.
type delayModel struct {
	def   delayKey
	links map[pair]delayKey // by linkKey, only for overridden links
}

func (m *delayModel) of(from, to int) delayKey {
	if k, ok := m.links[linkKey(from, to)]; ok {
		return k
	}
	return m.def
}

// held is a packet waiting in the kernel for its verdict.
type held struct {
	at time.Time
	id uint32
}

type heldHeap []held

func (h heldHeap) Len() int           { return len(h) }
func (h heldHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h heldHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *heldHeap) Push(x any)        { *h = append(*h, x.(held)) }
func (h *heldHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// delayer holds the packets the hub queues and releases each when its
// delay has passed. Two goroutines: the library's receiver, which
// answers undelayed packets at once and puts the others on the heap, and
// the releaser, which sleeps until the earliest release time.
type delayer struct {
	q      *nfqueue.Nfqueue
	ctx    context.Context
	cancel context.CancelFunc
	nodeOf map[netip.Addr]int
	model  atomic.Pointer[delayModel]

	mu   sync.Mutex
	held heldHeap
	err  error // first failure; the delayer is then dead

	wake chan struct{}
	done chan struct{}
	wg   sync.WaitGroup

	// Counters, for tests and debugging.
	queued, released, dropped, lostMsgs atomic.Int64
}

// startDelayer binds the hub's queue. It runs with l.mu held.
func (l *Lab) startDelayer() (*delayer, error) {
	q, err := nfqueue.Open(&nfqueue.Config{
		NetNS:        l.hub.fd,
		NfQueue:      hubQueue,
		MaxQueueLen:  queueMaxLen,
		MaxPacketLen: copyLen,
		Copymode:     nfqueue.NfQnlCopyPacket,
		// GSO: the kernel need not segment a GSO packet to queue it;
		// like netem, the delayer delays it as one packet.
		Flags:        nfqueue.NfQaCfgFlagGSO,
		AfFamily:     unix.AF_INET,
		WriteTimeout: time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: nfqueue in the hub: %w", err)
	}
	d := &delayer{
		q:      q,
		nodeOf: make(map[netip.Addr]int, len(l.nodes)),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	for _, n := range l.nodes {
		d.nodeOf[l.Addr(n)] = n
	}
	d.model.Store(&delayModel{})
	if err := setRcvBufForce(q.Con, queueRcvBuf); err != nil {
		q.Close()
		return nil, fmt.Errorf("netlab: nfqueue receive buffer: %w", err)
	}
	// ENOBUFS says the kernel could not announce some packets (and so
	// dropped them); that is loss, not a reason to stop.
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if err := q.RegisterWithErrorFunc(d.ctx, d.packet, d.recvError); err != nil {
		d.cancel()
		q.Close()
		return nil, fmt.Errorf("netlab: nfqueue bind: %w", err)
	}
	d.wg.Go(d.release)
	return d, nil
}

func setRcvBufForce(c *netlink.Conn, n int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	return serr
}

func (d *delayer) setModel(m *delayModel) { d.model.Store(m) }

// failure returns the error that stopped the delayer, if any.
func (d *delayer) failure() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

func (d *delayer) fail(err error) {
	d.mu.Lock()
	if d.err == nil {
		d.err = fmt.Errorf("netlab: delayer: %w", err)
	}
	d.mu.Unlock()
}

func (d *delayer) recvError(err error) int {
	if d.ctx.Err() != nil {
		return 1
	}
	if errors.Is(err, syscall.ENOBUFS) {
		d.lostMsgs.Add(1)
		return 0
	}
	var oe *netlink.OpError
	if errors.As(err, &oe) && (oe.Timeout() || oe.Temporary()) {
		return 0
	}
	d.fail(err)
	return 1
}

// delayOf draws the delay of a packet from its IPv4 header; zero for
// anything the model does not delay (or that is not IPv4 of the lab).
func (d *delayer) delayOf(p []byte) time.Duration {
	if len(p) < copyLen || p[0]>>4 != 4 {
		return 0
	}
	from, ok1 := d.nodeOf[netip.AddrFrom4([4]byte(p[offSaddr:offSaddr+4]))]
	to, ok2 := d.nodeOf[netip.AddrFrom4([4]byte(p[offDaddr:offDaddr+4]))]
	if !ok1 || !ok2 {
		return 0
	}
	k := d.model.Load().of(from, to)
	delay := k.latency
	if k.jitter > 0 {
		delay += time.Duration(rand.Int64N(2*int64(k.jitter)+1)) - k.jitter
	}
	return max(delay, 0)
}

// packet runs on the library's receiving goroutine for every queued
// packet.
func (d *delayer) packet(a nfqueue.Attribute) int {
	if a.PacketID == nil {
		return 0
	}
	id := *a.PacketID
	now := time.Now()
	d.queued.Add(1)
	var delay time.Duration
	if a.Payload != nil {
		delay = d.delayOf(*a.Payload)
	}
	if delay == 0 {
		d.verdict(id, nfqueue.NfAccept)
		return 0
	}
	d.mu.Lock()
	if len(d.held) >= queueMaxLen {
		// Cannot happen while the kernel enforces queueMaxLen; the
		// heap must stay bounded all the same.
		d.mu.Unlock()
		d.verdict(id, nfqueue.NfDrop)
		return 0
	}
	heap.Push(&d.held, held{at: now.Add(delay), id: id})
	first := d.held[0].id == id
	d.mu.Unlock()
	if first {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return 0
}

func (d *delayer) verdict(id uint32, v int) {
	if err := d.q.SetVerdict(id, v); err != nil {
		if d.ctx.Err() == nil {
			d.fail(fmt.Errorf("verdict for packet %d: %w", id, err))
		}
		return
	}
	if v == nfqueue.NfAccept {
		d.released.Add(1)
	} else {
		d.dropped.Add(1)
	}
}

// release gives every held packet its verdict when its time comes.
func (d *delayer) release() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var due []uint32
	for {
		d.mu.Lock()
		now := time.Now()
		due = due[:0]
		for len(d.held) > 0 && !d.held[0].at.After(now) {
			due = append(due, heap.Pop(&d.held).(held).id)
		}
		next := time.Duration(-1)
		if len(d.held) > 0 {
			next = d.held[0].at.Sub(now)
		}
		d.mu.Unlock()
		for _, id := range due {
			d.verdict(id, nfqueue.NfAccept)
		}
		if next >= 0 {
			t.Reset(next)
		} else {
			t.Stop()
		}
		select {
		case <-d.done:
			return
		case <-d.wake:
		case <-t.C:
		}
	}
}

// close stops both goroutines and closes the socket. The kernel drops
// the packets still held when the socket goes (as a netem queue's
// packets go with its qdisc).
func (d *delayer) close() error {
	close(d.done)
	d.wg.Wait()
	d.cancel()
	if err := d.q.Close(); err != nil {
		return fmt.Errorf("netlab: delayer: close: %w", err)
	}
	return nil
}

// brnfCallIptables makes br_netfilter pass bridged IPv4 packets through
// the ip family's hooks; it is per namespace and on by default, but the
// queue rules depend on it, so the hub sets it.
const brnfCallIptables = "/proc/sys/net/bridge/bridge-nf-call-iptables"

func (l *Lab) hubSysctl(path, val string) error {
	return onThread(enterNS(filepath.Join(netnsDir, l.hub.name)), func() error {
		return os.WriteFile(path, []byte(val), 0)
	})
}

// probeQueue checks, inside the hub, that user-space delay can work:
// br_netfilter exists, the kernel accepts an ip-family forward chain with
// the compat NFQUEUE target, and nfnetlink_queue binds a queue. The
// scratch table is created and deleted in one batch, and the scratch queue
// is unbound again.
func (l *Lab) probeQueue() bool {
	if l.hubSysctl(brnfCallIptables, "1") != nil {
		return false
	}
	c, err := nftables.New(nftables.WithNetNSFd(l.hub.fd))
	if err != nil {
		return false
	}
	t := c.AddTable(&nftables.Table{Name: "netlab-probe", Family: nftables.TableFamilyIPv4})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name: "probe", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Immediate{Register: 1, Data: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0}},
		nfqueueTarget(),
	}})
	c.DelTable(t)
	if c.Flush() != nil {
		return false
	}
	q, err := nfqueue.Open(&nfqueue.Config{NetNS: l.hub.fd, NfQueue: hubQueue + 1, Copymode: nfqueue.NfQnlCopyMeta, AfFamily: unix.AF_INET})
	if err != nil {
		return false
	}
	ctx, cancel := context.WithCancel(context.Background())
	err = q.RegisterWithErrorFunc(ctx, func(nfqueue.Attribute) int { return 0 }, func(error) int { return 1 })
	cancel()
	q.Close()
	return err == nil
}
