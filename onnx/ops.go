package onnx

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/onnxpb"
)

// converters turn a node of computed values into lathe layers.
var converters map[string]func(*importer, *onnxpb.NodeProto) (*value, error)

func init() {
	converters = map[string]func(*importer, *onnxpb.NodeProto) (*value, error){
		"Identity": (*importer).alias, "Dropout": (*importer).alias,
		"Relu": (*importer).relu, "Clip": (*importer).clip,
		"Conv": (*importer).conv, "Gemm": (*importer).gemm, "MatMul": (*importer).matmul,
		"BatchNormalization": (*importer).batchNorm,
		"MaxPool":            (*importer).pool, "AveragePool": (*importer).pool,
		"GlobalAveragePool": (*importer).globalPool, "ReduceMean": (*importer).reduceMean,
		"Flatten": (*importer).flatten, "Reshape": (*importer).reshape, "Pad": (*importer).pad,
		"Add": (*importer).add, "Sum": (*importer).add,
		"Transpose": (*importer).seqTranspose, "Gather": (*importer).gather, "LayerNormalization": (*importer).layerNorm,
		"Sub": (*importer).arith, "Mul": (*importer).arith, "Div": (*importer).arith, "Pow": (*importer).arith,
		"Sqrt": (*importer).arith, "Erf": (*importer).arith, "Softmax": (*importer).softmax, "Gelu": (*importer).geluOp,
		"Sigmoid": (*importer).sigmoid, "Slice": (*importer).slice,
	}
}

// supported lists the operators lathe imports, for errors.
func supported() string {
	ops := slices.Sorted(maps.Keys(converters))
	return strings.Join(ops, ", ") + " and constant subgraphs"
}

// aliasOf is v as read by one more node that passes it on unchanged.
func (im *importer) aliasOf(n *onnxpb.NodeProto, v *value) *value {
	a := *v
	a.sole = v.sole && im.uses[n.GetInput()[0]] == 1
	return &a
}

// alias passes a value through (Identity; Dropout, which evaluation
// leaves alone).
func (im *importer) alias(n *onnxpb.NodeProto) (*value, error) {
	v, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	return im.aliasOf(n, v), nil
}

// name makes a unique layer name: base (a weight's name less ".weight")
// or the operator's name and a count.
func (im *importer) name(n *onnxpb.NodeProto, base, kind string) string {
	base = strings.TrimSuffix(base, ".weight")
	if base == "" || strings.ContainsAny(base, "/: ") {
		im.counts[kind]++
		base = fmt.Sprintf("%s%d", kind, im.counts[kind])
	}
	name := base
	for k := 2; im.taken[name]; k++ {
		name = fmt.Sprintf("%s_%d", base, k)
	}
	im.taken[name] = true
	im.nodeOf[name] = nodeName(n)
	return name
}

// add appends a layer reading ins and returns its output.
func (im *importer) addLayer(l graph.Layer, ins ...*value) *value {
	prev := graph.Input
	if k := len(im.net.Layers); k > 0 {
		prev = im.net.Layers[k-1].Name
	}
	if len(ins) != 1 || ins[0].layer != prev {
		for _, v := range ins {
			l.Inputs = append(l.Inputs, v.layer)
		}
	}
	if l.In == (graph.Shape{}) {
		l.In = ins[0].shape
	}
	im.net.Layers = append(im.net.Layers, l)
	out := l.Output()
	rank := ins[0].rank
	if rank == 2 && (out.H != 1 || out.W != 1) {
		rank = 4
	}
	return &value{layer: l.Name, shape: out, rank: rank, sole: true, tmajor: rank == 3 && ins[0].tmajor}
}

func (im *importer) layer(name string) *graph.Layer { return im.net.Layer(name) }

// image requires an unpadded image value.
func image(v *value) error {
	if v.rank != 4 {
		return fmt.Errorf("its input is a [batch, %d] matrix, not an image [batch, C, H, W]", v.shape.Size())
	}
	if v.pad > 0 {
		return fmt.Errorf("its input is zero-padded by %s; lathe pads only inside a convolution or an average pooling", v.padNode)
	}
	return nil
}

