package run

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/onnx"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// Options are the coordinator's settings beyond the recipe.
type Options struct {
	RunDir  string // default: runs/<job>
	DataDir string // default: where the dataset is installed
	Threads int    // overrides the recipe's threads when > 0
	Logger  hclog.Logger
	// Progress, if set, receives every training step (the coordinator draws
	// a progress bar from it on a terminal).
	Progress func(trainer.Progress)
	// Policies are attached after the recipe's own, for programs that embed
	// lathe and add their own hooks.
	Policies []trainer.Policy
	// Resume continues from the newest valid checkpoint in the run
	// directory; ResumeFrom from the given checkpoint file.
	Resume     bool
	ResumeFrom string
	// CheckpointEverySteps, when > 0, overrides the recipe's
	// checkpoint.every_steps.
	CheckpointEverySteps int
	// Cluster, when set, trains data-parallel on its workers: every phase
	// (each teacher the recipe trains, then the student) is sent to them,
	// and this process keeps the state, applies the policies and writes
	// the files without computing gradients. MicroShards is the number of
	// micro-shards a batch is cut into (0: 8, or the largest divisor of the
	// batch below it). The coordinator is off the step: it takes the
	// workers' state every SyncEvery steps (0: cluster.DefaultSyncEvery)
	// and at each epoch's end and checkpoint; ReduceEveryStep makes it a
	// replica that reduces every step instead.
	Cluster     *cluster.Coordinator
	MicroShards int
	SyncEvery   int
	// Device, when set, trains device-resident on it (a GPU through
	// compute/cuda) through the trainer's one loop (trainer.Config.Device);
	// what it cannot do yet (trainer.DeviceSupports) is refused naming the
	// recipe field. A worker's replica computes its gradients there.
	Device compute.Device

	replica *replicaOpts // set when this process is a worker's replica
}

// Execute runs a job in-process and returns its summary; the run directory
// holds the files listed in the package comment.
func Execute(ctx context.Context, job *recipes.Job, opts Options) (*rundir.Summary, error) {
	if job.Target != nil {
		return searchTarget(ctx, job, opts)
	}
	sum, _, err := execute(ctx, job, opts)
	return sum, err
}

// runDir is the run's directory: the option, or runs/<job>.
func runDir(job *recipes.Job, opts Options) string {
	if opts.RunDir != "" {
		return opts.RunDir
	}
	return filepath.Join("runs", job.Name)
}

// splits loads the job's data and holds out its validation split (the
// training set's last samples, or the set's own text); val is nil when
// it is empty. info describes the whole training set.
func splits(job *recipes.Job) (train, val, test *data.Set, info data.Info, err error) {
	train, val, test, err = data.LoadSplits(job.Dataset, job.DataDir, job.Files())
	if err != nil {
		return nil, nil, nil, info, job.Errorf("dataset", "%v", err)
	}
	info = data.InfoOf(train)
	switch {
	case val == nil: // the training set's last samples
		if train, val, err = data.SplitValidation(train, job.Validation); err != nil {
			return nil, nil, nil, info, job.Errorf("validation", "%v", err)
		}
	case job.Validation != 0:
		return nil, nil, nil, info, job.Errorf("validation", "%s holds out its own validation text; leave validation out", train.Name)
	}
	if val.Len() == 0 {
		val = nil
	}
	return train, val, test, info, nil
}

