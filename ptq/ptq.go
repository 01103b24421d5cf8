// Package ptq compresses a trained model file without training it:
// post-training quantization (round-to-nearest or GPTQ weights, per
// channel, with batch norms folded first; activation ranges calibrated by
// min–max, percentile or MSE; bias correction) and one-shot pruning
// (magnitude or SparseGPT, unstructured or n:m). Calibration runs a few
// hundred training samples through lathe's runtime (infer.Model.Trace);
// layers are compressed in order, each calibrated on the outputs of the
// layers already compressed before it.
package ptq

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/rundir"
)

// Options choose the compression.
type Options struct {
	// Bits quantizes the weights (2 to 8, symmetric, per output channel);
	// 0 leaves them float. GPTQ compensates each column's rounding on the
	// columns after it instead of rounding each weight to its nearest.
	Bits int
	GPTQ bool
	// Activations quantizes the outputs the runtime's integer kernels
	// read (2 to 8 bits; 0: float), their ranges by Range: "minmax"
	// (default), "percentile" (Percentile and 100 − Percentile, default
	// 99.99) or "mse" (the clipping that minimizes the squared error).
	Activations int
	Range       string
	Percentile  float64
	// BiasCorrection adds to each quantized or pruned layer's bias the
	// mean change of its outputs on the calibration inputs.
	BiasCorrection bool
	// Prune is "magnitude" or "sparsegpt" (empty: none): Sparsity of each
	// linear and convolution weight, or N of every M (N:M, e.g. 2:4).
	Prune    string
	Sparsity float64
	N, M     int
	// Damp is GPTQ's and SparseGPT's dampening (default
	// compress.DefaultDamp).
	Damp float64
	// Job names the model file written (default: the input's).
	Job string
	// Tracer runs the calibration passes (default: Local, on the samples
	// and engine Compress is given).
	Tracer Tracer
	// Progress, when set, hears about each layer.
	Progress func(LayerReport)
}

// LayerReport says what happened to one weight: its calibration output
// error ‖ΔW·Xᵀ‖²/N after compression, and the plain method's (round to
// nearest, magnitude) on the same inputs for comparison.
type LayerReport struct {
	Layer    string  `json:"layer"`
	Method   string  `json:"method"`
	Error    float64 `json:"output_error"`
	Baseline float64 `json:"baseline_error"`
	Sparsity float64 `json:"sparsity"`
}

// Report is what Compress did.
type Report struct {
	Samples    int                   `json:"calibration_samples"`
	Folded     int                   `json:"batch_norms_folded"`
	Layers     []LayerReport         `json:"layers"`
	Activation map[string][2]float32 `json:"activation_ranges,omitempty"`
}

func (o *Options) check() error {
	switch {
	case o.Bits != 0 && (o.Bits < 2 || o.Bits > 8):
		return fmt.Errorf("ptq: %d weight bits (2 to 8, or 0: float)", o.Bits)
	case o.Activations != 0 && (o.Activations < 2 || o.Activations > 8):
		return fmt.Errorf("ptq: %d activation bits (2 to 8, or 0: float)", o.Activations)
	case o.GPTQ && o.Bits == 0:
		return errors.New("ptq: GPTQ needs weight bits")
	case o.GPTQ && o.Prune != "":
		return errors.New("ptq: GPTQ and pruning in one pass are not supported (prune, then quantize the pruned file)")
	case !slices.Contains([]string{"", "minmax", "percentile", "mse"}, o.Range):
		return fmt.Errorf("ptq: activation range %q (minmax, percentile, mse)", o.Range)
	case !slices.Contains([]string{"", "magnitude", "sparsegpt"}, o.Prune):
		return fmt.Errorf("ptq: pruning %q (magnitude, sparsegpt)", o.Prune)
	case o.Prune != "" && o.M == 0 && (o.Sparsity <= 0 || o.Sparsity >= 1):
		return fmt.Errorf("ptq: sparsity %g (between 0 and 1, or N:M)", o.Sparsity)
	case o.M > 0 && (o.N < 0 || o.N > o.M):
		return fmt.Errorf("ptq: %d:%d (N ≤ M)", o.N, o.M)
	case o.Bits == 0 && o.Activations == 0 && o.Prune == "":
		return errors.New("ptq: nothing to do (give weight bits, activation bits or pruning)")
	}
	if o.Range == "" {
		o.Range = "minmax"
	}
	if o.Percentile == 0 {
		o.Percentile = 99.99
	}
	if o.Damp == 0 {
		o.Damp = compress.DefaultDamp
	}
	return nil
}

