// Command vminit is /init of the VM lab's guests (package vm builds it
// into the initramfs). As PID 1 of a stock Debian cloud kernel it mounts
// /proc, /sys and /dev, loads the virtio modules listed in
// /modules.order, mounts the VM's own disk (/dev/vda, ext4) as clusterd's
// state directory, brings up eth0 with the node's address, answers the
// lab's clock probes on UDP port vm.TimePort, and runs clusterd with the
// arguments the lab put on the kernel command line. When clusterd exits
// (a leave, a failure), it syncs and powers the machine off, so the lab
// sees the VM end.
//
// The whole configuration is one kernel parameter, ci.cfg=BASE64(JSON of
// vm.GuestConfig). With ci.cfg's Mode "poweroff" it powers off at once:
// the lab's bare-boot baseline.
//
// It is built with CGO_ENABLED=0 and depends on nothing in the guest.
package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/clusterinfra/ci/vm/guest"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "vminit: not PID 1; this is the VM lab's guest init, not a program to run by hand")
		os.Exit(2)
	}
	err := run()
	logf("fatal: %v", err)
	halt()
}

// logf writes a line to the console, stamped like the kernel's own lines
// with the guest's uptime (CLOCK_BOOTTIME), so that a slow boot shows
// which step took the time.
func logf(format string, args ...any) {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	fmt.Fprintf(os.Stderr, "[%5d.%06d] vminit: "+format+"\n", append([]any{ts.Sec, ts.Nsec / 1000}, args...)...)
}

// halt syncs the disks and powers off; PID 1 must never return.
func halt() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	for {
		time.Sleep(time.Hour)
	}
}

func run() error {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	cfg, err := guest.ParseCmdline(string(cmdline))
	if err != nil {
		return err
	}
	if cfg.Mode == guest.ModePoweroff {
		logf("poweroff mode: up, powering off")
		halt()
	}
	logf("init started, guest clock %s", time.Now().UTC().Format(time.RFC3339Nano))
	if err := loadModules("/modules.order"); err != nil {
		return err
	}
	logf("modules loaded")
	if err := mountState(cfg); err != nil {
		return err
	}
	logf("state mounted")
	if err := network(cfg); err != nil {
		return err
	}
	logf("network up")
	go timeServer(cfg)
	return supervise(cfg)
}

// loadModules loads each module named in order (one file name a line,
// dependencies first, as the image builder sorted them).
func loadModules(order string) error {
	b, err := os.ReadFile(order)
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(b)) {
		f, err := os.Open(filepath.Join("/lib/modules", name))
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("load module %s: %w", name, err)
		}
	}
	return nil
}

// mountState mounts the VM's disk, which the lab formatted, at the
// daemon's state directory. The disk appears a moment after virtio_blk
// loads: wait for it, but not forever.
func mountState(cfg *guest.Config) error {
	if err := os.MkdirAll(guest.StateDir, 0o700); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat("/dev/vda"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no /dev/vda after 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// data=journal would be safer still, but clusterd fsyncs what it
	// must keep; ordered mode with barriers keeps an fsynced file.
	if err := unix.Mount("/dev/vda", guest.StateDir, "ext4", unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount /dev/vda: %w", err)
	}
	return nil
}

// network brings up lo and eth0 with the node's address. IPv6 stays off,
// like the netns lab's, so no link-local path bypasses the lab's filters.
func network(cfg *guest.Config) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	var eth netlink.Link
	deadline := time.Now().Add(20 * time.Second)
	for {
		eth, err = netlink.LinkByName("eth0")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no eth0 after 20s: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", []byte("1"), 0)
	addr, err := netlink.ParseAddr(cfg.Addr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("address %s: %w", cfg.Addr, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return err
	}
	return nil
}

// timeServer answers every datagram on guest.TimePort with this
// machine's wall clock (8 bytes, nanoseconds since 1970, big endian),
// echoing the request's first 8 bytes after it: the lab maps each guest's
// event stamps to its own clock from these probes.
func timeServer(cfg *guest.Config) {
	ip, _, _ := strings.Cut(cfg.Addr, "/")
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip), Port: guest.TimePort})
	if err != nil {
		logf("time server: %v", err)
		return
	}
	buf := make([]byte, 64)
	out := make([]byte, 16)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		binary.BigEndian.PutUint64(out[:8], uint64(time.Now().UnixNano()))
		copy(out[8:], buf[:min(n, 8)])
		_, _ = c.WriteToUDP(out, from)
	}
}

// supervise writes clusterd's files, runs it, reaps orphans, and powers
// off when it exits.
func supervise(cfg *guest.Config) error {
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(guest.ConfPath, []byte(cfg.Conf), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(guest.KeyPath, []byte(cfg.Key), 0o600); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGCHLD)
	cmd := exec.Command("/bin/clusterd", cfg.Args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = []string{"PATH=/bin", "GOTRACEBACK=all"}
	logf("n%d: starting clusterd %s", cfg.Node, strings.Join(cfg.Args, " "))
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case err := <-done:
			logf("clusterd exited: %v", err)
			unix.Sync()
			_ = unix.Unmount(guest.StateDir, 0)
			halt()
		case <-sigs:
			// Reap orphans other than clusterd (which Wait reaps).
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if pid <= 0 || err != nil || pid == cmd.Process.Pid {
					break
				}
			}
		}
	}
}
