package infer

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// Weighted says whether the layer has weights (linear, convolution): the
// layers whose kernels are chosen by measurement.
func (l *Layer) Weighted() bool {
	return l.Kind == string(graph.Linear) || l.Kind == string(graph.Conv)
}

// window is a convolution's or pooling's geometry over one image.
func (l *Layer) window() kernels.Window {
	return kernels.Window{H: l.H, W: l.W, C: l.C, K: l.K, Stride: l.Stride, Pad: l.Pad}
}

// directWindow is the geometry the direct kernels run: the layer's window,
// or for a convolution over one-row images (oneRow) a 1×1 one over its
// patches (Model.rowPatches).
func (l *Layer) directWindow() kernels.Window {
	if l.oneRow {
		return kernels.Window{H: 1, W: l.OW, C: l.In, K: 1, Stride: 1}
	}
	return l.window()
}

// foldNorms folds each batch norm that follows a convolution with float
// weights into it (graph.Network.Fold: the convolution's filters times
// γ/σ, its bias β + (b − μ)·γ/σ, the batch norm's activation), so that it
// costs no pass of its own; quantized filters keep their codes (a file
// trained with folding has no batch norm left). It returns the file with
// the folded tensors in place of the originals — a folded batch norm's
// activation range moved to its convolution — and the folded network.
func foldNorms[V any](f *checkpoint.File, net graph.Network, acts map[string]V) (*checkpoint.File, graph.Network, error) {
	pairs := map[string]string{}
	for conv, bn := range net.FoldPairs() {
		if w := f.Tensor(conv); w != nil && w.Quant == nil {
			pairs[conv] = bn
		}
	}
	if len(pairs) == 0 {
		return f, net, nil
	}
	folded, err := net.Fold(pairs)
	if err != nil {
		return nil, graph.Network{}, fmt.Errorf("infer: %w", err)
	}
	replace := map[string]*checkpoint.Tensor{}
	for conv, bn := range pairs {
		l := net.Layer(bn)
		nl := &Layer{Name: bn, C: l.In.C}
		if err := nl.foldBatchNorm(f); err != nil {
			return nil, graph.Network{}, err
		}
		w := f.Tensor(conv)
		if len(w.Data)%l.In.C != 0 {
			return nil, graph.Network{}, fmt.Errorf("infer: layer %s: weight of %d values for %d channels", conv, len(w.Data), l.In.C)
		}
		fw := make([]float32, len(w.Data))
		kernels.ScaleRows(fw, w.Data, nl.scale)
		fb := slices.Clone(nl.shift)
		if b := f.Tensor(conv + ".bias"); b != nil && len(b.Data) == len(fb) {
			for k, v := range b.Data {
				fb[k] += v * nl.scale[k]
			}
		}
		replace[conv] = &checkpoint.Tensor{Name: conv, Role: w.Role, Shape: w.Shape, Data: fw}
		replace[conv+".bias"] = &checkpoint.Tensor{Name: conv + ".bias", Role: w.Role, Shape: []int{len(fb)}, Data: fb}
		if a, ok := acts[bn]; ok {
			acts[conv] = a
			delete(acts, bn)
			if r := f.Tensor("act/" + bn); r != nil {
				replace["act/"+conv] = &checkpoint.Tensor{Name: "act/" + conv, Role: r.Role, Shape: r.Shape, Data: r.Data}
			}
		}
	}
	out := *f
	out.Tensors = nil
	for _, t := range f.Tensors {
		if r, ok := replace[t.Name]; ok {
			t = r
			delete(replace, t.Name)
		}
		out.Tensors = append(out.Tensors, t)
	}
	for _, name := range slices.Sorted(maps.Keys(replace)) { // a bias-free convolution's new bias
		out.Tensors = append(out.Tensors, replace[name])
	}
	return &out, folded, nil
}

