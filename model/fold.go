package model

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/kernels"
)

// Quantization-aware training with batch norms folded (Jacob et al. 2018
// §3.2; Krishnamoorthi 2018 §2.4; PyTorch's fused ConvBn modules do the
// same). A layer whose batch norm folds into it (Model.Fold) computes with
//
//	W_fold = W · s,  s = γ/√(running variance + ε)  (graph.BNScale, per output channel)
//
// fake-quantized, and its output is divided by s again, so that the batch
// norm after it still normalizes the layer's own output — by the batch's
// statistics while they train, by the running ones once frozen
// (BNControl). In evaluation, and in training once frozen, the network
// computes exactly what the folded network does: conv(x, Q(W_fold)) +
// (β − μ·s) — the weights the model file stores (Model.FoldBatchNorms).
// s is a constant of each pass: no gradient flows to γ through it
// (without quantization the two scalings cancel exactly).

// BNControl is the live setting of a model's batch norms in training,
// shared by every graph built from the model and set by the quantization
// schedule: Frozen makes training graphs normalize by the running
// statistics and stop updating them.
type BNControl struct {
	Frozen bool
}

// foldOp scales a weight's output channels (its first dimension) by s.
type foldOp struct {
	opBase
	dims int
	vr   []float32 // the batch norm's running variance (a model buffer)
	s    []float32 // this pass's factors, read by the unfoldOp and the gradients
	out  buffer
}

func (o *foldOp) Arity() int    { return 2 }
func (o *foldOp) Type() hm.Type { return fnType(f32T(o.dims), f32T(1), f32T(o.dims)) }
func (o *foldOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	w := in[0].(tensor.Shape)
	if w[0] != len(o.vr) {
		return nil, o.ShapeErr("weight %v for a batch norm of %d channels", w, len(o.vr))
	}
	return w.Clone(), nil
}

func (o *foldOp) Do(vs ...G.Value) (G.Value, error) {
	w, gamma := data(vs[0]), data(vs[1])
	if len(o.s) != len(gamma) {
		o.s = make([]float32, len(gamma))
	}
	graph.BNScales(o.s, gamma, o.vr)
	y := o.out.Get(vs[0].Shape()...)
	kernels.ScaleRows(y.Float32s(), w, o.s)
	return y, nil
}

func (o *foldOp) DiffWRT(int) []bool { return []bool{true, false} }
func (o *foldOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dw, err := G.ApplyOp(&scaleGradOp{opBase: newBase(o.Name+".grad", o.Eng), fold: o, rows: true, dims: o.dims}, grad)
	return G.Nodes{dw, nil}, err
}

// unfoldOp divides a layer's output [n, …·C] (channels last) by its
// foldOp's s and adds the layer's bias, when it has one.
type unfoldOp struct {
	opBase
	fold  *foldOp
	arity int // 1, or 2 with a bias
	out   buffer
}

func (o *unfoldOp) Arity() int { return o.arity }
func (o *unfoldOp) Type() hm.Type {
	if o.arity == 2 {
		return fnType(f32T(2), f32T(1), f32T(2))
	}
	return fnType(f32T(2), f32T(2))
}
func (o *unfoldOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}

func (o *unfoldOp) Do(vs ...G.Value) (G.Value, error) {
	x, s := data(vs[0]), o.fold.s
	c := len(s)
	var b []float32
	if o.arity == 2 {
		b = data(vs[1])
	}
	y := o.out.Get(vs[0].Shape()...)
	yd := y.Float32s()
	o.Eng.Parallel(len(x)/c, max(1, minParallel/c), func(p0, p1 int) {
		for p := p0; p < p1; p++ {
			for k, v := range x[p*c : (p+1)*c] {
				v = unscale(v, s[k])
				if b != nil {
					v += b[k]
				}
				yd[p*c+k] = v
			}
		}
	})
	return y, nil
}

func (o *unfoldOp) DiffWRT(int) []bool { return slices.Repeat([]bool{true}, o.arity) }
func (o *unfoldOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(&scaleGradOp{opBase: newBase(o.Name+".grad", o.Eng), fold: o.fold, dims: 2}, grad)
	if err != nil || o.arity == 1 {
		return G.Nodes{dx}, err
	}
	db, err := G.ApplyOp(&channelSumOp{opBase: newBase(o.Name+".dbias", o.Eng), c: len(o.fold.vr)}, grad)
	return G.Nodes{dx, db}, err
}

// scaleGradOp is the gradient of a foldOp (rows times s) or of an
// unfoldOp (channels divided by s).
type scaleGradOp struct {
	opBase
	fold *foldOp
	rows bool
	dims int
	out  buffer
}

