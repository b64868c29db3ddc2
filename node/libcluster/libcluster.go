// Package libcluster is the client of clusterd's local control API: what
// OpenSSI's libcluster gave programs (membership, transitions, node
// info, node state), plus the daemon's commands (leave, online add) and
// the lab's hooks. The API is HTTP with JSON bodies on a Unix socket, so
// any program can use it, Go or not:
//
//	curl --unix-socket /run/clusterd.sock http://clusterd/v1/status
//
// The daemon side is package node/daemon; the types here are the wire
// format of both.
package libcluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// DefaultSocket is where clusterd listens unless told otherwise.
const DefaultSocket = "/run/clusterd.sock"

// Node is one node as a daemon's membership has it.
type Node struct {
	Node        int    `json:"node"`
	Name        string `json:"name"`
	State       string `json:"state"`
	Address     string `json:"address,omitempty"`
	Incarnation string `json:"incarnation,omitempty"` // boot.rejoins, "" if never admitted
	Master      bool   `json:"master,omitempty"`
}

// Status is a daemon's view of the cluster.
type Status struct {
	Cluster string `json:"cluster"`
	Self    int    `json:"self"`
	Name    string `json:"name"`
	Master  int    `json:"master"` // 0: none known
	Epoch   uint64 `json:"epoch"`
	Quorate bool   `json:"quorate"`
	Last    uint64 `json:"last"` // number of the last transition applied here
	Members []int  `json:"members"`
	Nodes   []Node `json:"nodes"`
}

