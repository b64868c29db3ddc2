package failbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/clusterinfra/ci/internal/netlab"
)

// system is one cluster under test: N nodes of one system in one lab.
// Its methods are for one goroutine (the round loop), except that the
// pollers it starts update its tracker concurrently.
type system interface {
	// name is the system's label in the output (clusterd, corosync-default...).
	name() string
	// start starts node n's process and whatever reads its view.
	start(n int) error
	// kill SIGKILLs node n's process group and stops reading its view.
	kill(n int) error
	// master is the node a master round kills (see the package doc).
	master(ctx context.Context) (int, error)
	// pids returns the running node processes, for memory figures.
	pids() map[int]int
	// views is where the node's views land.
	views() *tracker
	// close kills everything the system started.
	close() error
}

// proc is one running node process (its group leader) and the cancel of
// the readers that belong to it.
type proc struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan struct{} // closed when the readers have stopped
	log    *os.File
}

// base is what every system shares: the lab, a directory, the processes
// and the views.
type base struct {
	label string
	lab   *netlab.Lab
	dir   string
	nodes []int
	tr    *tracker
	mu    sync.Mutex
	procs map[int]*proc
	// reap, if set, removes what a node's process leaves behind once it
	// has been killed and reaped (by its pid).
	reap func(pid int) error
}

func newBase(label string, lab *netlab.Lab, dir string) base {
	return base{label: label, lab: lab, dir: dir, nodes: lab.Nodes(), tr: newTracker(), procs: map[int]*proc{}}
}

func (b *base) name() string         { return b.label }
func (b *base) views() *tracker      { return b.tr }
func (b *base) path(f string) string { return filepath.Join(b.dir, f) }

// launch starts cmd as node n's process in its own process group, with
// its output appended to the node's log, and runs readers (if any) until
// the node is killed.
func (b *base) launch(n int, cmd *exec.Cmd, readers ...func(ctx context.Context)) error {
	logf, err := os.OpenFile(b.path(fmt.Sprintf("n%d.log", n)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if cmd.Stdout == nil {
		cmd.Stdout = logf
	}
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: starting node %d: %w", b.label, n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{cmd: cmd, cancel: cancel, done: make(chan struct{}), log: logf}
	var wg sync.WaitGroup
	for _, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r(ctx)
		}()
	}
	go func() {
		wg.Wait()
		close(p.done)
	}()
	b.mu.Lock()
	b.procs[n] = p
	b.mu.Unlock()
	return nil
}

// kill SIGKILLs node n's process group, reaps it, stops its readers and
// forgets its view.
func (b *base) kill(n int) error {
	b.mu.Lock()
	p := b.procs[n]
	delete(b.procs, n)
	b.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s: node %d is not running", b.label, n)
	}
	err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.cmd.Wait()
	if b.reap != nil {
		err = errors.Join(err, b.reap(p.cmd.Process.Pid))
	}
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		err = errors.Join(err, fmt.Errorf("%s: node %d's readers did not stop", b.label, n))
	}
	p.log.Close()
	b.tr.forget(n)
	return err
}

func (b *base) running(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.procs[n] != nil
}

func (b *base) pids() map[int]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[int]int{}
	for n, p := range b.procs {
		out[n] = p.cmd.Process.Pid
	}
	return out
}

// closeAll kills every node still running.
func (b *base) closeAll() error {
	b.mu.Lock()
	var ns []int
	for n := range b.procs {
		ns = append(ns, n)
	}
	b.mu.Unlock()
	var errs []error
	for _, n := range ns {
		if err := b.kill(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// poll calls read every period until ctx ends and records each answer
// as node n's view. A failed read leaves the view as it was.
func (b *base) poll(n int, every time.Duration, read func(ctx context.Context) ([]int, error)) func(ctx context.Context) {
	return func(ctx context.Context) {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			members, err := read(rctx)
			cancel()
			if err == nil {
				b.tr.set(n, members, time.Now())
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
}