// execute is Execute, also returning the trained model.
func execute(ctx context.Context, job *recipes.Job, opts Options) (sum *rundir.Summary, trained *model.Model, err error) {
	if opts.DataDir != "" { // --data-dir: the run's recipe says so too
		j := *job
		j.DataDir, job = opts.DataDir, &j
	}
	if err := Check(job); err != nil {
		return nil, nil, err
	}
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	dir := runDir(job, opts)
	role := roleOf(opts)
	if role.ownsDir() {
		release, err := rundir.Lock(dir)
		if err != nil {
			return nil, nil, err
		}
		defer release()
	}
	train, val, test, set, err := splits(job)
	if err != nil {
		return nil, nil, err
	}
	if job.PostTraining != nil && job.Model.File != "" {
		if err := role.postTrain(ctx, job, opts, log); err != nil {
			return nil, nil, err
		}
	}
	plan, err := Build(job, set, log)
	if err != nil {
		return nil, nil, err
	}
	m := plan.Model
	if job.ClassBalance {
		m.ClassWeights = data.BalancedWeights(train)
	}
	m.LabelSmoothing = float32(job.LabelSmoothing)
	rp, threads, resumeTeachers, err := resumeState(job, role, &opts, dir, log)
	if err != nil {
		return nil, nil, err
	}
	// A cluster's roles compute with the exact product: a micro-shard's
	// bits then do not depend on the BLAS, nor on what else a product holds.
	eng := cpu.New(cpu.Options{Threads: threads, Logger: log, Exact: role.oneThread()})
	info, engine := eng.Describe(), eng.Name()
	cpuThreads := info.Threads // a device's results can depend on them too (the host device's BLAS)
	device := opts.Device      // trains the whole step there (a replica's device computes gradients only)
	if !role.ownsDir() {
		device = nil
	}
	if device != nil {
		info, engine = deviceInfo(device), device.Name()
	}

	var sizes []int
	params := m.Params
	if rp != nil {
		params = rp.model.Params // the checkpoint's architecture (thinned or factorized since?)
	}
	for _, p := range params {
		sizes = append(sizes, p.Size())
	}
	optCfg := plan.Optimizer
	optCfg.Engine = eng
	if kinds := job.Optimizer.NoDecay; len(kinds) > 0 {
		for _, p := range params {
			optCfg.NoDecay = append(optCfg.NoDecay, (p.Bias && slices.Contains(kinds, "bias")) || (p.Norm && slices.Contains(kinds, "norm")) || (p.Embed && slices.Contains(kinds, "embedding")))
		}
	}
	opt, err := trainer.NewOptimizer(optCfg, sizes)
	if err != nil {
		return nil, nil, job.Errorf("optimizer.kind", "%v", err)
	}
	sens, err := sensitivityPolicy(job, m, val, plan.Prune, log)
	if err != nil {
		return nil, nil, err
	}
	policies, factors, fields := plan.Policies(sens), plan.Factorize, plan.Fields
	if device != nil {
		if err := checkDevice(job, trainer.Config{Device: device, Model: m, Optimizer: opt, Policies: policies,
			Factorize: factors, ThinAtEpoch: job.ThinAtEpoch}, fields); err != nil {
			return nil, nil, err
		}
	}

	var metrics *rundir.Metrics
	var teachers []*model.Model
	var digests []string
	if r, ok := role.(*replicaRun); ok {
		teachers = r.r.teachers // a worker's replica writes no file
	} else {
		if metrics, err = startFiles(job, dir, m, rp, info); err != nil {
			return nil, nil, err
		}
		defer metrics.Close()
		if teachers, digests, err = trainTeachers(ctx, job, dir, opts, resumeTeachers, rp, log); err != nil {
			return nil, nil, err
		}
	}

	st := &jobRun{role: role, job: job, opts: opts, log: log, dir: dir, start: start, train: train, val: val, test: test, plan: plan,
		eng: eng, engine: engine, info: info, device: device, cpuThreads: cpuThreads, rp: rp, opt: opt, optCfg: optCfg,
		sens: sens, policies: policies, metrics: metrics, teachers: teachers, digests: digests}
	return st.run(ctx)
}

// jobRun is what execute prepared for a job's training: the data, the
// plan, the engine and device, the resume point, the optimizer and
// policies, the teachers and the open metrics file.
type jobRun struct {
	role             role
	job              *recipes.Job
	opts             Options
	log              hclog.Logger
	dir              string
	start            time.Time
	train, val, test *data.Set
	plan             *Plan
	eng              *cpu.Engine
	engine           string
	info             compute.Info
	device           compute.Device
	cpuThreads       int
	rp               *resumePoint
	opt              trainer.Optimizer
	optCfg           trainer.OptimConfig
	sens             *trainer.SensitivityPolicy
	policies         []trainer.Policy
	metrics          *rundir.Metrics
	teachers         []*model.Model
	digests          []string
}