// flat makes a rank-2 value of an image layer a layer of its own (a
// lathe flatten, NHWC: the permutation stays), for the layers that need
// {1, 1, F} as their input shape.
func (im *importer) flat(n *onnxpb.NodeProto, v *value) *value {
	if v.rank != 2 || (v.shape.H == 1 && v.shape.W == 1) {
		return v
	}
	out := im.addLayer(graph.Layer{Name: im.name(n, "", "flatten"), Kind: graph.Flatten}, v)
	out.rank, out.perm = 2, v.perm
	return out
}

// activate joins an activation to the layer that computes x: a
// convolution, linear layer, batch norm or addition whose output nothing
// else reads — or, through a max pooling, the layer it pools.
func (im *importer) activate(n *onnxpb.NodeProto, act graph.Activation) (*value, error) {
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	takes := func(name string) *graph.Layer {
		l := im.layer(name)
		if l != nil && (l.Act == "" || l.Act == graph.Identity || piecewise(l.Act) && piecewise(act)) && slices.Contains([]graph.Kind{graph.Conv, graph.Linear, graph.BatchNorm, graph.Add}, l.Kind) {
			return l
		}
		return nil
	}
	if x.sole && im.uses[n.GetInput()[0]] == 1 && x.pad == 0 {
		l := takes(x.layer)
		if l == nil && x.pooled != "" {
			l = takes(x.pooled)
		}
		if l != nil {
			if l.Act != graph.ReLU6 { // ReLU then ReLU6 (PyTorch's relu6 export), ReLU6 then ReLU: ReLU6
				l.Act = act
			}
			return im.aliasOf(n, x), nil
		}
	}
	return nil, fmt.Errorf("lathe applies %s only as part of the layer before it (a convolution, linear layer, batch norm or addition, or one a max pooling reads), and only when nothing else reads that layer's output; %s is %s",
		act, n.GetInput()[0], describe(im, x))
}

// sigmoidOf is a sigmoid of a layer's output that its Mul with that
// output may make SiLU (x·sigmoid(x), how PyTorch exports nn.SiLU).
type sigmoidOf struct {
	x    *value
	name string // x's name, read by the sigmoid and the Mul
}

// sigmoid joins a sigmoid to the layer before it (activate); where that
// layer's output is read once more — by the Mul that makes SiLU — it
// waits for the Mul (silu).
func (im *importer) sigmoid(n *onnxpb.NodeProto) (*value, error) {
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	if in := n.GetInput()[0]; im.uses[in] == 2 && x.pend == nil && im.uses[n.GetOutput()[0]] == 1 {
		return im.stage(x, &sigmoidOf{x: x, name: in}), nil
	}
	return im.activate(n, graph.Sigmoid)
}

// silu joins SiLU to the layer computing p.x, read only by the sigmoid
// and the Mul.
func (im *importer) silu(p *sigmoidOf) (*value, error) {
	l := im.layer(p.x.layer)
	if l == nil || !p.x.sole || p.x.pad != 0 || (l.Act != "" && l.Act != graph.Identity) ||
		!slices.Contains([]graph.Kind{graph.Conv, graph.Linear, graph.BatchNorm, graph.Add}, l.Kind) {
		return nil, fmt.Errorf("SiLU (x·sigmoid(x)) of %s, which is not a layer's own output read by the SiLU only", p.name)
	}
	l.Act = graph.SiLU
	out := *p.x
	return &out, nil
}

// piecewise: ReLU and ReLU6, of which two in a row are one.
func piecewise(a graph.Activation) bool { return a == graph.ReLU || a == graph.ReLU6 }

func describe(im *importer, x *value) string {
	if x.layer == graph.Input {
		return "the network's input"
	}
	l := im.layer(x.layer)
	if l.Act != "" && l.Act != graph.Identity {
		return fmt.Sprintf("layer %s (%s), which already has %s", l.Name, l.Kind, l.Act)
	}
	return fmt.Sprintf("layer %s (%s), read by other nodes too", l.Name, l.Kind)
}

func (im *importer) relu(n *onnxpb.NodeProto) (*value, error) { return im.activate(n, graph.ReLU) }

// geluOp is opset 20's Gelu, the exact form.
func (im *importer) geluOp(n *onnxpb.NodeProto) (*value, error) {
	if a := attrString(n, "approximate", "none"); a != "none" {
		return nil, fmt.Errorf("approximate %q: lathe's GELU is the exact one", a)
	}
	return im.activate(n, graph.GELU)
}

