package netlab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// Bounds for probes: a packet that should arrive gets a generous wait (the
// first one also waits for ARP); one that should not gets a short one,
// which is what keeps the tests at a few seconds.
const (
	arriveWait = 2 * time.Second
	silentWait = 200 * time.Millisecond
	udpPort    = 7000
)

// Test lab names are "t" + the PID in base 36 (5 digits, enough for
// pid_max 2^22) + a 2-digit sequence: unique across parallel test
// processes, and TestMain can tell which ones belonged to a dead process.
var labSeq atomic.Int32

func testLabName(t *testing.T) string {
	s := labSeq.Add(1)
	if s >= 36*36 {
		t.Fatal("too many labs in one test process")
	}
	pad := func(s string, n int) string { return strings.Repeat("0", n-len(s)) + s }
	return "t" + pad(strconv.FormatInt(int64(os.Getpid()), 36), 5) + pad(strconv.FormatInt(int64(s), 36), 2)
}

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h))
	}
	if os.Geteuid() == 0 {
		sweepDeadTestLabs()
	}
	os.Exit(m.Run())
}

// sweepDeadTestLabs removes labs left by test processes that were killed
// (a timeout does not run t.Cleanup). Labs of live processes, including
// parallel runs, are left alone.
func sweepDeadTestLabs() {
	labs, err := Leftovers("t*")
	if err != nil {
		fmt.Fprintln(os.Stderr, "netlab test: leftovers:", err)
		return
	}
	for _, lab := range labs {
		if len(lab) != 8 {
			continue
		}
		pid, err := strconv.ParseInt(lab[1:6], 36, 64)
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(int(pid), 0); err != syscall.ESRCH {
			continue // alive (or not ours to judge)
		}
		if err := Sweep(lab); err != nil {
			fmt.Fprintln(os.Stderr, "netlab test: sweep:", err)
		}
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netlab tests create network namespaces and need root (CAP_SYS_ADMIN, CAP_NET_ADMIN); skipping")
	}
}

// ourNamespaces lists /run/netns entries of lab name.
func ourNamespaces(t *testing.T, name string) []string {
	t.Helper()
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), name+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// ipNetnsList returns what `ip netns list` shows of lab name.
func ipNetnsList(t *testing.T, name string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var ours []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], name+"-") {
			ours = append(ours, f[0])
		}
	}
	return ours
}

// assertGone checks that nothing of lab name is left: no namespace under
// /run/netns or in `ip netns list`, and no link in the host's namespace.
func assertGone(t *testing.T, name string) {
	t.Helper()
	if left := ourNamespaces(t, name); len(left) > 0 {
		t.Errorf("namespaces left in %s: %v", netnsDir, left)
	}
	if left := ipNetnsList(t, name); len(left) > 0 {
		t.Errorf("ip netns list still shows %v", left)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range links {
		if strings.HasPrefix(ln.Attrs().Name, name) {
			t.Errorf("host has link %s", ln.Attrs().Name)
		}
	}
}

// newLab builds a lab for t and removes it when t ends, failed or not,
// then checks that nothing is left.
func newLab(t *testing.T, nodes ...int) *Lab {
	t.Helper()
	return newLabWith(t, Options{Nodes: nodes})
}

// newLabWith is newLab with options; the name is filled in.
func newLabWith(t *testing.T, o Options) *Lab {
	t.Helper()
	requireRoot(t)
	o.Name = testLabName(t)
	l, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		assertGone(t, o.Name)
	})
	return l
}

// newQueueLab builds a lab that delays in user space even where the
// kernel has netem, or skips the test where it cannot.
func newQueueLab(t *testing.T, nodes ...int) *Lab {
	t.Helper()
	l := newLabWith(t, Options{Nodes: nodes, Delay: DelayQueue})
	if c := l.Capabilities(); c.Delay != DelayQueue {
		t.Skipf("no user-space delay on this kernel (%+v)", c)
	}
	return l
}

// mesh is one UDP socket per node, used to probe reachability one
// direction at a time.
type mesh struct {
	lab   *Lab
	conns map[int]*net.UDPConn
	seq   int
}

func newMesh(t *testing.T, l *Lab) *mesh {
	t.Helper()
	m := &mesh{lab: l, conns: map[int]*net.UDPConn{}}
	for _, n := range l.Nodes() {
		var c *net.UDPConn
		err := l.Do(n, func() (err error) {
			c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.Addr(n), udpPort)))
			return err
		})
		if err != nil {
			t.Fatalf("node %d: listen: %v", n, err)
		}
		m.conns[n] = c
		t.Cleanup(func() { c.Close() })
		// Room for whole bursts (see count): a full buffer drops
		// datagrams, which would look like loss. FORCE since we are root.
		raw, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 4<<20)
		}); err != nil || serr != nil {
			t.Fatalf("receive buffer: %v %v", err, serr)
		}
	}
	return m
}

