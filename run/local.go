package run

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// localRun is a run in this process alone: Execute without a cluster.
type localRun struct{}

func (localRun) ownsDir() bool                { return true }
func (localRun) oneThread() bool              { return false }
func (localRun) resumeFile() *checkpoint.File { return nil }

func (localRun) teacherLogits(_ context.Context, st *jobRun) ([]float32, error) {
	t0 := time.Now()
	tlogits, err := trainer.TeacherLogits(st.teachers, st.eng, st.train, st.job.EvalBatch)
	if err != nil {
		return nil, teacherLogitsError(err)
	}
	_, err = writeTeacherLogits(st, tlogits, t0)
	return tlogits, err
}

func (localRun) attach(context.Context, *jobRun, *trainer.Config, *rundir.Checkpointer, func() *trainer.Trainer) (func(), error) {
	return func() {}, nil
}

func (localRun) evaluateAll(context.Context, *jobRun, *trainer.Trainer) func([]trainer.SensitivityRow) (float64, []float64, error) {
	return nil
}

func (localRun) summarize(*rundir.Summary, *trainer.Trainer) {}

func (localRun) postTrain(context.Context, *recipes.Job, Options, hclog.Logger) error { return nil }