// clip is ReLU6 (Clip to [0, 6]) or ReLU ([0, ∞)).
func (im *importer) clip(n *onnxpb.NodeProto) (*value, error) {
	lo, hi := float64(attrFloat(n, "min", -3.4028234663852886e38)), float64(attrFloat(n, "max", 3.4028234663852886e38))
	for k, p := range []*float64{&lo, &hi} {
		c, err := im.konst(n, k+1)
		if err != nil {
			return nil, err
		}
		if c != nil {
			v, ok := c.scalar()
			if !ok {
				return nil, errors.New("a Clip bound is not a scalar")
			}
			*p = v
		}
	}
	switch {
	case lo == 0 && hi == 6:
		return im.activate(n, graph.ReLU6)
	case lo == 0 && hi >= 3.4e38:
		return im.activate(n, graph.ReLU)
	}
	return nil, fmt.Errorf("Clip to [%g, %g]: lathe has ReLU ([0, ∞)) and ReLU6 ([0, 6])", lo, hi)
}

// window reads a convolution's or pooling's square kernel, equal strides
// and equal padding on every side (plus what a Pad before it added).
func window(n *onnxpb.NodeProto, x *value, kernel int) (k, stride, pad int, err error) {
	if ks := attrInts(n, "kernel_shape"); ks != nil {
		if len(ks) != 2 || ks[0] != ks[1] {
			return 0, 0, 0, fmt.Errorf("kernel %v: lathe's kernels are square", ks)
		}
		if kernel > 0 && int(ks[0]) != kernel {
			return 0, 0, 0, fmt.Errorf("kernel_shape %v disagrees with the weight's %d×%d", ks, kernel, kernel)
		}
		kernel = int(ks[0])
	}
	if kernel <= 0 {
		return 0, 0, 0, errors.New("no kernel_shape")
	}
	stride = 1
	if s := attrInts(n, "strides"); s != nil {
		if len(s) != 2 || s[0] != s[1] {
			return 0, 0, 0, fmt.Errorf("strides %v: lathe strides equally along both axes", s)
		}
		stride = int(s[0])
	}
	for _, d := range attrInts(n, "dilations") {
		if d != 1 {
			return 0, 0, 0, fmt.Errorf("dilations %v: lathe has no dilated kernels", attrInts(n, "dilations"))
		}
	}
	if a := attrString(n, "auto_pad", "NOTSET"); a != "NOTSET" && a != "VALID" {
		return 0, 0, 0, fmt.Errorf("auto_pad %s: lathe pads explicitly (export with explicit pads)", a)
	}
	if attrInt(n, "ceil_mode", 0) != 0 {
		return 0, 0, 0, errors.New("ceil_mode 1: lathe's poolings round their output size down")
	}
	if ps := attrInts(n, "pads"); ps != nil {
		for _, p := range ps {
			if p != ps[0] {
				return 0, 0, 0, fmt.Errorf("pads %v: lathe pads every side equally", ps)
			}
		}
		if len(ps) > 0 {
			pad = int(ps[0])
		}
	}
	return kernel, stride, pad + x.pad, nil
}

// conv is a convolution: W [out, in/groups, k, k] becomes lathe's
// [out, k, k, in/groups].
func (im *importer) conv(n *onnxpb.NodeProto) (*value, error) {
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	if x.rank != 4 {
		return nil, image(x)
	}
	w, err := im.konst(n, 1)
	if err != nil || w == nil {
		return nil, errors.Join(errors.New("its weight must be a constant"), err)
	}
	b, err := im.konst(n, 2)
	if err != nil {
		return nil, err
	}
	if len(w.dims) != 4 || w.dims[2] != w.dims[3] {
		return nil, fmt.Errorf("weight of shape %v: lathe convolves 2-D images with square kernels", w.dims)
	}
	k, stride, pad, err := window(n, x, w.dims[2])
	if err != nil {
		return nil, err
	}
	out, cg, groups := w.dims[0], w.dims[1], int(attrInt(n, "group", 1))
	if cg*groups != x.shape.C {
		return nil, fmt.Errorf("%d groups of %d channels, but its input has %d", groups, cg, x.shape.C)
	}
	if b != nil && b.size() != out {
		return nil, fmt.Errorf("a bias of %d values for %d filters", b.size(), out)
	}
	l := graph.Layer{Name: im.name(n, n.GetInput()[1], "conv"), Kind: graph.Conv, Out: out, Kernel: k, Stride: stride, Pad: pad, NoBias: b == nil}
	if groups > 1 {
		l.Groups = groups
	}
	lw := make([]float32, len(w.f))
	for o := range out {
		for c := range cg {
			for ky := range k {
				for kx := range k {
					lw[((o*k+ky)*k+kx)*cg+c] = w.f[((o*cg+c)*k+ky)*k+kx]
				}
			}
		}
	}
	im.params[l.Name] = lw
	if b != nil {
		im.params[l.Name+".bias"] = b.floats()
	}
	x.pad = 0 // the layer takes it
	return im.addLayer(l, x), nil
}

