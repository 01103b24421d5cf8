package trainer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
)

// DeviceNet is a network of graph.Layers (linear, convolution with
// stride and padding, max-pooling, batch norm, residual addition, global
// average pooling and flatten: what a model's graph.Network holds) whose
// whole training step — forward, loss, backward, masks, fake quantization,
// distillation loss and the momentum update — runs on a compute.Device:
// parameters, optimizer state, batch norms' statistics, activations and
// gradients live in device Buffers, and the host only uploads inputs and
// downloads metrics and weights.
//
// Parameters are held in the order of the network's graph.Params (a
// model's Params): weights [out, in] row-major for linear layers
// (PyTorch's nn.Linear layout) and [f, k, k, c] for convolutions (lathe's
// model layout), then biases; a batch norm's scale and shift. Activations
// are NHWC, flattened as they lie.
type DeviceNet struct {
	dev    compute.Device
	layers []devLayer
	params []devParam
	batch  int
	in     int // input features per sample
	// probe keeps batch norms' running statistics and observers as they
	// are in training passes (the gradient tests' loss probes).
	probe bool
	// bnFrozen normalizes by the running statistics in training too
	// (model.BNControl).
	bnFrozen bool

	x, labels, stats compute.Buffer
	// Shared scratch: a convolution's patch gradients, and a gradient to
	// be added to one already written (a layer read by several).
	dcol, spare compute.Buffer
	zeros       compute.Buffer // a bias of zeros (ReLU after a convolution without bias)
	// Dropout in training: on the input (SetDropout) and after each layer
	// at its graph.Layer rate, with masks drawn on the device from (seed,
	// step, layer).
	dropIn   float32
	dropSeed uint64
	inMask   compute.Buffer
	all      []compute.Buffer
}

// devLayer is a layer of a DeviceNet and its buffers.
type devLayer struct {
	graph.Layer
	from      []int // the layers it reads (−1: the network's input)
	n         int   // output elements per sample
	w, b      int   // its weight (a batch norm's scale) and bias (shift) in params; −1: none
	act, grad compute.Buffer
	col, arg  compute.Buffer // a convolution's patches; max-pooling's maxima
	// A batch norm's batch mean and 1/σ (training) or its running mean's
	// copy and 1/σ of the running variance (evaluation), and its running
	// statistics.
	mean, inv, rmean, rvar compute.Buffer
	hidMask                compute.Buffer // dropout (nil where none)
	// An observed layer's quantized output (what its readers read while
	// quantization is on), the straight-through mask, and its observer on
	// the device (compute.Device.ActQuant's layout); aq is its host side.
	q, inside, obs compute.Buffer
	aq             *model.Observer
}

// devParam is a parameter of a DeviceNet: its value, momentum, gradient
// and mask (1 kept, 0 pruned), and for a linear or convolution weight its
// fake-quantized copy and scales.
type devParam struct {
	graph.Param
	n, rows       int // elements; output rows (the first dimension)
	decay         bool
	w, v, g, mask compute.Buffer
	wq, amax      compute.Buffer
	// A convolution trained with its batch norm folded in (model.Fold):
	// the factors s = γ/σ of the batch norm fold (its layer), and W·s.
	fold  int
	s, wf compute.Buffer
	// quant is the levels each side (2^(bits−1) − 1; 0: float weights),
	// perTensor whether one scale covers the whole weight.
	quant     float32
	perTensor bool
}

// MLPLayers are the layers of a ReLU MLP of the given widths (input
// first), with dropout at rate after every hidden layer.
func MLPLayers(sizes []int, dropout float64) []graph.Layer {
	var ls []graph.Layer
	for l := 0; l+1 < len(sizes); l++ {
		L := graph.Layer{Name: fmt.Sprintf("fc%d", l+1), Kind: graph.Linear, In: graph.Shape{H: 1, W: 1, C: sizes[l]}, Out: sizes[l+1], Act: graph.Identity}
		if l+2 < len(sizes) {
			L.Act, L.Dropout = graph.ReLU, dropout
		}
		ls = append(ls, L)
	}
	return ls
}

// NewDeviceMLP allocates a ReLU MLP of the given widths (input first) on
// dev for steps of batch samples, initialized from seed (He-uniform
// weights, zero biases; on the host, then uploaded, so every device starts
// from the same bits).
func NewDeviceMLP(dev compute.Device, sizes []int, batch int, seed uint64) (*DeviceNet, error) {
	if len(sizes) < 2 {
		return nil, fmt.Errorf("trainer: device MLP needs at least two layer sizes (sizes %v)", sizes)
	}
	for _, s := range sizes {
		if s < 1 {
			return nil, fmt.Errorf("trainer: device MLP layer size %d in %v", s, sizes)
		}
	}
	return NewDeviceNet(dev, MLPLayers(sizes, 0), batch, seed)
}

