package run

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// A role is what one of the three runners does differently around the
// shared preparation (execute) and the one training loop (jobRun.run):
// the local run (local.go), the coordinator of a cluster (coordinator.go)
// and a worker's replica of a cluster phase (replica.go). Nothing else in
// the package branches on which it is.
type role interface {
	// ownsDir says whether the role keeps the run directory: it locks it,
	// writes its files (manifest, metrics, status, checkpoints, summary,
	// model file), trains the teachers and may train the whole step on a
	// device. A worker's replica does none of it.
	ownsDir() bool
	// oneThread says whether the role trains on one compute thread, so that
	// replicas agree to the bit.
	oneThread() bool
	// resumeFile is the checkpoint the role resumes from by itself (a
	// worker's phase), or nil.
	resumeFile() *checkpoint.File
	// teacherLogits are the teachers' logits for the training set, for
	// offline distillation.
	teacherLogits(ctx context.Context, st *jobRun) ([]float32, error)
	// attach adds the role's part to the trainer's configuration before
	// the trainer is made (tr returns it once made); detach undoes it when
	// training ends.
	attach(ctx context.Context, st *jobRun, cfg *trainer.Config, ckpt *rundir.Checkpointer, tr func() *trainer.Trainer) (detach func(), err error)
	// evaluateAll, when not nil, evaluates a sensitivity analysis's cells
	// elsewhere than on this trainer.
	evaluateAll(ctx context.Context, st *jobRun, tr *trainer.Trainer) func([]trainer.SensitivityRow) (float64, []float64, error)
	// summarize adds the role's account to the summary of a finished run.
	summarize(sum *rundir.Summary, tr *trainer.Trainer)
	// postTrain readies the post_training block's compressed model file
	// before the plan is built: the coordinator calibrates on its workers,
	// a replica takes the coordinator's file, a local run leaves it to
	// Build.
	postTrain(ctx context.Context, job *recipes.Job, opts Options, log hclog.Logger) error
}

// roleOf is the role opts ask for.
func roleOf(opts Options) role {
	switch {
	case opts.replica != nil:
		return &replicaRun{opts.replica}
	case opts.Cluster != nil:
		return &coordinatorRun{c: opts.Cluster}
	}
	return localRun{}
}

// writeTeacherLogits writes the teachers' logits beside the run and
// returns the file.
func writeTeacherLogits(st *jobRun, tlogits []float32, t0 time.Time) (*checkpoint.File, error) {
	f := logitsFile(st.job, st.train, tlogits, st.digests)
	path := filepath.Join(st.dir, TeacherLogitsFile)
	if err := checkpoint.Write(path, f); err != nil {
		return nil, err
	}
	st.log.Info("teacher logits computed for offline distillation", "samples", st.train.Len(), "ms", time.Since(t0).Milliseconds(),
		"file", path, "bytes", f.Bytes)
	return f, nil
}

// teacherLogitsError names the step that failed.
func teacherLogitsError(err error) error { return fmt.Errorf("run: teacher logits: %w", err) }