// linear adds a linear layer over x with W [out, F] in ONNX's feature
// order (columns permuted to lathe's) and a bias (nil: zeros).
func (im *importer) linear(n *onnxpb.NodeProto, x *value, base string, w []float32, out int, bias []float32) (*value, error) {
	if x.rank == 3 {
		return nil, errors.New("a Gemm of a sequence: lathe multiplies a sequence's positions by a MatMul")
	}
	if x.rank != 2 {
		return nil, fmt.Errorf("its input is an image [batch, %d, %d, %d]; flatten it first", x.shape.C, x.shape.H, x.shape.W)
	}
	f := x.shape.Size()
	if len(w) != out*f {
		return nil, fmt.Errorf("a %d-value weight for %d outputs of %d inputs", len(w), out, f)
	}
	l := graph.Layer{Name: im.name(n, base, "linear"), Kind: graph.Linear, Out: out, In: graph.Shape{H: 1, W: 1, C: f}}
	lw := w
	if x.perm != nil {
		lw = make([]float32, len(w))
		for o := range out {
			for j, p := range x.perm {
				lw[o*f+p] = w[o*f+j]
			}
		}
	}
	if bias == nil {
		bias = make([]float32, out)
	}
	im.params[l.Name], im.params[l.Name+".bias"] = lw, bias
	v := im.addLayer(l, x)
	v.rank = 2
	return v, nil
}

// gemm is Y = alpha·A·B(ᵀ) + beta·C with B and C constants.
func (im *importer) gemm(n *onnxpb.NodeProto) (*value, error) {
	x := im.raw(n, 0)
	if sc, ok := x.pend.(*scores); !ok || !sc.joined { // else nn.MultiheadAttention's out_proj
		var err error
		if x, err = im.val(n, 0); err != nil {
			return nil, err
		}
	}
	if attrInt(n, "transA", 0) != 0 {
		return nil, errors.New("transA 1: lathe's linear layers take [batch, features]")
	}
	w, err := im.konst(n, 1)
	if err != nil || w == nil || len(w.dims) != 2 {
		return nil, errors.Join(errors.New("its weight must be a 2-D constant"), err)
	}
	if attrInt(n, "transB", 0) == 0 {
		if w, err = w.transpose(nil); err != nil {
			return nil, err
		}
	}
	c, err := im.konst(n, 2)
	if err != nil {
		return nil, err
	}
	out := w.dims[0]
	alpha, beta := attrFloat(n, "alpha", 1), attrFloat(n, "beta", 1)
	wf := slices.Clone(w.floats())
	for k := range wf {
		wf[k] *= alpha
	}
	var bias []float32
	if c != nil {
		if bias, err = biasOf(c, out); err != nil {
			return nil, err
		}
		for k := range bias {
			bias[k] *= beta
		}
	}
	if sc, ok := x.pend.(*scores); ok && sc.joined { // nn.MultiheadAttention's out_proj
		return im.attention(n, sc, wf, w.dims[1], out, bias)
	}
	return im.linear(n, x, n.GetInput()[1], wf, out, bias)
}

// biasOf spreads a constant of one value or of out values (any leading
// 1s) over out outputs.
func biasOf(c *tensor, out int) ([]float32, error) {
	for _, d := range c.dims[:max(len(c.dims)-1, 0)] {
		if d != 1 {
			return nil, fmt.Errorf("a bias of shape %v for %d outputs", c.dims, out)
		}
	}
	switch v := c.floats(); len(v) {
	case out:
		return slices.Clone(v), nil
	case 1:
		return slices.Repeat(v, out), nil
	}
	return nil, fmt.Errorf("a bias of shape %v for %d outputs", c.dims, out)
}

