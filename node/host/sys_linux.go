//go:build linux

package host

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT: the kernel breaks the connection
// (ETIMEDOUT) when sent data stays unacknowledged for d, instead of
// retransmitting for the ~15 minutes tcp_retries2 allows. That is what
// makes a stalled stream fail within StreamTimeout, as it does in the
// simulator.
func setUserTimeout(c syscall.RawConn, d time.Duration) error {
	ms := max(int(d/time.Millisecond), 1)
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
	})
	if err != nil {
		return err
	}
	return serr
}

// lockFileExclusive takes a non-blocking exclusive flock on f.
func lockFileExclusive(f *os.File) error {
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
}

// nbWriter writes as much of a buffer as a socket takes without
// waiting. It is made once per stream, so that a write allocates no
// closure.
type nbWriter struct {
	rc  syscall.RawConn
	b   []byte
	n   int
	err error
	f   func(fd uintptr) bool
}

func newNBWriter(rc syscall.RawConn) *nbWriter {
	w := &nbWriter{rc: rc}
	w.f = w.write
	return w
}

func (w *nbWriter) write(fd uintptr) bool {
	for w.n < len(w.b) {
		k, e := unix.Write(int(fd), w.b[w.n:])
		if k > 0 {
			w.n += k
		}
		if e == unix.EINTR {
			continue
		}
		if e != nil {
			if e != unix.EAGAIN {
				w.err = e
			}
			break
		}
		if k <= 0 {
			break
		}
	}
	return true // never wait: what is left goes to the writer goroutine
}

// Write writes what of b the socket takes now and reports how much that
// was. A full socket buffer is not an error.
func (w *nbWriter) Write(b []byte) (int, error) {
	w.b, w.n, w.err = b, 0, nil
	err := w.rc.Write(w.f)
	n, werr := w.n, w.err
	w.b, w.err = nil, nil
	if err != nil {
		return n, err
	}
	return n, werr
}

// setSockBuffers sizes a TCP socket's kernel buffers (see
// sockBufferBytes). Set on a listener, it is inherited by the connections
// it accepts; set before connect, it fixes the window scale to match.
func setSockBuffers(fd uintptr) error {
	if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sockBufferBytes); err != nil {
		return err
	}
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, sockBufferBytes)
}