// send sends one datagram from -> to and fails the test if the send
// itself fails: a fault must look like loss, never like an error.
func (m *mesh) send(t *testing.T, from, to int, msg string) {
	t.Helper()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(m.lab.Addr(to), udpPort))
	if _, err := m.conns[from].WriteToUDP([]byte(msg), dst); err != nil {
		t.Fatalf("send %d->%d: %v (a fault must not surface as a send error)", from, to, err)
	}
}

// reach sends a fresh token from -> to and reports whether it arrived
// within wait; stale datagrams are skipped.
func (m *mesh) reach(t *testing.T, from, to int, wait time.Duration) bool {
	t.Helper()
	m.seq++
	token := fmt.Sprintf("%d>%d#%d", from, to, m.seq)
	m.send(t, from, to, token)
	deadline := time.Now().Add(wait)
	c := m.conns[to]
	buf := make([]byte, 1500)
	for {
		if err := c.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return false
			}
			t.Fatalf("read on node %d: %v", to, err)
		}
		if string(buf[:n]) == token {
			return true
		}
	}
}

// expect probes every ordered pair at once and compares with want. All
// probes share one silent window, so a matrix costs silentWait, not
// silentWait per pair.
func (m *mesh) expect(t *testing.T, what string, want func(from, to int) bool) {
	t.Helper()
	m.seq++
	nodes := m.lab.Nodes()
	tokens := map[string]pair{}
	for _, from := range nodes {
		for _, to := range nodes {
			if from != to {
				tok := fmt.Sprintf("%d>%d#%d", from, to, m.seq)
				tokens[tok] = pair{from, to}
				m.send(t, from, to, tok)
			}
		}
	}
	start := time.Now()
	got := make(chan map[pair]bool, len(nodes))
	for _, to := range nodes {
		go func() {
			seen := map[pair]bool{}
			missing := 0 // tokens that should arrive and have not
			for _, from := range nodes {
				if from != to && want(from, to) {
					missing++
				}
			}
			buf := make([]byte, 1500)
			c := m.conns[to]
			for {
				// Wait out the silent window, then only as long as an
				// expected token is still missing.
				deadline := start.Add(silentWait)
				if missing > 0 && time.Now().After(deadline) {
					deadline = start.Add(arriveWait)
				}
				_ = c.SetReadDeadline(deadline)
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					if missing > 0 && time.Since(start) < arriveWait {
						continue
					}
					got <- seen
					return
				}
				if p, ok := tokens[string(buf[:n])]; ok && p.to == to && !seen[p] {
					seen[p] = true
					if want(p.from, p.to) {
						missing--
					}
				}
			}
		}()
	}
	delivered := map[pair]bool{}
	for range nodes {
		for p := range <-got {
			delivered[p] = true
		}
	}
	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			if w, d := want(from, to), delivered[pair{from, to}]; w != d {
				t.Errorf("%s: %d->%d delivered=%v, want %v", what, from, to, d, w)
			}
		}
	}
}

func all(int, int) bool  { return true }
func none(int, int) bool { return false }

// count sends k datagrams from -> to and counts what arrives within wait
// (reading concurrently, so the receive buffer never overflows).
func (m *mesh) count(t *testing.T, from, to, k int, wait time.Duration) int {
	t.Helper()
	m.seq++
	prefix := fmt.Sprintf("burst%d:", m.seq)
	c := m.conns[to]
	got := make(chan int, 1)
	go func() {
		buf := make([]byte, 1500)
		n := 0
		_ = c.SetReadDeadline(time.Now().Add(wait))
		for {
			r, _, err := c.ReadFromUDP(buf)
			if err != nil {
				got <- n
				return
			}
			if strings.HasPrefix(string(buf[:r]), prefix) {
				n++
			}
		}
	}()
	for i := range k {
		m.send(t, from, to, fmt.Sprintf("%s%d", prefix, i))
		if i%32 == 31 {
			// Pace the burst: a full receive buffer would drop
			// datagrams and look like loss.
			time.Sleep(time.Millisecond)
		}
	}
	return <-got
}

