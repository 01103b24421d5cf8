package model

import (
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// The sequence kinds' ops: values are [batch, T·D] rows, position t's D
// values at columns t·D … t·D+D−1 (the {1, T, D} layout every layer uses).

// ---------------------------------------------------------------- embedding

// embedOp computes y[b, t] = W[id] + P[t] for x [batch, T] holding token
// ids as id/255 (the input bytes' scaling), W [V, D], P [T, D].
type embedOp struct {
	opBase
	ids []int32 // the last batch's ids, read by the gradient
	out buffer
}

// tokenID reads an id scaled as input bytes are (v/255).
func tokenID(v float32) int32 { return int32(math.Round(float64(v) * 255)) }

func (o *embedOp) Arity() int    { return 3 }
func (o *embedOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(2), f32T(2)) }
func (o *embedOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	x, w := in[0].(tensor.Shape), in[1].(tensor.Shape)
	return tensor.Shape{x[0], x[1] * w[1]}, nil
}
func (o *embedOp) Do(vs ...G.Value) (G.Value, error) {
	x, w, p := data(vs[0]), data(vs[1]), data(vs[2])
	n, t := vs[0].Shape()[0], vs[0].Shape()[1]
	v, d := vs[1].Shape()[0], vs[1].Shape()[1]
	if len(p) != t*d {
		return nil, o.ShapeErr("positions %v for %d positions of width %d", vs[2].Shape(), t, d)
	}
	if len(o.ids) != len(x) {
		o.ids = make([]int32, len(x))
	}
	for i, f := range x {
		id := tokenID(f)
		if id < 0 || int(id) >= v {
			return nil, o.ShapeErr("token id %d (input %v) outside the vocabulary of %d", id, f, v)
		}
		o.ids[i] = id
	}
	y := o.out.Get(n, t*d)
	yd := y.Float32s()
	o.Eng.Parallel(n*t, max(1, minParallel/d), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row, tok, pos := yd[i*d:(i+1)*d], w[int(o.ids[i])*d:], p[(i%t)*d:]
			for j := range row {
				row[j] = tok[j] + pos[j]
			}
		}
	})
	return y, nil
}
func (o *embedOp) DiffWRT(int) []bool { return []bool{false, true, true} }
func (o *embedOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dw, err := G.ApplyOp(&embedGradOp{opBase: newBase(o.Name+".dW", o.Eng), fwd: o}, grad, in[1])
	if err != nil {
		return nil, err
	}
	dp, err := G.ApplyOp(&embedGradOp{opBase: newBase(o.Name+".dpos", o.Eng), fwd: o, pos: true}, grad, in[2])
	return G.Nodes{nil, dw, dp}, err
}

// embedGradOp sums dy into the table rows the batch read (or, pos, into
// the positions' rows). Threads own ranges of columns and add positions in
// order, so the sums' order is fixed whatever the thread count.
type embedGradOp struct {
	opBase
	fwd *embedOp
	pos bool
	out buffer
}

func (o *embedGradOp) Arity() int    { return 2 }
func (o *embedGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(2)) }
func (o *embedGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[1].(tensor.Shape).Clone(), nil
}
func (o *embedGradOp) Do(vs ...G.Value) (G.Value, error) {
	dy := data(vs[0])
	rows, d := vs[1].Shape()[0], vs[1].Shape()[1]
	g := o.out.Get(rows, d)
	gd := g.Float32s()
	clear(gd)
	ids := o.fwd.ids
	if len(ids)*d != len(dy) {
		return nil, o.ShapeErr("an embedding's gradient before its forward pass")
	}
	o.Eng.Parallel(d, 1, func(c0, c1 int) {
		for i := range ids {
			r := int(ids[i])
			if o.pos {
				r = i % rows
			}
			dst, src := gd[r*d+c0:r*d+c1], dy[i*d+c0:i*d+c1]
			for j, v := range src {
				dst[j] += v
			}
		}
	})
	return g, nil
}

// ---------------------------------------------------------------- layer norm

