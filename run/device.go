package run

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/recipes"
	"github.com/lathe-ml/lathe/schedule"
	"github.com/lathe-ml/lathe/trainer"
)

// checkDeviceJob refuses, naming the recipe's field, what the
// device-resident path (trainer.DeviceNet) does not do yet.
func checkDeviceJob(job *recipes.Job, opts Options, dev compute.Device) error {
	no := func(field, what string) error {
		return job.Errorf(field, "%s is not supported on the %s device yet (it trains MLPs and LeNet-5 with sgd, magnitude pruning, weight QAT and distillation from a teacher trained in the run or read from a model file); run this recipe on the CPU", what, dev.Name())
	}
	switch {
	case opts.Cluster != nil:
		return fmt.Errorf("run: a device run is not spread over cluster workers yet")
	case job.Optimizer.Kind != "sgd":
		return no("optimizer.kind", fmt.Sprintf("optimizer %q", job.Optimizer.Kind))
	case job.Optimizer.Nesterov:
		return no("optimizer.nesterov", "Nesterov momentum")
	case len(job.Regularize) > 0:
		return no("regularize.0", "regularization")
	case len(job.Factorize) > 0:
		return no("factorize.0", "low-rank factorization")
	case job.Sensitivity != nil:
		return no("sensitivity", "sensitivity analysis")
	case job.ThinAtEpoch > 0:
		return no("thin_at_epoch", "thinning")
	case job.KMeans != nil:
		return no("cluster", "weight clustering")
	case job.Distill != nil && job.Distill.Hint != nil:
		return no("distill.hint", "hint distillation")
	case job.Distill != nil && job.Teacher == nil:
		return no("distill", "distillation without a teacher block")
	case job.Teacher != nil && job.Teacher.Count > 1:
		return no("teacher.count", "a teacher ensemble")
	}
	if q := job.Quantize; q != nil {
		switch {
		case q.Activations > 0:
			return no("quantize.activations", "activation quantization")
		case !q.Symmetric:
			return no("quantize.symmetric", "asymmetric quantization")
		}
	}
	for i, p := range job.Prune {
		f := func(s string) string { return fmt.Sprintf("prune.%d.%s", i, s) }
		switch {
		case p.Method != "magnitude":
			return no(f("method"), fmt.Sprintf("%s pruning", p.Method))
		case p.GuardTolerance > 0:
			return no(f("guard_tolerance"), "the accuracy guard")
		case p.TargetsFrom != "":
			return no(f("targets_from"), "targets from a sensitivity analysis")
		}
	}
	return nil
}

// deviceNet describes the model's layers for trainer.DeviceNet, or says
// which the device path does not train, naming the recipe's field.
func deviceNet(job *recipes.Job, m *model.Model) ([]trainer.DeviceLayer, error) {
	layers, err := trainer.DeviceLayersOf(m)
	if err != nil {
		return nil, job.Errorf("model.arch", "model %q: %v", job.Model.Arch, err)
	}
	return layers, nil
}

// deviceSets are a job's data sets on the device.
type deviceSets struct {
	train, val, test *trainer.DeviceData
	host             *data.Set // the training set, for shifts
}

func (s *deviceSets) free(dev compute.Device) {
	for _, d := range []*trainer.DeviceData{s.train, s.val, s.test} {
		if d != nil {
			d.Free(dev)
		}
	}
}