// NewDeviceNet allocates a network of layers on dev for steps of batch
// samples, initialized from seed like NewDeviceMLP (batch norms: scale 1,
// shift 0, running mean 0 and variance 1).
func NewDeviceNet(dev compute.Device, layers []graph.Layer, batch int, seed uint64) (m *DeviceNet, err error) {
	if len(layers) == 0 || batch < 1 {
		return nil, fmt.Errorf("trainer: a device network needs layers and a positive batch (%d layers, batch %d)", len(layers), batch)
	}
	m = &DeviceNet{dev: dev, batch: batch}
	if m.layers, m.in, err = deviceLayers(layers); err != nil {
		return nil, err
	}
	alloc := func(n int) compute.Buffer {
		if err != nil {
			return nil
		}
		var b compute.Buffer
		b, err = dev.Alloc(n)
		if err == nil {
			m.all = append(m.all, b)
		}
		return b
	}
	var dcol, spare, zeros int
	for i := range m.layers {
		L := &m.layers[i]
		L.act, L.grad = alloc(batch*L.n), alloc(batch*L.n)
		spare = max(spare, batch*L.n)
		switch L.Kind {
		case graph.Conv:
			if n := batch * L.n / L.Out * L.Kernel * L.Kernel * L.In.C; !pointwise(L.Layer) && !depthwise(L.Layer) {
				L.col = alloc(n)
				dcol = max(dcol, n)
			}
			zeros = max(zeros, L.Out)
		case graph.MaxPool:
			L.arg = alloc(batch * L.n)
		case graph.BatchNorm:
			c := L.In.C
			L.mean, L.inv, L.rmean, L.rvar = alloc(c), alloc(c), alloc(c), alloc(c)
			if err == nil {
				dev.Fill(L.rvar, c, 1)
			}
		}
		if L.Dropout > 0 {
			L.hidMask = alloc(batch * L.n)
		}
		L.w, L.b = -1, -1
		for _, p := range L.Params() {
			if p.Bias {
				L.b = len(m.params)
			} else {
				L.w = len(m.params)
			}
			m.params = append(m.params, m.newParam(p, alloc))
		}
	}
	m.dcol, m.spare, m.zeros = alloc(dcol), alloc(spare), alloc(zeros)
	m.x, m.labels, m.stats = alloc(batch*m.in), alloc(batch), alloc(3)
	if err == nil && len(m.params) == 0 {
		err = errors.New("a network without parameters")
	}
	if err == nil {
		err = m.initialize(seed)
	}
	if err != nil {
		m.Free()
		return nil, fmt.Errorf("trainer: device network on %s: %w", dev.Name(), err)
	}
	return m, nil
}

// newParam allocates a parameter's buffers (its mask all ones).
func (m *DeviceNet) newParam(p graph.Param, alloc func(int) compute.Buffer) devParam {
	n := int(p.Size())
	d := devParam{Param: p, n: n, rows: p.Shape[0], decay: true, fold: -1}
	d.w, d.v, d.g, d.mask = alloc(n), alloc(n), alloc(n), alloc(n)
	if d.mask != nil {
		m.dev.Fill(d.mask, n, 1)
	}
	if quantizable(p) {
		d.wq, d.amax = alloc(n), alloc(d.rows)
	}
	return d
}

// quantizable says whether p is a linear or convolution weight (what
// quantization and fake quantization act on).
func quantizable(p graph.Param) bool { return !p.Bias && !p.Norm }

// pointwise says whether a convolution reads its input as its own patches
// (1×1, stride 1, no padding, one group): no im2col.
func pointwise(L graph.Layer) bool {
	k, s, p := L.Window()
	return k == 1 && s == 1 && p == 0 && L.GroupCount() == 1
}

// depthwise says whether a convolution has a filter per channel
// (compute.Device.DepthwiseConv): no patches either.
func depthwise(L graph.Layer) bool {
	return L.GroupCount() > 1 && L.GroupCount() == L.In.C && L.Out == L.In.C
}

