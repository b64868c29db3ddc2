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
