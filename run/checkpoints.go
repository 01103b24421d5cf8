package run

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
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
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

// checkpointer writes a run's training checkpoints.
type checkpointer struct {
	dir      string
	job      *recipes.Job
	threads  int
	teachers []string
	log      hclog.Logger
	model    func() *model.Model
	best     *float64
}

func checkpointName(step int64) string { return fmt.Sprintf("step-%09d.arrow", step) }

// trainingFile makes the checkpoint file of a snapshot of model m.
func (c *checkpointer) trainingFile(sn *trainer.Snapshot, m *model.Model) (*checkpoint.File, error) {
	st := TrainingState{Snapshot: sn, Recipe: string(c.job.HCL()), Dataset: c.job.Dataset, Input: m.Input,
		Threads: c.threads, Teachers: c.teachers, BestValAccuracy: c.best}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("run: checkpoint state: %w", err)
	}
	f := &checkpoint.File{Kind: checkpoint.KindTraining, Job: c.job.Name, Version: Version, State: b}
	for i, p := range m.Params {
		f.Tensors = append(f.Tensors, &checkpoint.Tensor{Name: p.Name, Role: checkpoint.RoleParam, Shape: p.Shape, Data: sn.Params[i]})
		if sn.Masks[i] != nil {
			f.Tensors = append(f.Tensors, &checkpoint.Tensor{Name: "mask/" + p.Name, Role: checkpoint.RoleMask, Shape: p.Shape, Mask: sn.Masks[i]})
		}
	}
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

// write stores a snapshot, keeps the newest files and the best.
func (c *checkpointer) write(sn *trainer.Snapshot) error {
	start := time.Now()
	// The best checkpoint is an epoch-end one, judged on the validation
	// split (none without one).
	epochEnd := sn.StepInEpoch == 0 && !sn.EpochStarted && len(sn.History) > 0 && c.job.Validation > 0
	better := false
	if epochEnd {
		v := sn.History[len(sn.History)-1].ValAccuracy
		if c.best == nil || v > *c.best {
			c.best, better = &v, true
		}
	}
	f, err := c.trainingFile(sn, c.model())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	path := filepath.Join(c.dir, checkpointName(sn.Step))
	if err := checkpoint.Write(path, f); err != nil {
		return err
	}
	if better {
		// A hard link under a temporary name renamed over best.arrow: the
		// best is never missing or torn, and costs no second write.
		tmp := filepath.Join(c.dir, "."+BestCheckpoint+".tmp-link")
		os.Remove(tmp)
		if err := os.Link(path, tmp); err != nil {
			return fmt.Errorf("run: best checkpoint: %w", err)
		}
		if err := os.Rename(tmp, filepath.Join(c.dir, BestCheckpoint)); err != nil {
			return fmt.Errorf("run: best checkpoint: %w", err)
		}
	}
	names, err := checkpointFiles(c.dir)
	if err != nil {
		return err
	}
	for len(names) > max(c.job.Checkpoint.Keep, 1) {
		if err := os.Remove(filepath.Join(c.dir, names[0])); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		names = names[1:]
	}
	c.log.Info("checkpoint written", "path", path, "step", sn.Step, "bytes", f.Bytes, "ms", time.Since(start).Milliseconds(), "best", better)
	return nil
}

// isCheckpointName says whether name is one checkpointName gives.
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

