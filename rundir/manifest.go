package rundir

import (
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/lathe-ml/lathe/compute"
)

// Version is lathe's version.
const Version = "0.1.0-dev"

// Manifest records what produced a run, so results can be reproduced.
type Manifest struct {
	Job        string       `json:"job"`
	Lathe      string       `json:"lathe_version"`
	Commit     string       `json:"git_commit"`
	Modified   bool         `json:"git_modified"`
	CommitFrom string       `json:"git_commit_from"` // "build" (stamped in the binary) or "worktree" (git at run time)
	GoVersion  string       `json:"go_version"`
	OS         string       `json:"os"`
	Arch       string       `json:"arch"`
	CPUs       int          `json:"cpus"`
	CPUModel   string       `json:"cpu_model,omitempty"`
	Host       string       `json:"host"`
	Compute    compute.Info `json:"compute"`
	Args       []string     `json:"args"`
	Recipe     string       `json:"recipe"`
	Seed       uint64       `json:"seed"`
	StartedAt  time.Time    `json:"started_at"`
}

// NewManifest records this process and build for a run of job.
func NewManifest(job, recipe string, seed uint64, info compute.Info) Manifest {
	host, _ := os.Hostname()
	m := Manifest{
		Job: job, Lathe: Version, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		CPUs: runtime.NumCPU(), CPUModel: cpuModel(), Host: host, Compute: info, Args: os.Args,
		Recipe: recipe, Seed: seed, StartedAt: time.Now().UTC(),
	}
	m.Commit, m.Modified, m.CommitFrom = vcs()
	return m
}

// vcs returns the commit the binary was built from: the build's stamp when
// present (go build -buildvcs=true), otherwise git's answer in the working
// directory (go run, or GOFLAGS=-buildvcs=false), and which of the two it is.
func vcs() (string, bool, string) {
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev string
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			return rev, dirty, "build"
		}
	}
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown", false, ""
	}
	st, _ := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output()
	return strings.TrimSpace(string(out)), len(strings.TrimSpace(string(st))) > 0, "worktree"
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
