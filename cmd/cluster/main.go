// Command cluster shows and changes the cluster's membership through the
// local clusterd's control API, as OpenSSI's cluster command did.
//
//	cluster                 the members' node numbers, one per line
//	cluster -v              every node: number, name, state, address
//	cluster transitions     the membership history
//	cluster watch           the history, then transitions as they happen
//	cluster info N          node N: state, incarnation, CPUs, memory, load
//	cluster set N STATE     ask the master to set node N's state (UP, SHUTDOWN, GOINGDOWN)
//	cluster leave           this node leaves the cluster cleanly
//	cluster add N IP [NAME] admit node N at IP online (ssi-addnode)
//
// Exit status: 0 done, 1 the daemon refused or failed, 2 bad usage.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/clusterinfra/ci/node/libcluster"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage: cluster [-socket PATH] [-v] [transitions | watch | info N | set N STATE | leave | add N IP [NAME]]`

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, usage); fs.PrintDefaults() }
	socket := fs.String("socket", envOr("CLUSTERD_SOCKET", libcluster.DefaultSocket), "clusterd's control `socket` (env CLUSTERD_SOCKET)")
	verbose := fs.Bool("v", false, "every node with its name, state and address")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on the daemon after this long (not for watch)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := libcluster.New(*socket)
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "cluster: "+format+"\n", a...)
		fmt.Fprintln(stderr, usage)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "cluster: %v\n", err)
		return 1
	}
	args = fs.Args()
	cmd := ""
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	if cmd != "watch" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	nargs := func(n ...int) bool {
		for _, k := range n {
			if len(args) == k {
				return true
			}
		}
		return false
	}
	switch cmd {
	case "":
		st, err := c.Status(ctx)
		if err != nil {
			return fail(err)
		}
		if *verbose {
			printNodes(stdout, st)
			return 0
		}
		for _, m := range st.Members {
			fmt.Fprintln(stdout, m)
		}
	case "transitions":
		if !nargs(0) {
			return bad("transitions takes no argument")
		}
		ts, err := c.Transitions(ctx, 0)
		if err != nil {
			return fail(err)
		}
		for _, t := range ts {
			printTransition(stdout, t)
		}
	case "watch":
		if !nargs(0) {
			return bad("watch takes no argument")
		}
		err := c.Watch(ctx, 0, func(t libcluster.Transition) error {
			printTransition(stdout, t)
			return nil
		})
		if ctx.Err() != nil {
			return 0
		}
		return fail(err)
	case "info":
		if !nargs(1) {
			return bad("info takes a node number")
		}
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return bad("info: %q is not a node number", args[0])
		}
		i, err := c.Info(ctx, n)
		if err != nil {
			return fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 1, ' ', 0)
		fmt.Fprintf(tw, "node:\t%d\nname:\t%s\nstate:\t%s\naddress:\t%s\nincarnation:\t%s\nsince:\t#%d\nmaster:\t%v\ncpus:\t%s\nmemory:\t%s\n",
			i.Node, i.Name, i.State, dash(i.Address), dash(i.Incarnation), i.Since, i.Master, unknown(uint64(i.CPUs), ""), unknown(i.MemoryMB, " MiB"))
		if i.Load != nil {
			fmt.Fprintf(tw, "load:\t%.2f per CPU\n", *i.Load)
		}
		_ = tw.Flush()
	case "set":
		if !nargs(2) {
			return bad("set takes a node number and a state")
		}
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return bad("set: %q is not a node number", args[0])
		}
		if err := c.SetState(ctx, n, strings.ToUpper(args[1])); err != nil {
			return fail(err)
		}
	case "leave":
		if !nargs(0) {
			return bad("leave takes no argument")
		}
		if err := c.Leave(ctx); err != nil {
			return fail(err)
		}
	case "add":
		if !nargs(2, 3) {
			return bad("add takes a node number, an address and optionally a name")
		}
		n, err := strconv.Atoi(args[0])
		if err != nil {
			return bad("add: %q is not a node number", args[0])
		}
		if _, err := netip.ParseAddr(args[1]); err != nil {
			return bad("add: %q is not an IP address", args[1])
		}
		r := libcluster.AddRequest{Node: n, Address: args[1]}
		if len(args) == 3 {
			r.Name = args[2]
		}
		if err := c.Add(ctx, r); err != nil {
			return fail(err)
		}
	default:
		return bad("unknown command %q", cmd)
	}
	return 0
}

func printNodes(w io.Writer, st *libcluster.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNAME\tSTATE\tADDRESS\tINCARNATION\t")
	for _, n := range st.Nodes {
		state := n.State
		if n.Master {
			state += " (master)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t\n", n.Node, n.Name, state, dash(n.Address), dash(n.Incarnation))
	}
	_ = tw.Flush()
	q := "quorate"
	if !st.Quorate {
		q = "NOT quorate"
	}
	fmt.Fprintf(w, "cluster %s: %d members, master %s, last transition #%d, this node %d is %s\n",
		st.Cluster, len(st.Members), masterName(st.Master), st.Last, st.Self, q)
}

func masterName(m int) string {
	if m == 0 {
		return "unknown"
	}
	return strconv.Itoa(m)
}

func printTransition(w io.Writer, t libcluster.Transition) {
	fmt.Fprintf(w, "#%d %s node %d (%s) %s -> %s (%s) by master %d, epoch %d\n",
		t.Num, t.Time.UTC().Format(time.RFC3339Nano), t.Node, t.Inc, t.From, t.To, t.Cause, t.Master, t.Epoch)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func unknown(v uint64, unit string) string {
	if v == 0 {
		return "unknown"
	}
	return strconv.FormatUint(v, 10) + unit
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
