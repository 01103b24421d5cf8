package run

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
// device-resident path (trainer.DeviceMLP) does not do yet.
func checkDeviceJob(job *recipes.Job, opts Options, dev compute.Device) error {
	no := func(field, what string) error {
		return job.Errorf(field, "%s is not supported on the %s device yet (it trains MLPs and LeNet-5 with sgd, magnitude pruning, weight QAT and distillation from a teacher trained in the run); run this recipe on the CPU", what, dev.Name())
	}
	switch {
	case opts.Cluster != nil:
		return fmt.Errorf("run: a device run is not spread over cluster workers yet")
	case opts.Resume || opts.ResumeFrom != "":
		return fmt.Errorf("run: a device run does not write or resume checkpoints yet")
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
	case job.Cluster != nil:
		return no("cluster", "weight clustering")
	case job.Distill != nil && job.Distill.Hint != nil:
		return no("distill.hint", "hint distillation")
	case job.Distill != nil && job.Teacher == nil:
		return no("distill", "distillation without a teacher block")
	case job.Teacher != nil && job.Teacher.File != "":
		return no("teacher.file", "a teacher from a model file")
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

// deviceNet describes the model's layers for trainer.DeviceNet and returns
// its initial weights and biases.
func deviceNet(job *recipes.Job, m *model.Model) (layers []trainer.DeviceLayer, w, b [][]float32, err error) {
	if layers, err = trainer.DeviceLayersOf(m); err != nil {
		return nil, nil, nil, job.Errorf("model.arch", "model %q: %v", job.Model.Arch, err)
	}
	for _, p := range m.Params {
		if p.Bias {
			b = append(b, slices.Clone(p.Data()))
		} else {
			w = append(w, slices.Clone(p.Data()))
		}
	}
	return layers, w, b, nil
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
// every step runs there (trainer.DeviceMLP), and the run directory gets
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
	dir := opts.RunDir
	if dir == "" {
		dir = filepath.Join("runs", job.Name)
	}
	var teacher *trainer.DeviceMLP
	var teacherAcc float64
	if job.Teacher != nil {
		// The student's run directory first (the teacher's goes inside it).
		if err := prepareDir(dir, job.Name); err != nil {
			return nil, nil, err
		}
		if err := writeJSON(filepath.Join(dir, ManifestFile), newManifest(job.Name, job.File, job.Seed, compute.Info{Engine: dev.Name(), BLAS: "device"})); err != nil {
			return nil, nil, fmt.Errorf("run: %w", err)
		}
		tj := teacherJob(job, 0)
		log.Info("training the teacher first", "job", tj.Name, "model", tj.Model.Arch, "epochs", tj.Epochs, "device", dev.Name())
		var tsum *Summary
		if tsum, _, teacher, err = trainOnDevice(ctx, tj, filepath.Join(dir, "teacher"), opts, sets, nil, 0, log.Named("teacher")); err != nil {
			return nil, nil, fmt.Errorf("run: teacher: %w", err)
		}
		defer teacher.Free()
		log.Info("teacher trained", "test_accuracy", tsum.TestAccuracy)
		teacherAcc = tsum.TestAccuracy
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
func trainOnDevice(ctx context.Context, job *recipes.Job, dir string, opts Options, sets *deviceSets, teacher *trainer.DeviceMLP,
	teacherAcc float64, log hclog.Logger) (*Summary, *model.Model, *trainer.DeviceMLP, error) {
	start := time.Now()
	dev := opts.Device
	if job.Batch > sets.train.N {
		return nil, nil, nil, job.Errorf("batch", "batch %d exceeds the %d training samples", job.Batch, sets.train.N)
	}
	m, err := model.New(model.Spec{Arch: job.Model.Arch, Hidden: job.Model.Hidden, Dropout: job.Model.Dropout,
		InputDropout: job.Model.InputDropout, Init: job.Model.Init}, model.MNISTInput, job.Seed)
	if err != nil {
		return nil, nil, nil, job.Errorf("model.arch", "%v", err)
	}
	layers, w0, b0, err := deviceNet(job, m)
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
		every := pb.EverySamples
		switch {
		case pb.EverySteps > 0:
			every = pb.EverySteps * int64(job.Batch)
		case every == 0:
			every = max(1, int64(pb.EveryEpochs*float64(epochSamples)))
		}
		ps.sched = schedule.Sparsity{Kind: pb.Schedule, Initial: pb.Initial, Final: pb.Target, Power: pb.Power,
			Start: int64(pb.FromEpoch * float64(epochSamples)), End: int64(pb.ToEpoch * float64(epochSamples)), Every: every}
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

	net, err := trainer.NewDeviceNet(dev, layers, job.Batch, job.Seed)
	if err != nil {
		return nil, nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			net.Free()
		}
	}()
	if err := net.SetWeights(w0, b0); err != nil {
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

	if err := prepareDir(dir, job.Name); err != nil {
		return nil, nil, nil, err
	}
	if err := os.RemoveAll(filepath.Join(dir, CheckpointDir)); err != nil {
		return nil, nil, nil, fmt.Errorf("run: %w", err)
	}
	info := compute.Info{Engine: dev.Name(), BLAS: "device"}
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
	if job.Checkpoint.EverySteps > 0 || opts.CheckpointEverySteps > 0 {
		log.Warn("a device run writes no checkpoints yet")
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
	sparsity := 0.0
	log.Info("training on the device", "device", dev.Name(), "job", job.Name, "model", job.Model.Arch, "epochs", job.Epochs, "steps_per_epoch", steps)
	for ep := 0; ep < job.Epochs; ep++ {
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
					bits = q.bits
					for l, over := range qlayers {
						b := q.bits
						if over > 0 { // layer_bits pins the width once on
							b = over
						}
						if err := net.SetLayerQuant(l, b, job.Quantize.Granularity != "per_channel"); err != nil {
							return nil, nil, nil, job.Errorf("quantize.bits", "%v", err)
						}
						m.Quant[names[l]].Enabled, m.Quant[names[l]].Spec.Bits = true, b
					}
					log.Info("quantization", "bits", q.bits, "step", stepNo+1)
				}
			}
			rate = lr.At(seen)
			st := trainer.DeviceStep{LR: float32(rate), Momentum: float32(o.Momentum), WeightDecay: float32(o.WeightDecay), Step: stepNo,
				T: kdT, Alpha: kdAlpha}
			net.TrainStep(sets.train, idx, shifts, sets.host.Rows, sets.host.Cols, s*job.Batch, st, teacher)
			seen, stepNo = to, stepNo+1
			if opts.Progress != nil && ((s+1)%50 == 0 || s+1 == steps) {
				secs := time.Since(epStart).Seconds()
				opts.Progress(trainer.Progress{Epoch: ep + 1, Epochs: job.Epochs, Step: s + 1, Steps: steps,
					SamplesPerSec: float64((s+1)*job.Batch) / secs})
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
			n := float64(len(w0[l]))
			zeros, total = zeros+sp*n, total+n
		}
		em.Sparsity = zeros / total
		sparsity = em.Sparsity
		history = append(history, em)
		if err := metrics.write(em); err != nil {
			return nil, nil, nil, err
		}
		log.Info("epoch", "epoch", ep+1, "train_loss", fmt.Sprintf("%.4f", em.TrainLoss), "val_accuracy", fmt.Sprintf("%.4f", em.ValAccuracy),
			"sparsity", fmt.Sprintf("%.3f", sparsity), "samples_per_second", int(em.SamplesPerSec))
	}
	testAcc, testLoss, err := net.Evaluate(sets.test)
	if err != nil {
		return nil, nil, nil, err
	}
	w, b, err := net.Weights()
	if err != nil {
		return nil, nil, nil, err
	}
	wi, bi := 0, 0
	for _, p := range m.Params {
		if p.Bias {
			copy(p.Data(), b[bi])
			bi++
		} else {
			copy(p.Data(), w[wi])
			wi++
		}
	}
	sum := &Summary{Job: job.Name, Dataset: job.Dataset, Model: job.Model.Arch, Seed: job.Seed, Batch: job.Batch,
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
