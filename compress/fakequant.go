package compress

import (
	"github.com/lathe-ml/lathe/model"

	"slices"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/internal/graphop"
)

// Observe folds one batch into an observer's range unless it is frozen
// (or holds the batch's range, for data-parallel training).
func Observe(o *model.Observer, x []float32) {
	if o.Frozen {
		return
	}
	lo, hi := MinMax(x)
	if o.Hold {
		o.SeenMin, o.SeenMax, o.Seen = lo, hi, true
		return
	}
	o.Fold(lo, hi)
}

// ObserverParams are the quantization parameters of an observer's current
// range.
func ObserverParams(o *model.Observer) QuantParams {
	if !o.Initialized && o.Seen {
		return ParamsFromRange(o.Spec, []float32{o.SeenMin}, []float32{o.SeenMax})
	}
	return ParamsFromRange(o.Spec, []float32{o.Min}, []float32{o.Max})
}

// FakeQuantOp is quantization-aware training's op: its forward pass is
// quantize-then-dequantize, its backward pass the straight-through
// estimator — the gradient passes unchanged where the input fell inside the
// clipping range and is zero outside. With Params nil the parameters are
// derived from the input each step (weights: their own min/max, per tensor
// or per channel); otherwise the given ones are used (frozen observers).
type FakeQuantOp struct {
	graphop.Base
	Spec     model.QuantSpec
	Channels int          // first dimension, for per-channel specs
	Params   *QuantParams // fixed parameters, or nil
	// Ctl, when set, overrides Spec and can switch the op off (identity
	// forward and gradient) until the schedule turns quantization on.
	Ctl *model.QuantControl
	// Obs, when set, quantizes an activation with the observer's range,
	// updating it first when Train is set.
	Obs    *model.Observer
	Train  bool
	Last   QuantParams // the parameters of the last forward pass
	inside []bool
	// allInside: every element of the last forward pass was in range.
	allInside bool
	out       graphop.Buffer
}

// NewFakeQuant returns a fake-quantization op for a tensor whose first
// dimension has channels entries.
func NewFakeQuant(name string, eng compute.Engine, spec model.QuantSpec, channels int) *FakeQuantOp {
	return &FakeQuantOp{Base: graphop.NewBase(name, eng), Spec: spec, Channels: channels}
}

func (o *FakeQuantOp) Arity() int    { return 1 }
func (o *FakeQuantOp) Type() hm.Type { a := hm.TypeVariable('a'); return hm.NewFnType(a, a) }
func (o *FakeQuantOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *FakeQuantOp) Do(vs ...G.Value) (G.Value, error) {
	x := graphop.Data(vs[0])
	y := o.out.Get(vs[0].Shape()...)
	if len(o.inside) != len(x) {
		o.inside = make([]bool, len(x))
	}
	if o.Obs != nil {
		if !o.Obs.Enabled {
			copy(y.Float32s(), x)
			o.allInside = true
			return y, nil
		}
		if o.Train {
			Observe(o.Obs, x)
		}
		p := ObserverParams(o.Obs)
		o.Last = p
		o.allInside = p.FakeQuant(y.Float32s(), x, o.inside)
		return y, nil
	}
	if o.Ctl != nil {
		if !o.Ctl.Enabled {
			copy(y.Float32s(), x)
			o.allInside = true
			return y, nil
		}
		o.Spec = o.Ctl.Spec
	}
	if o.Params != nil {
		o.Last = *o.Params
	} else {
		o.Last = o.paramsFor(x)
	}
	yd := y.Float32s()
	// First without the per-element flags the straight-through gradient
	// needs only when some element fell outside the range (rare for
	// weights); then, if one did, again with them (same output).
	o.allInside = o.fakeQuant(yd, x, nil)
	if !o.allInside {
		o.fakeQuant(yd, x, o.inside)
	}
	return y, nil
}

// fakeQuant runs the weight path's quantize-dequantize, split over the
// engine by channels, and reports whether every element was in range.
func (o *FakeQuantOp) fakeQuant(yd, x []float32, inside []bool) bool {
	if o.Eng == nil {
		return o.Last.FakeQuant(yd, x, inside)
	}
	// Each range reports at its first channel; the others stay true.
	parts := make([]bool, len(o.Last.Scale))
	for i := range parts {
		parts[i] = true
	}
	o.Eng.Parallel(len(o.Last.Scale), 1, func(c0, c1 int) { parts[c0] = o.Last.FakeQuantChannels(yd, x, inside, c0, c1) })
	return !slices.Contains(parts, false)
}

// paramsFor is ParamsFor with the min/max pass split over the engine.
func (o *FakeQuantOp) paramsFor(x []float32) QuantParams {
	channels := o.Channels
	if !o.Spec.PerChannel || channels <= 0 {
		return ParamsFor(o.Spec, x, 1)
	}
	per := len(x) / channels
	lo, hi := make([]float32, channels), make([]float32, channels)
	each := func(c0, c1 int) {
		for c := c0; c < c1; c++ {
			lo[c], hi[c] = MinMax(x[c*per : (c+1)*per])
		}
	}
	if o.Eng != nil {
		o.Eng.Parallel(channels, 1, each)
	} else {
		each(0, channels)
	}
	return ParamsFromRange(o.Spec, lo, hi)
}

func (o *FakeQuantOp) DiffWRT(int) []bool { return []bool{true} }
func (o *FakeQuantOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	d, err := G.ApplyOp(&steOp{Base: graphop.NewBase(o.Name+".ste", o.Eng), fwd: o}, grad)
	return G.Nodes{d}, err
}

// steOp passes the gradient where the forward input was inside the range.
type steOp struct {
	graphop.Base
	fwd *FakeQuantOp
	out graphop.Buffer
}

func (o *steOp) Arity() int    { return 1 }
func (o *steOp) Type() hm.Type { a := hm.TypeVariable('a'); return hm.NewFnType(a, a) }
func (o *steOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *steOp) Do(vs ...G.Value) (G.Value, error) {
	if o.fwd.allInside {
		// Every input was inside the range (always so for weights whose range
		// is their own min/max): the gradient passes unchanged, uncopied.
		return vs[0], nil
	}
	g := graphop.Data(vs[0])
	d := o.out.Get(vs[0].Shape()...)
	dd := d.Float32s()
	for i, v := range g {
		if o.fwd.inside[i] {
			dd[i] = v
		} else {
			dd[i] = 0
		}
	}
	return d, nil
}

// Hooks are the graph hooks through which a model's quantization controls
// and activation observers are computed: each weight with a control is
// fake-quantized (per channel over its first dimension when its spec says
// so), each observed layer's output too.
func Hooks() model.Hooks {
	return model.Hooks{
		Weight: func(eng compute.Engine, w *G.Node, ctl *model.QuantControl) (*G.Node, error) {
			op := NewFakeQuant(w.Name()+".fq", eng, ctl.Spec, w.Shape()[0])
			op.Ctl = ctl
			return G.ApplyOp(op, w)
		},
		Output: func(eng compute.Engine, layer string, h *G.Node, obs *model.Observer, train bool) (*G.Node, error) {
			op := NewFakeQuant(layer+".act.fq", eng, obs.Spec, 1)
			op.Obs, op.Train = obs, train
			return G.ApplyOp(op, h)
		},
	}
}
