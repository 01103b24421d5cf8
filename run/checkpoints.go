package run

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// resumePoint is what a resumed run starts from.
type resumePoint struct {
	path  string
	state rundir.TrainingState
	model *model.Model
}

// loadResume reads a training checkpoint and checks it against the job:
// a recipe changed in a way that would change the run's history is
// refused, naming the changes.
func loadResume(f *checkpoint.File, path string, job *recipes.Job, log hclog.Logger) (*resumePoint, error) {
	st, err := rundir.ReadTraining(f, path)
	if err != nil {
		return nil, err
	}
	if f.Job != job.Name {
		return nil, fmt.Errorf("run: %s is a checkpoint of job %q, not %q", path, f.Job, job.Name)
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
	if err := checkSnapshot(st.Snapshot, job); err != nil {
		return nil, fmt.Errorf("run: %s: %w", path, err)
	}
	var m *model.Model
	if job.Model.Arch == "graph" || job.Model.File != "" { // the recipe's network (HistoryChanges: the checkpoint's too)
		var info data.Info
		if info, err = describe(job); err == nil {
			m, err = newModel(job, info)
		}
	} else if m, err = model.New(st.Snapshot.Spec, st.Input, job.Seed); err == nil {
		err = normalize(job, m)
	}
	if err != nil {
		return nil, fmt.Errorf("run: %s: architecture: %w", path, err)
	}
	if err := st.Restore(f, path, m); err != nil {
		return nil, err
	}
	return &resumePoint{path: path, state: *st, model: m}, nil
}

// stepsPerEpoch is the steps of one epoch of job's training split.
func stepsPerEpoch(job *recipes.Job) (int, error) {
	info, err := describe(job)
	if err != nil {
		return 0, err
	}
	return data.Steps(info.Train-job.Validation, job.Batch), nil
}

// checkSnapshot range-checks a checkpoint's position against the recipe it
// resumes: a state no run of it could have written is refused, naming the
// field, before anything acts on it.
func checkSnapshot(sn *trainer.Snapshot, job *recipes.Job) error {
	spe, err := stepsPerEpoch(job)
	if err != nil {
		return err
	}
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
