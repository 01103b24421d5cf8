package model

import (
	"slices"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/graphop"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// conv2dOp is a convolution (stride, zero padding, groups) with a fused
// bias (when the layer has one) and activation, computed per group as
// im2col and one GEMM over the whole batch. Inputs: x [n, H·W·C] (NHWC),
// W [F, K, K, C/G], b [F] unless bias-free; output [n, OH·OW·F] (NHWC).
// Patches are laid out (ky, kx, c), matching W's layout, so that without
// padding and groups a patch row is K contiguous copies of K·C inputs.
type conv2dOp struct {
	opBase
	l      graph.Layer
	act    Activation
	needDX bool
	// eval: an evaluation graph's op, which keeps no patches for a weight
	// gradient and so runs the batch in chunks of bounded patch memory.
	eval bool
	col  []float32 // [G][n·OH·OW, K·K·C/G], kept for the weight gradient
	// A depthwise convolution keeps its input and filters as taps instead;
	// one on the direct kernel its input (and its padded images).
	x, taps, padded []float32
	out             buffer
}

func newConv(eng compute.Engine, l graph.Layer, needDX, train bool) *conv2dOp {
	return &conv2dOp{opBase: newBase(l.Name, eng), l: l, act: activation(l.Act), needDX: needDX, eval: !train}
}

// evalChunk bounds an evaluation graph's patch buffer (floats): a
// ResNet's first stage at a batch of 1000 would otherwise take 450 MB a
// convolution.
var evalChunk = 1 << 22

func (o *conv2dOp) outGeom() graph.Shape { return o.l.Output() }
func (o *conv2dOp) window() kernels.Window {
	k, s, p := o.l.Window()
	return kernels.Window{H: o.l.In.H, W: o.l.In.W, C: o.l.In.C, K: k, Stride: s, Pad: p}
}
func (o *conv2dOp) groups() int { return o.l.GroupCount() }
func (o *conv2dOp) cg() int     { return o.l.In.C / o.groups() } // input channels per group
func (o *conv2dOp) fg() int     { return o.l.Out / o.groups() }  // filters per group
func (o *conv2dOp) patch() int  { return o.l.Kernel * o.l.Kernel * o.cg() }
func (o *conv2dOp) bias() bool  { return !o.l.NoBias }

func (o *conv2dOp) Arity() int {
	if o.bias() {
		return 3
	}
	return 2
}
func (o *conv2dOp) Type() hm.Type {
	if o.bias() {
		return fnType(f32T(2), f32T(2), f32T(4), f32T(1))
	}
	return fnType(f32T(2), f32T(2), f32T(4))
}
func (o *conv2dOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	x, w := in[0].(tensor.Shape), in[1].(tensor.Shape)
	if len(x) != 2 || x[1] != o.l.In.Size() {
		return nil, o.ShapeErr("input %v, want [n, %d]", x, o.l.In.Size())
	}
	k := o.l.Kernel
	if !w.Eq(tensor.Shape{o.l.Out, k, k, o.cg()}) {
		return nil, o.ShapeErr("weights %v, want [%d %d %d %d]", w, o.l.Out, k, k, o.cg())
	}
	return tensor.Shape{x[0], o.outGeom().Size()}, nil
}

func (o *conv2dOp) Do(vs ...G.Value) (G.Value, error) {
	n := vs[0].Shape()[0]
	og, p := o.outGeom(), o.patch()
	x := data(vs[0])
	isz := o.l.In.Size()
	if len(x) != n*isz {
		return nil, o.ShapeErr("input holds %d values, want %d", len(x), n*isz)
	}
	y := o.out.Get(n, og.Size())
	yd := y.Float32s()
	if o.depthwise() {
		o.x = x // for dW
		o.forwardDepthwise(yd, x, data(vs[1]), n)
		var b []float32
		if o.bias() {
			b = data(vs[2])
		}
		biasAct(o.Eng, yd, b, n*og.H*og.W, o.l.Out, o.act)
		return y, nil
	}
	if o.direct() {
		var b []float32
		if o.bias() {
			b = data(vs[2])
		}
		o.x = x // for dW's patches
		o.runDirect(yd, x, kernels.NewDirectConv(o.window(), o.l.Out, data(vs[1]), b, kernels.ActOf(string(o.l.Act))), n)
		return y, nil
	}
	chunk := n // a training graph keeps every patch for dW
	if o.eval {
		chunk = max(1, min(n, evalChunk/(o.groups()*og.H*og.W*p)))
	}
	for s0 := 0; s0 < n; s0 += chunk {
		s1 := min(n, s0+chunk)
		o.forward(yd[s0*og.Size():s1*og.Size()], x[s0*isz:s1*isz], data(vs[1]), s1-s0)
	}
	var b []float32
	if o.bias() {
		b = data(vs[2])
	}
	biasAct(o.Eng, yd, b, n*og.H*og.W, o.l.Out, o.act)
	return y, nil
}

// forward computes the convolution (without bias and activation) of n
// samples x with weights w into y through the patch buffer.
func (o *conv2dOp) forward(y, x, w []float32, n int) {
	og, ng, p := o.outGeom(), o.groups(), o.patch()
	rows := n * og.H * og.W
	o.patches(x, n)
	f, fg := o.l.Out, o.fg()
	for g := range ng {
		o.Eng.Sgemm(false, true, rows, fg, p, 1, o.col[g*rows*p:(g+1)*rows*p], p, w[g*fg*p:(g+1)*fg*p], p, 0, y[g*fg:], f)
	}
}

// direct says whether the convolution runs kernels.DirectConv (groups 1,
// where the CPU runs it in SIMD): the forward pass, and a stride-1 input
// gradient as the convolution of the output gradient with the filters
// turned around. The weight gradient takes the patches (made then).
func (o *conv2dOp) direct() bool { return o.groups() == 1 && kernels.HasDirect() }

// runDirect computes y [n, OH·OW·F] from images x [n, H·W·C] with d,
// output rows shared among the threads.
func (o *conv2dOp) runDirect(y, x []float32, d *kernels.DirectConv, n int) {
	if cap(o.padded) < n*d.PaddedLen() {
		o.padded = make([]float32, n*d.PaddedLen())
	}
	d.Batch(o.Eng.Parallel, y, x, o.padded[:n*d.PaddedLen()], n, nil)
}

// depthwise says whether the convolution is depthwise (a filter per
// channel): it runs kernels.Depthwise, without patches.
func (o *conv2dOp) depthwise() bool { return o.groups() > 1 && o.cg() == 1 && o.fg() == 1 }

// forwardDepthwise is forward for a depthwise convolution.
func (o *conv2dOp) forwardDepthwise(y, x, w []float32, n int) {
	c, k := o.l.In.C, o.l.Kernel
	if len(o.taps) != len(w) {
		o.taps = make([]float32, len(w))
	}
	kernels.Taps(o.taps, w, c, k)
	d, isz, osz := kernels.Depthwise{Win: o.window()}, o.l.In.Size(), o.outGeom().Size()
	o.Eng.Parallel(n, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			d.Forward(y[b*osz:(b+1)*osz], x[b*isz:(b+1)*isz], o.taps)
		}
	})
}