// foldBatchNorm turns a batch norm's parameters and running statistics
// into the per-channel affine map it computes in evaluation.
func (l *Layer) foldBatchNorm(f *checkpoint.File) error {
	g, b := f.Tensor(l.Name), f.Tensor(l.Name+".bias")
	mean, vr := f.Tensor(l.Name+".running_mean"), f.Tensor(l.Name+".running_var")
	for _, t := range []*checkpoint.Tensor{g, b, mean, vr} {
		if t == nil || len(t.Data) != l.C {
			return fmt.Errorf("infer: layer %s: a batch norm's scale, shift or running statistics missing, or not %d channels", l.Name, l.C)
		}
	}
	l.scale, l.shift = make([]float32, l.C), make([]float32, l.C)
	for c := range l.C {
		l.scale[c] = graph.BNScale(g.Data[c], vr.Data[c])
		l.shift[c] = float32(float64(b.Data[c]) - float64(mean.Data[c])*float64(l.scale[c]))
	}
	return nil
}

// activation is a layer's output for a batch: in a pool buffer, possibly
// feature-major (a CSRT layer's, ld lanes per feature).
type activation struct {
	buf        int // pool index; -1: the model's input
	data       []float32
	transposed bool
	feats      int
}

// Forward computes the logits [batch, classes] of x [batch, features]
// (pixels scaled to [0, 1]). The returned slice is reused by the next call.
// Layers run in the order the network lists them; a layer's output buffer
// goes back to the pool once its last consumer has run (a chain of layers
// thus takes turns between two buffers). Between CSRT layers activations
// stay feature-major (transposed).
func (m *Model) Forward(x []float32, batch int) ([]float32, error) {
	if batch <= 0 || len(x) != batch*m.Features {
		return nil, fmt.Errorf("infer: %d inputs for a batch of %d samples of %d features", len(x), batch, m.Features)
	}
	if err := m.checkTokens(x); err != nil {
		return nil, err
	}
	if m.Net.SkipsPadding() {
		m.lens = slices.Grow(m.lens[:0], batch)[:batch]
		for b := range batch {
			m.lens[b] = graph.SeqLength(x[b*m.Features : (b+1)*m.Features])
		}
	}
	if len(m.last) != len(m.Layers) {
		m.last = make([]int, len(m.Layers)) // the last layer reading each output
		for i, l := range m.Layers {
			for _, j := range l.Inputs {
				if j >= 0 {
					m.last[j] = i
				}
			}
		}
		m.outs = make([]activation, len(m.Layers))
		m.fuse, m.fused = m.residuals(), make([]bool, len(m.Layers))
	}
	// Every buffer is free when a call starts (the last call's result
	// included: it is reused, as documented).
	last, outs, free, fused := m.last, m.outs, m.free[:0], m.fused
	clear(fused)
	for i := range m.pool {
		free = append(free, i)
	}
	take := func(n int) (int, []float32) {
		i := len(m.pool)
		if k := len(free); k > 0 {
			i, free = free[k-1], free[:k-1]
		} else {
			m.pool = append(m.pool, nil)
		}
		if cap(m.pool[i]) < n {
			m.pool[i] = make([]float32, n)
		}
		return i, m.pool[i][:n]
	}
	ld := ldFor(batch)
	if z := m.Net.Normalize; z != nil {
		normed := grow(&m.normed, len(x))
		z.Apply(normed, x)
		x = normed
	}
	input := activation{buf: -1, data: x, feats: m.Features}
	// as returns an activation in the layout a layer reads (a scratch
	// buffer handed back by release when it had to convert).
	scratch := m.scratch[:0]
	as := func(a activation, transposed bool) []float32 {
		switch {
		case a.transposed == transposed:
			return a.data
		case transposed:
			i, d := take(a.feats * ld)
			transpose(d, a.data, batch, a.feats, ld)
			scratch = append(scratch, i)
			return d
		default:
			i, d := take(batch * a.feats)
			untranspose(d, a.data, batch, a.feats, ld)
			scratch = append(scratch, i)
			return d
		}
	}
	in := func(j int) activation {
		if j < 0 {
			return input
		}
		return outs[j]
	}
	var srcs [4][]float32 // an addition's inputs (the graph's DAGs have two)
	var t0 time.Time
	if m.clock != nil {
		t0 = time.Now()
	}
	for i, l := range m.Layers {
		if a := m.fuse[i]; a >= 0 && isDirect(l.kernel(batch)) && m.trace == nil {
			// A convolution that finishes a residual addition: the sum
			// and its activation on each output row as it is written.
			add := m.Layers[a]
			res, act := as(in(min(add.Inputs[0], add.Inputs[1])), false), kernels.ActOf(string(add.act))
			b, dst := take(batch * l.size)
			m.directConv(l, l.kernel(batch), dst, as(in(l.Inputs[0]), false), batch, func(off int, row []float32) {
				if l.actQ != nil {
					l.actQ.Apply(row)
				}
				kernels.AddAct(row, row, res[off:off+len(row)], act)
				if add.actQ != nil {
					add.actQ.Apply(row)
				}
			})
			outs[i], fused[a] = activation{buf: b, data: dst, feats: l.size}, true
		} else if fused[i] { // its sum is the convolution's output
			outs[i] = outs[max(l.Inputs[0], l.Inputs[1])]
		} else if l.Kind == string(graph.Linear) && l.kernel(batch) == CSRT {
			src := as(in(l.Inputs[0]), true)
			b, dst := take(l.Out * ld)
			l.runT(dst, src, ld)
			outs[i] = activation{buf: b, data: dst, transposed: true, feats: l.Out}
		} else {
			ss := srcs[:0]
			for _, j := range l.Inputs {
				ss = append(ss, as(in(j), false))
			}
			b, dst := take(batch * l.size)
			m.apply(l, dst, ss, batch)
			outs[i] = activation{buf: b, data: dst, feats: l.size}
		}
		if m.trace != nil {
			m.trace(l, as(in(l.Inputs[0]), false), as(outs[i], false))
		}
		if m.clock != nil { // LayerTimes: the layer's share, conversions included
			now := time.Now()
			m.clock[i] = now.Sub(t0)
			t0 = now
		}
		free = append(free, scratch...)
		scratch = scratch[:0]
		for _, j := range l.Inputs {
			if j >= 0 && last[j] == i && (!fused[i] || m.fuse[j] != i) {
				free = append(free, outs[j].buf)
			}
		}
	}
	y := as(outs[len(outs)-1], false)
	m.free, m.scratch = free, scratch
	if m.Net.Softmax {
		for r := range len(y) / m.Classes {
			softmax(y[r*m.Classes : (r+1)*m.Classes])
		}
	}
	return y, nil
}

