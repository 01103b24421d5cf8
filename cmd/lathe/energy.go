package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lathe-ml/lathe/internal/proc"
)

// wattsPerCore is the power assumed for a busy core where the machine
// exposes no energy counters: a server core under vector load draws a few
// watts; the figure makes estimates comparable, not exact.
const wattsPerCore = 4.0

// energyMeter reads the CPU packages' RAPL counters (Linux powercap)
// where they are readable, and otherwise estimates energy from CPU time.
type energyMeter struct {
	domains []string // energy_uj files
	ranges  []float64
	start   []float64
	cpu0    time.Duration
}

func newEnergyMeter() *energyMeter {
	e := &energyMeter{}
	paths, _ := filepath.Glob("/sys/class/powercap/intel-rapl:[0-9]*/energy_uj")
	for _, p := range paths {
		if strings.Count(filepath.Base(filepath.Dir(p)), ":") != 1 {
			continue // a sub-domain (core, dram): counted inside its package
		}
		if _, ok := readFloat(p); !ok {
			continue
		}
		r, _ := readFloat(filepath.Join(filepath.Dir(p), "max_energy_range_uj"))
		e.domains, e.ranges = append(e.domains, p), append(e.ranges, r)
	}
	return e
}

func readFloat(path string) (float64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	return v, err == nil
}

// Source says where the figures come from.
func (e *energyMeter) Source() string {
	if len(e.domains) > 0 {
		return "rapl"
	}
	return "estimate: CPU time × " + strconv.FormatFloat(wattsPerCore, 'f', -1, 64) + " W per busy core (no RAPL counters readable here)"
}

func (e *energyMeter) Start() {
	e.start = e.start[:0]
	for _, d := range e.domains {
		v, _ := readFloat(d)
		e.start = append(e.start, v)
	}
	e.cpu0 = proc.CPUTime()
}

// Joules since Start, and the CPU time used.
func (e *energyMeter) Stop() (joules float64, cpu time.Duration) {
	cpu = proc.CPUTime() - e.cpu0
	if len(e.domains) == 0 {
		return cpu.Seconds() * wattsPerCore, cpu
	}
	for i, d := range e.domains {
		v, _ := readFloat(d)
		if v < e.start[i] { // the counter wrapped
			v += e.ranges[i]
		}
		joules += (v - e.start[i]) / 1e6
	}
	return joules, cpu
}

// peakRSS is the process's peak resident memory in bytes (Linux), or 0.
func peakRSS() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.Atoi(f[1])
			return kb * 1024
		}
	}
	return 0
}
