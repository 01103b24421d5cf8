package model

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/distill"
)

// Group names a kind of prunable structure of a weight.
type Group string

const (
	Rows     Group = "rows"     // output neurons of a linear layer
	Columns  Group = "columns"  // inputs of a linear layer
	Filters  Group = "filters"  // output channels of a convolution
	Channels Group = "channels" // input channels of a convolution
)

// Param is one named parameter tensor. Its Value is shared by every graph
// built from the model.
type Param struct {
	Name   string  // "fc1", "fc1.bias", "conv2", …
	Layer  string  // the layer it belongs to
	Shape  []int   // e.g. [300 784] for fc1 of LeNet-300-100
	Bias   bool    // a bias vector rather than a weight
	Groups []Group // prunable structures (none for biases)
	Value  *tensor.Dense

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
}

// Factor is one factorized linear layer.
type Factor struct {
	Layer string `json:"layer"`
	Rank  int    `json:"rank"`
}

// Archs lists the known architectures.
var Archs = []string{"mlp", "lenet300", "lenet5", "teacher"}

// Input describes the images a model takes.
type Input struct {
	Rows     int `json:"rows"`
	Cols     int `json:"cols"`
	Channels int `json:"channels"`
	Classes  int `json:"classes"`
}

// MNISTInput is 28×28 grey-scale with 10 classes (MNIST and Fashion-MNIST).
var MNISTInput = Input{Rows: 28, Cols: 28, Channels: 1, Classes: 10}

// layerKind is how a layer computes.
type layerKind int

const (
	kindLinear layerKind = iota
	kindConv
	kindPool
)

type layerDef struct {
	name    string
	kind    layerKind
	in      Geometry // conv/pool input geometry
	out     int      // linear outputs or conv filters
	k       int      // conv kernel
	act     Activation
	dropout float64 // after this layer, in training
}

// Model is an architecture with its parameters.
type Model struct {
	Spec   Spec
	Input  Input
	Params []*Param
	// Quant holds, per weight name, the fake-quantization control of a
	// weight trained with quantization (QAT); graphs built from the model
	// fake-quantize those weights. Rebuilt models share the controls.
	Quant map[string]*compress.QuantControl
	// ActQuant holds, per layer name, the observer of a hidden layer's
	// activation (after its ReLU) when activations are quantized.
	ActQuant map[string]*compress.Observer
	layers   []layerDef
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
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	m := &Model{Spec: spec, Input: in}
	switch spec.Arch {
	case "mlp", "lenet300", "teacher":
		prev := in.Rows * in.Cols * in.Channels
		sizes := append(slices.Clone(spec.Hidden), in.Classes)
		for i, h := range sizes {
			d := layerDef{name: fmt.Sprintf("fc%d", i+1), kind: kindLinear, out: h, act: ReLU, dropout: spec.Dropout}
			if i == len(sizes)-1 {
				d.act, d.dropout = Identity, 0
			}
			m.linear(d, prev)
			prev = h
		}
	case "lenet5":
		g := Geometry{H: in.Rows, W: in.Cols, C: in.Channels}
		add := func(name string, f int) {
			m.layers = append(m.layers, layerDef{name: name, kind: kindConv, in: g, out: f, k: 5, act: ReLU})
			m.addConv(name, f, 5, g.C)
			g = Geometry{H: g.H - 4, W: g.W - 4, C: f}
			m.layers = append(m.layers, layerDef{name: name + ".pool", kind: kindPool, in: g})
			g = Geometry{H: g.H / 2, W: g.W / 2, C: f}
		}
		add("conv1", spec.Conv[0])
		add("conv2", spec.Conv[1])
		h := spec.Hidden[0]
		m.linear(layerDef{name: "fc1", kind: kindLinear, out: h, act: ReLU, dropout: spec.Dropout}, g.Size())
		m.linear(layerDef{name: "fc2", kind: kindLinear, out: in.Classes}, h)
	}
	// The shapes are laid out before any memory is taken for them.
	var n int64
	for _, p := range m.Params {
		size := int64(1)
		for _, d := range p.Shape {
			size *= int64(d)
		}
		if n += size; n > MaxParams || size > MaxParams {
			return nil, fmt.Errorf("model: the %s network has more than %d parameters (MaxParams; %s alone has %d): not a model this machine trains", spec.Arch, int64(MaxParams), p.Name, size)
		}
	}
	for _, p := range m.Params {
		p.Value = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(p.Shape...))
		initParam(p, spec.Init, seed)
	}
	return m, nil
}

// MaxParams bounds a model's parameters (1 GiB of float32 weights; a run
// holds several times that in gradients, optimizer state and masks).
var MaxParams int64 = 1 << 28

// newParam describes a parameter; New allocates its value.
func newParam(name, layer string, bias bool, groups []Group, shape ...int) *Param {
	return &Param{Name: name, Layer: layer, Shape: shape, Bias: bias, Groups: groups}
}