// run trains the job in its role (the local run, the coordinator or a
// worker's replica) and finishes it.
func (st *jobRun) run(ctx context.Context) (sum *rundir.Summary, trained *model.Model, err error) {
	job, opts, log, dir, rp, m := st.job, st.opts, st.log, st.dir, st.rp, st.plan.Model
	log.Info("job starting", "job", job.Name, "dataset", job.Dataset, "model", modelName(job), "params", m.NumParams(),
		"train", st.train.Len(), "epochs", job.Epochs, "batch", job.Batch, "engine", st.engine, "blas", st.info.BLAS,
		"core_type", st.info.CoreType, "threads", st.info.Threads, "run_dir", dir)
	hint, err := hintConfig(job, m, st.teachers, st.optCfg)
	if err != nil {
		return nil, nil, err
	}
	ckpt := &rundir.Checkpointer{Dir: filepath.Join(dir, rundir.CheckpointDir), Job: job.Name, Recipe: string(job.HCL()), Dataset: job.Dataset,
		Threads: st.cpuThreads, Teachers: st.digests, Keep: job.Checkpoint.Keep, Validated: job.Validation > 0, Log: log}
	every := job.Checkpoint.EverySteps
	if opts.CheckpointEverySteps > 0 {
		every = opts.CheckpointEverySteps
	}
	startModel := m
	var resume *trainer.Snapshot
	if rp != nil {
		// The policies were built for the recipe's model; training goes on
		// with the checkpoint's, which shares its quantization controls.
		rp.model.Quant, rp.model.ActQuant, rp.model.Fold, rp.model.BN, rp.model.ClassWeights, rp.model.LabelSmoothing = m.Quant, m.ActQuant, m.Fold, m.BN, m.ClassWeights, m.LabelSmoothing
		startModel, resume, ckpt.Best = rp.model, rp.state.Snapshot, rp.state.BestValAccuracy
	}
	// Offline distillation: the teachers' logits for the training set, once.
	var tlogits []float32
	if st.plan.KD != nil && job.Distill.Offline {
		if tlogits, err = st.role.teacherLogits(ctx, st); err != nil {
			return nil, nil, err
		}
	}
	var tr *trainer.Trainer
	ckpt.Model = func() *model.Model { return tr.Model() }
	cfg := trainer.Config{
		Resume: resume, Checkpoint: ckpt.Write, CheckpointEpochs: job.Checkpoint.EveryEpochs, CheckpointSteps: every,
		Model: startModel, Engine: st.eng, Train: st.train, Val: st.val, Test: st.test, Batch: job.Batch, EvalBatch: job.EvalBatch,
		Epochs: job.Epochs, Seed: job.Seed, Augment: job.Augment, Optimizer: st.opt,
		ClipNorm: job.Optimizer.ClipNorm,
		Policies: append(st.policies, opts.Policies...),
		Logger:   log.Named("trainer"), Progress: opts.Progress, Factorize: st.plan.Factorize, ThinAtEpoch: job.ThinAtEpoch,
		Teachers: st.teachers, KD: st.plan.KD, Hint: hint, TeacherLogits: tlogits, Device: st.device,
	}
	if st.metrics != nil {
		cfg.EndEpoch = st.metrics.Write
	}
	detach, err := st.role.attach(ctx, st, &cfg, ckpt, func() *trainer.Trainer { return tr })
	if err != nil {
		return nil, nil, err
	}
	defer detach()
	if rep, ok := cfg.Parallel.(*cluster.Replica); ok && rep != nil && rep.DigestEvery() > 0 {
		// Last, after every policy that changes the weights: the replicas'
		// digests, which the coordinator compares (a following phase's
		// replicas hash at its sync points instead).
		cfg.Policies = append(cfg.Policies, &trainer.DigestPolicy{Every: rep.DigestEvery(), Publish: rep.SetDigest})
	}
	if st.role.ownsDir() {
		status := rundir.StartStatus(dir, job.Name, job.Epochs, job.Batch, opts.Cluster, log)
		cfg.Progress = func(p trainer.Progress) {
			status.Progress(p)
			if opts.Progress != nil {
				opts.Progress(p)
			}
		}
		defer func() { status.End(ctx, err) }()
	}
	if tr, err = trainer.New(cfg); err != nil {
		return nil, nil, deviceError(job, err, st.plan.Fields)
	}
	defer tr.Close()
	if st.sens != nil {
		st.wireSensitivity(ctx, tr)
	}
	res, err := tr.Run(ctx)
	if err == nil && !st.role.ownsDir() {
		return nil, tr.Model(), nil
	}
	if err != nil {
		if ctx.Err() != nil && st.role.ownsDir() {
			log.Warn("interrupted: checkpoint written; continue with --resume", "run_dir", dir)
		}
		return nil, nil, err
	}
	if sum, err = st.finish(res, tr, resume); err != nil {
		return nil, nil, err
	}
	sum.WallSeconds = time.Since(st.start).Seconds()
	if err := rundir.WriteJSON(filepath.Join(dir, rundir.SummaryFile), sum); err != nil {
		return nil, nil, fmt.Errorf("run: %w", err)
	}
	log.Info("job done", "test_accuracy", sum.TestAccuracy, "val_accuracy", sum.ValAccuracy,
		"samples_per_second", int(sum.SamplesPerSecond), "wall_seconds", sum.WallSeconds, "summary", filepath.Join(dir, rundir.SummaryFile))
	return sum, tr.Model(), nil
}

