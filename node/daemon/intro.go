package daemon

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/clusterinfra/ci/node"
)

// The introduction protocol. The host runtime talks only to nodes whose
// address it knows, and a node's address is not in its configuration
// (only the candidate masters' are, in CLUSTER_MASTER). So before a node
// can join, it introduces itself to every candidate over a small TCP
// exchange on the ICS port + 1: "I am node N at address A, boot B". The
// candidate checks the cluster key (an HMAC over the message) and the
// allowed list, records the node in its directory, and answers with the
// whole directory, also authenticated. Every node keeps doing this every
// IntroEvery, so directories converge, a candidate that restarts learns
// everyone again, and a node that moved is relearned by its newer boot.
//
// The exchange is where configuration errors surface as one clear line:
// a wrong cluster key, a node number outside the allowed list, or no
// candidate reachable at all.

// entry is one node of the directory.
type entry struct {
	Node node.ID    `json:"node"`
	Addr netip.Addr `json:"addr"`
	Name string     `json:"name"`
	Boot uint64     `json:"boot"` // the boot that announced this address
}

// introMsg is both the request (Self set) and the answer.
type introMsg struct {
	V       int     `json:"v"`
	Self    *entry  `json:"self,omitempty"`
	Dir     []entry `json:"dir,omitempty"`
	Allowed []int   `json:"allowed,omitempty"` // the answerer's allowed list, empty if open
	Error   string  `json:"error,omitempty"`
	Refusal string  `json:"refusal,omitempty"` // "key" or "allowed": a permanent refusal
}

// envelope carries a message and its MAC under the cluster key.
type envelope struct {
	Body json.RawMessage `json:"body"`
	MAC  []byte          `json:"mac,omitempty"`
}

const (
	introVersion = 1
	maxIntroLine = 1 << 20
)

func mac(key, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("clusterd-intro-v1\x00"))
	h.Write(body)
	return h.Sum(nil)
}

func seal(key []byte, m *introMsg) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var e envelope
	e.Body = body
	if key != nil {
		e.MAC = mac(key, body)
	}
	b, err := json.Marshal(&e)
	return append(b, '\n'), err
}

var errBadMAC = errors.New("message not signed with our cluster key")

// open decodes an envelope; unsigned is allowed only for answers that
// refuse us (the answerer cannot sign for a key we do not share).
func open(key, line []byte, allowUnsigned bool) (*introMsg, error) {
	var e envelope
	if err := json.Unmarshal(line, &e); err != nil {
		return nil, fmt.Errorf("malformed introduction: %w", err)
	}
	var m introMsg
	if err := json.Unmarshal(e.Body, &m); err != nil {
		return nil, fmt.Errorf("malformed introduction body: %w", err)
	}
	if m.V != introVersion {
		return nil, fmt.Errorf("introduction version %d, want %d", m.V, introVersion)
	}
	if !hmac.Equal(e.MAC, mac(key, e.Body)) {
		if allowUnsigned && len(e.MAC) == 0 && m.Refusal != "" {
			return &m, nil
		}
		return nil, errBadMAC
	}
	return &m, nil
}

// directory is what this node knows of every node's address. It is
// shared by the introduction server, the join loop and the API.
type directory struct {
	mu      sync.Mutex
	path    string // where it persists, so a restarted candidate still knows
	self    node.ID
	nodes   map[node.ID]entry
	allowed map[node.ID]bool // nil: open cluster
	changed func(map[node.ID]entry)
}

func newDirectory(path string, self entry, allowed []node.ID, changed func(map[node.ID]entry)) *directory {
	d := &directory{path: path, self: self.Node, nodes: map[node.ID]entry{self.Node: self}, changed: changed}
	if allowed != nil {
		d.allowed = map[node.ID]bool{}
		for _, n := range allowed {
			d.allowed[n] = true
		}
	}
	d.load()
	d.nodes[self.Node] = self
	return d
}

type persisted struct {
	Nodes   []entry `json:"nodes"`
	Allowed []int   `json:"allowed,omitempty"`
}

