// Command onnode runs a command on another node of the cluster, as
// OpenSSI's onnode did: its standard input, output and error are
// streamed, its exit status becomes onnode's, and Ctrl-C and other
// signals are forwarded to it.
//
//	onnode 3 uname -a        run on node 3
//	onnode -l make -j2       run on the least loaded live node
//
// Exit status: the command's (128+n if signal n killed it); 255 if it
// did not run to its end (its node went down, or it could not be
// reached); 2 for bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/node/libcluster"
)

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

const usage = "usage: onnode [-socket PATH] (-l | N) COMMAND [ARG...]"

// forwarded are the signals onnode passes on instead of dying of them.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("onnode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, usage); fs.PrintDefaults() }
	socket := fs.String("socket", envOr("CLUSTERD_SOCKET", libcluster.DefaultSocket), "clusterd's control `socket` (env CLUSTERD_SOCKET)")
	least := fs.Bool("l", false, "run on the least loaded live node")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "onnode: "+format+"\n", a...)
		fmt.Fprintln(stderr, usage)
		return 2
	}
	c := libcluster.New(*socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	target := 0
	if *least {
		if len(rest) < 1 {
			return bad("no command")
		}
		loads, err := c.Loads(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "onnode: %v\n", err)
			return 255
		}
		if len(loads) == 0 {
			fmt.Fprintln(stderr, "onnode: no live node answered with its load")
			return 255
		}
		ids := make([]int, 0, len(loads))
		for id := range loads {
			ids = append(ids, id)
		}
		sort.Ints(ids)
		target = ids[0]
		for _, id := range ids {
			if loads[id] < loads[target] {
				target = id
			}
		}
	} else {
		if len(rest) < 2 {
			return bad("need a node number and a command")
		}
		n, err := strconv.Atoi(rest[0])
		if err != nil || n < 1 {
			return bad("%q is not a node number", rest[0])
		}
		target, rest = n, rest[1:]
	}
	st, err := c.Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "onnode: %v\n", err)
		return 255
	}
	if target == st.Self {
		return local(rest, stdin, stdout, stderr)
	}
	ec, err := c.Exec(ctx, libcluster.ExecRequest{Node: target, Argv: rest})
	if err != nil {
		fmt.Fprintf(stderr, "onnode: node %d: %v\n", target, err)
		return 255
	}
	defer ec.Close()
	return remote(ec, target, stdin, stdout, stderr)
}

// remote pumps a running remote command until it exits.
func remote(ec *libcluster.ExecConn, target int, stdin io.Reader, stdout, stderr io.Writer) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			if sig, ok := s.(syscall.Signal); ok {
				_ = ec.Signal(int(sig))
			}
		}
	}()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				if ec.Stdin(buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				_ = ec.CloseStdin()
				return
			}
		}
	}()
	for {
		kind, data, err := ec.Next()
		if err != nil {
			fmt.Fprintf(stderr, "onnode: node %d: connection to clusterd lost: %v\n", target, err)
			return 255
		}
		switch kind {
		case libcluster.ExecStdout:
			if _, err := stdout.Write(data); err != nil {
				return 255 // our reader went away: the close kills the command
			}
		case libcluster.ExecStderr:
			_, _ = stderr.Write(data)
		case libcluster.ExecExitFrame:
			var ex libcluster.ExecExit
			if err := json.Unmarshal(data, &ex); err != nil {
				fmt.Fprintf(stderr, "onnode: node %d: bad exit status: %v\n", target, err)
				return 255
			}
			if ex.Error != "" && ex.Code < 0 {
				fmt.Fprintf(stderr, "onnode: node %d: %s\n", target, ex.Error)
				return 255
			}
			if ex.Error != "" {
				fmt.Fprintf(stderr, "onnode: node %d: %s\n", target, ex.Error)
			}
			return ex.Code
		}
	}
}

// local runs the command here, for onnode naming this node: the same
// streams and statuses without a trip through the daemon.
func local(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "onnode: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 127
		}
		return 126
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(stderr, "onnode: %v\n", err)
		return 255
	}
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
