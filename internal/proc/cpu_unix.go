//go:build unix

// Package proc reads what the running process has used.
package proc

import (
	"time"

	"golang.org/x/sys/unix"
)

// CPUTime is the CPU time the process has used so far, every thread's,
// user and system; zero where it cannot be read.
func CPUTime() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