// tcpEcho dials from node from to a listener on node to and checks an echo.
func tcpEcho(l *Lab, from, to int, timeout time.Duration) error {
	var ln net.Listener
	err := l.Do(to, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(l.Addr(to), 0).String())
		return err
	})
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		_, _ = io.Copy(c, c)
	}()
	var c net.Conn
	err = l.Do(from, func() (err error) {
		c, err = (&net.Dialer{Timeout: timeout}).Dial("tcp4", ln.Addr().String())
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != l.Addr(from) {
		return fmt.Errorf("dialed from %v, want %v", got, l.Addr(from))
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	msg := fmt.Sprintf("hello %d->%d\n", from, to)
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg {
		return fmt.Errorf("echo %q, want %q", line, msg)
	}
	return nil
}

func TestOptionsValidation(t *testing.T) {
	// No root needed: New must reject these before touching the system.
	tests := []struct {
		name string
		o    Options
	}{
		{"empty name", Options{Name: "", Nodes: []int{1}}},
		{"upper case", Options{Name: "Lab", Nodes: []int{1}}},
		{"dash", Options{Name: "a-b", Nodes: []int{1}}},
		{"too long", Options{Name: "abcdefghi", Nodes: []int{1}}},
		{"no nodes", Options{Name: "x"}},
		{"node 0", Options{Name: "x", Nodes: []int{0}}},
		{"node 1025", Options{Name: "x", Nodes: []int{1025}}},
		{"duplicate node", Options{Name: "x", Nodes: []int{2, 2}}},
		{"ipv6 subnet", Options{Name: "x", Nodes: []int{1}, Subnet: netip.MustParsePrefix("fd00::/64")}},
		{"subnet too small", Options{Name: "x", Nodes: []int{3}, Subnet: netip.MustParsePrefix("10.0.0.0/30")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if l, err := New(tc.o); err == nil {
				l.Close()
				t.Fatalf("New(%+v) succeeded", tc.o)
			}
		})
	}
}

func TestAddressMapping(t *testing.T) {
	for _, tc := range []struct {
		subnet string
		n      int
		want   string
	}{
		{"10.213.0.0/16", 1, "10.213.0.1"},
		{"10.213.0.0/16", 256, "10.213.1.0"},
		{"10.213.0.0/16", 1024, "10.213.4.0"},
		{"192.168.7.0/24", 9, "192.168.7.9"},
	} {
		if got := addrOf(netip.MustParsePrefix(tc.subnet), tc.n); got.String() != tc.want {
			t.Errorf("addrOf(%s, %d) = %v, want %s", tc.subnet, tc.n, got, tc.want)
		}
	}
}

func TestParseNSName(t *testing.T) {
	for s, want := range map[string]string{
		"cl1-hub": "cl1", "cl1-n7": "cl1", "cl1-n1024": "cl1",
		"cl1-n0": "", "cl1-n1025": "", "cl1-n07": "", "cl1-x": "", "Cl1-hub": "",
		"cl1": "", "-hub": "", "a-b-hub": "", "abcdefghi-hub": "",
	} {
		got, ok := parseNSName(s)
		if ok != (want != "") || got != want {
			t.Errorf("parseNSName(%q) = %q, %v; want %q", s, got, ok, want)
		}
	}
}

func TestTopology(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2, 3)
	for _, n := range l.Nodes() {
		if _, err := os.Stat(filepath.Join(netnsDir, l.NSName(n))); err != nil {
			t.Errorf("node %d: %v", n, err)
		}
		var names []string
		err := l.Do(n, func() error {
			ifs, err := net.Interfaces()
			for _, i := range ifs {
				names = append(names, i.Name)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"eth0", "lo"}) {
			t.Errorf("node %d interfaces %v, want [eth0 lo]", n, names)
		}
		var addrs []string
		err = l.Do(n, func() error {
			eth0, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			as, err := eth0.Addrs()
			for _, a := range as {
				addrs = append(addrs, a.String())
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := l.Addr(n).String() + "/16"; !slices.Equal(addrs, []string{want}) {
			t.Errorf("node %d eth0 addresses %v, want only %s (no IPv6)", n, addrs, want)
		}
	}
	if l.Addr(4).IsValid() || l.NSName(4) != "" {
		t.Errorf("node 4 is not in the lab but has %v %q", l.Addr(4), l.NSName(4))
	}
}

func TestTCPBetweenNodes(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2, 3)
	for _, p := range [][2]int{{1, 2}, {2, 3}, {3, 1}, {2, 1}} {
		if err := tcpEcho(l, p[0], p[1], 3*time.Second); err != nil {
			t.Errorf("tcp %d->%d: %v", p[0], p[1], err)
		}
	}
}

func TestCommand(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip binary")
	}
	out, err := l.Command(2, "ip", "-4", "-o", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr in node 2: %v: %s", err, out)
	}
	if !strings.Contains(string(out), " eth0 ") || !strings.Contains(string(out), l.Addr(2).String()+"/16") {
		t.Errorf("node 2 sees:\n%s", out)
	}
	if strings.Count(string(out), "\n") != 2 { // lo and eth0, nothing of the host
		t.Errorf("node 2 sees more than lo and eth0:\n%s", out)
	}
	if err := l.Command(9, "true").Run(); err == nil {
		t.Error("Command on a missing node ran")
	}
	cmd := l.Command(1, "sh", "-c", "exit 3")
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // replacing Env must not break entering
	var ee *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("exit status not passed through: %v", err)
	}
}

// helperEnv makes the test binary act as a helper process (see TestMain):
// "dial <addr>" dials addr over TCP and prints its local address.
const helperEnv = "NETLAB_TEST_HELPER"

func runHelper(h string) int {
	addr, ok := strings.CutPrefix(h, "dial ")
	if !ok {
		fmt.Fprintln(os.Stderr, "bad helper", h)
		return 2
	}
	c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	fmt.Println(c.LocalAddr().(*net.TCPAddr).AddrPort().Addr())
	return 0
}

func TestCommandHelperProcess(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2)
	var ln net.Listener
	err := l.Do(2, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(l.Addr(2), 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := l.Command(1, self)
	cmd.Env = append(os.Environ(), helperEnv+"=dial "+ln.Addr().String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != l.Addr(1).String() {
		t.Errorf("helper dialed from %q, want %v", got, l.Addr(1))
	}
}

func TestBlockIsOneWay(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2)
	m := newMesh(t, l)
	m.expect(t, "before", all)
	if err := l.Block(1, 2); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "block 1->2", func(from, to int) bool { return from == 2 })
	// TCP must time out, not be refused: the cut looks like lost packets.
	err := tcpEcho(l, 1, 2, 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("tcp over a blocked link: %v, want a timeout", err)
	}
	if err := l.Unblock(1, 2); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "unblocked", all)
	if err := tcpEcho(l, 1, 2, 3*time.Second); err != nil {
		t.Errorf("tcp after unblock: %v", err)
	}
	if err := l.Block(1, 1); err == nil {
		t.Error("Block(1, 1) accepted")
	}
	if err := l.Block(1, 5); err == nil {
		t.Error("Block to a missing node accepted")
	}
}

func TestPartitionAndHeal(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2, 3)
	m := newMesh(t, l)
	if err := l.Partition([][]int{{1}, {2, 3}}); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "{1} {2 3}", func(from, to int) bool { return from != 1 && to != 1 })
	if err := l.Partition([][]int{{1, 2}}); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "{1 2}, 3 isolated", func(from, to int) bool { return from != 3 && to != 3 })
	if err := l.Block(2, 1); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "{1 2} and block 2->1", func(from, to int) bool { return from == 1 && to == 2 })
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "healed", all)
	if err := l.Partition([][]int{{1, 2}, {2, 3}}); err == nil {
		t.Error("a node in two groups was accepted")
	}
	if err := l.Partition([][]int{{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "one group", all)
	if err := l.Partition(nil); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "no groups", none)
}

