package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/onnxpb"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/rundir"
)

// Options says what the ONNX file does not: the data the model is for
// and the model file's job name.
type Options struct {
	// Dataset is the dataset the model takes (data.Datasets), stored in
	// the model file so that eval and a fine-tuning recipe check it.
	Dataset string
	// Job names the model file's job (default "import").
	Job string
	// Mean and Std state how the model's training normalized its input
	// outside the graph (one value per channel, or one for all): the model
	// file keeps (x − Mean)/Std as its input normalization (x: pixel/255,
	// as lathe reads images). A normalization inside the graph (Sub, Div
	// or Mul of the input by per-channel constants) is imported as well.
	Mean, Std []float32
	// imageOut lets a graph end in an image (its values NHWC in lathe's
	// output): ONNX's operator tests do.
	imageOut bool
}

// Model is an imported model.
type Model struct {
	// Net is the network lathe made of the ONNX graph.
	Net graph.Network
	// File is its model file: the network's layer table and its weights
	// in lathe's layout (convolution filters NHWC, batch norms with their
	// running statistics).
	File *checkpoint.File
	// Opset and Producer are the ONNX file's.
	Opset    int64
	Producer string
}

// NodeError is an import error at one node of the ONNX graph.
type NodeError struct {
	Node string // the node's name (or its first output's when unnamed)
	Op   string
	Err  error
}

func (e *NodeError) Error() string { return fmt.Sprintf("onnx: node %q (%s): %v", e.Node, e.Op, e.Err) }
func (e *NodeError) Unwrap() error { return e.Err }

