package model

import (
	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// conv2dOp is a valid (unpadded, stride 1) convolution with a fused bias and
// activation, computed as im2col and one GEMM over the whole batch.
// Inputs: x [n, H·W·C] (NHWC), W [F, K, K, C], b [F]; output [n, OH·OW·F]
// (NHWC). Patches are laid out (ky, kx, c), matching W's layout, so that a
// patch row is K contiguous copies of K·C inputs.
type conv2dOp struct {
	opBase
	in     graph.Shape
	f, k   int
	act    Activation
	needDX bool
	col    []float32 // [n·OH·OW, K·K·C], kept for the weight gradient
	out    buffer
}

func (o *conv2dOp) outGeom() graph.Shape {
	return graph.Shape{H: o.in.H - o.k + 1, W: o.in.W - o.k + 1, C: o.f}
}
func (o *conv2dOp) patch() int { return o.k * o.k * o.in.C }

func (o *conv2dOp) Arity() int    { return 3 }
func (o *conv2dOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(4), f32T(1)) }
func (o *conv2dOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	x, w := in[0].(tensor.Shape), in[1].(tensor.Shape)
	if len(x) != 2 || x[1] != o.in.Size() {
		return nil, o.ShapeErr("input %v, want [n, %d]", x, o.in.Size())
	}
	if !w.Eq(tensor.Shape{o.f, o.k, o.k, o.in.C}) {
		return nil, o.ShapeErr("weights %v, want [%d %d %d %d]", w, o.f, o.k, o.k, o.in.C)
	}
	return tensor.Shape{x[0], o.outGeom().Size()}, nil
}

func (o *conv2dOp) Do(vs ...G.Value) (G.Value, error) {
	n := vs[0].Shape()[0]
	og := o.outGeom()
	rows, p := n*og.H*og.W, o.patch()
	if len(o.col) != rows*p {
		o.col = make([]float32, rows*p)
	}
	x := data(vs[0])
	if len(x) != n*o.in.Size() {
		return nil, o.ShapeErr("input holds %d values, want %d", len(x), n*o.in.Size())
	}
	o.Eng.Parallel(n, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			im2col(o.col[b*og.H*og.W*p:(b+1)*og.H*og.W*p], x[b*o.in.Size():(b+1)*o.in.Size()], o.in, o.k)
		}
	})
	y := o.out.Get(n, og.Size())
	yd := y.Float32s()
	o.Eng.Sgemm(false, true, rows, o.f, p, 1, o.col, p, data(vs[1]), p, 0, yd, o.f)
	biasAct(o.Eng, yd, data(vs[2]), rows, o.f, o.act)
	return y, nil
}

// im2col writes the K×K patches of one NHWC image, a row per output pixel.
func im2col(col, x []float32, g graph.Shape, k int) { kernels.Im2col(col, x, g.H, g.W, g.C, k) }

// col2im adds patch gradients back into one NHWC image gradient (dx must be
// zeroed by the caller).
func col2im(dx, col []float32, g graph.Shape, k int) {
	oh, ow := g.H-k+1, g.W-k+1
	run := k * g.C
	r := 0
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			for ky := 0; ky < k; ky++ {
				dst := dx[((oy+ky)*g.W+ox)*g.C:]
				dst = dst[:run]
				for i, v := range col[r : r+run] {
					dst[i] += v
				}
				r += run
			}
		}
	}
}

func (o *conv2dOp) DiffWRT(int) []bool { return []bool{o.needDX, true, true} }
func (o *conv2dOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dz, db, err := reluAndBiasGrad(o.Name, o.Eng, o.act, output, grad, o.f)
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
	return G.Nodes{dx, dw, db}, nil
}

// convGradWOp computes dzᵀ·col from the forward op's patches; inputs dz and
// W (for the shape).
type convGradWOp struct {
	opBase
	fwd *conv2dOp
	out buffer
}

func (o *convGradWOp) Arity() int    { return 2 }
func (o *convGradWOp) Type() hm.Type { return fnType(f32T(4), f32T(2), f32T(4)) }
func (o *convGradWOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[1].(tensor.Shape).Clone(), nil
}
func (o *convGradWOp) Do(vs ...G.Value) (G.Value, error) {
	f, p := o.fwd.f, o.fwd.patch()
	rows := len(o.fwd.col) / p
	dw := o.out.Get(vs[1].Shape()...)
	o.Eng.Sgemm(true, false, f, p, rows, 1, data(vs[0]), f, o.fwd.col, p, 0, dw.Float32s(), p)
	return dw, nil
}

