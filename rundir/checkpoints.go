package rundir

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/trainer"
)

// CheckpointDir is where a run keeps its training checkpoints:
// step-NNNNNNNNN.arrow, the newest recipe.checkpoint.keep of them, and
// best.arrow, the epoch-end checkpoint with the best validation accuracy
// (runs with a validation split).
const CheckpointDir = "checkpoints"

// BestCheckpoint is the name of the best checkpoint.
const BestCheckpoint = "best.arrow"

// TrainingState is the state document of a training checkpoint.
type TrainingState struct {
	Snapshot *trainer.Snapshot `json:"snapshot"`
	Recipe   string            `json:"recipe"` // the resolved recipe
	Dataset  string            `json:"dataset"`
	Input    model.Input       `json:"input"`
	Threads  int               `json:"threads"` // compute threads (results depend on them)
	// Teachers holds the weights digest of each teacher's model file.
	Teachers []string `json:"teachers,omitempty"`
	// BestValAccuracy is the validation accuracy of best.arrow so far.
	BestValAccuracy *float64 `json:"best_val_accuracy,omitempty"`
	// OldDevice is set, instead of Snapshot, in the checkpoints device
	// runs wrote before both backends shared one format: refused.
	OldDevice json.RawMessage `json:"device_run,omitempty"`
}

// Checkpointer writes a run's training checkpoints into Dir (a run
// directory's CheckpointDir): the newest Keep step files, and best.arrow.
type Checkpointer struct {
	Dir      string
	Job      string // the job's name
	Recipe   string // the resolved recipe, stored in each checkpoint
	Dataset  string
	Threads  int
	Teachers []string // the teachers' weights digests
	Keep     int
	// Validated says that epoch ends are evaluated on a validation split,
	// so that best.arrow can be chosen.
	Validated bool
	// Best is the validation accuracy of best.arrow so far (nil: none).
	Best  *float64
	Model func() *model.Model // the model the trainer holds now
	Log   hclog.Logger
}

// CheckpointName is the file name of the checkpoint taken after step.
func CheckpointName(step int64) string { return fmt.Sprintf("step-%09d.arrow", step) }

// File makes the checkpoint file of a snapshot of model m.
func (c *Checkpointer) File(sn *trainer.Snapshot, m *model.Model) (*checkpoint.File, error) {
	st := TrainingState{Snapshot: sn, Recipe: c.Recipe, Dataset: c.Dataset, Input: m.Input,
		Threads: c.Threads, Teachers: c.Teachers, BestValAccuracy: c.Best}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("run: checkpoint state: %w", err)
	}
	f := &checkpoint.File{Kind: checkpoint.KindTraining, Job: c.Job, Version: Version, State: b}
	for i, p := range m.Params {
		f.Tensors = append(f.Tensors, &checkpoint.Tensor{Name: p.Name, Role: checkpoint.RoleParam, Shape: p.Shape, Data: sn.Params[i]})
		if sn.Masks[i] != nil {
			f.Tensors = append(f.Tensors, &checkpoint.Tensor{Name: "mask/" + p.Name, Role: checkpoint.RoleMask, Shape: p.Shape, Mask: sn.Masks[i]})
		}
	}
	// The buffers (batch norms' running statistics) as the model holds
	// them now: the trainer snapshots between steps.
	f.Tensors = appendBuffers(f.Tensors, m)
	f.Tensors = appendNumbered(f.Tensors, "optim/", sn.Optimizer)
	if sn.HintProjection != nil {
		f.Tensors = append(f.Tensors, &checkpoint.Tensor{Name: "hint/projection", Role: checkpoint.RoleState, Shape: []int{len(sn.HintProjection)}, Data: sn.HintProjection})
		f.Tensors = appendNumbered(f.Tensors, "hint/optim/", sn.HintOptimizer)
	}
	return f, nil
}

// appendNumbered adds optimizer buffers as tensors prefix0, prefix1, …
func appendNumbered(ts []*checkpoint.Tensor, prefix string, bufs [][]float32) []*checkpoint.Tensor {
	for k, buf := range bufs {
		ts = append(ts, &checkpoint.Tensor{Name: prefix + strconv.Itoa(k), Role: checkpoint.RoleOptim, Shape: []int{len(buf)}, Data: buf})
	}
	return ts
}

// numbered reads back what appendNumbered wrote.
func numbered(f *checkpoint.File, prefix string) [][]float32 {
	var out [][]float32
	for k := 0; ; k++ {
		t := f.Tensor(prefix + strconv.Itoa(k))
		if t == nil {
			return out
		}
		out = append(out, t.Data)
	}
}

