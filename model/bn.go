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
	c        int // channels
	train    bool
	ctl      *BNControl // nil: never frozen
	frozen   bool       // this pass normalized by the running statistics
	act      Activation
	mean, vr []float32 // the running statistics (the model's buffers)
	// Training: the input (the backward pass recomputes x̂ = (x − mu)·inv
	// from it, the same float32 bits the forward pass normalized with),
	// and each channel's mean and 1/σ.
	x       []float32
	mu, inv []float32
	out     buffer
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
		scale, one := make([]float32, c), make([]float32, c)
		for ch := range scale {
			scale[ch], one[ch] = gamma[ch]*float32(1/math.Sqrt(float64(o.vr[ch])+graph.BNEpsilon)), 1
		}
		o.Eng.Parallel(n, 1, func(p0, p1 int) { // ((x − mean)·scale)·1 + β: the same bits as without the 1
			normRows(x[p0*c:p1*c], nil, yd[p0*c:p1*c], c, o.mean, scale, one, beta, o.act)
		})
		return y, nil
	}
	if len(o.inv) != c {
		o.inv, o.mu = make([]float32, c), make([]float32, c)
	}
	o.x = x
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
		channelSums(x, c, c0, c1, sum, ss)
		for k := range sum {
			ch := c0 + k
			m := sum[k] / float64(n)
			v := max(ss[k]/float64(n)-m*m, 0) // E[x²] − E[x]², in float64
			o.mu[ch], o.inv[ch] = float32(m), float32(1/math.Sqrt(v+graph.BNEpsilon))
			unbiased := v
			if n > 1 {
				unbiased = v * float64(n) / float64(n-1)
			}
			o.mean[ch] = float32((1-graph.BNMomentum)*float64(o.mean[ch]) + graph.BNMomentum*m)
			o.vr[ch] = float32((1-graph.BNMomentum)*float64(o.vr[ch]) + graph.BNMomentum*unbiased)
		}
	})
	o.Eng.Parallel(n, 1, func(p0, p1 int) {
		normRows(x[p0*c:p1*c], nil, yd[p0*c:p1*c], c, o.mu, o.inv, gamma, beta, o.act)
	})
	return y, nil
}

// channelSums adds, for each channel k in [c0, c1) and each position in
// order, float64(x) to sum[k−c0] and float64(x)² to ss[k−c0] (x holds
// rows of c channels): the AVX-512 pass for whole groups of 8 channels,
// the Go loop for the rest, the same bits either way.
func channelSums(x []float32, c, c0, c1 int, sum, ss []float64) {
	n := len(x) / c
	k0 := 0
	if v := (c1 - c0) &^ 7; hasBNAsm && n > 0 && v > 0 {
		bnSums(&x[c0], c, n, v, &sum[0], &ss[0])
		k0 = v
	}
	for p := 0; p < n; p++ {
		for k, v := range x[p*c+c0+k0 : p*c+c1] {
			sum[k0+k] += float64(v)
			ss[k0+k] += float64(v) * float64(v)
		}
	}
}

// normRows normalizes rows of c channels: h = (x − mu)·inv, xhat = h
// (unless xhat is nil), y = act(h·g + b), in float32.
func normRows(x, xhat, y []float32, c int, mu, inv, g, b []float32, act Activation) {
	rows := len(x) / c
	if rows == 0 {
		return
	}
	if hasBNAsm && c%8 == 0 {
		var hp *float32
		if xhat != nil {
			hp = &xhat[0]
		}
		bnNorm(&x[0], hp, &y[0], rows, c, &mu[0], &inv[0], &g[0], &b[0], int(act))
		return
	}
	for p := 0; p < rows; p++ {
		ys := y[p*c : (p+1)*c]
		for k, v := range x[p*c : (p+1)*c] {
			h := (v - mu[k]) * inv[k]
			if xhat != nil {
				xhat[p*c+k] = h
			}
			ys[k] = activate(act, h*g[k]+b[k])
		}
	}
}

