// Command clusterd is the cluster node daemon: CLMS and ICS over TCP and
// UDP with the real clock and files. It reads /etc/cluster.conf (see
// package internal/clusterconf for the format), takes the cluster key
// from a file named by -key, and serves the local control API that the
// cluster and onnode tools use.
//
//	clusterd -check /etc/cluster.conf     # validate a config file: exit 0 or 2
//	clusterd -key /etc/cluster.key        # run
//
// Exit status: 0 after a clean leave (SIGTERM or `cluster leave`), 1 on
// a runtime failure (no master reachable, wrong key, refused), 2 on bad
// flags or configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/internal/clusterconf"
	"github.com/clusterinfra/ci/node"
	"github.com/clusterinfra/ci/node/daemon"
	"github.com/clusterinfra/ci/node/libcluster"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// usageError is bad input on the command line or in the config: exit 2.
type usageError struct{ error }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("clusterd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		check      = fs.String("check", "", "validate `FILE` as a cluster.conf and exit (0 valid, 2 not)")
		config     = fs.String("config", "/etc/cluster.conf", "the node's cluster.conf `file`; \"\" to take everything from flags")
		keyFile    = fs.String("key", "/etc/cluster.key", "`file` holding the cluster key (at least 32 bytes; the same on every node)")
		stateDir   = fs.String("state", "/var/lib/clusterd", "state `directory` (boot counter, raft log, directory of nodes)")
		socket     = fs.String("socket", libcluster.DefaultSocket, "control API Unix `socket`")
		port       = fs.Uint("port", 7400, "ICS TCP and UDP `port`, the same on every node (introductions use port+1)")
		metrics    = fs.String("metrics", "127.0.0.1:9740", "Prometheus metrics listen `address`; \"\" for none")
		name       = fs.String("name", "", "this node's `name` (default: the host name)")
		allowed    = fs.String("allowed", "", "the only node numbers that may join, e.g. 1-5,9 (default: any node with the key)")
		nodenum    = fs.Int("nodenum", 0, "override CLUSTER_NODENUM")
		masters    = fs.String("masters", "", "override CLUSTER_MASTER (`node:ip,...`)")
		addr       = fs.String("addr", "", "override IFCONFIG's `ip`")
		joinTO     = fs.Duration("join-timeout", 60*time.Second, "exit if not a member after this long")
		heartbeat  = fs.Duration("heartbeat", 0, "CLMS heartbeat interval (default 50ms)")
		nodedown   = fs.Duration("nodedown-after", 0, "silence before a node is suspected (default 250ms)")
		election   = fs.Duration("election-timeout", 0, "master silence before an election (default 300ms)")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		lab        = fs.Bool("lab", false, "enable the scenario lab's hooks in the control API")
		labAPI     = fs.String("lab-api", "", "with -lab, also serve the control API over TCP on this `address` (a VM lab's private network only: it is not authenticated)")
		introEvery = fs.Duration("intro-every", time.Second, "how often to re-introduce this node to the masters")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "clusterd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *check != "" {
		if _, err := clusterconf.ParseFile(*check); err != nil {
			printConfErr(stderr, err)
			return 2
		}
		return 0
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	opts, err := options(*config, set, *nodenum, *masters, *addr)
	if err != nil {
		printConfErr(stderr, err)
		return 2
	}
	if *port == 0 || *port > 65534 {
		fmt.Fprintf(stderr, "clusterd: -port %d: need 1-65534\n", *port)
		return 2
	}
	opts.Port = uint16(*port)
	if *allowed != "" {
		opts.Allowed, err = parseNodeList(*allowed)
		if err != nil {
			fmt.Fprintf(stderr, "clusterd: -allowed: %v\n", err)
			return 2
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "clusterd: -log-level %q: %v\n", *logLevel, err)
		return 2
	}
	key, err := readKey(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "clusterd: %v\n", err)
		return 2
	}
	opts.Key = key
	opts.Name = *name
	if opts.Name == "" {
		opts.Name, _ = os.Hostname()
	}
	opts.StateDir, opts.Socket, opts.Metrics = *stateDir, *socket, *metrics
	opts.JoinTimeout, opts.IntroEvery = *joinTO, *introEvery
	opts.Heartbeat, opts.NodedownAfter, opts.ElectionTimeout = *heartbeat, *nodedown, *election
	opts.Lab, opts.LabAPI = *lab, *labAPI
	opts.Logger = slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	d, err := daemon.Start(opts)
	if err != nil {
		fmt.Fprintf(stderr, "clusterd: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := d.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "clusterd: %v\n", err)
		return 1
	}
	return 0
}

