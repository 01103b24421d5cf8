package recipes

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
)

// Job is a decoded, validated recipe.
type Job struct {
	Name       string
	Dataset    string // "mnist" or "fashion-mnist"
	Seed       uint64
	Epochs     int
	Batch      int // training samples per step
	EvalBatch  int // samples per evaluation forward pass
	Validation int // training samples held out as the validation split
	Threads    int // compute threads; 0: all cores

	Augment    Augment
	Model      Model
	Optimizer  Optimizer
	Prune      []Prune      // in recipe order; a layer appears in at most one
	Regularize []Regularize // in recipe order
	Factorize  []Factorize  // low-rank replacements, in recipe order
	// Teacher, when set, is trained first inside the run directory
	// (<run-dir>/teacher) with the job's data, seed and optimizer; Distill
	// then trains the model with the teacher's knowledge.
	Teacher *Teacher
	Distill *Distill
	// Quantize, when set, trains weights with fake quantization (QAT).
	Quantize *Quantize
	// Sensitivity, when set, runs a sensitivity analysis during the run.
	Sensitivity *Sensitivity
	// ThinAtEpoch > 0 (a thin block) rebuilds the model without its dead
	// neurons and filters after that many epochs; training goes on with the
	// smaller model.
	ThinAtEpoch int
	// KMeans, when set, shares weights by k-means (Deep Compression): the
	// recipe's cluster block.
	KMeans *KMeans
	// Checkpoint says when training checkpoints are written. It cannot
	// change a run's history, so a resumed run may change it.
	Checkpoint Checkpoint

	// File is the recipe's path; Variables the resolved variable values
	// (defaults with -var overrides applied), by name.
	File      string
	Variables map[string]string
	// Ranges maps a field path ("optimizer.lr", "model.arch", "batch") to
	// where it was set in the recipe; fields left at their defaults point at
	// the job block.
	Ranges map[string]hcl.Range
}

// KMeans is the cluster block: from FromEpoch on, each layer's non-zero
// weights share Clusters values found by k-means and trained as centroids.
type KMeans struct {
	Layers    []string
	Clusters  int
	FromEpoch float64
}

// Checkpoint is the job's checkpoint block.
type Checkpoint struct {
	EveryEpochs int // write one after every N epochs (0: none by epoch)
	EverySteps  int // and every N steps (0: none by step)
	Keep        int // keep the newest N (the best by validation accuracy is kept too)
}

// Augment is the job's input augmentation.
type Augment struct {
	Shift int // largest random translation in pixels (0: none)
}

// Model is the job's model block.
type Model struct {
	Arch         string
	Hidden       []int
	Dropout      float64
	InputDropout float64
	Init         string
}

// Optimizer is the job's optimizer block (labelled with its kind).
type Optimizer struct {
	Kind         string // "sgd", "adam", "adamw"
	LR           float64
	Momentum     float64
	Nesterov     bool
	WeightDecay  float64
	Beta1, Beta2 float64
	Eps          float64
	Schedule     string  // "constant", "step", "cosine"
	WarmupEpochs float64 // linear warm-up, in epochs
	MinLR        float64 // cosine's floor
	StepEpochs   float64 // step: decay every this many epochs
	Gamma        float64 // step: decay factor
}

// Prune is one prune block, labelled with its method. Window positions are
// in epochs of training done (from_epoch = 1: after the first epoch); the
// schedule itself runs on samples seen.
type Prune struct {
	Method       string   // "magnitude" (unstructured), "structured", "nm"
	Layers       []string // weight names (fc1, conv2, …)
	Target       float64  // final sparsity (magnitude, structured)
	Initial      float64  // sparsity at the first event
	Schedule     string   // agp, polynomial, linear, one_shot, iterative
	Power        float64  // polynomial
	FromEpoch    float64
	ToEpoch      float64
	EveryEpochs  float64 // exactly one of the three every_* is used;
	EverySteps   int64   // with none set, every_epochs = 0.25
	EverySamples int64
	Scope        string // "layer" or "global" (magnitude)
	Granularity  string // structured: rows, columns, filters, channels
	Norm         string // structured: l1, l2
	N, M         int    // nm: keep N of every M
	// GuardTolerance > 0 pauses pruning while validation accuracy is more
	// than this fraction below the accuracy measured just before the window;
	// GuardUndo also undoes the last pruning step when it pauses.
	GuardTolerance float64
	GuardUndo      bool
	// TargetsFrom "sensitivity" replaces Target per layer with the
	// sensitivity analysis's suggestions.
	TargetsFrom string
}

