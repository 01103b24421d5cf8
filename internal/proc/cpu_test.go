package proc

import (
	"runtime"
	"testing"
	"time"
)

// TestCPUTimeCountsWork: a busy loop of 50 ms shows in the process's CPU
// time where the system tells it.
func TestCPUTimeCountsWork(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux is checked")
	}
	before := CPUTime()
	x := 1.0
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
		x = x*1.0000001 + 1e-9
	}
	if got := CPUTime() - before; got < 20*time.Millisecond || x == 0 {
		t.Fatalf("50 ms of work counted as %v of CPU", got)
	}
}
