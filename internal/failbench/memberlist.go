package failbench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/internal/netlab"
	"github.com/hashicorp/memberlist"
)

// AgentCommand is the first argument that makes the failbench binary
// run as a memberlist agent (see AgentMain).
const AgentCommand = "memberlist-agent"

// AgentMain runs one memberlist node until SIGTERM or SIGKILL: memberlist
// with DefaultLANConfig or DefaultLocalConfig, changed only in the node's
// name and addresses, joined to the given peers (retried until one
// answers), and an HTTP endpoint on a Unix socket whose GET /members
// lists the names of Members() (alive and suspect nodes). Join, leave
// and update events go to stdout with the time, for the log.
//
//	failbench memberlist-agent -config lan -name n2.0 -bind 10.213.0.2 -join 10.213.0.1,10.213.0.3 -socket n2.sock
func AgentMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet(AgentCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfgName = fs.String("config", "lan", "lan (DefaultLANConfig) or local (DefaultLocalConfig)")
		name    = fs.String("name", "", "node `name`")
		bind    = fs.String("bind", "", "bind and advertise `address`")
		join    = fs.String("join", "", "comma-separated peer `addresses` to join")
		socket  = fs.String("socket", "", "Unix `socket` of the members endpoint")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var cfg *memberlist.Config
	switch *cfgName {
	case "lan":
		cfg = memberlist.DefaultLANConfig()
	case "local":
		cfg = memberlist.DefaultLocalConfig()
	default:
		fmt.Fprintf(stderr, "%s: -config %q: want lan or local\n", AgentCommand, *cfgName)
		return 2
	}
	if *name == "" || *bind == "" || *socket == "" {
		fmt.Fprintf(stderr, "%s: -name, -bind and -socket are required\n", AgentCommand)
		return 2
	}
	cfg.Name = *name
	cfg.BindAddr, cfg.AdvertiseAddr = *bind, *bind
	cfg.Logger = log.New(stderr, "", log.LstdFlags|log.Lmicroseconds)
	cfg.Events = eventPrinter{}
	m, err := memberlist.Create(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", AgentCommand, err)
		return 1
	}
	_ = os.Remove(*socket)
	l, err := net.Listen("unix", *socket)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", AgentCommand, err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /members", func(w http.ResponseWriter, _ *http.Request) {
		var names []string
		for _, n := range m.Members() {
			names = append(names, n.Name)
		}
		slices.Sort(names)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(names)
	})
	go func() { _ = http.Serve(l, mux) }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *join != "" {
		peers := strings.Split(*join, ",")
		// Bounded: a node that cannot join in a minute is a broken run.
		for i := 0; i < 600 && ctx.Err() == nil; i++ {
			if _, err := m.Join(peers); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	<-ctx.Done()
	_ = m.Leave(time.Second)
	_ = m.Shutdown()
	return 0
}

type eventPrinter struct{}

func (eventPrinter) NotifyJoin(n *memberlist.Node)   { printEvent("join", n) }
func (eventPrinter) NotifyLeave(n *memberlist.Node)  { printEvent("leave", n) }
func (eventPrinter) NotifyUpdate(n *memberlist.Node) { printEvent("update", n) }

func printEvent(what string, n *memberlist.Node) {
	fmt.Printf("%s %s %s\n", time.Now().Format("15:04:05.000000"), what, n.Name)
}

// nodeOfName is the node number in an agent's name "n<node>.<generation>".
func nodeOfName(s string) (int, error) {
	num, _, _ := strings.Cut(strings.TrimPrefix(s, "n"), ".")
	return strconv.Atoi(num)
}

type memberlistSys struct {
	base
	agent  string // the failbench binary
	config string // lan or local
	every  time.Duration
	gen    map[int]int // restarts per node, for unique names
}

func newMemberlist(label string, lab *netlab.Lab, dir, agent, config string, every time.Duration) *memberlistSys {
	return &memberlistSys{base: newBase(label, lab, dir), agent: agent, config: config, every: every, gen: map[int]int{}}
}

func (s *memberlistSys) sock(n int) string { return s.path(fmt.Sprintf("n%d.sock", n)) }

// start runs the agent for node n under a new name, joining every other
// node's address (whichever are up answer).
func (s *memberlistSys) start(n int) error {
	var peers []string
	for _, p := range s.nodes {
		if p != n {
			peers = append(peers, s.lab.Addr(p).String())
		}
	}
	name := fmt.Sprintf("n%d.%d", n, s.gen[n])
	s.gen[n]++
	_ = os.Remove(s.sock(n))
	cmd := s.lab.Command(n, s.agent, AgentCommand, "-config", s.config, "-name", name, "-bind", s.lab.Addr(n).String(),
		"-join", strings.Join(peers, ","), "-socket", s.sock(n))
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", s.sock(n))
		},
	}}
	read := func(ctx context.Context) ([]int, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://agent/members", nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var names []string
		if err := json.NewDecoder(resp.Body).Decode(&names); err != nil {
			return nil, err
		}
		var out []int
		for _, nm := range names {
			id, err := nodeOfName(nm)
			if err != nil {
				return nil, fmt.Errorf("memberlist: bad name %q", nm)
			}
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
		return out, nil
	}
	stop := func(ctx context.Context) {
		<-ctx.Done()
		hc.CloseIdleConnections()
	}
	return s.launch(n, cmd, s.poll(n, s.every, read), stop)
}

// master is node 1, the first node every other one joins through; the
// system has no master (see the package doc).
func (s *memberlistSys) master(context.Context) (int, error) {
	if !s.running(s.nodes[0]) {
		return 0, errors.New("memberlist: node 1 is not running")
	}
	return s.nodes[0], nil
}

func (s *memberlistSys) close() error { return s.closeAll() }