// Calibration draws n samples of set (seeded) as the network reads them.
func Calibration(set *data.Set, n int, seed uint64) []float32 {
	n = min(n, set.Len())
	idx := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)).Perm(set.Len())[:n]
	x := make([]float32, n*set.Features())
	y := make([]float32, n*set.LabelsPer())
	(&data.Batcher{Set: set}).Fill(x, y, idx, 0)
	return x
}

// Compress compresses the model file f, calibrating on x (samples as the
// network reads them), and returns the new model file.
func Compress(f *checkpoint.File, x []float32, eng compute.Engine, opt Options) (*checkpoint.File, *Report, error) {
	if err := opt.check(); err != nil {
		return nil, nil, err
	}
	m, st, err := rundir.LoadModel(f)
	if err != nil {
		return nil, nil, err
	}
	feats := m.Input.Rows * m.Input.Cols * m.Input.Channels
	if len(x) == 0 || len(x)%feats != 0 {
		return nil, nil, fmt.Errorf("ptq: %d calibration values for samples of %d", len(x), feats)
	}
	rep := &Report{Samples: len(x) / feats}
	if pairs := m.Net.FoldPairs(); len(pairs) > 0 && (opt.Bits > 0 || opt.Activations > 0) {
		m.Fold = pairs // quantized as quantization-aware training stores it: the batch norms folded first
		if m, err = m.FoldBatchNorms(); err != nil {
			return nil, nil, err
		}
		rep.Folded = len(pairs)
	}
	job := cmp.Or(opt.Job, f.Job)
	tracer := opt.Tracer
	if tracer == nil {
		tracer = Local{X: x, Eng: eng}
	}
	c := &compressor{m: m, tracer: tracer, opt: opt, job: job, dataset: st.Dataset, files: st.Files, stash: map[string]stashed{}}
	for _, l := range m.Net.Layers {
		if l.Kind != graph.Linear && l.Kind != graph.Conv {
			continue
		}
		lr, err := c.layer(l)
		if err != nil {
			return nil, nil, fmt.Errorf("ptq: layer %s: %w", l.Name, err)
		}
		rep.Layers = append(rep.Layers, lr)
		if opt.Progress != nil {
			opt.Progress(lr)
		}
	}
	if opt.Activations > 0 {
		if rep.Activation, err = c.activations(); err != nil {
			return nil, nil, err
		}
	}
	out, err := c.file(opt.Bits > 0)
	if err != nil {
		return nil, nil, err
	}
	return out, rep, nil
}

// stashed is a GPTQ weight's parameters and codes, written as they are
// (the model file would otherwise derive its scales from the weight's
// range again).
type stashed struct {
	p     compress.QuantParams
	codes []int32
}

type compressor struct {
	m            *model.Model
	tracer       Tracer
	opt          Options
	job, dataset string
	files        data.FileOptions
	stash        map[string]stashed
}

