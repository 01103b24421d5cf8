package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/distill"
	"github.com/lathe-ml/lathe/model"
)

// Config is everything one training run needs. Train, Model, Engine and
// Optimizer are required; Val and Test may be nil.
type Config struct {
	Model     *model.Model
	Engine    compute.Engine
	Train     *data.Set
	Val, Test *data.Set
	Batch     int // training batch (samples per step)
	EvalBatch int // evaluation batch; 0 means 1000
	Epochs    int
	Seed      uint64
	Augment   data.Augment
	// ClipNorm > 0 scales each step's gradients down to that global L2
	// norm when they exceed it (after the policies' extra terms).
	ClipNorm  float64
	Optimizer Optimizer
	Policies  []Policy
	Logger    hclog.Logger
	// Progress, if set, is called after every step.
	Progress func(Progress)
	// EndEpoch, if set, is called after each epoch's evaluation; an error
	// stops the run.
	EndEpoch func(EpochMetrics) error
	// Factorize replaces linear layers by low-rank pairs at the start of
	// the given epochs (then training fine-tunes them).
	Factorize []FactorizeAt
	// Teachers and KD, when set, train with Hinton's distillation loss: the
	// teachers (in evaluation mode) run on every batch, augmented or not
	// (online distillation), and the mean of their logits is the target —
	// one teacher, or an ensemble.
	Teachers []*model.Model
	KD       *distill.Config
	// TeacherLogits, when set, are the teachers' (mean) logits for every
	// sample of Train ([Train.Len()·classes], by sample index), computed
	// once: the teachers do not run during training (offline
	// distillation; the inputs must not be augmented).
	TeacherLogits []float32
	// Hint, with KD and one teacher, adds feature distillation between a
	// teacher layer and a student layer through a learned projection.
	Hint *HintConfig
	// ThinAtEpoch > 0 rebuilds the model without its dead neurons and
	// filters at the start of that (zero-based) epoch, so the rest of the
	// run trains the smaller model.
	ThinAtEpoch int
	// Resume, when set, continues from a snapshot; Model must already hold
	// the snapshot's architecture and parameters.
	Resume *Snapshot
	// Checkpoint, when set, receives a snapshot after every
	// CheckpointEpochs epochs (0: never), every CheckpointSteps steps (0:
	// never), and when the context is cancelled (then the run returns the
	// context's error after the checkpoint).
	Checkpoint                        func(*Snapshot) error
	CheckpointEpochs, CheckpointSteps int
	// Parallel, when set, makes the trainer one replica of data-parallel
	// training (see Parallel): its graphs are built for one micro-shard.
	Parallel Parallel
	// ShareState, with a Parallel that is Joinable, receives a snapshot
	// before each step replicas join at (see Joinable).
	ShareState func(*Snapshot) error
	// Gradients, with Parallel, computes this replica's micro-shard
	// gradients on another device (a GPU) instead of the graph.
	Gradients ShardGradients
	// Device, when set, trains on it instead of the graph: parameters,
	// optimizer state and the data sets live there (DeviceNet), and the
	// same loop, schedule and policies drive it. DeviceSupports says what
	// of a Config it cannot do yet; New refuses that.
	Device compute.Device
}

// HintConfig is a hint (feature) distillation term: the student's hidden
// layer Student, times a projection trained by Optimizer (from zero), is
// pulled towards the teacher's hidden layer Teacher with weight Weight.
type HintConfig struct {
	Student, Teacher string
	Weight           float64
	Optimizer        Optimizer
}

// FactorizeAt is one low-rank replacement: at the start of Epoch
// (zero-based: 10 means after ten epochs), Layer becomes Layer.v then
// Layer.u of rank Rank, or of the smallest rank keeping the fraction Energy
// of its spectral energy.
type FactorizeAt struct {
	Layer  string
	Rank   int
	Energy float64
	Epoch  int
}

// Progress reports one step.
type Progress struct {
	Epoch, Epochs int
	Step, Steps   int // step within the epoch (1-based) and steps per epoch
	Loss          float64
	SamplesPerSec float64 // training throughput so far in this epoch
	ETA           time.Duration
}

// EpochMetrics is one row of metrics.csv.
type EpochMetrics struct {
	Epoch         int     `json:"epoch"` // 1-based
	Steps         int64   `json:"steps"` // total steps so far
	SamplesSeen   int64   `json:"samples_seen"`
	LR            float64 `json:"lr"`           // at the epoch's last step
	TrainLoss     float64 `json:"train_loss"`   // the task loss (cross-entropy)
	ExtraLoss     float64 `json:"extra_loss"`   // regularizer terms, mean per step
	DistillLoss   float64 `json:"distill_loss"` // the distillation term of train_loss, mean per step
	TrainAccuracy float64 `json:"train_accuracy"`
	ValLoss       float64 `json:"val_loss"`
	ValAccuracy   float64 `json:"val_accuracy"`
	TrainSeconds  float64 `json:"train_seconds"` // forward, backward and update only
	SamplesPerSec float64 `json:"samples_per_second"`
	// Sparsity is the fraction of zero weights over all weights, and
	// LayerSparsity each weight's, in Model.Weights order.
	Sparsity      float64   `json:"sparsity"`
	LayerSparsity []float64 `json:"layer_sparsity"`
	LayerNames    []string  `json:"layer_names"`  // the weights LayerSparsity is given for
	GuardPauses   int       `json:"guard_pauses"` // total so far
	WeightBits    int       `json:"weight_bits"`  // quantization width at the epoch's end (0: float32)
}

