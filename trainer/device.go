package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/data"
)

// DeviceMLP is a fully connected ReLU network whose whole training step —
// forward, loss, backward, masks, fake quantization, distillation loss and
// the momentum update — runs on a compute.Device: parameters, optimizer
// state, activations and gradients live in device Buffers, and the host
// only uploads inputs and downloads metrics and weights.
//
// Weights are [out, in] row-major (PyTorch's nn.Linear layout); a layer
// computes y = x·Wᵀ + b, ReLU on every layer but the last.
type DeviceMLP struct {
	dev   compute.Device
	sizes []int
	batch int

	w, b, vw, vb, gw, gb, mask []compute.Buffer
	wq, amax                   []compute.Buffer // fake-quantized weights and their per-row scales' source
	act, grad                  []compute.Buffer // per layer: output [batch, out] and its gradient
	x, labels, stats, count    compute.Buffer
	// quant is each layer's levels each side (2^(bits−1) − 1; 0: float
	// weights), perTensor whether one scale covers the whole weight.
	quant     []float32
	perTensor []bool
	// Dropout in training: on the input and after every hidden ReLU, with
	// masks drawn on the device from (seed, step, layer).
	dropIn, dropHid float32
	dropSeed        uint64
	inMask          compute.Buffer
	hidMask         []compute.Buffer
	all             []compute.Buffer
}

// NewDeviceMLP allocates the network on dev for steps of batch samples and
// initializes it from seed (He-uniform weights, zero biases; all on the
// host, then uploaded, so every device starts from the same bits).
func NewDeviceMLP(dev compute.Device, sizes []int, batch int, seed uint64) (*DeviceMLP, error) {
	if len(sizes) < 2 || batch < 1 {
		return nil, fmt.Errorf("trainer: device MLP needs at least two layer sizes and a positive batch (sizes %v, batch %d)", sizes, batch)
	}
	for _, s := range sizes {
		if s < 1 {
			return nil, fmt.Errorf("trainer: device MLP layer size %d in %v", s, sizes)
		}
	}
	m := &DeviceMLP{dev: dev, sizes: append([]int(nil), sizes...), batch: batch}
	var err error
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
	for l := 0; l < len(sizes)-1; l++ {
		in, out := sizes[l], sizes[l+1]
		m.w = append(m.w, alloc(out*in))
		m.b = append(m.b, alloc(out))
		m.vw = append(m.vw, alloc(out*in))
		m.vb = append(m.vb, alloc(out))
		m.gw = append(m.gw, alloc(out*in))
		m.gb = append(m.gb, alloc(out))
		m.mask = append(m.mask, alloc(out*in))
		m.wq = append(m.wq, alloc(out*in))
		m.amax = append(m.amax, alloc(out))
		m.act = append(m.act, alloc(batch*out))
		m.grad = append(m.grad, alloc(batch*out))
		if err != nil {
			m.Free()
			return nil, fmt.Errorf("trainer: device MLP on %s: %w", dev.Name(), err)
		}
		w := make([]float32, out*in)
		lim := math.Sqrt(6 / float64(in))
		for i := range w {
			w[i] = float32((2*r.Float64() - 1) * lim)
		}
		if err = dev.Upload(m.w[l], w); err == nil {
			dev.Fill(m.mask[l], out*in, 1)
		}
	}
	m.quant, m.perTensor = make([]float32, len(m.w)), make([]bool, len(m.w))
	m.x = alloc(batch * sizes[0])
	m.labels = alloc(batch)
	m.stats = alloc(3)
	m.count = alloc(1)
	if err != nil {
		m.Free()
		return nil, fmt.Errorf("trainer: device MLP on %s: %w", dev.Name(), err)
	}
	return m, nil
}

// Free returns the network's buffers to the device.
func (m *DeviceMLP) Free() {
	for _, b := range m.all {
		if b != nil {
			m.dev.Free(b)
		}
	}
	m.all = nil
}

// Layers is the number of linear layers.
func (m *DeviceMLP) Layers() int { return len(m.w) }