// ReadFile imports the ONNX model at path; errors name the file.
func ReadFile(path string, opt Options) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := Import(b, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Import makes a lathe network and model file of a float ONNX model (as
// PyTorch's torch.onnx.export writes them, opsets 7 to 21): convolutions,
// batch norms, linear layers (Gemm, MatMul and its bias Add), ReLU and
// ReLU6 (Clip) joined to the layer before them, max and average pooling
// (a zero Pad before an average pooling or a convolution joins it),
// global average pooling (and ReduceMean over the image), flattening
// (Flatten, or a Reshape to [batch, features]) and residual additions.
// Constant subgraphs are computed at import. Anything else — an operator,
// an attribute value, a graph shape lathe cannot express — is refused
// with a NodeError naming the node, never approximated.
func Import(b []byte, opt Options) (*Model, error) {
	var mp onnxpb.ModelProto
	if err := proto.Unmarshal(b, &mp); err != nil {
		return nil, fmt.Errorf("onnx: not an ONNX model: %w", err)
	}
	opset := int64(0)
	for _, o := range mp.GetOpsetImport() {
		if d := o.GetDomain(); d == "" || d == "ai.onnx" {
			opset = o.GetVersion()
		}
	}
	if opset == 0 {
		return nil, errors.New("onnx: the model imports no version of the standard operator set")
	}
	g := mp.GetGraph()
	if g == nil {
		return nil, errors.New("onnx: the model has no graph")
	}
	im := &importer{consts: map[string]*tensor{}, vals: map[string]*value{}, uses: map[string]int{},
		params: map[string][]float32{}, taken: map[string]bool{graph.Input: true}, nodeOf: map[string]string{}, counts: map[string]int{}, imageOut: opt.imageOut,
		mean: opt.Mean, std: opt.Std}
	if err := im.graph(g); err != nil {
		return nil, err
	}
	job := opt.Job
	if job == "" {
		job = "import"
	}
	f, err := im.modelFile(job, opt.Dataset)
	if err != nil {
		return nil, err
	}
	return &Model{Net: im.net, File: f, Opset: opset, Producer: strings.TrimSpace(mp.GetProducerName() + " " + mp.GetProducerVersion())}, nil
}

// importer walks an ONNX graph into a lathe network.
type importer struct {
	consts map[string]*tensor
	vals   map[string]*value
	uses   map[string]int // readers of each ONNX value (a graph output counts)
	net    graph.Network
	// params holds every parameter and buffer by its lathe name, in
	// lathe's layout.
	params map[string][]float32
	taken  map[string]bool
	nodeOf map[string]string // layer → the node that made it
	counts map[string]int    // per kind, for names
	// imageOut: Options.imageOut.
	imageOut bool
	// mean, std: Options.Mean and Std.
	mean, std []float32
}

// value is an ONNX tensor that lathe computes: a layer's output, seen the
// way the ONNX graph holds it.
type value struct {
	layer string      // the lathe layer that computes it (graph.Input: the network's input)
	shape graph.Shape // that layer's output, NHWC
	// rank 4: an image [batch, C, H, W]; rank 3: a sequence [batch, T,
	// D]; rank 2: [batch, features]. A
	// rank-2 value of an image layer is its flattening in ONNX's order:
	// feature k is the layer's element perm[k] (nil: the same order).
	rank int
	perm []int
	// sole: the only way out of the layer (no other reader has it), so an
	// activation can join the layer.
	sole bool
	// pad is zero padding a Pad node added on each side of the image,
	// pending for the convolution or average pooling that reads it.
	pad     int
	padNode string
	// pooled is the layer a max pooling read when nothing else read it:
	// an activation after the pooling joins that layer (they commute).
	pooled string
	// ids: the network's byte ids [batch, T] (rank 3, {1, T, 1}).
	ids bool
	// tmajor: a sequence in ONNX's time-major order [T, batch, D] (a
	// Transpose of [batch, T, D], as nn.MultiheadAttention and PyTorch's
	// batch_first=False layers take it); lathe's layer is the same.
	tmajor bool
	// pend is a computation not yet made a layer (seq.go): a projection,
	// or a step of the attention, GELU or LayerNorm patterns.
	pend any
}

// graph converts the nodes in order (ONNX lists them topologically).
func (im *importer) graph(g *onnxpb.GraphProto) error {
	for _, t := range g.GetInitializer() {
		c, err := readTensor(t)
		if err != nil {
			return fmt.Errorf("onnx: initializer: %w", err)
		}
		im.consts[t.GetName()] = c
	}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			im.uses[in]++
		}
	}
	for _, o := range g.GetOutput() {
		im.uses[o.GetName()]++
	}
	if err := im.input(g); err != nil {
		return err
	}
	for _, n := range g.GetNode() {
		if err := im.node(n); err != nil {
			var ne *NodeError
			if errors.As(err, &ne) {
				return err
			}
			return &NodeError{Node: nodeName(n), Op: n.GetOpType(), Err: err}
		}
	}
	return im.output(g)
}

func nodeName(n *onnxpb.NodeProto) string {
	if n.GetName() != "" {
		return n.GetName()
	}
	if len(n.GetOutput()) > 0 {
		return n.GetOutput()[0]
	}
	return "?"
}