// Result is the outcome of a run.
type Result struct {
	Ranks         []int // ranks chosen for Config.Factorize, in order
	Epochs        []EpochMetrics
	Steps         int64
	SamplesSeen   int64
	TrainSeconds  float64 // time in training steps only
	SamplesPerSec float64 // SamplesSeen / TrainSeconds
	ValAccuracy   float64
	ValLoss       float64
	TestAccuracy  float64
	TestLoss      float64
}

// ErrNonFinite reports a NaN or Inf loss.
var ErrNonFinite = errors.New("trainer: non-finite loss")

// Trainer runs training steps on one graph.
type Trainer struct {
	teachers      []*model.Net
	teacherVMs    []G.VM
	teacherLogits [][]float32 // reused each step
	curIdx        []int       // the sample indices in the input buffers
	cfg           Config
	log           hclog.Logger
	net           *model.Net
	grads         G.Nodes
	vm            G.VM
	state         State
	batch         data.Batcher
	evalNt        *model.Net
	evalVM        G.VM
	resume        *Snapshot
	be            backend
	kdLoss        *distill.KDLoss // a distillation graph's loss (its last batch's term)
	// The hint's projection [student width, teacher width] and its gradient.
	proj     *tensor.Dense
	projGrad *G.Node
	// The last step's distillation loss and correct count.
	lastKD      float64
	lastCorrect int
	// Data-parallel steps: the reduced gradients; the chunk update
	// waiting for its step to complete, whether the whole optimizer
	// state is current here (see holds), and whether this step's
	// parameters came updated (and its extra loss terms were added while
	// updating a chunk).
	pgrads      [][]float32
	projGradPar []float32
	parLayout   *parallelLayout
	singleTail  []float32     // Step.Single's last segment: observer slots and the step's figures
	held        [][][]float32 // gradients of a step's runs kept aside until their sum ([run][gradient])
	gradViews   [][][]float32 // each gradient's values in each of a step's runs ([gradient][run])
	pending     *pendingUpdate
	wholeState  bool
	chunk       *pendingUpdate // the own chunk's optimizer state, once the whole is given up
	spare       *pendingUpdate // buffers for the next update of the same chunk
	updated     bool
	extraDone   bool
}