func TestLoss(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2, 3)
	m := newMesh(t, l)
	if err := l.SetLink(1, 2, LinkModel{Loss: 1}); err != nil {
		t.Fatal(err)
	}
	link12 := func(from, to int) bool { return from+to == 3 }
	m.expect(t, "loss 100% on 1<->2", func(from, to int) bool { return !link12(from, to) })
	if err := l.SetLink(1, 2, LinkModel{}); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "loss 0%", all)

	if err := l.SetLink(1, 3, LinkModel{Loss: 0.5}); err != nil {
		t.Fatal(err)
	}
	const k = 400
	// Mean 200, standard deviation 10: the bounds are 10 sigma wide.
	if got := m.count(t, 1, 3, k, 500*time.Millisecond); got < 100 || got > 300 {
		t.Errorf("loss 0.5: %d of %d arrived", got, k)
	}
	if got := m.count(t, 1, 2, k, 500*time.Millisecond); got != k {
		t.Errorf("no loss on 1->2: %d of %d arrived", got, k)
	}
	for _, bad := range []LinkModel{{Loss: -0.1}, {Loss: 1.5}, {Duplicate: 2}, {Latency: -1}, {Latency: time.Hour}} {
		if err := l.SetLink(1, 2, bad); err == nil {
			t.Errorf("SetLink(%+v) accepted", bad)
		}
	}
}

func TestDefaultModel(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2, 3)
	m := newMesh(t, l)
	if err := l.SetDefault(LinkModel{Loss: 1}); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "default loss 100%", none)
	if err := l.SetLink(1, 2, LinkModel{}); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "perfect 1<->2 over lossy default", func(from, to int) bool { return from+to == 3 })
	if err := l.SetLink(3, 0, LinkModel{}); err != nil { // all of 3's links
		t.Fatal(err)
	}
	m.expect(t, "perfect links of 3", all)
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "heal keeps the default", none)
	if err := l.SetDefault(LinkModel{}); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "zero default", all)
}

