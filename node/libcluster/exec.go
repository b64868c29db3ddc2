package libcluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Remote execution (onnode). POST /v1/exec with an ExecRequest and the
// header Upgrade: ExecProtocol; on 101 the connection carries frames both
// ways: one kind byte, a big-endian u32 length, the payload. The tool
// sends ExecStdin, ExecStdinEOF and ExecSignal; the daemon sends
// ExecStdout, ExecStderr and, last, ExecExitFrame.

// ExecProtocol is the Upgrade token of an exec connection.
const ExecProtocol = "clusterd-exec/1"

// Frame kinds.
const (
	ExecStdin     byte = 1 // data for the command's standard input
	ExecStdinEOF  byte = 2 // standard input ends
	ExecSignal    byte = 3 // one byte: a signal number to deliver
	ExecStdout    byte = 4
	ExecStderr    byte = 5
	ExecExitFrame byte = 6 // JSON ExecExit; the last frame
)

// MaxExecFrame bounds a frame's payload.
const MaxExecFrame = 1 << 20

// ExecRequest says what to run where.
type ExecRequest struct {
	Node int      `json:"node"`
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
}

// ExecExit is how the command ended: Code as a shell reports it (128+n
// for signal n), or -1 with Error when it did not run to its end (its
// node went down, it could not start...).
type ExecExit struct {
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
	Error  string `json:"error,omitempty"`
}

// WriteExecFrame writes one frame.
func WriteExecFrame(w io.Writer, kind byte, data []byte) error {
	if len(data) > MaxExecFrame {
		return fmt.Errorf("libcluster: exec frame of %d bytes (max %d)", len(data), MaxExecFrame)
	}
	var h [5]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(data)))
	if _, err := w.Write(append(h[:], data...)); err != nil {
		return err
	}
	return nil
}

// ErrBadFrame says the peer broke the exec framing.
var ErrBadFrame = errors.New("libcluster: bad exec frame")

// ReadExecFrame reads one frame.
func ReadExecFrame(r *bufio.Reader) (kind byte, data []byte, err error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if h[0] < ExecStdin || h[0] > ExecExitFrame {
		return 0, nil, fmt.Errorf("%w: kind %d", ErrBadFrame, h[0])
	}
	if n > MaxExecFrame {
		return 0, nil, fmt.Errorf("%w: %d bytes (max %d)", ErrBadFrame, n, MaxExecFrame)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return h[0], data, nil
}

// ExecConn is a running remote command.
type ExecConn struct {
	conn net.Conn
	rd   *bufio.Reader
}

// Exec starts a command through the daemon. The caller then reads frames
// with Next and writes with Stdin, CloseStdin and Signal.
func (c *Client) Exec(ctx context.Context, req ExecRequest) (*ExecConn, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, c.network, c.socket)
	if err != nil {
		return nil, fmt.Errorf("%w (socket %s: %v)", ErrNoDaemon, c.socket, err)
	}
	hr, _ := http.NewRequest("POST", "http://clusterd/v1/exec", bytes.NewReader(body))
	hr.Header.Set("Connection", "Upgrade")
	hr.Header.Set("Upgrade", ExecProtocol)
	hr.Header.Set("Content-Type", "application/json")
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := hr.Write(conn); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("libcluster: exec: %w", err)
	}
	rd := bufio.NewReader(conn)
	resp, err := http.ReadResponse(rd, hr)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("libcluster: exec: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		if err := checkResp(resp); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("libcluster: exec: unexpected %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return &ExecConn{conn: conn, rd: rd}, nil
}

// Next reads the next frame from the daemon.
func (e *ExecConn) Next() (kind byte, data []byte, err error) { return ReadExecFrame(e.rd) }

// Stdin sends data to the command's standard input.
func (e *ExecConn) Stdin(p []byte) error {
	for len(p) > 0 {
		n := min(len(p), 32<<10)
		if err := WriteExecFrame(e.conn, ExecStdin, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// CloseStdin ends the command's standard input.
func (e *ExecConn) CloseStdin() error { return WriteExecFrame(e.conn, ExecStdinEOF, nil) }

// Signal delivers sig to the remote command.
func (e *ExecConn) Signal(sig int) error {
	if sig <= 0 || sig > 64 {
		return fmt.Errorf("libcluster: signal %d out of range", sig)
	}
	return WriteExecFrame(e.conn, ExecSignal, []byte{byte(sig)})
}

// Close drops the connection; the daemon then kills the command.
func (e *ExecConn) Close() error { return e.conn.Close() }
