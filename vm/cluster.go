package vm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/vm/guest"
)

// Options describe a cluster of VMs.
type Options struct {
	// Name is unique among the labs alive on the host; it must start
	// with NamePrefix (see NewName).
	Name    string
	Nodes   []int
	Masters []int
	Image   *Image
	KVM     bool
	MemMiB  int
	// Dir holds the run's files: disks, consoles, QMP and API sockets.
	Dir string
	// Args are clusterd's flags beyond the ones the cluster sets
	// (heartbeat, timeouts).
	Args []string
	// DiskMiB is the size of each VM's disk (default 16).
	DiskMiB int
}

// Cluster is a set of VMs, one per node, on one Network. Each VM keeps
// its disk from its first boot to Close. Its methods may be called from
// several goroutines.
type Cluster struct {
	o   Options
	net *Network
	key string

	mu     sync.Mutex
	vms    map[int]*Machine
	boots  map[int]int
	lns    map[int]net.Listener
	closed bool
	wg     sync.WaitGroup
}

var nameSeq struct {
	sync.Mutex
	n int
}

// NewName returns a fresh lab name, NamePrefix + "<pid>-<seq>".
func NewName() string {
	nameSeq.Lock()
	defer nameSeq.Unlock()
	nameSeq.n++
	return fmt.Sprintf("%s%d-%d", NamePrefix, os.Getpid(), nameSeq.n)
}

