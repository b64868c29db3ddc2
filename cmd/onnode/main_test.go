package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterinfra/ci/internal/e2e"
)

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"3"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "need a node number and a command") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"x", "true"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), `"x" is not a node number`) {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"-socket", filepath.Join(t.TempDir(), "none.sock"), "2", "true"}, nil, &out, &errb); code != 255 || !strings.Contains(errb.String(), "clusterd is not running") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

// TestOnnodeEndToEnd runs onnode inside node 1's namespace against real
// daemons: the command runs on node 2 (its network namespace proves it),
// stdin, stdout, stderr and the exit status pass through, and SIGINT
// reaches the remote process.
func TestOnnodeEndToEnd(t *testing.T) {
	c := e2e.New(t, []int{1, 2, 3}, []int{1, 2, 3})
	for _, n := range []int{1, 2, 3} {
		c.Start(n)
	}
	c.SameView([]int{1, 2, 3}, []int{1, 2, 3}, 15*time.Second)

	onnode := func(stdin io.Reader, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
		cmd := c.Lab.Command(1, c.Onnode, append([]string{"-socket", c.Sock(1)}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
		return cmd, &out, &errb
	}
	exitOf := func(err error) int {
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("onnode: %v", err)
		return -1
	}

	// Where it runs: node 2's network namespace.
	fi, err := os.Stat("/run/netns/" + c.Lab.NSName(2))
	if err != nil {
		t.Fatal(err)
	}
	cmd, out, errb := onnode(nil, "2", "readlink", "/proc/self/ns/net")
	if code := exitOf(cmd.Run()); code != 0 {
		t.Fatalf("readlink: exit %d: %s", code, errb)
	}
	if want := fmt.Sprintf("net:[%d]", fi.Sys().(*syscall.Stat_t).Ino); strings.TrimSpace(out.String()) != want {
		t.Fatalf("the command ran in %q, not node 2's namespace %s", out.String(), want)
	}

	// Separate streams and the exit status.
	cmd, out, errb = onnode(nil, "2", "sh", "-c", "echo to-out; echo to-err >&2; exit 3")
	if code := exitOf(cmd.Run()); code != 3 || out.String() != "to-out\n" || errb.String() != "to-err\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errb)
	}

	// Standard input, byte for byte.
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	cmd, out, errb = onnode(bytes.NewReader(data), "3", "cat")
	if code := exitOf(cmd.Run()); code != 0 || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("cat: exit %d, %d bytes back of %d, stderr %q", code, out.Len(), len(data), errb)
	}

	// No such command.
	cmd, _, errb = onnode(nil, "2", "no-such-command-here")
	if code := exitOf(cmd.Run()); code != 127 {
		t.Fatalf("missing command: exit %d, stderr %q", code, errb)
	}

	// SIGINT is forwarded: the remote shell's trap answers it.
	cmd = c.Lab.Command(1, c.Onnode, "-socket", c.Sock(1), "2", "sh", "-c", `trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 0.05; done`)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	var serr bytes.Buffer
	cmd.Stderr = &serr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(pr)
	got := make(chan string, 4)
	go func() {
		for lines.Scan() {
			got <- lines.Text()
		}
		close(got)
	}()
	select {
	case l := <-got:
		if l != "ready" {
			t.Fatalf("first line %q", l)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the remote shell never said ready; stderr %q", serr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		_ = pw.Close()
		if code := exitOf(err); code != 42 {
			t.Fatalf("after SIGINT: exit %d, stderr %q", code, serr.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("onnode did not end after SIGINT")
	}
	if l, ok := <-got; !ok || l != "got-int" {
		t.Fatalf("after SIGINT the remote printed %q", l)
	}

	// -l picks a live node and runs there; naming this node runs here.
	cmd, out, errb = onnode(nil, "-l", "sh", "-c", "echo fine")
	if code := exitOf(cmd.Run()); code != 0 || out.String() != "fine\n" {
		t.Fatalf("-l: exit %d, %q %q", code, out, errb)
	}
	cmd, _, _ = onnode(nil, "1", "sh", "-c", "exit 5")
	if code := exitOf(cmd.Run()); code != 5 {
		t.Fatalf("on this node: exit %d", code)
	}
}