func (d *directory) load() {
	b, err := os.ReadFile(d.path)
	if err != nil {
		return
	}
	var p persisted
	if json.Unmarshal(b, &p) != nil {
		return // a damaged cache is relearned from the candidates
	}
	for _, e := range p.Nodes {
		if e.Node.Valid() && e.Addr.IsValid() {
			d.nodes[e.Node] = e
		}
	}
	if d.allowed != nil {
		for _, n := range p.Allowed {
			if node.ID(n).Valid() {
				d.allowed[node.ID(n)] = true
			}
		}
	}
}

// saveLocked writes the directory atomically; errors are only logged by
// the caller's caller (a lost cache is relearned).
func (d *directory) saveLocked() error {
	p := persisted{Nodes: slices.Collect(maps.Values(d.nodes)), Allowed: d.allowedLocked()}
	slices.SortFunc(p.Nodes, func(a, b entry) int { return int(a.Node) - int(b.Node) })
	b, err := json.MarshalIndent(&p, "", "  ")
	if err != nil {
		return err
	}
	tmp := d.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, d.path)
}

func (d *directory) allowedLocked() []int {
	if d.allowed == nil {
		return nil
	}
	var out []int
	for n := range d.allowed {
		out = append(out, int(n))
	}
	slices.Sort(out)
	return out
}

// isAllowed reports whether n may join.
func (d *directory) isAllowed(n node.ID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.allowed == nil || d.allowed[n]
}

// allow adds n to the allowed list (online add) and, if addr is valid,
// to the directory.
func (d *directory) allow(n node.ID, addr netip.Addr, name string) error {
	d.mu.Lock()
	if d.allowed != nil {
		d.allowed[n] = true
	}
	var ch map[node.ID]entry
	if addr.IsValid() {
		if old, ok := d.nodes[n]; !ok || old.Addr != addr || old.Name != name {
			d.nodes[n] = entry{Node: n, Addr: addr, Name: name, Boot: old.Boot}
			ch = maps.Clone(d.nodes)
		}
	}
	err := d.saveLocked()
	d.mu.Unlock()
	if ch != nil && d.changed != nil {
		d.changed(ch)
	}
	return err
}

// merge takes in entries; a newer boot of a node wins. It reports whether
// anything changed.
func (d *directory) merge(es []entry, allowed []int) bool {
	d.mu.Lock()
	changed := false
	for _, e := range es {
		if !e.Node.Valid() || !e.Addr.IsValid() || e.Node == d.self {
			continue
		}
		if d.allowed != nil && !d.allowed[e.Node] {
			continue
		}
		old, ok := d.nodes[e.Node]
		if ok && (old.Boot > e.Boot || old == e) {
			continue
		}
		d.nodes[e.Node] = e
		changed = true
	}
	if d.allowed != nil {
		for _, n := range allowed {
			if id := node.ID(n); id.Valid() && !d.allowed[id] {
				d.allowed[id] = true
				changed = true
			}
		}
	}
	var ch map[node.ID]entry
	if changed {
		_ = d.saveLocked()
		ch = maps.Clone(d.nodes)
	}
	d.mu.Unlock()
	if ch != nil && d.changed != nil {
		d.changed(ch)
	}
	return changed
}

func (d *directory) snapshot() map[node.ID]entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.nodes)
}

func (d *directory) list() []entry {
	s := slices.Collect(maps.Values(d.snapshot()))
	slices.SortFunc(s, func(a, b entry) int { return int(a.Node) - int(b.Node) })
	return s
}

// introServer answers introductions on l until it is closed.
func (dm *Daemon) introServer(l net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, 32) // a bound on connections served at once
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			_ = c.Close() // overloaded: the peer retries next round
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			dm.serveIntro(c)
		})
	}
}