// patches lays out the patch rows of n images x in o.col, per group.
func (o *conv2dOp) patches(x []float32, n int) {
	og, win, ng, cg, p := o.outGeom(), o.window(), o.groups(), o.cg(), o.patch()
	rows, isz, per := n*og.H*og.W, o.l.In.Size(), og.H*og.W*p
	if cap(o.col) < ng*rows*p {
		o.col = make([]float32, ng*rows*p)
	}
	o.col = o.col[:ng*rows*p]
	o.Eng.Parallel(n, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			for g := range ng {
				win.Im2col(o.col[g*rows*p+b*per:g*rows*p+(b+1)*per], x[b*isz:(b+1)*isz], g*cg, cg)
			}
		}
	})
}

// im2col writes the K×K patches of one NHWC image, a row per output pixel
// (a valid, stride-1 convolution).
func im2col(col, x []float32, g graph.Shape, k int) { kernels.Im2col(col, x, g.H, g.W, g.C, k) }

func (o *conv2dOp) DiffWRT(int) []bool {
	if o.bias() {
		return []bool{o.needDX, true, true}
	}
	return []bool{o.needDX, true}
}
func (o *conv2dOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dz, db, err := actGrad(o.Name, o.Eng, o.act, output, grad, o.l.Out, o.bias())
	if err != nil {
		return nil, err
	}
	dw, err := G.ApplyOp(&convGradWOp{opBase: newBase(o.Name+".dW", o.Eng), fwd: o}, dz, in[1])
	if err != nil {
		return nil, err
	}
	var dx *G.Node
	if o.needDX {
		if dx, err = G.ApplyOp(&convGradXOp{opBase: newBase(o.Name+".dx", o.Eng), fwd: o}, dz, in[1]); err != nil {
			return nil, err
		}
	}
	if !o.bias() {
		return G.Nodes{dx, dw}, nil
	}
	return G.Nodes{dx, dw, db}, nil
}

