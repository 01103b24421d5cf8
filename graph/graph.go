package graph

import (
	"errors"
	"fmt"
	"slices"
)

// Kind is how a layer computes.
type Kind string

// The layer kinds.
const (
	// Linear is y = act(x·Wᵀ + b), W [Out, in].
	Linear Kind = "linear"
	// Conv is a convolution of In with Out filters of Kernel×Kernel, with
	// Stride (0: 1), zero padding Pad on each side and Groups (0: 1; In.C
	// and Out both divisible by it; Groups = In.C = Out is depthwise), W
	// [Out, Kernel, Kernel, In.C/Groups] (NHWC), a bias unless NoBias,
	// then act.
	Conv Kind = "conv"
	// MaxPool and AvgPool pool Kernel×Kernel windows (0: 2) with Stride
	// (0: Kernel) and zero padding Pad (an average counts the padding, as
	// PyTorch's default does; a maximum ignores it).
	MaxPool Kind = "maxpool"
	AvgPool Kind = "avgpool"
	// GlobalAvgPool averages each channel over H×W: {1, 1, C}.
	GlobalAvgPool Kind = "global_avgpool"
	// BatchNorm normalizes each channel by its batch statistics in
	// training and its running statistics in evaluation (momentum 0.1,
	// epsilon 1e-5, as PyTorch's defaults), then scales (W [C]) and
	// shifts (bias [C]), then act.
	BatchNorm Kind = "batchnorm"
	// Add sums its inputs, all of one shape (a residual connection), then
	// act.
	Add Kind = "add"
	// Flatten makes {H, W, C} a vector {1, 1, H·W·C} (NHWC order).
	Flatten Kind = "flatten"

	// The sequence kinds work on {1, T, D}: T positions of D values (a
	// position-wise linear layer is a 1×1 convolution over them; mean
	// pooling over time is GlobalAvgPool).

	// Embedding maps In {1, T, 1} token ids (a byte's value v arrives as
	// v/255, as every input byte does) to {1, T, Out}: row id of its table
	// W [Vocab, Out] (Vocab 0: 256) plus row t of the learned positional
	// table W.pos [T, Out].
	Embedding Kind = "embedding"
	// LayerNorm normalizes each position's C values by their own mean and
	// variance (epsilon 1e-5), then scales (W [C]) and shifts (bias [C]),
	// then act.
	LayerNorm Kind = "layernorm"
	// Attention is multi-head self-attention over In {1, T, D}: the
	// projections q, k, v (named Name+".q", ".k", ".v", each W [E, D] and a
	// bias, as linear layers applied at every position; E is Out, D when
	// 0), Heads heads of E/Heads values each, softmax(q·kᵀ/√(E/Heads)) —
	// with Causal, position t attends to positions ≤ t only — times v, and
	// the output projection Name+".o" [D, E] with its bias. Pruning heads
	// removes their rows of q, k, v and columns of o: E shrinks, the head
	// width stays.
	Attention Kind = "attention"
)

// LNEpsilon is LayerNorm's epsilon, PyTorch's default.
const LNEpsilon = 1e-5

// AttentionParts are the suffixes of an attention layer's projections, in
// parameter order.
var AttentionParts = []string{".q", ".k", ".v", ".o"}

// BatchNorm's constants, PyTorch's defaults.
const (
	BNMomentum = 0.1
	BNEpsilon  = 1e-5
)

// Activation follows a layer.
type Activation string

// The activations.
const (
	Identity Activation = "identity"
	ReLU     Activation = "relu"
	ReLU6    Activation = "relu6" // min(max(x, 0), 6)
	// GELU is x·Φ(x), Φ the standard normal's distribution function (the
	// exact form, PyTorch's default).
	GELU Activation = "gelu"
	// Sigmoid is 1/(1 + e^−x); SiLU (swish) is x·sigmoid(x).
	Sigmoid Activation = "sigmoid"
	SiLU    Activation = "silu"
)

// Activations lists the activations a layer may have.
var Activations = []Activation{Identity, ReLU, ReLU6, GELU, Sigmoid, SiLU}

// Separate says whether an activation runs as a pass of its own after the
// layer (GELU, sigmoid, SiLU) rather than inside the layer's kernels (ReLU,
// ReLU6).
func (a Activation) Separate() bool { return a == GELU || a == Sigmoid || a == SiLU }