// layerNormOp normalizes each position's c values: y = x̂·γ + β, x̂ = (x −
// μ)/√(σ² + ε) with the position's own mean and (biased) variance, summed
// in float64.
type layerNormOp struct {
	opBase
	c        int
	xhat     []float32
	inv      []float32 // per position
	out      buffer
	gradSide *layerNormGradOp
}

func (o *layerNormOp) Arity() int    { return 3 }
func (o *layerNormOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(1), f32T(1)) }
func (o *layerNormOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *layerNormOp) Do(vs ...G.Value) (G.Value, error) {
	x, gamma, beta := data(vs[0]), data(vs[1]), data(vs[2])
	c := o.c
	if len(gamma) != c || len(x)%c != 0 {
		return nil, o.ShapeErr("x %v, γ %v for %d channels", vs[0].Shape(), vs[1].Shape(), c)
	}
	rows := len(x) / c
	if len(o.xhat) != len(x) {
		o.xhat, o.inv = make([]float32, len(x)), make([]float32, rows)
	}
	y := o.out.Get(vs[0].Shape()...)
	yd := y.Float32s()
	o.Eng.Parallel(rows, max(1, minParallel/c), func(lo, hi int) {
		kernels.LayerNormRows(yd[lo*c:hi*c], o.xhat[lo*c:hi*c], x[lo*c:hi*c], gamma, beta, c, graph.LNEpsilon, o.inv[lo:hi])
	})
	return y, nil
}
func (o *layerNormOp) DiffWRT(int) []bool { return []bool{true, true, true} }
func (o *layerNormOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	g := &layerNormGradOp{opBase: newBase(o.Name+".grad", o.Eng), fwd: o}
	dx, err := G.ApplyOp(g, grad, in[1])
	if err != nil {
		return nil, err
	}
	dgamma, err := G.ApplyOp(&sideGradOp{opBase: newBase(o.Name+".dgamma", o.Eng), v: &g.dgamma, shape: tensor.Shape{o.c}}, dx)
	if err != nil {
		return nil, err
	}
	dbeta, err := G.ApplyOp(&sideGradOp{opBase: newBase(o.Name+".dbeta", o.Eng), v: &g.dbeta, shape: tensor.Shape{o.c}}, dx)
	return G.Nodes{dx, dgamma, dbeta}, err
}

// layerNormGradOp computes dx = inv/c·(c·g − Σg − x̂·Σ(g·x̂)), g = dy·γ, per
// position, and in the same op dγ = Σ dy·x̂ and dβ = Σ dy over positions
// (threads own ranges of channels and add positions in order).
type layerNormGradOp struct {
	opBase
	fwd           *layerNormOp
	dgamma, dbeta buffer
	out           buffer
}

func (o *layerNormGradOp) Arity() int    { return 2 }
func (o *layerNormGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(1)) }
func (o *layerNormGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *layerNormGradOp) Do(vs ...G.Value) (G.Value, error) {
	dy, gamma := data(vs[0]), data(vs[1])
	c, xhat, inv := o.fwd.c, o.fwd.xhat, o.fwd.inv
	if len(xhat) != len(dy) {
		return nil, o.ShapeErr("a layer norm's gradient before its forward pass")
	}
	rows := len(dy) / c
	dx := o.out.Get(vs[0].Shape()...)
	d := dx.Float32s()
	o.Eng.Parallel(rows, max(1, minParallel/c), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			ds, hs, out := dy[r*c:(r+1)*c], xhat[r*c:(r+1)*c], d[r*c:(r+1)*c]
			var sg, sgh float64
			for j, v := range ds {
				g := float64(v * gamma[j])
				sg += g
				sgh += g * float64(hs[j])
			}
			k := float64(inv[r]) / float64(c)
			for j, v := range ds {
				g := float64(v * gamma[j])
				out[j] = float32(k * (float64(c)*g - sg - float64(hs[j])*sgh))
			}
		}
	})
	dg, db := o.dgamma.Get(c).Float32s(), o.dbeta.Get(c).Float32s()
	o.Eng.Parallel(c, 1, func(c0, c1 int) {
		j := c0
		for ; j+4 <= c1; j += 4 { // four columns side by side, each summed in row order
			var g0, g1, g2, g3, b0, b1, b2, b3 float64
			for r := 0; r < rows; r++ {
				v, h := dy[r*c+j:r*c+j+4:r*c+j+4], xhat[r*c+j:r*c+j+4:r*c+j+4]
				v0, v1, v2, v3 := float64(v[0]), float64(v[1]), float64(v[2]), float64(v[3])
				g0 += v0 * float64(h[0])
				g1 += v1 * float64(h[1])
				g2 += v2 * float64(h[2])
				g3 += v3 * float64(h[3])
				b0 += v0
				b1 += v1
				b2 += v2
				b3 += v3
			}
			dg[j], dg[j+1], dg[j+2], dg[j+3] = float32(g0), float32(g1), float32(g2), float32(g3)
			db[j], db[j+1], db[j+2], db[j+3] = float32(b0), float32(b1), float32(b2), float32(b3)
		}
		for ; j < c1; j++ {
			var sg, sb float64
			for r := 0; r < rows; r++ {
				v := float64(dy[r*c+j])
				sg += v * float64(xhat[r*c+j])
				sb += v
			}
			dg[j], db[j] = float32(sg), float32(sb)
		}
	})
	return dx, nil
}