func (o *scaleGradOp) Arity() int    { return 1 }
func (o *scaleGradOp) Type() hm.Type { return fnType(f32T(o.dims), f32T(o.dims)) }
func (o *scaleGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *scaleGradOp) Do(vs ...G.Value) (G.Value, error) {
	g, s := data(vs[0]), o.fold.s
	y := o.out.Get(vs[0].Shape()...)
	yd := y.Float32s()
	if o.rows {
		kernels.ScaleRows(yd, g, s)
		return y, nil
	}
	c := len(s)
	for i, v := range g {
		yd[i] = unscale(v, s[i%c])
	}
	return y, nil
}

// unscale is v/s, and 0 for a channel whose scale is 0 (γ pruned: the
// folded filter, and so v, is zero too).
func unscale(v, s float32) float32 {
	if s == 0 {
		return 0
	}
	return v / s
}

// channelSumOp sums a gradient [n, …·C] over everything but its channels.
type channelSumOp struct {
	opBase
	c   int
	out buffer
}

func (o *channelSumOp) Arity() int                                     { return 1 }
func (o *channelSumOp) Type() hm.Type                                  { return fnType(f32T(2), f32T(1)) }
func (o *channelSumOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return tensor.Shape{o.c}, nil }
func (o *channelSumOp) Do(vs ...G.Value) (G.Value, error) {
	g := data(vs[0])
	y := o.out.Get(o.c)
	sums := make([]float64, o.c)
	for i, v := range g {
		sums[i%o.c] += float64(v)
	}
	for k, v := range sums {
		y.Float32s()[k] = float32(v)
	}
	return y, nil
}

// foldedWeight returns the weight node a layer folding batch norm bn
// computes with (W·s, fake-quantized when the weight is) and the op that
// unfolds its output.
func (m *Model) foldedWeight(eng compute.Engine, l graph.Layer, bn string, byName map[string]*G.Node, hooks Hooks) (*G.Node, *foldOp, error) {
	vr := m.Buffer(bn + ".running_var")
	if vr == nil {
		return nil, nil, fmt.Errorf("batch norm %s to fold has no running variance", bn)
	}
	w := byName[l.Name]
	fold := &foldOp{opBase: newBase(l.Name+".fold", eng), dims: w.Dims(), vr: vr.Data()}
	wf, err := G.ApplyOp(fold, w, byName[bn])
	if err != nil {
		return nil, nil, err
	}
	if ctl := m.Quant[l.Name]; ctl != nil {
		wf, err = hooks.Weight(eng, wf, ctl)
	}
	return wf, fold, err
}

// unfold divides a folded layer's output h by s and adds the layer's bias.
func unfold(eng compute.Engine, l graph.Layer, fold *foldOp, h *G.Node, byName map[string]*G.Node) (*G.Node, error) {
	op := &unfoldOp{opBase: newBase(l.Name+".unfold", eng), fold: fold, arity: 1}
	if b := byName[l.Name+".bias"]; b != nil {
		op.arity = 2
		return G.ApplyOp(op, h, b)
	}
	return G.ApplyOp(op, h)
}

// FoldBatchNorms returns the model with the batch norms of m.Fold folded
// into their layers: each layer's weight W·s (graph.BNScale; the values
// training fake-quantized) and bias β + (b − μ)·s, the batch norm's
// activation, and the batch norm gone (graph.Network.Fold). The result
// shares m's quantization controls; activation observers of a folded batch
// norm move to its layer. In evaluation it computes what m computes, up to
// float rounding.
func (m *Model) FoldBatchNorms() (*Model, error) {
	if len(m.Fold) == 0 {
		return nil, errors.New("model: no batch norm to fold")
	}
	net, err := m.Net.Fold(m.Fold)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	out, err := build(Spec{Init: m.Spec.Init}, m.Input, net, 0)
	if err != nil {
		return nil, err
	}
	for _, p := range out.Params {
		if old := m.Param(p.Name); old != nil {
			copy(p.Data(), old.Data())
		}
	}
	for _, p := range out.Buffers {
		copy(p.Data(), m.Buffer(p.Name).Data())
	}
	for l, bn := range m.Fold {
		gamma, beta := m.Param(bn).Data(), m.Param(bn+".bias").Data()
		mean, vr := m.Buffer(bn+".running_mean").Data(), m.Buffer(bn+".running_var").Data()
		s := make([]float32, len(gamma))
		graph.BNScales(s, gamma, vr)
		w := out.Param(l)
		kernels.ScaleRows(w.Data(), m.Param(l).Data(), s)
		b := out.Param(l + ".bias").Data()
		old := m.Param(l + ".bias")
		for k := range b {
			var lb float32
			if old != nil {
				lb = old.Data()[k]
			}
			b[k] = beta[k] + (lb-mean[k])*s[k]
		}
	}
	out.Quant = m.Quant
	if m.ActQuant != nil {
		out.ActQuant = maps.Clone(m.ActQuant)
		for l, bn := range m.Fold {
			if o, ok := out.ActQuant[bn]; ok {
				delete(out.ActQuant, bn)
				out.ActQuant[l] = o
			}
		}
	}
	return out, nil
}