// initialize sets He-uniform weights drawn from seed in parameter order
// (on the host, then uploaded, so every device starts from the same bits)
// and a batch norm's scale to 1; the rest stays 0.
func (m *DeviceNet) initialize(seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 0x6c617468))
	for _, p := range m.params {
		switch {
		case p.Norm && !p.Bias:
			m.dev.Fill(p.w, p.n, 1)
		case quantizable(p.Param):
			w := make([]float32, p.n)
			lim := math.Sqrt(6 / float64(p.n/p.rows))
			for i := range w {
				w[i] = float32((2*r.Float64() - 1) * lim)
			}
			if err := m.dev.Upload(p.w, w); err != nil {
				return err
			}
		}
	}
	return nil
}

// deviceLayers checks that the device path has every layer's kind,
// geometry and activation and that the layers connect, and returns them
// with their inputs resolved and the input's elements per sample.
func deviceLayers(layers []graph.Layer) ([]devLayer, int, error) {
	input := layers[0].In.Size() // what the network takes: what its first layer does
	index := map[string]int{graph.Input: -1}
	out := make([]devLayer, len(layers))
	for i, L := range layers {
		fail := func(what string, args ...any) ([]devLayer, int, error) {
			return nil, 0, &graph.LayerError{Layer: L.Name, Err: fmt.Errorf("trainer: layer %d (%s): %s", i, L.Name, fmt.Sprintf(what, args...))}
		}
		k, _, _ := L.Window()
		switch {
		case L.Kind == graph.Conv && L.GroupCount() != 1 && !depthwise(L):
			return fail("the device path has no grouped convolutions but depthwise ones yet")
		case !slices.Contains([]graph.Kind{graph.Linear, graph.Conv, graph.MaxPool, graph.AvgPool, graph.BatchNorm, graph.Add, graph.GlobalAvgPool, graph.Flatten}, L.Kind):
			return fail("the device path has no %s layer", L.Kind)
		case L.Act != graph.ReLU && L.Act != graph.ReLU6 && L.Act != graph.Identity && L.Act != "":
			return fail("the device path has no %s activation", L.Act)
		case (L.Kind == graph.Conv || L.Kind == graph.MaxPool || L.Kind == graph.AvgPool) && (k < 1 || L.In.H+2*L.Pad < k || L.In.W+2*L.Pad < k):
			return fail("a %s window of %d over %v", L.Kind, k, L.In)
		}
		d := devLayer{Layer: L, n: L.Output().Size()}
		names := L.Inputs
		if len(names) == 0 {
			names = []string{graph.Input}
			if i > 0 {
				names = []string{layers[i-1].Name}
			}
		}
		for _, name := range names {
			j, ok := index[name]
			if !ok {
				return fail("reads %q, which no earlier layer is", name)
			}
			size := input
			if j >= 0 {
				size = out[j].n
			}
			if size != L.In.Size() || size < 1 {
				return fail("takes %d inputs per sample, %s gives %d", L.In.Size(), name, size)
			}
			d.from = append(d.from, j)
		}
		if (L.Kind == graph.Add) != (len(d.from) > 1) {
			return fail("a %s layer with %d inputs", L.Kind, len(d.from))
		}
		if d.n < 1 {
			return fail("no outputs")
		}
		index[L.Name] = i
		out[i] = d
	}
	return out, input, nil
}

// Free returns the network's buffers to the device.
func (m *DeviceNet) Free() {
	for _, b := range m.all {
		if b != nil {
			m.dev.Free(b)
		}
	}
	m.all = nil
}

// classes is the width of the last layer's output.
func (m *DeviceNet) classes() int { return m.layers[len(m.layers)-1].n }

// SetParams uploads every parameter's values, in the network's parameter
// order (a model's Params), replacing the initialization.
func (m *DeviceNet) SetParams(vals [][]float32) error {
	if len(vals) != len(m.params) {
		return fmt.Errorf("trainer: %d parameters for a network of %d", len(vals), len(m.params))
	}
	for i, p := range m.params {
		if len(vals[i]) != p.n {
			return fmt.Errorf("trainer: parameter %s: %d values, want %d", p.Name, len(vals[i]), p.n)
		}
		if err := m.dev.Upload(p.w, vals[i]); err != nil {
			return err
		}
	}
	return nil
}

