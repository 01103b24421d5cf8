// Package infer runs model files (model.arrow) without the training graph:
// each linear layer as a dense GEMM (OpenBLAS), a sparse CSR kernel (one
// sample at a time) or a CSRT kernel (sparse rows against feature-major
// activations, SIMD across the batch), whichever measured fastest on this
// machine when the model was loaded, at batches of 1, 8, 64 and 256 (a
// batch uses the choice at the nearest); quantized activations with the
// exact arithmetic training modelled; an int8 kernel where weights and
// input are quantized, an N:M kernel where weights are 2:4 sparse. A layer
// whose weights and input are quantized and whose output is quantized,
// there or after later layers, runs only on the integer kernels: its
// output is then defined bit for bit (the same whichever kernel measured
// fastest, and the same in the ONNX export's integer arithmetic), so that
// no float rounding moves a later activation across a code boundary.
// Convolutions run as im2col (stride, padding) then the dense, CSR, int8
// or N:M kernel over the patches (a grouped one, a GEMM per group; one
// over one-row images, a sequence's ngram, only its kernel row that meets
// them: a 1×K convolution, Layer.oneRow); batch
// norms run folded into a per-channel scale and shift; the network runs as
// the DAG its layer table describes. ExportONNX writes a model file as
// ONNX.
package infer

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// Kernels a layer can run with.
const (
	Dense = "dense" // GEMM over the full (possibly thinned) weight
	CSR   = "csr"   // only the non-zero weights, row by row, one sample at a time
	CSRT  = "csr-t" // only the non-zero weights, each against a run of samples (SIMD across the batch)
	Int8  = "int8"  // integer codes of quantized weights and inputs, summed exactly in int32
	// Direct is a convolution without the patch matrix: tiles of output
	// pixels × channels accumulated over the image (kernels.DirectConv).
	Direct = "direct"
)

// Probes are the batch sizes at which each layer's kernels are timed at
// load; a batch runs with the choice made at the probe nearest to it (on a
// log scale).
var Probes = []int{1, 8, 64, 256}

// Layer is one layer of a loaded model. For a convolution In is the patch
// size K·K·C, Out the filters, and the kernels run over every patch.
type Layer struct {
	Name    string
	Kind    string // a graph.Kind: "linear", "conv", "maxpool", "batchnorm", "add", …
	In, Out int
	ReLU    bool
	// Convolutions and pooling: input geometry (NHWC), kernel size, stride,
	// padding and groups, and the output's height and width.
	H, W, C, K          int
	Stride, Pad, Groups int
	OH, OW              int
	Nonzero             int // non-zero weights
	// Inputs are the layers whose outputs this one takes (-1: the model's
	// input); act is its activation (ReLU, ReLU6 or none).
	Inputs []int
	act    graph.Activation
	size   int       // outputs per sample
	scale  []float32 // a batch norm's per-channel scale γ/σ and shift β − μ·γ/σ
	shift  []float32
	outQ   *quantizer // how the layer's output is quantized (a max-pooling or flattening keeps its input's)
	// exact: the weights and input are quantized and the output is
	// quantized, here or later; only the integer kernels run it.
	exact bool
	// Kernels holds the kernel chosen at each of Probes.
	Kernels []string

	w, b    []float32
	wq      *checkpoint.Quant // the weight's integer codes, when it is quantized
	k8      *int8Layer        // the int8 kernel, where weights and input are quantized
	nm      *nmLayer          // the 2:4 kernel, where every group of 4 inputs has at most 2 weights
	direct  *kernels.DirectConv
	direct8 *direct8  // the direct kernel on integer codes
	taps    []float32 // a depthwise convolution's filters, [K·K][C]
	rowPtr  []int32
	cols    []int32
	vals    []float32
	actQ    *quantizer // activation quantization after the layer, if any
	measure map[string][]time.Duration
	// The attention core's heads and mask.
	heads  int
	causal bool
	// skipPadding: attention and a global pooling over the samples'
	// lengths only (Model.lens).
	skipPadding bool
	// oneRow: a convolution over a one-row input (a sequence's ngram) keeps
	// only the kernel row that meets it — the others meet only padding —
	// and runs as a 1×K convolution: In is K·C.
	oneRow bool
}

