package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/cluster"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/rundir"
	"github.com/lathe-ml/lathe/trainer"
)

// replicaOpts are a worker's phase: its replica and the files it starts
// from.
type replicaOpts struct {
	par           *cluster.Replica
	teacherLogits []float32 // offline distillation's table, from the coordinator
	deviceAuto    bool      // the worker's --device auto: fall back to the CPU for what the device cannot do
	teachers      []*model.Model
	resume        *checkpoint.File
	postTrained   *checkpoint.File // the coordinator's post-trained model file
}

func (p *replicaRun) postTrain(_ context.Context, job *recipes.Job, _ Options, _ hclog.Logger) error {
	if p.r.postTrained == nil {
		return nil
	}
	return usePostTrained(job, p.r.postTrained)
}

// replicaRun is a worker's replica of a cluster phase: it computes its
// micro-shards' gradients and applies the update the coordinator's
// replica applies, and writes no file.
type replicaRun struct{ r *replicaOpts }

func (*replicaRun) ownsDir() bool                  { return false }
func (*replicaRun) oneThread() bool                { return true }
func (p *replicaRun) resumeFile() *checkpoint.File { return p.r.resume }

// teacherLogits are the coordinator's.
func (p *replicaRun) teacherLogits(context.Context, *jobRun) ([]float32, error) {
	if p.r.teacherLogits == nil {
		return nil, errors.New("run: the phase distils offline but came without the teacher logits")
	}
	return p.r.teacherLogits, nil
}

// attach trains as the phase's replica, without checkpoints or a test
// evaluation, its gradients from the worker's device when it has one.
func (p *replicaRun) attach(_ context.Context, st *jobRun, cfg *trainer.Config, _ *rundir.Checkpointer, tr func() *trainer.Trainer) (func(), error) {
	cfg.Parallel, cfg.Checkpoint, cfg.Test = p.r.par, nil, nil
	p.r.par.SetStateCodec(cluster.StateCodec{Encode: func(sn *trainer.Snapshot) ([]byte, error) {
		return rundir.SyncState(sn, st.job.Name, tr().Model())
	}})
	return replicaGradients(st.job, &st.opts, cfg, st.plan.Fields, st.log)
}

// evaluateAll takes the coordinator's table: masks are decided in one
// place.
func (p *replicaRun) evaluateAll(ctx context.Context, _ *jobRun, _ *trainer.Trainer) func([]trainer.SensitivityRow) (float64, []float64, error) {
	return func([]trainer.SensitivityRow) (float64, []float64, error) {
		b, err := p.r.par.Await(ctx, "sensitivity")
		if err != nil {
			return 0, nil, err
		}
		var res sensitivityResult
		if err := json.Unmarshal(b, &res); err != nil {
			return 0, nil, fmt.Errorf("run: the coordinator's sensitivity table: %w", err)
		}
		return res.Baseline, res.Accuracies, nil
	}
}

func (*replicaRun) summarize(*rundir.Summary, *trainer.Trainer) {}

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

// ReplicaPhase runs a cluster phase as one worker's replica: the recipe
// and files come from the coordinator, the data from dataDir (or where the
// dataset is installed). It is a cluster.PhaseFunc.
func ReplicaPhase(dataDir string, log hclog.Logger) cluster.PhaseFunc {
	return replicaPhase(dataDir, log, nil, nil, false)
}

// ReplicaPhaseOn is ReplicaPhase for a worker whose micro-shard gradients
// are computed on dev (a GPU). A phase the device cannot compute fails —
// or, with auto (the worker's --device auto), runs on the CPU.
func ReplicaPhaseOn(dataDir string, log hclog.Logger, dev compute.Device, auto bool) cluster.PhaseFunc {
	return replicaPhase(dataDir, log, nil, dev, auto)
}

// replicaPhase is ReplicaPhase with extra policies (the tests inject faults)
// and a device.
func replicaPhase(dataDir string, log hclog.Logger, extra []trainer.Policy, dev compute.Device, auto bool) cluster.PhaseFunc {
	return func(ctx context.Context, spec cluster.PhaseSpec, files map[string][]byte, par *cluster.Replica) error {
		job, err := recipes.Parse(spec.Recipe, spec.File, nil)
		if err != nil {
			return fmt.Errorf("run: the phase's recipe: %w", err)
		}
		if !slices.Equal(recipeLines(job.HCL()), recipeLines(spec.Recipe)) {
			return fmt.Errorf("run: the phase's recipe %s does not read back the same here (another lathe version?)", spec.File)
		}
		r := &replicaOpts{par: par, deviceAuto: auto}
		for _, name := range spec.Teachers {
			f, err := checkpoint.Decode(files[name])
			if err != nil {
				return fmt.Errorf("run: teacher %s: %w", name, err)
			}
			tm, _, err := rundir.LoadModel(f)
			if err != nil {
				return fmt.Errorf("run: teacher %s: %w", name, err)
			}
			r.teachers = append(r.teachers, tm)
		}
		if spec.Resume != "" {
			if r.resume, err = checkpoint.Decode(files[spec.Resume]); err != nil {
				return fmt.Errorf("run: the phase's checkpoint: %w", err)
			}
		}
		if spec.PostTrained != "" {
			if r.postTrained, err = checkpoint.Decode(files[spec.PostTrained]); err != nil {
				return fmt.Errorf("run: the phase's post-trained model file: %w", err)
			}
		}
		if spec.TeacherLogits != "" {
			f, err := checkpoint.Decode(files[spec.TeacherLogits])
			if err != nil {
				return fmt.Errorf("run: the phase's teacher logits: %w", err)
			}
			if r.teacherLogits, err = logitsFrom(f); err != nil {
				return err
			}
		}
		dir, cleanup, err := datasetDir(dataDir, spec.Data, files, log)
		if err != nil {
			return err
		}
		defer cleanup()
		_, _, err = execute(ctx, job, Options{DataDir: dir, Logger: log, replica: r, Policies: extra, Device: dev})
		return err
	}
}
