package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterinfra/ci/internal/e2e"
	"github.com/clusterinfra/ci/node/libcluster"
)

func clusterdRun(args ...string) (int, string) {
	var errb bytes.Buffer
	code := run(args, &errb)
	return code, errb.String()
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckValidatesConfigFiles(t *testing.T) {
	good := writeFile(t, "good.conf", "# a node\nCLUSTER_NODENUM=3\nCLUSTER_MASTER=\"1:10.0.0.1,2:10.0.0.2\"\nIFCONFIG=1:10.0.0.3:255.255.255.0\nICS_ROUTE=default:10.0.0.254:0\n")
	if code, out := clusterdRun("-check", good); code != 0 || out != "" {
		t.Fatalf("valid file: exit %d, %q", code, out)
	}
	bad := writeFile(t, "bad.conf", "CLUSTER_NODENUM=0\nCLUSTER_MASTER=1:10.0.0.1,\nIFCONFIG=eth0:10.0.0.3:255.0.255.0\nCOLOR=blue\n")
	code, out := clusterdRun("-check", bad)
	if code != 2 {
		t.Fatalf("invalid file: exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("want one line per problem (4), got:\n%s", out)
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, fmt.Sprintf("%s:%d: ", bad, i+1)) {
			t.Errorf("line %d of the report does not name %s:%d: %q", i+1, bad, i+1, l)
		}
	}
	if code, out := clusterdRun("-check", filepath.Join(t.TempDir(), "missing.conf")); code != 2 || !strings.Contains(out, "missing.conf") {
		t.Fatalf("missing file: exit %d, %q", code, out)
	}
}

func TestBadStartupInputIsOneLineAndExit2(t *testing.T) {
	conf := writeFile(t, "c.conf", "CLUSTER_NODENUM=1\nCLUSTER_MASTER=1:127.0.0.1\nIFCONFIG=eth0:127.0.0.1:255.0.0.0\n")
	key := writeFile(t, "key", "0123456789abcdef0123456789abcdef\n")
	short := writeFile(t, "short", "tiny\n")
	notHere := writeFile(t, "nothere.conf", "CLUSTER_NODENUM=1\nCLUSTER_MASTER=1:192.0.2.77\nIFCONFIG=eth0:192.0.2.77:255.255.255.0\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-config", conf, "-key", filepath.Join(t.TempDir(), "nokey")}, "cluster key: open"},
		{[]string{"-config", conf, "-key", short}, "need at least 32"},
		{[]string{"-config", conf, "-key", key, "-allowed", "1-x"}, "-allowed: \"1-x\""},
		{[]string{"-config", conf, "-key", key, "-port", "70000"}, "-port 70000"},
		{[]string{"-config", conf, "-key", key, "-masters", "1:nowhere"}, "-masters"},
		{[]string{"-config", notHere, "-key", key}, notHere + ":3: the ICS address 192.0.2.77 is not on any interface"},
		{[]string{"-config", "", "-key", key}, "no node number"},
		{[]string{"-config", conf, "-key", key, "stray"}, "unexpected argument"},
	} {
		code, out := clusterdRun(c.args...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(out, c.want) {
			t.Errorf("clusterd %q: exit %d, output:\n%s\nwant exit 2 and one line with %q", c.args, code, out, c.want)
		}
	}
}

// TestRefusalsAreOneLineAndExit1 runs real daemons: a node with the
// wrong cluster key, a node outside the allowed list and a node whose
// masters are unreachable each exit 1 with one line saying why; then
// `cluster add` admits the refused node online.
func TestRefusalsAreOneLineAndExit1(t *testing.T) {
	e := e2e.New(t, []int{1, 2, 3, 4, 5}, []int{1, 2, 3})
	for _, n := range []int{1, 2, 3} {
		e.Start(n, "-allowed", "1-4")
	}
	e.SameView([]int{1, 2, 3}, []int{1, 2, 3}, 15*time.Second)

	one := func(n int, want string, extra ...string) {
		t.Helper()
		args := append([]string{"-config", filepath.Join(e.Dir, fmt.Sprintf("n%d.conf", n)), "-key", filepath.Join(e.Dir, "key"),
			"-state", filepath.Join(t.TempDir(), "state"), "-socket", filepath.Join(t.TempDir(), "s.sock"), "-metrics", "", "-log-level", "error"}, extra...)
		cmd := e.Lab.Command(n, e.Clusterd, args...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("n%d %v: still running after 30s; stderr:\n%s", n, extra, errb.String())
		}
		out := strings.TrimSpace(errb.String())
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 || strings.Count(out, "\n") != 0 || !strings.Contains(out, want) || strings.Contains(out, "panic") {
			t.Errorf("n%d %v: %v, stderr:\n%s\nwant exit 1 and one line with %q", n, extra, err, out, want)
		}
	}
	badKey := filepath.Join(t.TempDir(), "badkey")
	if err := os.WriteFile(badKey, []byte("some other cluster's key, just as long\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	one(4, "the cluster key does not match", "-key", badKey)
	one(5, "node 5 is not in the cluster's allowed list")
	// Masters listed at addresses where nothing answers.
	unreach := filepath.Join(e.Dir, "unreach.conf")
	if err := os.WriteFile(unreach, []byte(fmt.Sprintf("CLUSTER_NODENUM=4\nCLUSTER_MASTER=1:10.213.9.1,2:10.213.9.2\nIFCONFIG=eth0:%s:255.255.0.0\n", e.Lab.Addr(4))), 0o600); err != nil {
		t.Fatal(err)
	}
	one(4, "no master reachable after 2s", "-config", unreach, "-join-timeout", "2s")

	// Online add: node 5 is admitted once a member adds it.
	c := libcluster.New(e.Sock(2))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Add(ctx, libcluster.AddRequest{Node: 5, Address: e.Lab.Addr(5).String(), Name: "late"}); err != nil {
		t.Fatalf("cluster add: %v", err)
	}
	e.Start(5)
	e.SameView([]int{1, 2, 3, 5}, []int{1, 2, 3, 5}, 10*time.Second)
}