// resumeState finds what a run resumes from (a worker's phase checkpoint,
// the newest in the run directory, or opts.ResumeFrom; nil: it starts
// afresh, and opts says so), the compute threads it runs on (a resumed
// run keeps the checkpoint's: results depend on them), and whether the
// teachers resume too.
func resumeState(job *recipes.Job, role role, opts *Options, dir string, log hclog.Logger) (rp *resumePoint, threads int, resumeTeachers bool, err error) {
	threads = job.Threads
	if opts.Threads > 0 {
		threads = opts.Threads
	}
	if role.oneThread() {
		// Replicas must agree to the bit: one thread, the same everywhere
		// (with the exact product the bits would not depend on it; the
		// cores are the workers').
		threads = 1
	}
	if f := role.resumeFile(); f != nil {
		opts.Resume, opts.ResumeFrom = false, ""
		if rp, err = loadResume(f, "the phase's checkpoint", job, log); err != nil {
			return nil, 0, false, err
		}
	}
	resumeTeachers = opts.Resume || opts.ResumeFrom != ""
	if opts.Resume && opts.ResumeFrom == "" {
		if names, err := rundir.CheckpointFiles(filepath.Join(dir, rundir.CheckpointDir)); err != nil {
			return nil, 0, false, err
		} else if len(names) == 0 {
			// Nothing written yet (or killed while a teacher trained, which
			// resumes on its own): a wrapper that always passes --resume
			// starts the run.
			log.Warn("no checkpoint to resume from; starting from the beginning", "dir", filepath.Join(dir, rundir.CheckpointDir))
			opts.Resume = false
		}
	}
	if opts.Resume || opts.ResumeFrom != "" {
		var f *checkpoint.File
		path := opts.ResumeFrom
		if path != "" {
			f, err = checkpoint.Read(path)
		} else {
			f, path, err = rundir.NewestCheckpoint(filepath.Join(dir, rundir.CheckpointDir), log)
		}
		if err != nil {
			return nil, 0, false, err
		}
		if rp, err = loadResume(f, path, job, log); err != nil {
			return nil, 0, false, err
		}
		switch {
		case role.oneThread():
		case opts.Threads == 0:
			threads = rp.state.Threads // results depend on the thread count
		case opts.Threads != rp.state.Threads:
			log.Warn("resuming with another thread count than the checkpoint's: results may differ in the last bits from an uninterrupted run",
				"checkpoint_threads", rp.state.Threads, "threads", opts.Threads)
		}
		log.Info("resuming", "checkpoint", path, "step", rp.state.Snapshot.Step, "epoch", rp.state.Snapshot.Epoch+1,
			"step_in_epoch", rp.state.Snapshot.StepInEpoch)
	}
	return rp, threads, resumeTeachers, nil
}

// startFiles prepares a run directory: the run's files (manifest,
// recipe), no checkpoints of an earlier run unless this one resumes, and
// metrics.csv with the history it resumes from.
func startFiles(job *recipes.Job, dir string, m *model.Model, rp *resumePoint, info compute.Info) (metrics *rundir.Metrics, err error) {
	if err := rundir.Prepare(dir, job.Name); err != nil {
		return nil, err
	}
	if rp == nil {
		// A fresh run: an earlier run's checkpoints must not be resumed
		// into this one.
		if err := rundir.RemoveCheckpoints(dir); err != nil {
			return nil, err
		}
	}
	man := rundir.NewManifest(job.Name, job.File, job.Seed, info)
	if err := rundir.WriteJSON(filepath.Join(dir, rundir.ManifestFile), man); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	if err := checkpoint.WriteAtomic(filepath.Join(dir, rundir.RecipeFile), job.HCL()); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	// A sparsity column per weight, and per factor a factorize block will
	// create.
	var layers []string
	for _, w := range m.Weights() {
		layers = append(layers, w.Name)
	}
	for _, f := range job.Factorize {
		layers = append(layers, f.Layer+".v", f.Layer+".u")
	}
	if metrics, err = rundir.NewMetrics(filepath.Join(dir, rundir.MetricsFile), layers, m.Input.PerPosition); err != nil {
		return nil, err
	}
	if rp != nil {
		for _, em := range rp.state.Snapshot.History {
			if err := metrics.Write(em); err != nil {
				return nil, err
			}
		}
	}
	return metrics, nil
}

