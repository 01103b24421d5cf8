package graph

import (
	"errors"
	"fmt"
)

// Chain builds a network from layers given in order: each receives what
// the one before produces (the first, the input) unless it names its
// Inputs, and a linear layer after a spatial one sees it flattened.
type Chain struct {
	Net    Network
	cur    Shape
	last   string
	shapes map[string]Shape
}

// NewChain starts a network on input with classes outputs.
func NewChain(input Shape, classes int) *Chain {
	return &Chain{Net: Network{Input: input, Classes: classes}, cur: input, last: Input, shapes: map[string]Shape{Input: input}}
}

// Add appends a layer, setting its input shape (that of its first input).
func (c *Chain) Add(l Layer) *Chain {
	l.In = c.cur
	if len(l.Inputs) > 0 {
		l.In = c.shapes[l.Inputs[0]]
	}
	if l.Kind == Linear {
		l.In = Shape{H: 1, W: 1, C: l.In.Size()}
	}
	if l.Act == "" {
		l.Act = Identity
	}
	c.Net.Layers = append(c.Net.Layers, l)
	c.cur, c.last = l.Output(), l.Name
	c.shapes[l.Name] = c.cur
	return c
}

// Last is the name of the layer added last (Input before any).
func (c *Chain) Last() string { return c.last }

// Shape is the output shape of the named layer (or Input).
func (c *Chain) Shape(name string) Shape { return c.shapes[name] }

// MLP is a stack of linear layers fc1, fc2, …: ReLU and dropout after each
// hidden one, the last producing the classes.
func MLP(input Shape, hidden []int, classes int, dropout float64) Network {
	c := NewChain(input, classes)
	for i, h := range hidden {
		c.Add(Layer{Name: fmt.Sprintf("fc%d", i+1), Kind: Linear, Out: h, Act: ReLU, Dropout: dropout})
	}
	c.Add(Layer{Name: fmt.Sprintf("fc%d", len(hidden)+1), Kind: Linear, Out: classes})
	return c.Net
}

// LeNet5 is Caffe's LeNet-5: conv1 (5×5, conv[0] filters, ReLU), 2×2 max
// pooling, conv2 (5×5, conv[1]), pooling, fc1 (hidden, ReLU, dropout), fc2
// to the classes.
func LeNet5(input Shape, conv [2]int, hidden, classes int, dropout float64) Network {
	c := NewChain(input, classes)
	for i, f := range conv {
		name := fmt.Sprintf("conv%d", i+1)
		c.Add(Layer{Name: name, Kind: Conv, Out: f, Kernel: 5, Act: ReLU})
		c.Add(Layer{Name: name + ".pool", Kind: MaxPool})
	}
	c.Add(Layer{Name: "fc1", Kind: Linear, Out: hidden, Act: ReLU, Dropout: dropout})
	c.Add(Layer{Name: "fc2", Kind: Linear, Out: classes})
	return c.Net
}

// Factorize returns n with the linear layer name replaced by two: name.v
// (its inputs → rank, no activation) then name.u (rank → its outputs, its
// activation and dropout).
func Factorize(n Network, name string, rank int) (Network, error) {
	for i, l := range n.Layers {
		if l.Name != name {
			continue
		}
		if l.Kind != Linear {
			return n, fmt.Errorf("graph: %s is a %s layer; only linear layers factorize", name, l.Kind)
		}
		v := Layer{Name: name + ".v", Kind: Linear, In: l.In, Out: rank, Act: Identity}
		u := l
		u.Name, u.In = name+".u", Shape{H: 1, W: 1, C: rank}
		out := n.Clone()
		out.Layers = append(append(append([]Layer{}, n.Layers[:i]...), v, u), n.Layers[i+1:]...)
		return out, nil
	}
	return n, fmt.Errorf("graph: no layer %s", name)
}

// ResNet is He et al.'s ResNet-(6n+2) for small images (2016, §4.2, with
// projection shortcuts, option B), as the PyTorch anchor defines it: conv1
// (3×3, 16 filters, no bias) + bn1 + ReLU; three stages of n basic blocks
// with 16, 32 and 64 filters, the first block of the second and third
// stride 2; global average pooling; fc to the classes. Block k is
// blockK.conv1 (3×3, stride, no bias) + blockK.bn1 + ReLU, blockK.conv2
// (3×3, no bias) + blockK.bn2, a shortcut — the block's input, or
// blockK.sc (1×1 conv, stride, no bias) + blockK.sc.bn where the shape
// changes — and blockK.add with ReLU. depth is 6n+2: 8, 14, 20, 32, 56, …
func ResNet(input Shape, depth, classes int) (Network, error) {
	if depth < 8 || (depth-2)%6 != 0 {
		return Network{}, fmt.Errorf("graph: a ResNet's depth is 6n+2 (8, 14, 20, 32, 44, 56, …), not %d", depth)
	}
	n := (depth - 2) / 6
	c := NewChain(input, classes)
	c.Add(Layer{Name: "conv1", Kind: Conv, Out: 16, Kernel: 3, Pad: 1, NoBias: true})
	c.Add(Layer{Name: "bn1", Kind: BatchNorm, Act: ReLU})
	k := 0
	for stage, filters := range []int{16, 32, 64} {
		for i := range n {
			k++
			stride := 1
			if stage > 0 && i == 0 {
				stride = 2
			}
			basicBlock(c, fmt.Sprintf("block%d", k), filters, stride)
		}
	}
	c.Add(Layer{Name: "pool", Kind: GlobalAvgPool})
	c.Add(Layer{Name: "fc", Kind: Linear, Out: classes})
	return c.Net, c.Net.Validate()
}