// checkpointFiles lists dir's step checkpoints, oldest first.
func checkpointFiles(dir string) ([]string, error) {
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

// newestCheckpoint returns the newest checkpoint in dir that reads and
// verifies; broken newer ones are skipped with a warning.
func newestCheckpoint(dir string, log hclog.Logger) (*checkpoint.File, string, error) {
	names, err := checkpointFiles(dir)
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

// resumePoint is what a resumed run starts from.
type resumePoint struct {
	path  string
	state TrainingState
	model *model.Model
}

// loadResume reads a training checkpoint and checks it against the job:
// a recipe changed in a way that would change the run's history is
// refused, naming the changes.
func loadResume(f *checkpoint.File, path string, job *recipes.Job, log hclog.Logger) (*resumePoint, error) {
	if f.Kind != checkpoint.KindTraining {
		return nil, fmt.Errorf("run: %s is a %s file, not a training checkpoint", path, f.Kind)
	}
	if f.Job != job.Name {
		return nil, fmt.Errorf("run: %s is a checkpoint of job %q, not %q", path, f.Job, job.Name)
	}
	var st TrainingState
	if err := json.Unmarshal(f.State, &st); err == nil && st.Snapshot == nil && st.OldDevice != nil {
		return nil, fmt.Errorf("run: %s was written by a device run of lathe %s, whose checkpoints this version does not read (device and CPU runs now share one format): start the run afresh", path, f.Version)
	}
	if err := json.Unmarshal(f.State, &st); err != nil || st.Snapshot == nil {
		return nil, fmt.Errorf("run: %s: unreadable training state: %v", path, err)
	}
	old, err := recipes.Parse([]byte(st.Recipe), path+" (its recipe)", nil)
	if err != nil {
		return nil, fmt.Errorf("run: %s: its recipe: %w", path, err)
	}
	if ch := job.HistoryChanges(old); len(ch) > 0 {
		return nil, fmt.Errorf("run: %s: the recipe changed since the checkpoint in ways that would change the run's history "+
			"(resume needs the same model, data, seed, batch, epochs and policies):\n  %s", job.File, strings.Join(ch, "\n  "))
	}
	if old.Checkpoint != job.Checkpoint {
		log.Info("checkpoint cadence changed since the checkpoint", "was", fmt.Sprintf("%+v", old.Checkpoint), "now", fmt.Sprintf("%+v", job.Checkpoint))
	}
	sn := st.Snapshot
	if err := checkSnapshot(sn, job); err != nil {
		return nil, fmt.Errorf("run: %s: %w", path, err)
	}
	m, err := model.New(sn.Spec, st.Input, job.Seed)
	if err != nil {
		return nil, fmt.Errorf("run: %s: architecture: %w", path, err)
	}
	if err := setParams(m, f, checkpoint.RoleParam, ""); err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	sn.Params = nil
	for _, p := range m.Params {
		sn.Params = append(sn.Params, p.Data())
		var mask []byte
		if t := f.Tensor("mask/" + p.Name); t != nil {
			if t.Role != checkpoint.RoleMask || !slices.Equal(t.Shape, p.Shape) {
				return nil, fmt.Errorf("run: %s: mask of %s has shape %v, want %v", path, p.Name, t.Shape, p.Shape)
			}
			mask = t.Mask
		}
		sn.Masks = append(sn.Masks, mask)
	}
	sn.Optimizer = numbered(f, "optim/")
	if t := f.Tensor("hint/projection"); t != nil {
		sn.HintProjection, sn.HintOptimizer = t.Data, numbered(f, "hint/optim/")
	}
	return &resumePoint{path: path, state: st, model: m}, nil
}

// stepsPerEpoch is the steps of one epoch of job's training split.
func stepsPerEpoch(job *recipes.Job) int {
	return data.Steps(data.TrainSize-job.Validation, job.Batch)
}

// checkSnapshot range-checks a checkpoint's position against the recipe it
// resumes: a state no run of it could have written is refused, naming the
// field, before anything acts on it.
func checkSnapshot(sn *trainer.Snapshot, job *recipes.Job) error {
	spe := stepsPerEpoch(job)
	switch {
	case sn.Epoch < 0 || sn.Epoch > job.Epochs:
		return fmt.Errorf("state: epoch %d outside [0, %d]", sn.Epoch, job.Epochs)
	case sn.StepInEpoch < 0 || sn.StepInEpoch >= spe || sn.Epoch == job.Epochs && sn.StepInEpoch != 0:
		return fmt.Errorf("state: step_in_epoch %d outside [0, %d) (epoch %d of %d)", sn.StepInEpoch, spe, sn.Epoch, job.Epochs)
	case sn.Step != int64(sn.Epoch)*int64(spe)+int64(sn.StepInEpoch):
		return fmt.Errorf("state: step %d is not epoch %d × %d steps + step_in_epoch %d", sn.Step, sn.Epoch, spe, sn.StepInEpoch)
	case sn.SamplesSeen != sn.Step*int64(job.Batch):
		return fmt.Errorf("state: samples_seen %d is not step %d × batch %d", sn.SamplesSeen, sn.Step, job.Batch)
	case sn.OptimizerSteps < 0 || int64(sn.OptimizerSteps) > sn.Step:
		return fmt.Errorf("state: optimizer_steps %d outside [0, step %d]", sn.OptimizerSteps, sn.Step)
	case sn.GuardPauses < 0:
		return fmt.Errorf("state: guard_pauses %d is negative", sn.GuardPauses)
	case len(sn.History) > sn.Epoch:
		return fmt.Errorf("state: %d epochs of history at epoch %d", len(sn.History), sn.Epoch)
	}
	return nil
}