// softmax maps scores to probabilities in place: e^(v − max) / Σ, in
// float64.
func softmax(v []float32) {
	top := slices.Max(v)
	var sum float64
	for _, x := range v {
		sum += math.Exp(float64(x - top))
	}
	for i, x := range v {
		v[i] = float32(math.Exp(float64(x-top)) / sum)
	}
}

// Trace runs Forward on x and calls fn after each layer with the layer,
// its (first) input and its output, both [batch, features] — what
// post-training compression calibrates on. While tracing, no residual
// addition is fused into the convolution before it, so each layer's own
// output is seen.
func (m *Model) Trace(x []float32, batch int, fn func(l *Layer, in, out []float32)) ([]float32, error) {
	m.trace = fn
	defer func() { m.trace = nil }()
	return m.Forward(x, batch)
}

// apply runs one layer (but a CSRT one) on inputs in [batch, features]
// layout.
func (m *Model) apply(l *Layer, dst []float32, srcs [][]float32, batch int) {
	src := srcs[0]
	isz := l.H * l.W * l.C
	switch graph.Kind(l.Kind) {
	case graph.Linear:
		m.run(l, l.kernel(batch), dst, src, batch)
	case graph.Conv:
		m.conv(l, dst, src, batch)
	case graph.MaxPool, graph.AvgPool, graph.GlobalAvgPool:
		for s := range batch {
			positions := l.H * l.W
			if l.skipPadding {
				positions = m.lens[s]
			}
			l.poolImage(dst[s*l.size:(s+1)*l.size], src[s*isz:(s+1)*isz], positions)
		}
	case graph.BatchNorm:
		for i, v := range src {
			c := i % l.C
			dst[i] = v*l.scale[c] + l.shift[c]
		}
		l.activate(dst)
	case graph.Add:
		copy(dst, src)
		for _, o := range srcs[1 : len(srcs)-1] {
			kernels.AddAct(dst, dst, o, kernels.ActNone)
		}
		kernels.AddAct(dst, dst, srcs[len(srcs)-1], kernels.ActNone)
		l.activate(dst) // (and the output's quantization)
	case graph.Flatten:
		copy(dst, src) // NHWC samples are rows of H·W·C values already
	case graph.Embedding:
		l.embed(dst, src, batch)
	case graph.LayerNorm:
		l.layerNorm(m.eng, dst, src)
	case graph.Attention:
		m.attend(l, dst, srcs, batch)
	}
}

