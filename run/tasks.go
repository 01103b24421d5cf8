package run

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// Task runs the cluster's job-parallel tasks on a worker (a
// cluster.TaskFunc), with threads compute threads (0: the recipe's, else
// every core):
//   - "run": the whole recipe in a scratch run directory, whose files
//     (checkpoints aside) go back to the coordinator — one point of a
//     sweep;
//   - "logits": the teachers' logits for samples [Lo, Hi) of the training
//     set (offline distillation), with one thread as the coordinator
//     would compute them, so that the table is the same bits however it
//     is split;
//   - "sensitivity": one cell of a sensitivity analysis — the model file
//     the coordinator sent, one layer pruned alone (magnitude) to the
//     cell's sparsity, evaluated on the validation split with one thread;
//   - "calibrate": batches [Lo, Hi) of a post_training calibration pass
//     through the model file the coordinator sent, with one thread
//     (ptq.TraceBatches);
//   - "cost": one setting of a target search (costCell) — the dense model
//     file the coordinator sent, built under the setting and evaluated on
//     the validation split with one thread.
func Task(dataDir string, threads int, log hclog.Logger) cluster.TaskFunc {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	var sets splitCache // the last split loaded: a sensitivity analysis hands out many cells
	return func(ctx context.Context, spec cluster.TaskSpec, files map[string][]byte) ([]byte, map[string][]byte, error) {
		job, err := recipes.Parse(spec.Recipe, spec.File, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("run: the task's recipe: %w", err)
		}
		if !slices.Equal(recipeLines(job.HCL()), recipeLines(spec.Recipe)) {
			return nil, nil, fmt.Errorf("run: the task's recipe %s does not read back the same here (another lathe version?)", spec.File)
		}
		switch spec.Kind {
		case "run":
			dir, cleanup, err := datasetDir(dataDir, spec.Data, files, log)
			if err != nil {
				return nil, nil, err
			}
			defer cleanup()
			return runTask(ctx, job, dir, threads, log)
		case "logits", "sensitivity", "calibrate", "cost":
			train, val, err := sets.get(job, dataDir, spec.Data, files, log)
			if err != nil {
				return nil, nil, err
			}
			switch spec.Kind {
			case "logits":
				return logitsTask(job, train, spec, files)
			case "calibrate":
				return calibrateTask(job, train, spec, files)
			case "cost":
				return costTask(val, spec, files)
			}
			return sensitivityTask(job, val, spec, files)
		}
		return nil, nil, fmt.Errorf("run: unknown task kind %q", spec.Kind)
	}
}

// splitCache keeps the training and validation splits a worker loaded
// last, by the dataset's bytes and the split.
type splitCache struct {
	mu         sync.Mutex
	key        string
	train, val *data.Set
}

// get returns job's training and validation splits, from dataDir or the
// coordinator's dataset objects.
func (c *splitCache) get(job *recipes.Job, dataDir string, objects []string, files map[string][]byte, log hclog.Logger) (train, val *data.Set, err error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s %d %s %+v\n", job.Dataset, job.Validation, dataDir, job.Files())
	if dataDir == "" {
		for _, n := range objects {
			h.Write(files[n])
		}
	}
	key := string(h.Sum(nil))
	c.mu.Lock()
	defer c.mu.Unlock()
	if key == c.key {
		return c.train, c.val, nil
	}
	dir, cleanup, err := datasetDir(dataDir, objects, files, log)
	if err != nil {
		return nil, nil, err
	}
	defer cleanup()
	if train, val, _, err = data.LoadSplits(job.Dataset, dir, job.Files()); err != nil {
		return nil, nil, err
	}
	if val == nil { // the training set's last samples
		if train, val, err = data.SplitValidation(train, job.Validation); err != nil {
			return nil, nil, err
		}
	}
	c.key, c.train, c.val = key, train, val
	return train, val, nil
}