// matmul is x·W with W [F, out] constant: a linear layer (its bias an Add
// after it).
func (im *importer) matmul(n *onnxpb.NodeProto) (*value, error) {
	if a := im.raw(n, 0); a != nil && (a.rank == 3 || a.pend != nil) {
		return im.seqMatMul(n, a, im.raw(n, 1))
	}
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	w, err := im.konst(n, 1)
	if err != nil || w == nil || len(w.dims) != 2 {
		return nil, errors.Join(errors.New("lathe multiplies a computed value by a 2-D constant only (a linear layer)"), err)
	}
	wt, err := w.transpose(nil)
	if err != nil {
		return nil, err
	}
	return im.linear(n, x, n.GetInput()[1], wt.floats(), w.dims[1], nil)
}

// batchNorm is an evaluation-mode batch norm; its epsilon goes into the
// running variance (lathe's is 1e-5): var + ε is what it divides by.
func (im *importer) batchNorm(n *onnxpb.NodeProto) (*value, error) {
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	if attrInt(n, "training_mode", 0) != 0 {
		return nil, errors.New("training_mode 1: export the model in evaluation mode (model.eval(), training=TrainingMode.PRESERVE keeps the batch norms)")
	}
	var ps [4][]float32
	for k := range ps {
		c, err := im.konst(n, k+1)
		if err != nil || c == nil {
			return nil, errors.Join(errors.New("its scale, bias, mean and variance must be constants"), err)
		}
		ps[k] = slices.Clone(c.floats())
	}
	if x.pad > 0 {
		return nil, image(x)
	}
	x = im.flat(n, x)
	ch := x.shape.C
	for k, p := range ps {
		if len(p) != ch {
			return nil, fmt.Errorf("input %d has %d values for %d channels", k+1, len(p), ch)
		}
	}
	eps := attrFloat(n, "epsilon", 1e-5)
	for c := range ps[3] {
		ps[3][c] += eps - graph.BNEpsilon
	}
	if x.perm != nil {
		for k, p := range ps {
			q := make([]float32, len(p))
			for j, to := range x.perm {
				q[to] = p[j]
			}
			ps[k] = q
		}
	}
	l := graph.Layer{Name: im.name(n, n.GetInput()[1], "bn"), Kind: graph.BatchNorm}
	im.params[l.Name], im.params[l.Name+".bias"] = ps[0], ps[1]
	im.params[l.Name+".running_mean"], im.params[l.Name+".running_var"] = ps[2], ps[3]
	v := im.addLayer(l, x)
	v.rank, v.perm = x.rank, x.perm
	return v, nil
}

// pool is a max or average pooling.
func (im *importer) pool(n *onnxpb.NodeProto) (*value, error) {
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	if x.rank != 4 {
		return nil, image(x)
	}
	avg := n.GetOpType() == "AveragePool"
	if !avg && x.pad > 0 {
		return nil, image(x)
	}
	if attrInt(n, "storage_order", 0) != 0 {
		return nil, errors.New("storage_order 1")
	}
	k, stride, pad, err := window(n, x, 0)
	if err != nil {
		return nil, err
	}
	if avg && pad > x.pad && attrInt(n, "count_include_pad", 0) == 0 {
		return nil, errors.New("padding not counted in the average (count_include_pad 0): lathe's average pooling counts it, as PyTorch's default")
	}
	kind := graph.MaxPool
	if avg {
		kind = graph.AvgPool
	}
	l := graph.Layer{Name: im.name(n, "", string(kind)), Kind: kind, Kernel: k, Stride: stride, Pad: pad}
	pooled := ""
	if !avg && x.sole && im.uses[n.GetInput()[0]] == 1 {
		pooled = x.layer
	}
	x.pad = 0
	v := im.addLayer(l, x)
	v.pooled = pooled
	return v, nil
}

// globalPool averages each channel over the image: [batch, C, 1, 1].
func (im *importer) globalPool(n *onnxpb.NodeProto) (*value, error) {
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	if err := image(x); err != nil {
		return nil, err
	}
	return im.addLayer(graph.Layer{Name: im.name(n, "", "pool"), Kind: graph.GlobalAvgPool}, x), nil
}