// New validates the configuration and builds the training graph.
func New(cfg Config) (*Trainer, error) {
	switch {
	case cfg.Model == nil || cfg.Engine == nil || cfg.Train == nil || cfg.Optimizer == nil:
		return nil, errors.New("trainer: Model, Engine, Train and Optimizer are required")
	case cfg.Batch <= 0 || cfg.Batch > cfg.Train.Len():
		return nil, fmt.Errorf("trainer: batch %d outside [1, %d]", cfg.Batch, cfg.Train.Len())
	case cfg.Epochs <= 0:
		return nil, fmt.Errorf("trainer: epochs %d must be positive", cfg.Epochs)
	}
	if cfg.EvalBatch <= 0 {
		cfg.EvalBatch = 1000
	}
	if p := cfg.Parallel; p != nil && (p.MicroShards() <= 0 || cfg.Batch%p.MicroShards() != 0) {
		return nil, fmt.Errorf("trainer: %d micro-shards do not divide the batch of %d", p.MicroShards(), cfg.Batch)
	}
	if cfg.Parallel != nil && (cfg.ClipNorm > 0 || noDecay(cfg.Optimizer)) {
		return nil, fmt.Errorf("trainer: gradient clipping and weight decay by parameter kind do not train across cluster workers yet (each worker updates a chunk of the parameters)")
	}
	if cfg.Parallel != nil && len(cfg.Model.Buffers) > 0 {
		return nil, fmt.Errorf("trainer: batch norm (%s) does not train across cluster workers yet: its batch statistics would be each micro-shard's", cfg.Model.Buffers[0].Layer)
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	t := &Trainer{cfg: cfg, log: log, wholeState: true}
	t.batch = data.Batcher{Set: cfg.Train, Augment: cfg.Augment, Seed: cfg.Seed}
	if cfg.Device != nil {
		d, err := newDeviceBackend(t)
		if err != nil {
			return nil, err
		}
		t.be = d
	} else {
		if err := t.build(); err != nil {
			return nil, err
		}
		t.be = graphBackend{t}
	}
	t.state = State{Model: cfg.Model, Masks: make([][]byte, len(cfg.Model.Params))}
	for _, p := range cfg.Model.Params {
		t.state.Params = append(t.state.Params, p.Data())
	}
	t.state.Grads = make([][]float32, len(cfg.Model.Params))
	steps := int64(data.Steps(cfg.Train.Len(), cfg.Batch))
	t.state.TotalSamples = steps * int64(cfg.Batch) * int64(cfg.Epochs)
	t.state.Batch = int64(cfg.Batch)
	if cfg.Resume != nil {
		if err := t.restore(cfg.Resume); err != nil {
			t.Close()
			return nil, err
		}
	}
	return t, nil
}

// build makes the training graph, its gradients and machine for cfg.Model.
func (t *Trainer) build() error {
	var net *model.Net
	var err error
	batch := t.cfg.Batch // samples per graph run
	t.parLayout = nil
	if t.cfg.Parallel != nil {
		batch /= t.cfg.Parallel.MicroShards()
	}
	if t.cfg.KD != nil {
		if len(t.cfg.Teachers) == 0 && t.cfg.TeacherLogits == nil {
			return errors.New("trainer: distillation needs a teacher")
		}
		if t.cfg.TeacherLogits != nil && (t.cfg.Augment.On() || t.cfg.Hint != nil) {
			return errors.New("trainer: offline teacher logits need unaugmented inputs and no hint")
		}
		var hint *distill.Hint
		if h := t.cfg.Hint; h != nil {
			if hint, err = t.hint(h); err != nil {
				return err
			}
		}
		kd := *t.cfg.KD
		kd.ClassWeights, kd.LabelSmoothing = t.cfg.Model.ClassWeights, float64(t.cfg.Model.LabelSmoothing)
		t.kdLoss = distill.NewKDLoss(t.cfg.Engine, kd, hint)
		hooks := compress.Hooks()
		hooks.Loss = t.kdLoss.Build
		net, err = t.cfg.Model.Build(t.cfg.Engine, batch, true, t.cfg.Seed, hooks)
		for _, tm := range t.cfg.Teachers {
			if t.cfg.TeacherLogits != nil {
				break // offline: the teachers do not run
			}
			if err != nil || len(t.teachers) == len(t.cfg.Teachers) {
				break
			}
			var tn *model.Net
			if tn, err = tm.Build(t.cfg.Engine, batch, false, 0, compress.Hooks()); err == nil {
				t.teachers = append(t.teachers, tn)
				t.teacherVMs = append(t.teacherVMs, G.NewTapeMachine(tn.Graph, G.WithEngine(engineOf(t.cfg.Engine))))
			}
		}
	} else {
		net, err = t.cfg.Model.Build(t.cfg.Engine, batch, true, t.cfg.Seed, compress.Hooks())
	}
	if err != nil {
		return err
	}
	wrt := net.Params
	if net.HintProjection != nil {
		wrt = append(slices.Clip(net.Params), net.HintProjection)
	}
	grads, err := G.Grad(net.Loss, wrt...)
	if err != nil {
		return fmt.Errorf("trainer: gradients: %w", err)
	}
	if net.HintProjection != nil {
		t.projGrad, grads = grads[len(grads)-1], grads[:len(grads)-1]
	}
	t.net, t.grads = net, grads
	t.vm = G.NewTapeMachine(net.Graph, G.WithEngine(engineOf(t.cfg.Engine)))
	return nil
}

// hint checks a hint's layers and returns its graph settings; the
// projection is made once (zero) and kept across rebuilds.
func (t *Trainer) hint(h *HintConfig) (*distill.Hint, error) {
	if len(t.cfg.Teachers) != 1 {
		return nil, fmt.Errorf("trainer: a hint needs exactly one teacher, not %d", len(t.cfg.Teachers))
	}
	sl, _ := t.cfg.Model.Hidden(h.Student)
	tl, _ := t.cfg.Teachers[0].Hidden(h.Teacher)
	ds, dt := sl.Width, tl.Width
	if ds == 0 || dt == 0 || sl.Positions != tl.Positions {
		return nil, fmt.Errorf("trainer: hint between teacher layer %q and student layer %q: both must be hidden layers of as many positions", h.Teacher, h.Student)
	}
	if t.proj == nil {
		t.proj = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(ds, dt))
	}
	if !t.proj.Shape().Eq(tensor.Shape{ds, dt}) {
		return nil, fmt.Errorf("trainer: hint: student layer %s changed width (%d) since the projection was made %v", h.Student, ds, t.proj.Shape())
	}
	return &distill.Hint{Layer: h.Student, Positions: sl.Positions, TeacherDim: dt, Weight: h.Weight, Projection: t.proj}, nil
}

// rebuild switches training to a new model (a factorized or thinned
// version of the current one): graphs are rebuilt, and each parameter that
// keeps its name and size keeps its mask and optimizer state. A masked
// parameter whose size changed (thinning kept some of its rows) is masked
// by its non-zero pattern, which is what its old mask left of those rows;
// its optimizer state restarts from zero.
func (t *Trainer) rebuild(m *model.Model) error {
	old := t.cfg.Model
	t.closeGraphs()
	t.evalNt, t.evalVM = nil, nil
	t.cfg.Model = m
	if err := t.build(); err != nil {
		return err
	}
	from := make([]int, len(m.Params))
	sizes := make([]int, len(m.Params))
	masks := make([][]byte, len(m.Params))
	t.state.Params = t.state.Params[:0]
	for i, p := range m.Params {
		sizes[i] = p.Size()
		from[i] = slices.IndexFunc(old.Params, func(q *model.Param) bool { return q.Name == p.Name && q.Size() == p.Size() })
		if from[i] >= 0 {
			masks[i] = t.state.Masks[from[i]]
		} else if o := slices.IndexFunc(old.Params, func(q *model.Param) bool { return q.Name == p.Name }); o >= 0 && t.state.Masks[o] != nil {
			masks[i] = make([]byte, p.Size())
			for j, v := range p.Data() {
				if v != 0 {
					masks[i][j] = 1
				}
			}
		}
		t.state.Params = append(t.state.Params, p.Data())
	}
	t.cfg.Optimizer.Remap(from, sizes)
	if !t.wholeState { // a replica holding its chunk's state only holds none of the new vector
		t.chunk, t.spare = nil, nil
	}
	t.state.Model, t.state.Masks, t.state.Grads = m, masks, make([][]float32, len(m.Params))
	return nil
}

