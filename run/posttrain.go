package run

import (
	"bytes"
	"context"
	"encoding/gob"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/onnx"
	"github.com/lathe-ml/lathe/ptq"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
)

// A post_training block compresses the recipe's model file before
// training (ptq.Compress). A local run compresses when it builds its plan.
// A cluster's coordinator compresses before that, handing each
// calibration pass's batches to its workers ("calibrate" tasks), and
// sends the compressed file to the replicas with the phase: the same file
// for any number of workers, since every pass adds its batches up in
// batch order (ptq.CalibrationBatch), as one process does.

// postTrained caches post_training's results in the process (a plan is
// built more than once), by the file's digest and the block.
var postTrained sync.Map

// postKey is the cache's key of job's post_training of f.
func postKey(job *recipes.Job, f *checkpoint.File) string {
	return fmt.Sprintf("%s %s %s %d %d %+v %+v", f.SHA256, job.Dataset, job.DataDir, job.Validation, job.Seed, *job.PostTraining, job.Files())
}

// postTraining compresses the model file as the post_training block says,
// calibrating on the job's training split in this process (one compute
// thread), unless the file was compressed before (postTrainOn).
func postTraining(job *recipes.Job, f *checkpoint.File) (*checkpoint.File, error) {
	key := postKey(job, f)
	if c, ok := postTrained.Load(key); ok {
		return c.(*checkpoint.File), nil
	}
	out, err := compressPost(job, f, nil)
	if err != nil {
		return nil, err
	}
	postTrained.Store(key, out)
	return out, nil
}

// compressPost runs job's post_training on f; tracer, when set, runs the
// calibration passes (else this process, on one thread).
func compressPost(job *recipes.Job, f *checkpoint.File, tracer func(x []float32) ptq.Tracer) (*checkpoint.File, error) {
	x, err := CalibrationSamples(job)
	if err != nil {
		return nil, err
	}
	opt := PostTrainingOptions(job.PostTraining)
	if tracer != nil {
		opt.Tracer = tracer(x)
	}
	out, _, err := ptq.Compress(f, x, cpu.New(cpu.Options{Threads: 1, Logger: hclog.NewNullLogger()}), opt)
	if err != nil {
		return nil, job.Errorf("post_training", "%v", err)
	}
	if _, err := checkpoint.Encode(out); err != nil { // its digest and sizes, as a read file has
		return nil, err
	}
	return out, nil
}

// PostTrainingOptions are the compression a post_training block asks.
func PostTrainingOptions(p *recipes.PostTraining) ptq.Options {
	opt := ptq.Options{Bits: p.Bits, GPTQ: p.GPTQ, Activations: p.Activations, Range: p.Range, BiasCorrection: p.BiasCorrection,
		Prune: p.Prune, Sparsity: p.Sparsity}
	if len(p.NM) == 2 {
		opt.N, opt.M, opt.Sparsity = p.NM[0], p.NM[1], 0
	}
	return opt
}

// CalibrationSamples are post_training's samples of the job's training
// split (what validation leaves), as the network reads them.
func CalibrationSamples(job *recipes.Job) ([]float32, error) {
	train, _, err := data.LoadWith(job.Dataset, job.DataDir, job.Files())
	if err != nil {
		return nil, err
	}
	rest, _, err := data.SplitValidation(train, job.Validation)
	if err != nil {
		return nil, job.Errorf("validation", "%v", err)
	}
	return ptq.Calibration(rest, job.PostTraining.Samples, job.Seed), nil
}

// RecipeModelFile is the recipe's model file as the plan reads it (an
// ONNX file imported with the model block's normalization).
func RecipeModelFile(job *recipes.Job) (*checkpoint.File, error) {
	f, err := onnx.ReadModelWith(job.Model.File, importOptions(job, job.Model))
	if err != nil {
		return nil, job.Errorf("model.file", "%v", err)
	}
	return f, nil
}

// postTrainOn is the coordinator's post_training: the calibration passes
// run on the workers; the result is cached for the plan and returned
// encoded, for the replicas, with the tasks each worker ran.
func postTrainOn(ctx context.Context, job *recipes.Job, opts Options, log hclog.Logger) ([]byte, map[string]int, error) {
	f, err := RecipeModelFile(job)
	if err != nil {
		return nil, nil, err
	}
	m, _, err := rundir.LoadModel(f)
	if err != nil {
		return nil, nil, job.Errorf("model.file", "%v", err)
	}
	feats := m.Input.Rows * m.Input.Cols * m.Input.Channels
	t0 := time.Now()
	tr := &clusterTracer{ctx: ctx, job: job, opts: opts, files: map[string][]byte{}, log: log}
	if tr.data, err = datasetObjects(job, opts.DataDir, tr.files); err != nil {
		return nil, nil, err
	}
	out, err := compressPost(job, f, func(x []float32) ptq.Tracer {
		tr.batches = ptq.Batches(len(x) / feats)
		return tr
	})
	if err != nil {
		return nil, nil, err
	}
	postTrained.Store(postKey(job, f), out)
	b, err := checkpoint.Encode(out)
	if err != nil {
		return nil, nil, err
	}
	log.Info("post-training compression calibrated on the workers", "passes", tr.passes, "batches", tr.batches,
		"per_worker", tr.perWorker, "seconds", fmt.Sprintf("%.1f", time.Since(t0).Seconds()))
	return b, tr.perWorker, nil
}