// wireSensitivity gives a sensitivity analysis its evaluations: on this
// trainer, or where the role says (spread over the cluster's workers, or
// — a worker's replica — the coordinator's table, so masks are decided in
// one place).
func (st *jobRun) wireSensitivity(ctx context.Context, tr *trainer.Trainer) {
	st.sens.Evaluate = func() (float64, error) {
		acc, _, err := tr.Evaluate(st.val)
		return acc, err
	}
	st.sens.EvaluateAll = st.role.evaluateAll(ctx, st, tr)
	st.sens.Write = func(t trainer.SensitivityTable) error {
		if !st.role.ownsDir() {
			return nil
		}
		return writeSensitivity(st.dir, t)
	}
}

// finish is the one summary of a trained run, on the CPU or a device:
// what training measured, then what the trained model does (calibration,
// agreement, post-training quantization, thinning), and the model file
// written.
func (st *jobRun) finish(res *trainer.Result, tr *trainer.Trainer, resume *trainer.Snapshot) (*rundir.Summary, error) {
	job, eng, test, log := st.job, st.eng, st.test, st.log
	var err error
	// The end-of-run evaluations build graphs of their own: free the
	// training graphs first, and collect between them, so that their
	// buffers do not pile up before the collector runs.
	tr.Release()
	runtime.GC()
	sum := &rundir.Summary{
		Job: job.Name, Dataset: job.Dataset, Model: modelName(job), Seed: job.Seed, Batch: job.Batch,
		TestAccuracy: res.TestAccuracy, TestLoss: res.TestLoss, ValAccuracy: res.ValAccuracy, ValLoss: res.ValLoss,
		Epochs: job.Epochs, Steps: res.Steps, SamplesSeen: res.SamplesSeen, SamplesPerSecond: res.SamplesPerSec,
		TrainSeconds: res.TrainSeconds, Engine: st.engine, Layers: tr.Model().Layers(), History: res.Epochs, Ranks: res.Ranks,
	}
	if resume != nil {
		sum.ResumedFromStep = resume.Step
	}
	st.role.summarize(sum, tr)
	for _, l := range sum.Layers {
		sum.ParamsTotal += l.Params
		sum.ParamsNonzero += l.Nonzero
	}
	sum.DenseBytes = 4 * sum.ParamsTotal
	if err := beyondAccuracy(sum, tr.Model(), st.teachers, eng, test, job.EvalBatch); err != nil {
		return nil, err
	}
	runtime.GC()
	if n := len(res.Epochs); n > 0 {
		sum.GuardPauses = res.Epochs[n-1].GuardPauses
	}
	if job.Quantize == nil {
		// The post-training quantization baseline QAT is compared with: the
		// final float weights fake-quantized (per channel, symmetric).
		if sum.PTQ, err = ptqAccuracy(tr.Model(), eng, test, job.EvalBatch, []int{8, 4}); err != nil {
			return nil, err
		}
		runtime.GC()
	}
	final := tr.Model()
	if job.ThinAtEpoch > 0 || slices.ContainsFunc(sum.Layers, func(l model.LayerInfo) bool { return l.StructuredSparsity > 0 }) {
		var small *model.Model
		if sum.Thinned, small, err = thin(tr.Model(), eng, test, job.EvalBatch); err != nil {
			return nil, err
		}
		for i := range sum.Layers {
			for _, tl := range sum.Thinned.Layers {
				if tl.Name == sum.Layers[i].Name {
					sum.Layers[i].ThinnedShape = tl.Shape
				}
			}
		}
		log.Info("thinned", "params", sum.Thinned.ParamsTotal, "of", sum.ParamsTotal, "test_accuracy", sum.Thinned.TestAccuracy)
		if small.NumParams() < final.NumParams() {
			final = small
		}
	}
	sum.MACs, sum.DenseMACs = final.Net.MACs(), tr.Model().Net.MACs()
	mf, err := rundir.ExportModel(final, job.Name, job.Dataset, job.Files())
	if err != nil {
		return nil, err
	}
	if err := checkpoint.Write(filepath.Join(st.dir, rundir.ModelFile), mf); err != nil {
		return nil, err
	}
	sum.ModelBytes = mf.Bytes
	sum.ModelRatio = float64(sum.DenseBytes) / float64(mf.Bytes)
	log.Info("model file written", "path", filepath.Join(st.dir, rundir.ModelFile), "bytes", mf.Bytes, "dense_bytes", sum.DenseBytes,
		"ratio", fmt.Sprintf("%.1f", sum.ModelRatio))
	sum.PeakRSSBytes = peakRSS()
	return sum, nil
}

