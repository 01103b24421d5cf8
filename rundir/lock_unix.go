//go:build unix

package rundir

import (
	"os"
	"syscall"
)

// tryLock takes f's exclusive advisory lock, without waiting.
func tryLock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