// input reads the graph's one non-constant input: float [batch, C, H, W]
// or [batch, features].
func (im *importer) input(g *onnxpb.GraphProto) error {
	var ins []*onnxpb.ValueInfoProto
	for _, in := range g.GetInput() {
		if _, init := im.consts[in.GetName()]; !init {
			ins = append(ins, in)
		}
	}
	if len(ins) != 1 {
		return fmt.Errorf("onnx: the graph has %d inputs besides its weights; lathe's networks take one", len(ins))
	}
	in := ins[0]
	tt := in.GetType().GetTensorType()
	if tt == nil || (tt.GetElemType() != typeFloat && tt.GetElemType() != typeInt64) {
		return fmt.Errorf("onnx: input %q is not a float tensor nor int64 ids (element type %d)", in.GetName(), tt.GetElemType())
	}
	var dims []int
	for k, d := range tt.GetShape().GetDim() {
		v := d.GetDimValue()
		if k > 0 && (v <= 0 || v > 1<<16) {
			return fmt.Errorf("onnx: input %q has size %d along axis %d (only the batch may vary; at most 65536)", in.GetName(), v, k)
		}
		dims = append(dims, int(v))
	}
	if !fits(dims[min(1, len(dims)):]) {
		return fmt.Errorf("onnx: input %q of shape %v: more than %d values per sample", in.GetName(), dims, maxElems)
	}
	v := &value{layer: graph.Input, rank: len(dims), sole: true}
	switch {
	case tt.GetElemType() == typeInt64 && len(dims) == 2: // byte ids [batch, T]
		v.shape, v.rank, v.ids = graph.Shape{H: 1, W: dims[1], C: 1}, 3, true
	case tt.GetElemType() == typeInt64:
		return fmt.Errorf("onnx: input %q: int64 ids of shape %v; lathe takes byte ids [batch, T]", in.GetName(), dims)
	case len(dims) == 4:
		v.shape = graph.Shape{H: dims[2], W: dims[3], C: dims[1]}
	case len(dims) == 2:
		v.shape = graph.Shape{H: 1, W: 1, C: dims[1]}
	default:
		return fmt.Errorf("onnx: input %q has shape %v; lathe takes images [batch, C, H, W] or vectors [batch, features]", in.GetName(), dims)
	}
	im.net.Input = v.shape
	im.vals[in.GetName()] = v
	if len(im.mean)+len(im.std) > 0 {
		if v.ids {
			return errors.New("onnx: an input normalization for a model of byte ids")
		}
		z := &graph.Normalization{Mean: spread(im.mean, v.shape.C, 0), Std: spread(im.std, v.shape.C, 1)}
		if z.Mean == nil || z.Std == nil {
			return fmt.Errorf("onnx: a normalization of %d means and %d deviations for %d input channels (give one per channel, or one)", len(im.mean), len(im.std), v.shape.C)
		}
		im.net.Normalize = z
	}
	return nil
}

// spread makes v one value per channel (one value: for all; none: def).
func spread(v []float32, c int, def float32) []float32 {
	switch len(v) {
	case 0:
		return slices.Repeat([]float32{def}, c)
	case 1:
		return slices.Repeat(v, c)
	case c:
		return slices.Clone(v)
	}
	return nil
}

// output makes the graph's one output the network's: [batch, classes].
func (im *importer) output(g *onnxpb.GraphProto) error {
	if len(g.GetOutput()) != 1 {
		return fmt.Errorf("onnx: the graph has %d outputs; lathe's networks give one, the class scores", len(g.GetOutput()))
	}
	name := g.GetOutput()[0].GetName()
	v := im.vals[name]
	if v == nil {
		return fmt.Errorf("onnx: output %q is a constant or was never computed", name)
	}
	if p, ok := v.pend.(*softmaxOut); ok { // probabilities
		v, im.net.Softmax = p.x, true
	}
	v, err := im.ready(v)
	if err != nil {
		return fmt.Errorf("onnx: output %q: %w", name, err)
	}
	switch {
	case v.layer == graph.Input || len(im.net.Layers) == 0:
		return fmt.Errorf("onnx: output %q is the input: the graph computes nothing lathe can train", name)
	case v.layer != im.net.Layers[len(im.net.Layers)-1].Name:
		return fmt.Errorf("onnx: output %q comes from layer %s, not the graph's last computation", name, v.layer)
	case v.rank == 4 && (v.shape.H != 1 || v.shape.W != 1) && !im.imageOut:
		return fmt.Errorf("onnx: output %q is an image %dx%dx%d; lathe's networks end in the class scores [batch, classes]", name, v.shape.C, v.shape.H, v.shape.W)
	case v.perm != nil:
		return fmt.Errorf("onnx: output %q flattens an image in ONNX's channel-first order, which lathe's last layer does not give", name)
	case v.tmajor:
		return fmt.Errorf("onnx: output %q is time-major [T, batch, classes]; lathe's language models give [batch, T, classes] (transpose it back before the output)", name)
	}
	im.net.Classes = v.shape.Size()
	if v.rank == 3 { // scores at every position: a language model
		im.net.Classes, im.net.PerPosition = v.shape.C, true
	}
	return nil
}