// SetWeights uploads weights ([out, in] row-major, layer by layer) and
// biases, replacing the initialization.
func (m *DeviceMLP) SetWeights(w, b [][]float32) error {
	if len(w) != len(m.w) || len(b) != len(m.b) {
		return fmt.Errorf("trainer: %d weights and %d biases for %d layers", len(w), len(b), len(m.w))
	}
	for l := range m.w {
		if len(w[l]) != m.sizes[l+1]*m.sizes[l] || len(b[l]) != m.sizes[l+1] {
			return fmt.Errorf("trainer: layer %d: %d weights and %d biases, want %d×%d", l, len(w[l]), len(b[l]), m.sizes[l+1], m.sizes[l])
		}
		if err := m.dev.Upload(m.w[l], w[l]); err != nil {
			return err
		}
		if err := m.dev.Upload(m.b[l], b[l]); err != nil {
			return err
		}
	}
	return nil
}

// SetQuantBits turns quantization-aware training on for every layer (bits
// 2…8: weights fake-quantized symmetrically per output row in the forward
// pass, the gradient passed straight through to the float weights) or off
// (0).
func (m *DeviceMLP) SetQuantBits(bits int) error {
	for l := range m.w {
		if err := m.SetLayerQuant(l, bits, false); err != nil {
			return err
		}
	}
	return nil
}

// SetLayerQuant sets layer l's quantization: bits 2…8 (0: float), one
// scale per output row or, perTensor, one for the whole weight.
func (m *DeviceMLP) SetLayerQuant(l, bits int, perTensor bool) error {
	if bits != 0 && (bits < 2 || bits > 8) {
		return fmt.Errorf("trainer: quantization to %d bits: 2 to 8", bits)
	}
	m.quant[l], m.perTensor[l] = 0, perTensor
	if bits > 0 {
		m.quant[l] = float32(int(1)<<(bits-1) - 1)
	}
	return nil
}

// SetDropout sets the training dropout rates on the input and after each
// hidden layer (0: none); masks are drawn from seed and the step.
func (m *DeviceMLP) SetDropout(input, hidden float64, seed uint64) error {
	if !(input >= 0 && input < 1 && hidden >= 0 && hidden < 1) {
		return fmt.Errorf("trainer: dropout rates %v and %v outside [0, 1)", input, hidden)
	}
	m.dropIn, m.dropHid, m.dropSeed = float32(input), float32(hidden), seed
	var err error
	if m.dropIn > 0 && m.inMask == nil {
		if m.inMask, err = m.dev.Alloc(m.batch * m.sizes[0]); err != nil {
			return err
		}
		m.all = append(m.all, m.inMask)
	}
	if m.dropHid > 0 && m.hidMask == nil {
		for l := 0; l < len(m.w)-1; l++ {
			b, err := m.dev.Alloc(m.batch * m.sizes[l+1])
			if err != nil {
				return err
			}
			m.all = append(m.all, b)
			m.hidMask = append(m.hidMask, b)
		}
	}
	return nil
}

// weights returns the weights the forward pass uses for layer l,
// quantized when QAT is on for it.
func (m *DeviceMLP) weights(l int) compute.Buffer {
	if m.quant[l] == 0 {
		return m.w[l]
	}
	return m.wq[l]
}

func (m *DeviceMLP) quantize() {
	for l := range m.w {
		if m.quant[l] == 0 {
			continue
		}
		rows, cols := m.sizes[l+1], m.sizes[l]
		if m.perTensor[l] {
			rows, cols = 1, rows*cols
		}
		m.dev.RowAbsMax(m.amax[l], m.w[l], rows, cols)
		m.dev.FakeQuant(m.wq[l], m.w[l], m.amax[l], rows, cols, m.quant[l])
	}
}

// dropSeedFor is the mask seed of a step and layer (−1: the input).
func (m *DeviceMLP) dropSeedFor(step int64, layer int) uint64 {
	return m.dropSeed ^ uint64(step)*0x9e3779b97f4a7c15 ^ uint64(layer+2)<<56
}

