package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/clusterinfra/ci/vm/guest"
)

// QEMU is the emulator binary.
const QEMU = "qemu-system-x86_64"

// DefaultMemMiB is each guest's RAM.
const DefaultMemMiB = 128

// MachineConfig describes one QEMU guest.
type MachineConfig struct {
	// Name marks the process (-name) so that Sweep can find it; it must
	// start with NamePrefix.
	Name    string
	Kernel  string
	Initrd  string
	Append  string // kernel command line
	MemMiB  int    // default DefaultMemMiB
	KVM     bool   // else TCG
	Tap     *os.File
	MAC     string
	Disk    string // raw disk image, or ""
	Console string // the serial console is appended to this file
	QMP     string // the QMP socket's path
}

// Machine is one running QEMU process and its QMP connection.
type Machine struct {
	cfg    MachineConfig
	cmd    *exec.Cmd
	mon    *qmp.SocketMonitor
	exited chan struct{}
	err    error // from Wait, once exited is closed
	monMu  sync.Mutex
}

// Start starts QEMU with direct kernel boot and connects to its QMP
// socket. The process dies with the lab (Pdeathsig) and is marked with
// cfg.Name for Sweep.
func Start(cfg MachineConfig) (*Machine, error) {
	if cfg.MemMiB == 0 {
		cfg.MemMiB = DefaultMemMiB
	}
	if !strings.HasPrefix(cfg.Name, NamePrefix) {
		return nil, fmt.Errorf("vm: machine name %q must start with %s", cfg.Name, NamePrefix)
	}
	accel := "tcg,tb-size=64"
	cpu := "qemu64"
	if cfg.KVM {
		accel, cpu = "kvm", "host"
	}
	args := []string{
		"-name", cfg.Name + ",process=" + cfg.Name,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", "pc", "-accel", accel, "-cpu", cpu, "-smp", "1",
		"-m", strconv.Itoa(cfg.MemMiB),
		"-rtc", "base=utc,clock=host",
		"-kernel", cfg.Kernel, "-initrd", cfg.Initrd, "-append", cfg.Append,
		"-chardev", "file,id=con,append=on,path=" + cfg.Console, "-serial", "chardev:con",
		"-qmp", "unix:" + cfg.QMP + ",server=on,wait=off",
		"-device", "virtio-rng-pci",
	}
	if cfg.Tap != nil {
		args = append(args, "-netdev", "tap,id=net0,fd=3",
			"-device", "virtio-net-pci,netdev=net0,romfile=,mac="+cfg.MAC)
	}
	if cfg.Disk != "" {
		// cache=unsafe: QEMU ignores the guest's flushes. A lab crash
		// kills QEMU, not the host, and whatever QEMU has written is in
		// the host's page cache and survives it, so what the guest
		// synced survives a crash as it should, and what it did not sync
		// is lost with the guest's memory; the host's own fdatasync per
		// guest flush bought nothing but time (five guests booting at
		// once each fsync their state).
		args = append(args, "-drive", "file="+cfg.Disk+",format=raw,if=none,id=d0,cache=unsafe",
			"-device", "virtio-blk-pci,drive=d0")
	}
	_ = os.Remove(cfg.QMP)
	cmd := exec.Command(QEMU, args...)
	if cfg.Tap != nil {
		cmd.ExtraFiles = []*os.File{cfg.Tap}
	}
	logf, err := os.OpenFile(cfg.Console, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vm: start %s: %w", QEMU, err)
	}
	m := &Machine{cfg: cfg, cmd: cmd, exited: make(chan struct{})}
	go func() {
		m.err = cmd.Wait()
		close(m.exited)
	}()
	if err := m.connect(10 * time.Second); err != nil {
		m.Kill()
		return nil, fmt.Errorf("vm: %s: QMP: %w (console %s: %s)", cfg.Name, err, cfg.Console, tail(cfg.Console, 300))
	}
	return m, nil
}

// connect waits for the QMP socket and does the capabilities handshake,
// within d.
func (m *Machine) connect(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		mon, err := qmp.NewSocketMonitor("unix", m.cfg.QMP, time.Second)
		if err == nil {
			done := make(chan error, 1)
			go func() { done <- mon.Connect() }()
			select {
			case err = <-done:
			case <-time.After(time.Until(deadline)):
				_ = mon.Disconnect()
				return errors.New("no QMP greeting")
			}
			if err != nil {
				return err
			}
			m.mon = mon
			return nil
		}
		select {
		case <-m.exited:
			return fmt.Errorf("QEMU exited: %v", m.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no QMP socket: %w", err)
		}
	}
}