// convGradWOp computes, into the slot its user chose (graphop.Slotted),
// per group, dzᵀ·col from the forward op's patches —
// or, for a convolution on the direct kernel with filters and channels in
// whole SIMD tiles, the same sums without patches (kernels.GradW); inputs
// dz and W (for the shape).
type convGradWOp struct {
	opBase
	fwd      *conv2dOp
	taps     []float32 // a depthwise convolution's filter gradient, [K·K][C]
	partials []float32 // kernels.GradW's chunks
	out      graphop.Slots
}

func (o *convGradWOp) UseSlot(k int) { o.out.Use(k) }

func (o *convGradWOp) Arity() int    { return 2 }
func (o *convGradWOp) Type() hm.Type { return fnType(f32T(4), f32T(2), f32T(4)) }
func (o *convGradWOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[1].(tensor.Shape).Clone(), nil
}
func (o *convGradWOp) Do(vs ...G.Value) (G.Value, error) {
	if o.fwd.depthwise() {
		return o.depthwise(vs)
	}
	f, fg, p, ng := o.fwd.l.Out, o.fwd.fg(), o.fwd.patch(), o.fwd.groups()
	dw := o.out.Get(vs[1].Shape()...)
	dz, d := data(vs[0]), dw.Float32s()
	if o.fwd.direct() {
		n := len(o.fwd.x) / o.fwd.l.In.Size()
		if win := o.fwd.window(); kernels.GradWFast(win, f) {
			o.partials = kernels.GradW(o.Eng.Parallel, win, f, dz, o.fwd.x, n, d, o.partials)
			return dw, nil
		}
		o.fwd.patches(o.fwd.x, n)
	}
	rows := len(o.fwd.col) / p / ng
	for g := range ng {
		o.Eng.Sgemm(true, false, fg, p, rows, 1, dz[g*fg:], f, o.fwd.col[g*rows*p:(g+1)*rows*p], p, 0, d[g*fg*p:(g+1)*fg*p], p)
	}
	return dw, nil
}