// reduceMean over the image's two axes is a global average pooling.
func (im *importer) reduceMean(n *onnxpb.NodeProto) (*value, error) {
	var axes []int64
	if a := attrInts(n, "axes"); a != nil {
		axes = a
	} else if c, err := im.konst(n, 1); err != nil {
		return nil, err
	} else if c != nil {
		axes = c.ints()
	}
	if r := im.raw(n, 0); r != nil && (r.rank == 3 || r.pend != nil) {
		return im.seqMean(n, r, axes)
	}
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	set := map[int64]bool{}
	for _, a := range axes {
		set[(a+4)%4] = true
	}
	if x.rank != 4 || len(axes) != 2 || !set[2] || !set[3] {
		return nil, fmt.Errorf("a mean over axes %v of a rank-%d value: lathe averages an image over its rows and columns (axes 2 and 3)", axes, x.rank)
	}
	if err := image(x); err != nil {
		return nil, err
	}
	v := im.addLayer(graph.Layer{Name: im.name(n, "", "pool"), Kind: graph.GlobalAvgPool}, x)
	if attrInt(n, "keepdims", 1) == 0 {
		v.rank = 2
	}
	return v, nil
}

// flatten makes an image [batch, C, H, W] a matrix [batch, C·H·W]; lathe
// flattens NHWC, so the features are a permutation of ONNX's (the next
// layer's weights are permuted).
func (im *importer) flatten(n *onnxpb.NodeProto) (*value, error) {
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	if a := attrInt(n, "axis", 1); a != 1 && !(a == -1 && x.rank == 2) {
		return nil, fmt.Errorf("axis %d: lathe flattens all but the batch (axis 1)", a)
	}
	return im.flattened(n, x)
}

func (im *importer) flattened(n *onnxpb.NodeProto, x *value) (*value, error) {
	if x.pad > 0 {
		return nil, image(x)
	}
	if x.tmajor {
		return nil, errors.New("flattens a time-major sequence [T, batch, D]")
	}
	v := im.aliasOf(n, x)
	if x.rank == 4 {
		v.rank = 2
		s := x.shape
		if s.C > 1 && s.H*s.W > 1 {
			v.perm = make([]int, s.Size())
			for c := range s.C {
				for p := range s.H * s.W {
					v.perm[c*s.H*s.W+p] = p*s.C + c
				}
			}
		}
	}
	return v, nil
}

// reshape keeps the batch and either flattens the rest or leaves it as
// it is.
func (im *importer) reshape(n *onnxpb.NodeProto) (*value, error) {
	c, err := im.konst(n, 1)
	if err != nil || c == nil {
		return nil, errors.Join(errors.New("its target shape must be constant"), err)
	}
	shape := c.ints()
	if r := im.raw(n, 0); r != nil && r.pend != nil {
		if v, ok, err := im.seqReshape(n, r, shape); ok {
			return v, err
		}
	}
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	if x.tmajor {
		return nil, errors.New("reshapes a time-major sequence [T, batch, D]: lathe follows that only inside nn.MultiheadAttention's pattern")
	}
	if len(shape) == 0 || (shape[0] != batch && shape[0] != 0 && shape[0] != -1) {
		return nil, fmt.Errorf("target shape %v does not keep the batch first", shape)
	}
	per := []int{x.shape.C, x.shape.H, x.shape.W}
	switch x.rank {
	case 2:
		per = []int{x.shape.Size()}
	case 3:
		per = []int{x.shape.W, x.shape.C}
	}
	rest := slices.Clone(shape[1:])
	if shape[0] == -1 && slices.Contains(rest, -1) {
		return nil, fmt.Errorf("target shape %v leaves the batch unknown", shape)
	}
	dims, err := reshapeDims(per, rest, attrInt(n, "allowzero", 0) != 0)
	if err != nil {
		return nil, err
	}
	switch {
	case slices.Equal(dims, per):
		return im.aliasOf(n, x), nil
	case len(dims) == 1 && x.rank != 3:
		return im.flattened(n, x)
	}
	return nil, fmt.Errorf("reshaping %v to %v: lathe reshapes only to flatten an image", per, dims)
}