// linear adds a linear layer with in inputs, or its two factors when the
// spec factorizes it.
func (m *Model) linear(d layerDef, in int) {
	for _, f := range m.Spec.Factors {
		if f.Layer == d.name {
			v := layerDef{name: d.name + ".v", kind: kindLinear, out: f.Rank, act: Identity}
			m.layers = append(m.layers, v)
			m.addLinear(v.name, in, f.Rank)
			d.name += ".u"
			in = f.Rank
			break
		}
	}
	m.layers = append(m.layers, d)
	m.addLinear(d.name, in, d.out)
}

func (m *Model) addLinear(name string, in, out int) {
	b := newParam(name+".bias", name, true, nil, out)
	b.biasFan = in
	m.Params = append(m.Params, newParam(name, name, false, []Group{Rows, Columns}, out, in), b)
}

func (m *Model) addConv(name string, f, k, c int) {
	b := newParam(name+".bias", name, true, nil, f)
	b.biasFan = k * k * c
	m.Params = append(m.Params, newParam(name, name, false, []Group{Filters, Channels}, f, k, k, c), b)
}

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

// Weights returns the weight (non-bias) parameters: what compression acts on.
func (m *Model) Weights() []*Param {
	var w []*Param
	for _, p := range m.Params {
		if !p.Bias {
			w = append(w, p)
		}
	}
	return w
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
	Y      *G.Node   // labels [batch] (training graphs only)
	Logits *G.Node   // [batch, classes]
	Loss   *G.Node   // scalar mean cross-entropy (training graphs only)
	Params []*G.Node // in the order of Model.Params
	Batch  int

	XValue, YValue *tensor.Dense // bound to X and Y; overwrite their data to feed a batch
	TValue         *tensor.Dense // distillation graphs: the teacher's logits for the batch
	Dropouts       []*DropoutOp
	// Hidden holds each hidden linear layer's output (after its activation
	// and any activation quantization, before dropout), by layer name.
	Hidden map[string]*G.Node
	// HValue and HintProjection: distillation graphs with a hint, the
	// teacher layer's activations for the batch and the projection node.
	HValue         *tensor.Dense
	HintProjection *G.Node
	ce             *softmaxCEOp
	kd             *distill.LossOp
	hint           *distill.HintOp
}

// Hint asks a distillation graph for a hint (feature) term: the student's
// hidden layer Layer, projected by Projection [its width, TeacherDim], is
// pulled towards the teacher layer's activations with the given weight.
type Hint struct {
	Layer      string
	TeacherDim int
	Weight     float64
	Projection *tensor.Dense
}

// DistillLoss is the distillation term of the last training batch's loss
// (0 for graphs trained without distillation).
func (n *Net) DistillLoss() float64 {
	if n.kd == nil {
		return 0
	}
	if n.hint != nil {
		return n.kd.KD + n.hint.Loss
	}
	return n.kd.KD
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

// Build adds the model's forward pass to a new graph for batch samples. A
// training graph has dropout and a loss; an evaluation graph has neither.
// seed feeds dropout masks.
func (m *Model) Build(eng compute.Engine, batch int, train bool, seed uint64) (*Net, error) {
	return m.build(eng, batch, train, seed, nil, nil)
}

// BuildKD is Build for a training graph whose loss is knowledge
// distillation: the teacher's logits for the batch are fed through
// Net.TValue each step.
func (m *Model) BuildKD(eng compute.Engine, batch int, seed uint64, kd distill.Config, hint *Hint) (*Net, error) {
	return m.build(eng, batch, true, seed, &kd, hint)
}

func (m *Model) build(eng compute.Engine, batch int, train bool, seed uint64, kd *distill.Config, hint *Hint) (*Net, error) {
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
	first := true // no gradient for the input images
	for _, l := range m.layers {
		switch l.kind {
		case kindLinear:
			op := &linearOp{opBase: newBase(l.name, eng), act: l.act, needDX: !first}
			var w *G.Node
			if w, err = m.quantized(eng, byName[l.name]); err == nil {
				h, err = G.ApplyOp(op, h, w, byName[l.name+".bias"])
			}
		case kindConv:
			op := &conv2dOp{opBase: newBase(l.name, eng), in: l.in, f: l.out, k: l.k, act: l.act, needDX: !first}
			var w *G.Node
			if w, err = m.quantized(eng, byName[l.name]); err == nil {
				h, err = G.ApplyOp(op, h, w, byName[l.name+".bias"])
			}
		case kindPool:
			h, err = G.ApplyOp(&maxPoolOp{opBase: newBase(l.name, eng), in: l.in}, h)
		}
		if err != nil {
			return nil, fmt.Errorf("model: layer %s: %w", l.name, err)
		}
		if obs := m.ActQuant[l.name]; obs != nil && l.kind != kindPool {
			op := compress.NewFakeQuant(l.name+".act.fq", eng, obs.Spec, 1)
			op.Obs, op.Train = obs, train
			if h, err = G.ApplyOp(op, h); err != nil {
				return nil, fmt.Errorf("model: layer %s: %w", l.name, err)
			}
		}
		first = false
		if l.kind == kindLinear && l.act != Identity {
			net.Hidden[l.name] = h
		}
		if h, err = dropout(h, l.dropout, l.name+".dropout"); err != nil {
			return nil, err
		}
	}
	net.Logits = h
	if train {
		net.YValue = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(batch))
		net.Y = G.NewVector(g, tensor.Float32, G.WithShape(batch), G.WithName("y"), G.WithValue(net.YValue))
		if kd != nil {
			net.TValue = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(batch, m.Input.Classes))
			t := G.NewMatrix(g, tensor.Float32, G.WithShape(batch, m.Input.Classes), G.WithName("teacher_logits"), G.WithValue(net.TValue))
			net.kd = distill.NewLossOp(eng, *kd)
			if net.Loss, err = G.ApplyOp(net.kd, net.Logits, t, net.Y); err != nil {
				return nil, fmt.Errorf("model: distillation loss: %w", err)
			}
			if hint != nil {
				if err := net.addHint(eng, hint); err != nil {
					return nil, err
				}
			}
			return net, nil
		}
		net.ce = &softmaxCEOp{opBase: newBase("softmax_ce", eng)}
		if net.Loss, err = G.ApplyOp(net.ce, net.Logits, net.Y); err != nil {
			return nil, fmt.Errorf("model: loss: %w", err)
		}
	}
	return net, nil
}