// depthwise is Do for a depthwise convolution: threads own channel
// ranges, each summing over the images in order.
func (o *convGradWOp) depthwise(vs []G.Value) (G.Value, error) {
	fw := o.fwd
	dz, x := data(vs[0]), fw.x
	c, k := fw.l.In.C, fw.l.Kernel
	n := len(x) / fw.l.In.Size()
	if len(o.taps) != c*k*k {
		o.taps = make([]float32, c*k*k)
	}
	clear(o.taps)
	d, isz, osz := kernels.Depthwise{Win: fw.window()}, fw.l.In.Size(), fw.outGeom().Size()
	o.Eng.Parallel(c, 1, func(c0, c1 int) {
		for b := range n {
			d.GradW(o.taps, dz[b*osz:(b+1)*osz], x[b*isz:(b+1)*isz], c0, c1)
		}
	})
	dw := o.out.Get(vs[1].Shape()...)
	kernels.Untaps(dw.Float32s(), o.taps, c, k)
	return dw, nil
}

// convGradXOp computes the input gradient: per group dcol = dz·W, then
// col2im.
type convGradXOp struct {
	opBase
	fwd    *conv2dOp
	dcol   []float32
	turned []float32 // the direct form's filters, turned around
	out    buffer
}

func (o *convGradXOp) Arity() int    { return 2 }
func (o *convGradXOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(4)) }
func (o *convGradXOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{in[0].(tensor.Shape)[0], o.fwd.l.In.Size()}, nil
}
func (o *convGradXOp) Do(vs ...G.Value) (G.Value, error) {
	n := vs[0].Shape()[0]
	if fw := o.fwd; fw.direct() && fw.window().Stride == 1 {
		return o.direct(vs, n)
	}
	if fw := o.fwd; fw.depthwise() { // the forward pass laid out the taps
		dx := o.out.Get(n, fw.l.In.Size())
		dz, dd := data(vs[0]), dx.Float32s()
		d, isz, osz := kernels.Depthwise{Win: fw.window()}, fw.l.In.Size(), fw.outGeom().Size()
		o.Eng.Parallel(n, 1, func(lo, hi int) {
			for b := lo; b < hi; b++ {
				d.GradX(dd[b*isz:(b+1)*isz], dz[b*osz:(b+1)*osz], fw.taps)
			}
		})
		return dx, nil
	}
	f, fg, p, og, ng, cg := o.fwd.l.Out, o.fwd.fg(), o.fwd.patch(), o.fwd.outGeom(), o.fwd.groups(), o.fwd.cg()
	rows := n * og.H * og.W
	if len(o.dcol) != ng*rows*p {
		o.dcol = make([]float32, ng*rows*p)
	}
	dz, w := data(vs[0]), data(vs[1])
	for g := range ng {
		o.Eng.Sgemm(false, false, rows, p, fg, 1, dz[g*fg:], f, w[g*fg*p:(g+1)*fg*p], p, 0, o.dcol[g*rows*p:(g+1)*rows*p], p)
	}
	dx := o.out.Get(n, o.fwd.l.In.Size())
	dd := dx.Float32s()
	isz, per, win := o.fwd.l.In.Size(), og.H*og.W*p, o.fwd.window()
	o.Eng.Parallel(n, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			img := dd[b*isz : (b+1)*isz]
			clear(img)
			for g := range ng {
				win.Col2im(img, o.dcol[g*rows*p+b*per:g*rows*p+(b+1)*per], g*cg, cg)
			}
		}
	})
	return dx, nil
}

// direct is Do for a stride-1 convolution on the direct kernel: dx is
// dz, padded by K−1−pad, convolved with the filters turned around —
// W'[c][ky][kx][f] = W[f][K−1−ky][K−1−kx][c].
func (o *convGradXOp) direct(vs []G.Value, n int) (G.Value, error) {
	fw := o.fwd
	k, c, f := fw.l.Kernel, fw.l.In.C, fw.l.Out
	og, win := fw.outGeom(), fw.window()
	w := data(vs[1])
	if len(o.turned) != len(w) {
		o.turned = make([]float32, len(w))
	}
	for fi := range f {
		for ky := range k {
			for kx := range k {
				src := w[((fi*k+ky)*k+kx)*c:]
				for ci := range c {
					o.turned[((ci*k+(k-1-ky))*k+(k-1-kx))*f+fi] = src[ci]
				}
			}
		}
	}
	back := kernels.Window{H: og.H, W: og.W, C: f, K: k, Stride: 1, Pad: k - 1 - win.Pad}
	dx := o.out.Get(n, fw.l.In.Size())
	fw.runDirect(dx.Float32s(), data(vs[0]), kernels.NewDirectConv(back, c, o.turned, nil, kernels.ActNone), n)
	return dx, nil
}

