// Command failbench measures failover and false positives of clusterd,
// corosync 3 and hashicorp/memberlist in network namespaces, in one run
// (see package internal/failbench). It needs root. Benchmark lines go to
// stdout, progress and a summary table to stderr.
//
//	go run ./internal/failbench/cmd/failbench                  # full: 20 rounds, 10-minute soaks
//	go run ./internal/failbench/cmd/failbench -quick           # 3 rounds, 2-minute soaks
//	go run ./internal/failbench/cmd/failbench -systems clusterd,corosync-token1000 -sizes 3 -soak 0
//
// Exit status: 0 when everything ran (goals are judged by benchreport,
// not here), 1 when a system failed or the run was interrupted, 2 on bad
// flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/internal/failbench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == failbench.AgentCommand {
		os.Exit(failbench.AgentMain(os.Args[2:], os.Stderr))
	}
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("failbench", flag.ContinueOnError)
	var (
		quick    = fs.Bool("quick", os.Getenv("QUICK") == "1", "fewer rounds (3) and 2-minute soaks (default when QUICK=1)")
		rounds   = fs.Int("rounds", 0, "rounds per system, size and victim kind (default 20, 3 with -quick)")
		systems  = fs.String("systems", strings.Join(failbench.Systems, ","), "systems to measure")
		sizes    = fs.String("sizes", "3,5", "cluster sizes for failover")
		kinds    = fs.String("kinds", "member,master", "victim kinds")
		soak     = fs.Duration("soak", -1, "false-positive soak per system (default 10m, 2m with -quick; 0 skips)")
		soakN    = fs.Int("soak-nodes", 5, "nodes of a soak cluster")
		serial   = fs.Bool("soak-serial", false, "soak the systems one after the other (default: all at once)")
		pserial  = fs.Bool("serial", false, "run the peers' failover rounds one after the other (default: the peers at once, clusterd alone)")
		rssAfter = fs.Duration("rss-after", 30*time.Second, "read a converged 5-node clusterd's RSS after this long (0 skips)")
		poll     = fs.Duration("poll", 5*time.Millisecond, "poll period of the views during failover")
		settle   = fs.Duration("settle", time.Second, "how long the full view must hold before a kill")
		clusterd = fs.String("clusterd", "", "clusterd binary (default: go build ./cmd/clusterd)")
		jsonOut  = fs.String("json", "", "write every sample to this JSON `file`")
		dir      = fs.String("dir", "", "keep configs and logs in this `directory` (default: a temporary one, kept on failure)")
		mlMaster = fs.Bool("memberlist-master", false, "also run master rounds for memberlist (kill node 1, the join seed)")
		install  = fs.Bool("install", true, "apt-get install corosync when it is missing")
	)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "failbench: needs root (network namespaces, nftables); run it as root")
		return 2
	}
	logf := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s failbench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(f, a...))
	}
	cfg := failbench.Config{
		Systems: splitList(*systems), Kinds: splitList(*kinds),
		Rounds: *rounds, PollEvery: *poll, Settle: *settle,
		RSSAfter: *rssAfter, Soak: *soak, SoakNodes: *soakN, SoakLoss: 0.05, SoakJitter: 10 * time.Millisecond,
		SoakSerial: *serial, Serial: *pserial, InstallPeer: *install, MemberlistMaster: *mlMaster, Dir: *dir, Out: os.Stdout, Logf: logf,
	}
	for _, s := range splitList(*sizes) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 || n > 64 {
			fmt.Fprintf(os.Stderr, "failbench: -sizes: %q is not a cluster size (2-64)\n", s)
			return 2
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 20
		if *quick {
			cfg.Rounds = 3
		}
	}
	if cfg.Soak < 0 {
		cfg.Soak = 10 * time.Minute
		if *quick {
			cfg.Soak = 2 * time.Minute
		}
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "failbench: %v\n", err)
		return 1
	}
	cfg.Agent = self
	cfg.Clusterd = *clusterd
	if cfg.Clusterd == "" {
		tmp, err := os.MkdirTemp("", "failbench-bin-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "failbench: %v\n", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		cfg.Clusterd = filepath.Join(tmp, "clusterd")
		out, err := exec.Command("go", "build", "-o", cfg.Clusterd, "github.com/clusterinfra/ci/cmd/clusterd").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "failbench: building clusterd (or give -clusterd): %v\n%s", err, out)
			return 1
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		// A second signal is not caught: it ends the run at once, after
		// the first one asked for a clean stop.
		<-ctx.Done()
		stop()
	}()
	rep, err := failbench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "failbench: %v\n", err)
		return 1
	}
	rep.Summary(os.Stderr)
	if *jsonOut != "" {
		if err := rep.WriteJSON(*jsonOut); err != nil {
			fmt.Fprintf(os.Stderr, "failbench: %v\n", err)
			return 1
		}
	}
	if len(rep.Failures) > 0 {
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