// conv runs a convolution: every output position is a row of patches, and
// the layer's kernel (or, grouped, a GEMM per group) runs over the
// batch·OH·OW rows.
func (m *Model) conv(l *Layer, dst, src []float32, batch int) {
	m.convWith(l, l.kernel(batch), dst, src, batch)
}

// convWith runs a convolution with kernel k.
func (m *Model) convWith(l *Layer, k string, dst, src []float32, batch int) {
	if isDirect(k) {
		m.directConv(l, k, dst, src, batch, nil)
		return
	}
	rows := batch * l.OH * l.OW
	if l.oneRow {
		m.run(l, k, dst, m.rowPatches(l, src, batch), rows)
		return
	}
	per, isz, win := l.OH*l.OW*l.In, l.H*l.W*l.C, l.window()
	col := grow(&m.col, rows*l.In)
	if l.Groups == 1 {
		for s := range batch {
			win.Im2col(col[s*per:(s+1)*per], src[s*isz:(s+1)*isz], 0, l.C)
		}
		m.run(l, k, dst, col, rows)
		return
	}
	if l.taps != nil {
		m.depthwise(l, dst, src, batch)
		return
	}
	cg, fg := l.C/l.Groups, l.Out/l.Groups
	for g := range l.Groups {
		for s := range batch {
			win.Im2col(col[s*per:(s+1)*per], src[s*isz:(s+1)*isz], g*cg, cg)
		}
		m.eng.Sgemm(false, true, rows, fg, l.In, 1, col, l.In, l.w[g*fg*l.In:(g+1)*fg*l.In], l.In, 0, dst[g*fg:], l.Out)
	}
	for r := range rows {
		row := dst[r*l.Out : (r+1)*l.Out]
		for j := range row {
			row[j] += l.b[j]
		}
	}
	l.activate(dst)
}

// rowPatches returns the patches of a convolution over one-row images
// (Layer.oneRow) in m.col: per output position the K·C values of the
// kernel row that meets the image, padding as zero — for the direct
// kernels, one-row images of OW positions of K·C channels.
func (m *Model) rowPatches(l *Layer, src []float32, batch int) []float32 {
	col, run := grow(&m.col, batch*l.OW*l.In), l.In
	for r := range batch * l.OW {
		s, ox := r/l.OW, r%l.OW
		x, dst := src[s*l.W*l.C:(s+1)*l.W*l.C], col[r*run:(r+1)*run]
		for kx := range l.K {
			d := dst[kx*l.C : (kx+1)*l.C]
			if ix := ox*l.Stride - l.Pad + kx; ix < 0 || ix >= l.W {
				clear(d)
			} else {
				copy(d, x[ix*l.C:(ix+1)*l.C])
			}
		}
	}
	return col
}

// grow returns (*buf)[:n], growing the buffer when it is shorter.
func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

// isDirect says whether kernel k is a direct convolution (no patch rows).
func isDirect(k string) bool { return k == Direct || k == DirectInt8 }