// Model is a loaded model file. It reuses its buffers between calls, so
// one Model serves one goroutine at a time.
type Model struct {
	Layers   []*Layer
	Features int // inputs per sample
	Classes  int
	// The input image: Rows×Cols pixels of Channels channels (NHWC).
	Rows, Cols, Channels int
	// Net is the network's description, from the file's layer table.
	Net  graph.Network
	eng  compute.Engine
	pool [][]float32 // activation buffers, reused as layers finish with them
	// Convolutions' scratch, shared (layers run one at a time): patch
	// rows, and the direct kernels' padded images (floats, codes).
	col, padded []float32
	padded8     []uint8
	scores      []float32 // the attention core's, one head's T×T
	lens        []int     // the samples' lengths, where a layer skips padding
	// Forward's bookkeeping, kept between calls: each output's last
	// reader, the outputs, the free buffers and conversion scratch.
	last          []int
	outs          []activation
	free, scratch []int
	// Each convolution's residual addition to finish (-1: none), and
	// which additions this call's convolutions finished.
	fuse  []int
	fused []bool
	// clock, when set (LayerTimes), receives each layer's time in a
	// Forward call.
	clock  []time.Duration
	trace  func(l *Layer, in, out []float32) // Trace's hook
	normed []float32                         // the input normalized (Net.Normalize)
}

// state is the part of a model file's state document the runtime reads.
type state struct {
	Input struct {
		Rows, Cols, Channels, Classes int
	} `json:"input"`
	graph.Table // the layer table
	Activations map[string]struct {
		Bits      int
		Symmetric bool
	} `json:"activations"`
}

// Load prepares a model file for inference on eng, measuring the kernels
// of each layer.
func Load(f *checkpoint.File, eng compute.Engine) (*Model, error) {
	m, err := parse(f)
	if err != nil {
		return nil, err
	}
	m.eng = eng
	var scratch probeScratch // shared by the layers' probes: load's peak memory is one layer's
	for _, l := range m.Layers {
		switch {
		case l.Weighted() && l.Groups > 1:
			// A grouped convolution runs a GEMM per group: nothing to choose.
			l.Kernels = slices.Repeat([]string{Dense}, len(Probes))
		case l.Weighted():
			m.choose(l, &scratch)
		}
	}
	// The probes grew the convolutions' scratch to their largest batch
	// (256 images' patch rows: 115 MB for a ResNet-20 on 28×28): a call
	// grows what its batch needs.
	m.col, m.padded, m.padded8 = nil, nil, nil
	return m, nil
}

