package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/clusterinfra/ci/node"
)

// Layout of the state directory.
const (
	bootFile  = "boot"  // the boot counter, in decimal
	lockFile  = "lock"  // flock'd while a Node runs
	storeDir  = "store" // Storage files (see storage.go)
	tmpPrefix = "tmp-"  // files being written; never valid after a crash
)

// stateDir is an open, locked state directory.
type stateDir struct {
	path string
	lock *os.File
}

// openStateDir creates dir if needed and takes its lock. The lock is an
// flock on a file inside it: the kernel drops it when the process dies,
// so a crashed node never leaves a stale lock behind.
func openStateDir(dir string) (*stateDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("host: state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("host: state dir: %w", err)
	}
	if err := lockFileExclusive(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrStateDirLocked, dir, err)
	}
	return &stateDir{path: dir, lock: f}, nil
}

func (d *stateDir) close() error { return d.lock.Close() }

// nextBoot increments the boot counter and makes the new value durable
// before returning it. A boot number must never be handed out twice, even
// if the process dies right after: peers use it to tell incarnations
// apart. An unreadable counter is an error rather than a restart from 1
// for the same reason.
func (d *stateDir) nextBoot() (node.Boot, error) {
	p := filepath.Join(d.path, bootFile)
	var cur uint64
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, fmt.Errorf("host: boot counter: %w", err)
	default:
		cur, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("host: boot counter %s is corrupt: %w", p, err)
		}
	}
	next := cur + 1
	if next == 0 {
		return 0, fmt.Errorf("host: boot counter %s overflows", p)
	}
	if err := writeFileDurable(d.path, bootFile, []byte(strconv.FormatUint(next, 10)+"\n")); err != nil {
		return 0, fmt.Errorf("host: boot counter: %w", err)
	}
	if err := syncDir(d.path); err != nil {
		return 0, fmt.Errorf("host: boot counter: %w", err)
	}
	return node.Boot(next), nil
}

// writeFileDurable replaces dir/name with data atomically: the data goes
// to a temporary file that is synced and then renamed over name. A crash
// leaves either the old or the new content, never a mix. The caller syncs
// dir to make the rename itself durable.
func writeFileDurable(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, tmpPrefix+name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// syncDir makes the entries of dir (creations, renames, removals)
// durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
