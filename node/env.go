package node

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// ID is a node number: the address of a node in the cluster. Node numbers
// start at 1; 0 means "no node". The upper bound is MaxID.
type ID uint32

// MaxID is the largest node number the infrastructure accepts. OpenSSI
// allowed 1-125; we go to 1024 so that the scale goals can be tested.
const MaxID ID = 1024

// Valid reports whether id is a usable node number.
func (id ID) Valid() bool { return id >= 1 && id <= MaxID }

// String formats a node number as the trace does ("n3").
func (id ID) String() string { return fmt.Sprintf("n%d", uint32(id)) }

// Boot counts the starts of one node: 1 for its first boot, then one more
// on every restart. ICS and CLMS use it to tell a restarted node from the
// one that ran before it, so that nothing sent by or meant for an old
// incarnation is ever delivered to a new one.
type Boot uint64

// Env is the one seam between node code and the world. Everything a node
// does that is not pure computation goes through it: the clock, timers,
// the network, randomness and stable storage. The simulator (package sim)
// and the real runtime each implement it.
//
// Concurrency contract: an Env calls into its node (the Handler and every
// timer callback) from one goroutine at a time, never concurrently, and
// node code calls the Env only from inside those callbacks. That is what
// lets the simulator run many nodes deterministically on one goroutine.
type Env interface {
	// Self is this node's number.
	Self() ID
	// Boot is this incarnation's boot count (1 on first boot).
	Boot() Boot
	// Clock gives time and timers.
	Clock() Clock
	// Net is the network: datagrams and streams to other nodes.
	Net() Network
	// Rand is this node's random source, derived from the run's seed in the
	// simulator. Node code must not use any other source of randomness.
	Rand() *rand.Rand
	// Storage is stable storage that survives a crash once synced.
	Storage() Storage
	// Trace records a line of node-level detail in the run's trace. In the
	// simulator it is part of the digest; the real runtime logs it at debug
	// level. Keep it cheap: callers should check Tracing first when
	// formatting is costly.
	Trace(msg string)
	// Tracing reports whether Trace output is being kept anywhere.
	Tracing() bool
	// Alloc makes a zeroed buffer of size bytes and hands it to f, on
	// the node's goroutine: before Alloc returns, or later from a
	// callback of its own. f is not called if the node stops first.
	// It exists for buffers of many megabytes (ICS reassembling a large
	// message): Go zeroes what it allocates, milliseconds for tens of
	// megabytes, and a node making one inside a callback holds up every
	// other callback, however urgent, for that long. The real runtime
	// makes large ones on another goroutine; the simulator, where time
	// does not pass, calls f at once.
	Alloc(size int, f func([]byte))
}

// Clock is a node's view of time. Both clocks run at the node's own rate,
// which may drift from true time; the wall clock may also be stepped.
type Clock interface {
	// Now is monotonic time since this incarnation booted. It never goes
	// backwards and is not affected by wall-clock steps.
	Now() time.Duration
	// Wall is the node's wall-clock time. It may jump (for example when an
	// operator or NTP steps it) and differs between nodes.
	Wall() time.Time
	// AfterFunc calls f once, on the node's goroutine, when d has passed on
	// the monotonic clock. A d <= 0 fires as soon as possible, after the
	// current callback returns. The returned Timer can cancel it.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop cancels the call. It reports whether the call was still pending
	// (false if it had already fired or been stopped).
	Stop() bool
}

// Network is the node's access to the interconnect. A peer may be
// reachable over several paths (the seed's ICS_ROUTE and dual
// interconnects); paths are numbered from 0 and each is an independent
// link that can fail on its own.
type Network interface {
	// Paths is the number of paths to peer (at least 1 for any valid peer).
	Paths(peer ID) int
	// SendDatagram sends one unreliable datagram: it may be lost,
	// duplicated, delayed or reordered, and nobody is told. It returns an
	// error only for misuse (a payload larger than MaxDatagram, an unknown
	// peer or path); a network fault is never an error here.
	SendDatagram(peer ID, path int, payload []byte) error
	// Dial opens a reliable, ordered, message-framed stream to peer over
	// path. It returns at once; the Handler is told StreamOpened when the
	// connection is established or StreamClosed if it fails.
	Dial(peer ID, path int) (Stream, error)
}

// MaxDatagram is the largest datagram payload a Network accepts. It fits
// in one UDP datagram on a real host.
const MaxDatagram = 60 * 1024