// parse reads a model file's layers, weights and quantization, checking
// that their shapes chain; it measures nothing.
func parse(f *checkpoint.File) (*Model, error) {
	if f.Kind != checkpoint.KindModel {
		return nil, fmt.Errorf("infer: a %s file, not a model file", f.Kind)
	}
	var st state
	if err := json.Unmarshal(f.State, &st); err != nil {
		return nil, fmt.Errorf("infer: model state: %w", err)
	}
	m := &Model{Features: st.Input.Rows * st.Input.Cols * st.Input.Channels, Classes: st.Input.Classes,
		Rows: st.Input.Rows, Cols: st.Input.Cols, Channels: st.Input.Channels}
	net, err := st.Table.Resolve(graph.Shape{H: st.Input.Rows, W: st.Input.Cols, C: st.Input.Channels}, st.Input.Classes)
	if err != nil {
		return nil, fmt.Errorf("infer: %w", err)
	}
	m.Net = net
	if f, net, err = foldNorms(f, net, st.Activations); err != nil {
		return nil, err
	}
	index := map[string]int{graph.Input: -1}
	prev := graph.Input
	for i, rl := range runtimeLayers(net) {
		ls := rl.Layer
		l := &Layer{Name: ls.Name, Kind: string(ls.Kind), ReLU: ls.Act == graph.ReLU, act: ls.Act, size: ls.Output().Size()}
		for _, in := range ls.InputsOf(prev) {
			l.Inputs = append(l.Inputs, index[in])
		}
		index[ls.Name], prev = i, ls.Name
		if rl.of != "" { // an attention layer's last part stands for it
			index[rl.of], prev = i, rl.of
		}
		// How the layer's input is quantized, if it is: the image is
		// pixel/255 (unless the network normalizes it first).
		var inQ *quantizer
		if j := l.Inputs[0]; j >= 0 {
			inQ = m.Layers[j].outQ
		} else if net.Normalize == nil {
			inQ = pixelQuant
		}
		o := ls.Output()
		l.H, l.W, l.C, l.OH, l.OW = ls.In.H, ls.In.W, ls.In.C, o.H, o.W
		l.K, l.Stride, l.Pad = ls.Window()
		l.Groups = ls.GroupCount()
		l.skipPadding = ls.SkipPadding
		switch ls.Kind {
		case graph.Linear:
			l.In, l.Out = ls.In.Size(), ls.Out
		case graph.Conv:
			l.In, l.Out = l.K*l.K*l.C/l.Groups, ls.Out
		case graph.MaxPool, graph.Flatten:
			l.outQ = inQ // pooled or flattened codes are codes
			m.Layers = append(m.Layers, l)
			continue
		case graph.BatchNorm:
			if err := l.foldBatchNorm(f); err != nil {
				return nil, err
			}
		case graph.Embedding, graph.LayerNorm, graph.Attention:
			if err := l.sequence(f, ls); err != nil {
				return nil, err
			}
		}
		actName := cmp.Or(rl.of, ls.Name)
		if spec, ok := st.Activations[actName]; ok {
			r := f.Tensor("act/" + actName)
			if r == nil || len(r.Data) != 2 {
				return nil, fmt.Errorf("infer: layer %s: activation range missing", actName)
			}
			l.actQ = newQuantizer(spec.Bits, spec.Symmetric, r.Data[0], r.Data[1])
		}
		if !l.Weighted() { // batch norm, addition, average and global pooling, flatten
			if l.actQ != nil && ls.Kind != graph.BatchNorm && ls.Kind != graph.Add {
				return nil, fmt.Errorf("infer: layer %s: a %s layer's output is not quantized", ls.Name, ls.Kind)
			}
			l.outQ = l.actQ
			m.Layers = append(m.Layers, l)
			continue
		}
		w, b := f.Tensor(ls.Name), f.Tensor(ls.Name+".bias")
		if w == nil || len(w.Data) != l.Out*l.In || (b == nil) != ls.NoBias || (b != nil && len(b.Data) != l.Out) {
			return nil, fmt.Errorf("infer: layer %s: weight or bias missing, or shapes that do not chain", ls.Name)
		}
		l.w, l.wq = w.Data, w.Quant
		if l.b = make([]float32, l.Out); b != nil {
			l.b = b.Data
		}
		// Over one row, kernel row Pad alone meets the input (none does when Pad ≥ K).
		if ls.Kind == graph.Conv && l.H == 1 && l.OH == 1 && l.K > 1 && l.Pad < l.K && l.Groups == 1 {
			l.keepRow(l.Pad)
		}
		l.buildCSR()
		if l.Groups > 1 && l.Groups == l.C && l.Groups == l.Out { // depthwise
			l.taps = make([]float32, len(l.w))
			kernels.Taps(l.taps, l.w, l.C, l.K)
		}
		if l.Groups == 1 {
			l.k8 = newInt8(l, l.wq, inQ)
			l.direct8 = newDirect8(l, l.k8)
			l.nm = newNM(l.w, l.Out, l.In)
			if ls.Kind == graph.Conv && kernels.HasDirect() {
				l.direct = kernels.NewDirectConv(l.directWindow(), l.Out, l.w, l.b, kernels.ActOf(string(l.act)))
			}
		}
		l.outQ = l.actQ
		m.Layers = append(m.Layers, l)
	}
	m.markExact()
	return m, nil
}

// markExact marks the layers that must run on integer codes: those with
// an int8 kernel whose output is quantized, by the layer itself or by a
// later one it feeds (a float rounding there could move that
// quantization's codes).
func (m *Model) markExact() {
	quantizedLater := make([]bool, len(m.Layers))
	for i := len(m.Layers) - 1; i >= 0; i-- {
		l := m.Layers[i]
		if l.actQ != nil {
			quantizedLater[i] = true
		}
		l.exact = quantizedLater[i] && l.k8 != nil
		for _, j := range l.Inputs {
			if j >= 0 && quantizedLater[i] {
				quantizedLater[j] = true
			}
		}
	}
}

// Candidates lists the kernels the layer's measurement chooses among: those
// it has, only the integer ones where its output must be exact.
func (l *Layer) Candidates() []string {
	if l.exact {
		return slices.DeleteFunc(l.available(), func(k string) bool { return k != Int8 && k != DirectInt8 })
	}
	return l.available()
}

