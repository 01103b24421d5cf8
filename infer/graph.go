package infer

import (
	"fmt"
	"math"

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
		k := float64(g.Data[c]) / math.Sqrt(float64(vr.Data[c])+graph.BNEpsilon)
		l.scale[c] = float32(k)
		l.shift[c] = float32(float64(b.Data[c]) - float64(mean.Data[c])*k)
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
	}
	// Every buffer is free when a call starts (the last call's result
	// included: it is reused, as documented).
	last, outs, free := m.last, m.outs, m.free[:0]
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
	for i, l := range m.Layers {
		if l.Kind == string(graph.Linear) && l.kernel(batch) == CSRT {
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
		free = append(free, scratch...)
		scratch = scratch[:0]
		for _, j := range l.Inputs {
			if j >= 0 && last[j] == i {
				free = append(free, outs[j].buf)
			}
		}
	}
	y := as(outs[len(outs)-1], false)
	m.free, m.scratch = free, scratch
	return y, nil
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
			l.poolImage(dst[s*l.size:(s+1)*l.size], src[s*isz:(s+1)*isz])
		}
	case graph.BatchNorm:
		for i, v := range src {
			c := i % l.C
			dst[i] = v*l.scale[c] + l.shift[c]
		}
		l.activate(dst)
	case graph.Add:
		copy(dst, src)
		for _, o := range srcs[1:] {
			for i, v := range o {
				dst[i] += v
			}
		}
		l.activate(dst)
	case graph.Flatten:
		copy(dst, src) // NHWC samples are rows of H·W·C values already
	}
}

// conv runs a convolution: every output position is a row of patches, and
// the layer's kernel (or, grouped, a GEMM per group) runs over the
// batch·OH·OW rows.
func (m *Model) conv(l *Layer, dst, src []float32, batch int) {
	rows := batch * l.OH * l.OW
	per, isz, win := l.OH*l.OW*l.In, l.H*l.W*l.C, l.window()
	if cap(l.col) < rows*l.In {
		l.col = make([]float32, rows*l.In)
	}
	col := l.col[:rows*l.In]
	if l.Groups == 1 {
		for s := range batch {
			win.Im2col(col[s*per:(s+1)*per], src[s*isz:(s+1)*isz], 0, l.C)
		}
		m.run(l, l.kernel(batch), dst, col, rows)
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

// poolImage pools one NHWC image: the maximum (padding never wins) or the
// mean (the padding counted, as PyTorch's default) of each window, or of
// the whole image (global).
func (l *Layer) poolImage(out, img []float32) {
	if graph.Kind(l.Kind) == graph.GlobalAvgPool {
		clear(out)
		for p := 0; p < l.H*l.W; p++ {
			for c, v := range img[p*l.C : (p+1)*l.C] {
				out[c] += v
			}
		}
		for c := range out {
			out[c] /= float32(l.H * l.W)
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
