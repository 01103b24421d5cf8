package distill

import (
	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/internal/graphop"
)

// HintOp is feature (hint) distillation, as FitNets: a student layer's
// activations h_s [B, ds] are mapped by a learned projection P [ds, dt]
// to the teacher layer's width and pulled towards the teacher's
// activations h_t [B, dt]: loss = w/(2B) · Σ ‖h_s·P − h_t‖². B counts rows:
// a sequence layer's activations [batch, T·ds] are batch·T rows, one per
// position, each projected alike (the student's node keeps its own shape,
// and so does its gradient). Gradients flow
// to h_s and P; the teacher's activations are data. The op adds the term
// to a loss it is given (its first input), so that one scalar carries the
// whole objective.
type HintOp struct {
	graphop.Base
	Weight    float32
	B, DS, DT int // rows, student width, teacher width
	// Loss is the last batch's value.
	Loss float64
	r    []float32 // residual h_s·P − h_t of the last batch
	out  graphop.Buffer
}

// NewHintOp returns a hint loss op of the given weight for a batch of b,
// a student layer of width ds and a teacher layer of width dt.
func NewHintOp(eng compute.Engine, weight float64, b, ds, dt int) *HintOp {
	return &HintOp{Base: graphop.NewBase("hint", eng), Weight: float32(weight), B: b, DS: ds, DT: dt}
}

func (o *HintOp) Arity() int { return 4 }
func (o *HintOp) Type() hm.Type {
	return graphop.FnType(graphop.F32T(0), graphop.F32T(0), graphop.F32T(2), graphop.F32T(2), graphop.F32T(2))
}
func (o *HintOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return tensor.ScalarShape(), nil }
func (o *HintOp) Do(in ...G.Value) (G.Value, error) {
	base := graphop.Scalar(in[0])
	vs := in[1:]
	hs, p, ht := vs[0].Shape(), vs[1].Shape(), vs[2].Shape()
	b, ds, dt := o.B, o.DS, o.DT
	if hs.TotalSize() != b*ds || !p.Eq(tensor.Shape{ds, dt}) || ht.TotalSize() != b*dt {
		return nil, o.ShapeErr("student %v, projection %v, teacher %v; want [%d %d], [%d %d], [%d %d]", hs, p, ht, b, ds, ds, dt, b, dt)
	}
	if len(o.r) != b*dt {
		o.r = make([]float32, b*dt)
	}
	copy(o.r, graphop.Data(vs[2]))
	// r = h_s·P − h_t
	o.Eng.Sgemm(false, false, b, dt, ds, 1, graphop.Data(vs[0]), ds, graphop.Data(vs[1]), dt, -1, o.r, dt)
	var sum float64
	for _, v := range o.r {
		sum += float64(v) * float64(v)
	}
	o.Loss = float64(o.Weight) * sum / (2 * float64(b))
	l := o.out.Scalar()
	l.Float32s()[0] = base + float32(o.Loss)
	return l, nil
}
func (o *HintOp) DiffWRT(int) []bool { return []bool{true, true, true, false} }
func (o *HintOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dh, err := G.ApplyOp(&hintGradOp{Base: graphop.NewBase("hint.grad_student", o.Eng), fwd: o, shape: in[1].Shape().Clone()}, in[2], grad)
	if err != nil {
		return nil, err
	}
	dp, err := G.ApplyOp(&hintGradOp{Base: graphop.NewBase("hint.grad_projection", o.Eng), fwd: o, projection: true}, in[1], grad)
	return G.Nodes{grad, dh, dp, nil}, err
}

// hintGradOp: with projection false, d h_s = c·r·Pᵀ from (P, seed); with
// projection true, d P = c·h_sᵀ·r from (h_s, seed); c = seed·w/B.
type hintGradOp struct {
	graphop.Base
	fwd        *HintOp
	projection bool
	shape      tensor.Shape // the student node's (d h_s)
	out        graphop.Buffer
}

func (o *hintGradOp) Arity() int { return 2 }
func (o *hintGradOp) Type() hm.Type {
	return graphop.FnType(graphop.F32T(2), graphop.F32T(2), graphop.F32T(0))
}
func (o *hintGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	if o.projection {
		return tensor.Shape{o.fwd.DS, o.fwd.DT}, nil
	}
	return o.shape.Clone(), nil
}
func (o *hintGradOp) Do(vs ...G.Value) (G.Value, error) {
	b, ds, dt := o.fwd.B, o.fwd.DS, o.fwd.DT
	c := graphop.Scalar(vs[1]) * o.fwd.Weight / float32(b)
	x := graphop.Data(vs[0])
	if o.projection {
		d := o.out.Get(ds, dt)
		o.Eng.Sgemm(true, false, ds, dt, b, c, x, ds, o.fwd.r, dt, 0, d.Float32s(), dt)
		return d, nil
	}
	d := o.out.Get(o.shape...)
	o.Eng.Sgemm(false, true, b, ds, dt, c, o.fwd.r, dt, x, dt, 0, d.Float32s(), ds)
	return d, nil
}