// directConv runs a convolution with a direct kernel k (Direct or
// DirectInt8): the images padded, then output rows shared among the
// engine's threads. after, when set, runs on each output row instead of the activation's
// quantization (the bias and activation are the kernel's).
func (m *Model) directConv(l *Layer, k string, dst, src []float32, batch int, after func(off int, row []float32)) {
	if l.oneRow { // a 1×1 convolution over the patches
		src = m.rowPatches(l, src, batch)
	}
	if l.act.Separate() { // not one the kernels fuse
		after = func(_ int, row []float32) { l.activate(row) }
	} else if after == nil && l.actQ != nil {
		after = func(_ int, row []float32) { l.actQ.Apply(row) }
	}
	if k == DirectInt8 {
		d := l.direct8
		if cap(m.padded8) < batch*d.plen {
			m.padded8 = make([]uint8, batch*d.plen)
		}
		kernels.Batch[uint8](d, m.eng.Parallel, dst, src, m.padded8[:batch*d.plen], batch, after)
		return
	}
	l.direct.Batch(m.eng.Parallel, dst, src, grow(&m.padded, batch*l.direct.PaddedLen()), batch, after)
}

// residuals finds the residual additions a direct convolution can finish:
// an addition of two outputs, the later one a convolution without an
// activation read by nothing else. fuse[conv] is the addition's index
// (-1: none).
func (m *Model) residuals() []int {
	fuse, readers := make([]int, len(m.Layers)), make([]int, len(m.Layers))
	for _, l := range m.Layers {
		for _, j := range l.Inputs {
			if j >= 0 {
				readers[j]++
			}
		}
	}
	for i := range fuse {
		fuse[i] = -1
	}
	for a, l := range m.Layers {
		if l.Kind != string(graph.Add) || len(l.Inputs) != 2 || l.Inputs[0] == l.Inputs[1] {
			continue
		}
		j := max(l.Inputs[0], l.Inputs[1])
		if l.act.Separate() { // the rows' pass takes ReLU and ReLU6 only
			continue
		}
		if c := m.Layers[j]; (c.direct != nil || c.direct8 != nil) && (c.act == graph.Identity || c.act == "") && readers[j] == 1 {
			fuse[j] = a
		}
	}
	return fuse
}

// depthwise runs a depthwise convolution directly (kernels.Depthwise),
// images shared among the engine's threads.
func (m *Model) depthwise(l *Layer, dst, src []float32, batch int) {
	d, isz, osz := kernels.Depthwise{Win: l.window()}, l.H*l.W*l.C, l.OH*l.OW*l.Out
	m.eng.Parallel(batch, 1, func(lo, hi int) {
		for s := lo; s < hi; s++ {
			out := dst[s*osz : (s+1)*osz]
			d.Forward(out, src[s*isz:(s+1)*isz], l.taps)
			for p := range l.OH * l.OW {
				o := out[p*l.Out : (p+1)*l.Out]
				for j, b := range l.b {
					o[j] += b
				}
			}
			l.activate(out)
		}
	})
}

// poolImage pools one NHWC image: the maximum (padding never wins) or the
// mean (the padding counted, as PyTorch's default) of each window, or of
// the image's first positions (global: all of them, or a sequence's
// length where the pooling skips padding).
func (l *Layer) poolImage(out, img []float32, positions int) {
	if graph.Kind(l.Kind) == graph.GlobalAvgPool {
		clear(out)
		for p := 0; p < positions; p++ {
			for c, v := range img[p*l.C : (p+1)*l.C] {
				out[c] += v
			}
		}
		for c := range out {
			out[c] /= float32(positions)
		}
		return
	}
	isMax := graph.Kind(l.Kind) == graph.MaxPool
	for oy := range l.OH {
		for ox := range l.OW {
			o := out[(oy*l.OW+ox)*l.C : (oy*l.OW+ox+1)*l.C]
			for c := range o {
				o[c] = 0
				if isMax {
					o[c] = float32(math.Inf(-1))
				}
			}
			for ky := range l.K {
				iy := oy*l.Stride - l.Pad + ky
				if iy < 0 || iy >= l.H {
					continue
				}
				for kx := range l.K {
					ix := ox*l.Stride - l.Pad + kx
					if ix < 0 || ix >= l.W {
						continue
					}
					px := img[(iy*l.W+ix)*l.C : (iy*l.W+ix+1)*l.C]
					for c, v := range px {
						if !isMax {
							o[c] += v
						} else if v > o[c] {
							o[c] = v
						}
					}
				}
			}
			if !isMax {
				for c := range o {
					o[c] /= float32(l.K * l.K)
				}
			}
		}
	}
}
