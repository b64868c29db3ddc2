package rexec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Service names on ICS. They are part of the wire protocol: a node only
// talks to nodes that use the same names and encodings.
const (
	svcStart = "rexec.start" // client -> server call, answered with the exit status
	svcIn    = "rexec.in"    // client -> server call: a stdin chunk, stdin EOF or a signal
	svcOut   = "rexec.out"   // server -> client call: a stdout or stderr chunk
	svcLoad  = "rexec.load"  // client -> server call, answered with the load
)

// wireVersion leads the start request and the exit reply, so that a
// future change is refused with a clear error rather than misread.
const wireVersion = 1

// Bounds of the protocol. Both ends check them: a sender never exceeds
// them, and a receiver treats a message that does as a protocol error.
const (
	// ChunkSize is the largest stdin or output chunk.
	ChunkSize = 32 << 10
	// OutputWindow bounds the output bytes of one session that the server
	// has read from the process and the client has not yet consumed.
	OutputWindow = 256 << 10
	// OutputChunks bounds the output chunks of one session in flight
	// likewise (OutputWindow / ChunkSize), so that tiny writes cannot
	// pile up calls either.
	OutputChunks = OutputWindow / ChunkSize
	// StdinWindow bounds the stdin bytes of one session sent by the
	// client and not yet written to the process.
	StdinWindow = 128 << 10
	// StdinChunks bounds the stdin chunks of one session in flight, so
	// that keystroke-sized writes are bounded as well as bytes.
	StdinChunks = 8
	// SignalsInFlight bounds the signals of one session sent and not yet
	// delivered; more are coalesced on the client, as the kernel does with
	// pending standard signals.
	SignalsInFlight = 4

	maxArgs      = 4096      // argv entries, and environment entries
	maxString    = 128 << 10 // one argument, variable or directory
	maxStartSize = 1 << 20   // a whole start request
	maxErrText   = 4096      // the error text of an exit status
	maxSignal    = 64        // SIGRTMAX on Linux
)

// errDecode is wrapped by every decoding error.
var errDecode = errors.New("rexec: bad message")

// reader decodes strictly: every varint must be minimal, every length
// within its bound, and nothing may follow the last field.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{errDecode}, args...)...)
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	if n != uvarintLen(v) {
		r.fail("non-minimal varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	u := r.uvarint()
	// Zigzag, as binary.PutVarint writes it.
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

func (r *reader) bytes(limit int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(r.b)) {
		r.fail("length %d out of bounds", n)
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

func (r *reader) string(limit int) string { return string(r.bytes(limit)) }

func (r *reader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func putString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// startMsg is the start request: run Argv, with Env added to the server's
// environment, in Dir (empty: the server's default), as session ID of the
// calling incarnation.
type startMsg struct {
	ID   uint64
	Argv []string
	Env  []string
	Dir  string
}

// check validates a start request; it is shared by the client (before
// sending) and the decoder (after receiving).
func (m *startMsg) check() error {
	switch {
	case m.ID == 0:
		return fmt.Errorf("%w: session id 0", errDecode)
	case len(m.Argv) == 0 || m.Argv[0] == "":
		return fmt.Errorf("%w: empty command", errDecode)
	case len(m.Argv) > maxArgs || len(m.Env) > maxArgs:
		return fmt.Errorf("%w: more than %d arguments or variables", errDecode, maxArgs)
	case len(m.Dir) > maxString || strings.IndexByte(m.Dir, 0) >= 0:
		return fmt.Errorf("%w: bad directory", errDecode)
	}
	for _, a := range m.Argv {
		if len(a) > maxString || strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("%w: bad argument %.40q", errDecode, a)
		}
	}
	for _, e := range m.Env {
		if len(e) > maxString || strings.IndexByte(e, 0) >= 0 || strings.IndexByte(e, '=') <= 0 {
			return fmt.Errorf("%w: bad environment entry %.40q (want NAME=value)", errDecode, e)
		}
	}
	return nil
}

func (m *startMsg) encode() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b := []byte{wireVersion}
	b = binary.AppendUvarint(b, m.ID)
	b = binary.AppendUvarint(b, uint64(len(m.Argv)))
	for _, a := range m.Argv {
		b = putString(b, a)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Env)))
	for _, e := range m.Env {
		b = putString(b, e)
	}
	b = putString(b, m.Dir)
	if len(b) > maxStartSize {
		return nil, fmt.Errorf("%w: start request of %d bytes (max %d)", errDecode, len(b), maxStartSize)
	}
	return b, nil
}

func decodeStart(b []byte) (startMsg, error) {
	var m startMsg
	if len(b) > maxStartSize {
		return m, fmt.Errorf("%w: start request of %d bytes", errDecode, len(b))
	}
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != wireVersion {
		return m, fmt.Errorf("%w: protocol version %d, want %d", errDecode, v, wireVersion)
	}
	m.ID = r.uvarint()
	list := func() []string {
		n := r.uvarint()
		if n > maxArgs {
			r.fail("%d list entries", n)
			return nil
		}
		var out []string
		for range n {
			if r.err != nil {
				return nil
			}
			out = append(out, r.string(maxString))
		}
		return out
	}
	m.Argv = list()
	m.Env = list()
	m.Dir = r.string(maxString)
	if err := r.end(); err != nil {
		return startMsg{}, err
	}
	if err := m.check(); err != nil {
		return startMsg{}, err
	}
	return m, nil
}

// errKind says why an exit status carries an error; the client maps it
// back to the package's sentinel errors.
type errKind uint8

const (
	kindNone errKind = iota
	kindStart
	kindBusy
	kindClosed
	kindProtocol
	numKinds
)