// hintConfig checks a distill block's hint against the student and the
// teacher and gives the projection an optimizer like the model's.
func hintConfig(job *recipes.Job, m *model.Model, teachers []*model.Model, oc trainer.OptimConfig) (*trainer.HintConfig, error) {
	if job.Distill == nil || job.Distill.Hint == nil {
		return nil, nil
	}
	h := job.Distill.Hint
	find := func(who string, m *model.Model, layer string) (model.HiddenLayer, error) {
		var names []string
		for _, hl := range m.HiddenLayers() {
			if hl.Name == layer {
				return hl, nil
			}
			names = append(names, hl.Name)
		}
		return model.HiddenLayer{}, job.Errorf("distill.hint", "the %s (%s) has no hidden layer %q (it has %s)", who, m.Spec.Arch, layer, strings.Join(names, ", "))
	}
	s, err := find("student", m, h.Student)
	if err != nil {
		return nil, err
	}
	t, err := find("teacher", teachers[0], h.Teacher)
	if err != nil {
		return nil, err
	}
	if s.Positions != t.Positions {
		return nil, job.Errorf("distill.hint", "the student's layer %s has %d positions, the teacher's %s %d", h.Student, s.Positions, h.Teacher, t.Positions)
	}
	opt, err := trainer.NewOptimizer(oc, []int{s.Width * t.Width})
	if err != nil {
		return nil, err
	}
	return &trainer.HintConfig{Student: h.Student, Teacher: h.Teacher, Weight: h.Weight, Optimizer: opt}, nil
}

// trainTeachers trains the recipe's teachers inside the run directory
// (<run-dir>/teacher, or teacher-K for an ensemble) and returns them with
// the weights digests of their model files. A resumed run loads a
// teacher whose run finished from its model file — checked against the
// digest the checkpoint rp recorded, if any — and resumes or restarts one
// that did not.
func trainTeachers(ctx context.Context, job *recipes.Job, dir string, opts Options, resume bool, rp *resumePoint, log hclog.Logger) ([]*model.Model, []string, error) {
	if job.Teacher == nil {
		return nil, nil, nil
	}
	var teachers []*model.Model
	var digests []string
	if path := job.Teacher.File; path != "" {
		f, err := onnx.ReadModelWith(path, importOptions(job, job.Teacher.Model))
		if err != nil {
			return nil, nil, job.Errorf("teacher.file", "%v", err)
		}
		tm, st, err := rundir.LoadModel(f)
		if err != nil {
			return nil, nil, job.Errorf("teacher.file", "%s: %v", path, err)
		}
		if st.Dataset != job.Dataset {
			return nil, nil, job.Errorf("teacher.file", "%s was trained on %s, the job trains on %s", path, st.Dataset, job.Dataset)
		}
		d := checkpoint.WeightsDigest(f.Tensors)
		if rp != nil && len(rp.state.Teachers) > 0 && rp.state.Teachers[0] != d {
			return nil, nil, fmt.Errorf("run: teacher %s is not the model file the checkpoint %s was trained with", path, rp.path)
		}
		log.Info("teacher loaded from its model file", "path", path, "params", tm.NumParams())
		return []*model.Model{tm}, []string{d}, nil
	}
	for k := 0; k < job.Teacher.Count; k++ {
		tj, tdir := teacherJob(job, k), filepath.Join(dir, "teacher")
		if job.Teacher.Count > 1 {
			tdir = filepath.Join(dir, fmt.Sprintf("teacher-%d", k+1))
		}
		var tm *model.Model
		if resume {
			if _, err := os.Stat(filepath.Join(tdir, rundir.SummaryFile)); err == nil {
				f, err := checkpoint.Read(filepath.Join(tdir, rundir.ModelFile))
				if err != nil {
					return nil, nil, fmt.Errorf("run: teacher: %w", err)
				}
				d := checkpoint.WeightsDigest(f.Tensors)
				if rp != nil && k < len(rp.state.Teachers) && rp.state.Teachers[k] != d {
					return nil, nil, fmt.Errorf("run: teacher %s: its model file is not the one the checkpoint %s was trained with", tdir, rp.path)
				}
				if tm, _, err = rundir.LoadModel(f); err != nil {
					return nil, nil, fmt.Errorf("run: teacher: %w", err)
				}
				log.Info("teacher loaded from its model file", "path", filepath.Join(tdir, rundir.ModelFile))
			}
		}
		if tm == nil {
			log.Info("training the teacher first", "job", tj.Name, "model", tj.Model.Arch, "epochs", tj.Epochs, "seed", tj.Seed, "run_dir", tdir)
			topts := opts
			topts.RunDir, topts.Policies, topts.ResumeFrom = tdir, nil, ""
			names, _ := rundir.CheckpointFiles(filepath.Join(tdir, rundir.CheckpointDir))
			topts.Resume = resume && len(names) > 0
			var err error
			if _, tm, err = execute(ctx, tj, topts); err != nil {
				return nil, nil, fmt.Errorf("run: teacher: %w", err)
			}
		}
		f, err := rundir.ExportModel(tm, tj.Name, tj.Dataset, tj.Files())
		if err != nil {
			return nil, nil, err
		}
		teachers, digests = append(teachers, tm), append(digests, checkpoint.WeightsDigest(f.Tensors))
	}
	return teachers, digests, nil
}