func printConfErr(w io.Writer, err error) {
	var es clusterconf.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			fmt.Fprintln(w, e.Error())
		}
		return
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(w, "clusterd: %v\n", ue.error)
		return
	}
	fmt.Fprintln(w, err.Error())
}

// options reads the config file (unless config is "") and applies the
// flags that override it.
func options(config string, set map[string]bool, nodenum int, masters, addr string) (daemon.Options, error) {
	var o daemon.Options
	var src clusterconf.Source
	if config != "" {
		c, err := clusterconf.ParseFile(config)
		if err != nil {
			return o, err
		}
		src = c.Source
		o.Self = node.ID(c.NodeNum)
		o.Addr = c.Ifconfig.Addr
		o.Masters = map[node.ID]netip.Addr{}
		for _, m := range c.Masters {
			o.Masters[node.ID(m.Node)] = m.Addr
		}
	}
	if set["nodenum"] {
		o.Self = node.ID(nodenum)
		src.NodeNum = 0
	}
	if set["masters"] {
		ms, err := parseMasters(masters)
		if err != nil {
			return o, usageError{fmt.Errorf("-masters: %w", err)}
		}
		o.Masters = ms
		src.Masters = 0
	}
	if set["addr"] {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return o, usageError{fmt.Errorf("-addr: %w", err)}
		}
		o.Addr = a
		src.Ifconfig = 0
	}
	where := func(line int, what string) string {
		if line == 0 {
			return "-" + what
		}
		return fmt.Sprintf("%s:%d", src.File, line)
	}
	switch {
	case !o.Self.Valid():
		return o, usageError{fmt.Errorf("no node number: give CLUSTER_NODENUM in the config or -nodenum (1-%d)", node.MaxID)}
	case len(o.Masters) == 0:
		return o, usageError{errors.New("no candidate masters: give CLUSTER_MASTER in the config or -masters")}
	case !o.Addr.IsValid():
		return o, usageError{errors.New("no ICS address: give IFCONFIG in the config or -addr")}
	}
	if !localAddr(o.Addr) {
		return o, usageError{fmt.Errorf("%s: the ICS address %v is not on any interface of this host", where(src.Ifconfig, "addr"), o.Addr)}
	}
	if a, ok := o.Masters[o.Self]; ok && a != o.Addr {
		return o, usageError{fmt.Errorf("%s: node %d is a master at %v, but its ICS address is %v", where(src.Masters, "masters"), o.Self, a, o.Addr)}
	}
	return o, nil
}

func localAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: let the bind say it
	}
	for _, x := range addrs {
		p, err := netip.ParsePrefix(x.String())
		if err != nil {
			continue
		}
		// All of 127/8 answers on lo, though only 127.0.0.1 is listed.
		if p.Addr() == a || (p.Addr().IsLoopback() && p.Contains(a)) {
			return true
		}
	}
	return false
}

func parseMasters(s string) (map[node.ID]netip.Addr, error) {
	out := map[node.ID]netip.Addr{}
	for _, part := range strings.Split(s, ",") {
		n, ip, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("%q: want node:ip", part)
		}
		v, err := strconv.Atoi(n)
		if err != nil || !node.ID(v).Valid() {
			return nil, fmt.Errorf("%q: node %q is not 1-%d", part, n, node.MaxID)
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", part, err)
		}
		if _, dup := out[node.ID(v)]; dup {
			return nil, fmt.Errorf("node %d twice", v)
		}
		out[node.ID(v)] = a
	}
	return out, nil
}

// parseNodeList reads "1-5,9".
func parseNodeList(s string) ([]node.ID, error) {
	var out []node.ID
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		if err != nil || !node.ID(a).Valid() {
			return nil, fmt.Errorf("%q: not a node number 1-%d", part, node.MaxID)
		}
		b := a
		if isRange {
			b, err = strconv.Atoi(strings.TrimSpace(hi))
			if err != nil || !node.ID(b).Valid() || b < a {
				return nil, fmt.Errorf("%q: not a range of node numbers", part)
			}
		}
		for n := a; n <= b; n++ {
			out = append(out, node.ID(n))
		}
	}
	return out, nil
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	k := []byte(strings.TrimRight(string(b), "\r\n"))
	if len(k) < wire.MinKeySize {
		return nil, fmt.Errorf("cluster key %s: %d bytes, need at least %d", path, len(k), wire.MinKeySize)
	}
	return k, nil
}