// available lists the kernels a layer has: dense and CSR for every layer,
// CSRT for linear ones, int8 where the weights and the input are
// quantized, N:M where the weights are 2:4 sparse, the direct ones for
// convolutions where the CPU has them.
func (l *Layer) available() []string {
	c := []string{Dense, CSR}
	if l.Kind == "linear" {
		c = append(c, CSRT)
	}
	if l.k8 != nil {
		c = append(c, Int8)
	}
	if l.nm != nil {
		c = append(c, NM)
	}
	if l.direct != nil {
		c = append(c, Direct)
	}
	if l.direct8 != nil {
		c = append(c, DirectInt8)
	}
	return c
}

// probeScratch holds the kernel probes' inputs and outputs.
type probeScratch struct{ x, y, xT, yT []float32 }

// choose times each candidate kernel at each probe batch (for a
// convolution, that many samples' patch rows) and keeps the fastest at
// each. CSRT is timed with the transposes into and out of its layout, as
// a layer between two others would run it. The CSR, int8 and N:M kernels work
// sample by sample, so their time grows in proportion to the batch, and
// no kernel's grows faster: one 4× slower than the fastest at a probe is
// not timed at the larger ones (it would only make loading slow); its
// timing there is NotTimed. The dense GEMM, the baseline, and CSRT, whose
// SIMD lanes fill up as the batch grows, are timed at every probe.
func (m *Model) choose(l *Layer, scratch *probeScratch) {
	l.measure = map[string][]time.Duration{}
	rowsPer := l.Positions()
	dropped := map[string]bool{}
	for _, samples := range Probes {
		batch := samples * rowsPer
		n := batch * l.In
		if l.Kind == string(graph.Conv) { // whole convolutions: images in (patches or not)
			n = samples * l.H * l.W * l.C
		}
		x := grow(&scratch.x, n)
		for j := range x {
			x[j] = float32(j%7) * 0.1
		}
		y := grow(&scratch.y, batch*l.Out)
		fastest := time.Duration(math.MaxInt64)
		for _, k := range l.Candidates() {
			if dropped[k] {
				l.measure[k] = append(l.measure[k], NotTimed)
				continue
			}
			var xT, yT []float32
			ld := ldFor(batch)
			if k == CSRT {
				xT, yT = grow(&scratch.xT, l.In*ld), grow(&scratch.yT, l.Out*ld)
			}
			call := func() {
				if k == CSRT {
					transpose(xT, x, batch, l.In, ld)
					l.runT(yT, xT, ld)
					untranspose(y, yT, batch, l.Out, ld)
				} else if l.Kind == string(graph.Conv) {
					m.convWith(l, k, y, x, samples)
				} else {
					m.run(l, k, y, x, batch)
				}
			}
			start := time.Now()
			call() // warm, and a first estimate: rounds of ≈ 1 ms
			best := time.Since(start)
			reps := int(min(1000, max(1, time.Millisecond/max(best, 1))))
			rounds := 3
			if best > 5*time.Millisecond { // a slow kernel's ranking does not hang on noise
				rounds = 1
			}
			for range rounds {
				start := time.Now()
				for range reps {
					call()
				}
				best = min(best, time.Since(start)/time.Duration(reps))
			}
			l.measure[k] = append(l.measure[k], best)
			fastest = min(fastest, best)
		}
		for _, k := range l.Candidates() {
			if t := l.measure[k][len(l.measure[k])-1]; (k == CSR || k == Int8 || k == NM || k == DirectInt8) && t != NotTimed && t > 4*fastest {
				dropped[k] = true
			}
		}
	}
	l.Kernels = make([]string, len(Probes))
	for i := range Probes {
		for _, k := range l.Candidates() {
			if t := l.measure[k][i]; t != NotTimed && (l.Kernels[i] == "" || t < l.measure[l.Kernels[i]][i]) {
				l.Kernels[i] = k
			}
		}
	}
}

// NotTimed marks a kernel left untimed at a probe.
const NotTimed = time.Duration(-1)

// Force makes every layer run kernel at every batch where the layer has
// it, and the dense GEMM elsewhere (to compare kernels, or a compressed
// model against itself run dense) — also where the layer's output would
// otherwise be exact (Candidates).
func (m *Model) Force(kernel string) error {
	known := false
	for _, l := range m.Layers {
		if !l.Weighted() {
			continue
		}
		k := Dense
		if slices.Contains(l.available(), kernel) {
			k, known = kernel, true
		}
		for i := range l.Kernels {
			l.Kernels[i] = k
		}
	}
	if !known && kernel != Dense {
		return fmt.Errorf("infer: no layer of this model can run the %q kernel", kernel)
	}
	return nil
}

