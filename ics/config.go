package ics

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/clusterinfra/ci/ics/wire"
	"github.com/clusterinfra/ci/node"
)

// Channel is one of the fixed set of channels between every pair of
// nodes. Each has its own bounded queues and flow control, and channels
// are drained in priority order: a lower number always goes first, so
// urgent traffic never waits behind bulk traffic (beyond one chunk).
// Messages stay in order within a channel, not across channels.
type Channel uint8

// The channels, highest priority first.
const (
	// ChanUrgent carries membership traffic and cancellations.
	ChanUrgent Channel = iota
	// ChanReply carries replies. Replies are never throttled by the
	// receiver: they complete calls, whose number is already bounded.
	ChanReply
	// ChanNested carries calls made while serving another call. Raising
	// them above ChanNormal is what keeps throttling from deadlocking a
	// server that calls another server (as OpenSSI's ICS did).
	ChanNested
	// ChanNormal is the default for calls and messages.
	ChanNormal
	// ChanBulk carries large transfers; its chunks yield to every other
	// channel.
	ChanBulk
	// NumChannels is the number of channels.
	NumChannels
)

var chanNames = [NumChannels]string{"urgent", "reply", "nested", "normal", "bulk"}

func (c Channel) String() string {
	if c < NumChannels {
		return chanNames[c]
	}
	return fmt.Sprintf("Channel(%d)", uint8(c))
}

// Config tunes an Endpoint. Zero fields take the defaults in their
// comments.
type Config struct {
	// Keyring authenticates every frame. Required.
	Keyring *wire.Keyring
	// Entropy, if set, supplies half of each incarnation's sealing salt
	// (the other half is the wall clock; see Endpoint.newSealer).
	// Daemons pass crypto/rand.Reader, so that two processes started as
	// the same node at the same instant (a restored VM snapshot) still
	// seal under different subkeys; the simulator leaves it nil, so its
	// runs replay byte for byte.
	Entropy io.Reader
	// QueueMsgs bounds the messages waiting to be sent to one peer on one
	// channel (default 1024). A full queue throttles senders.
	QueueMsgs int
	// QueueBytes bounds the bytes waiting likewise (default 64 MiB). A
	// message larger than this is accepted when the queue is empty.
	QueueBytes int
	// Window is how many frames one peer may have in flight on one channel
	// before it hears that the receiver consumed them (default 256). It is
	// also the bound of the receiver's queue for that channel.
	Window int
	// MaxMessage is the largest message (default 64 MiB).
	MaxMessage int
	// ChunkSize is the largest frame payload; larger messages travel out
	// of line as several chunks, interleaved with other traffic
	// (default 64 KiB).
	ChunkSize int
	// LowWater is how full a stream's send buffer may be before the
	// endpoint stops writing to it and keeps frames in its own priority
	// queues (default 128 KiB, two bulk chunks). Keeping the transport's
	// buffer shallow is what lets urgent frames overtake bulk ones: a
	// small call queued behind a bulk transfer waits for what is already
	// in the stream.
	LowWater int
	// AckDelay is how long a receiver may sit on an acknowledgement
	// (default 20ms). An acknowledgement only lets the sender free frames
	// it keeps for resending and returns window credit; it delays no
	// delivery. A receiver owing Window/4 frames acknowledges at once, so
	// a busy sender never waits for this timer, and a quiet one waits no
	// longer than this (well within FailoverAfter). Every timer and ack
	// costs the receiver, the sender and the network, so fewer are
	// cheaper (as TCP's delayed ACK of 40ms has it).
	AckDelay time.Duration
	// FailoverAfter is how long the oldest unacknowledged frame may wait
	// on a path before the endpoint moves the session to another path
	// (default 500ms).
	FailoverAfter time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between connection
	// attempts on one path (defaults 50ms and 2s).
	ReconnectMin, ReconnectMax time.Duration
	// MaxServing bounds the calls one service serves at once; more wait in
	// their channel's queue (default 1024).
	MaxServing int
	// Incarnation is the endpoint's first incarnation (default
	// uint64(env.Boot()) << 20: restarts and rejoins both move it up).
	Incarnation uint64
	// OnCall, if set, is told when a call starts and when it completes,
	// for checkers outside the node (no call may hang, none may complete
	// twice).
	OnCall func(CallEvent)
}

// CallEvent reports a call starting or completing.
type CallEvent struct {
	Done    bool // false: started; true: completed (Err says how)
	ID      uint64
	Peer    node.ID
	PeerInc uint64 // the incarnation it was sent to, 0 if not yet known
	Err     error
}

func (c *Config) fill() error {
	if c.Keyring == nil {
		return fmt.Errorf("%w: no keyring", ErrConfig)
	}
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.QueueMsgs, 1024)
	def(&c.QueueBytes, 64<<20)
	def(&c.Window, 256)
	def(&c.MaxMessage, 64<<20)
	def(&c.ChunkSize, 64<<10)
	def(&c.LowWater, 128<<10)
	def(&c.MaxServing, 1024)
	defd := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	defd(&c.AckDelay, 20*time.Millisecond)
	defd(&c.FailoverAfter, 500*time.Millisecond)
	defd(&c.ReconnectMin, 50*time.Millisecond)
	defd(&c.ReconnectMax, 2*time.Second)
	if c.ChunkSize > wire.MaxPayload-64 {
		return fmt.Errorf("%w: chunk size %d too large", ErrConfig, c.ChunkSize)
	}
	if c.MaxMessage > 1<<31 {
		return fmt.Errorf("%w: max message %d too large", ErrConfig, c.MaxMessage)
	}
	return nil
}

// Errors returned by ICS. Calls complete with exactly one of these (or
// a *RemoteError, or nil).
var (
	ErrConfig       = errors.New("ics: bad configuration")
	ErrNodeDown     = errors.New("ics: node down")
	ErrThrottled    = errors.New("ics: channel full")
	ErrCanceled     = errors.New("ics: call canceled")
	ErrNoService    = errors.New("ics: no such service")
	ErrTooLarge     = errors.New("ics: message too large")
	ErrBadPeer      = errors.New("ics: no such peer")
	ErrClosed       = errors.New("ics: endpoint closed")
	ErrTimeout      = errors.New("ics: call timed out")
	ErrBadChannel   = errors.New("ics: no such channel")
	ErrDuplicateSvc = errors.New("ics: service already registered")
	ErrCodec        = errors.New("ics: cannot encode or decode")
)

// RemoteError is an error returned by the remote handler.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return "ics: remote: " + e.Msg }