// executeDevice runs job on opts.Device: the data sets are uploaded once,
// every step runs there (trainer.DeviceNet), and the run directory gets
// the same files as on the CPU except checkpoints.
func executeDevice(ctx context.Context, job *recipes.Job, opts Options) (*Summary, *model.Model, error) {
	dev := opts.Device
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if err := checkDeviceJob(job, opts, dev); err != nil {
		return nil, nil, err
	}
	release, err := LockDir(runDir(job, opts))
	if err != nil {
		return nil, nil, err
	}
	defer release()
	train, test, err := data.Load(job.Dataset, opts.DataDir)
	if err != nil {
		return nil, nil, err
	}
	train, val, err := data.SplitValidation(train, job.Validation)
	if err != nil {
		return nil, nil, job.Errorf("validation", "%v", err)
	}
	sets := &deviceSets{host: train}
	defer sets.free(dev)
	if sets.train, err = trainer.UploadSet(dev, train); err != nil {
		return nil, nil, err
	}
	if val.Len() > 0 {
		if sets.val, err = trainer.UploadSet(dev, val); err != nil {
			return nil, nil, err
		}
	}
	if sets.test, err = trainer.UploadSet(dev, test); err != nil {
		return nil, nil, err
	}
	dir := runDir(job, opts)
	var teacher *trainer.DeviceNet
	var teacherAcc float64
	if job.Teacher != nil && job.Teacher.File != "" {
		// A trained teacher from its model file, checked as on the CPU.
		tms, _, err := trainTeachers(ctx, job, dir, opts, false, nil, log)
		if err != nil {
			return nil, nil, err
		}
		layers, err := trainer.DeviceLayersOf(tms[0])
		if err != nil {
			return nil, nil, job.Errorf("teacher.file", "%v", err)
		}
		if teacher, err = trainer.NewDeviceNet(dev, layers, job.Batch, job.Seed); err != nil {
			return nil, nil, err
		}
		defer teacher.Free()
		if err := teacher.SetWeightsFrom(tms[0]); err != nil {
			return nil, nil, err
		}
	} else if job.Teacher != nil {
		// The student's run directory first (the teacher's goes inside it).
		if err := prepareDir(dir, job.Name); err != nil {
			return nil, nil, err
		}
		if err := writeJSON(filepath.Join(dir, ManifestFile), newManifest(job.Name, job.File, job.Seed, deviceInfo(dev))); err != nil {
			return nil, nil, fmt.Errorf("run: %w", err)
		}
		tj, tdir := teacherJob(job, 0), filepath.Join(dir, "teacher")
		resumed := false
		if resume := opts.Resume || opts.ResumeFrom != ""; resume {
			if teacher, teacherAcc, err = loadDeviceTeacher(dev, tj, tdir, job.Batch); err != nil {
				return nil, nil, err
			}
			resumed = teacher != nil
		}
		if !resumed {
			log.Info("training the teacher first", "job", tj.Name, "model", tj.Model.Arch, "epochs", tj.Epochs, "device", dev.Name())
			topts := opts
			topts.Resume, topts.ResumeFrom = false, ""
			var tsum *Summary
			if tsum, _, teacher, err = trainOnDevice(ctx, tj, tdir, topts, sets, nil, 0, log.Named("teacher")); err != nil {
				return nil, nil, fmt.Errorf("run: teacher: %w", err)
			}
			log.Info("teacher trained", "test_accuracy", tsum.TestAccuracy)
			teacherAcc = tsum.TestAccuracy
		}
		defer teacher.Free()
	}
	sum, m, net, err := trainOnDevice(ctx, job, dir, opts, sets, teacher, teacherAcc, log)
	if net != nil {
		net.Free()
	}
	return sum, m, err
}