func TestDuplicate(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2, 3)
	if !l.Capabilities().Duplicate {
		if err := l.SetLink(1, 2, LinkModel{Duplicate: 1}); !errors.Is(err, ErrNoDup) {
			t.Fatalf("SetLink with duplication: %v, want ErrNoDup", err)
		}
		t.Skip("kernel has no nftables dup; checked that it is refused")
	}
	m := newMesh(t, l)
	if err := l.SetLink(1, 2, LinkModel{Duplicate: 1}); err != nil {
		t.Fatal(err)
	}
	const k = 20
	for _, c := range []struct{ from, to, want int }{{1, 2, 2 * k}, {2, 1, 2 * k}, {1, 3, k}} {
		if got := m.count(t, c.from, c.to, k, 300*time.Millisecond); got != c.want {
			t.Errorf("%d->%d: %d of %d sent arrived, want %d", c.from, c.to, got, k, c.want)
		}
	}
	// A copy crosses the hub like the original: a block stops both.
	if err := l.Block(1, 2); err != nil {
		t.Fatal(err)
	}
	if got := m.count(t, 1, 2, k, silentWait); got != 0 {
		t.Errorf("blocked 1->2 with duplication: %d arrived", got)
	}
	if err := l.SetDefault(LinkModel{Duplicate: 1}); err != nil {
		t.Fatal(err)
	}
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}
	if got := m.count(t, 3, 1, k, 300*time.Millisecond); got != 2*k {
		t.Errorf("default duplication 3->1: %d of %d arrived, want %d", got, k, 2*k)
	}
	// Traffic to oneself goes over lo and must not be copied.
	if got := m.count(t, 3, 3, k, 300*time.Millisecond); got != k {
		t.Errorf("3->3: %d of %d arrived, want %d", got, k, k)
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2, 3)
	caps := l.Capabilities()
	t.Logf("capabilities: %+v", caps)
	if err := l.SetDefault(LinkModel{}); err != nil {
		t.Errorf("zero default model refused: %v", err)
	}
	if err := l.SetLink(1, 2, LinkModel{}); err != nil {
		t.Errorf("zero link model refused: %v", err)
	}
	err := l.SetLink(1, 2, LinkModel{Latency: 50 * time.Millisecond})
	if !caps.CanDelay() {
		if caps.Netem && !caps.HTB {
			if !errors.Is(err, ErrNoHTB) {
				t.Fatalf("latency without htb: %v, want ErrNoHTB", err)
			}
			return
		}
		if !errors.Is(err, ErrNoNetem) {
			t.Fatalf("latency without any delay method: %v, want ErrNoNetem", err)
		}
		if !strings.Contains(err.Error(), "CONFIG_NET_SCH_NETEM") || !strings.Contains(err.Error(), "NFQUEUE") {
			t.Errorf("error does not name the kernel options: %v", err)
		}
		if err := l.SetDefault(LinkModel{Jitter: time.Millisecond}); !errors.Is(err, ErrNoNetem) {
			t.Errorf("default jitter without delay: %v, want ErrNoNetem", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	checkFixedLatency(t, l)
}

// TestLatencyQueue is TestLatency's delay check with user-space delay,
// also on kernels that have netem.
func TestLatencyQueue(t *testing.T) {
	t.Parallel()
	l := newQueueLab(t, 1, 2, 3)
	if err := l.SetLink(1, 2, LinkModel{Latency: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	checkFixedLatency(t, l)
}

// rtt measures one UDP round trip a->b->a (both legs are separate
// datagrams between the mesh's sockets).
func (m *mesh) rtt(t *testing.T, a, b int) time.Duration {
	t.Helper()
	start := time.Now()
	if !m.reach(t, a, b, arriveWait) || !m.reach(t, b, a, arriveWait) {
		t.Fatalf("%d<->%d: lost", a, b)
	}
	return time.Since(start)
}

// checkFixedLatency expects 50 ms each way on 1<->2 and nothing on the
// other links. The bounds are generous, for a loaded 2-core machine:
// every round trip within 100..250 ms.
func checkFixedLatency(t *testing.T, l *Lab) {
	t.Helper()
	m := newMesh(t, l)
	m.rtt(t, 1, 3) // ARP
	m.rtt(t, 2, 3)
	var rtts []time.Duration
	for range 10 {
		rtts = append(rtts, m.rtt(t, 1, 2))
	}
	slices.Sort(rtts)
	t.Logf("1<->2 with 50ms each way (%s): round trips min %v, median %v, max %v", l.Capabilities().Delay, rtts[0], rtts[len(rtts)/2], rtts[len(rtts)-1])
	for _, d := range rtts {
		if d < 100*time.Millisecond || d > 250*time.Millisecond {
			t.Errorf("1<->2 round trip %v with 50ms each way, want 100..250ms", d)
		}
	}
	if d := m.rtt(t, 1, 3); d > 40*time.Millisecond {
		t.Errorf("1<->3 round trip %v without latency", d)
	}
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}
	if d := m.rtt(t, 1, 2); d > 40*time.Millisecond {
		t.Errorf("1<->2 round trip %v after heal", d)
	}
}

// oneWay sends k datagrams from -> to, gap apart, each carrying its send
// time (every namespace shares the host's clock), and returns the one-way
// delay of each that arrived within wait after the last send, in arrival
// order, and how many arrived before a datagram sent earlier.
func (m *mesh) oneWay(t *testing.T, from, to, k int, gap, wait time.Duration) (delays []time.Duration, reordered int) {
	return m.oneWayN(t, from, to, k, k, gap, wait)
}

// oneWayN is oneWay that stops reading early only when expect datagrams
// arrived (2k with duplication).
func (m *mesh) oneWayN(t *testing.T, from, to, k, expect int, gap, wait time.Duration) (delays []time.Duration, reordered int) {
	t.Helper()
	m.seq++
	prefix := fmt.Sprintf("ow%d:", m.seq)
	c := m.conns[to]
	type arrival struct {
		i  int
		at time.Time
		d  time.Duration
	}
	got := make(chan []arrival, 1)
	stop := make(chan time.Time, 1)
	go func() {
		var arr []arrival
		buf := make([]byte, 1500)
		deadline := time.Now().Add(time.Duration(k)*gap + wait + arriveWait)
		for len(arr) < expect {
			select {
			case d := <-stop:
				deadline = d
			default:
			}
			rd := time.Now().Add(10 * time.Millisecond)
			if deadline.Before(rd) {
				rd = deadline
			}
			_ = c.SetReadDeadline(rd)
			n, _, err := c.ReadFromUDP(buf)
			now := time.Now()
			if err != nil {
				if now.After(deadline) {
					break
				}
				continue
			}
			rest, ok := strings.CutPrefix(string(buf[:n]), prefix)
			if !ok {
				continue
			}
			var i int
			var sent int64
			if _, err := fmt.Sscanf(rest, "%d:%d", &i, &sent); err != nil {
				continue
			}
			arr = append(arr, arrival{i, now, now.Sub(time.Unix(0, sent))})
		}
		got <- arr
	}()
	for i := range k {
		m.send(t, from, to, fmt.Sprintf("%s%d:%d", prefix, i, time.Now().UnixNano()))
		time.Sleep(gap)
	}
	stop <- time.Now().Add(wait)
	arr := <-got
	maxI := -1
	for _, a := range arr {
		delays = append(delays, a.d)
		if a.i < maxI {
			reordered++
		}
		maxI = max(maxI, a.i)
	}
	return delays, reordered
}

type delayStats struct {
	n                      int
	min, p50, p90, p99, mx time.Duration
	mean, stddev           time.Duration
}

func statsOf(ds []time.Duration) delayStats {
	s := slices.Clone(ds)
	slices.Sort(s)
	st := delayStats{n: len(s)}
	if len(s) == 0 {
		return st
	}
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	st.min, st.p50, st.p90, st.p99, st.mx = s[0], q(0.5), q(0.9), q(0.99), s[len(s)-1]
	var sum, sq float64
	for _, d := range s {
		sum += float64(d)
	}
	mean := sum / float64(len(s))
	for _, d := range s {
		sq += (float64(d) - mean) * (float64(d) - mean)
	}
	st.mean = time.Duration(mean)
	st.stddev = time.Duration(math.Sqrt(sq / float64(len(s))))
	return st
}

func (s delayStats) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return fmt.Sprintf("n=%d min %v p50 %v p90 %v p99 %v max %v mean %v sd %v",
		s.n, r(s.min), r(s.p50), r(s.p90), r(s.p99), r(s.mx), r(s.mean), r(s.stddev))
}

// TestJitter checks that jitter varies the delay within its bounds and
// reorders packets, and logs the one-way delays measured.
func TestJitter(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2, 3)
	if !l.Capabilities().CanDelay() {
		t.Skip("this kernel cannot delay")
	}
	checkJitter(t, l)
}

func TestJitterQueue(t *testing.T) {
	t.Parallel()
	checkJitter(t, newQueueLab(t, 1, 2, 3))
}

func checkJitter(t *testing.T, l *Lab) {
	t.Helper()
	m := newMesh(t, l)
	m.rtt(t, 1, 2) // ARP, before the delay
	base, _ := m.oneWay(t, 1, 2, 50, time.Millisecond, 100*time.Millisecond)
	if err := l.SetLink(1, 2, LinkModel{Latency: 10 * time.Millisecond, Jitter: 5 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	const k = 200
	ds, reordered := m.oneWay(t, 1, 2, k, time.Millisecond, 200*time.Millisecond)
	st := statsOf(ds)
	t.Logf("%s, one way 1->2 without delay: %v", l.Capabilities().Delay, statsOf(base))
	t.Logf("%s, one way 1->2 with 10ms±5ms: %v; %d of %d reordered", l.Capabilities().Delay, st, reordered, len(ds))
	if len(ds) != k {
		t.Fatalf("%d of %d datagrams arrived", len(ds), k)
	}
	// Uniform on 5..15 ms: sd 2.9 ms, so min and max close to the bounds.
	// Generous for a noisy machine: nothing early, little very late.
	if st.min < 5*time.Millisecond-200*time.Microsecond {
		t.Errorf("a datagram arrived after %v, before the least delay of 5ms", st.min)
	}
	if st.p90 > 40*time.Millisecond {
		t.Errorf("p90 delay %v, want under 40ms for 10ms±5ms", st.p90)
	}
	if st.mean < 8*time.Millisecond || st.mean > 25*time.Millisecond {
		t.Errorf("mean delay %v, want about 10ms", st.mean)
	}
	if st.stddev < 1500*time.Microsecond || st.p90-st.min < 5*time.Millisecond {
		t.Errorf("jitter does not vary the delay enough: %v", st)
	}
	if reordered == 0 {
		t.Errorf("no reordering with ±5ms jitter and 1ms between datagrams")
	}
	// Jitter larger than the latency: the delay is clamped at 0.
	if err := l.SetLink(1, 2, LinkModel{Jitter: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	ds, _ = m.oneWay(t, 1, 2, k, time.Millisecond, 100*time.Millisecond)
	st = statsOf(ds)
	t.Logf("%s, one way 1->2 with 0±10ms: %v", l.Capabilities().Delay, st)
	if len(ds) != k || st.p50 > 5*time.Millisecond || st.p99 > 40*time.Millisecond || st.p90 < 3*time.Millisecond {
		t.Errorf("0±10ms: %v, want half undelayed and the rest up to 10ms", st)
	}
}

// TestDelayComposes checks the order of faults with user-space delay:
// what loss drops is never queued, copies are delayed like originals, and
// a change of other faults does not drop the packets being held.
func TestDelayComposes(t *testing.T) {
	t.Parallel()
	l := newQueueLab(t, 1, 2, 3)
	m := newMesh(t, l)
	m.expect(t, "before", all) // ARP
	if err := l.SetLink(1, 2, LinkModel{Latency: 20 * time.Millisecond, Loss: 1}); err != nil {
		t.Fatal(err)
	}
	if got := m.count(t, 1, 2, 50, 300*time.Millisecond); got != 0 {
		t.Errorf("100%% loss with latency: %d arrived", got)
	}
	if q := l.delay.queued.Load(); q != 0 {
		t.Errorf("%d packets lost to loss were queued for delay", q)
	}

	if err := l.SetLink(1, 2, LinkModel{Latency: 20 * time.Millisecond, Loss: 0.5}); err != nil {
		t.Fatal(err)
	}
	ds, _ := m.oneWay(t, 1, 2, 400, 500*time.Microsecond, 200*time.Millisecond)
	st := statsOf(ds)
	t.Logf("20ms, 50%% loss: %v", st)
	if st.n < 100 || st.n > 300 || st.min < 19*time.Millisecond {
		t.Errorf("20ms with 50%% loss: %v, want about 200 of 400, none under 20ms", st)
	}
	if q, n := l.delay.queued.Load(), int64(st.n); q < n || q > n+5 {
		t.Errorf("%d packets queued for %d delivered: lost ones were queued", q, n)
	}

	if l.Capabilities().Duplicate {
		if err := l.SetLink(1, 2, LinkModel{Latency: 20 * time.Millisecond, Duplicate: 1}); err != nil {
			t.Fatal(err)
		}
		ds, _ := m.oneWayN(t, 1, 2, 20, 40, time.Millisecond, 200*time.Millisecond)
		if st := statsOf(ds); st.n != 40 || st.min < 19*time.Millisecond {
			t.Errorf("20ms with duplication: %v, want 40 copies of 20, all delayed", st)
		}
	}

	// Packets held when another fault changes still arrive: the hub's
	// base chain is kept, so the kernel does not flush the queue.
	if err := l.SetLink(1, 2, LinkModel{Latency: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() { got <- m.count(t, 1, 2, 20, time.Second) }()
	time.Sleep(100 * time.Millisecond)
	if err := l.Block(3, 1); err != nil {
		t.Fatal(err)
	}
	if err := l.SetLink(2, 3, LinkModel{Loss: 0.1}); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 20 {
		t.Errorf("%d of 20 held packets arrived after other faults changed", n)
	}
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "healed", all)
}

// TestDelayQueueTCP runs TCP over delayed, jittery, lossy links.
func TestDelayQueueTCP(t *testing.T) {
	t.Parallel()
	l := newQueueLab(t, 1, 2)
	if err := l.SetDefault(LinkModel{Latency: 5 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.05}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := tcpEcho(l, 1, 2, 10*time.Second); err != nil {
			t.Errorf("tcp over a delayed link: %v", err)
		}
	}
}

// TestDelayerClose checks that Close stops the delayer and closes its
// socket, also with packets held.
func TestDelayerClose(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	name := testLabName(t)
	l, err := New(Options{Name: name, Nodes: []int{1, 2}, Delay: DelayQueue})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	if l.Capabilities().Delay != DelayQueue {
		t.Skip("no user-space delay on this kernel")
	}
	if l.delay != nil {
		t.Error("delayer started before any link was delayed")
	}
	if err := l.SetDefault(LinkModel{Latency: time.Second}); err != nil {
		t.Fatal(err)
	}
	d := l.delay
	if d == nil {
		t.Fatal("no delayer with a delayed link")
	}
	m := newMesh(t, l)
	m.send(t, 1, 2, "held")
	deadline := time.Now().Add(2 * time.Second)
	for d.queued.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-d.done:
	default:
		t.Error("releaser still running after Close")
	}
	if d.ctx.Err() == nil {
		t.Error("receiver still running after Close")
	}
	if err := d.q.SetVerdict(1, 1); err == nil {
		t.Error("nfqueue socket still open after Close")
	}
	assertGone(t, name)
}

// TestDelayClassesWithoutNetem builds the htb classes and u32 filters of
// the delay path with no netem leaf, so that this part is checked even on
// kernels that cannot delay.
func TestDelayClassesWithoutNetem(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2, 3)
	if !l.Capabilities().HTB {
		t.Skip("no htb qdisc")
	}
	m := newMesh(t, l)
	groups := []delayGroup{
		{delayKey{time.Millisecond, 0}, addrGroup{nodes: []int{1}}},
		{delayKey{2 * time.Millisecond, 0}, addrGroup{nodes: []int{2}}},
	}
	l.mu.Lock()
	err := l.installDelay(3, groups, nil)
	l.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	port, err := l.hubNL.LinkByName(l.portName(3))
	if err != nil {
		t.Fatal(err)
	}
	classes, err := l.hubNL.ClassList(port, netlink.MakeHandle(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	filters, err := l.hubNL.FilterList(port, netlink.MakeHandle(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	var u32 int
	for _, f := range filters {
		if f, ok := f.(*netlink.U32); ok && f.ClassId != 0 {
			u32++
		}
	}
	if len(classes) != 2 || u32 != 2 {
		t.Errorf("port to node 3: %d classes, %d u32 filters; want 2 and 2", len(classes), u32)
	}
	m.expect(t, "through htb classes", all)
	l.mu.Lock()
	l.appliedTC[3] = "test"
	err = l.installDelay(3, nil, nil)
	l.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if qs, _ := l.hubNL.QdiscList(port); slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Type() == "htb" }) {
		t.Errorf("htb still on port after removal: %v", qs)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	name := testLabName(t)
	l, err := New(Options{Name: name, Nodes: []int{1, 2, 5}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() }) // in case the test fails early
	if got := ipNetnsList(t, name); len(got) != 4 {
		t.Errorf("ip netns list shows %v, want hub and 3 nodes", got)
	}
	if err := l.SetLink(1, 2, LinkModel{Loss: 0.5}); err != nil {
		t.Fatal(err)
	}
	// A process left running in a node must not keep it alive.
	sleeper := l.Command(5, "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("Close left the process in node 5 running")
	}
	assertGone(t, name)
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := l.Block(1, 2); !errors.Is(err, ErrClosed) {
		t.Errorf("Block after Close: %v, want ErrClosed", err)
	}
	if err := l.Command(1, "true").Run(); !errors.Is(err, ErrClosed) {
		t.Errorf("Command after Close: %v, want ErrClosed", err)
	}
	if err := l.Do(1, func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
}

// ipNetns runs `ip netns <args>`, creating state no lab code has touched.
func ipNetns(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip netns %v: %v: %s", args, err, out)
	}
}

func TestNewCleansUpOnError(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	name := testLabName(t)
	// Somebody else's namespace in our way: New must fail at node 2 and
	// remove the hub and node 1, but not this one.
	ipNetns(t, "add", name+"-n2")
	t.Cleanup(func() { _ = removeNS(name + "-n2") })
	l, err := New(Options{Name: name, Nodes: []int{1, 2, 3}})
	if err == nil {
		l.Close()
		t.Fatal("New succeeded over an existing namespace")
	}
	t.Logf("New: %v", err)
	if got := ourNamespaces(t, name); !slices.Equal(got, []string{name + "-n2"}) {
		t.Errorf("after failed New: %v, want only %s-n2", got, name)
	}
}

func TestSweep(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	name := testLabName(t)
	other := testLabName(t)
	// A crashed run: namespaces without a Lab, one with a process in it.
	for _, ns := range []string{name + "-hub", name + "-n1", name + "-n12", name + "-other", other + "-hub"} {
		ipNetns(t, "add", ns)
		t.Cleanup(func() { _ = removeNS(ns) })
	}
	sleeper := exec.Command("ip", "netns", "exec", name+"-n1", "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()
	deadline := time.Now().Add(2 * time.Second)
	for { // wait until sleep runs inside the namespace
		id, _ := pathNSID(filepath.Join(netnsDir, name+"-n1"))
		pid, _ := pathNSID(fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid))
		if id == pid || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if labs, err := Leftovers(name); err != nil || !slices.Equal(labs, []string{name}) {
		t.Errorf("Leftovers(%s) = %v, %v", name, labs, err)
	}
	if err := Sweep(name); err != nil {
		t.Fatal(err)
	}
	if got := ourNamespaces(t, name); !slices.Equal(got, []string{name + "-other"}) {
		t.Errorf("after Sweep: %v, want only %s-other (not our scheme)", got, name)
	}
	if got := ourNamespaces(t, other); len(got) != 1 {
		t.Errorf("Sweep(%s) touched lab %s: %v", name, other, got)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("Sweep left the process in the namespace running")
	}
	if err := Sweep(""); err == nil {
		t.Error("Sweep(\"\") accepted")
	}
	if err := Sweep("[x"); err == nil {
		t.Error("Sweep with a bad pattern accepted")
	}
}

// TestConcurrentFaults changes faults from several goroutines; the race
// detector and the final state check the locking.
func TestConcurrentFaults(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, 2, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			for j := range 5 {
				from, to := i+1, (i+j)%3+1
				if from == to {
					continue
				}
				_ = l.Block(from, to)
				_ = l.SetLink(from, to, LinkModel{Loss: 0.1})
				_ = l.Unblock(from, to)
			}
		})
	}
	wg.Wait()
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}
	newMesh(t, l).expect(t, "after concurrent changes and heal", all)
}
