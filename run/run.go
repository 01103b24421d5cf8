package run

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
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
	"github.com/lathe-ml/lathe/recipes"
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
	// batch below it).
	Cluster     *cluster.Coordinator
	MicroShards int
	// Device, when set, trains device-resident on it (a GPU through
	// compute/cuda) through the trainer's one loop (trainer.Config.Device);
	// what it cannot do yet (trainer.DeviceSupports) is refused naming the
	// recipe field. A worker's replica computes its gradients there.
	Device compute.Device

	replica *replicaOpts // set when this process is a worker's replica
}

// replicaOpts are a worker's phase: its replica and the files it starts
// from.
type replicaOpts struct {
	par           *cluster.Replica
	teacherLogits []float32 // offline distillation's table, from the coordinator
	deviceAuto    bool      // the worker's --device auto: fall back to the CPU for what the device cannot do
	teachers      []*model.Model
	resume        *checkpoint.File
}

// Summary is summary.json.
type Summary struct {
	Job              string  `json:"job"`
	Dataset          string  `json:"dataset"`
	Model            string  `json:"model"`
	Seed             uint64  `json:"seed"`
	Batch            int     `json:"batch"`
	TestAccuracy     float64 `json:"test_accuracy"`
	TestLoss         float64 `json:"test_loss"`
	ValAccuracy      float64 `json:"val_accuracy"`
	ValLoss          float64 `json:"val_loss"`
	Epochs           int     `json:"epochs"`
	Steps            int64   `json:"steps"`
	SamplesSeen      int64   `json:"samples_seen"`
	SamplesPerSecond float64 `json:"samples_per_second"`
	TrainSeconds     float64 `json:"train_seconds"`
	WallSeconds      float64 `json:"wall_seconds"`
	ParamsTotal      int     `json:"params_total"`
	ParamsNonzero    int     `json:"params_nonzero"`
	DenseBytes       int     `json:"dense_bytes"`
	// ModelBytes is the size of model.arrow, and ModelRatio DenseBytes (the
	// fp32 size of the model as trained, before any thinning at the end)
	// divided by it.
	ModelBytes   int     `json:"model_bytes"`
	ModelRatio   float64 `json:"model_ratio"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	GuardPauses  int     `json:"guard_pauses"` // times an accuracy guard paused pruning
	// ResumedFromStep is the step the run resumed from (0: a fresh run).
	ResumedFromStep int64 `json:"resumed_from_step"`
	Ranks           []int `json:"ranks,omitempty"` // ranks of the factorize blocks, in order
	// PTQ is the test accuracy of the final float weights quantized after
	// training, by bit width (runs without a quantize block).
	PTQ map[string]float64 `json:"ptq_test_accuracy,omitempty"`
	// Cluster describes the workers of a cluster run.
	Cluster *ClusterSummary `json:"cluster,omitempty"`
	// TeacherTestAccuracy is the distillation teacher's test accuracy.
	TeacherTestAccuracy float64 `json:"teacher_test_accuracy,omitempty"`
	// ECE is the expected calibration error (15 bins) on the test set;
	// ECEUncompressed that of the float counterpart of a quantized model, and
	// FloatAgreement the two's top-1 agreement; TeacherAgreement the top-1
	// agreement with the distillation teacher.
	ECE              float64  `json:"ece"`
	ECEUncompressed  *float64 `json:"ece_uncompressed,omitempty"`
	FloatAgreement   *float64 `json:"float_agreement,omitempty"`
	TeacherAgreement *float64 `json:"teacher_agreement,omitempty"`
	Engine           string   `json:"engine"`
	// Thinned is set when structured pruning left whole neurons or filters
	// at zero: the model rebuilt without them, evaluated on the test set.
	Thinned *Thinned               `json:"thinned,omitempty"`
	Layers  []model.LayerInfo      `json:"layers"`
	History []trainer.EpochMetrics `json:"history"`
}

// Thinned describes the physically smaller model thinning produced.
type Thinned struct {
	TestAccuracy float64        `json:"test_accuracy"`
	ParamsTotal  int            `json:"params_total"`
	Layers       []ThinnedLayer `json:"layers"`
}

// ThinnedLayer is one layer of a thinned model.
type ThinnedLayer struct {
	Name    string `json:"name"`
	Shape   []int  `json:"shape"`
	Removed int    `json:"removed"` // neurons or filters
}

// Execute runs a job in-process and returns its summary; the run directory
// holds the files listed in the package comment.
func Execute(ctx context.Context, job *recipes.Job, opts Options) (*Summary, error) {
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

// execute is Execute, also returning the trained model.
func execute(ctx context.Context, job *recipes.Job, opts Options) (sum *Summary, trained *model.Model, err error) {
	if err := Check(job); err != nil {
		return nil, nil, err
	}
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	dir := runDir(job, opts)
	if opts.replica == nil {
		release, err := LockDir(dir)
		if err != nil {
			return nil, nil, err
		}
		defer release()
	}
	train, test, err := data.Load(job.Dataset, opts.DataDir)
	if err != nil {
		return nil, nil, err
	}
	train, val, err := data.SplitValidation(train, job.Validation)
	if err != nil {
		return nil, nil, job.Errorf("validation", "%v", err)
	}
	if val.Len() == 0 {
		val = nil
	}
	plan, err := Build(job, train.Len(), log)
	if err != nil {
		return nil, nil, err
	}
	m := plan.Model
	rp, threads, resumeTeachers, err := resumeState(job, &opts, dir, log)
	if err != nil {
		return nil, nil, err
	}
	eng := cpu.New(cpu.Options{Threads: threads, Logger: log})
	info, engine := eng.Describe(), eng.Name()
	cpuThreads := info.Threads // a device's results can depend on them too (the host device's BLAS)
	device := opts.Device      // trains the whole step there (a replica's device computes gradients only)
	if opts.replica != nil {
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

	var metrics *metricsWriter
	var teachers []*model.Model
	var digests []string
	if r := opts.replica; r != nil {
		teachers = r.teachers // a worker's replica writes no file
	} else {
		if metrics, err = startFiles(job, dir, m, rp, info); err != nil {
			return nil, nil, err
		}
		defer metrics.close()
		if teachers, digests, err = trainTeachers(ctx, job, dir, opts, resumeTeachers, rp, log); err != nil {
			return nil, nil, err
		}
	}

	st := &jobRun{job: job, opts: opts, log: log, dir: dir, start: start, train: train, val: val, test: test, plan: plan,
		eng: eng, engine: engine, info: info, device: device, cpuThreads: cpuThreads, rp: rp, opt: opt, optCfg: optCfg,
		sens: sens, policies: policies, metrics: metrics, teachers: teachers, digests: digests}
	return st.run(ctx)
}

// jobRun is what execute prepared for a job's training: the data, the
// plan, the engine and device, the resume point, the optimizer and
// policies, the teachers and the open metrics file.
type jobRun struct {
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
	metrics          *metricsWriter
	teachers         []*model.Model
	digests          []string
}

// run trains the job (locally, on the cluster, or as a worker's replica)
// and finishes it.
func (st *jobRun) run(ctx context.Context) (sum *Summary, trained *model.Model, err error) {
	job, opts, log, dir, train, val, test := st.job, st.opts, st.log, st.dir, st.train, st.val, st.test
	plan, eng, engine, info, device, rp, opt, optCfg := st.plan, st.eng, st.engine, st.info, st.device, st.rp, st.opt, st.optCfg
	sens, policies, metrics, teachers, digests, m := st.sens, st.policies, st.metrics, st.teachers, st.digests, st.plan.Model
	factors, fields, kd := plan.Factorize, plan.Fields, plan.KD
	log.Info("job starting", "job", job.Name, "dataset", job.Dataset, "model", job.Model.Arch, "params", m.NumParams(),
		"train", train.Len(), "epochs", job.Epochs, "batch", job.Batch, "engine", engine, "blas", info.BLAS,
		"core_type", info.CoreType, "threads", info.Threads, "run_dir", dir)
	hint, err := hintConfig(job, m, teachers, optCfg)
	if err != nil {
		return nil, nil, err
	}
	ckpt := &checkpointer{dir: filepath.Join(dir, CheckpointDir), job: job, threads: st.cpuThreads, teachers: digests, log: log}
	every := job.Checkpoint.EverySteps
	if opts.CheckpointEverySteps > 0 {
		every = opts.CheckpointEverySteps
	}
	startModel := m
	var resume *trainer.Snapshot
	if rp != nil {
		// The policies were built for the recipe's model; training goes on
		// with the checkpoint's, which shares its quantization controls.
		rp.model.Quant, rp.model.ActQuant = m.Quant, m.ActQuant
		startModel, resume, ckpt.best = rp.model, rp.state.Snapshot, rp.state.BestValAccuracy
	}
	// The teachers' model files for the cluster's store, made once for
	// the logits tasks and the phase.
	var tobj *storeFiles
	teacherFiles := func() (*storeFiles, error) {
		if tobj == nil {
			var err error
			if tobj, err = teacherObjects(job, teachers); err != nil {
				return nil, err
			}
		}
		return tobj, nil
	}
	// Offline distillation: the teachers' logits for the training set,
	// once (the coordinator's, for a worker's replica).
	var tlogits []float32
	var tlogitsFile []byte
	if kd != nil && job.Distill.Offline {
		if tlogits, tlogitsFile, err = offlineLogits(ctx, job, opts, teachers, digests, train, eng, dir, teacherFiles, log); err != nil {
			return nil, nil, err
		}
	}
	var par *cluster.Replica
	if opts.Cluster != nil {
		tf, err := teacherFiles()
		if err != nil {
			return nil, nil, err
		}
		if par, err = startPhase(ctx, job, opts, tf, rp, tlogitsFile); err != nil {
			return nil, nil, err
		}
		defer opts.Cluster.EndPhase()
	}
	var tr *trainer.Trainer
	ckpt.model = func() *model.Model { return tr.Model() }
	cfg := trainer.Config{Parallel: parallel(par),
		Resume: resume, Checkpoint: ckpt.write, CheckpointEpochs: job.Checkpoint.EveryEpochs, CheckpointSteps: every,
		Model: startModel, Engine: eng, Train: train, Val: val, Test: test, Batch: job.Batch, EvalBatch: job.EvalBatch,
		Epochs: job.Epochs, Seed: job.Seed, Augment: data.Augment{Shift: job.Augment.Shift}, Optimizer: opt,
		Policies: append(policies, opts.Policies...),
		Logger:   log.Named("trainer"), Progress: opts.Progress, Factorize: factors, ThinAtEpoch: job.ThinAtEpoch,
		Teachers: teachers, KD: kd, Hint: hint, TeacherLogits: tlogits, Device: device,
	}
	if metrics != nil {
		cfg.EndEpoch = metrics.write
	}
	if par != nil {
		// Workers that register while the phase runs join it at a step
		// ahead, from this trainer's state there.
		cfg.ShareState = func(sn *trainer.Snapshot) error {
			f, err := ckpt.trainingFile(sn, tr.Model())
			if err != nil {
				return err
			}
			b, err := checkpoint.Encode(f)
			if err != nil {
				return err
			}
			return opts.Cluster.Admit(sn.Step, b)
		}
		par.Joinable()
	}
	if opts.replica != nil {
		cfg.Parallel, cfg.Checkpoint, cfg.Test = opts.replica.par, nil, nil
		free, err := replicaGradients(job, &opts, &cfg, fields, log)
		if err != nil {
			return nil, nil, err
		}
		defer free()
	}
	if rep, ok := cfg.Parallel.(*cluster.Replica); ok && rep != nil {
		// Last, after every policy that changes the weights: the replicas'
		// digests, which the coordinator compares.
		cfg.Policies = append(cfg.Policies, &trainer.DigestPolicy{Every: cluster.DigestEvery, Publish: rep.SetDigest})
	}
	var status *statusWriter
	if opts.replica == nil {
		status = startStatus(dir, job.Name, job.Epochs, job.Batch, opts.Cluster, log)
		cfg.Progress = func(p trainer.Progress) {
			status.progress(p)
			if opts.Progress != nil {
				opts.Progress(p)
			}
		}
		defer func() { status.end(ctx, err) }()
	}
	if tr, err = trainer.New(cfg); err != nil {
		return nil, nil, deviceError(job, err, fields)
	}
	defer tr.Close()
	if sens != nil {
		wireSensitivity(ctx, sens, tr, val, job, opts, dir, log)
	}
	res, err := tr.Run(ctx)
	if err == nil && opts.replica != nil {
		return nil, tr.Model(), nil
	}
	if err != nil {
		if ctx.Err() != nil && opts.replica == nil {
			log.Warn("interrupted: checkpoint written; continue with --resume", "run_dir", dir)
		}
		return nil, nil, err
	}
	sum, err = finish(res, tr, resume, par, teachers, eng, engine, test, job, opts, dir, log)
	if err != nil {
		return nil, nil, err
	}
	sum.WallSeconds = time.Since(st.start).Seconds()
	if err := writeJSON(filepath.Join(dir, SummaryFile), sum); err != nil {
		return nil, nil, fmt.Errorf("run: %w", err)
	}
	log.Info("job done", "test_accuracy", sum.TestAccuracy, "val_accuracy", sum.ValAccuracy,
		"samples_per_second", int(sum.SamplesPerSecond), "wall_seconds", sum.WallSeconds, "summary", filepath.Join(dir, SummaryFile))
	return sum, tr.Model(), nil
}

// resumeState finds what a run resumes from (a worker's phase checkpoint,
// the newest in the run directory, or opts.ResumeFrom; nil: it starts
// afresh, and opts says so), the compute threads it runs on (a resumed
// run keeps the checkpoint's: results depend on them), and whether the
// teachers resume too.
func resumeState(job *recipes.Job, opts *Options, dir string, log hclog.Logger) (rp *resumePoint, threads int, resumeTeachers bool, err error) {
	threads = job.Threads
	if opts.Threads > 0 {
		threads = opts.Threads
	}
	if opts.Cluster != nil || opts.replica != nil {
		// Replicas must agree to the bit: one thread (OpenBLAS's results
		// depend on its thread count), the same everywhere.
		threads = 1
	}
	if r := opts.replica; r != nil && r.resume != nil {
		opts.Resume, opts.ResumeFrom = false, ""
		if rp, err = loadResume(r.resume, "the phase's checkpoint", job, log); err != nil {
			return nil, 0, false, err
		}
	}
	resumeTeachers = opts.Resume || opts.ResumeFrom != ""
	if opts.Resume && opts.ResumeFrom == "" {
		if names, err := checkpointFiles(filepath.Join(dir, CheckpointDir)); err != nil {
			return nil, 0, false, err
		} else if len(names) == 0 {
			// Nothing written yet (or killed while a teacher trained, which
			// resumes on its own): a wrapper that always passes --resume
			// starts the run.
			log.Warn("no checkpoint to resume from; starting from the beginning", "dir", filepath.Join(dir, CheckpointDir))
			opts.Resume = false
		}
	}
	if opts.Resume || opts.ResumeFrom != "" {
		var f *checkpoint.File
		path := opts.ResumeFrom
		if path != "" {
			f, err = checkpoint.Read(path)
		} else {
			f, path, err = newestCheckpoint(filepath.Join(dir, CheckpointDir), log)
		}
		if err != nil {
			return nil, 0, false, err
		}
		if rp, err = loadResume(f, path, job, log); err != nil {
			return nil, 0, false, err
		}
		switch {
		case opts.Cluster != nil:
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
func startFiles(job *recipes.Job, dir string, m *model.Model, rp *resumePoint, info compute.Info) (metrics *metricsWriter, err error) {
	if err := prepareDir(dir, job.Name); err != nil {
		return nil, err
	}
	if rp == nil {
		// A fresh run: an earlier run's checkpoints must not be resumed
		// into this one.
		if err := removeCheckpoints(dir); err != nil {
			return nil, err
		}
	}
	man := newManifest(job.Name, job.File, job.Seed, info)
	if err := writeJSON(filepath.Join(dir, ManifestFile), man); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, RecipeFile), job.HCL()); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	if metrics, err = newMetricsWriter(filepath.Join(dir, MetricsFile), m, job.Factorize); err != nil {
		return nil, err
	}
	if rp != nil {
		for _, em := range rp.state.Snapshot.History {
			if err := metrics.write(em); err != nil {
				return nil, err
			}
		}
	}
	return metrics, nil
}

// offlineLogits are the teachers' logits for the training set, computed
// once for offline distillation (across the workers on a cluster; a
// worker's replica gets the coordinator's) and written beside the run,
// with the file's bytes for the cluster's store.
func offlineLogits(ctx context.Context, job *recipes.Job, opts Options, teachers []*model.Model, digests []string, train *data.Set,
	eng compute.Engine, dir string, teacherFiles func() (*storeFiles, error), log hclog.Logger) (tlogits []float32, tlogitsFile []byte, err error) {
	if opts.replica != nil {
		if tlogits = opts.replica.teacherLogits; tlogits == nil {
			return nil, nil, errors.New("run: the phase distils offline but came without the teacher logits")
		}
	} else {
		t0 := time.Now()
		if opts.Cluster != nil {
			// Split across the workers, each a range of whole batches,
			// with one thread as here: the same bits.
			var tf *storeFiles
			if tf, err = teacherFiles(); err == nil {
				tlogits, err = clusterTeacherLogits(ctx, job, opts, tf, train, log)
			}
		} else {
			tlogits, err = trainer.TeacherLogits(teachers, eng, train, job.EvalBatch)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("run: teacher logits: %w", err)
		}
		f := logitsFile(job, train, tlogits, digests)
		if err := checkpoint.Write(filepath.Join(dir, TeacherLogitsFile), f); err != nil {
			return nil, nil, err
		}
		if opts.Cluster != nil {
			if tlogitsFile, err = checkpoint.Encode(f); err != nil {
				return nil, nil, err
			}
		}
		log.Info("teacher logits computed for offline distillation", "samples", train.Len(), "ms", time.Since(t0).Milliseconds(),
			"file", filepath.Join(dir, TeacherLogitsFile), "bytes", f.Bytes)
	}
	return tlogits, tlogitsFile, nil
}

// replicaGradients gives a CUDA worker's replica its micro-shards'
// gradients from the device, where it computes what cfg asks (with
// --device auto the phase falls back to the CPU, saying why); free
// releases the device's buffers.
func replicaGradients(job *recipes.Job, opts *Options, cfg *trainer.Config, fields policyFields, log hclog.Logger) (free func(), err error) {
	free = func() {}
	var teacher *model.Model // the distillation teacher the device runs
	if opts.Device != nil {
		// A CUDA worker: its micro-shards' gradients come from the device.
		c := *cfg
		c.Device = opts.Device
		unsupported := deviceError(job, trainer.DeviceSupports(c, true), fields)
		if unsupported == nil && len(cfg.Teachers) == 1 && cfg.KD != nil {
			teacher = cfg.Teachers[0]
		}
		if unsupported != nil && !opts.replica.deviceAuto {
			return nil, unsupported
		}
		if unsupported != nil {
			// --device auto: this job on the CPU, the next one perhaps on the GPU.
			log.Warn("computing this phase's gradients on the CPU", "reason", unsupported)
			opts.Device = nil
		}
	}
	if opts.Device != nil {
		g, err := trainer.NewDeviceGradients(opts.Device, cfg.Model, job.Batch/opts.replica.par.MicroShards(), teacher, cfg.KD, job.Seed)
		if err != nil {
			return nil, err
		}
		cfg.Gradients, free = g, g.Free
		log.Info("computing gradients on the device", "device", opts.Device.Name())
	}
	return free, nil
}

// wireSensitivity gives a sensitivity analysis its evaluations: on this
// trainer, spread over the cluster's workers (whose table then goes to
// the replicas), or — a worker's replica — the coordinator's table, so
// masks are decided in one place.
func wireSensitivity(ctx context.Context, sens *trainer.SensitivityPolicy, tr *trainer.Trainer, val *data.Set, job *recipes.Job, opts Options, dir string, log hclog.Logger) {
	sens.Evaluate = func() (float64, error) {
		acc, _, err := tr.Evaluate(val)
		return acc, err
	}
	switch {
	case opts.Cluster != nil:
		// Each cell a task for a worker, from a model file of the
		// weights as they are at the analysis; the table then goes to
		// the replicas, which wait for it.
		sens.EvaluateAll = func(cells []trainer.SensitivityRow) (float64, []float64, error) {
			base, accs, err := clusterSensitivity(ctx, job, opts, tr.Model(), cells, log)
			if err == nil {
				b, _ := json.Marshal(sensitivityResult{Baseline: base, Accuracies: accs})
				opts.Cluster.Share("sensitivity", b)
			}
			return base, accs, err
		}
	case opts.replica != nil:
		// A worker's replica takes the coordinator's table: masks are
		// decided in one place.
		sens.EvaluateAll = func(cells []trainer.SensitivityRow) (float64, []float64, error) {
			b, err := opts.replica.par.Await(ctx, "sensitivity")
			if err != nil {
				return 0, nil, err
			}
			var r sensitivityResult
			if err := json.Unmarshal(b, &r); err != nil {
				return 0, nil, fmt.Errorf("run: the coordinator's sensitivity table: %w", err)
			}
			return r.Baseline, r.Accuracies, nil
		}
	}
	sens.Write = func(t trainer.SensitivityTable) error {
		if opts.replica != nil {
			return nil
		}
		return writeSensitivity(dir, t)
	}
}

// finish is the one summary of a trained run, on the CPU or a device:
// what training measured, then what the trained model does (calibration,
// agreement, post-training quantization, thinning), and the model file
// written.
func finish(res *trainer.Result, tr *trainer.Trainer, resume *trainer.Snapshot, par *cluster.Replica, teachers []*model.Model, eng compute.Engine,
	engine string, test *data.Set, job *recipes.Job, opts Options, dir string, log hclog.Logger) (*Summary, error) {
	var err error
	// The end-of-run evaluations build graphs of their own: free the
	// training graphs first, and collect between them, so that their
	// buffers do not pile up before the collector runs.
	tr.Release()
	runtime.GC()
	sum := &Summary{
		Job: job.Name, Dataset: job.Dataset, Model: job.Model.Arch, Seed: job.Seed, Batch: job.Batch,
		TestAccuracy: res.TestAccuracy, TestLoss: res.TestLoss, ValAccuracy: res.ValAccuracy, ValLoss: res.ValLoss,
		Epochs: job.Epochs, Steps: res.Steps, SamplesSeen: res.SamplesSeen, SamplesPerSecond: res.SamplesPerSec,
		TrainSeconds: res.TrainSeconds, Engine: engine, Layers: tr.Model().Layers(), History: res.Epochs, Ranks: res.Ranks,
	}
	if resume != nil {
		sum.ResumedFromStep = resume.Step
	}
	if par != nil {
		sum.Cluster = clusterSummary(opts.Cluster, par)
		sum.Cluster.GradientBytes = 4 * tr.Model().NumParams()
	}
	for _, l := range sum.Layers {
		sum.ParamsTotal += l.Params
		sum.ParamsNonzero += l.Nonzero
	}
	sum.DenseBytes = 4 * sum.ParamsTotal
	if err := beyondAccuracy(sum, tr.Model(), teachers, eng, test, job.EvalBatch); err != nil {
		return nil, err
	}
	runtime.GC()
	if n := len(res.Epochs); n > 0 {
		sum.GuardPauses = res.Epochs[n-1].GuardPauses
	}
	if job.Quantize == nil {
		// The post-training quantization baseline QAT is compared with: the
		// final float weights fake-quantized (per channel, symmetric).
		if sum.PTQ, err = ptq(tr.Model(), eng, test, job.EvalBatch, []int{8, 4}); err != nil {
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
	mf, err := ExportModel(final, job.Name, job.Dataset)
	if err != nil {
		return nil, err
	}
	if err := checkpoint.Write(filepath.Join(dir, ModelFile), mf); err != nil {
		return nil, err
	}
	sum.ModelBytes = mf.Bytes
	sum.ModelRatio = float64(sum.DenseBytes) / float64(mf.Bytes)
	log.Info("model file written", "path", filepath.Join(dir, ModelFile), "bytes", mf.Bytes, "dense_bytes", sum.DenseBytes,
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
	hidden := func(m *model.Model) (names []string, width map[string]int) {
		width = map[string]int{}
		ws := m.Weights()
		for _, w := range ws[:len(ws)-1] { // the last weight makes the logits
			if len(w.Shape) == 2 {
				names, width[w.Name] = append(names, w.Name), w.Shape[0]
			}
		}
		return names, width
	}
	sn, sw := hidden(m)
	if sw[h.Student] == 0 {
		return nil, job.Errorf("distill.hint", "the student (%s) has no hidden linear layer %q (it has %s)", m.Spec.Arch, h.Student, strings.Join(sn, ", "))
	}
	tn, tw := hidden(teachers[0])
	if tw[h.Teacher] == 0 {
		return nil, job.Errorf("distill.hint", "the teacher (%s) has no hidden linear layer %q (it has %s)", teachers[0].Spec.Arch, h.Teacher, strings.Join(tn, ", "))
	}
	opt, err := trainer.NewOptimizer(oc, []int{sw[h.Student] * tw[h.Teacher]})
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
		f, err := checkpoint.Read(path)
		if err != nil {
			return nil, nil, job.Errorf("teacher.file", "%v", err)
		}
		tm, st, err := LoadModel(f)
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
			if _, err := os.Stat(filepath.Join(tdir, SummaryFile)); err == nil {
				f, err := checkpoint.Read(filepath.Join(tdir, ModelFile))
				if err != nil {
					return nil, nil, fmt.Errorf("run: teacher: %w", err)
				}
				d := checkpoint.WeightsDigest(f.Tensors)
				if rp != nil && k < len(rp.state.Teachers) && rp.state.Teachers[k] != d {
					return nil, nil, fmt.Errorf("run: teacher %s: its model file is not the one the checkpoint %s was trained with", tdir, rp.path)
				}
				if tm, _, err = LoadModel(f); err != nil {
					return nil, nil, fmt.Errorf("run: teacher: %w", err)
				}
				log.Info("teacher loaded from its model file", "path", filepath.Join(tdir, ModelFile))
			}
		}
		if tm == nil {
			log.Info("training the teacher first", "job", tj.Name, "model", tj.Model.Arch, "epochs", tj.Epochs, "seed", tj.Seed, "run_dir", tdir)
			topts := opts
			topts.RunDir, topts.Policies, topts.ResumeFrom = tdir, nil, ""
			names, _ := checkpointFiles(filepath.Join(tdir, CheckpointDir))
			topts.Resume = resume && len(names) > 0
			var err error
			if _, tm, err = execute(ctx, tj, topts); err != nil {
				return nil, nil, fmt.Errorf("run: teacher: %w", err)
			}
		}
		f, err := ExportModel(tm, tj.Name, tj.Dataset)
		if err != nil {
			return nil, nil, err
		}
		teachers, digests = append(teachers, tm), append(digests, checkpoint.WeightsDigest(f.Tensors))
	}
	return teachers, digests, nil
}

// beyondAccuracy reports what compression did besides accuracy: expected
// calibration error (15 bins) on the test set; for a quantized model also
// that of its float counterpart (quantization off) and their top-1
// agreement; with a teacher, the student's top-1 agreement with it.
func beyondAccuracy(sum *Summary, m *model.Model, teachers []*model.Model, eng compute.Engine, test *data.Set, batch int) error {
	preds, err := trainer.PredictModel(m, eng, test, batch)
	if err != nil {
		return err
	}
	sum.ECE = preds.ECE(15)
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
// dataset, batch, validation, augmentation and optimizer, seed + k, the
// teacher block's model and epochs, and no compression.
func teacherJob(job *recipes.Job, k int) *recipes.Job {
	name := job.Name + "-teacher"
	if job.Teacher.Count > 1 {
		name = fmt.Sprintf("%s-teacher-%d", job.Name, k+1)
	}
	tj := &recipes.Job{Name: name, Dataset: job.Dataset, Seed: job.Seed + uint64(k), Epochs: job.Teacher.Epochs,
		Batch: job.Batch, EvalBatch: job.EvalBatch, Validation: job.Validation, Threads: job.Threads,
		Augment: job.Augment, Model: job.Teacher.Model, Optimizer: job.Optimizer, File: job.File, Ranges: job.Ranges, Checkpoint: job.Checkpoint,
		Variables: job.Variables}
	return tj
}

// ptq evaluates the model with every weight fake-quantized after training.
func ptq(m *model.Model, eng compute.Engine, test *data.Set, batch int, widths []int) (map[string]float64, error) {
	out := map[string]float64{}
	for _, bits := range widths {
		saved := m.Quant
		m.Quant = map[string]*model.QuantControl{}
		for _, w := range m.Weights() {
			m.Quant[w.Name] = &model.QuantControl{Spec: model.QuantSpec{Bits: bits, Symmetric: true, PerChannel: true}, Enabled: true}
		}
		acc, _, err := trainer.EvaluateModel(m, eng, test, batch)
		m.Quant = saved
		if err != nil {
			return nil, err
		}
		out[fmt.Sprintf("%d", bits)] = acc
	}
	return out, nil
}

// thin rebuilds the model without its dead neurons and filters and
// evaluates the result.
func thin(m *model.Model, eng compute.Engine, test *data.Set, batch int) (*Thinned, *model.Model, error) {
	small, rep, err := m.Thin()
	if err != nil {
		return nil, nil, err
	}
	acc, _, err := trainer.EvaluateModel(small, eng, test, batch)
	if err != nil {
		return nil, nil, err
	}
	t := &Thinned{TestAccuracy: acc, ParamsTotal: small.NumParams()}
	for i := range rep.Layers {
		t.Layers = append(t.Layers, ThinnedLayer{Name: rep.Layers[i], Shape: rep.After[i], Removed: rep.Removed[i]})
	}
	return t, small, nil
}

// writeSensitivity writes sensitivity.json and sensitivity.csv.
func writeSensitivity(dir string, t trainer.SensitivityTable) error {
	if err := writeJSON(filepath.Join(dir, SensitivityFile), t); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	var b strings.Builder
	b.WriteString("layer,sparsity,val_accuracy,baseline_val_accuracy,suggested_target\n")
	for _, r := range t.Rows {
		fmt.Fprintf(&b, "%s,%g,%g,%g,%g\n", r.Layer, r.Sparsity, r.Accuracy, t.Baseline, t.Suggested[r.Layer])
	}
	if err := writeFileAtomic(filepath.Join(dir, SensitivityCSV), []byte(b.String())); err != nil {
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

// metricsWriter appends one CSV row per epoch and flushes it to disk.
type metricsWriter struct {
	f      *os.File
	w      *csv.Writer
	layers []string // the sparsity columns, by weight name
}

var metricsHeader = []string{"epoch", "steps", "samples_seen", "lr", "train_loss", "extra_loss", "distill_loss", "train_accuracy", "val_loss", "val_accuracy", "train_seconds", "samples_per_second", "sparsity", "guard_pauses", "weight_bits"}

// newMetricsWriter starts metrics.csv: the fixed columns, then one
// sparsity_<layer> column per weight of m and per factor a factorize block
// will create (empty while the weight does not exist).
func newMetricsWriter(path string, m *model.Model, factors []recipes.Factorize) (*metricsWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	mw := &metricsWriter{f: f, w: csv.NewWriter(f)}
	header := slices.Clone(metricsHeader)
	for _, w := range m.Weights() {
		mw.layers = append(mw.layers, w.Name)
	}
	for _, f := range factors {
		mw.layers = append(mw.layers, f.Layer+".v", f.Layer+".u")
	}
	for _, l := range mw.layers {
		header = append(header, "sparsity_"+l)
	}
	mw.w.Write(header)
	mw.w.Flush()
	return mw, mw.w.Error()
}

func (mw *metricsWriter) write(m trainer.EpochMetrics) error {
	g := func(v float64) string { return strconv.FormatFloat(v, 'g', 8, 64) }
	row := []string{strconv.Itoa(m.Epoch), strconv.FormatInt(m.Steps, 10), strconv.FormatInt(m.SamplesSeen, 10),
		g(m.LR), g(m.TrainLoss), g(m.ExtraLoss), g(m.DistillLoss), g(m.TrainAccuracy), g(m.ValLoss), g(m.ValAccuracy), g(m.TrainSeconds), g(m.SamplesPerSec), g(m.Sparsity), strconv.Itoa(m.GuardPauses), strconv.Itoa(m.WeightBits)}
	for _, l := range mw.layers {
		cell := ""
		if k := slices.Index(m.LayerNames, l); k >= 0 {
			cell = g(m.LayerSparsity[k])
		}
		row = append(row, cell)
	}
	mw.w.Write(row)
	mw.w.Flush()
	if err := mw.w.Error(); err != nil {
		return fmt.Errorf("run: metrics: %w", err)
	}
	return mw.f.Sync()
}

func (mw *metricsWriter) close() { mw.f.Close() }