// ---------------------------------------------------------------- pooling

// maxPoolOp is a max pooling of K×K windows (stride, padding; padding
// never wins) over NHWC images: input [n, H·W·C], output [n, OH·OW·C].
// It remembers where each maximum came from for the backward pass; ties
// go to the first in (ky, kx) order.
type maxPoolOp struct {
	opBase
	l   graph.Layer
	arg []int32 // per output element: offset of the maximum within its image
	out buffer
}

func (o *maxPoolOp) outGeom() graph.Shape { return o.l.Output() }

func (o *maxPoolOp) Arity() int    { return 1 }
func (o *maxPoolOp) Type() hm.Type { return fnType(f32T(2), f32T(2)) }
func (o *maxPoolOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	x := in[0].(tensor.Shape)
	if len(x) != 2 || x[1] != o.l.In.Size() {
		return nil, o.ShapeErr("input %v, want [n, %d]", x, o.l.In.Size())
	}
	return tensor.Shape{x[0], o.outGeom().Size()}, nil
}
func (o *maxPoolOp) Do(vs ...G.Value) (G.Value, error) {
	n := vs[0].Shape()[0]
	og, g := o.outGeom(), o.l.In
	k, st, pad := o.l.Window()
	x := data(vs[0])
	y := o.out.Get(n, og.Size())
	yd := y.Float32s()
	if len(o.arg) != len(yd) {
		o.arg = make([]int32, len(yd))
	}
	o.Eng.Parallel(n, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			img := x[b*g.Size() : (b+1)*g.Size()]
			out := yd[b*og.Size() : (b+1)*og.Size()]
			arg := o.arg[b*og.Size() : (b+1)*og.Size()]
			for oy := 0; oy < og.H; oy++ {
				for ox := 0; ox < og.W; ox++ {
					o0 := (oy*og.W + ox) * og.C
					for c := 0; c < g.C; c++ {
						at := -1
						var best float32
						for ky := 0; ky < k; ky++ {
							iy := oy*st - pad + ky
							if iy < 0 || iy >= g.H {
								continue
							}
							for kx := 0; kx < k; kx++ {
								ix := ox*st - pad + kx
								if ix < 0 || ix >= g.W {
									continue
								}
								if off := (iy*g.W+ix)*g.C + c; at < 0 || img[off] > best {
									best, at = img[off], off
								}
							}
						}
						out[o0+c] = best
						arg[o0+c] = int32(at)
					}
				}
			}
		}
	})
	return y, nil
}
func (o *maxPoolOp) DiffWRT(int) []bool { return []bool{true} }
func (o *maxPoolOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	d, err := G.ApplyOp(&maxPoolGradOp{opBase: newBase(o.Name+".grad", o.Eng), fwd: o}, grad)
	return G.Nodes{d}, err
}

type maxPoolGradOp struct {
	opBase
	fwd *maxPoolOp
	out buffer
}

func (o *maxPoolGradOp) Arity() int    { return 1 }
func (o *maxPoolGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2)) }
func (o *maxPoolGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{in[0].(tensor.Shape)[0], o.fwd.l.In.Size()}, nil
}
func (o *maxPoolGradOp) Do(vs ...G.Value) (G.Value, error) {
	n := vs[0].Shape()[0]
	dy := data(vs[0])
	isz, osz := o.fwd.l.In.Size(), o.fwd.outGeom().Size()
	dx := o.out.Get(n, isz)
	dd := dx.Float32s()
	o.Eng.Parallel(n, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			img := dd[b*isz : (b+1)*isz]
			clear(img)
			g := dy[b*osz : (b+1)*osz]
			for i, a := range o.fwd.arg[b*osz : (b+1)*osz] {
				img[a] += g[i]
			}
		}
	})
	return dx, nil
}