// Transition is one entry of the membership history.
type Transition struct {
	Num    uint64    `json:"num"`
	Time   time.Time `json:"time"`
	Node   int       `json:"node"`
	Inc    string    `json:"incarnation"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Cause  string    `json:"cause"`
	Master int       `json:"master"`
	Epoch  uint64    `json:"epoch"`
	// Simple says the node entered or left the view (cluster_transition's
	// kind of transition).
	Simple bool `json:"simple"`
}

// NodeInfo describes one node (clusternode_info), with its hardware as
// the node itself reports it.
type NodeInfo struct {
	Node        int      `json:"node"`
	Name        string   `json:"name"`
	State       string   `json:"state"`
	Address     string   `json:"address,omitempty"`
	Incarnation string   `json:"incarnation,omitempty"`
	Since       uint64   `json:"since"`
	Master      bool     `json:"master"`
	CPUs        int      `json:"cpus"`
	MemoryMB    uint64   `json:"memory_mb"`
	Load        *float64 `json:"load,omitempty"` // 1-minute load per CPU, if the node answered
}

// AddRequest admits a new node online (the role of ssi-addnode): it joins
// the allowed list with its address.
type AddRequest struct {
	Node    int    `json:"node"`
	Address string `json:"address"`
	Name    string `json:"name,omitempty"`
}

// StateRequest sets a node's state (clusternode_setinfo).
type StateRequest struct {
	State string `json:"state"`
}

// ClockRequest shifts the daemon's clock (lab only).
type ClockRequest struct {
	OffsetNS int64 `json:"offset_ns"`
}

// LabEvent is one thing a node did that the lab's checker sees: a CLMS
// event (Kind "clms") or an ICS call event (Kind "call"). At is the
// host's wall clock in Unix nanoseconds when it happened; Boot is the
// daemon's boot counter.
type LabEvent struct {
	Kind string          `json:"kind"`
	At   int64           `json:"at"`
	Node int             `json:"node"`
	Boot uint64          `json:"boot"`
	CLMS json.RawMessage `json:"clms,omitempty"`
	Call *CallEvent      `json:"call,omitempty"`
}

// CallEvent is ics.CallEvent on the wire.
type CallEvent struct {
	Done    bool   `json:"done"`
	ID      uint64 `json:"id"`
	Peer    int    `json:"peer"`
	PeerInc uint64 `json:"peer_inc"`
	Err     string `json:"err,omitempty"`
}

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
}

// Client talks to one daemon.
type Client struct {
	network string
	socket  string // the address
	hc      *http.Client
}

// New makes a client of the daemon listening on socket.
func New(socket string) *Client { return Dial("unix", socket) }

// Dial makes a client of a daemon at addr on network ("unix" for the
// socket; "tcp" for the lab's API of clusterd -lab-api, on a VM).
func Dial(network, addr string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		DisableCompression: true,
		MaxIdleConns:       2,
	}
	return &Client{network: network, socket: addr, hc: &http.Client{Transport: tr}}
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// ErrNoDaemon says nothing listens on the socket.
var ErrNoDaemon = errors.New("libcluster: clusterd is not running")

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("libcluster: bad answer to %s %s: %w", method, path, err)
	}
	return nil
}

// request sends one request and returns the response of a 2xx answer;
// any other answer becomes an *APIError, with its body closed.
func (c *Client) request(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://clusterd"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.connErr(err)
	}
	if err := checkResp(resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

func (c *Client) connErr(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Errorf("%w (socket %s: %v)", ErrNoDaemon, c.socket, op.Err)
	}
	return fmt.Errorf("libcluster: %w", err)
}

func checkResp(resp *http.Response) error {
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var e Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return &APIError{Status: resp.StatusCode, Msg: e.Error}
}

// APIError is an error the daemon answered with.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

// Status is the daemon's view of the cluster (cluster_membership).
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, "GET", "/v1/status", nil, &s)
}

// Transitions lists the history after number after.
func (c *Client) Transitions(ctx context.Context, after uint64) ([]Transition, error) {
	var ts []Transition
	return ts, c.do(ctx, "GET", "/v1/transitions?after="+strconv.FormatUint(after, 10), nil, &ts)
}

// Info describes node n, asking the node itself for its hardware.
func (c *Client) Info(ctx context.Context, n int) (*NodeInfo, error) {
	var i NodeInfo
	return &i, c.do(ctx, "GET", "/v1/nodes/"+strconv.Itoa(n), nil, &i)
}

// SetState asks the master to move node n to state (UP, SHUTDOWN,
// GOINGDOWN).
func (c *Client) SetState(ctx context.Context, n int, state string) error {
	return c.do(ctx, "POST", "/v1/nodes/"+strconv.Itoa(n)+"/state", StateRequest{State: state}, nil)
}

// Leave makes the daemon leave the cluster cleanly and exit.
func (c *Client) Leave(ctx context.Context) error { return c.do(ctx, "POST", "/v1/leave", nil, nil) }

// Add admits a new node online.
func (c *Client) Add(ctx context.Context, r AddRequest) error {
	return c.do(ctx, "POST", "/v1/add", r, nil)
}

// Loads is the 1-minute load per CPU of every live member that answered.
func (c *Client) Loads(ctx context.Context) (map[int]float64, error) {
	var m map[string]float64
	if err := c.do(ctx, "GET", "/v1/loads", nil, &m); err != nil {
		return nil, err
	}
	out := map[int]float64{}
	for k, v := range m {
		n, err := strconv.Atoi(k)
		if err != nil {
			return nil, fmt.Errorf("libcluster: bad node %q in loads", k)
		}
		out[n] = v
	}
	return out, nil
}

// SetClockOffset shifts the daemon's clock (only with clusterd -lab).
func (c *Client) SetClockOffset(ctx context.Context, d time.Duration) error {
	return c.do(ctx, "POST", "/v1/lab/clock", ClockRequest{OffsetNS: int64(d)}, nil)
}

// Watch streams transitions after number after to f until ctx ends or f
// fails. Nothing is skipped: the daemon sends the history from after on,
// then each transition as it is applied.
func (c *Client) Watch(ctx context.Context, after uint64, f func(Transition) error) error {
	return c.stream(ctx, "/v1/watch?after="+strconv.FormatUint(after, 10), func(b []byte) error {
		var t Transition
		if err := json.Unmarshal(b, &t); err != nil {
			return fmt.Errorf("libcluster: bad transition in watch: %w", err)
		}
		return f(t)
	})
}

// LabEvents streams the daemon's lab events (only with clusterd -lab).
func (c *Client) LabEvents(ctx context.Context, f func(LabEvent) error) error {
	return c.stream(ctx, "/v1/lab/events", func(b []byte) error {
		var e LabEvent
		if err := json.Unmarshal(b, &e); err != nil {
			return fmt.Errorf("libcluster: bad lab event: %w", err)
		}
		return f(e)
	})
}

func (c *Client) stream(ctx context.Context, path string, line func([]byte) error) error {
	resp, err := c.request(ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		if err := line(sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("libcluster: %s: %w", path, err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("libcluster: %s: the daemon ended the stream", path)
}