// basicBlock adds a ResNet basic block named name.
func basicBlock(c *Chain, name string, filters, stride int) {
	in := c.Last()
	c.Add(Layer{Name: name + ".conv1", Kind: Conv, Out: filters, Kernel: 3, Stride: stride, Pad: 1, NoBias: true})
	c.Add(Layer{Name: name + ".bn1", Kind: BatchNorm, Act: ReLU})
	c.Add(Layer{Name: name + ".conv2", Kind: Conv, Out: filters, Kernel: 3, Pad: 1, NoBias: true})
	c.Add(Layer{Name: name + ".bn2", Kind: BatchNorm})
	body, shortcut := c.Last(), in
	if stride != 1 || c.Shape(in).C != filters {
		c.Add(Layer{Name: name + ".sc", Kind: Conv, Inputs: []string{in}, Out: filters, Kernel: 1, Stride: stride, NoBias: true})
		c.Add(Layer{Name: name + ".sc.bn", Kind: BatchNorm})
		shortcut = c.Last()
	}
	c.Add(Layer{Name: name + ".add", Kind: Add, Inputs: []string{body, shortcut}, Act: ReLU})
}

// MobileNet is a MobileNetV2-style network for small images (Sandler et
// al. 2018, scaled to 28×28): stem (3×3 conv, 16 filters) + BN + ReLU6;
// inverted residual blocks (t, c, n, s) = (1, 16, 1, 1), (6, 24, 2, 2),
// (6, 32, 2, 2), (6, 64, 2, 2) — each a 1×1 expansion to t× the channels
// (none when t = 1) + BN + ReLU6, a 3×3 depthwise convolution (stride s in
// a stage's first block) + BN + ReLU6, a 1×1 projection + BN, and the
// block's input added where the shapes match; then a 1×1 conv to 256
// channels + BN + ReLU6, global average pooling and fc to the classes.
// Every width is multiplied by width and rounded to a multiple of 8, as
// torchvision's MobileNetV2 does; convolutions before a BN have no bias.
func MobileNet(input Shape, width float64, classes int) (Network, error) {
	if !(width > 0 && width <= 4) {
		return Network{}, fmt.Errorf("graph: a MobileNet's width multiplier is in (0, 4], not %v", width)
	}
	c := NewChain(input, classes)
	c.Add(Layer{Name: "stem", Kind: Conv, Out: divisible(16 * width), Kernel: 3, Pad: 1, NoBias: true})
	c.Add(Layer{Name: "stem.bn", Kind: BatchNorm, Act: ReLU6})
	k := 0
	for _, st := range [][4]int{{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 2, 2}, {6, 64, 2, 2}} {
		for i := range st[2] {
			k++
			stride := st[3]
			if i > 0 {
				stride = 1
			}
			invertedResidual(c, fmt.Sprintf("block%d", k), st[0], divisible(float64(st[1])*width), stride)
		}
	}
	c.Add(Layer{Name: "head", Kind: Conv, Out: divisible(256 * width), Kernel: 1, NoBias: true})
	c.Add(Layer{Name: "head.bn", Kind: BatchNorm, Act: ReLU6})
	c.Add(Layer{Name: "pool", Kind: GlobalAvgPool})
	c.Add(Layer{Name: "fc", Kind: Linear, Out: classes})
	return c.Net, c.Net.Validate()
}

// invertedResidual adds a MobileNetV2 block named name.
func invertedResidual(c *Chain, name string, expand, out, stride int) {
	in := c.Last()
	cin := c.Shape(in).C
	hidden := cin * expand
	if expand != 1 {
		c.Add(Layer{Name: name + ".expand", Kind: Conv, Out: hidden, Kernel: 1, NoBias: true})
		c.Add(Layer{Name: name + ".expand.bn", Kind: BatchNorm, Act: ReLU6})
	}
	c.Add(Layer{Name: name + ".dw", Kind: Conv, Out: hidden, Kernel: 3, Stride: stride, Pad: 1, Groups: hidden, NoBias: true})
	c.Add(Layer{Name: name + ".dw.bn", Kind: BatchNorm, Act: ReLU6})
	c.Add(Layer{Name: name + ".project", Kind: Conv, Out: out, Kernel: 1, NoBias: true})
	c.Add(Layer{Name: name + ".project.bn", Kind: BatchNorm})
	if stride == 1 && cin == out {
		c.Add(Layer{Name: name + ".add", Kind: Add, Inputs: []string{c.Last(), in}})
	}
}