// Stream is one end of a reliable, ordered connection that carries whole
// messages, like a TCP connection with length-prefixed framing. It stays
// ordered, stalls while the path is cut, and breaks (StreamClosed with an
// error) if a stall lasts too long or the far end restarts.
type Stream interface {
	// Peer is the node at the other end.
	Peer() ID
	// Path is the path this stream runs over.
	Path() int
	// Send queues msg for delivery after everything sent before it. It
	// never blocks: if the stream's send buffer is full it returns
	// ErrStreamFull and the caller must wait for StreamWritable. After the
	// stream has closed it returns ErrStreamClosed. The stream keeps its
	// own copy of msg.
	Send(msg []byte) error
	// Buffered is the number of bytes queued and not yet acknowledged.
	Buffered() int
	// Backlogged reports whether Buffered() is at least mark. If it is,
	// one StreamWritable follows once Buffered() drops below mark. A
	// sender uses it to keep the stream's buffer shallower than the point
	// where Send refuses (so that urgent messages it holds back can still
	// overtake bulk ones) without polling, and without a race between its
	// look at Buffered() and the stream draining.
	Backlogged(mark int) bool
	// Close closes the stream. Messages already queued are still
	// delivered if the connection holds; the peer then sees StreamClosed
	// with a nil error. The local Handler is not told.
	Close()
	// Release gives back a message that StreamMessage delivered on this
	// stream, once the Handler keeps no reference to it or to anything
	// sliced from it; the stream may then reuse its memory for a later
	// message. Calling it is optional (what is not given back is garbage
	// collected) and it may be called after the stream has closed. A
	// message released twice, or used after it is released, is a bug in
	// the Handler: the simulator overwrites what is released, so that
	// such a bug shows in simulated tests as corrupted data.
	//
	// It exists for bulk transfers: the real runtime's reader made, and
	// the runtime zeroed, a new buffer for every chunk it read, which
	// was a tenth of a transfer's CPU time besides the garbage.
	Release(msg []byte)
}

// Handler is what an Env calls when something happens to the node. A
// fresh Handler is made for every incarnation (see Factory): a crash loses
// everything that was in memory.
type Handler interface {
	// Start is the first call of an incarnation. Node code keeps env.
	Start(env Env)
	// Datagram delivers a datagram from peer, received over path.
	Datagram(peer ID, path int, payload []byte)
	// StreamOpened says that s is usable: an outgoing Dial completed, or a
	// peer connected to us (then s was not dialled here).
	StreamOpened(s Stream)
	// StreamMessage delivers the next message received on s. The callee
	// owns msg.
	StreamMessage(s Stream, msg []byte)
	// StreamWritable says that s, which refused a Send with ErrStreamFull
	// or reported Backlogged, has room again.
	StreamWritable(s Stream)
	// StreamClosed says that s is finished: err is nil after the peer
	// closed it cleanly, or says why it broke. No call about s follows.
	StreamClosed(s Stream, err error)
}

// Factory makes the Handler for one incarnation of node id.
type Factory func(id ID, boot Boot) Handler

// Storage is a node's stable storage: a small key-value store. Writes are
// volatile until Sync returns; a crash loses every write since the last
// Sync. Ordering duty for protocol code: persist and Sync before sending
// anything that depends on the write (a vote, a term, a log entry).
type Storage interface {
	// Get returns the value of key, as last written, synced or not.
	Get(key string) (val []byte, ok bool, err error)
	// Put sets key to val. The store keeps its own copy.
	Put(key string, val []byte) error
	// Delete removes key.
	Delete(key string) error
	// Keys lists every key in sorted order.
	Keys() ([]string, error)
	// Sync makes every write so far survive a crash.
	Sync() error
}

// Errors returned through the Env. Network faults are never reported as
// errors from a send; they show up as lost datagrams and broken streams.
var (
	ErrStreamFull    = errors.New("node: stream send buffer full")
	ErrStreamClosed  = errors.New("node: stream closed")
	ErrStreamTimeout = errors.New("node: stream timed out (peer unreachable)")
	ErrStreamReset   = errors.New("node: stream reset by peer")
	ErrUnreachable   = errors.New("node: peer unreachable")
	ErrBadPeer       = errors.New("node: no such peer or path")
	ErrTooLarge      = errors.New("node: message too large")
)