// avgPoolOp averages K×K windows (stride, padding; a window's sum is
// divided by K·K, the padding counted, as PyTorch's default) or, global,
// each channel over the whole image: input [n, H·W·C], output
// [n, OH·OW·C]. Its backward spreads each output's gradient evenly.
//
// A global pooling that skips padding (Layer.SkipPadding) takes the
// token ids [n, T] too, and averages each sample over its first
// graph.SeqLength positions (all of them: the plain pooling's bits).
type avgPoolOp struct {
	opBase
	l    graph.Layer
	lens []int // the last batch's lengths, when skipping padding
	out  buffer
}

// geometry is the pooling as a window (global: one window the image's size).
func (o *avgPoolOp) geometry() (k, st, pad int, div float32) {
	if o.l.Kind == graph.GlobalAvgPool {
		return 0, 0, 0, float32(o.l.In.H * o.l.In.W)
	}
	k, st, pad = o.l.Window()
	return k, st, pad, float32(k * k)
}

func (o *avgPoolOp) Arity() int {
	if o.l.SkipPadding {
		return 2
	}
	return 1
}
func (o *avgPoolOp) Type() hm.Type {
	if o.l.SkipPadding {
		return fnType(f32T(2), f32T(2), f32T(2))
	}
	return fnType(f32T(2), f32T(2))
}

// positions is sample b's positions a global pooling averages over.
func (o *avgPoolOp) positions(b int) int {
	if o.l.SkipPadding {
		return o.lens[b]
	}
	return o.l.In.H * o.l.In.W
}
func (o *avgPoolOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	x := in[0].(tensor.Shape)
	if len(x) != 2 || x[1] != o.l.In.Size() {
		return nil, o.ShapeErr("input %v, want [n, %d]", x, o.l.In.Size())
	}
	return tensor.Shape{x[0], o.l.Output().Size()}, nil
}

// each calls f(output offset, input offset) for every input position of
// every output window of image b, in a fixed order.
func (o *avgPoolOp) each(b int, f func(out, in int)) {
	g, og := o.l.In, o.l.Output()
	k, st, pad, _ := o.geometry()
	if o.l.Kind == graph.GlobalAvgPool {
		for p := 0; p < o.positions(b); p++ {
			for c := 0; c < g.C; c++ {
				f(c, p*g.C+c)
			}
		}
		return
	}
	for oy := 0; oy < og.H; oy++ {
		for ox := 0; ox < og.W; ox++ {
			for ky := 0; ky < k; ky++ {
				iy := oy*st - pad + ky
				if iy < 0 || iy >= g.H {
					continue
				}
				for kx := 0; kx < k; kx++ {
					if ix := ox*st - pad + kx; ix >= 0 && ix < g.W {
						for c := 0; c < g.C; c++ {
							f((oy*og.W+ox)*g.C+c, (iy*g.W+ix)*g.C+c)
						}
					}
				}
			}
		}
	}
}

func (o *avgPoolOp) Do(vs ...G.Value) (G.Value, error) {
	n := vs[0].Shape()[0]
	isz, osz := o.l.In.Size(), o.l.Output().Size()
	_, _, _, div := o.geometry()
	x := data(vs[0])
	if o.l.SkipPadding {
		o.lens = seqLengths(o.lens, data(vs[1]), n)
	}
	y := o.out.Get(n, osz)
	yd := y.Float32s()
	o.Eng.Parallel(n, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			img, out := x[b*isz:(b+1)*isz], yd[b*osz:(b+1)*osz]
			clear(out)
			o.each(b, func(oi, ii int) { out[oi] += img[ii] })
			d := div
			if o.l.SkipPadding {
				d = float32(o.lens[b])
			}
			for i := range out {
				out[i] /= d
			}
		}
	})
	return y, nil
}
func (o *avgPoolOp) DiffWRT(int) []bool { return []bool{true, false}[:o.Arity()] }
func (o *avgPoolOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	d, err := G.ApplyOp(&avgPoolGradOp{opBase: newBase(o.Name+".grad", o.Eng), fwd: o}, grad)
	return append(G.Nodes{d}, make(G.Nodes, o.Arity()-1)...), err
}

