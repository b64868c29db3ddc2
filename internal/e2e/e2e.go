// Package e2e runs real clusterd daemons in network namespaces for the
// end-to-end tests of the tools (clusterd, cluster, onnode): it builds
// the binaries, makes the network (package netlab), writes the configs,
// and reads the view back with `cluster -v` inside each namespace.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinfra/ci/internal/netlab"
	"github.com/clusterinfra/ci/node/libcluster"
)

// buildTools builds clusterd and cluster into a temporary directory.
func buildTools(t testing.TB) (bins map[string]string) {
	t.Helper()
	dir := t.TempDir()
	bins = map[string]string{}
	for _, p := range []string{"clusterd", "cluster", "onnode"} {
		bins[p] = filepath.Join(dir, p)
	}
	args := []string{"build", "-o", dir + "/"}
	for _, p := range []string{"clusterd", "cluster", "onnode"} {
		args = append(args, "github.com/clusterinfra/ci/cmd/"+p)
	}
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("building the tools: %v\n%s", err, out)
	}
	return bins
}

// Cluster is a cluster of real daemons in network namespaces. Its
// methods are for the test's goroutine.
type Cluster struct {
	t        testing.TB
	Lab      *netlab.Lab
	Dir      string // configs, key, sockets, logs, state
	Clusterd string // the binaries
	Cluster  string
	Onnode   string
	procs    map[int]*exec.Cmd
}

// New builds the tools and a network for nodes, and writes each node's
// cluster.conf with masters as CLUSTER_MASTER. Nothing runs yet. The
// cleanup kills every daemon, removes the network and, if the test
// failed, logs the tail of each daemon's log.
func New(t testing.TB, nodes []int, masters []int) *Cluster {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces (CI runs as root)")
	}
	bins := buildTools(t)
	l, err := netlab.New(netlab.Options{Name: fmt.Sprintf("e2e%d", os.Getpid()%100000), Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	e := &Cluster{t: t, Lab: l, Dir: t.TempDir(), Clusterd: bins["clusterd"], Cluster: bins["cluster"], Onnode: bins["onnode"], procs: map[int]*exec.Cmd{}}
	t.Cleanup(func() {
		for n := range e.procs {
			e.Kill(n)
		}
		if err := l.Close(); err != nil {
			t.Errorf("removing the lab network: %v", err)
		}
		if t.Failed() {
			for _, n := range nodes {
				b, _ := os.ReadFile(filepath.Join(e.Dir, fmt.Sprintf("n%d.log", n)))
				t.Logf("n%d's log (tail):\n%s", n, tailOf(string(b), 1500))
			}
		}
	})
	if err := os.WriteFile(filepath.Join(e.Dir, "key"), []byte("an end-to-end test's cluster key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ms []string
	for _, m := range masters {
		ms = append(ms, fmt.Sprintf("%d:%s", m, l.Addr(m)))
	}
	for _, n := range nodes {
		conf := fmt.Sprintf("CLUSTER_NODENUM=%d\nCLUSTER_MASTER=%s\nIFCONFIG=eth0:%s:255.255.0.0\n", n, strings.Join(ms, ","), l.Addr(n))
		if err := os.WriteFile(filepath.Join(e.Dir, fmt.Sprintf("n%d.conf", n)), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Sock is node n's control socket.
func (e *Cluster) Sock(n int) string { return filepath.Join(e.Dir, fmt.Sprintf("n%d.sock", n)) }

// Start starts node n's daemon with extra flags.
func (e *Cluster) Start(n int, extra ...string) {
	e.t.Helper()
	args := append([]string{"-config", filepath.Join(e.Dir, fmt.Sprintf("n%d.conf", n)), "-key", filepath.Join(e.Dir, "key"),
		"-state", filepath.Join(e.Dir, fmt.Sprintf("n%d.state", n)), "-socket", e.Sock(n), "-metrics", "", "-name", fmt.Sprintf("node%d", n)}, extra...)
	cmd := e.Lab.Command(n, e.Clusterd, args...)
	logf, err := os.OpenFile(filepath.Join(e.Dir, fmt.Sprintf("n%d.log", n)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = logf.Close() })
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.procs[n] = cmd
}

// Stop sends sig to node n's daemon and waits up to d for it to exit;
// it returns the exit error (nil for status 0).
func (e *Cluster) Stop(n int, sig syscall.Signal, d time.Duration) error {
	c := e.procs[n]
	if c == nil {
		return fmt.Errorf("n%d is not running", n)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	_ = c.Process.Signal(sig)
	select {
	case err := <-done:
		delete(e.procs, n)
		return err
	case <-time.After(d):
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		<-done
		delete(e.procs, n)
		return fmt.Errorf("n%d did not exit within %v of %v", n, d, sig)
	}
}

// Pid is node n's daemon's process id, 0 if it is not running.
func (e *Cluster) Pid(n int) int {
	if c := e.procs[n]; c != nil {
		return c.Process.Pid
	}
	return 0
}

// Kill kills node n's daemon (SIGKILL) and waits for it.
func (e *Cluster) Kill(n int) {
	if c := e.procs[n]; c != nil {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		_ = c.Wait()
		delete(e.procs, n)
	}
}

// ClusterV runs `cluster -v` inside node n's namespace and returns the
// table (the last line, which names the asking node, is left out).
func (e *Cluster) ClusterV(n int) (string, error) {
	cmd := e.Lab.Command(n, e.Cluster, "-socket", e.Sock(n), "-timeout", "2s", "-v")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cluster -v on n%d: %v: %s", n, err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 2 {
		return "", fmt.Errorf("cluster -v on n%d printed %q", n, out.String())
	}
	return strings.Join(lines[:len(lines)-1], "\n"), nil
}

// SameView waits until `cluster -v` prints the same table on every node
// of on, with the given members, and returns it.
func (e *Cluster) SameView(on []int, members []int, within time.Duration) string {
	e.t.Helper()
	deadline := time.Now().Add(within)
	var why string
	for time.Now().Before(deadline) {
		why = ""
		var first string
		for _, n := range on {
			v, err := e.ClusterV(n)
			if err != nil {
				why = err.Error()
				break
			}
			c := libcluster.New(e.Sock(n))
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.Status(ctx)
			cancel()
			c.Close()
			switch {
			case err != nil:
				why = err.Error()
			case !st.Quorate:
				why = fmt.Sprintf("n%d is not quorate", n)
			case !slices.Equal(st.Members, members):
				why = fmt.Sprintf("n%d has members %v, want %v", n, st.Members, members)
			case first != "" && v != first:
				why = fmt.Sprintf("n%d shows\n%s\nbut n%d shows\n%s", n, v, on[0], first)
			}
			if why != "" {
				break
			}
			if first == "" {
				first = v
			}
		}
		if why == "" {
			return first
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("no common view within %v: %s", within, why)
	return ""
}

// Master is the master as node n reports it.
func (e *Cluster) Master(n int) int {
	c := libcluster.New(e.Sock(n))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return st.Master
}