// node converts one node.
func (im *importer) node(n *onnxpb.NodeProto) error {
	if d := n.GetDomain(); d != "" && d != "ai.onnx" {
		return fmt.Errorf("operator domain %q: lathe imports the standard operators only", d)
	}
	outs := n.GetOutput()
	if len(outs) == 0 {
		return errors.New("a node without outputs")
	}
	for _, o := range outs[1:] {
		if o != "" && im.uses[o] > 0 {
			return fmt.Errorf("its output %q is read; lathe computes only the first output (%s)", o, outs[0])
		}
	}
	if n.GetOpType() == "Constant" {
		t, err := constantValue(n)
		if err != nil {
			return err
		}
		im.consts[outs[0]] = t
		return nil
	}
	// A node of constants only is computed now.
	var cin []*tensor
	allConst := true
	for _, in := range n.GetInput() {
		if in == "" {
			cin = append(cin, nil)
			continue
		}
		c, ok := im.consts[in]
		if !ok {
			allConst = false
			break
		}
		cin = append(cin, c)
	}
	if allConst && foldable[n.GetOpType()] {
		t, err := fold(n, cin)
		if err != nil {
			return fmt.Errorf("computing it from constants: %w", err)
		}
		im.consts[outs[0]] = t
		return nil
	}
	if n.GetOpType() == "Shape" { // of a computed value: [batch, …]
		v := im.raw(n, 0)
		if v == nil {
			return fmt.Errorf("input %q is never computed before it", n.GetInput()[0])
		}
		im.consts[outs[0]] = shapeOf(v)
		return nil
	}
	conv := converters[n.GetOpType()]
	if conv == nil {
		return fmt.Errorf("lathe cannot express operator %s (it imports %s)", n.GetOpType(), supported())
	}
	v, err := conv(im, n)
	if err != nil {
		return err
	}
	im.vals[outs[0]] = v
	return nil
}

// shapeOf is a value's ONNX shape, its batch dimension unknown.
func shapeOf(v *value) *tensor {
	if r, ok := v.pend.(*rows); ok { // [T·batch, E]
		return &tensor{isInt: true, dims: []int{2}, i: []int64{batchTimes(int64(r.x.shape.W)), int64(r.x.shape.C)}}
	}
	switch {
	case v.ids:
		return &tensor{isInt: true, dims: []int{2}, i: []int64{batch, int64(v.shape.W)}}
	case v.rank == 3 && v.tmajor:
		return &tensor{isInt: true, dims: []int{3}, i: []int64{int64(v.shape.W), batch, int64(v.shape.C)}}
	case v.rank == 3:
		return &tensor{isInt: true, dims: []int{3}, i: []int64{batch, int64(v.shape.W), int64(v.shape.C)}}
	case v.rank == 2:
		return &tensor{isInt: true, dims: []int{2}, i: []int64{batch, int64(v.shape.Size())}}
	}
	return &tensor{isInt: true, dims: []int{4}, i: []int64{batch, int64(v.shape.C), int64(v.shape.H), int64(v.shape.W)}}
}

// constantValue is a Constant node's tensor.
func constantValue(n *onnxpb.NodeProto) (*tensor, error) {
	for _, a := range n.GetAttribute() {
		switch a.GetName() {
		case "value":
			return readTensor(a.GetT())
		case "value_float":
			return &tensor{f: []float32{a.GetF()}}, nil
		case "value_floats":
			return &tensor{dims: []int{len(a.GetFloats())}, f: a.GetFloats()}, nil
		case "value_int":
			return &tensor{isInt: true, i: []int64{a.GetI()}}, nil
		case "value_ints":
			return &tensor{isInt: true, dims: []int{len(a.GetInts())}, i: a.GetInts()}, nil
		}
	}
	return nil, errors.New("a Constant without a tensor, float or integer value")
}