// NewCluster creates the network and the API sockets; no VM runs yet.
func NewCluster(o Options) (_ *Cluster, err error) {
	if o.DiskMiB == 0 {
		o.DiskMiB = 16
	}
	if !strings.HasPrefix(o.Name, NamePrefix) {
		return nil, fmt.Errorf("vm: cluster name %q must start with %s", o.Name, NamePrefix)
	}
	c := &Cluster{o: o, vms: map[int]*Machine{}, boots: map[int]int{}, lns: map[int]net.Listener{}}
	register(c)
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	if c.net, err = NewNetwork(o.Name); err != nil {
		return c, err
	}
	c.key = fmt.Sprintf("clusterlab-vm-key-%s-%d", o.Name, time.Now().UnixNano())
	for _, id := range o.Nodes {
		if id < 1 || id > 1000 {
			return c, fmt.Errorf("vm: node %d out of range", id)
		}
		ln, err := net.Listen("unix", c.APISocket(id))
		if err != nil {
			return c, err
		}
		c.lns[id] = ln
		c.wg.Add(1)
		go c.proxy(id, ln)
	}
	// Format every node's disk now, side by side, so that booting all
	// the nodes starts their QEMUs back to back.
	if o.Dir != "" {
		errs := make([]error, len(o.Nodes))
		var wg sync.WaitGroup
		for i, id := range o.Nodes {
			wg.Go(func() { errs[i] = NewDisk(c.disk(id), o.DiskMiB) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return c, err
		}
	}
	return c, nil
}

// disk is node id's state disk image.
func (c *Cluster) disk(id int) string { return filepath.Join(c.o.Dir, fmt.Sprintf("n%d.disk", id)) }

// Network is the cluster's switch.
func (c *Cluster) Network() *Network { return c.net }

// APISocket is a Unix socket on the host that leads to node id's
// clusterd control API (-lab-api on the guest), for libcluster.New.
func (c *Cluster) APISocket(id int) string {
	return filepath.Join(c.o.Dir, fmt.Sprintf("n%d.api", id))
}

// Console is node id's serial console log (all its boots).
func (c *Cluster) Console(id int) string {
	return filepath.Join(c.o.Dir, fmt.Sprintf("n%d.console", id))
}

// proxy forwards each connection to id's API socket to the guest, dialled
// from inside the network's namespace.
func (c *Cluster) proxy(id int, ln net.Listener) {
	defer c.wg.Done()
	to := netip.AddrPortFrom(Addr(id), guest.APIPort).String()
	for {
		a, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer a.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			b, err := c.net.DialContext(ctx, "tcp4", to)
			cancel()
			if err != nil {
				return
			}
			defer b.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(b, a); b.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { _, _ = io.Copy(a, b); a.(*net.UnixConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

func (c *Cluster) conf(id int) string {
	var ms []string
	for _, m := range c.o.Masters {
		ms = append(ms, fmt.Sprintf("%d:%s", m, Addr(m)))
	}
	return fmt.Sprintf("# clusterlab vm\nCLUSTER_NODENUM=%d\nCLUSTER_MASTER=%s\nIFCONFIG=eth0:%s:255.255.0.0\n", id, strings.Join(ms, ","), Addr(id))
}

// Boot starts node id's VM (formatting its disk if NewCluster did not)
// and returns
// once QEMU runs; the guest then boots on its own.
func (c *Cluster) Boot(id int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("vm: cluster closed")
	}
	if m := c.vms[id]; m != nil {
		select {
		case <-m.Exited():
		default:
			return fmt.Errorf("vm: n%d is already running", id)
		}
	}
	disk := c.disk(id)
	if !fileExists(disk) {
		if err := NewDisk(disk, c.o.DiskMiB); err != nil {
			return err
		}
	}
	args := append([]string{
		"-config", guest.ConfPath, "-key", guest.KeyPath, "-state", guest.StateDir,
		"-socket", "/run/clusterd.sock", "-metrics", "", "-name", fmt.Sprintf("n%d", id),
		"-lab", "-lab-api", netip.AddrPortFrom(Addr(id), guest.APIPort).String(),
	}, c.o.Args...)
	// The key is long enough for clusterd (32 bytes at least).
	param, err := guest.Config{Node: id, Addr: fmt.Sprintf("%s/%d", Addr(id), Subnet.Bits()), Conf: c.conf(id), Key: c.key, Args: args}.Param()
	if err != nil {
		return err
	}
	tap, err := c.net.OpenTap(id)
	if err != nil {
		return err
	}
	defer tap.Close()
	c.boots[id]++
	fmt.Fprintf(appendFile(c.Console(id)), "\n=== clusterlab: boot %d of n%d at %s ===\n", c.boots[id], id, time.Now().Format(time.RFC3339Nano))
	m, err := Start(MachineConfig{
		Name: fmt.Sprintf("%s-n%d", c.o.Name, id), Kernel: c.o.Image.Kernel.Vmlinuz, Initrd: c.o.Image.Initrd,
		Append: Append(param), MemMiB: c.o.MemMiB, KVM: c.o.KVM, Tap: tap, MAC: MAC(id).String(),
		Disk: disk, Console: c.Console(id), QMP: filepath.Join(c.o.Dir, fmt.Sprintf("n%d.qmp", id)),
	})
	if err != nil {
		return err
	}
	c.vms[id] = m
	return nil
}

func appendFile(p string) io.Writer {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return io.Discard
	}
	return closingWriter{f}
}

type closingWriter struct{ f *os.File }

func (w closingWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.f.Close()
	return n, err
}

func (c *Cluster) machine(id int) (*Machine, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.vms[id]
	if m == nil {
		return nil, fmt.Errorf("vm: n%d is not running", id)
	}
	return m, nil
}

// Crash ends node id's VM at once (QMP quit). A VM that has already
// powered off (after a leave) is simply forgotten.
func (c *Cluster) Crash(id int) error {
	m, err := c.machine(id)
	if err != nil {
		return err
	}
	err = m.Quit()
	c.mu.Lock()
	delete(c.vms, id)
	c.mu.Unlock()
	return err
}

// Pause freezes node id's VM (QMP stop).
func (c *Cluster) Pause(id int) error {
	m, err := c.machine(id)
	if err != nil {
		return err
	}
	return m.Stop()
}

// Resume thaws it (QMP cont).
func (c *Cluster) Resume(id int) error {
	m, err := c.machine(id)
	if err != nil {
		return err
	}
	return m.Cont()
}

// Exited is closed when node id's current VM has ended (nil if none).
func (c *Cluster) Exited(id int) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.vms[id]; m != nil {
		return m.Exited()
	}
	return nil
}

// RSS returns each running VM's QEMU resident memory in bytes.
func (c *Cluster) RSS() map[int]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]int64{}
	for id, m := range c.vms {
		out[id] = m.RSS()
	}
	return out
}

// Clock is one probe of a guest's wall clock.
type Clock struct {
	// Offset is host time minus guest time.
	Offset time.Duration
	// Guest is the guest's clock when it answered (ns since 1970).
	Guest int64
	// RTT bounds the error of Offset (half of it).
	RTT time.Duration
}

// Prober asks guests for their clocks over UDP (vminit's time server).
type Prober struct {
	c   *net.UDPConn
	mu  sync.Mutex
	seq uint64
}

// NewProber opens the prober's socket inside the network.
func (c *Cluster) NewProber() (*Prober, error) {
	u, err := c.net.ListenPacket()
	if err != nil {
		return nil, err
	}
	return &Prober{c: u}, nil
}

// Probe sends up to n probes to node id and returns the one with the
// shortest round trip, or an error if none came back within timeout each.
func (p *Prober) Probe(id, n int, timeout time.Duration) (Clock, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	to := &net.UDPAddr{IP: net.IP(Addr(id).AsSlice()), Port: guest.TimePort}
	var best Clock
	ok := false
	buf := make([]byte, 64)
	for range n {
		p.seq++
		var req [8]byte
		binary.BigEndian.PutUint64(req[:], p.seq)
		t0 := time.Now()
		if _, err := p.c.WriteToUDP(req[:], to); err != nil {
			return Clock{}, err
		}
		_ = p.c.SetReadDeadline(t0.Add(timeout))
		for {
			k, _, err := p.c.ReadFromUDP(buf)
			if err != nil {
				break // timeout: try the next probe
			}
			if k < 16 || binary.BigEndian.Uint64(buf[8:16]) != p.seq {
				continue // a late answer to an earlier probe
			}
			t1 := time.Now()
			g := int64(binary.BigEndian.Uint64(buf[:8]))
			mid := t0.UnixNano() + t1.Sub(t0).Nanoseconds()/2
			cl := Clock{Offset: time.Duration(mid - g), Guest: g, RTT: t1.Sub(t0)}
			if !ok || cl.RTT < best.RTT {
				best, ok = cl, true
			}
			break
		}
	}
	if !ok {
		return Clock{}, fmt.Errorf("vm: n%d: no clock probe answered", id)
	}
	return best, nil
}

// Close closes the prober's socket.
func (p *Prober) Close() { p.c.Close() }

// Close ends every VM, closes the API sockets and removes the network.
// The run's directory is the caller's. Idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	vms := c.vms
	c.vms = map[int]*Machine{}
	for _, ln := range c.lns {
		ln.Close()
	}
	c.mu.Unlock()
	ids := make([]int, 0, len(vms))
	for id := range vms {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		vms[id].Kill()
	}
	c.wg.Wait()
	var err error
	if c.net != nil {
		err = c.net.Close()
	}
	unregister(c)
	return err
}

// live are the clusters not yet closed, for CloseAll.
var live struct {
	sync.Mutex
	m map[*Cluster]bool
}

func register(c *Cluster) {
	live.Lock()
	defer live.Unlock()
	if live.m == nil {
		live.m = map[*Cluster]bool{}
	}
	live.m[c] = true
}

func unregister(c *Cluster) {
	live.Lock()
	defer live.Unlock()
	delete(live.m, c)
}

// CloseAll closes every cluster of this process: for a Ctrl-C handler.
func CloseAll() {
	live.Lock()
	cs := make([]*Cluster, 0, len(live.m))
	for c := range live.m {
		cs = append(cs, c)
	}
	live.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
}

// pidAlive reports whether process pid exists.
func pidAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM)
}
