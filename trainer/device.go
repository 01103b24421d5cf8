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
)

// DeviceNet is a network of linear, convolution and max-pooling layers
// (graph.Layer: what a model's graph.Network holds)
// whose whole training step — forward, loss, backward, masks, fake
// quantization, distillation loss and the momentum update — runs on a
// compute.Device: parameters, optimizer state, activations and gradients
// live in device Buffers, and the host only uploads inputs and downloads
// metrics and weights.
//
// Weights are [out, in] row-major for linear layers (PyTorch's nn.Linear
// layout) and [f, k, k, c] for convolutions (lathe's model layout);
// activations are NHWC, flattened as they lie.
type DeviceNet struct {
	dev    compute.Device
	layers []graph.Layer
	batch  int
	in     int   // input features per sample
	outN   []int // output elements per sample, per layer
	param  []int // layer → its weight index (−1: none)
	player []int // weight index → layer
	wRows  []int // per weight: output rows (outputs or filters)
	wCols  []int // per weight: inputs per row (in, or k·k·c)

	w, b, vw, vb, gw, gb, mask []compute.Buffer // per weight
	wq, amax                   []compute.Buffer // fake-quantized weights and their scales' source
	act, grad                  []compute.Buffer // per layer: output [batch, outN] and its gradient
	col, dcol, arg             []compute.Buffer // per layer: conv patches and their gradient; pooling maxima
	x, labels, stats           compute.Buffer
	// quant is each weight's levels each side (2^(bits−1) − 1; 0: float
	// weights), perTensor whether one scale covers the whole weight.
	quant     []float32
	perTensor []bool
	// Dropout in training: on the input (SetDropout) and after each layer
	// at its graph.Layer rate, with masks drawn on the device from (seed,
	// step, layer).
	dropIn   float32
	dropSeed uint64
	inMask   compute.Buffer
	hidMask  []compute.Buffer // per layer (nil where none)
	all      []compute.Buffer
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
// samples, initialized from seed like NewDeviceMLP.
func NewDeviceNet(dev compute.Device, layers []graph.Layer, batch int, seed uint64) (*DeviceNet, error) {
	if len(layers) == 0 || batch < 1 {
		return nil, fmt.Errorf("trainer: a device network needs layers and a positive batch (%d layers, batch %d)", len(layers), batch)
	}
	m := &DeviceNet{dev: dev, layers: append([]graph.Layer(nil), layers...), batch: batch}
	var err error
	if m.in, m.outN, err = deviceSizes(layers); err != nil {
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
	r := rand.New(rand.NewPCG(seed, 0x6c617468))
	for i, L := range layers {
		m.act = append(m.act, alloc(batch*m.outN[i]))
		m.grad = append(m.grad, alloc(batch*m.outN[i]))
		var col, dcol, arg compute.Buffer
		switch L.Kind {
		case graph.Conv:
			o := L.Output()
			n := batch * o.H * o.W * L.Kernel * L.Kernel * L.In.C
			col, dcol = alloc(n), alloc(n)
		case graph.MaxPool:
			arg = alloc(batch * m.outN[i])
		}
		m.col, m.dcol, m.arg = append(m.col, col), append(m.dcol, dcol), append(m.arg, arg)
		var hm compute.Buffer
		if L.Dropout > 0 {
			hm = alloc(batch * m.outN[i])
		}
		m.hidMask = append(m.hidMask, hm)
		if L.Kind == graph.MaxPool {
			m.param = append(m.param, -1)
			continue
		}
		rows, cols := L.Out, L.In.Size()
		if L.Kind == graph.Conv {
			cols = L.Kernel * L.Kernel * L.In.C
		}
		m.param = append(m.param, len(m.w))
		m.player = append(m.player, i)
		m.wRows, m.wCols = append(m.wRows, rows), append(m.wCols, cols)
		m.w = append(m.w, alloc(rows*cols))
		m.b = append(m.b, alloc(rows))
		m.vw = append(m.vw, alloc(rows*cols))
		m.vb = append(m.vb, alloc(rows))
		m.gw = append(m.gw, alloc(rows*cols))
		m.gb = append(m.gb, alloc(rows))
		m.mask = append(m.mask, alloc(rows*cols))
		m.wq = append(m.wq, alloc(rows*cols))
		m.amax = append(m.amax, alloc(rows))
		if err != nil {
			m.Free()
			return nil, fmt.Errorf("trainer: device network on %s: %w", dev.Name(), err)
		}
		w := make([]float32, rows*cols)
		lim := math.Sqrt(6 / float64(cols))
		for i := range w {
			w[i] = float32((2*r.Float64() - 1) * lim)
		}
		p := len(m.w) - 1
		if err = dev.Upload(m.w[p], w); err == nil {
			dev.Fill(m.mask[p], rows*cols, 1)
		}
	}
	m.quant, m.perTensor = make([]float32, len(m.w)), make([]bool, len(m.w))
	m.x = alloc(batch * m.in)
	m.labels = alloc(batch)
	m.stats = alloc(3)
	if err != nil {
		m.Free()
		return nil, fmt.Errorf("trainer: device network on %s: %w", dev.Name(), err)
	}
	if len(m.w) == 0 {
		m.Free()
		return nil, errors.New("trainer: a device network without weights")
	}
	return m, nil
}

// deviceSizes checks that the device path has every layer's kind and
// activation and that the layers chain, and returns the input's and each
// layer's output's elements per sample.
func deviceSizes(layers []graph.Layer) (first int, outN []int, err error) {
	if len(layers) > 0 {
		if err := (graph.Network{Input: layers[0].In, Layers: layers}).Basic(); err != nil {
			return 0, nil, fmt.Errorf("trainer: the device path runs chains of linear, plain conv and 2×2 max-pool layers so far: %w", err)
		}
	}
	prev := 0
	for i, L := range layers {
		var in, out int
		switch L.Kind {
		case graph.Linear, graph.MaxPool:
			in, out = L.In.Size(), L.Output().Size()
		case graph.Conv:
			if L.Kernel < 1 || L.In.H < L.Kernel || L.In.W < L.Kernel || L.In.C < 1 || L.Out < 1 {
				return 0, nil, fmt.Errorf("trainer: layer %d: conv %v with %d filters of %d", i, L.In, L.Out, L.Kernel)
			}
			in, out = L.In.Size(), L.Output().Size()
		default:
			return 0, nil, fmt.Errorf("trainer: layer %d (%s): the device path has no %s layer", i, L.Name, L.Kind)
		}
		if L.Act != graph.ReLU && L.Act != graph.Identity {
			return 0, nil, fmt.Errorf("trainer: layer %d (%s): the device path has no %s activation", i, L.Name, L.Act)
		}
		if in < 1 || out < 1 || (i > 0 && in != prev) {
			return 0, nil, fmt.Errorf("trainer: layer %d (%s) takes %d inputs after %d outputs", i, L.Kind, in, prev)
		}
		if i == 0 {
			first = in
		}
		outN = append(outN, out)
		prev = out
	}
	return first, outN, nil
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

// Layers is the number of weight layers (linear and conv); weight-layer
// indices below count these.
func (m *DeviceNet) Layers() int { return len(m.w) }

// classes is the width of the last layer's output.
func (m *DeviceNet) classes() int { return m.outN[len(m.outN)-1] }

// SetWeights uploads the weights and biases, weight layer by weight layer,
// replacing the initialization.
func (m *DeviceNet) SetWeights(w, b [][]float32) error {
	if len(w) != len(m.w) || len(b) != len(m.b) {
		return fmt.Errorf("trainer: %d weights and %d biases for %d weight layers", len(w), len(b), len(m.w))
	}
	for p := range m.w {
		if len(w[p]) != m.wRows[p]*m.wCols[p] || len(b[p]) != m.wRows[p] {
			return fmt.Errorf("trainer: weight layer %d: %d weights and %d biases, want %d×%d", p, len(w[p]), len(b[p]), m.wRows[p], m.wCols[p])
		}
		if err := m.dev.Upload(m.w[p], w[p]); err != nil {
			return err
		}
		if err := m.dev.Upload(m.b[p], b[p]); err != nil {
			return err
		}
	}
	return nil
}

// SetLayerQuant sets weight layer p's quantization: bits 2…8 (0: float),
// one scale per output row (filter) or, perTensor, one for the whole
// weight.
func (m *DeviceNet) SetLayerQuant(p, bits int, perTensor bool) error {
	if bits != 0 && (bits < 2 || bits > 8) {
		return fmt.Errorf("trainer: quantization to %d bits: 2 to 8", bits)
	}
	m.quant[p], m.perTensor[p] = 0, perTensor
	if bits > 0 {
		m.quant[p] = float32(int(1)<<(bits-1) - 1)
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
	return m.dropIn > 0 || slices.ContainsFunc(m.layers, func(L graph.Layer) bool { return L.Dropout > 0 })
}

// weights returns the weights the forward pass uses for weight layer p,
// quantized when QAT is on for it.
func (m *DeviceNet) weights(p int) compute.Buffer {
	if m.quant[p] == 0 {
		return m.w[p]
	}
	return m.wq[p]
}

func (m *DeviceNet) quantize() {
	for p := range m.w {
		if m.quant[p] == 0 {
			continue
		}
		rows, cols := m.wRows[p], m.wCols[p]
		if m.perTensor[p] {
			rows, cols = 1, rows*cols
		}
		m.dev.RowAbsMax(m.amax[p], m.w[p], rows, cols)
		m.dev.FakeQuant(m.wq[p], m.w[p], m.amax[p], rows, cols, m.quant[p])
	}
}

// dropSeedFor is the mask seed of a step and layer (−1: the input).
func (m *DeviceNet) dropSeedFor(step int64, layer int) uint64 {
	return m.dropSeed ^ uint64(step)*0x9e3779b97f4a7c15 ^ uint64(layer+2)<<56
}

// forward runs rows samples of x through the network; the logits are in
// act[last]. With train and dropout on, masks for step are drawn and
// applied (x itself is masked in place).
func (m *DeviceNet) forward(x compute.Buffer, rows int, train bool, step int64) compute.Buffer {
	if train && m.dropIn > 0 && x == m.x {
		n := rows * m.in
		m.dev.DropoutMask(m.inMask, n, m.dropIn, 1/(1-m.dropIn), m.dropSeedFor(step, -1))
		m.dev.Mul(x, m.inMask, n)
	}
	in := x
	for i, L := range m.layers {
		relu := L.Act == graph.ReLU
		switch L.Kind {
		case graph.Linear:
			p := m.param[i]
			m.dev.Gemm(false, true, rows, L.Out, L.In.Size(), 1, in, m.weights(p), 0, m.act[i])
			m.dev.BiasAct(m.act[i], m.b[p], rows, L.Out, relu)
		case graph.Conv:
			p := m.param[i]
			o := L.Output()
			pix := rows * o.H * o.W
			m.dev.Im2col(m.col[i], in, rows, L.In.H, L.In.W, L.In.C, L.Kernel)
			m.dev.Gemm(false, true, pix, L.Out, m.wCols[p], 1, m.col[i], m.weights(p), 0, m.act[i])
			m.dev.BiasAct(m.act[i], m.b[p], pix, L.Out, relu)
		case graph.MaxPool:
			m.dev.MaxPool(m.act[i], m.arg[i], in, rows, L.In.H, L.In.W, L.In.C)
		}
		if train && m.hidMask[i] != nil {
			n, rate := rows*m.outN[i], float32(L.Dropout)
			m.dev.DropoutMask(m.hidMask[i], n, rate, 1/(1-rate), m.dropSeedFor(step, i))
			m.dev.Mul(m.act[i], m.hidMask[i], n)
		}
		in = m.act[i]
	}
	return m.act[len(m.act)-1]
}

// DeviceStep is one step's settings.
type DeviceStep struct {
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

// update applies the momentum step to every weight and bias.
func (m *DeviceNet) update(s DeviceStep) {
	for p := range m.w {
		m.dev.SGD(m.w[p], m.vw[p], m.gw[p], m.mask[p], m.wRows[p]*m.wCols[p], s.LR, s.Momentum, s.WeightDecay)
		m.dev.SGD(m.b[p], m.vb[p], m.gb[p], nil, m.wRows[p], s.LR, s.Momentum, 0)
	}
}

// gradients runs the forward and backward passes on the batch in m.x /
// m.labels, leaving the gradients in gw and gb.
func (m *DeviceNet) gradients(s DeviceStep) {
	rows, last := m.batch, len(m.layers)-1
	m.quantize()
	logits := m.forward(m.x, rows, true, s.Step)
	m.dev.SoftmaxKD(m.grad[last], m.stats, logits, m.labels, s.Teacher, rows, m.classes(), s.T, s.Alpha, 1/float32(rows))
	for i := last; i >= 0; i-- {
		L := m.layers[i]
		in := m.x
		if i > 0 {
			in = m.act[i-1]
		}
		var below compute.Buffer // the gradient of the layer below's output, when there is one
		if i > 0 {
			below = m.grad[i-1]
		}
		switch L.Kind {
		case graph.Linear:
			p := m.param[i]
			m.dev.Gemm(true, false, L.Out, L.In.Size(), rows, 1, m.grad[i], in, 0, m.gw[p])
			m.dev.ColSum(m.gb[p], m.grad[i], rows, L.Out)
			if below != nil {
				m.dev.Gemm(false, false, rows, L.In.Size(), L.Out, 1, m.grad[i], m.weights(p), 0, below)
			}
		case graph.Conv:
			p := m.param[i]
			o := L.Output()
			pix := rows * o.H * o.W
			m.dev.Gemm(true, false, L.Out, m.wCols[p], pix, 1, m.grad[i], m.col[i], 0, m.gw[p])
			m.dev.ColSum(m.gb[p], m.grad[i], pix, L.Out)
			if below != nil {
				m.dev.Gemm(false, false, pix, m.wCols[p], L.Out, 1, m.grad[i], m.weights(p), 0, m.dcol[i])
				m.dev.Col2im(below, m.dcol[i], rows, L.In.H, L.In.W, L.In.C, L.Kernel)
			}
		case graph.MaxPool:
			if below != nil {
				m.dev.MaxPoolGrad(below, m.grad[i], m.arg[i], rows, L.In.H, L.In.W, L.In.C)
			}
		}
		if below != nil {
			n, prev := rows*m.outN[i-1], m.layers[i-1]
			if m.hidMask[i-1] != nil {
				m.dev.Mul(below, m.hidMask[i-1], n)
			}
			if prev.Kind != graph.MaxPool && prev.Act == graph.ReLU {
				m.dev.ReLUGrad(below, below, m.act[i-1], n)
			}
		}
	}
}

// Weights downloads the float weights and biases, layer by layer (for
// checkpoints and tests).
func (m *DeviceNet) Weights() (w, b [][]float32, err error) {
	for l := range m.w {
		wl, bl := make([]float32, m.wRows[l]*m.wCols[l]), make([]float32, m.wRows[l])
		if err = m.dev.Download(wl, m.w[l]); err != nil {
			return nil, nil, err
		}
		if err = m.dev.Download(bl, m.b[l]); err != nil {
			return nil, nil, err
		}
		w, b = append(w, wl), append(b, bl)
	}
	return w, b, nil
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
	for i, p := range s.Images[:n*f] {
		x[i] = float32(p) * (1.0 / 255) // as data.Batcher scales
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

// DeviceNetState is everything of a DeviceNet a resumed run needs, per
// weight layer: weights, biases, their momentum buffers and the masks (1
// kept, 0 pruned).
type DeviceNetState struct {
	W, B, VW, VB, Mask [][]float32
}

// State downloads the network's training state.
func (m *DeviceNet) State() (*DeviceNetState, error) {
	st := &DeviceNetState{}
	for p := range m.w {
		n, o := m.wRows[p]*m.wCols[p], m.wRows[p]
		for _, x := range []struct {
			dst *[][]float32
			src compute.Buffer
			n   int
		}{{&st.W, m.w[p], n}, {&st.B, m.b[p], o}, {&st.VW, m.vw[p], n}, {&st.VB, m.vb[p], o}, {&st.Mask, m.mask[p], n}} {
			buf := make([]float32, x.n)
			if err := m.dev.Download(buf, x.src); err != nil {
				return nil, err
			}
			*x.dst = append(*x.dst, buf)
		}
	}
	return st, nil
}

// SetState uploads a training state State returned (from a network of
// the same layers).
func (m *DeviceNet) SetState(st *DeviceNetState) error {
	if len(st.W) != len(m.w) || len(st.B) != len(m.w) || len(st.VW) != len(m.w) || len(st.VB) != len(m.w) || len(st.Mask) != len(m.w) {
		return fmt.Errorf("trainer: a state of %d weight layers for a network of %d", len(st.W), len(m.w))
	}
	for p := range m.w {
		n, o := m.wRows[p]*m.wCols[p], m.wRows[p]
		for _, x := range []struct {
			src []float32
			dst compute.Buffer
			n   int
		}{{st.W[p], m.w[p], n}, {st.B[p], m.b[p], o}, {st.VW[p], m.vw[p], n}, {st.VB[p], m.vb[p], o}, {st.Mask[p], m.mask[p], n}} {
			if len(x.src) != x.n {
				return fmt.Errorf("trainer: weight layer %d: %d values in the state, want %d", p, len(x.src), x.n)
			}
			if err := m.dev.Upload(x.dst, x.src); err != nil {
				return err
			}
		}
	}
	return nil
}