func (c *compressor) param(name string) *model.Param {
	for _, p := range c.m.Params {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// file is the model's file: weights quantized when asked (GPTQ's codes as
// computed), activation ranges frozen.
func (c *compressor) file(quantize bool) (*checkpoint.File, error) {
	saved := c.m.Quant
	defer func() { c.m.Quant = saved }()
	if quantize {
		c.m.Quant = map[string]*model.QuantControl{}
		for _, w := range c.m.Weights() {
			c.m.Quant[w.Name] = &model.QuantControl{Spec: model.QuantSpec{Bits: c.opt.Bits, Symmetric: true, PerChannel: true}, Enabled: true}
		}
	} else {
		c.m.Quant = nil
	}
	f, err := rundir.ExportModel(c.m, c.job, c.dataset, c.files)
	if err != nil {
		return nil, err
	}
	if !quantize {
		return f, nil
	}
	for name, s := range c.stash {
		t := f.Tensor(name)
		t.Quant = &checkpoint.Quant{Bits: c.opt.Bits, QMin: s.p.QMin, Scale: s.p.Scale, Zero: s.p.Zero, Codes: s.codes}
		t.Data = make([]float32, len(s.codes))
		s.p.Dequantize(t.Data, s.codes)
	}
	return f, nil
}

// trace runs a calibration pass through the model as it is now (in
// float).
func (c *compressor) trace(want Want) ([]BatchStats, error) {
	saved := c.m.ActQuant
	c.m.ActQuant = nil
	f, err := c.file(false)
	c.m.ActQuant = saved
	if err != nil {
		return nil, err
	}
	return c.tracer.Trace(f, want)
}

// layer compresses one linear layer's or convolution's weight.
func (c *compressor) layer(l graph.Layer) (LayerReport, error) {
	opt := c.opt
	w := c.param(l.Name).Data()
	orig := slices.Clone(w)
	groups := l.GroupCount()
	rows := l.Out
	cols := len(w) / rows // one filter's inputs (within its group)
	rep := LayerReport{Layer: l.Name}
	hs, mean, err := inputs(nil, groups, cols)
	if opt.GPTQ || opt.Prune == "sparsegpt" || opt.BiasCorrection {
		stats, terr := c.trace(Want{Layer: l.Name})
		if terr != nil {
			return rep, terr
		}
		hs, mean, err = inputs(stats, groups, cols)
	}
	if err != nil {
		return rep, err
	}
	per := rows / groups
	baseline := slices.Clone(orig)
	for g := range groups {
		wg, bg := w[g*per*cols:(g+1)*per*cols], baseline[g*per*cols:(g+1)*per*cols]
		if err := c.compressGroup(wg, bg, hs[g], l, &rep); err != nil {
			return rep, err
		}
	}
	if hs[0].N > 0 {
		for g, h := range hs {
			a, b, d := orig[g*per*cols:(g+1)*per*cols], w[g*per*cols:(g+1)*per*cols], baseline[g*per*cols:(g+1)*per*cols]
			rep.Error += h.Error(a, b) / float64(groups)
			rep.Baseline += h.Error(a, d) / float64(groups)
		}
	}
	if opt.BiasCorrection {
		if err := c.correctBias(l, orig, w, mean, cols, hs[0].N); err != nil {
			return rep, err
		}
	}
	rep.Sparsity = compress.Sparsity(w)
	if opt.GPTQ { // the stash holds every group's codes, in the weight's order
		s := c.stash[l.Name]
		if len(s.codes) != len(w) {
			return rep, fmt.Errorf("%d GPTQ codes for %d weights", len(s.codes), len(w))
		}
	}
	return rep, nil
}

// compressGroup prunes and/or quantizes one group's rows w (and the plain
// method into baseline, for the report).
func (c *compressor) compressGroup(w, baseline []float32, h *compress.Hessian, l graph.Layer, rep *LayerReport) error {
	opt := c.opt
	rows := len(w) / h.Cols
	wt := compress.Weight{Name: l.Name, Shape: []int{rows, h.Cols}, Data: baseline}
	switch opt.Prune {
	case "magnitude", "sparsegpt":
		var mask []byte
		var err error
		if opt.M > 0 {
			mask, err = compress.NOfM(wt, opt.N, opt.M)
		} else {
			mask = compress.Magnitude(wt, opt.Sparsity)
		}
		if err != nil {
			return err
		}
		compress.Apply(mask, baseline)
		rep.Method = opt.Prune
		if opt.Prune == "magnitude" {
			copy(w, baseline)
		} else if _, err := compress.SparseGPT(w, h, opt.Sparsity, opt.N, opt.M, opt.Damp); err != nil {
			return err
		}
	}
	if opt.Bits == 0 {
		return nil
	}
	spec := model.QuantSpec{Bits: opt.Bits, Symmetric: true, PerChannel: true}
	rtn := compress.ParamsFor(spec, baseline, rows)
	rtn.Dequantize(baseline, rtn.Quantize(baseline))
	if !opt.GPTQ {
		p := compress.ParamsFor(spec, w, rows)
		p.Dequantize(w, p.Quantize(w))
		rep.Method = "rtn"
		return nil
	}
	p, codes, err := compress.GPTQ(w, h, spec, opt.Damp)
	if err != nil {
		return err
	}
	p.Dequantize(w, codes)
	s := c.stash[l.Name]
	s.p.Spec, s.p.QMin, s.p.QMax = p.Spec, p.QMin, p.QMax
	s.p.Scale, s.p.Zero = append(s.p.Scale, p.Scale...), append(s.p.Zero, p.Zero...)
	s.codes = append(s.codes, codes...)
	c.stash[l.Name] = s
	rep.Method = "gptq"
	return nil
}

// correctBias adds (W − Ŵ)·E[x] to each output's bias: the layer's mean
// output on the calibration inputs is what it was.
func (c *compressor) correctBias(l graph.Layer, orig, w []float32, mean []float64, cols, n int) error {
	if n == 0 {
		return nil
	}
	b := c.param(l.Name + ".bias")
	if b == nil {
		return nil // a bias-free convolution (no batch norm after it): nothing to correct
	}
	bias := b.Data()
	per := l.Out / l.GroupCount()
	for r := range l.Out {
		g := r / per
		d := 0.0
		for j := range cols {
			d += float64(orig[r*cols+j]-w[r*cols+j]) * mean[g*cols+j] / float64(n)
		}
		bias[r] += float32(d)
	}
	return nil
}

// activations calibrates the ranges of the outputs the quantized layers
// read, on the compressed weights.
func (c *compressor) activations() (map[string][2]float32, error) {
	var names []string
	for _, w := range c.m.Weights() {
		names = append(names, w.Name)
	}
	observed := c.m.Observed(names)
	stats, err := c.trace(Want{Observed: observed})
	if err != nil {
		return nil, err
	}
	lo, hi, samples := outputs(stats)
	ranges := map[string][2]float32{}
	c.m.ActQuant = map[string]*model.Observer{}
	spec := model.QuantSpec{Bits: c.opt.Activations}
	for _, name := range observed {
		if _, ok := lo[name]; !ok {
			continue // folded away or never run (an output layer)
		}
		a, b := lo[name], hi[name]
		switch c.opt.Range {
		case "percentile":
			a, b = percentile(samples[name], 100-c.opt.Percentile), percentile(samples[name], c.opt.Percentile)
		case "mse":
			a, b = mseRange(spec, samples[name], a, b)
		}
		ranges[name] = [2]float32{a, b}
		c.m.ActQuant[name] = &model.Observer{Spec: spec, Min: a, Max: b, Initialized: true, Enabled: true, Frozen: true}
	}
	return ranges, nil
}

func percentile(v []float32, p float64) float32 {
	s := slices.Clone(v)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := int(math.Round(p / 100 * float64(len(s)-1)))
	return s[min(max(k, 0), len(s)-1)]
}

// mseRange shrinks [lo, hi] to the clipping that minimizes the squared
// error of quantizing v (100 candidates down to a fifth of the range, on
// at most 65 536 of the values).
func mseRange(spec model.QuantSpec, v []float32, lo, hi float32) (float32, float32) {
	if step := len(v) / 65536; step > 1 {
		sub := make([]float32, 0, 65536)
		for i := 0; i < len(v); i += step {
			sub = append(sub, v[i])
		}
		v = sub
	}
	best, bl, bh := math.Inf(1), lo, hi
	buf := make([]float32, len(v))
	for k := 0; k < 100; k++ {
		f := 1 - 0.008*float32(k)
		l, h := lo*f, hi*f
		p := compress.ParamsFromRange(spec, []float32{l}, []float32{h})
		p.FakeQuant(buf, v, nil)
		e := 0.0
		for i, x := range v {
			d := float64(x - buf[i])
			e += d * d
		}
		if e < best {
			best, bl, bh = e, l, h
		}
	}
	return bl, bh
}
