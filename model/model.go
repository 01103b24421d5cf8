package model

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/graph"
)

// Param is one named parameter tensor. Its Value is shared by every graph
// built from the model.
type Param struct {
	Name   string        // "fc1", "fc1.bias", "conv2", …
	Layer  string        // the layer it belongs to
	Shape  []int         // e.g. [300 784] for fc1 of LeNet-300-100
	Bias   bool          // a bias vector rather than a weight
	Groups []graph.Group // prunable structures (none for biases)
	// Norm marks a batch norm's scale and shift (and its buffers): not a
	// weight compression acts on. Embed marks an embedding table, which
	// starts from N(0, 1) (PyTorch's nn.Embedding), or at zero when Zero
	// (a positional table).
	Norm        bool
	Embed, Zero bool
	Value       *tensor.Dense

	biasFan int // a bias's weight fan-in, for initialisation
}

// Data is the parameter's float32 backing slice.
func (p *Param) Data() []float32 { return p.Value.Float32s() }

// Size is the number of elements.
func (p *Param) Size() int { return p.Value.Shape().TotalSize() }

// Spec is what a recipe's model block decides.
type Spec struct {
	Arch   string `json:"arch"`             // "mlp", "lenet300", "lenet5", "teacher"
	Hidden []int  `json:"hidden,omitempty"` // hidden sizes: "mlp"; lenet5's fully connected layers (default [500])
	Conv   []int  `json:"conv,omitempty"`   // lenet5's filters per convolution (default [20 50]); set by thinning
	// Factors replaces linear layers by two thinner ones (low rank): layer
	// L becomes L.v (in→rank, no activation) then L.u (rank→out).
	Factors      []Factor `json:"factors,omitempty"`
	Dropout      float64  `json:"dropout,omitempty"`       // on hidden activations, in training only
	InputDropout float64  `json:"input_dropout,omitempty"` // on the input pixels, in training only
	Init         string   `json:"init,omitempty"`          // "uniform" (PyTorch's default) or "kaiming"
	// Depth is a resnet's layers (6n+2; default 20); Width a mobilenet's
	// width multiplier (default 1).
	Depth int     `json:"depth,omitempty"`
	Width float64 `json:"width,omitempty"`
	// A transformer's width, heads, blocks and feed-forward width
	// (defaults 128, 4, 2, 4·Dim).
	Dim    int `json:"dim,omitempty"`
	Heads  int `json:"heads,omitempty"`
	Blocks int `json:"blocks,omitempty"`
	MLP    int `json:"mlp,omitempty"`
	// SkipPadding makes a transformer's attention layers and pooling skip
	// the padding of windows shorter than the context
	// (graph.Layer.SkipPadding).
	SkipPadding bool `json:"skip_padding,omitempty"`
	// Ngram is the kernel of a convolution over a transformer's byte
	// embeddings, before its blocks (graph.TransformerShape; 0: none).
	Ngram int `json:"ngram,omitempty"`
}

// Factor is one factorized linear layer.
type Factor struct {
	Layer string `json:"layer"`
	Rank  int    `json:"rank"`
}

// Archs lists the known architectures.
var Archs = []string{"mlp", "lenet300", "lenet5", "teacher", "resnet", "mobilenet", "transformer"}

// Input describes the samples a model takes: images, or windows of text
// (1 row of Cols bytes).
type Input struct {
	Rows     int `json:"rows"`
	Cols     int `json:"cols"`
	Channels int `json:"channels"`
	Classes  int `json:"classes"`
	// PerPosition: the model scores the classes at every position of the
	// window (a language model's next byte), not once per sample.
	PerPosition bool `json:"per_position,omitempty"`
}

// LabelsPer is the labels a sample has: one, or one per position.
func (in Input) LabelsPer() int {
	if in.PerPosition {
		return in.Rows * in.Cols
	}
	return 1
}

// MNISTInput is 28×28 grey-scale with 10 classes (MNIST and Fashion-MNIST).
var MNISTInput = Input{Rows: 28, Cols: 28, Channels: 1, Classes: 10}

