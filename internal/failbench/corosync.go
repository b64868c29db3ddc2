package failbench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clusterinfra/ci/internal/netlab"
)

// CorosyncBinaries are the programs the corosync systems need.
var CorosyncBinaries = []string{"corosync", "corosync-quorumtool", "unshare", "stdbuf"}

// ErrNoCorosync says corosync is not installed and could not be.
var ErrNoCorosync = errors.New("failbench: corosync is not installed (as root: apt-get install -y corosync)")

// EnsureCorosync installs Debian's corosync package with apt-get when
// corosync is missing and install is true.
func EnsureCorosync(install bool, log func(string, ...any)) error {
	missing := func() []string {
		var out []string
		for _, b := range CorosyncBinaries {
			if _, err := exec.LookPath(b); err != nil {
				out = append(out, b)
			}
		}
		return out
	}
	m := missing()
	if len(m) == 0 {
		return nil
	}
	if !install {
		return fmt.Errorf("%w: missing %s", ErrNoCorosync, strings.Join(m, ", "))
	}
	log("corosync missing (%s): apt-get install -y corosync", strings.Join(m, ", "))
	for _, args := range [][]string{{"install", "-y", "corosync"}, {"update"}, {"install", "-y", "corosync"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err == nil && args[0] == "install" {
			break
		}
		if err != nil {
			log("apt-get %s: %v\n%s", strings.Join(args, " "), err, tail(string(out), 800))
		}
	}
	if m := missing(); len(m) > 0 {
		return fmt.Errorf("%w: still missing %s after apt-get", ErrNoCorosync, strings.Join(m, ", "))
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

type corosync struct {
	base
	token time.Duration // 0: corosync's default
}

// newCorosync writes one corosync.conf per node: knet, crypto off,
// votequorum, logging to stderr (the node's log), and the token timeout
// if token is not zero.
func newCorosync(label string, lab *netlab.Lab, dir string, token time.Duration) (*corosync, error) {
	c := &corosync{base: newBase(label, lab, dir), token: token}
	// libqb keeps a blackbox (8 MiB) and one directory per IPC
	// connection in /dev/shm, and a SIGKILLed corosync never deletes
	// them: a full make bench once left 16 GiB of them behind.
	c.reap = func(pid int) error { return removeQBFiles(shmDir, pid) }
	var nl strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&nl, "\tnode {\n\t\tring0_addr: %s\n\t\tnodeid: %d\n\t\tname: n%d\n\t}\n", lab.Addr(n), n, n)
	}
	tok := ""
	if token > 0 {
		tok = fmt.Sprintf("\ttoken: %d\n", token.Milliseconds())
	}
	for _, n := range c.nodes {
		sd := c.path(fmt.Sprintf("n%d.state", n))
		if err := os.MkdirAll(sd, 0o700); err != nil {
			return nil, err
		}
		conf := "totem {\n\tversion: 2\n\tcluster_name: failbench\n\ttransport: knet\n\tcrypto_cipher: none\n\tcrypto_hash: none\n" + tok + "}\n" +
			"nodelist {\n" + nl.String() + "}\n" +
			"quorum {\n\tprovider: corosync_votequorum\n}\n" +
			"logging {\n\tto_stderr: yes\n\tto_syslog: no\n\tto_logfile: no\n\ttimestamp: hires\n}\n" +
			"system {\n\tstate_dir: " + sd + "\n}\n"
		if err := os.WriteFile(c.path(fmt.Sprintf("n%d.conf", n)), []byte(conf), 0o600); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// start runs corosync in node n's network namespace and in a mount
// namespace of its own with a private tmpfs on /run (the pid lock file
// is always /run/corosync.pid). unshare and sh exec into corosync, so
// the process started is corosync itself.
func (c *corosync) start(n int) error {
	script := "mount -t tmpfs -o size=4m failbench /run && exec corosync -f -c " + c.path(fmt.Sprintf("n%d.conf", n))
	cmd := c.lab.Command(n, "unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	return c.launch(n, cmd, func(ctx context.Context) { c.monitor(ctx, n) })
}

// monitor runs `corosync-quorumtool -m` in node n's namespace (again
// whenever it ends, e.g. before corosync answers) and records every
// membership it prints.
func (c *corosync) monitor(ctx context.Context, n int) {
	for ctx.Err() == nil {
		cmd := c.lab.Command(n, "stdbuf", "-oL", "corosync-quorumtool", "-m")
		out, err := cmd.StdoutPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
		c.parse(n, out)
		_ = cmd.Wait()
		stop()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// parse reads corosync-quorumtool -m output: after each "Membership
// information" header come the column titles and one line per node,
// starting with its nodeid, then a blank line.
func (c *corosync) parse(n int, r interface{ Read([]byte) (int, error) }) {
	sc := bufio.NewScanner(r)
	in := false
	var members []int
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "Membership information":
			in, members = true, nil
		case !in:
		case line == "":
			if members != nil {
				c.tr.set(n, members, time.Now())
			}
			in = false
		default:
			f := strings.Fields(line)
			if id, err := strconv.Atoi(f[0]); err == nil {
				members = append(members, id)
			}
		}
	}
}

// master is the ring's representative: the lowest nodeid of the
// membership, as the running nodes report it.
func (c *corosync) master(ctx context.Context) (int, error) {
	vs, _ := c.tr.snapshot()
	m := 0
	for _, v := range vs {
		if len(v.members) == 0 {
			continue
		}
		if m == 0 || v.members[0] < m {
			m = v.members[0]
		}
	}
	if m == 0 {
		return 0, errors.New("corosync: no membership known")
	}
	return m, nil
}

func (c *corosync) close() error { return c.closeAll() }

// shmDir is where libqb keeps its shared memory files.
const shmDir = "/dev/shm"

// removeQBFiles removes the libqb files and directories in dir that
// belong to process pid: their names start with "qb-" and have pid as
// one of their dash-separated fields (qb-corosync-PID-blackbox-data,
// qb-SERVERPID-CLIENTPID-N-XXXXXX).
func removeQBFiles(dir string, pid int) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	want := strconv.Itoa(pid)
	var errs []error
	for _, e := range ents {
		name, ok := strings.CutPrefix(e.Name(), "qb-")
		if !ok {
			continue
		}
		for _, f := range strings.Split(name, "-") {
			if f == want {
				errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
				break
			}
		}
	}
	return errors.Join(errs...)
}