// Timing is the measured time of one kernel of a layer at each probe.
func (l *Layer) Timing(kernel string) []time.Duration { return l.measure[kernel] }

// kernel is the layer's kernel for a batch: the choice at the probe
// nearest to it on a log scale.
func (l *Layer) kernel(batch int) string {
	best, dist := 0, math.Inf(1)
	for i, p := range Probes {
		if d := math.Abs(math.Log(float64(batch) / float64(p))); d < dist {
			best, dist = i, d
		}
	}
	return l.Kernels[best]
}

// Spin is how long the runtime's engine should keep its threads spinning
// between layers (cpu.Options.Spin): a layer at batch 1 takes a few
// microseconds, about what waking a sleeping thread costs.
const Spin = 50 * time.Microsecond

// smallLayer is the most weights a dense layer runs as matrix-vector
// products at any batch.
const smallLayer = 1 << 14

// run applies one layer with the given kernel: y = act(x·Wᵀ + b), then the
// activation quantization.
func (m *Model) run(l *Layer, kernel string, y, x []float32, batch int) {
	switch kernel {
	case Dense:
		// One sample, or a layer so small (a classifier over pooled
		// features) that waking BLAS's threads costs more than its sums:
		// matrix-vector products.
		if hasAVX512 && l.In >= 16 && (batch == 1 || l.In*l.Out <= smallLayer) {
			for s := range batch {
				l.gemv(y[s*l.Out:(s+1)*l.Out], x[s*l.In:(s+1)*l.In])
			}
			break
		}
		m.eng.Sgemm(false, true, batch, l.Out, l.In, 1, x, l.In, l.w, l.In, 0, y, l.Out)
		for s := 0; s < batch; s++ {
			row := y[s*l.Out : (s+1)*l.Out]
			for j := range row {
				row[j] += l.b[j]
			}
		}
	case Int8:
		l.k8.run(m, l, y, x, batch)
	case NM:
		l.nm.run(l, y, x, batch)
	case CSR:
		for s := 0; s < batch; s++ {
			xs, row := x[s*l.In:(s+1)*l.In], y[s*l.Out:(s+1)*l.Out]
			for r := range row {
				var acc float32
				for k := l.rowPtr[r]; k < l.rowPtr[r+1]; k++ {
					acc += l.vals[k] * xs[l.cols[k]]
				}
				row[r] = acc + l.b[r]
			}
		}
	}
	l.activate(y)
}

// gemv is the dense kernel for one sample: y = W·x + b, four rows at a
// time over the inputs in blocks of 16 (AVX-512), the rest in Go — a
// GEMM's call costs more than the product at this size.
func (l *Layer) gemv(y, x []float32) {
	n16 := l.In &^ 15
	r := 0
	for ; r+4 <= l.Out; r += 4 {
		gemv4(&l.w[r*l.In], l.In, &x[0], n16, &y[r])
	}
	for ; r < l.Out; r++ {
		var acc float32
		for k, v := range l.w[r*l.In : r*l.In+n16] {
			acc += v * x[k]
		}
		y[r] = acc
	}
	for r := range l.Out {
		for k := n16; k < l.In; k++ {
			y[r] += l.w[r*l.In+k] * x[k]
		}
		y[r] += l.b[r]
	}
}

// activate applies the layer's activation (ReLU or ReLU6) and activation
// quantization to outputs that already hold the bias.
func (l *Layer) activate(y []float32) {
	switch l.act {
	case graph.ReLU:
		for i, v := range y {
			if v < 0 {
				y[i] = 0
			}
		}
	case graph.ReLU6:
		for i, v := range y {
			y[i] = min(max(v, 0), 6)
		}
	case graph.GELU:
		kernels.GELUPass(y, y, nil)
	case graph.Sigmoid:
		kernels.SigmoidPass(y, y, nil)
	case graph.SiLU:
		kernels.SiLUPass(y, y, nil)
	}
	if l.actQ != nil {
		l.actQ.Apply(y)
	}
}

// buildCSR lays out the non-zero weights by rows (the CSR and CSRT
// kernels' layout) and counts them.
func (l *Layer) buildCSR() {
	l.rowPtr, l.cols, l.vals = make([]int32, 1, l.Out+1), nil, nil
	for r := 0; r < l.Out; r++ {
		for c, v := range l.w[r*l.In : (r+1)*l.In] {
			if v != 0 {
				l.cols, l.vals = append(l.cols, int32(c)), append(l.vals, v)
			}
		}
		l.rowPtr = append(l.rowPtr, int32(len(l.vals)))
	}
	l.Nonzero = len(l.vals)
}