// forward runs rows samples of x through the network; the logits are in
// act[last]. With train and dropout on, masks for step are drawn and
// applied (x itself is masked in place).
func (m *DeviceMLP) forward(x compute.Buffer, rows int, train bool, step int64) compute.Buffer {
	if train && m.dropIn > 0 && x == m.x {
		n := rows * m.sizes[0]
		m.dev.DropoutMask(m.inMask, n, m.dropIn, 1/(1-m.dropIn), m.dropSeedFor(step, -1))
		m.dev.Mul(x, m.inMask, n)
	}
	in := x
	for l := range m.w {
		o, i := m.sizes[l+1], m.sizes[l]
		m.dev.Gemm(false, true, rows, o, i, 1, in, m.weights(l), 0, m.act[l])
		hidden := l < len(m.w)-1
		m.dev.BiasAct(m.act[l], m.b[l], rows, o, hidden)
		if train && hidden && m.dropHid > 0 {
			m.dev.DropoutMask(m.hidMask[l], rows*o, m.dropHid, 1/(1-m.dropHid), m.dropSeedFor(step, l))
			m.dev.Mul(m.act[l], m.hidMask[l], rows*o)
		}
		in = m.act[l]
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
// summed loss and correct count go into m.stats.
func (m *DeviceMLP) step(s DeviceStep) {
	rows, last := m.batch, len(m.w)-1
	m.quantize()
	logits := m.forward(m.x, rows, true, s.Step)
	m.dev.SoftmaxKD(m.grad[last], m.stats, logits, m.labels, s.Teacher, rows, m.sizes[last+1], s.T, s.Alpha, 1/float32(rows))
	for l := last; l >= 0; l-- {
		o, i := m.sizes[l+1], m.sizes[l]
		in := m.x
		if l > 0 {
			in = m.act[l-1]
		}
		m.dev.Gemm(true, false, o, i, rows, 1, m.grad[l], in, 0, m.gw[l])
		m.dev.ColSum(m.gb[l], m.grad[l], rows, o)
		if l > 0 {
			m.dev.Gemm(false, false, rows, i, o, 1, m.grad[l], m.weights(l), 0, m.grad[l-1])
			if m.dropHid > 0 {
				m.dev.Mul(m.grad[l-1], m.hidMask[l-1], rows*i)
			}
			m.dev.ReLUGrad(m.grad[l-1], m.grad[l-1], m.act[l-1], rows*i)
		}
	}
	for l := range m.w {
		n := m.sizes[l+1] * m.sizes[l]
		m.dev.SGD(m.w[l], m.vw[l], m.gw[l], m.mask[l], n, s.LR, s.Momentum, s.WeightDecay)
		m.dev.SGD(m.b[l], m.vb[l], m.gb[l], nil, m.sizes[l+1], s.LR, s.Momentum, 0)
	}
}

// PruneGlobal raises the network's sparsity to at least target (a
// fraction of all weights) with one magnitude threshold over every layer:
// the threshold is found by bisection on device-side counts (the host
// reads one number per probe, never the weights), then weights below it
// are masked for good.
func (m *DeviceMLP) PruneGlobal(target float64) (sparsity float64, err error) {
	all := make([]int, len(m.w))
	for l := range all {
		all[l] = l
	}
	return m.Prune(target, all)
}

// Prune is PruneGlobal over the given layers only: one threshold across
// them, the returned sparsity theirs.
func (m *DeviceMLP) Prune(target float64, layers []int) (sparsity float64, err error) {
	total := 0
	for _, l := range layers {
		total += m.sizes[l+1] * m.sizes[l]
	}
	want := float32(math.Ceil(target * float64(total)))
	countBelow := func(t float32) (float32, error) {
		m.dev.Fill(m.count, 1, 0)
		for _, l := range layers {
			m.dev.CountBelow(m.count, m.w[l], m.sizes[l+1]*m.sizes[l], t)
		}
		c := make([]float32, 1)
		err := m.dev.Download(c, m.count)
		return c[0], err
	}
	if target <= 0 {
		c, err := countBelow(math.SmallestNonzeroFloat32)
		return float64(c) / float64(total), err
	}
	lo, hi := float32(0), float32(1)
	for {
		c, err := countBelow(hi)
		if err != nil {
			return 0, err
		}
		if c >= want || hi > 1e30 {
			break
		}
		lo, hi = hi, 2*hi
	}
	for it := 0; it < 40 && hi-lo > 1e-9*hi; it++ {
		mid := lo + (hi-lo)/2
		c, err := countBelow(mid)
		if err != nil {
			return 0, err
		}
		if c >= want {
			hi = mid
		} else {
			lo = mid
		}
	}
	for _, l := range layers {
		m.dev.Prune(m.mask[l], m.w[l], m.sizes[l+1]*m.sizes[l], hi)
	}
	c, err := countBelow(math.SmallestNonzeroFloat32)
	return float64(c) / float64(total), err
}

// Weights downloads the float weights and biases, layer by layer (for
// checkpoints and tests).
func (m *DeviceMLP) Weights() (w, b [][]float32, err error) {
	for l := range m.w {
		wl, bl := make([]float32, m.sizes[l+1]*m.sizes[l]), make([]float32, m.sizes[l+1])
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
func (m *DeviceMLP) Evaluate(d *DeviceData) (acc, loss float64, err error) {
	if d.Width != m.sizes[0] {
		return 0, 0, fmt.Errorf("trainer: evaluate: %d features, the network takes %d", d.Width, m.sizes[0])
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
	last := len(m.w) - 1
	for lo := 0; lo < d.N; lo += m.batch {
		rows := min(m.batch, d.N-lo)
		m.dev.GatherRows(m.x, d.X, idx, lo, rows, d.Width)
		m.dev.GatherRows(m.labels, d.Y, idx, lo, rows, 1)
		logits := m.forward(m.x, rows, false, 0)
		m.dev.SoftmaxKD(nil, m.stats, logits, m.labels, nil, rows, m.sizes[last+1], 1, 0, 0)
	}
	st := make([]float32, 3)
	if err := m.dev.Download(st, m.stats); err != nil {
		return 0, 0, err
	}
	return float64(st[1]) / float64(d.N), float64(st[0]) / float64(d.N), nil
}

// DeviceRun configures TrainDevice.
type DeviceRun struct {
	Epochs                    int
	LR, Momentum, WeightDecay float64
	Cosine                    bool // cosine learning-rate decay over the run
	Seed                      uint64

	// Prune: global magnitude pruning to PruneTarget on the AGP schedule
	// (cubic), raised every PruneEvery epochs from PruneFrom to PruneTo.
	PruneTarget                    float64
	PruneFrom, PruneTo, PruneEvery float64
	QuantBits                      int     // QAT from QuantFrom (epochs) on; 0: none
	QuantFrom                      float64 //
	Teacher                        *DeviceMLP
	Temperature, Alpha             float64
	Progress                       func(DeviceEpoch)
}

// DeviceEpoch is one epoch's figures.
type DeviceEpoch struct {
	Epoch         int
	Loss          float64 // mean training loss
	TrainAcc      float64
	Sparsity      float64
	Seconds       float64
	SamplesPerSec float64
}

// TrainDevice trains m on train (already on the device) for cfg.Epochs
// epochs of full batches in the order data.Order gives, under the
// schedules of cfg.
func (m *DeviceMLP) TrainDevice(ctx context.Context, train *DeviceData, cfg DeviceRun) ([]DeviceEpoch, error) {
	if train.Width != m.sizes[0] {
		return nil, fmt.Errorf("trainer: %d features, the network takes %d", train.Width, m.sizes[0])
	}
	if cfg.Teacher != nil && (cfg.Teacher.batch != m.batch || cfg.Teacher.sizes[len(cfg.Teacher.sizes)-1] != m.sizes[len(m.sizes)-1]) {
		return nil, errors.New("trainer: the teacher must have the student's batch and classes")
	}
	steps := data.Steps(train.N, m.batch)
	if steps == 0 {
		return nil, fmt.Errorf("trainer: %d samples make no batch of %d", train.N, m.batch)
	}
	idx, err := m.dev.Alloc(train.N)
	if err != nil {
		return nil, err
	}
	defer m.dev.Free(idx)
	total := cfg.Epochs * steps
	every := max(1, int(math.Round(cfg.PruneEvery*float64(steps))))
	from, to := int(cfg.PruneFrom*float64(steps)), int(cfg.PruneTo*float64(steps))
	var out []DeviceEpoch
	sparsity := 0.0
	for ep := 0; ep < cfg.Epochs; ep++ {
		start := time.Now()
		order := data.Order(cfg.Seed, ep, train.N)
		o32 := make([]int32, len(order))
		for i, v := range order {
			o32[i] = int32(v)
		}
		if err := m.dev.UploadInt32(idx, o32); err != nil {
			return out, err
		}
		m.dev.Fill(m.stats, 3, 0)
		for s := 0; s < steps; s++ {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			g := ep*steps + s
			if cfg.PruneTarget > 0 && g >= from && g <= to && (g-from)%every == 0 {
				p := 1.0
				if to > from {
					p = float64(g-from) / float64(to-from)
				}
				if sparsity, err = m.PruneGlobal(cfg.PruneTarget * (1 - math.Pow(1-p, 3))); err != nil {
					return out, err
				}
			}
			if cfg.QuantBits > 0 && g == int(cfg.QuantFrom*float64(steps)) {
				if err := m.SetQuantBits(cfg.QuantBits); err != nil {
					return out, err
				}
			}
			lr := cfg.LR
			if cfg.Cosine {
				lr *= 0.5 * (1 + math.Cos(math.Pi*float64(g)/float64(total)))
			}
			m.dev.GatherRows(m.x, train.X, idx, s*m.batch, m.batch, train.Width)
			m.dev.GatherRows(m.labels, train.Y, idx, s*m.batch, m.batch, 1)
			st := DeviceStep{LR: float32(lr), Momentum: float32(cfg.Momentum), WeightDecay: float32(cfg.WeightDecay), Step: int64(g)}
			if cfg.Teacher != nil {
				st.Teacher = cfg.Teacher.forward(m.x, m.batch, false, 0)
				st.T, st.Alpha = float32(cfg.Temperature), float32(cfg.Alpha)
			}
			m.step(st)
		}
		stats := make([]float32, 3)
		if err := m.dev.Download(stats, m.stats); err != nil {
			return out, err
		}
		secs := time.Since(start).Seconds()
		e := DeviceEpoch{Epoch: ep + 1, Loss: float64(stats[0]) / float64(steps*m.batch), TrainAcc: float64(stats[1]) / float64(steps*m.batch),
			Sparsity: sparsity, Seconds: secs, SamplesPerSec: float64(steps*m.batch) / secs}
		out = append(out, e)
		if cfg.Progress != nil {
			cfg.Progress(e)
		}
	}
	return out, nil
}

// TrainStep trains on the batch of samples idx[off : off+batch] of train
// (translated by their shifts when shifts is not nil: GatherShifted over
// h×w images), distilling from teacher's logits on the same inputs when
// teacher is not nil.
func (m *DeviceMLP) TrainStep(train *DeviceData, idx, shifts compute.Buffer, h, w, off int, st DeviceStep, teacher *DeviceMLP) {
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
func (m *DeviceMLP) ResetStats() { m.dev.Fill(m.stats, 3, 0) }

// ReadStats downloads the training sums.
func (m *DeviceMLP) ReadStats() (TrainStats, error) {
	st := make([]float32, 3)
	if err := m.dev.Download(st, m.stats); err != nil {
		return TrainStats{}, err
	}
	return TrainStats{Loss: float64(st[0]), Correct: float64(st[1]), Distill: float64(st[2])}, nil
}

// LayerSparsity is each layer's fraction of zero weights (counted on the
// device).
func (m *DeviceMLP) LayerSparsity() ([]float64, error) {
	out := make([]float64, len(m.w))
	c := make([]float32, 1)
	for l := range m.w {
		n := m.sizes[l+1] * m.sizes[l]
		m.dev.Fill(m.count, 1, 0)
		m.dev.CountBelow(m.count, m.w[l], n, math.SmallestNonzeroFloat32)
		if err := m.dev.Download(c, m.count); err != nil {
			return nil, err
		}
		out[l] = float64(c[0]) / float64(n)
	}
	return out, nil
}