// Write stores a snapshot, keeps the newest files and the best.
func (c *Checkpointer) Write(sn *trainer.Snapshot) error {
	start := time.Now()
	// The best checkpoint is an epoch-end one, judged on the validation
	// split (none without one).
	epochEnd := sn.StepInEpoch == 0 && !sn.EpochStarted && len(sn.History) > 0 && c.Validated
	better := false
	if epochEnd {
		v := sn.History[len(sn.History)-1].ValAccuracy
		if c.Best == nil || v > *c.Best {
			c.Best, better = &v, true
		}
	}
	f, err := c.File(sn, c.Model())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	path := filepath.Join(c.Dir, CheckpointName(sn.Step))
	if err := checkpoint.Write(path, f); err != nil {
		return err
	}
	if better {
		// A hard link under a temporary name renamed over best.arrow: the
		// best is never missing or torn, and costs no second write.
		tmp := filepath.Join(c.Dir, "."+BestCheckpoint+".tmp-link")
		os.Remove(tmp)
		if err := os.Link(path, tmp); err != nil {
			return fmt.Errorf("run: best checkpoint: %w", err)
		}
		if err := os.Rename(tmp, filepath.Join(c.Dir, BestCheckpoint)); err != nil {
			return fmt.Errorf("run: best checkpoint: %w", err)
		}
	}
	names, err := CheckpointFiles(c.Dir)
	if err != nil {
		return err
	}
	for len(names) > max(c.Keep, 1) {
		if err := os.Remove(filepath.Join(c.Dir, names[0])); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		names = names[1:]
	}
	c.Log.Info("checkpoint written", "path", path, "step", sn.Step, "bytes", f.Bytes, "ms", time.Since(start).Milliseconds(), "best", better)
	return nil
}

// isCheckpointName says whether name is one CheckpointName gives.
func isCheckpointName(name string) bool {
	digits, ok := strings.CutPrefix(name, "step-")
	if digits, ok = strings.CutSuffix(digits, ".arrow"); !ok || len(digits) < 9 {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// CheckpointFiles lists dir's step checkpoints, oldest first.
func CheckpointFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	var names []string
	for _, e := range ents {
		if isCheckpointName(e.Name()) && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names) // zero-padded steps sort in order
	return names, nil
}

// NewestCheckpoint returns the newest checkpoint in dir that reads and
// verifies; broken newer ones are skipped with a warning.
func NewestCheckpoint(dir string, log hclog.Logger) (*checkpoint.File, string, error) {
	names, err := CheckpointFiles(dir)
	if err != nil {
		return nil, "", err
	}
	for i := len(names) - 1; i >= 0; i-- {
		p := filepath.Join(dir, names[i])
		f, err := checkpoint.Read(p)
		if err != nil {
			log.Warn("skipping a checkpoint that does not verify", "error", err)
			continue
		}
		return f, p, nil
	}
	return nil, "", fmt.Errorf("run: no valid checkpoint in %s to resume from", dir)
}

// ReadTraining reads a training checkpoint's state document; path names
// the file in errors. Checkpoints of an older format are refused.
func ReadTraining(f *checkpoint.File, path string) (*TrainingState, error) {
	if f.Kind != checkpoint.KindTraining {
		return nil, fmt.Errorf("run: %s is a %s file, not a training checkpoint", path, f.Kind)
	}
	var st TrainingState
	if err := json.Unmarshal(f.State, &st); err == nil && st.Snapshot == nil && st.OldDevice != nil {
		return nil, fmt.Errorf("run: %s was written by a device run of lathe %s, whose checkpoints this version does not read (device and CPU runs now share one format): start the run afresh", path, f.Version)
	}
	if err := json.Unmarshal(f.State, &st); err != nil || st.Snapshot == nil {
		return nil, fmt.Errorf("run: %s: unreadable training state: %v", path, err)
	}
	return &st, nil
}

// Restore puts a training checkpoint's tensors into m (built from the
// snapshot's spec) and into the snapshot: its parameters and buffers,
// masks, and optimizer and hint state.
func (st *TrainingState) Restore(f *checkpoint.File, path string, m *model.Model) error {
	if err := setParams(m, f, checkpoint.RoleParam, ""); err != nil {
		return fmt.Errorf("%w (in %s)", err, path)
	}
	if err := setBuffers(m, f); err != nil {
		return fmt.Errorf("%w (in %s)", err, path)
	}
	sn := st.Snapshot
	sn.Params, sn.Masks = nil, nil
	for _, p := range m.Params {
		sn.Params = append(sn.Params, p.Data())
		var mask []byte
		if t := f.Tensor("mask/" + p.Name); t != nil {
			if t.Role != checkpoint.RoleMask || !slices.Equal(t.Shape, p.Shape) {
				return fmt.Errorf("run: %s: mask of %s has shape %v, want %v", path, p.Name, t.Shape, p.Shape)
			}
			mask = t.Mask
		}
		sn.Masks = append(sn.Masks, mask)
	}
	sn.Optimizer = numbered(f, "optim/")
	if t := f.Tensor("hint/projection"); t != nil {
		sn.HintProjection, sn.HintOptimizer = t.Data, numbered(f, "hint/optim/")
	}
	return nil
}
