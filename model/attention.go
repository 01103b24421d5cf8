package model

import (
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// attentionOp is multi-head self-attention over x [batch, T·D] (graph's
// Attention): the projections Q = x·Wqᵀ + bq [rows, E], K, V likewise,
// per head h and sample the scores S = Q_h·K_hᵀ/√dh (dh = E/heads; with
// causal, −∞ above the diagonal), P = softmax(S) by row, the context C_h =
// P·V_h, and the output y = C·Woᵀ + bo. Its inputs: x, Wq, bq, Wk, bk, Wv,
// bv, Wo, bo — and, skipping padding, the token ids [batch, T]: a sample's
// scores then cover only its first graph.SeqLength positions as keys.
type attentionOp struct {
	opBase
	t, heads    int
	causal      bool
	needDX      bool
	skipPadding bool
	lens        []int // the last batch's lengths, when skipping padding
	// The last forward pass's projections, probabilities and context,
	// read by the gradient.
	q, k, v, p, ctx []float32
	out             buffer
}

func newAttention(name string, eng compute.Engine, t, heads int, causal, needDX bool) *attentionOp {
	return &attentionOp{opBase: newBase(name, eng), t: t, heads: heads, causal: causal, needDX: needDX}
}

func (o *attentionOp) Arity() int {
	if o.skipPadding {
		return 10
	}
	return 9
}
func (o *attentionOp) Type() hm.Type {
	ins := []hm.Type{f32T(2), f32T(2), f32T(1), f32T(2), f32T(1), f32T(2), f32T(1), f32T(2), f32T(1)}
	if o.skipPadding {
		ins = append(ins, f32T(2))
	}
	return fnType(f32T(2), ins...)
}
func (o *attentionOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}

// dims are the batch, the positions, the width, the projections' width
// and a head's width, for x and Wq's shapes.
func (o *attentionOp) dims(x, wq tensor.Shape) (n, t, d, e, dh int) {
	n, t = x[0], o.t
	d, e = x[1]/t, wq[0]
	return n, t, d, e, e / o.heads
}

func grow(b []float32, n int) []float32 {
	if len(b) != n {
		return make([]float32, n)
	}
	return b
}

func (o *attentionOp) Do(vs ...G.Value) (G.Value, error) {
	n, t, d, e, dh := o.dims(vs[0].Shape(), vs[1].Shape())
	if d*t != vs[0].Shape()[1] || dh*o.heads != e || vs[1].Shape().TotalSize() != e*d || vs[7].Shape().TotalSize() != d*e {
		return nil, o.ShapeErr("x %v, Wq %v, Wo %v for %d positions and %d heads", vs[0].Shape(), vs[1].Shape(), vs[7].Shape(), t, o.heads)
	}
	rows := n * t
	x := data(vs[0])
	o.q, o.k, o.v = grow(o.q, rows*e), grow(o.k, rows*e), grow(o.v, rows*e)
	o.ctx, o.p = grow(o.ctx, rows*e), grow(o.p, n*o.heads*t*t)
	for i, dst := range [][]float32{o.q, o.k, o.v} {
		o.Eng.Sgemm(false, true, rows, e, d, 1, x, d, data(vs[1+2*i]), d, 0, dst, e)
		biasAct(o.Eng, dst, data(vs[2+2*i]), rows, e, Identity)
	}
	// Per sample and head, on the threads whole: S = Q_h·K_hᵀ/√dh,
	// P = softmax(S) by row, C_h = P·V_h.
	scale := float32(1 / math.Sqrt(float64(dh)))
	if o.skipPadding {
		o.lens = seqLengths(o.lens, data(vs[9]), n)
	}
	compute.ParallelGemms(o.Eng, n*o.heads, 1, func(lo, hi int, gemm compute.Gemm) {
		for i := lo; i < hi; i++ {
			off, p := (i/o.heads)*t*e+(i%o.heads)*dh, o.p[i*t*t:][:t*t]
			gemm(false, true, t, t, dh, scale, o.q[off:], e, o.k[off:], e, 0, p, t)
			keys := t
			if o.skipPadding {
				keys = o.lens[i/o.heads]
			}
			for r := range t {
				live := keys
				if o.causal {
					live = min(r+1, keys)
				}
				kernels.SoftmaxRow(p[r*t:(r+1)*t], live)
			}
			gemm(false, false, t, dh, t, 1, p, t, o.v[off:], e, 0, o.ctx[off:], e)
		}
	})
	y := o.out.Get(n, t*d)
	yd := y.Float32s()
	o.Eng.Sgemm(false, true, rows, d, e, 1, o.ctx, e, data(vs[7]), e, 0, yd, d)
	biasAct(o.Eng, yd, data(vs[8]), rows, d, Identity)
	return y, nil
}

func (o *attentionOp) DiffWRT(int) []bool {
	return []bool{o.needDX, true, true, true, true, true, true, true, true, false}[:o.Arity()]
}
func (o *attentionOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	g := &attentionGradOp{opBase: newBase(o.Name+".grad", o.Eng), fwd: o}
	dx, err := G.ApplyOp(g, grad, in[0], in[1], in[3], in[5], in[7])
	if err != nil {
		return nil, err
	}
	out := G.Nodes{nil}
	if o.needDX {
		out[0] = dx
	}
	for i := range g.side {
		shape := in[1+i].Shape().Clone() // each weight's and bias's own
		s, err := G.ApplyOp(&sideGradOp{opBase: newBase(o.Name+".side", o.Eng), v: &g.side[i], shape: shape}, dx)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if o.skipPadding {
		out = append(out, nil) // the ids
	}
	return out, nil
}

// attentionGradOp computes the input gradient of an attention layer from
// dy, x and its four weights, and in the same pass the weights' and
// biases' gradients (handed out by sideGradOps, in the forward op's input
// order: dWq, dbq, dWk, dbk, dWv, dbv, dWo, dbo):
//
//	dWo = dyᵀ·C, dbo = Σ dy, dC = dy·Wo
//	per head: dV_h = Pᵀ·dC_h, dP = dC_h·V_hᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)),
//	          dQ_h = dS·K_h/√dh, dK_h = dSᵀ·Q_h/√dh
//	dWq = dQᵀ·x, dbq = Σ dQ (K, V likewise), dx = dQ·Wq + dK·Wk + dV·Wv.
type attentionGradOp struct {
	opBase
	fwd              *attentionOp
	side             [8]buffer
	dctx, dq, dk, dv []float32
	out              buffer
}

func (o *attentionGradOp) Arity() int { return 6 }
func (o *attentionGradOp) Type() hm.Type {
	return fnType(f32T(2), f32T(2), f32T(2), f32T(2), f32T(2), f32T(2), f32T(2))
}
func (o *attentionGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[1].(tensor.Shape).Clone(), nil
}
func (o *attentionGradOp) Do(vs ...G.Value) (G.Value, error) {
	f := o.fwd
	n, t, d, e, dh := f.dims(vs[1].Shape(), vs[2].Shape())
	rows := n * t
	if len(f.ctx) != rows*e {
		return nil, o.ShapeErr("an attention layer's gradient before its forward pass")
	}
	dy, x := data(vs[0]), data(vs[1])
	wq, wk, wv, wo := data(vs[2]), data(vs[3]), data(vs[4]), data(vs[5])
	o.dctx, o.dq, o.dk, o.dv = grow(o.dctx, rows*e), grow(o.dq, rows*e), grow(o.dk, rows*e), grow(o.dv, rows*e)
	// dW = dzᵀ·in [out, width] and db = Σ dz for projection i.
	dW := func(i int, dz []float32, out int, in []float32, width int) {
		o.Eng.Sgemm(true, false, out, width, rows, 1, dz, out, in, width, 0, o.side[2*i].Get(out, width).Float32s(), width)
		colSums(o.Eng, dz, out, o.side[2*i+1].Get(out).Float32s())
	}
	dW(3, dy, d, f.ctx, e)
	o.Eng.Sgemm(false, false, rows, e, d, 1, dy, d, wo, e, 0, o.dctx, e)
	scale := float32(1 / math.Sqrt(float64(dh)))
	compute.ParallelGemms(o.Eng, n*f.heads, 1, func(lo, hi int, gemm compute.Gemm) {
		dsc := make([]float32, t*t)
		for i := lo; i < hi; i++ {
			off, p := (i/f.heads)*t*e+(i%f.heads)*dh, f.p[i*t*t:][:t*t]
			gemm(true, false, t, dh, t, 1, p, t, o.dctx[off:], e, 0, o.dv[off:], e)
			gemm(false, true, t, t, dh, 1, o.dctx[off:], e, f.v[off:], e, 0, dsc, t)
			softmaxGrad(dsc, p, t)
			gemm(false, false, t, dh, t, scale, dsc, t, f.k[off:], e, 0, o.dq[off:], e)
			gemm(true, false, t, dh, t, scale, dsc, t, f.q[off:], e, 0, o.dk[off:], e)
		}
	})
	dW(0, o.dq, e, x, d)
	dW(1, o.dk, e, x, d)
	dW(2, o.dv, e, x, d)
	dx := o.out.Get(n, t*d)
	dd := dx.Float32s()
	if f.needDX {
		o.Eng.Sgemm(false, false, rows, d, e, 1, o.dq, e, wq, d, 0, dd, d)
		o.Eng.Sgemm(false, false, rows, d, e, 1, o.dk, e, wk, d, 1, dd, d)
		o.Eng.Sgemm(false, false, rows, d, e, 1, o.dv, e, wv, d, 1, dd, d)
	}
	return dx, nil
}

// softmaxGrad turns dP (t×t, in place) into dS = P ⊙ (dP − rowsum(P ⊙ dP)),
// summed in float64.
func softmaxGrad(dp, p []float32, t int) {
	for i := range t {
		dr, pr := dp[i*t:(i+1)*t], p[i*t:(i+1)*t]
		var s float64
		for j, v := range dr {
			s += float64(v) * float64(pr[j])
		}
		for j, v := range dr {
			dr[j] = float32(float64(pr[j]) * (float64(v) - s))
		}
	}
}

// colSums sets dst to the column sums of m [rows, c], each column summed in
// row order (threads own ranges of columns).
func colSums(eng compute.Engine, m []float32, c int, dst []float32) {
	rows := len(m) / c
	eng.Parallel(c, max(1, minParallel/max(rows, 1)), func(c0, c1 int) {
		for j := c0; j < c1; j++ {
			var s float32
			for r := 0; r < rows; r++ {
				s += m[r*c+j]
			}
			dst[j] = s
		}
	})
}