// run runs one QMP command, bounded by d.
func (m *Machine) run(command string, d time.Duration) error {
	m.monMu.Lock()
	defer m.monMu.Unlock()
	if m.mon == nil {
		return errors.New("vm: no QMP connection")
	}
	b, _ := json.Marshal(qmp.Command{Execute: command})
	done := make(chan error, 1)
	go func() {
		_, err := m.mon.Run(b)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-m.exited:
		return nil
	case <-time.After(d):
		return fmt.Errorf("vm: QMP %s: no answer within %v", command, d)
	}
}

// Stop freezes the guest (QMP stop): its virtual CPU and clocks stop.
func (m *Machine) Stop() error { return m.run("stop", 5*time.Second) }

// Cont thaws it (QMP cont).
func (m *Machine) Cont() error { return m.run("cont", 5*time.Second) }

// Quit ends QEMU at once (QMP quit): the guest gets no warning; what it
// had not written to its disk is lost. It waits for the process to exit,
// and kills it if it does not within 5s.
func (m *Machine) Quit() error {
	err := m.run("quit", 2*time.Second)
	select {
	case <-m.exited:
	case <-time.After(5 * time.Second):
		m.Kill()
		return errors.Join(err, errors.New("vm: QEMU ignored quit; killed"))
	}
	m.disconnect()
	return nil
}

// Kill ends QEMU with SIGKILL and waits for it.
func (m *Machine) Kill() {
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	_ = m.cmd.Process.Kill()
	<-m.exited
	m.disconnect()
}

func (m *Machine) disconnect() {
	m.monMu.Lock()
	defer m.monMu.Unlock()
	if m.mon != nil {
		_ = m.mon.Disconnect()
		m.mon = nil
	}
}

// Exited is closed when the QEMU process has ended.
func (m *Machine) Exited() <-chan struct{} { return m.exited }

// Pid is the QEMU process's id.
func (m *Machine) Pid() int { return m.cmd.Process.Pid }

// RSS is the QEMU process's resident memory in bytes (0 if gone).
func (m *Machine) RSS() int64 { return procRSS(m.Pid()) }

func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				k, _ := strconv.ParseInt(f[0], 10, 64)
				return k * 1024
			}
		}
	}
	return 0
}

// NewDisk writes a raw disk image of sizeMiB holding an empty ext4 file
// system (mkfs.ext4 from e2fsprogs): the VM's own storage, which survives
// its crashes and restarts.
func NewDisk(path string, sizeMiB int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-N", "256", "-E", "nodiscard", "-L", "clusterd", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vm: mkfs.ext4 %s: %v: %s", path, err, out)
	}
	return nil
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// Tail returns the last n bytes of a file, for error messages.
func Tail(path string, n int) string { return tail(path, n) }

// Append is the kernel command line for a guest with this ci.cfg
// parameter.
func Append(param string) string {
	// quiet: the serial console is slow under emulation. panic=-1 with
	// -no-reboot ends QEMU if the guest panics. tsc=reliable keeps the
	// clocksource watchdog from switching clocks in the middle of a run.
	// The rest skips work that is slow under emulation and useless here:
	// zeroing every page allocated, the timer and keyboard controller
	// probes, the crypto self-tests, three of the four serial ports, and
	// (acpi=noirq) the ACPI interpreter's legacy PCI interrupt routing,
	// which took 100 ms per virtio device when virtio_pci enabled them
	// under TCG; the virtio devices interrupt through MSI-X, which does
	// not need it.
	return "console=ttyS0 quiet loglevel=4 panic=-1 tsc=reliable mitigations=off init_on_alloc=0 no_timer_check acpi=noirq " +
		"i8042.noaux i8042.nokbd i8042.nopnp 8250.nr_uarts=1 cryptomgr.notests " + param
}

// kvmProbe caches the result of ProbeKVM for the life of the process.
var kvmProbe struct {
	once sync.Once
	ok   bool
	why  string
}

// kvmProbeFile is where ProbeKVM keeps its answer for later runs, next
// to the image it booted. The trial boot costs up to 6 s of wall time
// and CPU where nested KVM hangs, and every `clusterlab vm` would pay it;
// the answer holds until the host reboots or QEMU or the kernel changes,
// which the key says (delete the file to probe again).
const kvmProbeFile = "kvm-probe"