// divisible rounds a width to a multiple of 8, never below 8 nor more
// than 10 % below the width (torchvision's _make_divisible).
func divisible(v float64) int {
	n := max(8, int(v+4)/8*8)
	if float64(n) < 0.9*v {
		n += 8
	}
	return n
}

// TransformerShape is a transformer's size: the width of every position's
// values, the heads of each attention layer, the blocks, the feed-forward
// width, and Ngram, the kernel of an optional convolution over the byte
// embeddings (0: none).
type TransformerShape struct {
	Dim, Heads, Blocks, MLP int
	Ngram                   int
}

// Transformer is a pre-norm transformer over {1, T, 1} bytes (Vaswani et
// al. 2017; the pre-norm order of GPT-2): emb (embedding of width dim with
// learned positions), with sh.Ngram the local features
//
//	ngram (Ngram×Ngram convolution, zero padding Ngram/2, dim wide, GELU) → ngram.add (+ emb)
//
// — over a sequence {1, T, dim} only the kernel's middle row meets bytes,
// so each position sees the Ngram bytes around it — then blocks of
//
//	bN.ln1 → bN.attn (heads) → bN.add1 (+ the block's input)
//	bN.ln2 → bN.fc1 (1×1, mlp wide, GELU) → bN.fc2 (1×1, dim) → bN.add2 (+ bN.add1)
//
// and a final LayerNorm ln. A classifier (perPosition false) then averages
// the positions (pool) and maps them to the classes (head, linear); a
// language model (perPosition true, causal attention) maps each position
// to the classes (head, 1×1), its output {1, T, classes}. A language model
// takes no ngram convolution: it would show each position the bytes after
// it.
func Transformer(input Shape, sh TransformerShape, classes int, perPosition bool) (Network, error) {
	dim, heads, blocks, mlp := sh.Dim, sh.Heads, sh.Blocks, sh.MLP
	if dim < 1 || heads < 1 || blocks < 1 || mlp < 1 {
		return Network{}, fmt.Errorf("graph: a transformer of width %d, %d heads, %d blocks and MLP width %d (want each ≥ 1)", dim, heads, blocks, mlp)
	}
	switch {
	case sh.Ngram < 0 || sh.Ngram > 0 && sh.Ngram%2 == 0:
		return Network{}, fmt.Errorf("graph: a transformer's ngram convolution of %d bytes (want an odd width, or 0 for none)", sh.Ngram)
	case sh.Ngram > 0 && perPosition:
		return Network{}, errors.New("graph: a language model's transformer takes no ngram convolution (it would see the bytes after each position)")
	}
	c := NewChain(input, classes)
	c.Add(Layer{Name: "emb", Kind: Embedding, Out: dim})
	if sh.Ngram > 0 {
		c.Add(Layer{Name: "ngram", Kind: Conv, Out: dim, Kernel: sh.Ngram, Pad: sh.Ngram / 2, Act: GELU})
		c.Add(Layer{Name: "ngram.add", Kind: Add, Inputs: []string{"emb", "ngram"}})
	}
	for i := 1; i <= blocks; i++ {
		b := fmt.Sprintf("b%d", i)
		in := c.Last()
		c.Add(Layer{Name: b + ".ln1", Kind: LayerNorm})
		c.Add(Layer{Name: b + ".attn", Kind: Attention, Heads: heads, Causal: perPosition})
		c.Add(Layer{Name: b + ".add1", Kind: Add, Inputs: []string{in, c.Last()}})
		mid := c.Last()
		c.Add(Layer{Name: b + ".ln2", Kind: LayerNorm})
		c.Add(Layer{Name: b + ".fc1", Kind: Conv, Out: mlp, Kernel: 1, Act: GELU})
		c.Add(Layer{Name: b + ".fc2", Kind: Conv, Out: dim, Kernel: 1})
		c.Add(Layer{Name: b + ".add2", Kind: Add, Inputs: []string{mid, c.Last()}})
	}
	c.Add(Layer{Name: "ln", Kind: LayerNorm})
	if perPosition {
		c.Add(Layer{Name: "head", Kind: Conv, Out: classes, Kernel: 1})
	} else {
		c.Add(Layer{Name: "pool", Kind: GlobalAvgPool})
		c.Add(Layer{Name: "head", Kind: Linear, Out: classes})
	}
	c.Net.PerPosition = perPosition
	return c.Net, c.Net.Validate()
}