// Model is an architecture with its parameters.
type Model struct {
	Spec   Spec
	Input  Input
	Params []*Param
	// Quant holds, per weight name, the fake-quantization control of a
	// weight trained with quantization (QAT); graphs built from the model
	// fake-quantize those weights. Rebuilt models share the controls.
	Quant map[string]*QuantControl
	// ActQuant holds, per layer name, the observer of a hidden layer's
	// activation (after its ReLU) when activations are quantized.
	ActQuant map[string]*Observer
	// Fold maps each convolution trained with its batch norm folded into
	// its weight (quantization-aware training with folding, see
	// FoldBatchNorms) to that batch norm; BN, when set, freezes the batch
	// norms' statistics in training. Rebuilt models share both.
	Fold map[string]string
	BN   *BNControl
	// ClassWeights, when set, weigh each class's term of a training
	// graph's cross-entropy (Σ w·CE / Σ w): class-balanced training.
	ClassWeights []float32
	// LabelSmoothing, when positive, trains against (1 − ε)·onehot(y) +
	// ε/classes instead of onehot(y) (Szegedy et al.'s label smoothing):
	// the training graph's loss and gradient only, never evaluation.
	LabelSmoothing float32
	// Buffers are the state layers keep besides parameters, not trained
	// by gradients: each batch norm's running mean and variance, which
	// training graphs update and evaluation graphs use.
	Buffers []*Param
	// Net is the network's description: the layers the graph is built
	// from, in order, and what each parameter is.
	Net graph.Network
}

// Canonical resolves presets: lenet300 is mlp [300 100]; teacher is mlp
// [1200 1200] with dropout 0.5 unless the spec sets its own.
func (s Spec) Canonical() Spec {
	switch s.Arch {
	case "lenet300":
		if len(s.Hidden) == 0 {
			s.Hidden = []int{300, 100}
		}
	case "lenet5":
		if len(s.Conv) == 0 {
			s.Conv = []int{20, 50}
		}
		if len(s.Hidden) == 0 {
			s.Hidden = []int{500}
		}
	case "teacher":
		if len(s.Hidden) == 0 {
			s.Hidden = []int{1200, 1200}
		}
		if s.Dropout == 0 {
			s.Dropout = 0.5
		}
	case "resnet":
		if s.Depth == 0 {
			s.Depth = 20
		}
	case "mobilenet":
		if s.Width == 0 {
			s.Width = 1
		}
	case "transformer":
		s.Dim, s.Heads, s.Blocks = cmp.Or(s.Dim, 128), cmp.Or(s.Heads, 4), cmp.Or(s.Blocks, 2)
		s.MLP = cmp.Or(s.MLP, 4*s.Dim)
	}
	if s.Init == "" {
		s.Init = "uniform"
	}
	return s
}

// Validate reports a spec lathe cannot build.
func (s Spec) Validate() error {
	if !slices.Contains(Archs, s.Arch) {
		return fmt.Errorf("model: unknown arch %q (known: %s)", s.Arch, strings.Join(Archs, ", "))
	}
	if s.Arch == "mlp" && len(s.Hidden) == 0 {
		return fmt.Errorf("model: arch mlp needs hidden sizes")
	}
	for _, h := range s.Hidden {
		if h <= 0 {
			return fmt.Errorf("model: hidden size %d must be positive", h)
		}
	}
	if s.Arch == "lenet5" && (len(s.Conv) != 2 || len(s.Hidden) != 1) {
		return fmt.Errorf("model: arch lenet5 has two convolutions and one hidden fully connected layer")
	}
	if s.Arch != "lenet5" && len(s.Conv) > 0 {
		return fmt.Errorf("model: conv widths apply to lenet5 only")
	}
	cnn := s.Arch == "resnet" || s.Arch == "mobilenet"
	switch {
	case s.Depth != 0 && s.Arch != "resnet":
		return fmt.Errorf("model: depth applies to resnet only")
	case s.Width != 0 && s.Arch != "mobilenet":
		return fmt.Errorf("model: width applies to mobilenet only")
	case cnn && (len(s.Hidden) > 0 || s.Dropout > 0 || s.InputDropout > 0):
		return fmt.Errorf("model: arch %s takes no hidden sizes or dropout (its blocks are fixed; depth or width scale it)", s.Arch)
	case s.Arch != "transformer" && (s.Dim+s.Heads+s.Blocks+s.MLP+s.Ngram != 0 || s.SkipPadding):
		return fmt.Errorf("model: dim, heads, blocks, mlp, ngram and skip_padding apply to transformer only")
	case s.Ngram < 0 || s.Ngram%2 == 0 && s.Ngram != 0:
		return fmt.Errorf("model: ngram %d: the bytes a transformer's convolution spans, an odd number (0: none)", s.Ngram)
	case s.Arch == "transformer" && (len(s.Hidden) > 0 || s.Dropout > 0 || s.InputDropout > 0):
		return fmt.Errorf("model: arch transformer takes no hidden sizes or dropout (dim, heads, blocks and mlp shape it)")
	case s.Arch == "transformer" && s.Heads > 0 && s.Dim%s.Heads != 0:
		return fmt.Errorf("model: %d heads do not divide the transformer's dim %d", s.Heads, s.Dim)
	}
	for _, c := range s.Conv {
		if c <= 0 {
			return fmt.Errorf("model: convolution width %d must be positive", c)
		}
	}
	for _, f := range s.Factors {
		if f.Rank <= 0 {
			return fmt.Errorf("model: rank %d of %s must be positive", f.Rank, f.Layer)
		}
	}
	if s.Dropout < 0 || s.Dropout >= 1 || s.InputDropout < 0 || s.InputDropout >= 1 {
		return fmt.Errorf("model: dropout must be in [0, 1)")
	}
	if s.Init != "uniform" && s.Init != "kaiming" {
		return fmt.Errorf("model: unknown init %q (uniform, kaiming)", s.Init)
	}
	return nil
}

