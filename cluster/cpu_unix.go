//go:build unix

package cluster

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the process has used so far, every thread's,
// user and system; zero where it cannot be read.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
