package netlab

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 keeps named namespaces; using it makes the
// lab visible to `ip netns` and lets Sweep find leftovers after a crash.
const netnsDir = "/run/netns"

// threadNetNS names the calling thread's network namespace. Go threads
// can be in different namespaces, so /proc/self (the main thread) would be
// wrong here.
const threadNetNS = "/proc/thread-self/ns/net"

var netnsDirMu sync.Mutex

// ensureNetnsDir prepares /run/netns the way `ip netns add` does: a shared
// mount point, so that a namespace mounted or unmounted here is seen the
// same way from other mount namespaces.
func ensureNetnsDir() error {
	netnsDirMu.Lock()
	defer netnsDirMu.Unlock()
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("netlab: %w", err)
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == unix.EINVAL {
		// Not a mount point yet: make it one, then share it.
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("netlab: bind %s: %w", netnsDir, err)
		}
		err = unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("netlab: make %s shared: %w", netnsDir, err)
	}
	return nil
}

// onThread runs enter and then f on a fresh goroutine locked to its OS
// thread, and afterwards puts the thread back into the namespace it came
// from. enter must leave the thread's namespace unchanged when it fails.
// If the thread cannot be put back it stays locked, and Go ends the thread
// with the goroutine: a thread inside a lab namespace must never go back to
// the scheduler, where unrelated goroutines would open sockets in the lab
// (or keep its namespace alive after Close).
func onThread(enter, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open(threadNetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netlab: open %s: %w", threadNetNS, err)
			return
		}
		defer unix.Close(orig)
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netlab: return to the original namespace: %w", err))
			return // still locked: the thread dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// enterNS returns an enter function for onThread that joins the network
// namespace mounted at p.
func enterNS(p string) func() error {
	return func() error {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("netlab: open %s: %w", p, err)
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("netlab: enter %s: %w", p, err)
		}
		return nil
	}
}

// createNS creates a network namespace and mounts it at /run/netns/name.
// The name must not exist: O_EXCL keeps two labs (or a lab and a crashed
// run's leftover) from ever sharing a namespace.
func createNS(name string) (*nsRef, error) {
	p := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("netlab: namespace %s already exists (a crashed run? see Sweep)", name)
		}
		return nil, fmt.Errorf("netlab: %w", err)
	}
	f.Close()
	err = onThread(
		func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("netlab: unshare: %w", err)
			}
			return nil
		},
		func() error {
			if err := unix.Mount(threadNetNS, p, "none", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("netlab: mount namespace at %s: %w", p, err)
			}
			return nil
		})
	if err != nil {
		return nil, errors.Join(err, removeNS(name))
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("netlab: open %s: %w", p, err), removeNS(name))
	}
	return &nsRef{name: name, fd: fd}, nil
}

// removeNS unmounts and deletes /run/netns/name. Missing pieces are not
// errors, so that it can finish any half-done removal.
func removeNS(name string) error {
	p := filepath.Join(netnsDir, name)
	var errs []error
	// MNT_DETACH: a process with the file open must not make removal fail.
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		errs = append(errs, fmt.Errorf("netlab: unmount %s: %w", p, err))
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("netlab: %w", err))
	}
	return errors.Join(errs...)
}

func (r *nsRef) closeFD() {
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

// nsID identifies a namespace independently of how it was opened.
type nsID struct{ dev, ino uint64 }

func fdNSID(fd int) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nsID{}, fmt.Errorf("netlab: stat namespace: %w", err)
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

func pathNSID(p string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// killProcsIn sends SIGKILL to every other process whose network namespace
// is in ids. One pass over /proc bounds the work; processes that start in
// the namespace during the pass are not our concern, since only the lab
// starts processes there and it is being closed.
func killProcsIn(ids map[nsID]bool) error {
	if len(ids) == 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("netlab: %w", err)
	}
	self := os.Getpid()
	var errs []error
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		id, err := pathNSID(filepath.Join("/proc", e.Name(), "ns", "net"))
		if err != nil || !ids[id] {
			continue // gone meanwhile, or not ours
		}
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && err != unix.ESRCH {
			errs = append(errs, fmt.Errorf("netlab: kill %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// parseNSName splits a namespace name of our scheme, "<lab>-hub" or
// "<lab>-n<N>", and returns the lab name. Anything else is not ours.
func parseNSName(s string) (lab string, ok bool) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return "", false
	}
	lab, suf := s[:i], s[i+1:]
	if !validName(lab) {
		return "", false
	}
	if suf == "hub" {
		return lab, true
	}
	if len(suf) < 2 || suf[0] != 'n' || suf[1] == '0' {
		return "", false
	}
	n, err := strconv.Atoi(suf[1:])
	if err != nil || n < 1 || n > maxNode || strconv.Itoa(n) != suf[1:] {
		return "", false
	}
	return lab, true
}

// leftoverNS returns the names under /run/netns that follow our naming
// scheme with a lab name matching pattern.
func leftoverNS(pattern string) ([]string, error) {
	if pattern == "" {
		return nil, errors.New("netlab: empty lab name pattern (use \"*\" to mean every lab)")
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("netlab: pattern %q: %w", pattern, err)
	}
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	var out []string
	for _, e := range ents {
		lab, ok := parseNSName(e.Name())
		if !ok {
			continue
		}
		if m, _ := path.Match(pattern, lab); m {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Leftovers returns the names of the labs, matching the glob pattern (as in
// path.Match, applied to the lab name), that have namespaces under
// /run/netns, sorted. Tests use it to find the labs of processes that died.
func Leftovers(pattern string) ([]string, error) {
	names, err := leftoverNS(pattern)
	if err != nil {
		return nil, err
	}
	var labs []string
	for _, n := range names {
		lab, _ := parseNSName(n)
		labs = append(labs, lab)
	}
	slices.Sort(labs)
	return slices.Compact(labs), nil
}

// Sweep removes the namespaces of every lab whose name matches the glob
// pattern (path.Match syntax, applied to the lab name; "cl*" matches lab
// "cl1234" with its namespaces "cl1234-hub" and "cl1234-n7"), killing any
// process still inside them first. It is meant for the start of a lab run,
// to clear what crashed runs left; a live lab matching the pattern is
// destroyed too, so choose the pattern with care. Names that do not follow
// the lab's naming scheme are never touched.
func Sweep(pattern string) error {
	names, err := leftoverNS(pattern)
	if err != nil {
		return err
	}
	ids := make(map[nsID]bool, len(names))
	for _, n := range names {
		if id, err := pathNSID(filepath.Join(netnsDir, n)); err == nil {
			ids[id] = true
		}
	}
	// Unmount before killing, as Lab.Close does.
	var errs []error
	for _, n := range names {
		errs = append(errs, removeNS(n))
	}
	errs = append(errs, killProcsIn(ids))
	return errors.Join(errs...)
}
