package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// reexecArg0 marks a process started by Command: the binary re-executes
// itself under this argv[0], the init function below joins the namespace
// and execs the real program. argv[0] is used rather than an environment
// variable because callers routinely replace Cmd.Env.
const reexecArg0 = "netlab-netns-exec"

// reexecExit is the exit status of the helper when it cannot enter the
// namespace or exec the program (like a shell's "command not found").
const reexecExit = 127

func init() {
	if len(os.Args) < 4 || os.Args[0] != reexecArg0 {
		return
	}
	os.Exit(reexec(os.Args[1], os.Args[2], os.Args[3:]))
}

// reexec runs in the helper process before main: it moves its thread into
// the namespace at nsPath and replaces the process with prog. execve keeps
// the calling thread's namespace, so only this thread needs to move.
func reexec(nsPath, prog string, argv []string) int {
	runtime.LockOSThread()
	if !strings.HasPrefix(nsPath, netnsDir+"/") {
		fmt.Fprintf(os.Stderr, "netlab: refusing namespace %q outside %s\n", nsPath, netnsDir)
		return reexecExit
	}
	if err := enterNS(nsPath)(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return reexecExit
	}
	// Close unmounts the namespaces before it kills what runs inside. If
	// the mount is gone now, the lab closed while this process started and
	// its kill may have missed us: leave rather than keep the dead lab's
	// namespace alive.
	mounted, err1 := pathNSID(nsPath)
	joined, err2 := pathNSID(threadNetNS)
	if err1 != nil || err2 != nil || mounted != joined {
		fmt.Fprintf(os.Stderr, "netlab: namespace %s was removed (lab closed)\n", nsPath)
		return reexecExit
	}
	err := unix.Exec(prog, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "netlab: exec %s: %v\n", prog, err)
	return reexecExit
}

// Command returns a Cmd that runs name with args inside node n's network
// namespace; it sees only lo and eth0. Use it like exec.Command: set
// Stdout, Env, Dir and so on, then Start or Run.
//
// How it enters the namespace: the Cmd runs this very binary
// (/proc/self/exe) with a marker argv[0]; this package's init function sees
// the marker before main runs, setns(2)s its thread into
// /run/netns/<NSName(n)> and execve(2)s the program, so the program starts
// directly in the namespace with the Cmd's environment, directory, files
// and process attributes. No `ip netns exec` is involved; unlike it, the
// mount namespace is left alone (/sys still shows the host's interfaces).
// name is resolved with exec.LookPath in the caller, as exec.Command does.
// Cmd.Path and Cmd.Args are the helper's; do not change them.
//
// Close kills processes the lab started and that are still running.
func (l *Lab) Command(n int, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if cmd.Err != nil {
		return cmd
	}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	switch {
	case closed:
		cmd.Err = ErrClosed
	case !l.isNode(n):
		cmd.Err = fmt.Errorf("netlab: %d is not a node of lab %s", n, l.name)
	}
	if cmd.Err != nil {
		return cmd
	}
	prog := cmd.Path
	cmd.Path = "/proc/self/exe"
	cmd.Args = append([]string{reexecArg0, filepath.Join(netnsDir, l.nodeNSName(n)), prog}, cmd.Args...)
	return cmd
}

// Do runs f on a dedicated OS thread that is inside node n's network
// namespace and returns f's error. Sockets f creates (net.Listen,
// net.Dial and net.ListenPacket with literal IP addresses create them on
// the calling goroutine) belong to the node for their whole life and may
// be used from any goroutine afterwards. Goroutines that f starts run
// elsewhere, outside the namespace. f must not call t.FailNow and friends.
func (l *Lab) Do(n int, f func() error) error {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !l.isNode(n) {
		return fmt.Errorf("netlab: %d is not a node of lab %s", n, l.name)
	}
	// By path rather than the lab's fd: Close may run concurrently, and a
	// removed path fails cleanly where a closed fd number could be reused.
	return onThread(enterNS(filepath.Join(netnsDir, l.nodeNSName(n))), f)
}