// Positions is the number of times a layer's weight is applied per
// sample: the output positions of a convolution, 1 for a linear layer.
func (l *Layer) Positions() int {
	if l.Kind == "conv" {
		return l.OH * l.OW
	}
	return 1
}

// FLOPs is the layer's multiply-adds ×2 per sample: dense counts every
// weight, effective only the non-zero ones (what the sparse kernels do).
func (l *Layer) FLOPs() (dense, effective int) {
	if l.Kind == string(graph.Attention) { // scores and weighted sums
		f := 4 * l.W * l.W * l.C
		return f, f
	}
	if !l.Weighted() {
		return 0, 0
	}
	return 2 * l.In * l.Out * l.Positions(), 2 * l.Nonzero * l.Positions()
}

// WeightBytes is what a kernel reads of the layer's parameters per call:
// the dense weight, or the non-zero values with their column indexes and
// row offsets; and the bias.
func (l *Layer) WeightBytes(kernel string) int {
	switch {
	case !l.Weighted():
		return 0
	case kernel == Dense:
		return 4 * (l.In*l.Out + l.Out)
	case kernel == Int8:
		return l.k8.r16*l.k8.k16 + 4*3*l.Out + 4*l.Out
	case kernel == NM:
		return 5*len(l.nm.vals) + 4*l.Out
	case kernel == Direct:
		return 4 * (l.direct.Weights() + l.Out)
	case kernel == DirectInt8:
		return len(l.direct8.w) + 4*4*len(l.direct8.scale)
	default:
		return 8*l.Nonzero + 4*(l.Out+1) + 4*l.Out
	}
}

// Bytes is the memory the model holds: parameters in every kernel's
// layout, and the buffers the last calls grew.
func (m *Model) Bytes() int {
	n := 0
	for _, b := range m.pool {
		n += 4 * cap(b)
	}
	n += 4*(cap(m.col)+cap(m.padded)+cap(m.normed)+cap(m.scores)) + cap(m.padded8)
	for _, l := range m.Layers {
		n += l.Bytes()
	}
	return n
}

// Bytes is the memory the layer's parameters hold, in every kernel's
// layout it keeps.
func (l *Layer) Bytes() int {
	n := 4*(len(l.w)+len(l.b)+len(l.taps)) + 8*len(l.vals) + 4*len(l.rowPtr)
	if l.direct != nil {
		n += 4 * l.direct.Weights()
	}
	if l.direct8 != nil {
		n += len(l.direct8.w) + 4*4*len(l.direct8.scale)
	}
	if l.k8 != nil {
		n += len(l.k8.w) + 4*(len(l.k8.rowSum)+len(l.k8.zw)+len(l.k8.scale))
	}
	if l.nm != nil {
		n += 5*len(l.nm.vals) + 4*len(l.nm.x)
	}
	return n
}

// Outputs is the layer's outputs per sample.
func (l *Layer) Outputs() int { return l.size }

// Kernel is the kernel the layer runs a batch with (empty for a layer
// without weights).
func (l *Layer) Kernel(batch int) string {
	if !l.Weighted() {
		return ""
	}
	return l.kernel(batch)
}

// keepRow makes a convolution over a one-row input a 1×K one: of each
// filter's K rows of K·C weights (and their integer codes) it keeps row ky,
// the only one that meets the input (the others meet padding alone and add
// nothing).
func (l *Layer) keepRow(ky int) {
	kc := l.K * l.C
	if q := l.wq; q != nil {
		l.wq = &checkpoint.Quant{Bits: q.Bits, QMin: q.QMin, Scale: q.Scale, Zero: q.Zero, Codes: kernelRow(q.Codes, l.Out, l.In, ky*kc, kc)}
	}
	l.w, l.In, l.oneRow = kernelRow(l.w, l.Out, l.In, ky*kc, kc), kc, true
}

// kernelRow returns the n values from off of each of out filters of in
// values in v, filter after filter.
func kernelRow[T any](v []T, out, in, off, n int) []T {
	r := make([]T, out*n)
	for o := range out {
		copy(r[o*n:(o+1)*n], v[o*in+off:])
	}
	return r
}