// SetQuant sets parameter name's quantization: bits 2…8 (0: float), one
// scale per output row (filter) or, perTensor, one for the whole weight.
func (m *DeviceNet) SetQuant(name string, bits int, perTensor bool) error {
	i := slices.IndexFunc(m.params, func(p devParam) bool { return p.Name == name })
	switch {
	case i < 0 || !quantizable(m.params[i].Param):
		return fmt.Errorf("trainer: the network has no weight %q to quantize", name)
	case bits != 0 && (bits < 2 || bits > 8):
		return fmt.Errorf("trainer: quantization to %d bits: 2 to 8", bits)
	}
	p := &m.params[i]
	p.quant, p.perTensor = 0, perTensor
	if bits > 0 {
		p.quant = float32(int(1)<<(bits-1) - 1)
	}
	return nil
}

// SetDecay says which parameters weight decay acts on (a flag per
// parameter; nil: all of them, the default).
func (m *DeviceNet) SetDecay(decay []bool) error {
	if decay != nil && len(decay) != len(m.params) {
		return fmt.Errorf("trainer: %d weight decay flags for %d parameters", len(decay), len(m.params))
	}
	for i := range m.params {
		m.params[i].decay = decay == nil || decay[i]
	}
	return nil
}

// SetDropout sets the training dropout rate on the input (0: none; the
// layers' own rates are in their graph.Layer); masks are drawn from seed and
// the step.
func (m *DeviceNet) SetDropout(input float64, seed uint64) error {
	if !(input >= 0 && input < 1) {
		return fmt.Errorf("trainer: input dropout rate %v outside [0, 1)", input)
	}
	for _, L := range m.layers {
		if !(L.Dropout >= 0 && L.Dropout < 1) {
			return fmt.Errorf("trainer: layer %s: dropout rate %v outside [0, 1)", L.Name, L.Dropout)
		}
	}
	m.dropIn, m.dropSeed = float32(input), seed
	if m.dropIn > 0 && m.inMask == nil {
		b, err := m.dev.Alloc(m.batch * m.in)
		if err != nil {
			return err
		}
		m.inMask = b
		m.all = append(m.all, b)
	}
	return nil
}

// drops says whether the network draws dropout masks in training.
func (m *DeviceNet) drops() bool {
	return m.dropIn > 0 || slices.ContainsFunc(m.layers, func(L devLayer) bool { return L.Dropout > 0 })
}

// weights returns the values the forward pass uses for parameter p:
// folded with its batch norm's factors when trained so, and quantized when
// QAT is on for it.
func (m *DeviceNet) weights(p int) compute.Buffer {
	switch prm := &m.params[p]; {
	case prm.quant != 0:
		return prm.wq
	case prm.wf != nil:
		return prm.wf
	default:
		return prm.w
	}
}

// quantize computes the folded and fake-quantized weights a pass uses.
func (m *DeviceNet) quantize() {
	for _, p := range m.params {
		src := p.w
		if p.wf != nil {
			bn := &m.layers[p.fold]
			m.dev.BNScale(p.s, m.params[bn.w].w, bn.rvar, p.rows, graph.BNEpsilon)
			m.dev.ScaleRows(p.wf, p.w, p.s, p.rows, p.n/p.rows)
			src = p.wf
		}
		if p.quant == 0 {
			continue
		}
		rows, cols := p.rows, p.n/p.rows
		if p.perTensor {
			rows, cols = 1, p.n
		}
		m.dev.RowAbsMax(p.amax, src, rows, cols)
		m.dev.FakeQuant(p.wq, src, p.amax, rows, cols, p.quant)
	}
}

// setCompression allocates what a model's quantization-aware training
// with batch norms folded (mod.Fold) and activation observers
// (mod.ActQuant) need on the device.
func (m *DeviceNet) setCompression(mod *model.Model) error {
	index := map[string]int{}
	for i, L := range m.layers {
		index[L.Name] = i
	}
	alloc := func(n int) (compute.Buffer, error) {
		b, err := m.dev.Alloc(n)
		if err == nil {
			m.all = append(m.all, b)
		}
		return b, err
	}
	var err error
	for conv, bn := range mod.Fold {
		i, ok := index[conv]
		j, okb := index[bn]
		if !ok || !okb || m.layers[i].Kind != graph.Conv || m.layers[j].Kind != graph.BatchNorm {
			return fmt.Errorf("trainer: no convolution %s with batch norm %s to fold", conv, bn)
		}
		p := &m.params[m.layers[i].w]
		p.fold = j
		if p.s, err = alloc(p.rows); err != nil {
			return err
		}
		if p.wf, err = alloc(p.n); err != nil {
			return err
		}
	}
	for name, obs := range mod.ActQuant {
		i, ok := index[name]
		if !ok {
			return fmt.Errorf("trainer: no layer %s to observe", name)
		}
		L := &m.layers[i]
		if L.Kind == graph.MaxPool {
			continue // the CPU graph observes no pooling either
		}
		L.aq = obs
		n := m.batch * L.n
		for _, b := range []*compute.Buffer{&L.q, &L.inside} {
			if *b, err = alloc(n); err != nil {
				return err
			}
		}
		if L.obs, err = alloc(5); err != nil {
			return err
		}
	}
	return nil
}