// val is the computed value of input k (an error if it is a constant or
// unknown).
func (im *importer) val(n *onnxpb.NodeProto, k int) (*value, error) {
	ins := n.GetInput()
	if k >= len(ins) || ins[k] == "" {
		return nil, fmt.Errorf("input %d is missing", k)
	}
	v := im.vals[ins[k]]
	if v == nil {
		if _, c := im.consts[ins[k]]; c {
			return nil, fmt.Errorf("input %q is a constant where lathe needs a computed value", ins[k])
		}
		return nil, fmt.Errorf("input %q is never computed before it", ins[k])
	}
	return im.ready(v)
}

// konst is the constant input k, nil when absent (optional); an input
// that is computed is an error.
func (im *importer) konst(n *onnxpb.NodeProto, k int) (*tensor, error) {
	ins := n.GetInput()
	if k >= len(ins) || ins[k] == "" {
		return nil, nil
	}
	c := im.consts[ins[k]]
	if c == nil {
		return nil, fmt.Errorf("input %q is computed from the network's input; lathe needs it constant (a weight)", ins[k])
	}
	return c, nil
}

// modelFile builds the training graph of the network, sets its weights
// and makes the model file.
func (im *importer) modelFile(job, dataset string) (*checkpoint.File, error) {
	if err := im.net.Validate(); err != nil {
		var le *graph.LayerError
		if errors.As(err, &le) && im.nodeOf[le.Layer] != "" {
			return nil, fmt.Errorf("onnx: node %q: %w", im.nodeOf[le.Layer], err)
		}
		return nil, fmt.Errorf("onnx: %w", err)
	}
	m, err := model.FromNetwork(im.net, "", 0)
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	set := func(name string, dst []float32) error {
		src, ok := im.params[name]
		if !ok || len(src) != len(dst) {
			return fmt.Errorf("onnx: parameter %s: %d values imported, the network needs %d", name, len(src), len(dst))
		}
		copy(dst, src)
		return nil
	}
	for _, p := range m.Params {
		if err := set(p.Name, p.Data()); err != nil {
			return nil, err
		}
	}
	for _, b := range m.Buffers {
		if err := set(b.Name, b.Data()); err != nil {
			return nil, err
		}
	}
	return rundir.ExportModel(m, job, dataset, data.FileOptions{})
}

// ReadModel reads a lathe model file, or imports an ONNX model (a path
// ending in .onnx) as one for the given dataset (its job named after the
// file), with the sizes and digest a read file has: every command and
// recipe field that takes a model file takes either through it.
func ReadModel(path, dataset string) (*checkpoint.File, error) {
	return ReadModelWith(path, Options{Dataset: dataset})
}

// ReadModelWith is ReadModel with import options: an ONNX file is
// imported with them (its job named after the file unless opt.Job says);
// a model file, which keeps the normalization it was trained with, is
// refused one (opt.Mean, opt.Std).
func ReadModelWith(path string, opt Options) (*checkpoint.File, error) {
	if !strings.EqualFold(filepath.Ext(path), ".onnx") {
		if len(opt.Mean) > 0 || len(opt.Std) > 0 {
			return nil, fmt.Errorf("%s: a model file keeps the input normalization it was trained with; a mean and std apply to an ONNX file or a network to build", path)
		}
		return checkpoint.Read(path)
	}
	if opt.Job == "" {
		opt.Job = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	m, err := ReadFile(path, opt)
	if err != nil {
		return nil, err
	}
	if _, err := checkpoint.Encode(m.File); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m.File, nil
}