// addHint adds the hint term to a distillation graph's loss.
func (n *Net) addHint(eng compute.Engine, hint *Hint) error {
	hs := n.Hidden[hint.Layer]
	if hs == nil {
		return fmt.Errorf("model: hint: no hidden linear layer %q", hint.Layer)
	}
	ds := hs.Shape()[1]
	if !hint.Projection.Shape().Eq(tensor.Shape{ds, hint.TeacherDim}) {
		return fmt.Errorf("model: hint: projection %v for a layer of width %d and a teacher layer of width %d", hint.Projection.Shape(), ds, hint.TeacherDim)
	}
	g := n.Graph
	n.HValue = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(n.Batch, hint.TeacherDim))
	ht := G.NewMatrix(g, tensor.Float32, G.WithShape(n.Batch, hint.TeacherDim), G.WithName("teacher_hint"), G.WithValue(n.HValue))
	n.HintProjection = G.NewMatrix(g, tensor.Float32, G.WithShape(ds, hint.TeacherDim), G.WithName("hint.projection"), G.WithValue(hint.Projection))
	n.hint = distill.NewHintOp(eng, hint.Weight, n.Batch, ds, hint.TeacherDim)
	loss, err := G.ApplyOp(n.hint, n.Loss, hs, n.HintProjection, ht)
	if err != nil {
		return fmt.Errorf("model: hint: %w", err)
	}
	n.Loss = loss
	return nil
}

// quantized returns the weight node, fake-quantized when the model trains
// that weight with quantization.
func (m *Model) quantized(eng compute.Engine, w *G.Node) (*G.Node, error) {
	ctl := m.Quant[w.Name()]
	if ctl == nil {
		return w, nil
	}
	op := compress.NewFakeQuant(w.Name()+".fq", eng, ctl.Spec, w.Shape()[0])
	op.Ctl = ctl
	return G.ApplyOp(op, w)
}

func hashName(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
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

// Layers summarises each weight with its bias: shape (the weight's), total
// parameters and non-zero parameters.
func (m *Model) Layers() []LayerInfo {
	var out []LayerInfo
	for _, p := range m.Params {
		if p.Bias {
			continue
		}
		li := LayerInfo{Name: p.Layer, Shape: slices.Clone(p.Shape)}
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
			if q.Layer != p.Layer {
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

// LayerSpec describes one layer of the forward pass for runtimes outside
// gorgonia (model files carry the list).
type LayerSpec struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`               // "linear", "conv", "maxpool"
	Act     string `json:"act"`                // "relu" or "identity"
	In      int    `json:"in"`                 // input features (linear)
	Out     int    `json:"out"`                // outputs (linear) or filters (conv)
	K       int    `json:"k,omitempty"`        // conv kernel
	InShape []int  `json:"in_shape,omitempty"` // conv, maxpool: [H, W, C] (NHWC)
}

// Forward lists the layers in the order the forward pass runs them; a
// layer's weight is the parameter Name and its bias Name+".bias".
func (m *Model) Forward() []LayerSpec {
	var out []LayerSpec
	for _, l := range m.layers {
		act := "identity"
		if l.act == ReLU {
			act = "relu"
		}
		s := LayerSpec{Name: l.name, Act: act, Out: l.out, K: l.k}
		switch l.kind {
		case kindLinear:
			s.Kind = "linear"
			for _, p := range m.Params {
				if p.Name == l.name {
					s.In = p.Shape[1]
				}
			}
		case kindConv:
			s.Kind, s.InShape = "conv", []int{l.in.H, l.in.W, l.in.C}
		case kindPool:
			s.Kind, s.InShape, s.Act = "maxpool", []int{l.in.H, l.in.W, l.in.C}, "identity"
		}
		out = append(out, s)
	}
	return out
}