// exitMsg is the reply to the start call: the exit status, sent only
// once every output chunk has been consumed by the client.
type exitMsg struct {
	Kind   errKind
	Code   int32
	Signal string // "" or a signal name ("SIGINT")
	Text   string // the error's text when Kind != kindNone
}

func (m *exitMsg) encode() []byte {
	b := []byte{wireVersion, byte(m.Kind)}
	b = binary.AppendVarint(b, int64(m.Code))
	b = putString(b, m.Signal)
	return putString(b, m.Text)
}

func decodeExit(b []byte) (exitMsg, error) {
	var m exitMsg
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != wireVersion {
		return m, fmt.Errorf("%w: protocol version %d, want %d", errDecode, v, wireVersion)
	}
	m.Kind = errKind(r.byte())
	code := r.varint()
	m.Signal = r.string(16)
	m.Text = r.string(maxErrText)
	if err := r.end(); err != nil {
		return exitMsg{}, err
	}
	switch {
	case m.Kind >= numKinds:
		return exitMsg{}, fmt.Errorf("%w: error kind %d", errDecode, m.Kind)
	case code < math.MinInt32 || code > math.MaxInt32:
		return exitMsg{}, fmt.Errorf("%w: exit code %d", errDecode, code)
	case m.Signal != "" && signalNum(m.Signal) == 0:
		return exitMsg{}, fmt.Errorf("%w: signal %q", errDecode, m.Signal)
	case (m.Kind == kindNone) != (m.Text == ""):
		return exitMsg{}, fmt.Errorf("%w: error text and kind disagree", errDecode)
	case !utf8.ValidString(m.Text):
		return exitMsg{}, fmt.Errorf("%w: error text not UTF-8", errDecode)
	}
	m.Code = int32(code)
	return m, nil
}

// inKind is what a client -> server message carries.
type inKind uint8

const (
	inData   inKind = 1 + iota // a stdin chunk
	inEOF                      // stdin is over
	inSignal                   // a signal for the process group
)

// inMsg is a stdin chunk, stdin EOF, or a signal, for session ID.
type inMsg struct {
	Kind   inKind
	ID     uint64
	Data   []byte         // inData: 1..ChunkSize bytes
	Signal syscall.Signal // inSignal: 1..64
}

func (m *inMsg) encode() []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(m.Data))
	b = append(b, byte(m.Kind))
	b = binary.AppendUvarint(b, m.ID)
	switch m.Kind {
	case inData:
		b = append(b, m.Data...)
	case inSignal:
		b = binary.AppendUvarint(b, uint64(m.Signal))
	}
	return b
}

func decodeIn(b []byte) (inMsg, error) {
	var m inMsg
	r := reader{b: b}
	m.Kind = inKind(r.byte())
	m.ID = r.uvarint()
	if r.err == nil && m.ID == 0 {
		r.fail("session id 0")
	}
	switch m.Kind {
	case inData:
		if r.err == nil && (len(r.b) == 0 || len(r.b) > ChunkSize) {
			r.fail("stdin chunk of %d bytes", len(r.b))
		}
		if r.err == nil {
			m.Data, r.b = r.b, nil
		}
	case inEOF:
	case inSignal:
		s := r.uvarint()
		if r.err == nil && (s == 0 || s > maxSignal) {
			r.fail("signal %d", s)
		}
		m.Signal = syscall.Signal(s)
	default:
		r.fail("kind %d", m.Kind)
	}
	if err := r.end(); err != nil {
		return inMsg{}, err
	}
	return m, nil
}

// Stream names an output stream.
type Stream uint8

// The output streams.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

// outMsg is one output chunk of session ID.
type outMsg struct {
	Stream Stream
	ID     uint64
	Data   []byte // 1..ChunkSize bytes
}

func (m *outMsg) encode() []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(m.Data))
	b = append(b, byte(m.Stream))
	b = binary.AppendUvarint(b, m.ID)
	return append(b, m.Data...)
}

func decodeOut(b []byte) (outMsg, error) {
	var m outMsg
	r := reader{b: b}
	m.Stream = Stream(r.byte())
	m.ID = r.uvarint()
	switch {
	case r.err != nil:
	case m.Stream != Stdout && m.Stream != Stderr:
		r.fail("stream %d", m.Stream)
	case m.ID == 0:
		r.fail("session id 0")
	case len(r.b) == 0 || len(r.b) > ChunkSize:
		r.fail("output chunk of %d bytes", len(r.b))
	default:
		m.Data, r.b = r.b, nil
	}
	if err := r.end(); err != nil {
		return outMsg{}, err
	}
	return m, nil
}

// The load reply is an IEEE 754 float64, big-endian: finite and >= 0.
func encodeLoad(l float64) []byte { return binary.BigEndian.AppendUint64(nil, math.Float64bits(l)) }

func decodeLoad(b []byte) (float64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: load of %d bytes", errDecode, len(b))
	}
	l := math.Float64frombits(binary.BigEndian.Uint64(b))
	if math.IsNaN(l) || math.IsInf(l, 0) || l < 0 || (l == 0 && math.Signbit(l)) {
		return 0, fmt.Errorf("%w: load %v", errDecode, l)
	}
	return l, nil
}

// signalName names a signal as the exit status does ("SIGINT"; signals
// without a name, the real-time ones, as "SIG40").
func signalName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	if s >= 1 && s <= maxSignal {
		return fmt.Sprintf("SIG%d", int(s))
	}
	return ""
}

// signalNum is the inverse of signalName; 0 if name is none of them.
func signalNum(name string) syscall.Signal {
	for s := syscall.Signal(1); s <= maxSignal; s++ {
		if signalName(s) == name {
			return s
		}
	}
	return 0
}