// New builds a model and initialises its parameters from seed. The values
// are a pure function of (spec, seed): each tensor draws from its own stream
// keyed by its name.
func New(spec Spec, in Input, seed uint64) (*Model, error) {
	spec = spec.Canonical()
	net, err := spec.Network(in)
	if err != nil {
		return nil, err
	}
	return build(spec, in, net, seed)
}

// FromNetwork builds a model of any network graph describes (not only the
// presets a recipe names), its parameters initialised from seed by init
// ("uniform", PyTorch's default, or "kaiming"). Such a model trains,
// prunes, quantizes and exports like any other; thinning and low-rank
// factorization, which rebuild a preset's Spec, refuse it.
func FromNetwork(net graph.Network, init string, seed uint64) (*Model, error) {
	if err := net.Validate(); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if init == "" {
		init = "uniform"
	}
	if init != "uniform" && init != "kaiming" {
		return nil, fmt.Errorf("model: unknown init %q (uniform, kaiming)", init)
	}
	in := Input{Rows: net.Input.H, Cols: net.Input.W, Channels: net.Input.C, Classes: net.Classes}
	return build(Spec{Init: init}, in, net.Clone(), seed)
}

// build lays out net's parameters — checking their count before any
// memory is taken for them — and initialises them.
func build(spec Spec, in Input, net graph.Network, seed uint64) (*Model, error) {
	m := &Model{Spec: spec, Input: in, Net: net}
	var n int64
	for _, gp := range net.Params() {
		size := gp.Size()
		if n += size; n > MaxParams || size > MaxParams {
			return nil, fmt.Errorf("model: the network has more than %d parameters (MaxParams; %s alone has %d): not a model this machine trains", int64(MaxParams), gp.Name, size)
		}
		m.Params = append(m.Params, &Param{Name: gp.Name, Layer: gp.Layer, Shape: gp.Shape, Bias: gp.Bias, Groups: gp.Groups, Norm: gp.Norm, Embed: gp.Embed, Zero: gp.Zero, biasFan: gp.Fan})
	}
	for _, p := range m.Params {
		p.Value = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(p.Shape...))
		initParam(p, spec.Init, seed)
	}
	zeroOffSequence(m, net)
	for _, l := range net.Layers {
		for _, b := range l.Buffers() {
			p := &Param{Name: b.Name, Layer: b.Layer, Shape: b.Shape, Norm: true, Value: tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(b.Shape...))}
			if strings.HasSuffix(b.Name, ".running_var") {
				for i := range p.Data() {
					p.Data()[i] = 1
				}
			}
			m.Buffers = append(m.Buffers, p)
		}
	}
	return m, nil
}

