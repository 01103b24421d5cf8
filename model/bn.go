package model

import (
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/graph"
)

// bnOp is a batch norm over NHWC activations x [n, H·W·C] with scale γ [C]
// and shift β [C], then the layer's activation. Training graphs normalize
// each channel by its batch mean and (biased) variance over the n·H·W
// values and move the running statistics toward them (momentum
// graph.BNMomentum, the running variance unbiased, as PyTorch does);
// evaluation graphs normalize by the running statistics. Sums are taken in
// float64 in a fixed order, a channel per thread range, so results do not
// depend on the thread count.
type bnOp struct {
	opBase
	c         int // channels
	train     bool
	act       Activation
	mean, vr  []float32 // the running statistics (the model's buffers)
	xhat, inv []float32 // training: the normalized input and each channel's 1/σ
	out       buffer
}

func newBN(eng compute.Engine, l graph.Layer, train bool, mean, vr []float32) *bnOp {
	return &bnOp{opBase: newBase(l.Name, eng), c: l.In.C, train: train, act: activation(l.Act), mean: mean, vr: vr}
}

func (o *bnOp) Arity() int    { return 3 }
func (o *bnOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(1), f32T(1)) }
func (o *bnOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	x := in[0].(tensor.Shape)
	if len(x) != 2 || x[1]%o.c != 0 {
		return nil, o.ShapeErr("input %v for %d channels", x, o.c)
	}
	return x.Clone(), nil
}

func (o *bnOp) Do(vs ...G.Value) (G.Value, error) {
	x, gamma, beta := data(vs[0]), data(vs[1]), data(vs[2])
	c := o.c
	n := len(x) / c // values per channel
	y := o.out.Get(vs[0].Shape()...)
	yd := y.Float32s()
	if !o.train {
		o.Eng.Parallel(c, 1, func(c0, c1 int) {
			for ch := c0; ch < c1; ch++ {
				inv := float32(1 / math.Sqrt(float64(o.vr[ch])+graph.BNEpsilon))
				scale, mu := gamma[ch]*inv, o.mean[ch]
				for i := ch; i < len(x); i += c {
					yd[i] = activate(o.act, (x[i]-mu)*scale+beta[ch])
				}
			}
		})
		return y, nil
	}
	if len(o.xhat) != len(x) {
		o.xhat, o.inv = make([]float32, len(x)), make([]float32, c)
	}
	o.Eng.Parallel(c, 1, func(c0, c1 int) {
		for ch := c0; ch < c1; ch++ {
			var sum float64
			for i := ch; i < len(x); i += c {
				sum += float64(x[i])
			}
			mu := sum / float64(n)
			var ss float64
			for i := ch; i < len(x); i += c {
				d := float64(x[i]) - mu
				ss += d * d
			}
			v := ss / float64(n)
			inv := 1 / math.Sqrt(v+graph.BNEpsilon)
			o.inv[ch] = float32(inv)
			for i := ch; i < len(x); i += c {
				h := float32((float64(x[i]) - mu) * inv)
				o.xhat[i] = h
				yd[i] = activate(o.act, h*gamma[ch]+beta[ch])
			}
			unbiased := v
			if n > 1 {
				unbiased = ss / float64(n-1)
			}
			o.mean[ch] = float32((1-graph.BNMomentum)*float64(o.mean[ch]) + graph.BNMomentum*mu)
			o.vr[ch] = float32((1-graph.BNMomentum)*float64(o.vr[ch]) + graph.BNMomentum*unbiased)
		}
	})
	return y, nil
}

func (o *bnOp) DiffWRT(int) []bool { return []bool{true, true, true} }
func (o *bnOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dz, _, err := actGrad(o.Name, o.Eng, o.act, output, grad, 0, false)
	if err != nil {
		return nil, err
	}
	g := &bnGradOp{opBase: newBase(o.Name+".grad", o.Eng), fwd: o}
	dx, err := G.ApplyOp(g, dz, in[1])
	if err != nil {
		return nil, err
	}
	dgamma, err := G.ApplyOp(&bnParamGradOp{opBase: newBase(o.Name+".dgamma", o.Eng), src: g}, dx)
	if err != nil {
		return nil, err
	}
	dbeta, err := G.ApplyOp(&bnParamGradOp{opBase: newBase(o.Name+".dbeta", o.Eng), src: g, beta: true}, dx)
	return G.Nodes{dx, dgamma, dbeta}, err
}

// bnGradOp computes a training batch norm's input gradient from dz (the
// gradient before the activation) and γ, and in the same pass the
// gradients of γ and β, which bnParamGradOps hand out:
// dβ = Σ dz, dγ = Σ dz·x̂, dx = γ/(N·σ) · (N·dz − dβ − x̂·dγ).
type bnGradOp struct {
	opBase
	fwd    *bnOp
	dgamma []float32
	dbeta  []float32
	out    buffer
}

func (o *bnGradOp) Arity() int    { return 2 }
func (o *bnGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(1)) }
func (o *bnGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *bnGradOp) Do(vs ...G.Value) (G.Value, error) {
	dz, gamma := data(vs[0]), data(vs[1])
	c, xhat := o.fwd.c, o.fwd.xhat
	if len(xhat) != len(dz) {
		return nil, o.ShapeErr("a batch norm's gradient before its training forward pass")
	}
	n := float64(len(dz) / c)
	if len(o.dgamma) != c {
		o.dgamma, o.dbeta = make([]float32, c), make([]float32, c)
	}
	dx := o.out.Get(vs[0].Shape()...)
	d := dx.Float32s()
	o.Eng.Parallel(c, 1, func(c0, c1 int) {
		for ch := c0; ch < c1; ch++ {
			var sb, sg float64
			for i := ch; i < len(dz); i += c {
				sb += float64(dz[i])
				sg += float64(dz[i]) * float64(xhat[i])
			}
			o.dbeta[ch], o.dgamma[ch] = float32(sb), float32(sg)
			k := float64(gamma[ch]) * float64(o.fwd.inv[ch]) / n
			for i := ch; i < len(dz); i += c {
				d[i] = float32(k * (n*float64(dz[i]) - sb - float64(xhat[i])*sg))
			}
		}
	})
	return dx, nil
}

// bnParamGradOp returns the γ (or β) gradient its bnGradOp computed; its
// input (dx) only orders it after that op.
type bnParamGradOp struct {
	opBase
	src  *bnGradOp
	beta bool
	out  buffer
}

func (o *bnParamGradOp) Arity() int    { return 1 }
func (o *bnParamGradOp) Type() hm.Type { return fnType(f32T(1), f32T(2)) }
func (o *bnParamGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{o.src.fwd.c}, nil
}
func (o *bnParamGradOp) Do(...G.Value) (G.Value, error) {
	v := o.out.Get(o.src.fwd.c)
	if o.beta {
		copy(v.Float32s(), o.src.dbeta)
	} else {
		copy(v.Float32s(), o.src.dgamma)
	}
	return v, nil
}