// convGradXOp computes the input gradient: dcol = dz·W, then col2im.
type convGradXOp struct {
	opBase
	fwd  *conv2dOp
	dcol []float32
	out  buffer
}

func (o *convGradXOp) Arity() int    { return 2 }
func (o *convGradXOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(4)) }
func (o *convGradXOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{in[0].(tensor.Shape)[0], o.fwd.in.Size()}, nil
}
func (o *convGradXOp) Do(vs ...G.Value) (G.Value, error) {
	n := vs[0].Shape()[0]
	f, p, og := o.fwd.f, o.fwd.patch(), o.fwd.outGeom()
	rows := n * og.H * og.W
	if len(o.dcol) != rows*p {
		o.dcol = make([]float32, rows*p)
	}
	o.Eng.Sgemm(false, false, rows, p, f, 1, data(vs[0]), f, data(vs[1]), p, 0, o.dcol, p)
	dx := o.out.Get(n, o.fwd.in.Size())
	dd := dx.Float32s()
	isz, psz := o.fwd.in.Size(), og.H*og.W*p
	o.Eng.Parallel(n, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			img := dd[b*isz : (b+1)*isz]
			clear(img)
			col2im(img, o.dcol[b*psz:(b+1)*psz], o.fwd.in, o.fwd.k)
		}
	})
	return dx, nil
}

// ---------------------------------------------------------------- max-pool

// maxPoolOp is a 2×2, stride-2 max-pool over NHWC images: input
// [n, H·W·C], output [n, (H/2)·(W/2)·C]. It remembers where each maximum
// came from for the backward pass.
type maxPoolOp struct {
	opBase
	in  graph.Shape
	arg []int32 // per output element: offset of the maximum within its image
	out buffer
}

func (o *maxPoolOp) outGeom() graph.Shape {
	return graph.Shape{H: o.in.H / 2, W: o.in.W / 2, C: o.in.C}
}

func (o *maxPoolOp) Arity() int    { return 1 }
func (o *maxPoolOp) Type() hm.Type { return fnType(f32T(2), f32T(2)) }
func (o *maxPoolOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	x := in[0].(tensor.Shape)
	if len(x) != 2 || x[1] != o.in.Size() {
		return nil, o.ShapeErr("input %v, want [n, %d]", x, o.in.Size())
	}
	return tensor.Shape{x[0], o.outGeom().Size()}, nil
}
func (o *maxPoolOp) Do(vs ...G.Value) (G.Value, error) {
	n := vs[0].Shape()[0]
	og := o.outGeom()
	x := data(vs[0])
	y := o.out.Get(n, og.Size())
	yd := y.Float32s()
	if len(o.arg) != len(yd) {
		o.arg = make([]int32, len(yd))
	}
	g := o.in
	o.Eng.Parallel(n, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			img := x[b*g.Size() : (b+1)*g.Size()]
			out := yd[b*og.Size() : (b+1)*og.Size()]
			arg := o.arg[b*og.Size() : (b+1)*og.Size()]
			for oy := 0; oy < og.H; oy++ {
				for ox := 0; ox < og.W; ox++ {
					base := ((2*oy)*g.W + 2*ox) * g.C
					offs := [4]int{base, base + g.C, base + g.W*g.C, base + g.W*g.C + g.C}
					o0 := (oy*og.W + ox) * og.C
					for c := 0; c < g.C; c++ {
						best, at := img[offs[0]+c], offs[0]+c
						for _, off := range offs[1:] {
							if v := img[off+c]; v > best {
								best, at = v, off+c
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
	return tensor.Shape{in[0].(tensor.Shape)[0], o.fwd.in.Size()}, nil
}
func (o *maxPoolGradOp) Do(vs ...G.Value) (G.Value, error) {
	n := vs[0].Shape()[0]
	dy := data(vs[0])
	isz, osz := o.fwd.in.Size(), o.fwd.outGeom().Size()
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