// output is what layer j's readers read: its quantized output while its
// observer quantizes, else its output.
func (m *DeviceNet) output(j int) compute.Buffer {
	if L := &m.layers[j]; L.aq != nil && L.aq.Enabled {
		return L.q
	}
	return m.layers[j].act
}

// dropSeedFor is the mask seed of a step and layer (−1: the input).
func (m *DeviceNet) dropSeedFor(step int64, layer int) uint64 {
	return m.dropSeed ^ uint64(step)*0x9e3779b97f4a7c15 ^ uint64(layer+2)<<56
}

// DeviceStep is one step's settings.
type DeviceStep struct {
	// WeightDecay acts on the parameters SetDecay names (all by default).
	LR, Momentum, WeightDecay float32
	// Teacher logits for the batch (nil: no distillation), temperature and
	// the distillation term's weight.
	Teacher  compute.Buffer
	T, Alpha float32
	// Step numbers the step for dropout masks.
	Step int64
}

// step trains on the batch in m.x / m.labels (m.batch samples); the
// summed loss, correct count and distillation term go into m.stats.
func (m *DeviceNet) step(s DeviceStep) {
	m.gradients(s)
	m.update(s)
}

// update applies the momentum step to every parameter.
func (m *DeviceNet) update(s DeviceStep) {
	for _, p := range m.params {
		wd := s.WeightDecay
		if !p.decay {
			wd = 0
		}
		m.dev.SGD(p.w, p.v, p.g, p.mask, p.n, s.LR, s.Momentum, wd)
	}
}