// pad is a zero Pad of an image's rows and columns, equal on every side:
// the next convolution or average pooling takes it.
func (im *importer) pad(n *onnxpb.NodeProto) (*value, error) {
	x, err := im.val(n, 0)
	if err != nil {
		return nil, err
	}
	if m := attrString(n, "mode", "constant"); m != "constant" {
		return nil, fmt.Errorf("mode %s: lathe pads with zeros", m)
	}
	pads := attrInts(n, "pads")
	if c, err := im.konst(n, 1); err != nil {
		return nil, err
	} else if c != nil {
		pads = c.ints()
	}
	if c, err := im.konst(n, 2); err != nil {
		return nil, err
	} else if c != nil {
		if v, _ := c.scalar(); v != 0 {
			return nil, fmt.Errorf("constant_value %g: lathe pads with zeros", v)
		}
	}
	if x.rank != 4 || len(pads) != 8 || pads[0] != 0 || pads[1] != 0 || pads[4] != 0 || pads[5] != 0 ||
		pads[2] != pads[3] || pads[2] != pads[6] || pads[2] != pads[7] || pads[2] < 0 {
		return nil, fmt.Errorf("pads %v: lathe pads an image's rows and columns equally on every side", pads)
	}
	v := im.aliasOf(n, x)
	v.pad += int(pads[2])
	v.padNode = nodeName(n)
	return v, nil
}

// add is a residual addition of computed values, or a constant bias added
// to the linear layer or convolution before it.
func (im *importer) add(n *onnxpb.NodeProto) (*value, error) {
	var vals []*value
	var bias *tensor
	for k, in := range n.GetInput() {
		if c := im.consts[in]; c != nil {
			bias = c
			continue
		}
		v := im.raw(n, k)
		if v == nil {
			return nil, fmt.Errorf("input %q is never computed before it", in)
		}
		vals = append(vals, v)
	}
	if bias != nil {
		if len(vals) != 1 {
			return nil, errors.New("a constant added to several values")
		}
		if v, ok, err := im.seqAdd(n, vals[0], bias); ok {
			return v, err
		}
		x, err := im.ready(vals[0])
		if err != nil {
			return nil, err
		}
		return im.addBias(n, x, bias, n.GetInput()[slices.IndexFunc(n.GetInput(), func(in string) bool { return im.consts[in] == nil })])
	}
	for k, v := range vals {
		v, err := im.ready(v)
		if err != nil {
			return nil, err
		}
		vals[k] = v
	}
	if len(vals) < 2 {
		return im.alias(n)
	}
	for k, v := range vals {
		if v.pad > 0 {
			return nil, image(v)
		}
		vals[k] = im.flat(n, v)
		if vals[k].shape != vals[0].shape || vals[k].rank != vals[0].rank || !slices.Equal(vals[k].perm, vals[0].perm) {
			return nil, fmt.Errorf("adds values of shapes %v and %v: lathe adds values of one shape", vals[0].shape, vals[k].shape)
		}
		if vals[k].tmajor != vals[0].tmajor {
			return nil, errors.New("adds a time-major sequence [T, batch, D] to a batch-major one [batch, T, D]")
		}
	}
	v := im.addLayer(graph.Layer{Name: im.name(n, "", "add"), Kind: graph.Add}, vals...)
	v.rank, v.perm = vals[0].rank, vals[0].perm
	return v, nil
}

// addBias adds a constant to a linear layer's or convolution's bias.
func (im *importer) addBias(n *onnxpb.NodeProto, x *value, c *tensor, name string) (*value, error) {
	l := im.layer(x.layer)
	if l == nil || !x.sole || im.uses[name] != 1 || (l.Act != "" && l.Act != graph.Identity) || (l.Kind != graph.Linear && l.Kind != graph.Conv) {
		return nil, errors.New("adds a constant to a value that is not a linear layer's or convolution's own output; lathe adds constants only as a bias")
	}
	vals := c.floats()
	if l.Kind == graph.Conv && len(c.dims) == 4 { // [1, C, 1, 1]
		c = &tensor{dims: []int{c.size()}, f: vals}
	}
	b, err := biasOf(c, l.Out)
	if err != nil {
		return nil, err
	}
	if x.perm != nil {
		return nil, errors.New("a bias over a flattened image")
	}
	if l.NoBias {
		l.NoBias = false
		im.params[l.Name+".bias"] = make([]float32, l.Out)
	}
	for k := range b {
		im.params[l.Name+".bias"][k] += b[k]
	}
	return im.aliasOf(n, x), nil
}
