//go:build !linux

package host

import (
	"os"
	"syscall"
	"time"
)

// setUserTimeout is a no-op where TCP_USER_TIMEOUT does not exist: there
// a stalled stream breaks only when the OS gives up retransmitting. The
// cluster runs on Linux; this file only keeps the package building for
// development elsewhere.
func setUserTimeout(syscall.RawConn, time.Duration) error { return nil }

// lockFileExclusive does not lock off Linux (see setUserTimeout).
func lockFileExclusive(*os.File) error { return nil }

// nbWriter writes nothing off Linux: every byte goes through the
// stream's writer goroutine (see sys_linux.go).
type nbWriter struct{}

func newNBWriter(syscall.RawConn) *nbWriter { return &nbWriter{} }

func (*nbWriter) Write([]byte) (int, error) { return 0, nil }

// setSockBuffers leaves the OS defaults off Linux.
func setSockBuffers(uintptr) error { return nil }
