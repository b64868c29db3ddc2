package host

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/clusterinfra/ci/node"
)

// Defaults of the Config fields left at zero.
const (
	DefaultStreamTimeout = 10 * time.Second
	DefaultStreamBuffer  = 4 << 20
	DefaultMaxMessage    = 64<<20 + 64<<10
	DefaultInbox         = 4096
	DefaultInboxBytes    = 64 << 20
)

// maxPaths bounds Listen: a path number travels in one byte on the wire.
const maxPaths = 255

// maxFrame is the largest length a frame header may carry; the value above
// it is the end-of-stream marker (see stream.go).
const maxFrame = 1<<31 - 1

// Config sets up a Node. The zero value of every optional field has the
// default given in its comment.
type Config struct {
	// Self is this node's number.
	Self node.ID
	// Listen holds one local address per path: path i's TCP listener and
	// UDP socket are both bound to Listen[i], on the same port. Port 0
	// picks a free port (see Node.Addrs). A specific IP also pins the
	// source address of outgoing connections on that path, so that each
	// path really uses its own interconnect.
	Listen []netip.AddrPort
	// Peers holds, for each other node, one address per path: Peers[p][i]
	// is where node p listens on path i and pairs with Listen[i]. A peer
	// may have fewer paths than Listen, never more. Self may appear (so
	// one map can describe the whole cluster); datagrams to it loop back,
	// but a stream to itself is refused, as in the simulator. Peers can be
	// replaced later with SetPeers.
	Peers map[node.ID][]netip.AddrPort
	// StateDir is the node's stable storage directory, created if
	// missing. It holds the boot counter and the Storage files, and is
	// locked while the Node runs so that two processes never share it.
	StateDir string
	// StreamTimeout bounds a connection attempt (connect and handshake)
	// and is the TCP_USER_TIMEOUT of every stream: data unacknowledged for
	// this long breaks the stream with node.ErrStreamTimeout (default
	// 10s, as in the simulator).
	StreamTimeout time.Duration
	// StreamBuffer is each stream's send buffer in bytes (each message
	// counts its length plus a 4-byte frame header): a Send that would
	// take it past this fails with node.ErrStreamFull, unless the buffer
	// is empty (default 4 MiB). StreamWritable follows once the writer
	// has handed some of it to the kernel.
	StreamBuffer int
	// MaxMessage is the largest stream message, sent or received; a
	// larger incoming frame breaks the stream (default 64 MiB + 64 KiB).
	MaxMessage int
	// Inbox bounds the event loop's queue (default 4096). When it is
	// full, stream readers wait (TCP pushes back on the sender) and
	// datagrams are dropped and counted in Stats.
	Inbox int
	// InboxBytes bounds the payload bytes (stream messages and
	// datagrams) waiting in the inbox, so that large messages cannot
	// multiply Inbox into gigabytes (default 64 MiB). A stream message
	// larger than the bound still passes when nothing else waits.
	InboxBytes int
	// Logger receives the node's log and, at debug level, Env.Trace
	// (default: discard everything).
	Logger *slog.Logger
}

// Errors of the host runtime's own API.
var (
	// ErrConfig wraps every configuration problem Start or SetPeers finds.
	ErrConfig = errors.New("host: bad config")
	// ErrClosed is returned by calls into a Node after Close.
	ErrClosed = errors.New("host: node closed")
	// ErrStateDirLocked says another running Node (in this process or
	// another) holds the state directory.
	ErrStateDirLocked = errors.New("host: state directory in use")
)

// withDefaults validates c and returns a copy with every default filled
// in and Peers deep-copied, so that the caller may reuse its maps.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, a ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
	}
	if !c.Self.Valid() {
		return bad("Self %d is not a valid node number (1-%d)", uint32(c.Self), uint32(node.MaxID))
	}
	if len(c.Listen) == 0 {
		return bad("no Listen address (need one per path)")
	}
	if len(c.Listen) > maxPaths {
		return bad("%d Listen addresses, at most %d paths", len(c.Listen), maxPaths)
	}
	seen := map[netip.AddrPort]bool{}
	for i, a := range c.Listen {
		if !a.IsValid() {
			return bad("Listen[%d] is not a valid address", i)
		}
		if a.Port() != 0 && seen[a] {
			return bad("Listen[%d] %v appears twice", i, a)
		}
		seen[a] = true
	}
	if c.StateDir == "" {
		return bad("StateDir is empty")
	}
	switch {
	case c.StreamTimeout < 0:
		return bad("negative StreamTimeout %v", c.StreamTimeout)
	case c.StreamTimeout == 0:
		c.StreamTimeout = DefaultStreamTimeout
	case c.StreamTimeout < time.Millisecond:
		return bad("StreamTimeout %v is below TCP_USER_TIMEOUT's 1ms resolution", c.StreamTimeout)
	}
	switch {
	case c.StreamBuffer < 0:
		return bad("negative StreamBuffer %d", c.StreamBuffer)
	case c.StreamBuffer == 0:
		c.StreamBuffer = DefaultStreamBuffer
	}
	switch {
	case c.MaxMessage < 0:
		return bad("negative MaxMessage %d", c.MaxMessage)
	case c.MaxMessage == 0:
		c.MaxMessage = DefaultMaxMessage
	case c.MaxMessage > maxFrame:
		return bad("MaxMessage %d exceeds the frame limit %d", c.MaxMessage, maxFrame)
	}
	switch {
	case c.Inbox < 0:
		return bad("negative Inbox %d", c.Inbox)
	case c.Inbox == 0:
		c.Inbox = DefaultInbox
	}
	switch {
	case c.InboxBytes < 0:
		return bad("negative InboxBytes %d", c.InboxBytes)
	case c.InboxBytes == 0:
		c.InboxBytes = DefaultInboxBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	peers, err := checkPeers(c.Peers, len(c.Listen))
	if err != nil {
		return Config{}, err
	}
	c.Peers = peers
	c.Listen = slices.Clone(c.Listen)
	return c, nil
}

// checkPeers validates a peer map against the number of local paths and
// returns a deep copy of it.
func checkPeers(peers map[node.ID][]netip.AddrPort, paths int) (map[node.ID][]netip.AddrPort, error) {
	out := make(map[node.ID][]netip.AddrPort, len(peers))
	for _, id := range slices.Sorted(maps.Keys(peers)) {
		addrs := peers[id]
		if !id.Valid() {
			return nil, fmt.Errorf("%w: peer %d is not a valid node number", ErrConfig, uint32(id))
		}
		if len(addrs) == 0 || len(addrs) > paths {
			return nil, fmt.Errorf("%w: peer %v has %d addresses, want 1 to %d (one per path)", ErrConfig, id, len(addrs), paths)
		}
		for i, a := range addrs {
			if !a.IsValid() || a.Port() == 0 || a.Addr().IsUnspecified() {
				return nil, fmt.Errorf("%w: peer %v path %d: %v is not a reachable address", ErrConfig, id, i, a)
			}
		}
		out[id] = slices.Clone(addrs)
	}
	return out, nil
}