// trainOnDevice trains one job (a teacher or the student) on the device
// and writes its run directory; it returns the trained network, still on
// the device, with the model holding its weights.
func trainOnDevice(ctx context.Context, job *recipes.Job, dir string, opts Options, sets *deviceSets, teacher *trainer.DeviceNet,
	teacherAcc float64, log hclog.Logger) (sum *Summary, m *model.Model, net *trainer.DeviceNet, err error) {
	start := time.Now()
	dev := opts.Device
	if job.Batch > sets.train.N {
		return nil, nil, nil, job.Errorf("batch", "batch %d exceeds the %d training samples", job.Batch, sets.train.N)
	}
	m, err = model.New(model.Spec{Arch: job.Model.Arch, Hidden: job.Model.Hidden, Dropout: job.Model.Dropout,
		InputDropout: job.Model.InputDropout, Init: job.Model.Init}, model.MNISTInput, job.Seed)
	if err != nil {
		return nil, nil, nil, job.Errorf("model.arch", "%v", err)
	}
	layers, err := deviceNet(job, m)
	if err != nil {
		return nil, nil, nil, err
	}
	weights := m.Weights()
	layerIndex := func(field, name string) (int, error) {
		for i, p := range weights {
			if p.Name == name {
				return i, nil
			}
		}
		return 0, job.Errorf(field, "the model has no weight %q", name)
	}
	steps := data.Steps(sets.train.N, job.Batch)
	epochSamples := int64(steps * job.Batch)
	o := job.Optimizer
	lr := schedule.LR{Kind: o.Schedule, Base: o.LR, Min: o.MinLR, Warmup: int64(o.WarmupEpochs * float64(epochSamples)),
		Total: epochSamples * int64(job.Epochs), Every: int64(o.StepEpochs * float64(epochSamples)), Gamma: o.Gamma}
	if err := lr.Validate(); err != nil {
		return nil, nil, nil, job.Errorf("optimizer.lr_schedule", "%v", err)
	}
	type pruneSched struct {
		sched  schedule.Sparsity
		layers []int
		global bool
	}
	var prunes []pruneSched
	for bi, pb := range job.Prune {
		ps := pruneSched{global: pb.Scope == "global"}
		for _, name := range pb.Layers {
			l, err := layerIndex(fmt.Sprintf("prune.%d.layers", bi), name)
			if err != nil {
				return nil, nil, nil, err
			}
			ps.layers = append(ps.layers, l)
		}
		ps.sched = pruneSchedule(job, pb, epochSamples)
		if err := ps.sched.Validate(); err != nil {
			return nil, nil, nil, job.Errorf(fmt.Sprintf("prune.%d.schedule", bi), "%v", err)
		}
		prunes = append(prunes, ps)
	}
	type quantStep struct {
		start int64
		bits  int
	}
	var qsteps []quantStep
	qlayers := map[int]int{} // layer → bits override
	if q := job.Quantize; q != nil {
		qsteps = append(qsteps, quantStep{int64(q.FromEpoch * float64(epochSamples)), q.Bits})
		for i, b := range q.Gradual {
			qsteps = append(qsteps, quantStep{int64(q.GradualEpochs[i] * float64(epochSamples)), b})
		}
		m.Quant = map[string]*compress.QuantControl{}
		for _, name := range q.Layers {
			l, err := layerIndex("quantize.layers", name)
			if err != nil {
				return nil, nil, nil, err
			}
			qlayers[l] = 0
			if b, ok := q.LayerBits[name]; ok {
				qlayers[l] = b
			}
			m.Quant[name] = &compress.QuantControl{Spec: compress.QuantSpec{Bits: q.Bits, Symmetric: true, PerChannel: q.Granularity == "per_channel"}}
		}
	}

	net, err = trainer.NewDeviceNet(dev, layers, job.Batch, job.Seed)
	if err != nil {
		return nil, nil, nil, err
	}
	ok, built := false, net // the results are nil on an error return
	defer func() {
		if !ok {
			built.Free()
		}
	}()
	if err := net.SetWeightsFrom(m); err != nil {
		return nil, nil, nil, err
	}
	if job.Model.Dropout > 0 || job.Model.InputDropout > 0 {
		if err := net.SetDropout(job.Model.InputDropout, job.Model.Dropout, job.Seed^0x64726f70); err != nil {
			return nil, nil, nil, job.Errorf("model.dropout", "%v", err)
		}
	}
	idx, err := dev.Alloc(sets.train.N)
	if err != nil {
		return nil, nil, nil, err
	}
	defer dev.Free(idx)
	var shifts compute.Buffer
	batcher := data.Batcher{Set: sets.host, Augment: data.Augment{Shift: job.Augment.Shift}, Seed: job.Seed}
	if job.Augment.Shift > 0 {
		if shifts, err = dev.Alloc(2 * sets.train.N); err != nil {
			return nil, nil, nil, err
		}
		defer dev.Free(shifts)
	}

	var rf *checkpoint.File
	var rs *DeviceResume
	if opts.Resume || opts.ResumeFrom != "" {
		if rf, rs, err = loadDeviceResume(job, dir, opts.ResumeFrom, log); err != nil {
			return nil, nil, nil, err
		}
	}
	if err := prepareDir(dir, job.Name); err != nil {
		return nil, nil, nil, err
	}
	if rs == nil {
		// A fresh run: an earlier run's checkpoints must not be resumed into
		// this one.
		if err := removeCheckpoints(dir); err != nil {
			return nil, nil, nil, err
		}
	}
	info := deviceInfo(dev)
	if err := writeJSON(filepath.Join(dir, ManifestFile), newManifest(job.Name, job.File, job.Seed, info)); err != nil {
		return nil, nil, nil, fmt.Errorf("run: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, RecipeFile), job.HCL()); err != nil {
		return nil, nil, nil, fmt.Errorf("run: %w", err)
	}
	metrics, err := newMetricsWriter(filepath.Join(dir, MetricsFile), m, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	defer metrics.close()
	status := startStatus(dir, job.Name, job.Epochs, job.Batch, nil, log)
	defer func() { status.end(ctx, err) }()
	if job.Checkpoint.EverySteps > 0 || opts.CheckpointEverySteps > 0 {
		log.Warn("a device run writes its checkpoints at epoch ends only")
	}

	var kdT, kdAlpha float32
	if job.Distill != nil {
		kdT, kdAlpha = float32(job.Distill.Temperature), float32(job.Distill.Alpha)
	}
	var names []string
	for _, p := range weights {
		names = append(names, p.Name)
	}
	var history []trainer.EpochMetrics
	var seen, stepNo int64
	var trainSecs float64
	bits := 0
	startEpoch := 0
	setQuant := func(b int) error {
		bits = b
		for l, over := range qlayers {
			lb := b
			if over > 0 { // layer_bits pins the width once on
				lb = over
			}
			if err := net.SetLayerQuant(l, lb, job.Quantize.Granularity != "per_channel"); err != nil {
				return job.Errorf("quantize.bits", "%v", err)
			}
			m.Quant[names[l]].Enabled, m.Quant[names[l]].Spec.Bits = true, lb
		}
		return nil
	}
	if rs != nil {
		st, err := deviceStateFrom(rf, m)
		if err != nil {
			return nil, nil, nil, err
		}
		if err := net.SetState(st); err != nil {
			return nil, nil, nil, err
		}
		startEpoch, stepNo, seen, history = rs.Epoch, rs.Step, rs.Seen, rs.History
		for _, em := range history {
			trainSecs += em.TrainSeconds
			if err := metrics.write(em); err != nil {
				return nil, nil, nil, err
			}
		}
		if rs.Bits > 0 {
			if err := setQuant(rs.Bits); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	log.Info("training on the device", "device", dev.Name(), "job", job.Name, "model", job.Model.Arch, "epochs", job.Epochs, "steps_per_epoch", steps,
		"from_epoch", startEpoch+1)
	for ep := startEpoch; ep < job.Epochs; ep++ {
		order := data.Order(job.Seed, ep, sets.train.N)
		o32 := make([]int32, len(order))
		for i, v := range order {
			o32[i] = int32(v)
		}
		if err := dev.UploadInt32(idx, o32); err != nil {
			return nil, nil, nil, err
		}
		if shifts != nil {
			sh := make([]int32, 2*sets.train.N)
			for id := range sets.train.N {
				dy, dx := batcher.Shift(id, ep)
				sh[2*id], sh[2*id+1] = int32(dy), int32(dx)
			}
			if err := dev.UploadInt32(shifts, sh); err != nil {
				return nil, nil, nil, err
			}
		}
		net.ResetStats()
		epStart := time.Now()
		var rate float64
		for s := 0; s < steps; s++ {
			if err := ctx.Err(); err != nil {
				return nil, nil, nil, err
			}
			from, to := seen, seen+int64(job.Batch)
			for _, ps := range prunes {
				if t, ok := ps.sched.EventIn(from, to); ok {
					target := ps.sched.Target(t)
					if ps.global {
						_, err = net.Prune(target, ps.layers)
					} else {
						for _, l := range ps.layers {
							if _, err = net.Prune(target, []int{l}); err != nil {
								break
							}
						}
					}
					if err != nil {
						return nil, nil, nil, err
					}
				}
			}
			for _, q := range qsteps {
				if q.start >= from && q.start < to {
					if err := setQuant(q.bits); err != nil {
						return nil, nil, nil, err
					}
					log.Info("quantization", "bits", q.bits, "step", stepNo+1)
				}
			}
			rate = lr.At(seen)
			st := trainer.DeviceStep{LR: float32(rate), Momentum: float32(o.Momentum), WeightDecay: float32(o.WeightDecay), Step: stepNo,
				T: kdT, Alpha: kdAlpha}
			net.TrainStep(sets.train, idx, shifts, sets.host.Rows, sets.host.Cols, s*job.Batch, st, teacher)
			seen, stepNo = to, stepNo+1
			if (s+1)%50 == 0 || s+1 == steps {
				secs := time.Since(epStart).Seconds()
				p := trainer.Progress{Epoch: ep + 1, Epochs: job.Epochs, Step: s + 1, Steps: steps,
					SamplesPerSec: float64((s+1)*job.Batch) / secs}
				status.progress(p)
				if opts.Progress != nil {
					opts.Progress(p)
				}
			}
		}
		ts, err := net.ReadStats() // waits for the epoch's steps
		if err != nil {
			return nil, nil, nil, err
		}
		secs := time.Since(epStart).Seconds()
		trainSecs += secs
		em := trainer.EpochMetrics{Epoch: ep + 1, Steps: stepNo, SamplesSeen: seen, LR: rate,
			TrainLoss: ts.Loss / float64(epochSamples), DistillLoss: ts.Distill / float64(epochSamples),
			TrainAccuracy: ts.Correct / float64(epochSamples), TrainSeconds: secs, SamplesPerSec: float64(epochSamples) / secs,
			LayerNames: names, WeightBits: bits}
		if sets.val != nil {
			if em.ValAccuracy, em.ValLoss, err = net.Evaluate(sets.val); err != nil {
				return nil, nil, nil, err
			}
		}
		if em.LayerSparsity, err = net.LayerSparsity(); err != nil {
			return nil, nil, nil, err
		}
		var zeros, total float64
		for l, sp := range em.LayerSparsity {
			n := float64(weights[l].Size())
			zeros, total = zeros+sp*n, total+n
		}
		em.Sparsity = zeros / total
		history = append(history, em)
		if err := metrics.write(em); err != nil {
			return nil, nil, nil, err
		}
		log.Info("epoch", "epoch", ep+1, "train_loss", fmt.Sprintf("%.4f", em.TrainLoss), "val_accuracy", fmt.Sprintf("%.4f", em.ValAccuracy),
			"sparsity", fmt.Sprintf("%.3f", em.Sparsity), "samples_per_second", int(em.SamplesPerSec))
		if err := writeDeviceCheckpoint(dir, job, m, net, &DeviceResume{Epoch: ep + 1, Step: stepNo, Seen: seen, Bits: bits,
			History: history, Device: dev.Name()}, log); err != nil {
			return nil, nil, nil, err
		}
	}
	testAcc, testLoss, err := net.Evaluate(sets.test)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := net.WeightsInto(m); err != nil {
		return nil, nil, nil, err
	}
	sum = &Summary{Job: job.Name, Dataset: job.Dataset, Model: job.Model.Arch, Seed: job.Seed, Batch: job.Batch,
		TestAccuracy: testAcc, TestLoss: testLoss, Epochs: job.Epochs, Steps: stepNo, SamplesSeen: seen,
		SamplesPerSecond: float64(seen) / trainSecs, TrainSeconds: trainSecs, Engine: dev.Name(), Layers: m.Layers(), History: history,
		TeacherTestAccuracy: teacherAcc}
	if n := len(history); n > 0 {
		sum.ValAccuracy, sum.ValLoss = history[n-1].ValAccuracy, history[n-1].ValLoss
	}
	for _, l := range sum.Layers {
		sum.ParamsTotal += l.Params
		sum.ParamsNonzero += l.Nonzero
	}
	sum.DenseBytes = 4 * sum.ParamsTotal
	mf, err := ExportModel(m, job.Name, job.Dataset)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := checkpoint.Write(filepath.Join(dir, ModelFile), mf); err != nil {
		return nil, nil, nil, err
	}
	sum.ModelBytes = mf.Bytes
	sum.ModelRatio = float64(sum.DenseBytes) / float64(mf.Bytes)
	sum.PeakRSSBytes = peakRSS()
	sum.WallSeconds = time.Since(start).Seconds()
	if err := writeJSON(filepath.Join(dir, SummaryFile), sum); err != nil {
		return nil, nil, nil, fmt.Errorf("run: %w", err)
	}
	log.Info("job done", "test_accuracy", sum.TestAccuracy, "val_accuracy", sum.ValAccuracy, "samples_per_second", int(sum.SamplesPerSecond),
		"wall_seconds", sum.WallSeconds, "model_bytes", mf.Bytes, "summary", filepath.Join(dir, SummaryFile))
	ok = true
	return sum, m, net, nil
}

// DeviceResume is a device run's place in a training checkpoint
// (TrainingState.Device): the network's state is in the tensors.
type DeviceResume struct {
	Epoch   int                    `json:"epoch"` // epochs completed
	Step    int64                  `json:"step"`
	Seen    int64                  `json:"samples_seen"`
	Bits    int                    `json:"weight_bits"`
	History []trainer.EpochMetrics `json:"history"`
	Device  string                 `json:"device"` // the device that wrote it
}

// loadDeviceTeacher puts a teacher whose run completed (summary and model
// file in tdir) on the device; nil when there is none to load.
func loadDeviceTeacher(dev compute.Device, tj *recipes.Job, tdir string, batch int) (*trainer.DeviceNet, float64, error) {
	b, err := os.ReadFile(filepath.Join(tdir, SummaryFile))
	if err != nil {
		return nil, 0, nil
	}
	var ts Summary
	if err := json.Unmarshal(b, &ts); err != nil {
		return nil, 0, fmt.Errorf("run: teacher: %s: %w", filepath.Join(tdir, SummaryFile), err)
	}
	f, err := checkpoint.Read(filepath.Join(tdir, ModelFile))
	if err != nil {
		return nil, 0, fmt.Errorf("run: teacher: %w", err)
	}
	tm, _, err := LoadModel(f)
	if err != nil {
		return nil, 0, fmt.Errorf("run: teacher: %w", err)
	}
	layers, err := deviceNet(tj, tm)
	if err != nil {
		return nil, 0, err
	}
	net, err := trainer.NewDeviceNet(dev, layers, batch, tj.Seed)
	if err != nil {
		return nil, 0, err
	}
	if err := net.SetWeightsFrom(tm); err != nil {
		net.Free()
		return nil, 0, err
	}
	return net, ts.TestAccuracy, nil
}

// deviceCheckpoint is the training checkpoint of a device run after the
// epoch in rs.
func deviceCheckpoint(job *recipes.Job, m *model.Model, st *trainer.DeviceNetState, rs *DeviceResume) (*checkpoint.File, error) {
	b, err := json.Marshal(TrainingState{Recipe: string(job.HCL()), Dataset: job.Dataset, Input: m.Input, Device: rs})
	if err != nil {
		return nil, fmt.Errorf("run: checkpoint state: %w", err)
	}
	f := &checkpoint.File{Kind: checkpoint.KindTraining, Job: job.Name, Version: Version, State: b}
	wi, bi := 0, 0
	var optim [][]float32
	for _, p := range m.Params {
		if p.Bias {
			f.Tensors = append(f.Tensors, &checkpoint.Tensor{Name: p.Name, Role: checkpoint.RoleParam, Shape: p.Shape, Data: st.B[bi]})
			optim = append(optim, st.VB[bi])
			bi++
			continue
		}
		mask := make([]byte, len(st.Mask[wi]))
		for i, v := range st.Mask[wi] {
			if v != 0 {
				mask[i] = 1
			}
		}
		f.Tensors = append(f.Tensors, &checkpoint.Tensor{Name: p.Name, Role: checkpoint.RoleParam, Shape: p.Shape, Data: st.W[wi]},
			&checkpoint.Tensor{Name: "mask/" + p.Name, Role: checkpoint.RoleMask, Shape: p.Shape, Mask: mask})
		optim = append(optim, st.VW[wi])
		wi++
	}
	f.Tensors = appendNumbered(f.Tensors, "optim/", optim)
	return f, nil
}

// deviceStateFrom reads a device run's checkpoint back: the network's
// state for a model of m's architecture.
func deviceStateFrom(f *checkpoint.File, m *model.Model) (*trainer.DeviceNetState, error) {
	st := &trainer.DeviceNetState{}
	optim := numbered(f, "optim/")
	if len(optim) != len(m.Params) {
		return nil, fmt.Errorf("run: %d optimizer buffers for %d parameters", len(optim), len(m.Params))
	}
	for i, p := range m.Params {
		t := f.Tensor(p.Name)
		if t == nil || len(t.Data) != p.Size() || len(optim[i]) != p.Size() {
			return nil, fmt.Errorf("run: the checkpoint has no %s of %d values", p.Name, p.Size())
		}
		if p.Bias {
			st.B, st.VB = append(st.B, t.Data), append(st.VB, optim[i])
			continue
		}
		mt := f.Tensor("mask/" + p.Name)
		if mt == nil || len(mt.Mask) != p.Size() {
			return nil, fmt.Errorf("run: the checkpoint has no mask of %s", p.Name)
		}
		mask := make([]float32, p.Size())
		for j, v := range mt.Mask {
			mask[j] = float32(v)
		}
		st.W, st.VW, st.Mask = append(st.W, t.Data), append(st.VW, optim[i]), append(st.Mask, mask)
	}
	return st, nil
}

// loadDeviceResume reads the checkpoint a device run resumes from (the
// newest valid one in the run directory, or path) and checks it belongs
// to this recipe; nil when there is none (the run starts afresh).
func loadDeviceResume(job *recipes.Job, dir, path string, log hclog.Logger) (*checkpoint.File, *DeviceResume, error) {
	var f *checkpoint.File
	var err error
	if path != "" {
		if f, err = checkpoint.Read(path); err != nil {
			return nil, nil, err
		}
	} else {
		names, _ := checkpointFiles(filepath.Join(dir, CheckpointDir))
		if len(names) == 0 {
			log.Warn("no checkpoint to resume from; starting from the beginning", "dir", filepath.Join(dir, CheckpointDir))
			return nil, nil, nil
		}
		if f, path, err = newestCheckpoint(filepath.Join(dir, CheckpointDir), log); err != nil {
			return nil, nil, err
		}
	}
	if f.Kind != checkpoint.KindTraining || f.Job != job.Name {
		return nil, nil, fmt.Errorf("run: %s is not a training checkpoint of job %q", path, job.Name)
	}
	var st TrainingState
	if err := json.Unmarshal(f.State, &st); err != nil || st.Device == nil {
		return nil, nil, fmt.Errorf("run: %s was not written by a device run (resume it without --device): %v", path, err)
	}
	old, err := recipes.Parse([]byte(st.Recipe), path+" (its recipe)", nil)
	if err != nil {
		return nil, nil, fmt.Errorf("run: %s: its recipe: %w", path, err)
	}
	if ch := job.HistoryChanges(old); len(ch) > 0 {
		return nil, nil, fmt.Errorf("run: %s: the recipe changed since the checkpoint in ways that would change the run's history:\n  %s",
			job.File, strings.Join(ch, "\n  "))
	}
	// Device checkpoints are written at epochs' ends: the position is a
	// whole number of epochs of the recipe.
	d, spe := st.Device, int64(stepsPerEpoch(job))
	if d.Epoch < 0 || d.Epoch > job.Epochs || d.Step != int64(d.Epoch)*spe || d.Seen != d.Step*int64(job.Batch) || len(d.History) != d.Epoch {
		return nil, nil, fmt.Errorf("run: %s: state: epoch %d, step %d, samples_seen %d, %d epochs of history: not the end of an epoch of this recipe (%d epochs of %d steps, batch %d)",
			path, d.Epoch, d.Step, d.Seen, len(d.History), job.Epochs, spe, job.Batch)
	}
	log.Info("resuming", "checkpoint", path, "step", st.Device.Step, "epoch", st.Device.Epoch+1)
	return f, st.Device, nil
}

// writeDeviceCheckpoint writes the epoch-end checkpoint of a device run
// and keeps the recipe's number of newest ones.
func writeDeviceCheckpoint(dir string, job *recipes.Job, m *model.Model, net *trainer.DeviceNet, rs *DeviceResume, log hclog.Logger) error {
	st, err := net.State()
	if err != nil {
		return err
	}
	f, err := deviceCheckpoint(job, m, st, rs)
	if err != nil {
		return err
	}
	cdir := filepath.Join(dir, CheckpointDir)
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	path := filepath.Join(cdir, checkpointName(rs.Step))
	if err := checkpoint.Write(path, f); err != nil {
		return err
	}
	names, err := checkpointFiles(cdir)
	if err != nil {
		return err
	}
	for len(names) > max(job.Checkpoint.Keep, 1) {
		if err := os.Remove(filepath.Join(cdir, names[0])); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		names = names[1:]
	}
	log.Debug("checkpoint written", "path", path, "step", rs.Step, "bytes", f.Bytes)
	return nil
}

// deviceInfo describes a device for the manifest.
func deviceInfo(dev compute.Device) compute.Info {
	if d, ok := dev.(compute.Describer); ok {
		return d.Describe()
	}
	return compute.Info{Engine: dev.Name()}
}