// perClass sets the summary's per-class figures: each class's recall,
// their mean, the confusion matrix and the classes' names.
func perClass(sum *rundir.Summary, preds trainer.Predictions, test *data.Set) {
	recall, macro := preds.Recall(test.Labels, test.Classes)
	sum.MacroAccuracy, sum.PerClassRecall, sum.Confusion = macro, nil, preds.Confusion(test.Labels, test.Classes)
	sum.ClassNames = test.ClassNames
	for _, r := range recall {
		if math.IsNaN(r) {
			sum.PerClassRecall = append(sum.PerClassRecall, nil)
		} else {
			sum.PerClassRecall = append(sum.PerClassRecall, &r)
		}
	}
}

// beyondAccuracy reports what compression did besides accuracy: each
// class's recall and their mean, expected calibration error (15 bins) on
// the test set; for a quantized model also
// that of its float counterpart (quantization off) and their top-1
// agreement; with a teacher, the student's top-1 agreement with it.
func beyondAccuracy(sum *rundir.Summary, m *model.Model, teachers []*model.Model, eng compute.Engine, test *data.Set, batch int) error {
	preds, err := trainer.PredictModel(m, eng, test, batch)
	if err != nil {
		return err
	}
	sum.ECE = preds.ECE(15)
	if test.Positions > 0 { // a language model: bits per character, not 256 classes' recalls
		bpc, vb := preds.Loss/math.Ln2, sum.ValLoss/math.Ln2
		sum.TestBPC, sum.ValBPC = &bpc, &vb
	} else {
		perClass(sum, preds, test)
	}
	runtime.GC() // the graph just used is garbage; the next one reuses its memory
	if len(m.Quant) > 0 {
		saved := map[string]bool{}
		for k, c := range m.Quant {
			saved[k], c.Enabled = c.Enabled, false
		}
		float, err := trainer.PredictModel(m, eng, test, batch)
		for k, c := range m.Quant {
			c.Enabled = saved[k]
		}
		if err != nil {
			return err
		}
		e := float.ECE(15)
		a := trainer.Agreement(preds, float)
		sum.ECEUncompressed, sum.FloatAgreement = &e, &a
	}
	if len(teachers) > 0 {
		tp, err := trainer.PredictEnsemble(teachers, eng, test, batch)
		if err != nil {
			return err
		}
		a := trainer.Agreement(preds, tp)
		sum.TeacherAgreement, sum.TeacherTestAccuracy = &a, tp.Accuracy()
	}
	return nil
}