// Model is the model being trained (it changes when layers are factorized).
func (t *Trainer) Model() *model.Model { return t.cfg.Model }

// engineOf returns the tensor.Engine to hand the TapeMachine: an engine that
// is one (the CPU engine embeds tensor.StdEng) is passed as itself.
func engineOf(e compute.Engine) tensorEngine {
	if te, ok := e.(tensorEngine); ok {
		return te
	}
	return defaultEngine
}

// Release closes the machines and drops the graphs (their buffers are
// the bulk of a run's memory) once training is over; Model stays usable.
func (t *Trainer) Release() {
	t.Close()
	t.net, t.grads, t.evalNt, t.evalVM, t.teacherLogits = nil, nil, nil, nil, nil
	t.vm = nil
}

// Close releases the machines (and a device's buffers).
func (t *Trainer) Close() {
	if t.be != nil {
		t.be.close()
	}
}

// closeGraphs closes the graphs' machines.
func (t *Trainer) closeGraphs() {
	for _, vm := range t.teacherVMs {
		vm.Close()
	}
	t.teachers, t.teacherVMs = nil, nil
	if t.vm != nil {
		t.vm.Close()
	}
	if t.evalVM != nil {
		t.evalVM.Close()
	}
}

// State exposes the hook state (read-only for callers outside hooks).
func (t *Trainer) State() *State { return &t.state }

