package run

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

// ErrForeignRunDir reports a run directory that holds something else.
var ErrForeignRunDir = errors.New("run: run directory is in use")

// prepareDir makes dir ready for a run of job: it creates it when missing,
// accepts an empty directory or one holding an earlier run of the same job
// (whose summary is removed first, so a failed rerun leaves none behind),
// and refuses a directory holding another job's run or unrelated files.
// PrepareDir checks that dir is empty, absent or a run of job (then its
// old summary goes), creating it if needed: what a run does first, for a
// coordinator that puts its embedded NATS store there before the run.
func PrepareDir(dir, job string) error { return prepareDir(dir, job) }

// NATSDir is the embedded NATS server's store inside a run directory.
const NATSDir = "nats"

func prepareDir(dir, job string) error {
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
		return removeTemps(dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return fmt.Errorf("%w: %s is not empty and holds no lathe run (no %s); choose another --run-dir", ErrForeignRunDir, dir, ManifestFile)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: %s: %s is unreadable: %v", ErrForeignRunDir, dir, ManifestFile, err)
	}
	if m.Job != job {
		return fmt.Errorf("%w: %s holds a run of job %q, not %q; choose another --run-dir", ErrForeignRunDir, dir, m.Job, job)
	}
	if err := os.Remove(filepath.Join(dir, SummaryFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("run: %w", err)
	}
	if err := removeTemps(dir); err != nil {
		return err
	}
	return removeTemps(filepath.Join(dir, CheckpointDir))
}

// removeTemps removes the temporary files lathe's atomic writes leave in
// dir when a process is killed mid-write (checkpoint.IsTemp names them;
// nothing else is touched).
func removeTemps(dir string) error {
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

// removeCheckpoints removes an earlier run's training checkpoints from
// dir/checkpoints — the files lathe names so (step-NNNNNNNNN.arrow,
// best.arrow) and its temporary files, nothing else — so that a fresh run
// cannot resume into them.
func removeCheckpoints(dir string) error {
	cdir := filepath.Join(dir, CheckpointDir)
	names, err := checkpointFiles(cdir)
	if err != nil {
		return err
	}
	for _, n := range append(names, BestCheckpoint) {
		if err := os.Remove(filepath.Join(cdir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("run: %w", err)
		}
	}
	return removeTemps(cdir)
}

// writeFileAtomic writes data to path through a temporary file, fsync and
// rename, so readers see the old file or the new one, never a part.
func writeFileAtomic(path string, data []byte) error { return checkpoint.WriteAtomic(path, data) }

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}