func (dm *Daemon) serveIntro(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReaderSize(io.LimitReader(c, maxIntroLine), 4096)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return
	}
	m, err := open(dm.opts.Key, line, false)
	answer := func(key []byte, a *introMsg) {
		a.V = introVersion
		if b, err := seal(key, a); err == nil {
			_, _ = c.Write(b)
		}
	}
	from := c.RemoteAddr().String()
	switch {
	case errors.Is(err, errBadMAC):
		dm.log.Warn("refused an introduction: wrong cluster key", "from", from)
		answer(nil, &introMsg{Refusal: "key", Error: "the cluster key does not match"})
		return
	case err != nil:
		dm.log.Warn("bad introduction", "from", from, "err", err)
		return
	case m.Self == nil || !m.Self.Node.Valid() || !m.Self.Addr.IsValid():
		answer(dm.opts.Key, &introMsg{Error: "an introduction must name a valid node and address"})
		return
	}
	if !dm.dir.isAllowed(m.Self.Node) {
		dm.log.Warn("refused node: not in the allowed list", "node", m.Self.Node, "addr", m.Self.Addr)
		answer(dm.opts.Key, &introMsg{Refusal: "allowed", Error: fmt.Sprintf("node %d is not in the cluster's allowed list", m.Self.Node)})
		return
	}
	if m.Self.Node == dm.opts.Self {
		answer(dm.opts.Key, &introMsg{Error: fmt.Sprintf("node number %d is already used by this node (%s)", m.Self.Node, dm.opts.Addr)})
		return
	}
	dm.dir.merge([]entry{*m.Self}, m.Allowed)
	dm.dir.mu.Lock()
	allowed := dm.dir.allowedLocked()
	dm.dir.mu.Unlock()
	answer(dm.opts.Key, &introMsg{Dir: dm.dir.list(), Allowed: allowed})
}

// introduce runs one introduction with the candidate at addr.
func (dm *Daemon) introduce(ctx context.Context, addr netip.AddrPort) (*introMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	dm.dir.mu.Lock()
	self := dm.dir.nodes[dm.opts.Self]
	allowed := dm.dir.allowedLocked()
	dm.dir.mu.Unlock()
	b, err := seal(dm.opts.Key, &introMsg{V: introVersion, Self: &self, Allowed: allowed})
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxIntroLine), 4096).ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("no answer: %w", err)
	}
	m, err := open(dm.opts.Key, line, true)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// introPath is where a node's candidate answers introductions.
func introPath(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port+1) }

// candidateAddrs lists the other candidates' introduction addresses.
func (dm *Daemon) candidateAddrs() map[node.ID]netip.AddrPort {
	out := map[node.ID]netip.AddrPort{}
	for id, a := range dm.opts.Masters {
		if id != dm.opts.Self {
			out[id] = introPath(a, dm.opts.Port)
		}
	}
	return out
}

// introRound introduces this node to every other candidate once. It
// returns a fatal error for a permanent refusal (wrong key; not allowed
// by every candidate that answered), and the last error of each
// candidate that did not answer.
func (dm *Daemon) introRound(ctx context.Context) (answered int, fails map[node.ID]error, fatal error) {
	fails = map[node.ID]error{}
	refusedAllowed := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, a := range dm.candidateAddrs() {
		wg.Go(func() {
			m, err := dm.introduce(ctx, a)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, errBadMAC):
				fatal = fmt.Errorf("master n%d at %v answered with a different cluster key (check the key file)", id, a.Addr())
			case err != nil:
				fails[id] = err
			case m.Refusal == "key":
				fatal = fmt.Errorf("master n%d at %v refused us: the cluster key does not match (check the key file)", id, a.Addr())
			case m.Refusal == "allowed":
				answered++
				refusedAllowed++
				fails[id] = errors.New(m.Error)
			case m.Error != "":
				answered++
				fails[id] = errors.New(m.Error)
			default:
				answered++
				dm.dir.merge(m.Dir, m.Allowed)
			}
		})
	}
	wg.Wait()
	if fatal == nil && refusedAllowed > 0 && refusedAllowed == answered {
		fatal = fmt.Errorf("refused by the masters: node %d is not in the cluster's allowed list", dm.opts.Self)
	}
	return answered, fails, fatal
}

// statePath is the directory's cache file.
func statePath(dir string) string { return filepath.Join(dir, "directory.json") }