// usePostTrained caches the coordinator's post-trained file for this
// replica's plan.
func usePostTrained(job *recipes.Job, out *checkpoint.File) error {
	f, err := RecipeModelFile(job)
	if err != nil {
		return err
	}
	postTrained.Store(postKey(job, f), out)
	return nil
}

// clusterTracer hands each calibration pass to the cluster's workers, a
// range of whole batches each.
type clusterTracer struct {
	ctx       context.Context
	job       *recipes.Job
	opts      Options
	files     map[string][]byte // the dataset's objects and the pass's model file
	data      []string
	batches   int
	passes    int
	perWorker map[string]int
	log       hclog.Logger
}

func (t *clusterTracer) Trace(f *checkpoint.File, want ptq.Want) ([]ptq.BatchStats, error) {
	b, err := checkpoint.Encode(f)
	if err != nil {
		return nil, err
	}
	t.passes++
	name := fmt.Sprintf("%s.calibrate-%d.arrow", cluster.Token(t.job.Name), t.passes)
	files := maps.Clone(t.files)
	files[name] = b
	if err := t.opts.Cluster.WaitWorkers(t.ctx, 1); err != nil {
		return nil, err
	}
	parts := 0
	for _, w := range t.opts.Cluster.Workers() {
		if w.State == "ready" {
			parts++
		}
	}
	parts = max(1, min(parts, t.batches))
	var tasks []cluster.TaskSpec
	for k := range parts {
		tasks = append(tasks, cluster.TaskSpec{ID: fmt.Sprintf("%s-calibrate-%d-%d", cluster.Token(t.job.Name), t.passes, k+1), Kind: "calibrate",
			Recipe: t.job.HCL(), File: t.job.File, Data: t.data, Inputs: []string{name},
			Lo: k * t.batches / parts, Hi: (k + 1) * t.batches / parts, Layer: want.Layer, Observed: want.Observed})
	}
	out := make([]ptq.BatchStats, t.batches)
	st, err := t.opts.Cluster.RunTasks(t.ctx, tasks, files, func(task cluster.TaskSpec, o cluster.TaskOutcome) error {
		if o.Error != "" {
			return fmt.Errorf("run: calibration batches [%d, %d) on %s: %s", task.Lo, task.Hi, o.Worker, o.Error)
		}
		var part []ptq.BatchStats
		if err := gob.NewDecoder(bytes.NewReader(o.Files["stats.gob"])).Decode(&part); err != nil || len(part) != task.Hi-task.Lo {
			return fmt.Errorf("run: calibration batches [%d, %d) from %s: %d batches back (%v)", task.Lo, task.Hi, o.Worker, len(part), err)
		}
		for b := range part {
			if err := part[b].Check(want); err != nil {
				return fmt.Errorf("run: calibration batch %d from %s: %v", task.Lo+b, o.Worker, err)
			}
		}
		copy(out[task.Lo:], part)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if t.perWorker == nil {
		t.perWorker = map[string]int{}
	}
	for w, k := range st.PerWorker {
		t.perWorker[w] += k
	}
	return out, nil
}

// calibrateTask runs a post_training calibration pass over batches
// [Lo, Hi) of the job's calibration samples, on one thread as the
// coordinator would.
func calibrateTask(job *recipes.Job, train *data.Set, spec cluster.TaskSpec, files map[string][]byte) ([]byte, map[string][]byte, error) {
	if job.PostTraining == nil || len(spec.Inputs) != 1 {
		return nil, nil, fmt.Errorf("run: a calibration task needs a recipe with post_training and one model file (%d given)", len(spec.Inputs))
	}
	f, err := checkpoint.Decode(files[spec.Inputs[0]])
	if err != nil {
		return nil, nil, fmt.Errorf("run: the calibration model: %w", err)
	}
	x := ptq.Calibration(train, job.PostTraining.Samples, job.Seed)
	st, err := ptq.TraceBatches(f, x, cpu.New(cpu.Options{Threads: 1, Logger: hclog.NewNullLogger()}), spec.Lo, spec.Hi, ptq.Want{Layer: spec.Layer, Observed: spec.Observed})
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(st); err != nil {
		return nil, nil, err
	}
	return nil, map[string][]byte{"stats.gob": buf.Bytes()}, nil
}