// zeroOffSequence zeroes the kernel rows of each convolution over a
// sequence ({1, T, C}) that meet only its zero padding — every row but the
// one at the padding's offset: they never touch a value, their gradients
// are zero, and kept at zero they cost a model file next to nothing.
func zeroOffSequence(m *Model, net graph.Network) {
	for _, l := range net.Layers {
		if l.Kind != graph.Conv || l.In.H != 1 || l.Kernel < 2 {
			continue
		}
		p := m.Param(l.Name)
		if p == nil || len(p.Shape) != 4 {
			continue
		}
		d, k, row := p.Data(), p.Shape[1], p.Shape[2]*p.Shape[3] // [out, k, k, in/groups]
		for i := 0; i < len(d); i += k * row {
			for r := range k {
				if r != l.Pad {
					clear(d[i+r*row : i+(r+1)*row])
				}
			}
		}
	}
}

// Network is the description of the network spec makes on input in: the
// presets resolved, then each factorized layer replaced by its two factors.
func (s Spec) Network(in Input) (graph.Network, error) {
	s = s.Canonical()
	if err := s.Validate(); err != nil {
		return graph.Network{}, err
	}
	shape := graph.Shape{H: in.Rows, W: in.Cols, C: in.Channels}
	var net graph.Network
	switch s.Arch {
	case "mlp", "lenet300", "teacher":
		net = graph.MLP(shape, s.Hidden, in.Classes, s.Dropout)
	case "lenet5":
		net = graph.LeNet5(shape, [2]int{s.Conv[0], s.Conv[1]}, s.Hidden[0], in.Classes, s.Dropout)
	case "resnet":
		var err error
		if net, err = graph.ResNet(shape, s.Depth, in.Classes); err != nil {
			return net, fmt.Errorf("model: %w", err)
		}
	case "mobilenet":
		var err error
		if net, err = graph.MobileNet(shape, s.Width, in.Classes); err != nil {
			return net, fmt.Errorf("model: %w", err)
		}
	case "transformer":
		if in.Rows != 1 || in.Channels != 1 {
			return net, fmt.Errorf("model: a transformer reads windows of text (1 row of bytes), not %d×%d×%d images", in.Rows, in.Cols, in.Channels)
		}
		var err error
		if net, err = graph.Transformer(shape, graph.TransformerShape{Dim: s.Dim, Heads: s.Heads, Blocks: s.Blocks, MLP: s.MLP, Ngram: s.Ngram}, in.Classes, in.PerPosition); err != nil {
			return net, fmt.Errorf("model: %w", err)
		}
		for i, l := range net.Layers {
			if l.Kind == graph.Attention || l.Kind == graph.GlobalAvgPool {
				net.Layers[i].SkipPadding = s.SkipPadding
			}
		}
	}
	// A layer takes the first factor naming it.
	for _, l := range slices.Clone(net.Layers) {
		if k := slices.IndexFunc(s.Factors, func(f Factor) bool { return f.Layer == l.Name }); k >= 0 {
			var err error
			if net, err = graph.Factorize(net, l.Name, s.Factors[k].Rank); err != nil {
				return net, fmt.Errorf("model: %w", err)
			}
		}
	}
	if err := net.Validate(); err != nil { // a preset on an input it cannot take
		return net, fmt.Errorf("model: arch %s on %d×%d×%d samples: %w", s.Arch, in.Rows, in.Cols, in.Channels, err)
	}
	return net, nil
}

// MaxParams bounds a model's parameters (1 GiB of float32 weights; a run
// holds several times that in gradients, optimizer state and masks).
var MaxParams int64 = 1 << 28

// fanIn is the number of inputs each output of a weight sees.
func fanIn(shape []int) int {
	n := 1
	for _, d := range shape[1:] {
		n *= d
	}
	return n
}

