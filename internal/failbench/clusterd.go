package failbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/clusterinfra/ci/internal/netlab"
	"github.com/clusterinfra/ci/node/libcluster"
)

// clusterKey is the lab's cluster key (clusterd wants at least 32 bytes).
const clusterKey = "failbench: a benchmark's cluster key, not a secret\n"

// maxCandidates is how many nodes are candidate masters.
const maxCandidates = 3

type clusterd struct {
	base
	bin   string
	every time.Duration
}

// newClusterd writes the configs of a clusterd cluster on lab's nodes:
// candidate masters are the first maxCandidates nodes; everything else
// is the daemon's default.
func newClusterd(lab *netlab.Lab, dir, bin string, every time.Duration) (*clusterd, error) {
	c := &clusterd{base: newBase("clusterd", lab, dir), bin: bin, every: every}
	if err := os.WriteFile(c.path("key"), []byte(clusterKey), 0o600); err != nil {
		return nil, err
	}
	var ms []string
	for i, m := range c.nodes {
		if i == maxCandidates {
			break
		}
		ms = append(ms, fmt.Sprintf("%d:%s", m, lab.Addr(m)))
	}
	for _, n := range c.nodes {
		conf := fmt.Sprintf("CLUSTER_NODENUM=%d\nCLUSTER_MASTER=%s\nIFCONFIG=eth0:%s:255.255.0.0\n", n, strings.Join(ms, ","), lab.Addr(n))
		if err := os.WriteFile(c.path(fmt.Sprintf("n%d.conf", n)), []byte(conf), 0o600); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *clusterd) sock(n int) string { return c.path(fmt.Sprintf("n%d.sock", n)) }

func (c *clusterd) start(n int) error {
	args := []string{"-config", c.path(fmt.Sprintf("n%d.conf", n)), "-key", c.path("key"),
		"-state", c.path(fmt.Sprintf("n%d.state", n)), "-socket", c.sock(n), "-metrics", "", "-name", fmt.Sprintf("node%d", n)}
	cl := libcluster.New(c.sock(n))
	read := func(ctx context.Context) ([]int, error) {
		st, err := cl.Status(ctx)
		if err != nil {
			return nil, err
		}
		return st.Members, nil
	}
	stop := func(ctx context.Context) {
		<-ctx.Done()
		cl.Close()
	}
	return c.launch(n, c.lab.Command(n, c.bin, args...), c.poll(n, c.every, read), stop)
}

// master asks every running node for the master and wants one answer.
func (c *clusterd) master(ctx context.Context) (int, error) {
	m := 0
	for n := range c.pids() {
		st, err := c.status(ctx, n)
		if err != nil {
			return 0, err
		}
		switch {
		case st.Master == 0:
			return 0, fmt.Errorf("clusterd: node %d knows no master", n)
		case m != 0 && st.Master != m:
			return 0, fmt.Errorf("clusterd: nodes disagree on the master (%d, %d)", m, st.Master)
		}
		m = st.Master
	}
	if m == 0 {
		return 0, errors.New("clusterd: no node running")
	}
	return m, nil
}

func (c *clusterd) status(ctx context.Context, n int) (*libcluster.Status, error) {
	cl := libcluster.New(c.sock(n))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return cl.Status(ctx)
}

// transitions reads node n's history after number after.
func (c *clusterd) transitions(ctx context.Context, n int, after uint64) ([]libcluster.Transition, error) {
	cl := libcluster.New(c.sock(n))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return cl.Transitions(ctx, after)
}

func (c *clusterd) close() error { return c.closeAll() }