// sideGradOp hands out a gradient another op computed in its pass; its
// input only orders it after that op.
type sideGradOp struct {
	opBase
	v     *buffer
	shape tensor.Shape
}

func (o *sideGradOp) Arity() int    { return 1 }
func (o *sideGradOp) Type() hm.Type { return fnType(f32T(len(o.shape)), f32T(2)) }
func (o *sideGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return o.shape.Clone(), nil
}
func (o *sideGradOp) Do(...G.Value) (G.Value, error) { return o.v.T, nil }

// ---------------------------------------------------------------- GELU, sigmoid, SiLU

// geluOp applies a separate activation (graph.Activation.Separate)
// elementwise: GELU x·Φ(x) (the exact form), sigmoid or SiLU.
type geluOp struct {
	opBase
	act graph.Activation
	out buffer
}

// actPass is the activation's pass: y = f(x), or with dy the gradient
// dy·f'(x) (kernels).
func actPass(act graph.Activation) func(y, x, dy []float32) {
	switch act {
	case graph.Sigmoid:
		return kernels.SigmoidPass
	case graph.SiLU:
		return kernels.SiLUPass
	}
	return kernels.GELUPass
}

func gelu(x float32) float32 { return kernels.GELU(x) }

// geluSlope is GELU's derivative Φ(x) + x·φ(x).
func geluSlope(x float32) float32 { return kernels.GELUSlope(x) }

func (o *geluOp) Arity() int    { return 1 }
func (o *geluOp) Type() hm.Type { return fnType(f32T(2), f32T(2)) }
func (o *geluOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *geluOp) Do(vs ...G.Value) (G.Value, error) {
	x := data(vs[0])
	y := o.out.Get(vs[0].Shape()...)
	yd := y.Float32s()
	pass := actPass(o.act)
	o.Eng.Parallel(len(x), minParallel, func(lo, hi int) {
		pass(yd[lo:hi], x[lo:hi], nil)
	})
	return y, nil
}
func (o *geluOp) DiffWRT(int) []bool { return []bool{true} }
func (o *geluOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(&geluGradOp{opBase: newBase(o.Name+".grad", o.Eng), act: o.act}, in[0], grad)
	return G.Nodes{dx}, err
}

// geluGradOp is dy·f'(x) of geluOp's activation f; inputs x and dy.
type geluGradOp struct {
	opBase
	act graph.Activation
	out buffer
}

func (o *geluGradOp) Arity() int    { return 2 }
func (o *geluGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(2)) }
func (o *geluGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *geluGradOp) Do(vs ...G.Value) (G.Value, error) {
	x, dy := data(vs[0]), data(vs[1])
	dx := o.out.Get(vs[0].Shape()...)
	d := dx.Float32s()
	pass := actPass(o.act)
	o.Eng.Parallel(len(x), minParallel, func(lo, hi int) {
		pass(d[lo:hi], x[lo:hi], dy[lo:hi])
	})
	return dx, nil
}