// Run trains for the configured epochs, evaluating the validation split
// after each and the test split at the end.
func (t *Trainer) Run(ctx context.Context) (res *Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("trainer: panic at step %d: %v\n%s", t.state.Step+1, r, debug.Stack())
		}
	}()
	cfg := t.cfg
	res = &Result{}
	steps := data.Steps(cfg.Train.Len(), cfg.Batch)
	startEpoch, startStep, started := 0, 0, false
	var r running
	if sn := t.resume; sn != nil {
		res.Epochs, res.Ranks = slices.Clone(sn.History), slices.Clone(sn.Ranks)
		for _, e := range sn.History {
			res.TrainSeconds += e.TrainSeconds
		}
		startEpoch, startStep, started = sn.Epoch, sn.StepInEpoch, sn.EpochStarted
		r = running{loss: sn.LossSum, extra: sn.ExtraSum, kd: sn.KDSum, correct: sn.Correct, seconds: sn.TrainSeconds}
	}
	snap := func(epoch, step int, started bool, r running) (*Snapshot, error) {
		r, err := t.be.sums(r)
		if err != nil {
			return nil, err
		}
		sn, err := t.snapshot(epoch, step, res, r)
		if err == nil {
			sn.EpochStarted = started
		}
		return sn, err
	}
	checkpoint := func(epoch, step int, started bool, r running) error {
		sn, err := snap(epoch, step, started, r)
		if err != nil {
			return err
		}
		return cfg.Checkpoint(sn)
	}
	fw := t.follower()
	for epoch := startEpoch; epoch < cfg.Epochs; epoch++ {
		first := 0
		if epoch == startEpoch && (startStep > 0 || started) {
			first = startStep // resumed inside an epoch whose start events are done
		} else {
			r = running{}
			if err := t.startEpoch(epoch, res); err != nil {
				return nil, err
			}
		}
		order := data.Order(cfg.Seed, epoch, cfg.Train.Len())
		if err := t.be.beginEpoch(epoch, order); err != nil {
			return nil, err
		}
		for s := first; s < steps; s++ {
			if err := ctx.Err(); err != nil {
				if cfg.Checkpoint != nil {
					if cerr := checkpoint(epoch, s, true, r); cerr != nil {
						return nil, errors.Join(err, cerr)
					}
				}
				return nil, err
			}
			if j, ok := cfg.Parallel.(Joinable); ok && cfg.ShareState != nil && j.JoinAt(t.state.Step) {
				sn, err := snap(epoch, s, true, r)
				if err != nil {
					return nil, err
				}
				if err := cfg.ShareState(sn); err != nil {
					return nil, err
				}
			}
			t.state.Epoch = epoch
			var err error
			if fw != nil && fw.Follows() {
				// To the next sync point, whose state the others offer.
				var done int
				var sums running
				done, sums, err = t.follow(ctx, fw, epoch, s, steps)
				if errors.Is(err, ErrShareFirst) {
					s-- // the same step again: its state is shared first (JoinAt)
					continue
				}
				if err == nil {
					s, r = done-1, sums
				}
			} else {
				err = t.runStep(ctx, order, epoch, s, &r)
			}
			if err != nil {
				if ctx.Err() != nil && cfg.Checkpoint != nil {
					// Interrupted inside a data-parallel step, before its
					// update (or a follower before its next sync point):
					// the state is the step's start.
					if cerr := checkpoint(epoch, s, true, r); cerr != nil {
						return nil, errors.Join(err, cerr)
					}
				}
				return nil, err
			}
			if fw != nil && !fw.Follows() && t.syncPoint(fw, t.state.Step, s+1 == steps) {
				sn, err := snap(epoch, s+1, true, r)
				if err != nil {
					return nil, err
				}
				if err := t.offer(ctx, fw, sn); err != nil {
					return nil, err
				}
			}
			if cfg.Progress != nil {
				sps := float64((s+1-first)*cfg.Batch) / r.seconds
				left := float64((steps-s-1)*cfg.Batch) / sps
				cfg.Progress(Progress{Epoch: epoch + 1, Epochs: cfg.Epochs, Step: s + 1, Steps: steps,
					Loss: r.loss / float64(s+1), SamplesPerSec: sps, ETA: time.Duration(left * float64(time.Second))})
			}
			if cfg.Checkpoint != nil && cfg.CheckpointSteps > 0 && t.state.Step%int64(cfg.CheckpointSteps) == 0 && s+1 < steps {
				if err := checkpoint(epoch, s+1, true, r); err != nil {
					return nil, err
				}
			}
		}
		em, err := t.endEpoch(epoch, steps, r, res)
		if err != nil {
			return nil, err
		}
		if cfg.EndEpoch != nil {
			if err := cfg.EndEpoch(em); err != nil {
				return nil, err
			}
		}
		if cfg.Checkpoint != nil && cfg.CheckpointEpochs > 0 && ((epoch+1)%cfg.CheckpointEpochs == 0 || epoch+1 == cfg.Epochs) {
			if err := checkpoint(epoch+1, 0, false, running{}); err != nil {
				return nil, err
			}
		}
	}
	res.Steps, res.SamplesSeen = t.state.Step, t.state.SamplesSeen
	res.SamplesPerSec = float64(res.SamplesSeen) / res.TrainSeconds
	if n := len(res.Epochs); n > 0 {
		res.ValAccuracy, res.ValLoss = res.Epochs[n-1].ValAccuracy, res.Epochs[n-1].ValLoss
	}
	if cfg.Test != nil {
		if res.TestAccuracy, res.TestLoss, err = t.Evaluate(cfg.Test); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// runStep runs the inEpoch-th step of epoch on its batch of order and adds
// it to the epoch's running sums r.
func (t *Trainer) runStep(ctx context.Context, order []int, epoch, inEpoch int, r *running) error {
	idx := data.BatchIndices(order, t.cfg.Batch, inEpoch)
	t.be.load(idx, epoch)
	start := time.Now()
	if err := t.step(ctx, idx, epoch, inEpoch); err != nil {
		return err
	}
	r.seconds += time.Since(start).Seconds()
	r.loss += t.state.Loss
	r.extra += t.state.ExtraLoss
	r.kd += t.lastKD
	r.correct += t.lastCorrect
	return nil
}

// startEpoch runs the events due at an epoch's start: factorizations and
// thinning.
func (t *Trainer) startEpoch(epoch int, res *Result) error {
	for _, f := range t.cfg.Factorize {
		if f.Epoch != epoch {
			continue
		}
		fm, rank, err := t.cfg.Model.Factorize(f.Layer, f.Rank, f.Energy)
		if err != nil {
			return err
		}
		if err := t.rebuild(fm); err != nil {
			return err
		}
		t.log.Info("layer factorized", "layer", f.Layer, "rank", rank, "epoch", epoch+1, "params", fm.NumParams())
		res.Ranks = append(res.Ranks, rank)
	}
	if t.cfg.ThinAtEpoch > 0 && epoch == t.cfg.ThinAtEpoch {
		small, rep, err := t.cfg.Model.Thin()
		if err != nil {
			return err
		}
		if err := t.rebuild(small); err != nil {
			return err
		}
		t.log.Info("model thinned", "epoch", epoch+1, "params", small.NumParams(), "removed", fmt.Sprint(rep.Removed))
	}
	return nil
}

// endEpoch makes an epoch's metrics from its running sums r, evaluates
// the validation split and runs the policies' epoch-end hooks.
func (t *Trainer) endEpoch(epoch, steps int, r running, res *Result) (EpochMetrics, error) {
	cfg := t.cfg
	r, err := t.be.sums(r)
	if err != nil {
		return EpochMetrics{}, err
	}
	if err := finite(&t.state, r.loss+r.extra); err != nil {
		return EpochMetrics{}, err
	}
	if err := t.be.pull(); err != nil { // the sparsity below reads the weights
		return EpochMetrics{}, err
	}
	trainDur := time.Duration(r.seconds * float64(time.Second))
	em := EpochMetrics{
		Epoch: epoch + 1, Steps: t.state.Step, SamplesSeen: t.state.SamplesSeen, LR: t.state.LR,
		TrainLoss: r.loss / float64(steps), ExtraLoss: r.extra / float64(steps), DistillLoss: r.kd / float64(steps), TrainAccuracy: float64(r.correct) / float64(steps*cfg.Batch*cfg.Model.Input.LabelsPer()),
		TrainSeconds: trainDur.Seconds(), SamplesPerSec: float64(steps*cfg.Batch) / trainDur.Seconds(),
	}
	em.LayerSparsity, em.Sparsity = WeightSparsity(t.cfg.Model)
	em.WeightBits = t.state.WeightBits
	for _, w := range t.cfg.Model.Weights() {
		em.LayerNames = append(em.LayerNames, w.Name)
	}
	res.TrainSeconds += trainDur.Seconds()
	if cfg.Val != nil {
		if em.ValAccuracy, em.ValLoss, err = t.Evaluate(cfg.Val); err != nil {
			return EpochMetrics{}, err
		}
	}
	res.Epochs = append(res.Epochs, em)
	t.log.Info("epoch done", "epoch", em.Epoch, "train_loss", em.TrainLoss, "train_accuracy", em.TrainAccuracy,
		"val_accuracy", em.ValAccuracy, "sparsity", fmt.Sprintf("%.4f", em.Sparsity), "samples_per_second", int(em.SamplesPerSec))
	for _, p := range cfg.Policies {
		if h, ok := p.(EpochEnder); ok {
			if err := h.EndEpoch(&t.state, em); err != nil {
				return EpochMetrics{}, fmt.Errorf("trainer: %s: %w", p.Name(), err)
			}
		}
	}
	if err := t.be.push(); err != nil { // an epoch-end hook may have changed them
		return EpochMetrics{}, err
	}
	em.GuardPauses = t.state.GuardPauses
	res.Epochs[len(res.Epochs)-1].GuardPauses = em.GuardPauses
	return em, nil
}

// step runs the inEpoch-th training step of epoch on the batch of samples
// idx (already loaded by the backend): the policies before it, the
// backend's step, the policies after it.
func (t *Trainer) step(ctx context.Context, idx []int, epoch, inEpoch int) error {
	s := &t.state
	// A policy that reads or changes the weights before this step sees
	// them on the host, and the backend gets back what it changed.
	pulled := false
	for _, p := range t.cfg.Policies {
		if h, ok := p.(WeightReader); ok && h.ReadsWeights(s) {
			if err := t.be.pull(); err != nil {
				return err
			}
			pulled = true
			break
		}
	}
	for _, p := range t.cfg.Policies {
		if h, ok := p.(BeforeStepper); ok {
			if err := h.BeforeStep(s); err != nil {
				return fmt.Errorf("trainer: step %d: %s: %w", s.Step+1, p.Name(), err)
			}
		}
	}
	if pulled {
		if err := t.be.push(); err != nil {
			return err
		}
	}
	if err := t.be.train(ctx, idx, epoch, inEpoch); err != nil {
		return err
	}
	for _, p := range t.cfg.Policies {
		if h, ok := p.(AfterUpdater); ok {
			if err := h.AfterUpdate(s); err != nil {
				return fmt.Errorf("trainer: step %d: %s: %w", s.Step+1, p.Name(), err)
			}
		}
	}
	s.Step++
	s.SamplesSeen += int64(t.cfg.Batch)
	return nil
}

// extraLoss runs the policies' extra loss terms: their sum, their
// gradients added to the state's.
func (t *Trainer) extraLoss() (float64, error) {
	s := &t.state
	var total float64
	for _, p := range t.cfg.Policies {
		if h, ok := p.(ExtraLosser); ok {
			v, err := h.ExtraLoss(s)
			if err != nil {
				return 0, fmt.Errorf("trainer: step %d: %s: %w", s.Step+1, p.Name(), err)
			}
			total += v
		}
	}
	return total, nil
}

// forwardBackward runs the teachers and the training graph on the samples
// in the input buffers.
func (t *Trainer) forwardBackward() error {
	s := &t.state
	if tl := t.cfg.TeacherLogits; tl != nil {
		dst := t.net.TValue.Float32s()
		c := len(dst) / max(len(t.curIdx), 1)
		for i, id := range t.curIdx {
			copy(dst[i*c:(i+1)*c], tl[id*c:(id+1)*c])
		}
	} else if len(t.teachers) > 0 {
		logits := t.teacherLogits[:0]
		for k, tn := range t.teachers {
			copy(tn.XValue.Float32s(), t.net.XValue.Float32s())
			t.teacherVMs[k].Reset()
			if err := t.teacherVMs[k].RunAll(); err != nil {
				return fmt.Errorf("trainer: step %d: teacher %d: %w", s.Step+1, k+1, err)
			}
			logits = append(logits, f32s(tn.Logits.Value()))
		}
		t.teacherLogits = logits
		distill.MeanLogits(t.net.TValue.Float32s(), logits...)
		if h := t.cfg.Hint; h != nil {
			tn := t.teachers[0].Hidden[h.Teacher]
			if tn == nil {
				return fmt.Errorf("trainer: hint: the teacher has no hidden layer %q", h.Teacher)
			}
			copy(t.net.HValue.Float32s(), f32s(tn.Value()))
		}
	}
	t.vm.Reset()
	if err := t.vm.RunAll(); err != nil {
		return fmt.Errorf("trainer: step %d: %w", s.Step+1, err)
	}
	return nil
}

// distillTerm is the distillation part of the last batch's loss (0
// without distillation).
func (t *Trainer) distillTerm() float64 {
	if t.kdLoss == nil {
		return 0
	}
	return t.kdLoss.Term()
}

// f32s returns a value's float32 backing slice without copying.
func f32s(v G.Value) []float32 {
	if d, ok := v.(*tensor.Dense); ok {
		return d.Float32s()
	}
	if f, ok := v.(*G.F32); ok {
		return []float32{float32(*f)}
	}
	panic(fmt.Sprintf("trainer: unexpected value %T", v))
}

// Evaluate returns top-1 accuracy (a fraction) and mean cross-entropy on a
// set, in evaluation mode (no dropout, no augmentation). The last partial
// batch is padded and the padding ignored.
func (t *Trainer) Evaluate(set *data.Set) (acc, loss float64, err error) {
	return t.be.evaluate(set)
}

// EvaluateModel returns top-1 accuracy and mean cross-entropy of any model
// on a set, in evaluation mode, building a forward graph of the given batch.
func EvaluateModel(m *model.Model, eng compute.Engine, set *data.Set, batch int) (acc, loss float64, err error) {
	p, err := PredictModel(m, eng, set, batch)
	if err != nil {
		return 0, 0, err
	}
	return p.Accuracy(), p.Loss, nil
}

func evaluate(net *model.Net, vm G.VM, set *data.Set) (acc, loss float64, err error) {
	p, err := predict(net, vm, set)
	if err != nil {
		return 0, 0, err
	}
	return p.Accuracy(), p.Loss, nil
}

// Predictions are a model's top-1 answers on a set.
type Predictions struct {
	Class      []int     // predicted class per sample
	Confidence []float64 // softmax probability of the predicted class
	Correct    []bool
	Loss       float64 // mean cross-entropy
}

// Accuracy is the fraction of correct answers.
func (p Predictions) Accuracy() float64 {
	n := 0
	for _, c := range p.Correct {
		if c {
			n++
		}
	}
	return float64(n) / float64(len(p.Correct))
}

// Confusion counts the predictions by true class (labels; classes of
// them) and predicted class: confusion[true][predicted].
func (p Predictions) Confusion(labels []byte, classes int) [][]int {
	m := make([][]int, classes)
	for c := range m {
		m[c] = make([]int, classes)
	}
	for i, y := range labels[:len(p.Class)] {
		if int(y) < classes && p.Class[i] >= 0 && p.Class[i] < classes {
			m[y][p.Class[i]]++
		}
	}
	return m
}

// Recall is, per class of labels (classes of them), the fraction of its
// samples predicted as it (NaN for a class with no sample); macro their
// mean over the classes present.
func (p Predictions) Recall(labels []byte, classes int) (recall []float64, macro float64) {
	recall = make([]float64, classes)
	present := 0
	for c, row := range p.Confusion(labels, classes) {
		n := 0
		for _, k := range row {
			n += k
		}
		recall[c] = math.NaN()
		if n > 0 {
			recall[c] = float64(row[c]) / float64(n)
			macro += recall[c]
			present++
		}
	}
	if present > 0 {
		macro /= float64(present)
	}
	return recall, macro
}

// ECE is the expected calibration error over equal-width confidence bins:
// Σ_b |B|/n · |accuracy(B) − mean confidence(B)|.
func (p Predictions) ECE(bins int) float64 {
	count := make([]int, bins)
	conf := make([]float64, bins)
	hits := make([]int, bins)
	for i, c := range p.Confidence {
		b := min(int(c*float64(bins)), bins-1)
		count[b]++
		conf[b] += c
		if p.Correct[i] {
			hits[b]++
		}
	}
	var e float64
	n := float64(len(p.Confidence))
	for b := range count {
		if count[b] > 0 {
			k := float64(count[b])
			e += k / n * math.Abs(float64(hits[b])/k-conf[b]/k)
		}
	}
	return e
}

// Agreement is the fraction of samples on which two sets of predictions
// give the same class.
func Agreement(a, b Predictions) float64 {
	same := 0
	for i := range a.Class {
		if a.Class[i] == b.Class[i] {
			same++
		}
	}
	return float64(same) / float64(len(a.Class))
}

// PredictModel runs a model in evaluation mode over a set.
func PredictModel(m *model.Model, eng compute.Engine, set *data.Set, batch int) (Predictions, error) {
	net, err := m.Build(eng, batch, false, 0, compress.Hooks())
	if err != nil {
		return Predictions{}, err
	}
	vm := G.NewTapeMachine(net.Graph, G.WithEngine(engineOf(eng)))
	defer vm.Close()
	return predict(net, vm, set)
}

// PredictEnsemble runs several models over a set and answers from the mean
// of their logits (a teacher ensemble).
func PredictEnsemble(ms []*model.Model, eng compute.Engine, set *data.Set, batch int) (Predictions, error) {
	if len(ms) == 1 {
		return PredictModel(ms[0], eng, set, batch)
	}
	sum := make([]float32, len(set.Labels)*set.Classes)
	for _, m := range ms {
		net, err := m.Build(eng, batch, false, 0, compress.Hooks())
		if err != nil {
			return Predictions{}, err
		}
		vm := G.NewTapeMachine(net.Graph, G.WithEngine(engineOf(eng)))
		err = forEachBatch(net, vm, set, func(lo int, labels []float32, logits []float32) {
			for i, v := range logits[:len(labels)*set.Classes] {
				sum[lo*set.Classes+i] += v / float32(len(ms))
			}
		})
		vm.Close()
		if err != nil {
			return Predictions{}, err
		}
	}
	return predictionsFrom(sum, set), nil
}

// predictionsFrom scores logits [n, classes] against a set's labels.
func predictionsFrom(logits []float32, set *data.Set) Predictions {
	c := set.Classes
	p := Predictions{}
	var lossSum float64
	for i, l := range set.Labels {
		row := logits[i*c : (i+1)*c]
		arg, m := 0, row[0]
		for j, v := range row {
			if v > m {
				arg, m = j, v
			}
		}
		var z float64
		for _, v := range row {
			z += math.Exp(float64(v - m))
		}
		p.Class = append(p.Class, arg)
		p.Confidence = append(p.Confidence, 1/z)
		p.Correct = append(p.Correct, arg == int(l))
		lossSum += float64(m-row[int(l)]) + math.Log(z)
	}
	p.Loss = lossSum / float64(len(set.Labels))
	return p
}

// forEachBatch runs a forward graph over a set in order, handing each
// batch's first label's index (a sample's, or a language model's first
// position's), labels and logits (classes per label) to fn.
func forEachBatch(net *model.Net, vm G.VM, set *data.Set, fn func(lo int, labels, logits []float32)) error {
	b, per := net.Batch, set.LabelsPer()
	f := set.Features()
	x := net.XValue.Float32s()
	labels := make([]float32, b*per)
	batcher := data.Batcher{Set: set}
	idx := make([]int, 0, b)
	for lo := 0; lo < set.Len(); lo += b {
		hi := min(lo+b, set.Len())
		idx = idx[:0]
		for i := lo; i < hi; i++ {
			idx = append(idx, i)
		}
		batcher.Fill(x, labels, idx, 0)
		clear(x[len(idx)*f:])
		vm.Reset()
		if err := vm.RunAll(); err != nil {
			return fmt.Errorf("trainer: evaluate %s: %w", set.Name, err)
		}
		fn(lo*per, labels[:len(idx)*per], f32s(net.Logits.Value()))
	}
	return nil
}

func predict(net *model.Net, vm G.VM, set *data.Set) (Predictions, error) {
	c := set.Classes
	all := make([]float32, len(set.Labels)*c)
	err := forEachBatch(net, vm, set, func(lo int, labels, logits []float32) {
		copy(all[lo*c:], logits[:len(labels)*c])
	})
	if err != nil {
		return Predictions{}, err
	}
	return predictionsFrom(all, set), nil
}

// TeacherLogits returns the mean logits of the teachers for every sample
// of set ([set.Len()·classes], by sample index, inputs unaugmented), the
// way an online step averages them (distill.MeanLogits): the table offline
// distillation trains from.
func TeacherLogits(ms []*model.Model, eng compute.Engine, set *data.Set, batch int) ([]float32, error) {
	n, c := len(set.Labels), set.Classes
	var each [][]float32
	for _, m := range ms {
		net, err := m.Build(eng, batch, false, 0, compress.Hooks())
		if err != nil {
			return nil, err
		}
		out := make([]float32, n*c)
		vm := G.NewTapeMachine(net.Graph, G.WithEngine(engineOf(eng)))
		err = forEachBatch(net, vm, set, func(lo int, labels, logits []float32) {
			copy(out[lo*c:], logits[:len(labels)*c])
		})
		vm.Close()
		if err != nil {
			return nil, err
		}
		each = append(each, out)
	}
	if len(each) == 0 {
		return nil, errors.New("trainer: teacher logits need a teacher")
	}
	dst := make([]float32, n*c)
	distill.MeanLogits(dst, each...)
	return dst, nil
}

// noDecay says whether an optimizer leaves some parameters out of weight
// decay.
func noDecay(o Optimizer) bool {
	switch o := o.(type) {
	case *sgd:
		return slices.Contains(o.c.NoDecay, true)
	case *adam:
		return slices.Contains(o.c.NoDecay, true)
	}
	return false
}

// clipGradients scales grads down to a global L2 norm of max when it
// exceeds it; the norm is summed in float64 in parameter order.
func clipGradients(grads [][]float32, max float64) {
	var ss float64
	for _, g := range grads {
		for _, v := range g {
			ss += float64(v) * float64(v)
		}
	}
	norm := math.Sqrt(ss)
	if norm <= max || norm == 0 {
		return
	}
	scale := float32(max / norm)
	for _, g := range grads {
		for j := range g {
			g[j] *= scale
		}
	}
}
