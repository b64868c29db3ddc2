package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinfra/ci/internal/e2e"
	"github.com/clusterinfra/ci/node/libcluster"
)

// TestEndToEndFiveDaemons is the acceptance run of real daemons: five
// clusterd in network namespaces form a cluster, the master is killed,
// the rest are partitioned and healed, and `cluster -v` shows the same
// view on every node at each stage.
func TestEndToEndFiveDaemons(t *testing.T) {
	nodes := []int{1, 2, 3, 4, 5}
	e := e2e.New(t, nodes, []int{1, 2, 3})
	for _, n := range nodes {
		e.Start(n)
	}
	v := e.SameView(nodes, nodes, 15*time.Second)
	t.Logf("formed:\n%s", v)

	m := e.Master(1)
	if m < 1 || m > 3 {
		t.Fatalf("master %d is not a candidate", m)
	}
	e.Kill(m)
	var rest []int
	for _, n := range nodes {
		if n != m {
			rest = append(rest, n)
		}
	}
	v = e.SameView(rest, rest, 5*time.Second)
	if !strings.Contains(v, fmt.Sprintf("node%d", m)) || !strings.Contains(v, "DOWN") {
		t.Fatalf("the killed master n%d is not shown DOWN:\n%s", m, v)
	}
	t.Logf("after killing master n%d:\n%s", m, v)

	// The two remaining candidates and one member keep a majority; the
	// last member is cut off from everyone.
	var cands, members []int
	for _, n := range rest {
		if n <= 3 {
			cands = append(cands, n)
		} else {
			members = append(members, n)
		}
	}
	major := append(slices.Clone(cands), members[0])
	slices.Sort(major)
	alone := members[1]
	if err := e.Lab.Partition([][]int{major, {alone}}); err != nil {
		t.Fatal(err)
	}
	v = e.SameView(major, major, 5*time.Second)
	t.Logf("partitioned %v | %d:\n%s", major, alone, v)

	if err := e.Lab.Heal(); err != nil {
		t.Fatal(err)
	}
	v = e.SameView(rest, rest, 10*time.Second)
	t.Logf("healed:\n%s", v)

	// The killed master restarts and rejoins with a new incarnation.
	e.Start(m)
	v = e.SameView(nodes, nodes, 10*time.Second)
	if !strings.Contains(v, "2.0") {
		t.Fatalf("the restarted n%d does not show its second boot:\n%s", m, v)
	}
}

// TestSigtermLeavesCleanlyAndMetricsServe: SIGTERM makes a member leave
// (a "leave" transition, not a nodedown) and exit 0; the Prometheus
// endpoint serves the daemon's figures; and a daemon of a 3-node cluster
// stays small.
func TestSigtermLeavesCleanlyAndMetricsServe(t *testing.T) {
	nodes := []int{1, 2, 3, 4}
	e := e2e.New(t, nodes, []int{1, 2, 3})
	for _, n := range nodes {
		extra := []string{}
		if n == 1 {
			extra = []string{"-metrics", e.Lab.Addr(1).String() + ":9740"}
		}
		e.Start(n, extra...)
	}
	e.SameView(nodes, nodes, 15*time.Second)

	time.Sleep(1200 * time.Millisecond) // the figures refresh every second
	var body string
	err := e.Lab.Do(1, func() error {
		// Dialled here, on the namespace's thread: an http.Client would
		// dial from another goroutine, outside the namespace.
		conn, err := net.DialTimeout("tcp", e.Lab.Addr(1).String()+":9740", 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET /metrics HTTP/1.0\r\nHost: n1\r\n\r\n"); err != nil {
			return err
		}
		b, err := io.ReadAll(conn)
		body = string(b)
		return err
	})
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, want := range []string{"200 OK", "clusterd_members 4", "clusterd_quorate 1", "clusterd_ics_frames_sent_total", "process_resident_memory_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, tailOf(body, 3000))
		}
	}

	if rss := rssMiB(t, e.Pid(4)); rss > 30 {
		t.Errorf("a daemon of a 4-node cluster uses %d MiB resident (goal: under 30)", rss)
	}

	if err := e.Stop(4, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	e.SameView([]int{1, 2, 3}, []int{1, 2, 3}, 5*time.Second)
	c := libcluster.New(e.Sock(1))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ts, err := c.Transitions(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var causes []string
	for _, tr := range ts {
		if tr.Node == 4 && tr.Num > 0 && tr.From == "UP" {
			causes = append(causes, tr.Cause+":"+tr.To)
		}
	}
	if !slices.Equal(causes, []string{"leave:SHUTDOWN"}) {
		t.Fatalf("n4 left UP by %v; want a clean leave", causes)
	}
}

func rssMiB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
