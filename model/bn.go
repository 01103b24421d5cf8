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
// evaluation graphs normalize by the running statistics. The batch's sums
// (of x and x², one pass) are taken in float64 in position order, threads
// owning ranges of channels, so results do not depend on the thread count.
type bnOp struct {
	opBase
	c         int // channels
	train     bool
	ctl       *BNControl // nil: never frozen
	frozen    bool       // this pass normalized by the running statistics
	act       Activation
	mean, vr  []float32 // the running statistics (the model's buffers)
	xhat, inv []float32 // training: the normalized input and each channel's 1/σ
	out       buffer
}

func newBN(eng compute.Engine, l graph.Layer, train bool, ctl *BNControl, mean, vr []float32) *bnOp {
	return &bnOp{opBase: newBase(l.Name, eng), c: l.In.C, train: train, ctl: ctl, act: activation(l.Act), mean: mean, vr: vr}
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
		scale := make([]float32, c)
		for ch := range scale {
			scale[ch] = gamma[ch] * float32(1/math.Sqrt(float64(o.vr[ch])+graph.BNEpsilon))
		}
		o.Eng.Parallel(n, 1, func(p0, p1 int) {
			for p := p0; p < p1; p++ {
				ys := yd[p*c : (p+1)*c]
				for ch, v := range x[p*c : (p+1)*c] {
					ys[ch] = activate(o.act, (v-o.mean[ch])*scale[ch]+beta[ch])
				}
			}
		})
		return y, nil
	}
	if len(o.xhat) != len(x) {
		o.xhat, o.inv = make([]float32, len(x)), make([]float32, c)
	}
	if o.frozen = o.ctl != nil && o.ctl.Frozen; o.frozen {
		o.frozenForward(x, gamma, beta, yd)
		return y, nil
	}
	// Threads own ranges of channels and walk the positions in order, a
	// range of contiguous channels at a time: each channel's sums run in
	// position order whatever the thread count.
	o.Eng.Parallel(c, 1, func(c0, c1 int) {
		w := c1 - c0
		sum, ss := make([]float64, w), make([]float64, w)
		for p := 0; p < n; p++ {
			for k, v := range x[p*c+c0 : p*c+c1] {
				sum[k] += float64(v)
				ss[k] += float64(v) * float64(v)
			}
		}
		mu, inv := make([]float32, w), make([]float32, w)
		for k := range sum {
			m := sum[k] / float64(n)
			v := max(ss[k]/float64(n)-m*m, 0) // E[x²] − E[x]², in float64
			mu[k], inv[k] = float32(m), float32(1/math.Sqrt(v+graph.BNEpsilon))
			o.inv[c0+k] = inv[k]
			unbiased := v
			if n > 1 {
				unbiased = v * float64(n) / float64(n-1)
			}
			ch := c0 + k
			o.mean[ch] = float32((1-graph.BNMomentum)*float64(o.mean[ch]) + graph.BNMomentum*m)
			o.vr[ch] = float32((1-graph.BNMomentum)*float64(o.vr[ch]) + graph.BNMomentum*unbiased)
		}
		g, bt := gamma[c0:c1], beta[c0:c1]
		for p := 0; p < n; p++ {
			xs, hs, ys := x[p*c+c0:p*c+c1], o.xhat[p*c+c0:p*c+c1], yd[p*c+c0:p*c+c1]
			for k, v := range xs {
				h := (v - mu[k]) * inv[k]
				hs[k] = h
				ys[k] = activate(o.act, h*g[k]+bt[k])
			}
		}
	})
	return y, nil
}

// frozenForward is a training pass with frozen statistics: normalized by
// the running ones, which stay as they are.
func (o *bnOp) frozenForward(x, gamma, beta, y []float32) {
	c := o.c
	mu := o.mean
	for ch := range o.inv {
		o.inv[ch] = float32(1 / math.Sqrt(float64(o.vr[ch])+graph.BNEpsilon))
	}
	o.Eng.Parallel(len(x)/c, 1, func(p0, p1 int) {
		for p := p0; p < p1; p++ {
			hs, ys := o.xhat[p*c:(p+1)*c], y[p*c:(p+1)*c]
			for k, v := range x[p*c : (p+1)*c] {
				h := (v - mu[k]) * o.inv[k]
				hs[k] = h
				ys[k] = activate(o.act, h*gamma[k]+beta[k])
			}
		}
	})
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
// dβ = Σ dz, dγ = Σ dz·x̂, dx = γ/(N·σ) · (N·dz − dβ − x̂·dγ); with frozen
// statistics dx = γ/σ · dz.
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
		sb, sg := make([]float64, c1-c0), make([]float64, c1-c0)
		for p := 0; p < len(dz)/c; p++ {
			hs := xhat[p*c+c0 : p*c+c1]
			for k, v := range dz[p*c+c0 : p*c+c1] {
				sb[k] += float64(v)
				sg[k] += float64(v) * float64(hs[k])
			}
		}
		kk := make([]float64, c1-c0)
		for k := range sb {
			o.dbeta[c0+k], o.dgamma[c0+k] = float32(sb[k]), float32(sg[k])
			kk[k] = float64(gamma[c0+k]) * float64(o.fwd.inv[c0+k]) / n
			if o.fwd.frozen { // the statistics are constants: dx = γ/σ · dz
				sb[k], sg[k] = 0, 0
			}
		}
		for p := 0; p < len(dz)/c; p++ {
			hs, ds := xhat[p*c+c0:p*c+c1], d[p*c+c0:p*c+c1]
			for k, v := range dz[p*c+c0 : p*c+c1] {
				ds[k] = float32(kk[k] * (n*float64(v) - sb[k] - float64(hs[k])*sg[k]))
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