// Params downloads every parameter's values, in the network's parameter
// order (for checkpoints and tests).
func (m *DeviceNet) Params() ([][]float32, error) {
	out := make([][]float32, len(m.params))
	for i, p := range m.params {
		out[i] = make([]float32, p.n)
		if err := m.dev.Download(out[i], p.w); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DeviceData is a data set resident on a device: pixels/255 as float32 and
// labels as int32, uploaded once.
type DeviceData struct {
	X, Y     compute.Buffer
	N, Width int
}

// UploadSet puts a data set on dev.
func UploadSet(dev compute.Device, s *data.Set) (*DeviceData, error) {
	n, f := s.Len(), s.Features()
	x := make([]float32, n*f)
	if s.Floats != nil {
		copy(x, s.Floats[:n*f])
	} else {
		for i, p := range s.Images[:n*f] {
			x[i] = float32(p) * (1.0 / 255) // as data.Batcher scales
		}
	}
	y := make([]int32, n)
	for i, l := range s.Labels {
		if int(l) >= s.Classes {
			return nil, fmt.Errorf("trainer: %s: sample %d has label %d of %d classes", s.Name, i, l, s.Classes)
		}
		y[i] = int32(l)
	}
	d := &DeviceData{N: n, Width: f}
	var err error
	if d.X, err = dev.Alloc(n * f); err == nil {
		if d.Y, err = dev.Alloc(n); err == nil {
			if err = dev.Upload(d.X, x); err == nil {
				err = dev.UploadInt32(d.Y, y)
			}
		}
	}
	if err != nil {
		d.Free(dev)
		return nil, fmt.Errorf("trainer: upload %s to %s: %w", s.Name, dev.Name(), err)
	}
	return d, nil
}

// Free returns the set's buffers to dev.
func (d *DeviceData) Free(dev compute.Device) {
	for _, b := range []compute.Buffer{d.X, d.Y} {
		if b != nil {
			dev.Free(b)
		}
	}
	d.X, d.Y = nil, nil
}

// Evaluate returns top-1 accuracy and mean cross-entropy on d, computed in
// batches of the network's batch size.
func (m *DeviceNet) Evaluate(d *DeviceData) (acc, loss float64, err error) {
	if d.Width != m.in {
		return 0, 0, fmt.Errorf("trainer: evaluate: %d features, the network takes %d", d.Width, m.in)
	}
	idx, err := m.dev.Alloc(d.N)
	if err != nil {
		return 0, 0, err
	}
	defer m.dev.Free(idx)
	seq := make([]int32, d.N)
	for i := range seq {
		seq[i] = int32(i)
	}
	if err := m.dev.UploadInt32(idx, seq); err != nil {
		return 0, 0, err
	}
	m.quantize()
	m.dev.Fill(m.stats, 3, 0)
	for lo := 0; lo < d.N; lo += m.batch {
		rows := min(m.batch, d.N-lo)
		m.dev.GatherRows(m.x, d.X, idx, lo, rows, d.Width)
		m.dev.GatherRows(m.labels, d.Y, idx, lo, rows, 1)
		logits := m.forward(m.x, rows, false, 0)
		m.dev.SoftmaxKD(nil, m.stats, logits, m.labels, nil, rows, m.classes(), 1, 0, 0)
	}
	st := make([]float32, 3)
	if err := m.dev.Download(st, m.stats); err != nil {
		return 0, 0, err
	}
	return float64(st[1]) / float64(d.N), float64(st[0]) / float64(d.N), nil
}

// TrainStep trains on the batch of samples idx[off : off+batch] of train
// (translated by their shifts when shifts is not nil: GatherShifted over
// h×w images), distilling from teacher's logits on the same inputs when
// teacher is not nil.
func (m *DeviceNet) TrainStep(train *DeviceData, idx, shifts compute.Buffer, h, w, off int, st DeviceStep, teacher *DeviceNet) {
	if shifts != nil {
		m.dev.GatherShifted(m.x, train.X, idx, shifts, off, m.batch, h, w)
	} else {
		m.dev.GatherRows(m.x, train.X, idx, off, m.batch, train.Width)
	}
	m.dev.GatherRows(m.labels, train.Y, idx, off, m.batch, 1)
	if teacher != nil {
		st.Teacher = teacher.forward(m.x, m.batch, false, 0)
	}
	m.step(st)
}

// TrainStats are the sums TrainStep accumulated since ResetStats.
type TrainStats struct {
	Loss, Correct, Distill float64
}

// ResetStats zeroes the training sums.
func (m *DeviceNet) ResetStats() { m.dev.Fill(m.stats, 3, 0) }

// ReadStats downloads the training sums.
func (m *DeviceNet) ReadStats() (TrainStats, error) {
	st := make([]float32, 3)
	if err := m.dev.Download(st, m.stats); err != nil {
		return TrainStats{}, err
	}
	return TrainStats{Loss: float64(st[0]), Correct: float64(st[1]), Distill: float64(st[2])}, nil
}

// DeviceNetState is a DeviceNet's training state besides what its model
// holds (parameters' values come from and go to the model with batch norms'
// running statistics and observers, SetWeightsFrom and WeightsInto): per
// parameter in the network's order, values, momentum buffers and masks (1
// kept, 0 pruned).
type DeviceNetState struct {
	W, V, Mask [][]float32
}

// State downloads the network's training state.
func (m *DeviceNet) State() (*DeviceNetState, error) {
	st := &DeviceNetState{}
	for _, p := range m.params {
		for _, x := range []struct {
			dst *[][]float32
			src compute.Buffer
		}{{&st.W, p.w}, {&st.V, p.v}, {&st.Mask, p.mask}} {
			buf := make([]float32, p.n)
			if err := m.dev.Download(buf, x.src); err != nil {
				return nil, err
			}
			*x.dst = append(*x.dst, buf)
		}
	}
	return st, nil
}

// SetState uploads a training state State returned (from a network of
// the same layers); nil masks are left as they are.
func (m *DeviceNet) SetState(st *DeviceNetState) error {
	if len(st.W) != len(m.params) || len(st.V) != len(m.params) || (st.Mask != nil && len(st.Mask) != len(m.params)) {
		return fmt.Errorf("trainer: a state of %d parameters for a network of %d", len(st.W), len(m.params))
	}
	type part struct {
		what string
		src  []float32
		dst  compute.Buffer
	}
	for i, p := range m.params {
		parts := []part{{p.Name, st.W[i], p.w}, {p.Name + " momentum", st.V[i], p.v}}
		if st.Mask != nil {
			parts = append(parts, part{p.Name + " mask", st.Mask[i], p.mask})
		}
		for _, x := range parts {
			if len(x.src) != p.n {
				return fmt.Errorf("trainer: %s: %d values in the state, want %d", x.what, len(x.src), p.n)
			}
			if err := m.dev.Upload(x.dst, x.src); err != nil {
				return err
			}
		}
	}
	return nil
}