// initParam fills a parameter from its own seeded stream. "uniform" is
// PyTorch's default for Linear and Conv2d: weights and biases uniform in
// ±1/√fan_in. "kaiming" draws weights from N(0, 2/fan_in) and zeroes biases.
func initParam(p *Param, kind string, seed uint64) {
	h := fnv.New64a()
	h.Write([]byte(p.Name))
	r := rand.New(rand.NewPCG(seed, h.Sum64()))
	fan := fanIn(p.Shape)
	if p.Bias {
		fan = p.biasFan // a bias shares its weight's fan-in
	}
	d := p.Data()
	switch {
	case p.Norm: // a batch norm starts as the identity: scale 1, shift 0
		for i := range d {
			d[i] = 1
			if p.Bias {
				d[i] = 0
			}
		}
	case p.Zero:
		clear(d)
	case p.Embed:
		for i := range d {
			d[i] = float32(r.NormFloat64())
		}
	case kind == "kaiming" && p.Bias:
		clear(d)
	case kind == "kaiming":
		std := math.Sqrt(2 / float64(fan))
		for i := range d {
			d[i] = float32(r.NormFloat64() * std)
		}
	default:
		bound := 1 / math.Sqrt(float64(fan))
		for i := range d {
			d[i] = float32((2*r.Float64() - 1) * bound)
		}
	}
}