// teacherJob is the job that trains a recipe's k-th teacher: the recipe's
// dataset and its splits (the same training, validation and test samples
// as the student's), batch, class balance, label smoothing, augmentation
// and optimizer, seed + k, the teacher block's model and epochs, and no
// compression.
func teacherJob(job *recipes.Job, k int) *recipes.Job {
	name := job.Name + "-teacher"
	if job.Teacher.Count > 1 {
		name = fmt.Sprintf("%s-teacher-%d", job.Name, k+1)
	}
	tj := &recipes.Job{Name: name, Dataset: job.Dataset, DataDir: job.DataDir, TestFraction: job.TestFraction, ValidationFraction: job.ValidationFraction, SplitSeed: job.SplitSeed,
		ImageSize: job.ImageSize, TrainWindows: job.TrainWindows, Seed: job.Seed + uint64(k), Epochs: job.Teacher.Epochs,
		Batch: job.Batch, EvalBatch: job.EvalBatch, Validation: job.Validation, ClassBalance: job.ClassBalance, LabelSmoothing: job.LabelSmoothing, Threads: job.Threads,
		Augment: job.Augment, Model: job.Teacher.Model, Optimizer: job.Optimizer, File: job.File, Ranges: job.Ranges, Checkpoint: job.Checkpoint,
		Variables: job.Variables}
	return tj
}

// ptqAccuracy evaluates the model with every weight fake-quantized after training.
func ptqAccuracy(m *model.Model, eng compute.Engine, test *data.Set, batch int, widths []int) (map[string]float64, error) {
	out := map[string]float64{}
	for _, bits := range widths {
		acc, err := quantizedAccuracy(m, eng, test, batch, func(string) int { return bits })
		if err != nil {
			return nil, err
		}
		out[fmt.Sprintf("%d", bits)] = acc
	}
	return out, nil
}

// quantizedAccuracy evaluates the model with each weight fake-quantized
// (symmetric, per channel) to bitsOf(its name) bits; m's own quantization
// is left as it was.
func quantizedAccuracy(m *model.Model, eng compute.Engine, set *data.Set, batch int, bitsOf func(string) int) (float64, error) {
	saved := m.Quant
	defer func() { m.Quant = saved }()
	m.Quant = map[string]*model.QuantControl{}
	for _, w := range m.Weights() {
		m.Quant[w.Name] = &model.QuantControl{Spec: model.QuantSpec{Bits: bitsOf(w.Name), Symmetric: true, PerChannel: true}, Enabled: true}
	}
	acc, _, err := trainer.EvaluateModel(m, eng, set, batch)
	return acc, err
}

// thin rebuilds the model without its dead neurons and filters and
// evaluates the result.
func thin(m *model.Model, eng compute.Engine, test *data.Set, batch int) (*rundir.Thinned, *model.Model, error) {
	thin := m.Thin // a preset chain: dead units' constant outputs folded onward
	if m.Spec.Arch == "" || m.Net.Basic() != nil {
		thin = m.ThinGroups // any network: the channels its groups carry as zeros
	}
	small, rep, err := thin()
	if err != nil {
		return nil, nil, err
	}
	acc, _, err := trainer.EvaluateModel(small, eng, test, batch)
	if err != nil {
		return nil, nil, err
	}
	t := &rundir.Thinned{TestAccuracy: acc, ParamsTotal: small.NumParams()}
	for i := range rep.Layers {
		t.Layers = append(t.Layers, rundir.ThinnedLayer{Name: rep.Layers[i], Shape: rep.After[i], Removed: rep.Removed[i]})
	}
	return t, small, nil
}

// writeSensitivity writes sensitivity.json and sensitivity.csv.
func writeSensitivity(dir string, t trainer.SensitivityTable) error {
	if err := rundir.WriteJSON(filepath.Join(dir, rundir.SensitivityFile), t); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	var b strings.Builder
	b.WriteString("layer,sparsity,val_accuracy,baseline_val_accuracy,suggested_target\n")
	for _, r := range t.Rows {
		fmt.Fprintf(&b, "%s,%g,%g,%g,%g\n", r.Layer, r.Sparsity, r.Accuracy, t.Baseline, t.Suggested[r.Layer])
	}
	if err := checkpoint.WriteAtomic(filepath.Join(dir, rundir.SensitivityCSV), []byte(b.String())); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

// peakRSS is the largest resident set of this process or its children, in bytes.
func peakRSS() int64 {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	return max(self.Maxrss, kids.Maxrss) * 1024 // Linux reports KiB
}
