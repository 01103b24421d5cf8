package rundir

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lathe-ml/lathe/checkpoint"
)

// Names of the files in a run directory.
const (
	RecipeFile   = "recipe.hcl"
	ManifestFile = "manifest.json"
	MetricsFile  = "metrics.csv"
	SummaryFile  = "summary.json"
	// SensitivityFile and SensitivityCSV hold a sensitivity analysis.
	SensitivityFile = "sensitivity.json"
	SensitivityCSV  = "sensitivity.csv"
)

// ErrForeign reports a run directory that holds something else.
var ErrForeign = errors.New("run: run directory is in use")

// Prepare makes dir ready for a run of job: it creates it when missing,
// accepts an empty directory or one holding an earlier run of the same job
// (whose summary is removed first, so a failed rerun leaves none behind),
// and refuses a directory holding another job's run or unrelated files. A
// run does it first; so does a coordinator that puts its embedded NATS
// store there before the run.

// NATSDir is the embedded NATS server's store inside a run directory.
const NATSDir = "nats"

func Prepare(dir, job string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("run: create run directory: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("run: run directory: %w", err)
	}
	own := 0 // the lock, the embedded NATS store, a crashed run's temporary files
	for _, e := range entries {
		if n := e.Name(); n == LockFile || n == NATSDir || checkpoint.IsTemp(n) {
			own++
		}
	}
	if own == len(entries) {
		return RemoveTemps(dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return fmt.Errorf("%w: %s is not empty and holds no lathe run (no %s); choose another --run-dir", ErrForeign, dir, ManifestFile)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: %s: %s is unreadable: %v", ErrForeign, dir, ManifestFile, err)
	}
	if m.Job != job {
		return fmt.Errorf("%w: %s holds a run of job %q, not %q; choose another --run-dir", ErrForeign, dir, m.Job, job)
	}
	if err := os.Remove(filepath.Join(dir, SummaryFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("run: %w", err)
	}
	if err := RemoveTemps(dir); err != nil {
		return err
	}
	return RemoveTemps(filepath.Join(dir, CheckpointDir))
}

// RemoveTemps removes the temporary files lathe's atomic writes leave in
// dir when a process is killed mid-write (checkpoint.IsTemp names them;
// nothing else is touched).
func RemoveTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() && checkpoint.IsTemp(e.Name()) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("run: %w", err)
			}
		}
	}
	return nil
}

// RemoveCheckpoints removes an earlier run's training checkpoints from
// dir/checkpoints — the files lathe names so (step-NNNNNNNNN.arrow,
// best.arrow) and its temporary files, nothing else — so that a fresh run
// cannot resume into them.
func RemoveCheckpoints(dir string) error {
	cdir := filepath.Join(dir, CheckpointDir)
	names, err := CheckpointFiles(cdir)
	if err != nil {
		return err
	}
	for _, n := range append(names, BestCheckpoint) {
		if err := os.Remove(filepath.Join(cdir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("run: %w", err)
		}
	}
	return RemoveTemps(cdir)
}

// WriteJSON writes v as indented JSON to path atomically (through a
// temporary file, fsync and rename): readers see the old file or the new
// one, never a part.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return checkpoint.WriteAtomic(path, append(b, '\n'))
}