// Param returns the parameter with the given name, or nil.
func (m *Model) Param(name string) *Param {
	for _, p := range m.Params {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Buffer returns the buffer with the given name, or nil.
func (m *Model) Buffer(name string) *Param {
	for _, p := range m.Buffers {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Weights returns the weight parameters (no bias, no batch norm): what
// compression acts on.
func (m *Model) Weights() []*Param {
	var w []*Param
	for _, p := range m.Params {
		if !p.Bias && !p.Norm {
			w = append(w, p)
		}
	}
	return w
}

// Observed names the layers whose outputs are quantized when a recipe
// quantizes activations: each quantized layer's but the output layer's
// (whose logits stay float) — a folded convolution's after its batch norm
// and activation —, and every residual addition's.
func (m *Model) Observed(layers []string) []string {
	weights := m.Weights()
	output := weights[len(weights)-1].Name
	var out []string
	for _, l := range layers {
		switch {
		case l == output:
		case m.Fold[l] != "":
			out = append(out, m.Fold[l])
		default:
			out = append(out, l)
		}
	}
	for _, l := range m.Net.Layers {
		if l.Kind == graph.Add {
			out = append(out, l.Name)
		}
	}
	return out
}

// NumParams counts all parameter elements.
func (m *Model) NumParams() int {
	n := 0
	for _, p := range m.Params {
		n += p.Size()
	}
	return n
}

// Net is one graph built from a model for a fixed batch size.
type Net struct {
	Graph  *G.ExprGraph
	X      *G.Node   // input images [batch, features]
	Y      *G.Node   // labels [batch] ([batch·positions] per position; training graphs only)
	Logits *G.Node   // [batch, classes] ([batch, positions·classes] per position)
	Loss   *G.Node   // scalar mean cross-entropy (training graphs only)
	Params []*G.Node // in the order of Model.Params
	Batch  int

	XValue, YValue *tensor.Dense // bound to X and Y; overwrite their data to feed a batch
	TValue         *tensor.Dense // distillation graphs: the teacher's logits for the batch
	Dropouts       []*DropoutOp
	// Hidden holds the output of each layer a hint can use (HiddenLayers;
	// after its activation and any activation quantization, before
	// dropout), by layer name.
	Hidden map[string]*G.Node
	// HValue and HintProjection: distillation graphs with a hint, the
	// teacher layer's activations for the batch and the projection node
	// (set by the loss hook that adds the hint).
	HValue         *tensor.Dense
	HintProjection *G.Node
	ce             *softmaxCEOp
}

// Correct is the number of correct top-1 predictions in the last training
// batch run through the graph.
func (n *Net) Correct() int {
	if n.ce != nil {
		return n.ce.Correct
	}
	logits, labels := data(n.Logits.Value()), n.YValue.Float32s()
	c := len(logits) / len(labels)
	correct := 0
	for i, y := range labels {
		row := logits[i*c : (i+1)*c]
		arg := 0
		for j, v := range row {
			if v > row[arg] {
				arg = j
			}
		}
		if arg == int(y) {
			correct++
		}
	}
	return correct
}

// Hooks are where other packages wrap what a graph computes, so that
// model imports none of them: compress/ fake-quantizes weights and
// activations (compress.Hooks), distill/ makes a distillation loss.
type Hooks struct {
	// Weight replaces a weight node by what the layer computes with (its
	// fake-quantized copy), given the weight's quantization control.
	Weight func(eng compute.Engine, w *G.Node, ctl *QuantControl) (*G.Node, error)
	// Output replaces a layer's output (activation quantization), given
	// the layer's observer; train says the graph trains.
	Output func(eng compute.Engine, layer string, h *G.Node, obs *Observer, train bool) (*G.Node, error)
	// Loss makes a training graph's loss from net (Logits, Y and the
	// graph to add inputs to); nil: softmax cross-entropy.
	Loss func(net *Net) (*G.Node, error)
}

// Build adds the model's forward pass to a new graph for batch samples. A
// training graph has dropout and a loss; an evaluation graph has neither.
// seed feeds dropout masks. A model with quantization controls or
// activation observers needs the hooks that compute them.
func (m *Model) Build(eng compute.Engine, batch int, train bool, seed uint64, hooks Hooks) (*Net, error) {
	if (len(m.Quant) > 0 && hooks.Weight == nil) || (len(m.ActQuant) > 0 && hooks.Output == nil) {
		return nil, errors.New("model: the model is quantized but the graph has no quantization hooks")
	}
	g := G.NewGraph()
	features := m.Input.Rows * m.Input.Cols * m.Input.Channels
	net := &Net{Graph: g, Batch: batch, Hidden: map[string]*G.Node{}}
	net.XValue = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(batch, features))
	net.X = G.NewMatrix(g, tensor.Float32, G.WithShape(batch, features), G.WithName("x"), G.WithValue(net.XValue))
	byName := map[string]*G.Node{}
	for _, p := range m.Params {
		n := G.NewTensor(g, tensor.Float32, len(p.Shape), G.WithShape(p.Shape...), G.WithName(p.Name), G.WithValue(p.Value))
		net.Params = append(net.Params, n)
		byName[p.Name] = n
	}
	h := net.X
	var err error
	if z := m.Net.Normalize; z != nil {
		if h, err = G.ApplyOp(&normalizeOp{opBase: newBase("input.normalize", eng), z: z}, h); err != nil {
			return nil, err
		}
	}
	dropout := func(x *G.Node, p float64, name string) (*G.Node, error) {
		if !train || p == 0 {
			return x, nil
		}
		op := &DropoutOp{opBase: newBase(name, eng), P: float32(p), Seed: seed ^ hashName(name)}
		net.Dropouts = append(net.Dropouts, op)
		return G.ApplyOp(op, x)
	}
	if h, err = dropout(h, m.Spec.InputDropout, "input.dropout"); err != nil {
		return nil, err
	}
	// The outputs by layer name; a layer without Inputs takes the one
	// before it. Layers on the images themselves need no input gradient.
	outs := map[string]*G.Node{graph.Input: h}
	prev := graph.Input
	hidden := map[string]bool{}
	for _, hl := range m.HiddenLayers() {
		hidden[hl.Name] = true
	}
	for _, l := range m.Net.Layers {
		var ins []*G.Node
		for _, name := range l.InputsOf(prev) {
			ins = append(ins, outs[name])
		}
		h = ins[0]
		needDX := h != outs[graph.Input]
		act := l.Act
		if act.Separate() { // applied after the layer, keeping its input
			l.Act = graph.Identity
		}
		switch l.Kind {
		case graph.Linear:
			op := &linearOp{opBase: newBase(l.Name, eng), act: activation(l.Act), needDX: needDX}
			var w *G.Node
			if w, err = m.weight(eng, byName[l.Name], hooks); err == nil {
				h, err = G.ApplyOp(op, h, w, byName[l.Name+".bias"])
			}
		case graph.Conv:
			h, err = m.conv(eng, l, h, needDX, train, byName, hooks)
		case graph.MaxPool:
			h, err = G.ApplyOp(&maxPoolOp{opBase: newBase(l.Name, eng), l: l}, h)
		case graph.AvgPool, graph.GlobalAvgPool:
			args := []*G.Node{h}
			if l.SkipPadding {
				args = append(args, net.X) // the token ids: each sample's length
			}
			h, err = G.ApplyOp(&avgPoolOp{opBase: newBase(l.Name, eng), l: l}, args...)
		case graph.Add:
			h, err = G.ApplyOp(&addOp{opBase: newBase(l.Name, eng), arity: len(ins), act: activation(l.Act)}, ins...)
		case graph.BatchNorm:
			mean, vr := m.Buffer(l.Name+".running_mean"), m.Buffer(l.Name+".running_var")
			h, err = G.ApplyOp(newBN(eng, l, train, m.BN, mean.Data(), vr.Data()), h, byName[l.Name], byName[l.Name+".bias"])
		case graph.Flatten:
			// NHWC samples are already rows of H·W·C values.
		case graph.Embedding:
			h, err = G.ApplyOp(&embedOp{opBase: newBase(l.Name, eng)}, h, byName[l.Name], byName[l.Name+".pos"])
		case graph.LayerNorm:
			h, err = G.ApplyOp(&layerNormOp{opBase: newBase(l.Name, eng), c: l.In.C}, h, byName[l.Name], byName[l.Name+".bias"])
		case graph.Attention:
			h, err = m.attention(eng, l, h, net.X, needDX, byName, hooks)
		default:
			err = fmt.Errorf("layer kind %q has no training op", l.Kind)
		}
		if err == nil && act.Separate() {
			h, err = G.ApplyOp(&geluOp{opBase: newBase(l.Name+"."+string(act), eng), act: act}, h)
		}
		if err != nil {
			return nil, fmt.Errorf("model: layer %s: %w", l.Name, err)
		}
		if obs := m.ActQuant[l.Name]; obs != nil && l.Kind != graph.MaxPool {
			if h, err = hooks.Output(eng, l.Name, h, obs, train); err != nil {
				return nil, fmt.Errorf("model: layer %s: %w", l.Name, err)
			}
		}
		if _, ok := hidden[l.Name]; ok {
			net.Hidden[l.Name] = h
		}
		if h, err = dropout(h, l.Dropout, l.Name+".dropout"); err != nil {
			return nil, err
		}
		outs[l.Name], prev = h, l.Name
	}
	net.Logits = h
	if train {
		labels := batch * m.Input.LabelsPer()
		net.YValue = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(labels))
		net.Y = G.NewVector(g, tensor.Float32, G.WithShape(labels), G.WithName("y"), G.WithValue(net.YValue))
		if hooks.Loss != nil {
			if net.Loss, err = hooks.Loss(net); err != nil {
				return nil, fmt.Errorf("model: loss: %w", err)
			}
			return net, nil
		}
		net.ce = &softmaxCEOp{opBase: newBase("softmax_ce", eng), weights: m.ClassWeights, smooth: m.LabelSmoothing}
		if net.Loss, err = G.ApplyOp(net.ce, net.Logits, net.Y); err != nil {
			return nil, fmt.Errorf("model: loss: %w", err)
		}
	}
	return net, nil
}

// conv applies convolution l to h: with its batch norm folded into its
// weight when m.Fold says so.
func (m *Model) conv(eng compute.Engine, l graph.Layer, h *G.Node, needDX, train bool, byName map[string]*G.Node, hooks Hooks) (*G.Node, error) {
	if bn, ok := m.Fold[l.Name]; ok {
		w, fold, err := m.foldedWeight(eng, l, bn, byName, hooks)
		if err != nil {
			return nil, err
		}
		bare := l
		bare.NoBias = true
		if h, err = G.ApplyOp(newConv(eng, bare, needDX, train), h, w); err != nil {
			return nil, err
		}
		return unfold(eng, l, fold, h, byName)
	}
	w, err := m.weight(eng, byName[l.Name], hooks)
	if err != nil {
		return nil, err
	}
	args := []*G.Node{h, w}
	if !l.NoBias {
		args = append(args, byName[l.Name+".bias"])
	}
	return G.ApplyOp(newConv(eng, l, needDX, train), args...)
}

// attention applies attention layer l to h (ids: the token ids, for a
// layer that skips padding), its four projections' weights
// as the hooks make them (fake-quantized under QAT).
func (m *Model) attention(eng compute.Engine, l graph.Layer, h, ids *G.Node, needDX bool, byName map[string]*G.Node, hooks Hooks) (*G.Node, error) {
	args := []*G.Node{h}
	for _, part := range graph.AttentionParts {
		w, err := m.weight(eng, byName[l.Name+part], hooks)
		if err != nil {
			return nil, err
		}
		args = append(args, w, byName[l.Name+part+".bias"])
	}
	op := newAttention(l.Name, eng, l.In.W, l.Heads, l.Causal, needDX)
	if l.SkipPadding {
		op.skipPadding, args = true, append(args, ids)
	}
	return G.ApplyOp(op, args...)
}

// weight returns what a layer computes with: the weight node, or its
// fake-quantized copy when the model trains that weight with quantization.
func (m *Model) weight(eng compute.Engine, w *G.Node, hooks Hooks) (*G.Node, error) {
	ctl := m.Quant[w.Name()]
	if ctl == nil {
		return w, nil
	}
	return hooks.Weight(eng, w, ctl)
}

func hashName(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// HiddenLayer is a layer whose output a hint (feature distillation) can
// use: per sample, Positions vectors of Width (one for a fully connected
// layer; a sequence's positions for a transformer's).
type HiddenLayer struct {
	Name             string
	Positions, Width int
}

// HiddenLayers are the layers a hint can use, in network order: every
// linear layer with an activation, and in a model over token ids (its
// first layer an embedding) every layer but the last whose output is a vector per
// position — a transformer's hidden states: attention, layer norms,
// residual sums, the position-wise feed-forward layers.
func (m *Model) HiddenLayers() []HiddenLayer {
	var out []HiddenLayer
	layers := m.Net.Layers
	tokens := len(layers) > 0 && layers[0].Kind == graph.Embedding
	for i, l := range layers {
		o := l.Output()
		switch {
		case l.Kind == graph.Linear && l.Act != graph.Identity:
		case tokens && i < len(layers)-1 && o.H == 1 && o.W > 1 &&
			(l.Kind == graph.Attention || l.Kind == graph.LayerNorm || l.Kind == graph.Add || l.Kind == graph.Conv):
		default:
			continue
		}
		out = append(out, HiddenLayer{Name: l.Name, Positions: o.H * o.W, Width: o.C})
	}
	return out
}

// Hidden is the hidden layer of that name (HiddenLayers), if there is one.
func (m *Model) Hidden(name string) (HiddenLayer, bool) {
	for _, hl := range m.HiddenLayers() {
		if hl.Name == name {
			return hl, true
		}
	}
	return HiddenLayer{}, false
}

// LayerInfo describes one parameterised layer for summaries.
type LayerInfo struct {
	Name    string `json:"name"`
	Shape   []int  `json:"shape"`
	Params  int    `json:"params"`  // weight and bias
	Nonzero int    `json:"nonzero"` // weight and bias
	// Sparsity is the fraction of the weight's elements that are zero;
	// StructuredSparsity the fraction of its rows (neurons) or filters that
	// are entirely zero.
	Sparsity           float64 `json:"sparsity"`
	StructuredSparsity float64 `json:"structured_sparsity"`
	// Bits is the weight's quantization width (0: float32).
	Bits int `json:"bits,omitempty"`
	// ThinnedShape is the weight's shape once dead neurons and filters are
	// removed (set when the run thins the model).
	ThinnedShape []int `json:"thinned_shape,omitempty"`
}

// Layers summarises each weight with its bias: name (the weight's: a
// layer's, or an attention projection's or positional table's), shape,
// total parameters and non-zero parameters.
func (m *Model) Layers() []LayerInfo {
	var out []LayerInfo
	for _, p := range m.Params {
		if p.Bias {
			continue
		}
		li := LayerInfo{Name: p.Name, Shape: slices.Clone(p.Shape)}
		if ctl := m.Quant[p.Name]; ctl != nil && ctl.Enabled {
			li.Bits = ctl.Spec.Bits
		}
		d := p.Data()
		zeros, emptyRows, cols := 0, 0, len(d)/p.Shape[0]
		for r := 0; r < p.Shape[0]; r++ {
			rowZeros := 0
			for _, v := range d[r*cols : (r+1)*cols] {
				if v == 0 {
					rowZeros++
				}
			}
			zeros += rowZeros
			if rowZeros == cols {
				emptyRows++
			}
		}
		li.Sparsity = float64(zeros) / float64(len(d))
		li.StructuredSparsity = float64(emptyRows) / float64(p.Shape[0])
		for _, q := range m.Params {
			if q != p && q.Name != p.Name+".bias" {
				continue
			}
			li.Params += q.Size()
			for _, v := range q.Data() {
				if v != 0 {
					li.Nonzero++
				}
			}
		}
		out = append(out, li)
	}
	return out
}