// Regularize is one regularize block, labelled with its kind.
type Regularize struct {
	Kind     string   // "group_lasso", "l1", "l2"
	Layers   []string // weight names
	Groups   string   // group_lasso: rows, columns, filters, channels
	Strength float64  // λ (at from_epoch)
	// FinalStrength ≥ 0 ramps λ linearly to it at to_epoch; −1: constant.
	FinalStrength float64
	FromEpoch     float64 // window in epochs of training done
	ToEpoch       float64 // 0: to the end
}

// Factorize is one factorize block: a linear layer replaced by two
// thinner ones through a truncated SVD at the start of an epoch, then
// fine-tuned.
type Factorize struct {
	Layer   string
	Rank    int     // the rank, or 0 to choose it by Energy
	Energy  float64 // fraction of spectral energy to keep, in (0, 1]
	AtEpoch int     // epochs of training done before factorizing
}

// Teacher is the teacher block: a model trained first for Epochs — or
// Count of them, with seeds seed, seed+1, …, distilled from as an ensemble
// (the mean of their logits).
type Teacher struct {
	Model  Model
	Epochs int
	Count  int
	// File, when set, is a trained model file (model.arrow) to distil
	// from instead of training a teacher: an absolute path (a relative one
	// in a recipe is relative to the recipe's directory).
	File string
}

// Distill is the distill block: Hinton's loss at Temperature, weighted by
// Alpha against the task's cross-entropy.
type Distill struct {
	Temperature float64
	Alpha       float64
	// Offline computes the teacher's logits for the training set once,
	// before the student trains, instead of running the teacher every step
	// (only with the inputs unaugmented).
	Offline bool
	Hint    *Hint
}

// Hint is the distill block's hint block: feature distillation from the
// teacher's hidden layer Teacher to the student's hidden layer Student
// through a learned projection, weighted by Weight.
type Hint struct {
	Teacher, Student string
	Weight           float64
}

// Quantize is the quantize block: weights of Layers fake-quantized to Bits
// from FromEpoch on, then to each of Gradual at the matching GradualEpochs;
// LayerBits pins some layers' widths (mixed precision).
type Quantize struct {
	Layers        []string
	Bits          int
	FromEpoch     float64
	Gradual       []int
	GradualEpochs []float64
	Granularity   string // "per_channel" or "per_tensor"
	Symmetric     bool
	LayerBits     map[string]int
	// Activations > 0 also quantizes the hidden activations of Layers
	// (unsigned, per tensor, ranges from moving-average observers), frozen
	// after FreezeObserversEpoch (0: never).
	Activations          int
	FreezeObserversEpoch float64
}

// Sensitivity is the sensitivity block: each layer pruned alone to each
// sparsity at the end of epoch AtEpoch, evaluated on the validation split.
type Sensitivity struct {
	Layers     []string
	Sparsities []float64
	Tolerance  float64 // accuracy (fraction) a suggestion may lose
	AtEpoch    int     // 1-based epoch after which it runs
}

// PruneDefaults fills a prune block's unset fields.
func PruneDefaults(method string) Prune {
	p := Prune{Method: method, Schedule: "agp", Power: 3, FromEpoch: 0, ToEpoch: 1, Scope: "layer", Norm: "l1", N: 2, M: 4}
	switch method {
	case "structured":
		p.Granularity = "rows"
	case "nm":
		p.Schedule = "one_shot"
	}
	return p
}

// Defaults returns a job with every default filled: the one place defaults
// live.
func Defaults() Job {
	return Job{
		Dataset:    "mnist",
		Seed:       1,
		Epochs:     10,
		Batch:      128,
		EvalBatch:  1000,
		Validation: 5000,
		Model:      Model{Init: "uniform"},
		Checkpoint: Checkpoint{EveryEpochs: 1, Keep: 3},
		Optimizer: Optimizer{
			Kind: "sgd", LR: 0.05, Momentum: 0.9, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8,
			Schedule: "cosine", StepEpochs: 10, Gamma: 0.1,
		},
	}
}

// Pos returns where a field was set, as "file:line,col", or the job block's
// position when the field kept its default.
func (j *Job) Pos(field string) string {
	if r, ok := j.Ranges[field]; ok {
		return fmt.Sprintf("%s:%d,%d", r.Filename, r.Start.Line, r.Start.Column)
	}
	if r, ok := j.Ranges["job"]; ok {
		return fmt.Sprintf("%s:%d,%d", r.Filename, r.Start.Line, r.Start.Column)
	}
	return j.File
}

// Errorf returns a diagnostic error for a field, for checks made after
// loading (e.g. a layer name the model lacks).
func (j *Job) Errorf(field, format string, args ...any) error {
	r, ok := j.Ranges[field]
	if !ok {
		r = j.Ranges["job"]
	}
	return &Error{Diags: hcl.Diagnostics{{Severity: hcl.DiagError, Summary: fmt.Sprintf(format, args...), Subject: &r}}}
}
