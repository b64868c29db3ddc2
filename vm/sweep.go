package vm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ownerPid reads the lab process id out of a name "civm-<pid>-...".
func ownerPid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok {
		return 0, false
	}
	p, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(p)
	return pid, err == nil && pid > 0
}

// Leftover is something of a VM lab whose process is gone.
type Leftover struct {
	Kind string // "namespace" or "qemu"
	Name string
	Pid  int // the QEMU process (qemu only)
}

func (l Leftover) String() string {
	if l.Kind == "qemu" {
		return fmt.Sprintf("qemu %s (pid %d)", l.Name, l.Pid)
	}
	return l.Kind + " " + l.Name
}

// Leftovers lists the namespaces and QEMU processes of VM labs; with
// all, also those of labs whose process still runs (this one included).
func Leftovers(all bool) ([]Leftover, error) {
	var out []Leftover
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		if pid, ok := ownerPid(e.Name()); ok && (all || !pidAlive(pid)) {
			out = append(out, Leftover{Kind: "namespace", Name: e.Name()})
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := bytes.Split(b, []byte{0})
		if len(args) < 3 || !bytes.HasSuffix(args[0], []byte(QEMU)) {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if string(args[i]) != "-name" {
				continue
			}
			name, _, _ := strings.Cut(string(args[i+1]), ",")
			owner, ok := ownerPid(name)
			if ok && (all || !pidAlive(owner)) {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				out = append(out, Leftover{Kind: "qemu", Name: name, Pid: pid})
			}
		}
	}
	return out, nil
}

// Sweep kills the QEMU processes and removes the namespaces (and with
// them bridges and taps) of VM labs whose process is gone: what a run
// killed with SIGKILL leaves. It returns what it removed.
func Sweep() ([]Leftover, error) {
	ls, err := Leftovers(false)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, l := range ls {
		if l.Kind == "qemu" {
			_ = syscall.Kill(l.Pid, syscall.SIGKILL)
		}
	}
	for _, l := range ls {
		if l.Kind == "namespace" {
			errs = append(errs, removeNS(l.Name))
		}
	}
	return ls, errors.Join(errs...)
}