// Group is a structure of a weight that structured pruning removes whole.
type Group string

// The groups.
const (
	Rows     Group = "rows"     // a linear layer's neurons (output rows)
	Columns  Group = "columns"  // a linear layer's inputs
	Filters  Group = "filters"  // a convolution's output filters
	Channels Group = "channels" // a convolution's input channels
	Heads    Group = "heads"    // an attention layer's heads (their rows of q, k, v and columns of o)
)

// Shape is an activation's shape per sample, NHWC: a flat vector is
// {1, 1, n}.
type Shape struct {
	H int `json:"h"`
	W int `json:"w"`
	C int `json:"c"`
}

// Size is the number of values.
func (s Shape) Size() int { return s.H * s.W * s.C }

// Layer is one node of a network.
type Layer struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`
	// Inputs name the layers whose outputs this one takes (Input for the
	// network's input); none: the layer listed before it (the network's
	// input for the first). Only Add takes more than one.
	Inputs []string `json:"inputs,omitempty"`
	// In is the shape the layer receives (a linear layer's is {1, 1,
	// features}; each of an addition's inputs has it).
	In Shape `json:"in"`
	// Out is a linear layer's outputs or a convolution's filters.
	Out int `json:"out,omitempty"`
	// Kernel is a convolution's or a pooling's window size; Stride, Pad
	// and Groups as Conv and the pools say (0: the default).
	Kernel int  `json:"kernel,omitempty"`
	Stride int  `json:"stride,omitempty"`
	Pad    int  `json:"pad,omitempty"`
	Groups int  `json:"groups,omitempty"`
	NoBias bool `json:"no_bias,omitempty"`
	// Heads and Causal are an attention layer's; Vocab an embedding's
	// table rows (0: 256, one per byte value).
	Heads  int  `json:"heads,omitempty"`
	Causal bool `json:"causal,omitempty"`
	Vocab  int  `json:"vocab,omitempty"`
	// SkipPadding: an attention layer attends to no padding position,
	// a global average pooling averages over a sample's positions
	// without them. Padding is what follows a sample's last non-zero token
	// id (windows shorter than the context are filled with byte 0); the
	// network's first layer must be an embedding.
	SkipPadding bool `json:"skip_padding,omitempty"`
	// Act follows the layer's operation.
	Act Activation `json:"act"`
	// Dropout applies to the layer's output in training.
	Dropout float64 `json:"dropout,omitempty"`
}

// Input is the name by which a layer takes the network's input.
const Input = "input"

// Window is a convolution's or pooling's kernel, stride and padding with
// the defaults filled.
func (l Layer) Window() (kernel, stride, pad int) {
	kernel, stride = l.Kernel, l.Stride
	if kernel == 0 && (l.Kind == MaxPool || l.Kind == AvgPool) {
		kernel = 2
	}
	if stride == 0 {
		stride = 1
		if l.Kind == MaxPool || l.Kind == AvgPool {
			stride = kernel
		}
	}
	return kernel, stride, l.Pad
}

// Inner is an attention layer's projection width E (Out, or the input's
// width D when 0).
func (l Layer) Inner() int {
	if l.Out == 0 {
		return l.In.C
	}
	return l.Out
}

// VocabSize is an embedding's table rows (256 unless set).
func (l Layer) VocabSize() int {
	if l.Vocab == 0 {
		return 256
	}
	return l.Vocab
}

// GroupCount is a convolution's groups (1 unless set).
func (l Layer) GroupCount() int { return max(l.Groups, 1) }

// Output is the shape the layer produces.
func (l Layer) Output() Shape {
	switch l.Kind {
	case Conv, MaxPool, AvgPool:
		k, s, p := l.Window()
		c := l.In.C
		if l.Kind == Conv {
			c = l.Out
		}
		if s < 1 {
			return Shape{C: c}
		}
		return Shape{H: (l.In.H+2*p-k)/s + 1, W: (l.In.W+2*p-k)/s + 1, C: c}
	case GlobalAvgPool:
		return Shape{H: 1, W: 1, C: l.In.C}
	case Flatten:
		return Shape{H: 1, W: 1, C: l.In.Size()}
	case BatchNorm, Add, LayerNorm, Attention:
		return l.In
	case Embedding:
		return Shape{H: l.In.H, W: l.In.W, C: l.Out}
	}
	return Shape{H: 1, W: 1, C: l.Out}
}

// MACs is the multiply-accumulates per sample of the layer's weights (a
// batch norm counts none: it folds into the convolution before it; an
// attention layer counts its scores and weighted sums besides its
// projections).
func (l Layer) MACs() int64 {
	switch l.Kind {
	case Attention:
		t, d, e := int64(l.In.H*l.In.W), int64(l.In.C), int64(l.Inner())
		return 4*t*d*e + 2*t*t*e
	case Linear:
		return int64(l.In.Size()) * int64(l.Out)
	case Conv:
		o := l.Output()
		k, _, _ := l.Window()
		return int64(o.H) * int64(o.W) * int64(l.Out) * int64(k*k) * int64(l.In.C/l.GroupCount())
	}
	return 0
}

// Param is one parameter a layer owns.
type Param struct {
	Name  string // the weight is its layer's name, the bias Name+".bias"
	Layer string
	Shape []int
	Bias  bool
	// Groups are the structures pruning may remove (a weight's).
	Groups []Group
	// Fan is the number of inputs each output sees (initialisation).
	Fan int
	// Norm marks a normalization's scale, shift or statistics (weight
	// decay and pruning leave them alone by default).
	Norm bool
	// Embed marks an embedding table (token or positional; a recipe's
	// no_decay may name them); Zero one that starts at zero (positional,
	// as the others start from their initialisation).
	Embed, Zero bool
}

// Size is the parameter's number of elements (int64: a description may be
// far larger than anything that could be allocated).
func (p Param) Size() int64 {
	n := int64(1)
	for _, d := range p.Shape {
		n *= int64(d)
	}
	return n
}

// Params lists the parameters of layer l: its weight then its bias (none
// for a pooling layer).
func (l Layer) Params() []Param {
	switch l.Kind {
	case Linear:
		in := l.In.Size()
		return []Param{
			{Name: l.Name, Layer: l.Name, Shape: []int{l.Out, in}, Groups: []Group{Rows, Columns}, Fan: in},
			{Name: l.Name + ".bias", Layer: l.Name, Shape: []int{l.Out}, Bias: true, Fan: in},
		}
	case Conv:
		cin := l.In.C / l.GroupCount()
		fan := l.Kernel * l.Kernel * cin
		ps := []Param{{Name: l.Name, Layer: l.Name, Shape: []int{l.Out, l.Kernel, l.Kernel, cin}, Groups: []Group{Filters, Channels}, Fan: fan}}
		if l.GroupCount() > 1 {
			ps[0].Groups = []Group{Filters} // a filter sees its group's channels only
		}
		if !l.NoBias {
			ps = append(ps, Param{Name: l.Name + ".bias", Layer: l.Name, Shape: []int{l.Out}, Bias: true, Fan: fan})
		}
		return ps
	case BatchNorm, LayerNorm:
		return []Param{
			{Name: l.Name, Layer: l.Name, Shape: []int{l.In.C}, Norm: true},
			{Name: l.Name + ".bias", Layer: l.Name, Shape: []int{l.In.C}, Bias: true, Norm: true},
		}
	case Embedding:
		return []Param{
			{Name: l.Name, Layer: l.Name, Shape: []int{l.VocabSize(), l.Out}, Fan: 1, Embed: true},
			{Name: l.Name + ".pos", Layer: l.Name, Shape: []int{l.In.H * l.In.W, l.Out}, Fan: 1, Embed: true, Zero: true},
		}
	case Attention:
		d, e := l.In.C, l.Inner()
		var ps []Param
		for _, part := range AttentionParts {
			w := Param{Name: l.Name + part, Layer: l.Name, Shape: []int{e, d}, Groups: []Group{Heads}, Fan: d}
			b := Param{Name: l.Name + part + ".bias", Layer: l.Name, Shape: []int{e}, Bias: true, Fan: d}
			if part == ".o" {
				w.Shape, w.Fan, b.Shape, b.Fan = []int{d, e}, e, []int{d}, e
			}
			ps = append(ps, w, b)
		}
		return ps
	}
	return nil
}

// Buffers lists the state a layer keeps besides its parameters, not
// trained by gradients: a batch norm's running mean and variance.
func (l Layer) Buffers() []Param {
	if l.Kind != BatchNorm {
		return nil
	}
	return []Param{
		{Name: l.Name + ".running_mean", Layer: l.Name, Shape: []int{l.In.C}, Norm: true},
		{Name: l.Name + ".running_var", Layer: l.Name, Shape: []int{l.In.C}, Norm: true},
	}
}

// Network is a network's description.
type Network struct {
	Input   Shape   `json:"input"`
	Classes int     `json:"classes"`
	Layers  []Layer `json:"layers"`
	// PerPosition: the last layer gives each position of a sequence its
	// Classes scores ({1, T, Classes}: a language model's next token),
	// not the sample one set.
	PerPosition bool `json:"per_position,omitempty"`
	// Normalize, when set, maps the input before the first layer.
	Normalize *Normalization `json:"normalize,omitempty"`
	// Softmax: the network's outputs are the softmax of its last layer's
	// scores over the classes (a model imported with a final Softmax).
	// Training and distillation use the scores; the runtime and the ONNX
	// export give the probabilities.
	Softmax bool `json:"softmax,omitempty"`
}

// Normalization maps each channel c of the network's input x — as lathe
// reads a sample: pixel/255 — to (x − Mean[c]) / Std[c], the input a
// model trained elsewhere on normalized images expects.
type Normalization struct {
	Mean []float32 `json:"mean"`
	Std  []float32 `json:"std"`
}

// Apply normalizes samples x [n, H·W·C] (channels last) into dst.
func (z *Normalization) Apply(dst, x []float32) {
	c := len(z.Mean)
	for i, v := range x {
		dst[i] = (v - z.Mean[i%c]) / z.Std[i%c]
	}
}

// Params lists every parameter, layer by layer.
func (n Network) Params() []Param {
	var out []Param
	for _, l := range n.Layers {
		out = append(out, l.Params()...)
	}
	return out
}

// NumParams counts the parameters' elements (int64: a description may be
// far larger than anything that could be allocated).
func (n Network) NumParams() int64 {
	var total int64
	for _, p := range n.Params() {
		total += p.Size()
	}
	return total
}

// Layer returns the layer named name, or nil.
func (n Network) Layer(name string) *Layer {
	for i := range n.Layers {
		if n.Layers[i].Name == name {
			return &n.Layers[i]
		}
	}
	return nil
}

// Clone returns a copy that shares nothing with n.
func (n Network) Clone() Network {
	n.Layers = slices.Clone(n.Layers)
	if z := n.Normalize; z != nil {
		n.Normalize = &Normalization{Mean: slices.Clone(z.Mean), Std: slices.Clone(z.Std)}
	}
	return n
}

// Validate checks the network: names unique, each layer's inputs
// produced before it, each layer receiving the shape it declares (an
// addition's inputs all of it), its attributes in range, and the last
// layer producing the classes. Errors name the layer.
func (n Network) Validate() error {
	if len(n.Layers) == 0 {
		return errors.New("graph: a network without layers")
	}
	if z := n.Normalize; z != nil {
		if len(z.Mean) != n.Input.C || len(z.Std) != n.Input.C || n.Layers[0].Kind == Embedding {
			return fmt.Errorf("graph: an input normalization of %d means and %d deviations for %d channels (of images, not token ids)", len(z.Mean), len(z.Std), n.Input.C)
		}
		for _, v := range z.Std {
			if !(v > 0) {
				return fmt.Errorf("graph: an input normalization's deviation %g (want > 0)", v)
			}
		}
	}
	shapes := map[string]Shape{Input: n.Input}
	prev := Input
	for _, l := range n.Layers {
		if err := n.validLayer(l, prev, shapes); err != nil {
			return &LayerError{Layer: l.Name, Err: err}
		}
		if l.SkipPadding && n.Layers[0].Kind != Embedding {
			return &LayerError{Layer: l.Name, Err: fmt.Errorf("graph: layer %s skips padding, which only a network over token ids (an embedding first) has", l.Name)}
		}
		shapes[l.Name], prev = l.Output(), l.Name
	}
	if out := shapes[prev]; n.PerPosition && (out.H != 1 || out.C != n.Classes) {
		return &LayerError{Layer: prev, Err: fmt.Errorf("graph: the last layer produces %v, not %d classes at each position", out, n.Classes)}
	} else if !n.PerPosition && out.Size() != n.Classes {
		return &LayerError{Layer: prev, Err: fmt.Errorf("graph: the last layer produces %d values for %d classes", out.Size(), n.Classes)}
	}
	return nil
}

// LayerError is a network's error at one of its layers (Validate's), so
// that a description with positions (a recipe) can point at the layer.
type LayerError struct {
	Layer string
	Err   error
}

func (e *LayerError) Error() string { return e.Err.Error() }
func (e *LayerError) Unwrap() error { return e.Err }

// validLayer checks one layer against the shapes before it.
func (n Network) validLayer(l Layer, prev string, shapes map[string]Shape) error {
	if _, dup := shapes[l.Name]; dup || l.Name == "" {
		return fmt.Errorf("graph: layer name %q is empty, taken twice or reserved", l.Name)
	}
	ins, err := n.inputShapes(l, prev, shapes)
	if err != nil {
		return err
	}
	if err := l.check(ins); err != nil {
		return err
	}
	if out := l.Output(); out.H <= 0 || out.W <= 0 || out.C <= 0 {
		return fmt.Errorf("graph: layer %s produces %v from %v", l.Name, out, l.In)
	}
	return nil
}

// InputsOf names the layers l takes (prev: the layer listed before it).
func (l Layer) InputsOf(prev string) []string {
	if len(l.Inputs) == 0 {
		return []string{prev}
	}
	return l.Inputs
}

// inputShapes are the shapes of l's inputs, each produced before it.
func (n Network) inputShapes(l Layer, prev string, shapes map[string]Shape) ([]Shape, error) {
	var out []Shape
	for _, name := range l.InputsOf(prev) {
		s, ok := shapes[name]
		if !ok {
			return nil, fmt.Errorf("graph: layer %s takes %q, which no layer before it produces", l.Name, name)
		}
		out = append(out, s)
	}
	return out, nil
}

// check checks a layer's kind, attributes and inputs.
func (l Layer) check(ins []Shape) error {
	known := []Kind{Linear, Conv, MaxPool, AvgPool, GlobalAvgPool, BatchNorm, Add, Flatten, Embedding, LayerNorm, Attention}
	if !slices.Contains(known, l.Kind) {
		return fmt.Errorf("graph: layer %s is a %q layer, which lathe does not know", l.Name, l.Kind)
	}
	if l.Act != "" && !slices.Contains(Activations, l.Act) {
		return fmt.Errorf("graph: layer %s: activation %q (allowed: identity, relu, relu6, gelu, sigmoid, silu)", l.Name, l.Act)
	}
	if (l.Kind == Add && len(ins) < 2) || (l.Kind != Add && len(ins) != 1) {
		return fmt.Errorf("graph: layer %s (%s) takes %d inputs", l.Name, l.Kind, len(ins))
	}
	for i, in := range ins {
		if in != l.In && !(l.Kind == Linear && l.In.Size() == in.Size()) {
			return fmt.Errorf("graph: layer %s receives %v, but %v comes in from %s", l.Name, l.In, in, l.InputsOf("the layer before")[i])
		}
	}
	k, s, p := l.Window()
	switch {
	case (l.Kind == Linear || l.Kind == Conv) && l.Out < 1:
		return fmt.Errorf("graph: layer %s has %d outputs", l.Name, l.Out)
	case (l.Kind == Conv || l.Kind == MaxPool || l.Kind == AvgPool) && (k < 1 || s < 1 || p < 0 || p >= k):
		return fmt.Errorf("graph: layer %s has kernel %d, stride %d, padding %d (want kernel, stride ≥ 1, 0 ≤ padding < kernel)", l.Name, k, s, p)
	case l.Kind == Conv && (l.Groups < 0 || l.In.C%l.GroupCount() != 0 || l.Out%l.GroupCount() != 0):
		return fmt.Errorf("graph: layer %s: %d groups do not divide its %d input channels and %d filters", l.Name, l.Groups, l.In.C, l.Out)
	case l.Kind != Conv && (l.Groups != 0 || l.NoBias):
		return fmt.Errorf("graph: layer %s: groups and no_bias belong to convolutions", l.Name)
	case slices.Contains([]Kind{MaxPool, AvgPool, GlobalAvgPool, Flatten, Embedding, LayerNorm, Attention}, l.Kind) && l.Act != Identity && l.Act != "":
		return fmt.Errorf("graph: layer %s: a %s layer takes no activation", l.Name, l.Kind)
	case l.Kind != Attention && (l.Heads != 0 || l.Causal):
		return fmt.Errorf("graph: layer %s: heads and causal belong to attention layers", l.Name)
	case l.Kind != Embedding && l.Vocab != 0:
		return fmt.Errorf("graph: layer %s: vocab belongs to embedding layers", l.Name)
	case l.SkipPadding && (l.Kind != Attention && l.Kind != GlobalAvgPool || l.In.H != 1):
		return fmt.Errorf("graph: layer %s: skip_padding belongs to attention layers and poolings over a sequence", l.Name)
	}
	return l.checkSequence()
}

// checkSequence checks the sequence kinds' attributes.
func (l Layer) checkSequence() error {
	switch l.Kind {
	case Embedding:
		if l.In.H != 1 || l.In.C != 1 {
			return fmt.Errorf("graph: layer %s embeds token ids {1, T, 1}, not %v", l.Name, l.In)
		}
		if l.Out < 1 || l.Vocab < 0 || l.VocabSize() > 256 {
			return fmt.Errorf("graph: layer %s: %d outputs, vocabulary %d (want outputs ≥ 1, a vocabulary of at most 256 byte values)", l.Name, l.Out, l.VocabSize())
		}
	case Attention:
		if l.In.H != 1 {
			return fmt.Errorf("graph: layer %s attends over a sequence {1, T, D}, not %v", l.Name, l.In)
		}
		if l.Heads < 1 || l.Out < 0 || l.Inner()%l.Heads != 0 {
			return fmt.Errorf("graph: layer %s: %d heads do not divide its projections' width %d", l.Name, l.Heads, l.Inner())
		}
	}
	return nil
}

// SkipsPadding says whether a layer of the network skips padding (its
// samples' lengths are then needed: SeqLength).
func (n Network) SkipsPadding() bool {
	return slices.ContainsFunc(n.Layers, func(l Layer) bool { return l.SkipPadding })
}

// SeqLength is a sample's length: the positions up to its last non-zero
// token id (at least 1), given the ids as the network receives them
// (byte/255 or the ids themselves: only zero matters).
func SeqLength(ids []float32) int {
	for i := len(ids) - 1; i > 0; i-- {
		if ids[i] != 0 {
			return i + 1
		}
	}
	return 1
}

// MACs is the network's multiply-accumulates per sample (batch norms
// folded).
func (n Network) MACs() int64 {
	var total int64
	for _, l := range n.Layers {
		total += l.MACs()
	}
	return total
}

// Basic says whether the network is one that the paths not yet extended
// to the CNN kinds take — the device network, thinning and low-rank
// factorization: a chain (each layer taking the one before) of linear
// layers, unpadded stride-1 convolutions with a bias and 2×2 max poolings,
// with ReLU or no activation. Otherwise it names the first layer that is
// not; each path says what it is in its error.
func (n Network) Basic() error {
	for i, l := range n.Layers {
		prev := Input
		if i > 0 {
			prev = n.Layers[i-1].Name
		}
		if ins := l.InputsOf(prev); len(ins) != 1 || ins[0] != prev {
			return fmt.Errorf("graph: layer %s takes %v, not the layer before it", l.Name, ins)
		}
		k, s, p := l.Window()
		switch {
		case l.Kind != Linear && l.Kind != Conv && l.Kind != MaxPool:
			return fmt.Errorf("graph: layer %s is a %s layer", l.Name, l.Kind)
		case l.Act != Identity && l.Act != ReLU && l.Act != "":
			return fmt.Errorf("graph: layer %s has a %s activation", l.Name, l.Act)
		case l.Kind == Conv && (s != 1 || p != 0 || l.GroupCount() != 1 || l.NoBias):
			return fmt.Errorf("graph: layer %s is a strided, padded, grouped or bias-free convolution", l.Name)
		case l.Kind == MaxPool && (k != 2 || s != 2 || p != 0):
			return fmt.Errorf("graph: layer %s is a max pooling other than 2×2 with stride 2", l.Name)
		}
	}
	return nil
}
