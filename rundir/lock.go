package rundir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LockFile is the file in a run directory whose advisory lock (flock) the
// process running in it holds; it names that process.
const LockFile = ".lock"

// ErrBusy reports a run directory another process is running in.
var ErrBusy = errors.New("run: run directory is busy")

// held are the run directories this process holds, by absolute path: a
// coordinator takes its directory before it puts an embedded NATS store
// there, and its run takes it again.
var held = struct {
	sync.Mutex
	dirs map[string]*heldDir
}{dirs: map[string]*heldDir{}}

type heldDir struct {
	f       *os.File
	n       int
	created bool // the directory did not exist before
}

// Lock takes dir (created when missing) for this process until release
// is called as often as Lock was: another process holding it makes it
// fail at once with ErrBusy, naming that process.
func Lock(dir string) (release func(), err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("run: run directory: %w", err)
	}
	held.Lock()
	defer held.Unlock()
	if h := held.dirs[abs]; h != nil {
		h.n++
		return releaser(abs), nil
	}
	_, statErr := os.Stat(abs)
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("run: create run directory: %w", err)
	}
	path := filepath.Join(abs, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run: lock %s: %w", path, err)
	}
	if err := tryLock(f); err != nil {
		b := make([]byte, 256)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		holder := strings.TrimSpace(string(b[:n]))
		if holder == "" {
			holder = "another process"
		}
		return nil, fmt.Errorf("%w: %s is in use by %s; wait for it to end, or choose another --run-dir", ErrBusy, dir, holder)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte("lathe pid "+strconv.Itoa(os.Getpid())+" since "+time.Now().UTC().Format(time.RFC3339)+"\n"), 0)
	held.dirs[abs] = &heldDir{f: f, n: 1, created: errors.Is(statErr, os.ErrNotExist)}
	return releaser(abs), nil
}

func releaser(abs string) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			held.Lock()
			defer held.Unlock()
			h := held.dirs[abs]
			if h == nil {
				return
			}
			if h.n--; h.n > 0 {
				return
			}
			delete(held.dirs, abs)
			_ = h.f.Truncate(0)
			// A run refused before it wrote anything leaves the directory
			// as it found it (the lock goes while still held).
			if ents, err := os.ReadDir(abs); err == nil && len(ents) == 1 {
				_ = os.Remove(filepath.Join(abs, LockFile))
				if h.created {
					_ = os.Remove(abs)
				}
			}
			h.f.Close() // closing the descriptor releases the lock
		})
	}
}
