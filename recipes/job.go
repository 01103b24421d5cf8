package recipes

import (
	"fmt"
	"math"
	"slices"

	"github.com/hashicorp/hcl/v2"

	"github.com/lathe-ml/lathe/data"
)

// Job is a decoded, validated recipe.
type Job struct {
	Name    string
	Dataset string // "mnist", "fashion-mnist", "langid", "text", "kjv", or a user's "csv", "npy", "images"
	// DataDir is the folder a dataset is read from (text: the class
	// files; an image set: its IDX files), relative to the recipe's
	// directory; empty: where the dataset is installed.
	DataDir    string
	Seed       uint64
	Epochs     int
	Batch      int // training samples per step
	EvalBatch  int // samples per evaluation forward pass
	Validation int // training samples held out as the validation split
	// TestFraction, ValidationFraction and SplitSeed hold out a test and
	// a validation split of a user's files that have no test or validation
	// file (data.FileOptions).
	TestFraction       float64
	ValidationFraction float64
	SplitSeed          uint64
	// ImageSize brings every image of an image folder to [rows, cols]
	// (data.FileOptions).
	ImageSize []int
	// TrainWindows caps the windows each training document of a text
	// classification set gives (data.FileOptions).
	TrainWindows int
	Threads      int // compute threads; 0: all cores
	// ClassBalance weighs each class's cross-entropy by N/(classes·its
	// training samples).
	ClassBalance bool
	// LabelSmoothing trains against (1 − ε)·onehot + ε/classes.
	LabelSmoothing float64

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
	// Target, when set, makes the run a search for the per-layer settings
	// that meet a budget (the recipe's other policies are then the
	// search's to write).
	Target *Target
	// PostTraining compresses the model file without training before the
	// run starts (nil: none).
	PostTraining *PostTraining

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
type Augment = data.Augment

// Files is how the job reads a user's files: the test split held out of
// a folder without one, the images' size.
func (j *Job) Files() data.FileOptions {
	opt := data.FileOptions{TestFraction: j.TestFraction, ValidationFraction: j.ValidationFraction, Seed: j.SplitSeed, TrainWindows: j.TrainWindows}
	if len(j.ImageSize) == 2 {
		opt.ImageSize = [2]int{j.ImageSize[0], j.ImageSize[1]}
	}
	return opt
}

// Model is the job's model block.
type Model struct {
	// File, when set, is a lathe model file the run starts from: its
	// network and trained weights (the other fields are then unset).
	File string
	// Mean and Std, when set, normalize the input before the first layer:
	// channel c of x (pixel/255) becomes (x − Mean[c])/Std[c] (one value:
	// every channel) — how a network trained elsewhere expects its images.
	Mean, Std    []float64
	Arch         string
	Hidden       []int
	Dropout      float64
	InputDropout float64
	Init         string
	Depth        int     // resnet: 6n+2 layers
	Width        float64 // mobilenet: the width multiplier
	// transformer: the width, heads, blocks and feed-forward width.
	Dim, Heads, Blocks, MLP int
	SkipPadding             bool        // transformer: attention and pooling skip windows' padding
	Ngram                   int         // transformer: a convolution over that many bytes' embeddings
	Graph                   []GraphItem // arch "graph": its layer and repeat blocks (graph.go)
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
	// ClipNorm > 0 clips each step's gradients to that global L2 norm;
	// NoDecay names the parameter kinds weight decay leaves alone: "bias",
	// "norm" (batch and layer norms' scales and shifts), "embedding".
	ClipNorm float64
	NoDecay  []string
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
	Granularity  string // structured: rows, columns, filters, channels, groups (a convolution's channels with all that depends on them)
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
	// File, when not empty, is a trained model file (model.arrow) to
	// distil from instead of training a teacher: an absolute path (a
	// relative one in a recipe is relative to the recipe's directory). The
	// block's other fields describe the teacher trained when File is
	// empty, so that a variable can choose (file = var.teacher).
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
	// FoldBatchNorms trains each quantized convolution followed by a batch
	// norm with the batch norm folded into its weight (the weight the model
	// file stores); FreezeBNEpoch freezes every batch norm's statistics from
	// that epoch on (0: never).
	FoldBatchNorms bool
	FreezeBNEpoch  float64
}

// Target is the target block: a latency budget on a machine, the
// accuracy the search may lose, and how it searches.
type Target struct {
	LatencyUs       float64 // the budget in µs per forward call
	LatencyFraction float64 // or as a fraction of the dense model's measured latency
	ModelBytes      int     // the model file's bytes at most (0: no bound)
	MemoryBytes     int     // the runtime's memory at the batch at most (0: no bound)
	Batch, Threads  int
	Profile         string // a profile file (lathe profile); empty: measured here
	MaxAccuracyDrop float64
	DenseEpochs     int // the dense model's, trained first when the model block names no file
	Rounds          int
	Widths          []float64
	Formats         []string
	Precisions      []string
}

// PostTraining is the post_training block: the model file compressed
// without training (ptq.Options) before the job's epochs fine-tune it.
type PostTraining struct {
	Bits           int
	GPTQ           bool
	Activations    int
	Range          string
	BiasCorrection bool
	Prune          string
	Sparsity       float64
	NM             []int
	Samples        int
}

// Sensitivity is the sensitivity block: each layer pruned alone to each
// sparsity at the end of epoch AtEpoch, evaluated on the validation split.
type Sensitivity struct {
	Layers     []string
	Sparsities []float64
	Tolerance  float64 // accuracy (fraction) a suggestion may lose
	AtEpoch    int     // 1-based epoch after which it runs
}

// The recipe format, one table per block: each attribute's name, the field
// it fills, its default, what it allows and when it is written (see field).
// Defaults, Parse and Job.HCL all read these.

func epochsOf(j *Job) float64 { return float64(j.Epochs) }

var jobSection = section[Job]{name: "job", doc: "The recipe's one block, labelled with the job's name; every other block goes inside it.", fields: []field[Job]{
	{name: "dataset", doc: "The training data: `mnist` or `fashion-mnist` (60 000 training and 10 000 test images, 28×28); `langid` (64-byte windows of fortune cookies in 9 languages, from Debian's fortune packages); `text` (a folder of UTF-8 files, one per class, in `data_dir`); `kjv` (the King James Bible as windows of 128 bytes for a character-level language model; Proverbs and Romans held out for validation, Isaiah and John for test); your own files in `data_dir`: `csv` (train.csv and test.csv: a header, numeric features, a `label` column or the last), `npy` (train_x.npy, train_y.npy, test_x.npy, test_y.npy: features [N, F], [N, H, W] or [N, C, H, W] as uint8 pixels or floats, integer labels [N]) `images` (train/<class>/ and test/<class>/ folders of PNG or JPEG images of one size, grey or RGB), `arrow` or `parquet` (train and test tables: a `label` column and a `features` column of fixed-size lists, or numeric columns). See docs/import.md.", at: func(j *Job) any { return &j.Dataset }, def: "mnist"}, // a name the plan checks
	{name: "data_dir", doc: "The folder the dataset is read from, relative to the recipe's directory (`text`: its class files; `mnist`, `fashion-mnist`: their IDX files; `csv`, `npy`, `images`, `arrow`, `parquet`: your files, required); empty: where the dataset is installed. `--data-dir` overrides it.", at: func(j *Job) any { return &j.DataDir }, omit: func(j *Job) bool { return j.DataDir == "" }},
	{name: "seed", doc: "Seeds initialization, the data order, dropout and augmentation; a run is a pure function of its recipe and seed.", at: func(j *Job) any { return &j.Seed }, def: uint64(1), hi: math.MaxInt32},
	{name: "epochs", doc: "Passes over the training split.", at: func(j *Job) any { return &j.Epochs }, def: 10, lo: 1, hi: 10000},
	{name: "batch", doc: "Training samples per step.", at: func(j *Job) any { return &j.Batch }, def: 128, lo: 1, hi: 1 << 20}, // and at most the training split (the plan checks)
	{name: "eval_batch", doc: "Samples per forward pass when evaluating.", at: func(j *Job) any { return &j.EvalBatch }, def: 1000, lo: 1, hi: 1 << 20},
	{name: "validation", doc: "Training samples held out as the validation split (the last ones of the training set; `kjv`, a `text` file and a folder of your files with a val file — `val.csv`, `val_x.npy`/`val_y.npy`, `val/`, `val.arrow`, `val.parquet` — hold out their own instead: leave it out).", at: func(j *Job) any { return &j.Validation }, def: 5000, hi: 1 << 30}, // below the training set's size (the plan checks)
	{name: "test_fraction", doc: "Your own files (`csv`, `npy`, `images`, `arrow`, `parquet`) without a test file: the fraction of the training file's samples held out as the test split, drawn by `split_seed` (0: the folder must hold a test file). The model file records it, so that `lathe eval` scores the same samples.", at: func(j *Job) any { return &j.TestFraction }, hi: 0.9, omit: func(j *Job) bool { return j.TestFraction == 0 }},
	{name: "validation_fraction", doc: "Your own files without a validation file: the fraction of the training samples (what `test_fraction` leaves) held out as the validation split, drawn by `split_seed`, instead of `validation`'s last samples (leave `validation` out).", at: func(j *Job) any { return &j.ValidationFraction }, hi: 0.9, omit: func(j *Job) bool { return j.ValidationFraction == 0 }},
	{name: "split_seed", doc: "Draws the samples `test_fraction` and `validation_fraction` hold out — kept apart from `seed`, so that runs of several seeds are scored on the same splits.", at: func(j *Job) any { return &j.SplitSeed }, def: uint64(1), hi: math.MaxInt32, omit: func(j *Job) bool { return j.TestFraction == 0 && j.ValidationFraction == 0 }},
	{name: "image_size", doc: "`images`: the size `[rows, cols]` every image is brought to — scaled to cover it, the centre cropped (torchvision's Resize then CenterCrop) — where the folders' images differ in size or are larger than the network's input. Empty: all of one size already.", at: func(j *Job) any { return &j.ImageSize }, lo: 1, hi: 4096, omit: func(j *Job) bool { return len(j.ImageSize) == 0 }},
	{name: "train_windows", doc: "Text classification (`langid`, a `text` folder): the windows each training document gives at most — a long document's first windows, one after another (0: as many as a test document, 4). The test split is the same whatever it is; `validation` holds out the last of these windows.", at: func(j *Job) any { return &j.TrainWindows }, hi: 4096, omit: func(j *Job) bool { return j.TrainWindows == 0 }},
	{name: "class_balance", doc: "Weigh each class's term of the training loss by N/(classes × its training samples), so that every class counts alike (for sets whose classes differ in size, as `langid`'s languages do); with `distill`, both terms of each sample are weighed so.", at: func(j *Job) any { return &j.ClassBalance }, omit: func(j *Job) bool { return !j.ClassBalance }},
	{name: "label_smoothing", doc: "Label smoothing ε: train against the target (1 − ε)·onehot(label) + ε/classes instead of the label alone (with `distill`, the task term's target), so that the model is not pushed to ever larger logits (0: none; 0.1 is usual). Training's loss only: evaluation scores the plain cross-entropy.", at: func(j *Job) any { return &j.LabelSmoothing }, hi: 0.99, omit: func(j *Job) bool { return j.LabelSmoothing == 0 }},
	{name: "threads", doc: "Compute threads; 0: every core (`--threads` overrides).", at: func(j *Job) any { return &j.Threads }, hi: 1024},
}}

var augmentSection = section[Augment]{name: "augment", doc: "Inside `job`, at most one: random input augmentation during training.", fields: []field[Augment]{
	{name: "shift", doc: "Largest random translation in pixels, each image and axis drawn from the seed (0: none).", at: func(a *Augment) any { return &a.Shift }, hi: 8},
	{name: "flip", doc: "Mirror half the images left to right (valid for Fashion-MNIST, not for digits).", at: func(a *Augment) any { return &a.Flip }, omit: func(a *Augment) bool { return !a.Flip }},
	{name: "truncate", doc: "Text classification (`langid`, a `text` folder): the share of training windows cut short each epoch — each keeps a random length of its bytes (at least 8), the rest padding — so that the model sees as many short texts as a document's last window holds (0: none).", at: func(a *Augment) any { return &a.Truncate }, hi: 1, omit: func(a *Augment) bool { return a.Truncate == 0 }},
}}

var modelSection = section[Model]{name: "model", doc: "Inside `job`, exactly one: the network trained (the student, when distilling). With `arch = \"graph\"` it holds `layer` and `repeat` blocks.", fields: []field[Model]{
	{name: "file", doc: "A trained model file (`model.arrow`) the run starts from — its network and weights, fine-tuned with the recipe's policies; relative to the recipe's directory. What the block says of a network to build (for an empty file) is then not used.", at: func(m *Model) any { return &m.File }, omit: func(m *Model) bool { return m.File == "" }},
	{name: "mean", doc: "The input normalization's means: each channel c of the input x (pixel/255, as lathe reads images) becomes (x − mean[c]) / std[c] before the first layer — how a model trained elsewhere expects its images (for an `.onnx` file, a normalization written outside its graph; one written inside is imported by itself). One value for every channel, or one per channel; with `std`. Kept in the model file: eval, the runtime and the ONNX export apply it. Not for a `.arrow` model file, which keeps its own.", at: func(m *Model) any { return &m.Mean }, omit: func(m *Model) bool { return len(m.Mean) == 0 }},
	{name: "std", doc: "The input normalization's standard deviations (> 0), with `mean`.", at: func(m *Model) any { return &m.Std }, omit: func(m *Model) bool { return len(m.Std) == 0 }},
	{name: "arch", doc: "The network: `mlp`, `lenet5`, `resnet`, `mobilenet`, `transformer` (for text), or `graph` (its `layer` and `repeat` blocks). Required unless `file` is set.", at: func(m *Model) any { return &m.Arch }, omit: func(m *Model) bool { return m.Arch == "" }}, // a name the plan checks
	{name: "hidden", doc: "`mlp`: the hidden layers' widths.", at: func(m *Model) any { return &m.Hidden }, lo: 1, hi: 1 << 16, omit: func(m *Model) bool { return len(m.Hidden) == 0 }},
	{name: "dropout", doc: "Dropout before each hidden linear layer, during training only.", at: func(m *Model) any { return &m.Dropout }, hi: 0.95},
	{name: "input_dropout", doc: "Dropout on the input pixels, during training only.", at: func(m *Model) any { return &m.InputDropout }, hi: 0.95},
	{name: "init", doc: "Weight initialization: `uniform` (Glorot) or `kaiming` (He, for ReLU networks).", at: func(m *Model) any { return &m.Init }, def: "uniform", choices: []string{"uniform", "kaiming"}},
	{name: "depth", doc: "`resnet`: layers, 6n+2 (8, 14, 20, 32, 56, …; He et al. 2016 §4.2).", at: func(m *Model) any { return &m.Depth }, lo: 8, hi: 1000, omit: func(m *Model) bool { return m.Depth == 0 }},
	{name: "width", doc: "`mobilenet`: the width multiplier of every layer's channels.", at: func(m *Model) any { return &m.Width }, loOpen: true, hi: 4, omit: func(m *Model) bool { return m.Width == 0 }},
	{name: "dim", doc: "`transformer`: the width of every position's values (default 128).", at: func(m *Model) any { return &m.Dim }, lo: 1, hi: 1 << 14, omit: func(m *Model) bool { return m.Dim == 0 }},
	{name: "heads", doc: "`transformer`: attention heads per block, dividing `dim` (default 4).", at: func(m *Model) any { return &m.Heads }, lo: 1, hi: 1 << 10, omit: func(m *Model) bool { return m.Heads == 0 }},
	{name: "blocks", doc: "`transformer`: pre-norm transformer blocks (default 2).", at: func(m *Model) any { return &m.Blocks }, lo: 1, hi: 1 << 10, omit: func(m *Model) bool { return m.Blocks == 0 }},
	{name: "mlp", doc: "`transformer`: each block's feed-forward width (default 4 × `dim`).", at: func(m *Model) any { return &m.MLP }, lo: 1, hi: 1 << 16, omit: func(m *Model) bool { return m.MLP == 0 }},
	{name: "ngram", doc: "`transformer` classifiers: a convolution over the embeddings of this many bytes around each position (odd; GELU, added to the embeddings) before the first block, so that the blocks start from local n-gram features (0: none; not for a language model, which must not see the bytes after a position).", at: func(m *Model) any { return &m.Ngram }, hi: 15, omit: func(m *Model) bool { return m.Ngram == 0 }},
	{name: "skip_padding", doc: "`transformer`: attention and the pooling skip the padding of windows shorter than the context (the positions after a window's last non-zero byte: a cookie's short tail in `langid`).", at: func(m *Model) any { return &m.SkipPadding }, omit: func(m *Model) bool { return !m.SkipPadding }},
}}

// normFields is how many of modelSection's fields, after file, describe
// the input normalization: they hold for a file as for a built network.
const normFields = 2

// A model file holds the network: nothing else of the block (but the
// input normalization) is written.
func init() {
	for i := range modelSection.fields[1+normFields:] {
		f := &modelSection.fields[i+1+normFields]
		omit := f.omit
		f.omit = func(m *Model) bool { return m.File != "" || (omit != nil && omit(m)) }
	}
}

var checkpointSection = section[Checkpoint]{name: "checkpoint", doc: "Inside `job`, at most one: when training checkpoints are written. A resumed run may change it.", fields: []field[Checkpoint]{
	{name: "every_epochs", doc: "Write a training checkpoint after every N epochs (0: none by epoch).", at: func(c *Checkpoint) any { return &c.EveryEpochs }, def: 1, hi: 10000},
	{name: "every_steps", doc: "Also write one every N steps (0: none by step; `--checkpoint-every-steps` overrides).", at: func(c *Checkpoint) any { return &c.EverySteps }, hi: 1 << 30},
	{name: "keep", doc: "Keep the newest N (`best.arrow`, the best by validation accuracy, is kept besides).", at: func(c *Checkpoint) any { return &c.Keep }, def: 3, lo: 1, hi: 1000},
}}

// optimizerSection's label is the kind, a name the plan checks; SGD takes
// momentum, the others Adam's moments.
var optimizerSection = section[Optimizer]{name: "optimizer", doc: "Inside `job`, at most one (default `sgd`), labelled with its kind.", labels: []string{"sgd", "adam", "adamw"}, label: func(o *Optimizer) *string { return &o.Kind }, fields: []field[Optimizer]{
	{name: "lr", doc: "The base learning rate.", at: func(o *Optimizer) any { return &o.LR }, def: 0.05, loOpen: true, hi: 100, when: is("sgd")},
	{name: "lr", doc: "The base learning rate.", at: func(o *Optimizer) any { return &o.LR }, def: 1e-3, loOpen: true, hi: 100, when: isNot("sgd")}, // Adam's customary rate
	{name: "momentum", doc: "SGD's momentum.", at: func(o *Optimizer) any { return &o.Momentum }, def: 0.9, hi: 0.9999, when: is("sgd")},
	{name: "nesterov", doc: "Nesterov momentum.", at: func(o *Optimizer) any { return &o.Nesterov }, when: is("sgd")},
	{name: "beta1", doc: "Adam's first-moment decay.", at: func(o *Optimizer) any { return &o.Beta1 }, def: 0.9, hi: 0.9999, when: isNot("sgd")},
	{name: "beta2", doc: "Adam's second-moment decay.", at: func(o *Optimizer) any { return &o.Beta2 }, def: 0.999, hi: 0.999999, when: isNot("sgd")},
	{name: "eps", doc: "Adam's ε.", at: func(o *Optimizer) any { return &o.Eps }, def: 1e-8, loOpen: true, hi: 1, when: isNot("sgd")},
	{name: "weight_decay", doc: "L2 weight decay (AdamW: decoupled).", at: func(o *Optimizer) any { return &o.WeightDecay }, hi: 1},
	{name: "lr_schedule", doc: "How the rate changes with samples seen: `constant`, `step` or `cosine`.", at: func(o *Optimizer) any { return &o.Schedule }, def: "cosine"}, // a name the plan checks
	{name: "warmup_epochs", doc: "Linear warm-up from 0, in epochs.", at: func(o *Optimizer) any { return &o.WarmupEpochs }, hi: 10000},
	{name: "min_lr", doc: "`cosine`: the floor it decays to.", at: func(o *Optimizer) any { return &o.MinLR }, hi: 100},
	{name: "step_epochs", doc: "`step`: decay every this many epochs.", at: func(o *Optimizer) any { return &o.StepEpochs }, def: 10.0, loOpen: true, hi: 10000},
	{name: "gamma", doc: "`step`: the decay factor.", at: func(o *Optimizer) any { return &o.Gamma }, def: 0.1, loOpen: true, hi: 1},
	{name: "clip_norm", doc: "Clip each step's gradients to this global L2 norm (0: no clipping).", at: func(o *Optimizer) any { return &o.ClipNorm }, hi: 1e6, omit: func(o *Optimizer) bool { return o.ClipNorm == 0 }},
	{name: "no_decay", doc: "Parameter kinds weight decay leaves alone: `bias`, `norm` (batch and layer norms' scales and shifts), `embedding` (token and positional tables).", at: func(o *Optimizer) any { return &o.NoDecay }, omit: func(o *Optimizer) bool { return len(o.NoDecay) == 0 }},
}}

// NoDecayKinds are the parameter kinds optimizer.no_decay may name.
var NoDecayKinds = []string{"bias", "norm", "embedding"}

// PruneMethods are the prune block labels.
var PruneMethods = []string{"magnitude", "structured", "nm"}

var sparsity = []string{"magnitude", "structured"} // methods with a target sparsity

var pruneSection = section[Prune]{name: "prune", doc: "Inside `job`, any number, labelled with the method: `magnitude` (unstructured), `structured`, `nm` (N:M). A layer is pruned by at most one block (with `granularity = \"groups\"` a convolution can still belong to two blocks' groups — reading one, producing another: it keeps what each removes). Windows are in epochs of training done; the schedule runs on samples seen.", labels: PruneMethods, label: func(p *Prune) *string { return &p.Method }, fields: []field[Prune]{
	{name: "layers", doc: "Weight names, or patterns (`block*.conv1`, path.Match syntax); every weight when absent.", at: func(p *Prune) any { return &p.Layers }},
	{name: "target", doc: "The final sparsity, a fraction of each layer's weights (of its groups, for structured pruning).", at: func(p *Prune) any { return &p.Target }, hi: 1, when: is(sparsity...)},
	{name: "scope", doc: "`layer`: each layer to the target; `global`: one threshold over all the layers named.", at: func(p *Prune) any { return &p.Scope }, def: "layer", choices: []string{"layer", "global"}, when: is("magnitude")},
	{name: "granularity", doc: "What is removed: `rows` (neurons), `columns` (inputs), `filters`, `channels`, `groups` (a convolution's channels with everything that depends on them, across residual additions), or `heads` (an attention layer's heads: their rows of q, k, v and columns of o; `layers` names attention layers).", at: func(p *Prune) any { return &p.Granularity }, def: "rows", choices: []string{"rows", "columns", "filters", "channels", "groups", "heads"}, when: is("structured")},
	{name: "norm", doc: "How structures are ranked: `l1` or `l2` norm.", at: func(p *Prune) any { return &p.Norm }, def: "l1", choices: []string{"l1", "l2"}, when: is("structured")},
	{name: "n", doc: "`nm`: keep N weights …", at: func(p *Prune) any { return &p.N }, def: 2, hi: 1024, when: is("nm")},
	{name: "m", doc: "`nm`: … in every M consecutive inputs.", at: func(p *Prune) any { return &p.M }, def: 4, lo: 1, hi: 1024, when: is("nm")},
	{name: "initial", doc: "The sparsity at the first pruning event.", at: func(p *Prune) any { return &p.Initial }, hi: 1},
	{name: "schedule", doc: "How sparsity grows from `initial` to `target`: `agp` (Zhu & Gupta's cubic), `polynomial`, `linear`, `one_shot`, `iterative`.", at: func(p *Prune) any { return &p.Schedule }, def: "agp", choices: pruneSchedules, when: is(sparsity...)},
	{name: "schedule", doc: "How sparsity grows from `initial` to `target`: `agp` (Zhu & Gupta's cubic), `polynomial`, `linear`, `one_shot`, `iterative`.", at: func(p *Prune) any { return &p.Schedule }, def: "one_shot", choices: pruneSchedules, when: is("nm")},
	{name: "power", doc: "`polynomial`: the exponent.", at: func(p *Prune) any { return &p.Power }, def: 3.0, loOpen: true, hi: 100},
	{name: "from_epoch", doc: "The window's start, in epochs of training done (fractions allowed).", at: func(p *Prune) any { return &p.FromEpoch }, hi: 100000},
	{name: "to_epoch", doc: "The window's end: the target is reached here.", at: func(p *Prune) any { return &p.ToEpoch }, def: 1.0, hi: 100000},
	{name: "targets_from", doc: "`sensitivity`: each layer's target from the sensitivity analysis's suggestions.", at: func(p *Prune) any { return &p.TargetsFrom }, choices: []string{"sensitivity"}, omit: func(p *Prune) bool { return p.TargetsFrom == "" }},
	{name: "guard_tolerance", doc: "Pause pruning while validation accuracy is more than this fraction below its level before the window.", at: func(p *Prune) any { return &p.GuardTolerance }, loOpen: true, hi: 1, omit: unguarded},
	{name: "guard_undo", doc: "With a guard: also undo the last pruning step when it pauses.", at: func(p *Prune) any { return &p.GuardUndo }, omit: unguarded},
	// One of the three every_* is written: steps, else samples, else epochs.
	{name: "every_steps", doc: "Prune every N steps.", at: func(p *Prune) any { return &p.EverySteps }, lo: 1, hi: math.MaxInt32, omit: func(p *Prune) bool { return p.EverySteps == 0 }},
	{name: "every_samples", doc: "Prune every N samples (when `every_steps` is not set).", at: func(p *Prune) any { return &p.EverySamples }, lo: 1, hi: math.MaxInt32, omit: func(p *Prune) bool { return p.EverySteps > 0 || p.EverySamples == 0 }},
	{name: "every_epochs", doc: "Prune every this many epochs (the default, 0.25, when neither other is set).", at: func(p *Prune) any { return &p.EveryEpochs }, loOpen: true, hi: 100000, omit: func(p *Prune) bool { return p.EverySteps > 0 || p.EverySamples > 0 }},
}}

var pruneSchedules = []string{"agp", "polynomial", "linear", "one_shot", "iterative"}

func unguarded(p *Prune) bool { return p.GuardTolerance == 0 }

// RegularizeKinds are the regularize block labels.
var RegularizeKinds = []string{"group_lasso", "l1", "l2"}

var regularizeSection = section[Regularize]{name: "regularize", doc: "Inside `job`, any number, labelled with the penalty: `group_lasso`, `l1` (both proximal steps), `l2`.", labels: RegularizeKinds, label: func(r *Regularize) *string { return &r.Kind }, fields: []field[Regularize]{
	{name: "layers", doc: "Weight names or patterns.", at: func(r *Regularize) any { return &r.Layers }},
	{name: "groups", doc: "`group_lasso`: the groups whose norms are penalized: `rows`, `columns`, `filters`, `channels`.", at: func(r *Regularize) any { return &r.Groups }, def: "rows", choices: []string{"rows", "columns", "filters", "channels"}, when: is("group_lasso")},
	{name: "strength", doc: "λ at `from_epoch`.", at: func(r *Regularize) any { return &r.Strength }, hi: 1e3},
	{name: "final_strength", doc: "Ramp λ linearly to this at `to_epoch` (−1: constant).", at: func(r *Regularize) any { return &r.FinalStrength }, def: -1.0, hi: 1e3, omit: func(r *Regularize) bool { return r.FinalStrength < 0 }},
	{name: "from_epoch", doc: "The window's start, in epochs of training done.", at: func(r *Regularize) any { return &r.FromEpoch }, hi: 100000},
	{name: "to_epoch", doc: "The window's end (0: the end of the run).", at: func(r *Regularize) any { return &r.ToEpoch }, hi: 100000},
}}

var factorizeSection = section[Factorize]{name: "factorize", doc: "Inside `job`, any number: a linear layer made low-rank.", fields: []field[Factorize]{
	{name: "layer", doc: "The linear layer replaced by two thinner ones (truncated SVD), then fine-tuned.", at: func(f *Factorize) any { return &f.Layer }, required: true},
	{name: "rank", doc: "The rank kept.", at: func(f *Factorize) any { return &f.Rank }, lo: 1, hi: 1 << 16, omit: func(f *Factorize) bool { return f.Rank == 0 }},
	{name: "energy", doc: "Or: the fraction of spectral energy kept, which chooses the rank.", at: func(f *Factorize) any { return &f.Energy }, loOpen: true, hi: 1, omit: func(f *Factorize) bool { return f.Rank > 0 }},
	{name: "at_epoch", doc: "Epochs of training done before factorizing.", at: func(f *Factorize) any { return &f.AtEpoch }, required: true, hi: 100000},
}}

// teacherSection holds the model's fields, unless file names a trained
// teacher: then nothing else is written.
var teacherSection = section[Teacher]{name: "teacher", doc: "Inside `job`, at most one: the distillation teacher — a model file, or a model block's fields (`arch`, `hidden`, `depth`, …) for a teacher trained first with the job's data, seed and optimizer.", fields: slices.Concat(
	[]field[Teacher]{{name: "file", doc: "A trained model file (`model.arrow`) to distil from instead of training a teacher; relative to the recipe's directory. Empty: train the teacher below.", at: func(t *Teacher) any { return &t.File }, omit: func(t *Teacher) bool { return t.File == "" }}},
	embed(modelSection.fields[1:1+normFields], func(t *Teacher) *Model { return &t.Model }, func(*Teacher) bool { return false }),
	embed(modelSection.fields[1+normFields:], func(t *Teacher) *Model { return &t.Model }, func(t *Teacher) bool { return t.File != "" }), // its own file, above
	[]field[Teacher]{
		{name: "epochs", doc: "The teacher's epochs (trained first, in `<run-dir>/teacher`).", at: func(t *Teacher) any { return &t.Epochs }, lo: 1, hi: 10000, omit: func(t *Teacher) bool { return t.File != "" }},
		{name: "count", doc: "Teachers trained (seeds seed, seed+1, …) and distilled from as an ensemble (their mean logits).", at: func(t *Teacher) any { return &t.Count }, def: 1, lo: 1, hi: 16, omit: func(t *Teacher) bool { return t.File != "" }},
	})}

// embed lifts a block's fields into an enclosing block's value, none
// required (the enclosing block's checks say what it needs).
func embed[T, U any](fs []field[U], in func(*T) *U, omit func(*T) bool) []field[T] {
	out := make([]field[T], len(fs))
	for i, f := range fs {
		out[i] = field[T]{name: f.name, doc: f.doc, at: func(t *T) any { return f.at(in(t)) }, def: f.def, lo: f.lo, hi: f.hi, loOpen: f.loOpen, choices: f.choices,
			omit: func(t *T) bool { return omit(t) || (f.omit != nil && f.omit(in(t))) }}
	}
	return out
}

var distillSection = section[Distill]{name: "distill", doc: "Inside `job`, with a `teacher` (or a `target`: its dense model teaches each round): the student learns the teacher's softened outputs.", fields: []field[Distill]{
	{name: "temperature", doc: "Hinton's softmax temperature T (the soft term is scaled by T²).", at: func(d *Distill) any { return &d.Temperature }, def: 4.0, loOpen: true, hi: 100},
	{name: "alpha", doc: "The weight of the soft (teacher) term; 1 − alpha weighs the task's cross-entropy.", at: func(d *Distill) any { return &d.Alpha }, def: 0.7, hi: 1},
	{name: "offline", doc: "Compute the teacher's logits for the training set once, before the student trains (only without augmentation).", at: func(d *Distill) any { return &d.Offline }, omit: func(d *Distill) bool { return !d.Offline }},
}}

var hintSection = section[Hint]{name: "hint", doc: "Inside `distill`, at most one: feature distillation from a teacher's hidden layer (a linear layer with an activation; in a transformer any block's layer, e.g. `b2.add2`, the residual stream after block 2, each position projected alike).", fields: []field[Hint]{
	{name: "teacher", doc: "The teacher's hidden layer whose output is the hint.", at: func(h *Hint) any { return &h.Teacher }, required: true},
	{name: "student", doc: "The student's hidden layer that learns it, through a learned projection.", at: func(h *Hint) any { return &h.Student }, required: true},
	{name: "weight", doc: "The hint loss's weight.", at: func(h *Hint) any { return &h.Weight }, def: 1.0, loOpen: true, hi: 1000},
}}

var kmeansSection = section[KMeans]{name: "cluster", doc: "Inside `job`, at most one: weight sharing by k-means (Deep Compression).", fields: []field[KMeans]{
	{name: "layers", doc: "Weight names or patterns whose non-zero weights share values.", at: func(k *KMeans) any { return &k.Layers }, required: true},
	{name: "clusters", doc: "Shared values per layer (k of k-means; Deep Compression).", at: func(k *KMeans) any { return &k.Clusters }, def: 32, lo: 2, hi: 255},
	{name: "from_epoch", doc: "When weights start sharing (the centroids then train).", at: func(k *KMeans) any { return &k.FromEpoch }, upTo: epochsOf},
}}

var quantizeSection = section[Quantize]{name: "quantize", doc: "Inside `job`, at most one: quantization-aware training (fake quantization of weights, and of activations when asked).", fields: []field[Quantize]{
	{name: "layers", doc: "Weight names or patterns trained with fake quantization (straight-through estimator).", at: func(q *Quantize) any { return &q.Layers }, required: true},
	{name: "bits", doc: "Weight bit width.", at: func(q *Quantize) any { return &q.Bits }, def: 8, lo: 2, hi: 8},
	{name: "from_epoch", doc: "When quantization starts.", at: func(q *Quantize) any { return &q.FromEpoch }, upTo: epochsOf},
	{name: "granularity", doc: "`per_channel` (one scale per output neuron or filter) or `per_tensor`.", at: func(q *Quantize) any { return &q.Granularity }, def: "per_channel", choices: []string{"per_channel", "per_tensor"}},
	{name: "symmetric", doc: "Symmetric ranges (zero point 0) or asymmetric.", at: func(q *Quantize) any { return &q.Symmetric }, def: true},
	{name: "activations", doc: "Also quantize the activations after these layers (and after every residual addition) to this many bits: unsigned, per tensor, ranges from moving-average observers.", at: func(q *Quantize) any { return &q.Activations }, lo: 2, hi: 8, omit: func(q *Quantize) bool { return q.Activations == 0 }},
	{name: "freeze_observers_epoch", doc: "Freeze the activation ranges from this epoch on.", at: func(q *Quantize) any { return &q.FreezeObserversEpoch }, loOpen: true, upTo: epochsOf, omit: func(q *Quantize) bool { return q.FreezeObserversEpoch == 0 }},
	{name: "fold_batch_norms", doc: "Train each quantized convolution followed by a batch norm with the norm folded into its weight (the integers the model file stores).", at: func(q *Quantize) any { return &q.FoldBatchNorms }, def: true},
	{name: "freeze_bn_epoch", doc: "Freeze every batch norm's statistics from this epoch on.", at: func(q *Quantize) any { return &q.FreezeBNEpoch }, loOpen: true, upTo: epochsOf, omit: func(q *Quantize) bool { return q.FreezeBNEpoch == 0 }},
	{name: "gradual", doc: "Lower bit widths to step down to …", at: func(q *Quantize) any { return &q.Gradual }, lo: 2, hi: 8, omit: func(q *Quantize) bool { return len(q.Gradual) == 0 }},
	{name: "gradual_epochs", doc: "… at these epochs.", at: func(q *Quantize) any { return &q.GradualEpochs }, omit: func(q *Quantize) bool { return len(q.Gradual) == 0 }},
	{name: "layer_bits", doc: "Per-layer bit widths (mixed precision), by weight name.", at: func(q *Quantize) any { return &q.LayerBits }, lo: 2, hi: 8, omit: func(q *Quantize) bool { return len(q.LayerBits) == 0 }},
}}

var thinSection = section[Job]{name: "thin", doc: "Inside `job`, at most one: rebuild the model physically smaller mid-run.", fields: []field[Job]{
	{name: "at_epoch", doc: "Rebuild the model without its all-zero neurons and filters after this many epochs; training goes on smaller.", at: func(j *Job) any { return &j.ThinAtEpoch }, required: true, lo: 1, upTo: func(j *Job) float64 { return float64(max(1, j.Epochs-1)) }},
}}

var sensitivitySection = section[Sensitivity]{name: "sensitivity", doc: "Inside `job`, at most one: a pruning sensitivity analysis during the run (sensitivity.json, sensitivity.csv).", fields: []field[Sensitivity]{
	{name: "layers", doc: "Weight names or patterns analysed.", at: func(s *Sensitivity) any { return &s.Layers }, required: true},
	{name: "sparsities", doc: "Each layer is pruned alone to each of these and evaluated on the validation split.", at: func(s *Sensitivity) any { return &s.Sparsities }, def: []float64{0.5, 0.7, 0.8, 0.9, 0.95}},
	{name: "tolerance", doc: "The validation accuracy (fraction) a suggested target may lose.", at: func(s *Sensitivity) any { return &s.Tolerance }, def: 0.005, hi: 1},
	{name: "at_epoch", doc: "The epoch after which the analysis runs.", at: func(s *Sensitivity) any { return &s.AtEpoch }, required: true, lo: 1, upTo: epochsOf},
}}

var postTrainingSection = section[PostTraining]{name: "post_training", doc: "Inside `job`, at most one, with `model.file`: compress the model file without training before the run starts — the same as `lathe compress` (GPTQ or round-to-nearest weights, calibrated activation ranges, bias correction, magnitude or SparseGPT pruning), on calibration samples of the training split — then fine-tune the result for the job's epochs with the recipe's policies. See docs/import.md.", fields: []field[PostTraining]{
	{name: "bits", doc: "Weight bits, 2 to 8, per output channel (0: float).", at: func(p *PostTraining) any { return &p.Bits }, hi: 8, omit: func(p *PostTraining) bool { return p.Bits == 0 }},
	{name: "gptq", doc: "GPTQ instead of rounding to the nearest.", at: func(p *PostTraining) any { return &p.GPTQ }, omit: func(p *PostTraining) bool { return !p.GPTQ }},
	{name: "activations", doc: "Activation bits, 2 to 8 (0: float).", at: func(p *PostTraining) any { return &p.Activations }, hi: 8, omit: func(p *PostTraining) bool { return p.Activations == 0 }},
	{name: "range", doc: "Activation ranges: `minmax`, `percentile` (99.99) or `mse`.", at: func(p *PostTraining) any { return &p.Range }, def: "minmax"},
	{name: "bias_correction", doc: "Add each layer's mean output change on the calibration samples to its bias.", at: func(p *PostTraining) any { return &p.BiasCorrection }, omit: func(p *PostTraining) bool { return !p.BiasCorrection }},
	{name: "prune", doc: "One-shot pruning: `magnitude` or `sparsegpt` (empty: none).", at: func(p *PostTraining) any { return &p.Prune }, omit: func(p *PostTraining) bool { return p.Prune == "" }},
	{name: "sparsity", doc: "The pruned share of each linear and convolution weight.", at: func(p *PostTraining) any { return &p.Sparsity }, hi: 1, omit: func(p *PostTraining) bool { return p.Sparsity == 0 }},
	{name: "nm", doc: "N:M pruning instead of a share, as [N, M] (e.g. [2, 4]).", at: func(p *PostTraining) any { return &p.NM }, omit: func(p *PostTraining) bool { return len(p.NM) == 0 }},
	{name: "samples", doc: "Calibration samples drawn from the training split (the job's seed).", at: func(p *PostTraining) any { return &p.Samples }, def: 512, lo: 1, hi: 1 << 20},
}}

var targetSection = section[Target]{name: "target", doc: "Inside `job`, at most one: search for the per-layer settings (channel-group widths, sparse or 2:4 weights, integer kernels) that meet a latency, model-file or memory budget on this machine (or the one a profile was measured on) — each round solves on the profile and the measured sensitivities, fine-tunes from the dense model for the job's epochs, measures the result and tightens. The job's model is the dense one (`model.file`, or trained first in `<run-dir>/dense`); the search writes the pruning and quantization itself. See docs/target.md.", fields: []field[Target]{
	{name: "latency_us", doc: "The budget: µs per forward call at `batch` and `threads`, measured in lathe's runtime.", at: func(t *Target) any { return &t.LatencyUs }, hi: 1e9, omit: func(t *Target) bool { return t.LatencyUs == 0 }},
	{name: "latency_fraction", doc: "Or the budget as a fraction of the dense model's measured latency.", at: func(t *Target) any { return &t.LatencyFraction }, hi: 1, omit: func(t *Target) bool { return t.LatencyFraction == 0 }},
	{name: "model_bytes", doc: "The model file's bytes at most (with or without a latency budget).", at: func(t *Target) any { return &t.ModelBytes }, hi: 1 << 40, omit: func(t *Target) bool { return t.ModelBytes == 0 }},
	{name: "memory_bytes", doc: "The runtime's memory at `batch` at most: parameters as its kernels hold them, activation buffers and scratch (`infer.Model.Bytes`, what `lathe bench` prints as model memory), alone or with the other budgets.", at: func(t *Target) any { return &t.MemoryBytes }, hi: 1 << 40, omit: func(t *Target) bool { return t.MemoryBytes == 0 }},
	{name: "batch", doc: "Samples per forward call the latency and memory are measured at.", at: func(t *Target) any { return &t.Batch }, def: 1, lo: 1, hi: 1 << 16},
	{name: "threads", doc: "Compute threads the latency is measured with.", at: func(t *Target) any { return &t.Threads }, def: 1, lo: 1, hi: 1024},
	{name: "profile", doc: "A profile file (`lathe profile`) measured on the deployment machine, used as given; empty: profiled here (`<run-dir>/profile.json`). Relative to the recipe's directory.", at: func(t *Target) any { return &t.Profile }, omit: func(t *Target) bool { return t.Profile == "" }},
	{name: "max_accuracy_drop", doc: "The validation accuracy (a fraction) the result may lose against the dense model.", at: func(t *Target) any { return &t.MaxAccuracyDrop }, def: 0.005, hi: 1},
	{name: "dense_epochs", doc: "Epochs of the dense model trained first when `model.file` is empty (default: the job's).", at: func(t *Target) any { return &t.DenseEpochs }, hi: 10000, omit: func(t *Target) bool { return t.DenseEpochs == 0 }},
	{name: "rounds", doc: "Solve, fine-tune and measure at most this many times, tightening the budget the solver works to after a round that misses it.", at: func(t *Target) any { return &t.Rounds }, def: 3, lo: 1, hi: 20},
	{name: "widths", doc: "The fractions of its channels each channel group may keep, the first 1.", at: func(t *Target) any { return &t.Widths }, def: []float64{1, 0.75, 0.5, 0.25}},
	{name: "formats", doc: "The weight formats a layer may take: `dense`, `sparse-S` (0 < S < 1), `2:4`.", at: func(t *Target) any { return &t.Formats }, def: []string{"dense", "sparse-0.5", "sparse-0.7", "sparse-0.8", "sparse-0.9", "sparse-0.95", "2:4"}},
	{name: "precisions", doc: "`float`, `int8` (every weight and every weighted layer's input in 8 bits, quantization-aware), or both.", at: func(t *Target) any { return &t.Precisions }, def: []string{"float", "int8"}},
}}

// NewPrune is a prune block of a method with every default filled.
func NewPrune(method string) Prune { return pruneSection.fresh(method) }

// NewQuantize is a quantize block with every default filled.
func NewQuantize() Quantize { return quantizeSection.fresh("") }

// Defaults returns a job with every default filled (from the tables
// above); Parse starts from it.
func Defaults() Job {
	j := jobSection.fresh("")
	j.Augment = augmentSection.fresh("")
	j.Model = modelSection.fresh("")
	j.Checkpoint = checkpointSection.fresh("")
	j.Optimizer = optimizerSection.fresh("sgd")
	return j
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