// ProbeKVM boots the baseline image (init powers off at once) under KVM
// and says whether it got as far as init within a few seconds. Nested KVM
// on some hosts hangs in the firmware, so the answer is by experiment,
// not by the presence of /dev/kvm. The answer is remembered (see
// kvmProbeFile); why says when it was.
func ProbeKVM(img *Image, dir string) (bool, string) {
	kvmProbe.once.Do(func() {
		if _, err := os.Stat("/dev/kvm"); err != nil {
			kvmProbe.why = "no /dev/kvm"
			return
		}
		cache := filepath.Join(filepath.Dir(img.Baseline), kvmProbeFile)
		key := kvmProbeKey(img)
		if key != "" {
			if ok, why, hit := readKVMProbe(cache, key); hit {
				kvmProbe.ok, kvmProbe.why = ok, why+" (remembered since this host booted; remove "+cache+" to probe again)"
				return
			}
		}
		con := filepath.Join(dir, "kvm-probe.console")
		d, err := BootOnce(img, dir, "kvm-probe", true, 6*time.Second)
		if err != nil {
			kvmProbe.why = fmt.Sprintf("a KVM guest did not reach init within 6s (%v)", err)
		} else {
			_ = os.Remove(con)
			kvmProbe.ok = true
			kvmProbe.why = fmt.Sprintf("a KVM guest booted to init and powered off in %v", d.Round(time.Millisecond))
		}
		if key != "" {
			writeKVMProbe(cache, key, kvmProbe.ok, kvmProbe.why)
		}
	})
	return kvmProbe.ok, kvmProbe.why
}

// kvmProbeKey names what a probe's answer depends on: this boot of the
// host (its kernel and KVM module), the QEMU binary and the guest kernel.
// It is empty if one of them cannot be read; then nothing is remembered.
func kvmProbeKey(img *Image) string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	q, err := exec.LookPath(QEMU)
	if err != nil {
		return ""
	}
	fi, err := os.Stat(q)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("boot=%s qemu=%s:%d:%d kernel=%s", strings.TrimSpace(string(boot)), q, fi.Size(), fi.ModTime().UnixNano(), img.Kernel.Vmlinuz)
}

// readKVMProbe reads a remembered answer: three lines, the key, "kvm" or
// "tcg", and the reason. hit is false if the file is missing, malformed
// or for another key.
func readKVMProbe(path, key string) (ok bool, why string, hit bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, "", false
	}
	lines := strings.SplitN(string(b), "\n", 3)
	if len(lines) != 3 || lines[0] != key || (lines[1] != "kvm" && lines[1] != "tcg") {
		return false, "", false
	}
	return lines[1] == "kvm", strings.TrimSpace(lines[2]), true
}

// writeKVMProbe remembers an answer, best effort: written to a temporary
// file and renamed, so that a concurrent run reads the old answer or the
// new one, never half of one.
func writeKVMProbe(path, key string, ok bool, why string) {
	mode := "tcg"
	if ok {
		mode = "kvm"
	}
	tmp := fmt.Sprintf("%s.%d", path, os.Getpid())
	if err := os.WriteFile(tmp, []byte(key+"\n"+mode+"\n"+why+"\n"), 0o644); err != nil {
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
	}
}

// BootOnce boots the baseline image (no network, no disk) in poweroff
// mode and returns how long QEMU ran, from start to exit, or an error if
// that took longer than timeout or init never ran.
func BootOnce(img *Image, dir, tag string, kvm bool, timeout time.Duration) (time.Duration, error) {
	param, err := guest.Config{Mode: guest.ModePoweroff}.Param()
	if err != nil {
		return 0, err
	}
	con := filepath.Join(dir, tag+".console")
	_ = os.Remove(con)
	start := time.Now()
	m, err := Start(MachineConfig{
		Name: fmt.Sprintf("%s%d-%s", NamePrefix, os.Getpid(), tag), Kernel: img.Kernel.Vmlinuz, Initrd: img.Baseline,
		Append: Append(param), KVM: kvm, Console: con, QMP: filepath.Join(dir, tag+".qmp"),
	})
	if err != nil {
		return 0, err
	}
	select {
	case <-m.Exited():
	case <-time.After(timeout - time.Since(start)):
		m.Kill()
		return 0, fmt.Errorf("no poweroff within %v", timeout)
	}
	d := time.Since(start)
	m.disconnect()
	if !strings.Contains(tail(con, 4000), "poweroff mode") {
		return 0, fmt.Errorf("init did not run: %s", tail(con, 300))
	}
	return d, nil
}