// runTask runs job in a scratch directory and returns its summary and
// files.
func runTask(ctx context.Context, job *recipes.Job, dataDir string, threads int, log hclog.Logger) ([]byte, map[string][]byte, error) {
	tmp, err := os.MkdirTemp("", "lathe-task-")
	if err != nil {
		return nil, nil, fmt.Errorf("run: %w", err)
	}
	defer os.RemoveAll(tmp)
	if _, err := Execute(ctx, job, Options{RunDir: tmp, DataDir: dataDir, Threads: threads, Logger: log}); err != nil {
		return nil, nil, err
	}
	out := map[string][]byte{}
	err = filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == rundir.CheckpointDir {
			return filepath.SkipDir // training checkpoints stay behind
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(tmp, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		out[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("run: the task's files: %w", err)
	}
	return out[rundir.SummaryFile], out, nil
}

// logitsTask computes the teachers' logits for a range of the training
// set.
func logitsTask(job *recipes.Job, train *data.Set, spec cluster.TaskSpec, files map[string][]byte) ([]byte, map[string][]byte, error) {
	if spec.Lo < 0 || spec.Hi > train.Len() || spec.Lo >= spec.Hi {
		return nil, nil, fmt.Errorf("run: logits for samples [%d, %d) of a %d-sample training set", spec.Lo, spec.Hi, train.Len())
	}
	var teachers []*model.Model
	for _, name := range spec.Inputs {
		f, err := checkpoint.Decode(files[name])
		if err != nil {
			return nil, nil, fmt.Errorf("run: teacher %s: %w", name, err)
		}
		tm, _, err := rundir.LoadModel(f)
		if err != nil {
			return nil, nil, fmt.Errorf("run: teacher %s: %w", name, err)
		}
		teachers = append(teachers, tm)
	}
	eng := cpu.New(cpu.Options{Threads: 1})
	lg, err := trainer.TeacherLogits(teachers, eng, train.Slice(train.Name, spec.Lo, spec.Hi), job.EvalBatch)
	if err != nil {
		return nil, nil, err
	}
	b := make([]byte, 4*len(lg))
	for i, v := range lg {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return nil, map[string][]byte{"logits.f32": b}, nil
}

// clusterTeacherLogits has the workers compute the teachers' logits for
// the training set, split in ranges of whole evaluation batches (one task
// per worker ready), and puts the table together in order.
func clusterTeacherLogits(ctx context.Context, job *recipes.Job, opts Options, teachers *storeFiles, train *data.Set, log hclog.Logger) ([]float32, error) {
	files, names := maps.Clone(teachers.files), teachers.names
	dataObjs, err := datasetObjects(job, opts.DataDir, files)
	if err != nil {
		return nil, err
	}
	if err := opts.Cluster.WaitWorkers(ctx, 1); err != nil {
		return nil, err
	}
	parts := 0
	for _, w := range opts.Cluster.Workers() {
		if w.State == "ready" {
			parts++
		}
	}
	n, b := train.Len(), job.EvalBatch
	batches := (n + b - 1) / b
	parts = max(1, min(parts, batches))
	var tasks []cluster.TaskSpec
	for k := range parts {
		lo, hi := k*batches/parts*b, min((k+1)*batches/parts*b, n)
		tasks = append(tasks, cluster.TaskSpec{ID: fmt.Sprintf("%s-logits-%d", cluster.Token(job.Name), k+1), Kind: "logits",
			Recipe: job.HCL(), File: job.File, Data: dataObjs, Inputs: names, Lo: lo, Hi: hi})
	}
	out := make([]float32, n*train.Classes)
	_, err = opts.Cluster.RunTasks(ctx, tasks, files, func(t cluster.TaskSpec, o cluster.TaskOutcome) error {
		if o.Error != "" {
			return fmt.Errorf("run: teacher logits for samples [%d, %d) on %s: %s", t.Lo, t.Hi, o.Worker, o.Error)
		}
		raw := o.Files["logits.f32"]
		if len(raw) != 4*(t.Hi-t.Lo)*train.Classes {
			return fmt.Errorf("run: teacher logits for samples [%d, %d) from %s: %d bytes", t.Lo, t.Hi, o.Worker, len(raw))
		}
		dst := out[t.Lo*train.Classes:]
		for i := range len(raw) / 4 {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		log.Info("teacher logits from a worker", "worker", o.Worker, "samples", fmt.Sprintf("[%d, %d)", t.Lo, t.Hi), "seconds", fmt.Sprintf("%.1f", o.Seconds))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sweepOnCluster runs a sweep's points as tasks on the cluster's workers,
// several at once, and files each point's run directory as it comes back.
func sweepOnCluster(ctx context.Context, jobs []*recipes.Job, rows []SweepRow, opts Options, record func(i int, sum *rundir.Summary, err error) error) error {
	files := map[string][]byte{}
	objs := map[string][]string{} // the dataset objects, read once per dataset
	var tasks []cluster.TaskSpec
	index := map[string]int{}
	for i, j := range jobs {
		if objs[j.Dataset] == nil {
			o, err := datasetObjects(j, opts.DataDir, files)
			if err != nil {
				return err
			}
			objs[j.Dataset] = o
		}
		id := fmt.Sprintf("sweep-%d", i+1)
		index[id] = i
		tasks = append(tasks, cluster.TaskSpec{ID: id, Kind: "run", Recipe: j.HCL(), File: j.File, Data: objs[j.Dataset]})
	}
	if err := opts.Cluster.WaitWorkers(ctx, 1); err != nil {
		return err
	}
	st, err := opts.Cluster.RunTasks(ctx, tasks, files, func(t cluster.TaskSpec, o cluster.TaskOutcome) error {
		i := index[t.ID]
		if o.Error != "" {
			return record(i, nil, fmt.Errorf("on %s: %s", o.Worker, o.Error))
		}
		dir := rows[i].RunDir
		for rel, b := range o.Files {
			p := filepath.Join(dir, filepath.FromSlash(rel))
			if !strings.HasPrefix(p, filepath.Clean(dir)+string(filepath.Separator)) {
				return fmt.Errorf("run: sweep task %s: file %q outside its run directory", t.ID, rel)
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return fmt.Errorf("run: %w", err)
			}
			if err := checkpoint.WriteAtomic(p, b); err != nil {
				return fmt.Errorf("run: %w", err)
			}
		}
		var sum rundir.Summary
		if err := json.Unmarshal(o.Summary, &sum); err != nil {
			return record(i, nil, fmt.Errorf("on %s: its summary: %w", o.Worker, err))
		}
		rows[i].Worker = o.Worker
		return record(i, &sum, nil)
	})
	if opts.Logger != nil && err == nil {
		opts.Logger.Info("sweep done on the workers", "runs", st.Tasks, "per_worker", st.PerWorker, "retried", st.Retried)
	}
	return err
}

// sensitivityTask evaluates one cell of a sensitivity analysis.
func sensitivityTask(job *recipes.Job, val *data.Set, spec cluster.TaskSpec, files map[string][]byte) ([]byte, map[string][]byte, error) {
	if len(spec.Inputs) != 1 {
		return nil, nil, fmt.Errorf("run: a sensitivity cell needs one model file, got %d", len(spec.Inputs))
	}
	f, err := checkpoint.Decode(files[spec.Inputs[0]])
	if err != nil {
		return nil, nil, fmt.Errorf("run: the sensitivity model: %w", err)
	}
	m, _, err := rundir.LoadModel(f)
	if err != nil {
		return nil, nil, fmt.Errorf("run: the sensitivity model: %w", err)
	}
	acc, err := cellAccuracy(m, val, spec.Layer, spec.Sparsity, job.EvalBatch)
	if err != nil {
		return nil, nil, err
	}
	return accuracyAnswer(acc)
}

// cellAccuracy is m's accuracy on val with layer (none: no layer) pruned
// alone to sparsity by magnitude, on one thread; m's weights are left as
// they were.
func cellAccuracy(m *model.Model, val *data.Set, layer string, sparsity float64, batch int) (float64, error) {
	if layer != "" {
		i := slices.IndexFunc(m.Params, func(p *model.Param) bool { return p.Name == layer && !p.Bias })
		if i < 0 {
			return 0, fmt.Errorf("run: sensitivity: the model has no layer %q", layer)
		}
		p := m.Params[i]
		saved := slices.Clone(p.Data())
		defer copy(p.Data(), saved)
		compress.Apply(compress.Magnitude(compress.Weight{Name: p.Name, Shape: p.Shape, Data: p.Data()}, sparsity), p.Data())
	}
	acc, _, err := trainer.EvaluateModel(m, cpu.New(cpu.Options{Threads: 1}), val, batch)
	return acc, err
}

// sensitivityResult is a sensitivity analysis's outcome as the
// coordinator shares it with the replicas.
type sensitivityResult struct {
	Baseline   float64   `json:"baseline"`
	Accuracies []float64 `json:"accuracies"`
}

// clusterSensitivity has the workers evaluate a sensitivity analysis's
// cells, one task each, from a model file of the weights as they are now
// (tasks for the unpruned weights first: the baseline).
func clusterSensitivity(ctx context.Context, job *recipes.Job, opts Options, m *model.Model, cells []trainer.SensitivityRow, log hclog.Logger) (float64, []float64, error) {
	mf, err := rundir.ExportModel(m, job.Name+"-sensitivity", job.Dataset, job.Files())
	if err != nil {
		return 0, nil, err
	}
	all := append([]trainer.SensitivityRow{{}}, cells...)
	t0 := time.Now()
	accs, st, err := accuracyTasks(ctx, job, opts, mf, "sensitivity", len(all), func(k int, t *cluster.TaskSpec) error {
		t.Layer, t.Sparsity = all[k].Layer, all[k].Sparsity
		return nil
	}, func(t cluster.TaskSpec) string { return fmt.Sprintf("sensitivity cell %s at %v", t.Layer, t.Sparsity) })
	if err != nil {
		return 0, nil, err
	}
	log.Info("sensitivity cells evaluated by the workers", "cells", len(all), "per_worker", st.PerWorker, "seconds", fmt.Sprintf("%.1f", time.Since(t0).Seconds()))
	return accs[0], accs[1:], nil
}

// accuracyTasks has the workers run n tasks of a kind that each answer a
// validation accuracy (accuracyAnswer) from one model file, f, which goes
// to the job's store once; fill sets task k's own fields, what names a
// task in an error. It returns the accuracies in the tasks' order.
func accuracyTasks(ctx context.Context, job *recipes.Job, opts Options, f *checkpoint.File, kind string, n int,
	fill func(k int, t *cluster.TaskSpec) error, what func(cluster.TaskSpec) string) ([]float64, cluster.TaskStats, error) {
	b, err := checkpoint.Encode(f)
	if err != nil {
		return nil, cluster.TaskStats{}, err
	}
	name := cluster.Token(job.Name) + "." + kind + ".arrow"
	files := map[string][]byte{name: b}
	dataObjs, err := datasetObjects(job, opts.DataDir, files)
	if err != nil {
		return nil, cluster.TaskStats{}, err
	}
	tasks := make([]cluster.TaskSpec, n)
	index := map[string]int{}
	for k := range tasks {
		id := fmt.Sprintf("%s-%s-%d", cluster.Token(job.Name), kind, k)
		index[id] = k
		tasks[k] = cluster.TaskSpec{ID: id, Kind: kind, Recipe: job.HCL(), File: job.File, Data: dataObjs, Inputs: []string{name}}
		if err := fill(k, &tasks[k]); err != nil {
			return nil, cluster.TaskStats{}, err
		}
	}
	accs := make([]float64, n)
	st, err := opts.Cluster.RunTasks(ctx, tasks, files, func(t cluster.TaskSpec, o cluster.TaskOutcome) error {
		if o.Error != "" {
			return fmt.Errorf("run: %s on %s: %s", what(t), o.Worker, o.Error)
		}
		var r map[string]float64
		if err := json.Unmarshal(o.Summary, &r); err != nil {
			return fmt.Errorf("run: %s from %s: %w", what(t), o.Worker, err)
		}
		accs[index[t.ID]] = r["val_accuracy"]
		return nil
	})
	return accs, st, err
}

// accuracyAnswer is an accuracy task's summary.
func accuracyAnswer(acc float64) ([]byte, map[string][]byte, error) {
	b, err := json.Marshal(map[string]float64{"val_accuracy": acc})
	return b, nil, err
}