// frozenForward is a training pass with frozen statistics: normalized by
// the running ones, which stay as they are.
func (o *bnOp) frozenForward(x, gamma, beta, y []float32) {
	c := o.c
	copy(o.mu, o.mean)
	for ch := range o.inv {
		o.inv[ch] = float32(1 / math.Sqrt(float64(o.vr[ch])+graph.BNEpsilon))
	}
	o.Eng.Parallel(len(x)/c, 1, func(p0, p1 int) {
		normRows(x[p0*c:p1*c], nil, y[p0*c:p1*c], c, o.mu, o.inv, gamma, beta, o.act)
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
	fwd        *bnOp
	dgamma     []float32
	dbeta      []float32
	kk, sb, sg []float64 // per channel: γ/(N·σ), Σ dz, Σ dz·x̂ (0 when frozen)
	out        buffer
}

func (o *bnGradOp) Arity() int    { return 2 }
func (o *bnGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(1)) }
func (o *bnGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *bnGradOp) Do(vs ...G.Value) (G.Value, error) {
	dz, gamma := data(vs[0]), data(vs[1])
	c, x, mu, inv := o.fwd.c, o.fwd.x, o.fwd.mu, o.fwd.inv
	if len(x) != len(dz) {
		return nil, o.ShapeErr("a batch norm's gradient before its training forward pass")
	}
	n := float64(len(dz) / c)
	if len(o.dgamma) != c {
		o.dgamma, o.dbeta = make([]float32, c), make([]float32, c)
	}
	dx := o.out.Get(vs[0].Shape()...)
	d := dx.Float32s()
	if len(o.kk) != c {
		o.kk, o.sb, o.sg = make([]float64, c), make([]float64, c), make([]float64, c)
	}
	o.Eng.Parallel(c, 1, func(c0, c1 int) {
		sb, sg := o.sb[c0:c1], o.sg[c0:c1]
		clear(sb)
		clear(sg)
		gradSums(dz, x, c, c0, c1, mu, inv, sb, sg)
		for k := range sb {
			o.dbeta[c0+k], o.dgamma[c0+k] = float32(sb[k]), float32(sg[k])
			o.kk[c0+k] = float64(gamma[c0+k]) * float64(o.fwd.inv[c0+k]) / n
			if o.fwd.frozen { // the statistics are constants: dx = γ/σ · dz
				sb[k], sg[k] = 0, 0
			}
		}
	})
	o.Eng.Parallel(len(dz)/c, 1, func(p0, p1 int) {
		gradRows(dz[p0*c:p1*c], x[p0*c:p1*c], d[p0*c:p1*c], c, n, o.kk, o.sb, o.sg, mu, inv)
	})
	return dx, nil
}

// gradRows computes rows of c channels of a batch norm's input gradient:
// x̂ = (x − mu)·inv in float32, then in float64
// dx = float32(kk·((n·dz − sb) − x̂·sg)).
func gradRows(dz, x, dx []float32, c int, n float64, kk, sb, sg []float64, mu, inv []float32) {
	rows := len(dz) / c
	if rows == 0 {
		return
	}
	if hasBNAsm && c%8 == 0 {
		bnGradApply(&dz[0], &x[0], &dx[0], rows, c, n, &kk[0], &sb[0], &sg[0], &mu[0], &inv[0])
		return
	}
	for p := 0; p < rows; p++ {
		xs, ds := x[p*c:(p+1)*c], dx[p*c:(p+1)*c]
		for k, v := range dz[p*c : (p+1)*c] {
			h := (xs[k] - mu[k]) * inv[k]
			ds[k] = float32(kk[k] * (n*float64(v) - sb[k] - float64(h)*sg[k]))
		}
	}
}

// gradSums adds, for each channel k in [c0, c1) and each position in
// order, float64(dz) to sb[k−c0] and float64(dz)·float64(x̂) to sg[k−c0],
// x̂ = (x − mu[k])·inv[k] in float32: the AVX-512 pass for whole groups of 8
// channels, the Go loop for the rest, the same bits either way.
func gradSums(dz, x []float32, c, c0, c1 int, mu, inv []float32, sb, sg []float64) {
	n := len(dz) / c
	k0 := 0
	if v := (c1 - c0) &^ 7; hasBNAsm && n > 0 && v > 0 {
		bnGradSums(&dz[c0], &x[c0], c, n, v, &mu[c0], &inv[c0], &sb[0], &sg[0])
		k0 = v
	}
	for p := 0; p < n; p++ {
		xs := x[p*c+c0+k0 : p*c+c1]
		for k, v := range dz[p*c+c0+k0 : p*c+c1] {
			ch := c0 + k0 + k
			h := (xs[k] - mu[ch]) * inv[ch]
			sb[k0+k] += float64(v)
			sg[k0+k] += float64(v) * float64(h)
		}
	}
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