// seqLengths sets lens to the n samples' lengths (graph.SeqLength) of
// token ids [n, T].
func seqLengths(lens []int, ids []float32, n int) []int {
	lens = slices.Grow(lens[:0], n)[:n]
	t := len(ids) / n
	for b := range n {
		lens[b] = graph.SeqLength(ids[b*t : (b+1)*t])
	}
	return lens
}

type avgPoolGradOp struct {
	opBase
	fwd *avgPoolOp
	out buffer
}

func (o *avgPoolGradOp) Arity() int    { return 1 }
func (o *avgPoolGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2)) }
func (o *avgPoolGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{in[0].(tensor.Shape)[0], o.fwd.l.In.Size()}, nil
}
func (o *avgPoolGradOp) Do(vs ...G.Value) (G.Value, error) {
	n := vs[0].Shape()[0]
	isz, osz := o.fwd.l.In.Size(), o.fwd.l.Output().Size()
	_, _, _, div := o.fwd.geometry()
	dy := data(vs[0])
	dx := o.out.Get(n, isz)
	dd := dx.Float32s()
	o.Eng.Parallel(n, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			img, g := dd[b*isz:(b+1)*isz], dy[b*osz:(b+1)*osz]
			clear(img)
			d := div
			if o.fwd.l.SkipPadding {
				d = float32(o.fwd.lens[b])
			}
			o.fwd.each(b, func(oi, ii int) { img[ii] += g[oi] / d })
		}
	})
	return dx, nil
}

// addOp sums its inputs, all [n, size], then applies act (a residual
// connection). Its backward hands each input the same gradient.
type addOp struct {
	opBase
	arity int
	act   Activation
	out   buffer
}

func (o *addOp) Arity() int { return o.arity }
func (o *addOp) Type() hm.Type {
	ts := make([]hm.Type, o.arity+1)
	for i := range ts {
		ts[i] = f32T(2)
	}
	return fnType(ts[0], ts[1:]...)
}
func (o *addOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	s := in[0].(tensor.Shape)
	for _, x := range in[1:] {
		if !x.(tensor.Shape).Eq(s) {
			return nil, o.ShapeErr("inputs %v and %v differ", s, x)
		}
	}
	return s.Clone(), nil
}
func (o *addOp) Do(vs ...G.Value) (G.Value, error) {
	y := o.out.Get(vs[0].Shape()...)
	yd := y.Float32s()
	copy(yd, data(vs[0]))
	for _, v := range vs[1:] {
		x := data(v)
		if len(x) != len(yd) {
			return nil, o.ShapeErr("inputs of %d and %d values", len(yd), len(x))
		}
		for i, xi := range x {
			yd[i] += xi
		}
	}
	if o.act != Identity {
		for i, v := range yd {
			yd[i] = activate(o.act, v)
		}
	}
	return y, nil
}
func (o *addOp) DiffWRT(int) []bool {
	d := make([]bool, o.arity)
	for i := range d {
		d[i] = true
	}
	return d
}
func (o *addOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dz, _, err := actGrad(o.Name, o.Eng, o.act, output, grad, 0, false)
	if err != nil {
		return nil, err
	}
	out := make(G.Nodes, len(in))
	for i := range out {
		out[i] = dz
	}
	return out, nil
}
