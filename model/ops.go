package model

import (
	"math"
	"math/rand/v2"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/internal/graphop"
)

// The shared op plumbing (internal/graphop), under the names this package's
// ops use.
type (
	opBase = graphop.Base
	buffer = graphop.Buffer
)

var (
	newBase = graphop.NewBase
	f32T    = graphop.F32T
	fnType  = graphop.FnType
	data    = graphop.Data
	scalar  = graphop.Scalar
)

// Activation names a fused activation.
type Activation int

const (
	Identity Activation = iota
	ReLU
	ReLU6
)

// activation is the op for a described activation.
func activation(a graph.Activation) Activation {
	switch a {
	case graph.ReLU:
		return ReLU
	case graph.ReLU6:
		return ReLU6
	}
	return Identity
}

// activate applies act to v.
func activate(act Activation, v float32) float32 {
	switch act {
	case ReLU:
		return relu(v)
	case ReLU6:
		return min(relu(v), 6)
	}
	return v
}

// biasAct adds the bias (none when b is nil) to each row of y (rows×cols)
// and applies act.
func biasAct(eng compute.Engine, y, b []float32, rows, cols int, act Activation) {
	eng.Parallel(rows, max(1, minParallel/cols), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := y[i*cols : (i+1)*cols]
			if b == nil || act == ReLU6 {
				for j, v := range row {
					if b != nil {
						v += b[j]
					}
					row[j] = activate(act, v)
				}
				continue
			}
			bb := b[:len(row)]
			if act == ReLU {
				for j := range row {
					row[j] = relu(row[j] + bb[j])
				}
			} else {
				for j := range row {
					row[j] += bb[j]
				}
			}
		}
	})
}

// minParallel is the fewest elements an elementwise kernel splits across
// threads: below it, waking a second thread costs more than it saves.
const minParallel = 1 << 14

// relu is max(v, 0) without branches: the sign bit, smeared, masks v. It
// maps −0 to +0 and keeps positive NaNs.
func relu(v float32) float32 {
	b := math.Float32bits(v)
	return math.Float32frombits(b &^ uint32(int32(b)>>31))
}

// ---------------------------------------------------------------- linear

// linearOp computes act(x·Wᵀ + b) for x [batch, in], W [out, in], b [out].
type linearOp struct {
	opBase
	act    Activation
	needDX bool // false for a first layer: no gradient for the input images
	out    buffer
}

func (o *linearOp) Arity() int { return 3 }
func (o *linearOp) Type() hm.Type {
	return fnType(f32T(2), f32T(2), f32T(2), f32T(1))
}
func (o *linearOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	x, w := in[0].(tensor.Shape), in[1].(tensor.Shape)
	if len(x) != 2 || len(w) != 2 || x[1] != w[1] {
		return nil, o.ShapeErr("x %v and W %v do not match", x, w)
	}
	return tensor.Shape{x[0], w[0]}, nil
}
func (o *linearOp) Do(vs ...G.Value) (G.Value, error) {
	xs, ws := vs[0].Shape(), vs[1].Shape()
	n, in, out := xs[0], xs[1], ws[0]
	if ws[1] != in || vs[2].Shape().TotalSize() != out {
		return nil, o.ShapeErr("x %v, W %v, b %v", xs, ws, vs[2].Shape())
	}
	y := o.out.Get(n, out)
	yd := y.Float32s()
	o.Eng.Sgemm(false, true, n, out, in, 1, data(vs[0]), in, data(vs[1]), in, 0, yd, out)
	biasAct(o.Eng, yd, data(vs[2]), n, out, o.act)
	return y, nil
}
func (o *linearOp) DiffWRT(int) []bool { return []bool{o.needDX, true, true} }
func (o *linearOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dz, db, err := reluAndBiasGrad(o.Name, o.Eng, o.act, output, grad, 0)
	if err != nil {
		return nil, err
	}
	dw, err := G.ApplyOp(&linearGradWOp{opBase: newBase(o.Name+".dW", o.Eng)}, dz, in[0])
	if err != nil {
		return nil, err
	}
	var dx *G.Node
	if o.needDX {
		if dx, err = G.ApplyOp(&linearGradXOp{opBase: newBase(o.Name+".dx", o.Eng)}, dz, in[1]); err != nil {
			return nil, err
		}
	}
	return G.Nodes{dx, dw, db}, nil
}

// actGrad adds the nodes that turn an activation's output gradient into
// the pre-activation gradient dz and, when the layer has a bias, its
// gradient db (the column sums of dz viewed as [rows, cols]).
func actGrad(name string, eng compute.Engine, act Activation, output, grad *G.Node, cols int, bias bool) (dz, db *G.Node, err error) {
	if bias && act != ReLU6 {
		return reluAndBiasGrad(name, eng, act, output, grad, cols)
	}
	dz = grad
	if act != Identity {
		if dz, err = G.ApplyOp(&actGradOp{opBase: newBase(name+".actgrad", eng), act: act}, output, grad); err != nil {
			return nil, nil, err
		}
	}
	if bias {
		db, err = G.ApplyOp(&colSumOp{opBase: newBase(name+".db", eng), cols: cols}, dz)
	}
	return dz, db, err
}

// actGradOp computes dz = dy where the activation passed its input (y > 0;
// for ReLU6 also y < 6), else 0; inputs y and dy.
type actGradOp struct {
	opBase
	act Activation
	out buffer
}

func (o *actGradOp) Arity() int    { return 2 }
func (o *actGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(2)) }
func (o *actGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *actGradOp) Do(vs ...G.Value) (G.Value, error) {
	s := vs[0].Shape()
	dz := o.out.Get(s...)
	y, dy, d := data(vs[0]), data(vs[1]), dz.Float32s()
	if len(dy) != len(y) {
		return nil, o.ShapeErr("y %v, dy %v", s, vs[1].Shape())
	}
	hi := float32(math.Inf(1))
	if o.act == ReLU6 {
		hi = 6
	}
	o.Eng.Parallel(len(y), minParallel, func(lo, up int) { maskGrad(y[lo:up], dy[lo:up], d[lo:up], hi) })
	return dz, nil
}

// maskGrad passes dy where 0 < y < hi and +0 elsewhere (a NaN y included):
// the AVX-512 pass for whole vectors, the Go loop for the rest, the same
// bits either way.
func maskGrad(y, dy, d []float32, hi float32) {
	k := 0
	if v := len(y) &^ 15; hasBNAsm && v > 0 {
		actGradMask(&y[0], &dy[0], &d[0], v, hi)
		k = v
	}
	for i := k; i < len(y); i++ {
		if v := y[i]; v > 0 && v < hi {
			d[i] = dy[i]
		} else {
			d[i] = 0
		}
	}
}

// reluAndBiasGrad adds the nodes that turn an activation's output gradient
// into the pre-activation gradient dz and the bias gradient db (the column
// sums of dz viewed as [rows, cols]; cols 0 means the output's second
// dimension). With ReLU both come from one fused pass.
func reluAndBiasGrad(name string, eng compute.Engine, act Activation, output, grad *G.Node, cols int) (dz, db *G.Node, err error) {
	if act != ReLU {
		db, err = G.ApplyOp(&colSumOp{opBase: newBase(name+".db", eng), cols: cols}, grad)
		return grad, db, err
	}
	op := &reluGradOp{opBase: newBase(name+".relugrad", eng), cols: cols}
	if dz, err = G.ApplyOp(op, output, grad); err != nil {
		return nil, nil, err
	}
	db, err = G.ApplyOp(&biasOfOp{opBase: newBase(name+".db", eng), src: op}, dz)
	return dz, db, err
}

// reluGradOp computes dz = dy where y > 0, else 0 (inputs y, dy), and in
// the same pass the column sums of dz (the bias gradient, handed out by a
// biasOfOp). Threads own ranges of columns, so the sums' order is fixed
// whatever the thread count.
type reluGradOp struct {
	opBase
	cols int
	out  buffer
	db   buffer
}

func (o *reluGradOp) Arity() int    { return 2 }
func (o *reluGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(2)) }
func (o *reluGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *reluGradOp) Do(vs ...G.Value) (G.Value, error) {
	s := vs[0].Shape()
	dz := o.out.Get(s...)
	y, dy, d := data(vs[0]), data(vs[1]), dz.Float32s()
	if len(dy) != len(y) {
		return nil, o.ShapeErr("y %v, dy %v", s, vs[1].Shape())
	}
	cols := o.cols
	if cols == 0 {
		cols = s[1]
	}
	rows := len(y) / cols
	db := o.db.Get(cols).Float32s()
	clear(db)
	o.Eng.Parallel(cols, max(1, minParallel/rows), func(c0, c1 int) {
		acc := db[c0:c1]
		n8 := 0
		if hasAVX2 {
			n8 = len(acc) &^ 7
		}
		for i := 0; i < rows; i++ {
			off := i*cols + c0
			if n8 > 0 {
				// The same masks and sums, eight columns at a time.
				reluGradAcc8(&d[off], &y[off], &dy[off], &acc[0], n8)
			}
			off += n8
			dst := d[off : off+len(acc)-n8]
			reluGrad(dst, y[off:off+len(dst)], dy[off:off+len(dst)])
			for j, v := range dst {
				acc[n8+j] += v
			}
		}
	})
	return dz, nil
}

// biasOfOp returns the bias gradient its reluGradOp computed; its input (dz)
// only orders it after that op.
type biasOfOp struct {
	opBase
	src *reluGradOp
}

func (o *biasOfOp) Arity() int    { return 1 }
func (o *biasOfOp) Type() hm.Type { return fnType(f32T(1), f32T(2)) }
func (o *biasOfOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	if o.src.cols > 0 {
		return tensor.Shape{o.src.cols}, nil
	}
	return tensor.Shape{in[0].(tensor.Shape)[1]}, nil
}
func (o *biasOfOp) Do(...G.Value) (G.Value, error) { return o.src.db.T, nil }

// reluGrad sets dst[i] = dy[i] where y[i] > 0 and 0 elsewhere, without
// branches: the sign-and-zero test is a bit mask.
func reluGrad(dst, y, dy []float32) {
	dy = dy[:len(y)]
	dst = dst[:len(y)]
	for i, v := range y {
		b := int32(math.Float32bits(v))
		mask := uint32((^b & -b) >> 31) // all ones iff b > 0, i.e. v > 0
		dst[i] = math.Float32frombits(math.Float32bits(dy[i]) & mask)
	}
}

// linearGradWOp computes dzᵀ·x: [out, in] from dz [n, out] and x [n, in],
// into the slot its user chose (graphop.Slotted), or keeps dz and x there
// for its user to sum (graphop.Deferrable).
type linearGradWOp struct {
	opBase
	out      graphop.Slots
	deferred bool
	kept     graphop.Kept
}

func (o *linearGradWOp) UseSlot(k int)                              { o.out.Use(k) }
func (o *linearGradWOp) Defer(on bool)                              { o.deferred = on }
func (o *linearGradWOp) Operands(k int) ([]float32, []float32, int) { return o.kept.Operands(k) }

func (o *linearGradWOp) Arity() int    { return 2 }
func (o *linearGradWOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(2)) }
func (o *linearGradWOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{in[0].(tensor.Shape)[1], in[1].(tensor.Shape)[1]}, nil
}
func (o *linearGradWOp) Do(vs ...G.Value) (G.Value, error) {
	ds, xs := vs[0].Shape(), vs[1].Shape()
	n, out, in := ds[0], ds[1], xs[1]
	if o.deferred {
		at := o.out.At()
		o.kept.Keep(at, data(vs[0])[:n*out], data(vs[1])[:n*in], n)
		o.out.Use(0) // one placeholder for every slot
		dw := o.out.Get(out, in)
		o.out.Use(at)
		return dw, nil
	}
	dw := o.out.Get(out, in)
	o.Eng.Sgemm(true, false, out, in, n, 1, data(vs[0]), out, data(vs[1]), in, 0, dw.Float32s(), in)
	return dw, nil
}

// linearGradXOp computes dz·W: [n, in] from dz [n, out] and W [out, in].
type linearGradXOp struct {
	opBase
	out buffer
}

func (o *linearGradXOp) Arity() int    { return 2 }
func (o *linearGradXOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(2)) }
func (o *linearGradXOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{in[0].(tensor.Shape)[0], in[1].(tensor.Shape)[1]}, nil
}
func (o *linearGradXOp) Do(vs ...G.Value) (G.Value, error) {
	ds, ws := vs[0].Shape(), vs[1].Shape()
	n, out, in := ds[0], ds[1], ws[1]
	dx := o.out.Get(n, in)
	o.Eng.Sgemm(false, false, n, in, out, 1, data(vs[0]), out, data(vs[1]), in, 0, dx.Float32s(), in)
	return dx, nil
}

// colSumOp sums the rows of a matrix [n, c] into [c] (bias gradients). Each
// thread owns a range of columns, so the summation order is fixed.
type colSumOp struct {
	opBase
	cols int // columns of the matrix view; 0: the input's second dimension
	out  buffer
}

func (o *colSumOp) Arity() int    { return 1 }
func (o *colSumOp) Type() hm.Type { return fnType(f32T(1), f32T(2)) }
func (o *colSumOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	if o.cols > 0 {
		return tensor.Shape{o.cols}, nil
	}
	return tensor.Shape{in[0].(tensor.Shape)[1]}, nil
}
func (o *colSumOp) Do(vs ...G.Value) (G.Value, error) {
	s := vs[0].Shape()
	n, c := s[0], s[1]
	if o.cols > 0 {
		c = o.cols
		n = s.TotalSize() / c
	}
	db := o.out.Get(c)
	src, dst := data(vs[0]), db.Float32s()
	colSum(dst, src, n, c)
	return db, nil
}

func colSum(dst, src []float32, n, c int) {
	clear(dst)
	for i := 0; i < n; i++ {
		row := src[i*c : (i+1)*c]
		d := dst[:len(row)]
		for j, v := range row {
			d[j] += v
		}
	}
}

// ---------------------------------------------------------------- softmax cross-entropy

// softmaxCEOp computes the mean cross-entropy of softmax(logits) against
// class labels: inputs logits [batch, k·classes] and labels [batch·k]
// (class numbers as float32; k labels a sample, a language model's
// positions, each scoring its own row of classes). It keeps the
// probabilities for the backward pass and counts the batch's correct
// predictions.
type softmaxCEOp struct {
	opBase
	loss    buffer
	probs   []float32
	Correct int // correct top-1 predictions in the last batch
	// weights, when set, weigh each label's term by its class's weight:
	// the loss is Σ w·CE / Σ w (PyTorch's weighted mean); wsum is the last
	// batch's Σ w.
	weights []float32
	wsum    float64
	// smooth is the label smoothing ε: the target is (1 − ε)·onehot(y) +
	// ε/classes.
	smooth float32
}

func (o *softmaxCEOp) Arity() int    { return 2 }
func (o *softmaxCEOp) Type() hm.Type { return fnType(f32T(0), f32T(2), f32T(1)) }
func (o *softmaxCEOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.ScalarShape(), nil
}
func (o *softmaxCEOp) Do(vs ...G.Value) (G.Value, error) {
	logits, labels := data(vs[0]), data(vs[1])
	n := len(labels)
	if n == 0 || len(logits)%n != 0 {
		return nil, o.ShapeErr("%d labels for logits %v", n, vs[0].Shape())
	}
	c := len(logits) / n
	if len(o.probs) != n*c {
		o.probs = make([]float32, n*c)
	}
	var sum, wsum float64
	correct := 0
	for i := 0; i < n; i++ {
		row := logits[i*c : (i+1)*c]
		p := o.probs[i*c : (i+1)*c]
		m, arg := row[0], 0
		for j, v := range row {
			if v > m {
				m, arg = v, j
			}
		}
		var z float32
		for j, v := range row {
			e := float32(math.Exp(float64(v - m)))
			p[j] = e
			z += e
		}
		inv := 1 / z
		for j := range p {
			p[j] *= inv
		}
		y := int(labels[i])
		if y < 0 || y >= c {
			return nil, o.ShapeErr("label %d outside [0,%d)", y, c)
		}
		if arg == y {
			correct++
		}
		// log softmax of the true class, computed from the logits for accuracy.
		w := 1.0
		if o.weights != nil {
			w = float64(o.weights[y])
		}
		lz := math.Log(float64(z))
		ce := float64(m-row[y]) + lz
		if e := float64(o.smooth); e > 0 { // −Σ q·log p with q smoothed
			var mean float64
			for _, v := range row {
				mean += float64(m-v) + lz
			}
			ce = (1-e)*ce + e*mean/float64(c)
		}
		sum += w * ce
		wsum += w
	}
	o.Correct, o.wsum = correct, wsum
	l := o.loss.Scalar()
	l.Float32s()[0] = float32(sum / wsum)
	return l, nil
}
func (o *softmaxCEOp) DiffWRT(int) []bool { return []bool{true, false} }
func (o *softmaxCEOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	d, err := G.ApplyOp(&softmaxCEGradOp{opBase: newBase(o.Name+".grad", o.Eng), fwd: o}, in[0], in[1], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{d, nil}, nil
}

// softmaxCEGradOp computes (softmax − target)·dloss/n (target onehot(y),
// smoothed when the forward op smooths) from the forward op's
// probabilities; inputs logits (for the shape), labels and dloss.
type softmaxCEGradOp struct {
	opBase
	fwd *softmaxCEOp
	out buffer
}

func (o *softmaxCEGradOp) Arity() int    { return 3 }
func (o *softmaxCEGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2), f32T(1), f32T(0)) }
func (o *softmaxCEGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *softmaxCEGradOp) Do(vs ...G.Value) (G.Value, error) {
	labels := data(vs[1])
	n, c := len(labels), vs[0].Shape().TotalSize()/len(labels)
	d := o.out.Get(vs[0].Shape()...)
	dd := d.Float32s()
	scale := scalar(vs[2]) / float32(n)
	copy(dd, o.fwd.probs)
	on := float32(1)
	if e := o.fwd.smooth; e > 0 { // softmax − ((1 − ε)·onehot + ε/c)
		on = 1 - e
		off := e / float32(c)
		for i := range dd {
			dd[i] -= off
		}
	}
	for i, l := range labels {
		dd[i*c+int(l)] -= on
	}
	if w := o.fwd.weights; w != nil { // row i scaled by w[y]/Σw
		for i, l := range labels {
			s := scalar(vs[2]) * float32(float64(w[int(l)])/o.fwd.wsum)
			for j := range dd[i*c : (i+1)*c] {
				dd[i*c+j] *= s
			}
		}
		return d, nil
	}
	for i := range dd {
		dd[i] *= scale
	}
	return d, nil
}

// ---------------------------------------------------------------- dropout

// DropoutOp zeroes each input with probability P during training and scales
// the survivors by 1/(1−P). Its masks come from a stream seeded by Seed and
// advanced once per call (Calls), so a run's masks are a pure function of
// the seed and the step.
type DropoutOp struct {
	opBase
	P     float32
	Seed  uint64
	Calls uint64
	mask  []float32
	out   buffer
}

func (o *DropoutOp) Arity() int    { return 1 }
func (o *DropoutOp) Type() hm.Type { return fnType(f32T(2), f32T(2)) }
func (o *DropoutOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *DropoutOp) Do(vs ...G.Value) (G.Value, error) {
	s := vs[0].Shape()
	x := data(vs[0])
	y := o.out.Get(s...)
	yd := y.Float32s()
	if len(o.mask) != len(x) {
		o.mask = make([]float32, len(x))
	}
	r := rand.New(rand.NewPCG(o.Seed, o.Calls))
	o.Calls++
	keep := 1 / (1 - o.P)
	// 24 random bits per element against the threshold: exact to 2^-24.
	thr := uint32(float64(o.P) * (1 << 24))
	// Kept or not is a coin toss: a bit mask, not a branch that
	// mispredicts half the time.
	m, kb := o.mask, math.Float32bits(keep)
	for i := 0; i < len(m); {
		bits := r.Uint64()
		for k := 0; k < 2 && i < len(m); k++ {
			u := int32(uint32(bits>>(32*k)) >> 8)
			kept := uint32(^(u - int32(thr))) >> 31 // 1 iff u ≥ thr
			m[i] = math.Float32frombits(kb & -kept)
			i++
		}
	}
	for i, v := range x {
		yd[i] = v * m[i]
	}
	return y, nil
}
func (o *DropoutOp) DiffWRT(int) []bool { return []bool{true} }
func (o *DropoutOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	d, err := G.ApplyOp(&dropoutGradOp{opBase: newBase(o.Name+".grad", o.Eng), fwd: o}, grad)
	return G.Nodes{d}, err
}

type dropoutGradOp struct {
	opBase
	fwd *DropoutOp
	out buffer
}

func (o *dropoutGradOp) Arity() int    { return 1 }
func (o *dropoutGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2)) }
func (o *dropoutGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *dropoutGradOp) Do(vs ...G.Value) (G.Value, error) {
	dy := data(vs[0])
	d := o.out.Get(vs[0].Shape()...)
	dd := d.Float32s()
	for i, v := range dy {
		dd[i] = v * o.fwd.mask[i]
	}
	return d, nil
}

// normalizeOp maps the input per channel (graph.Normalization); its
// gradient scales by 1/Std.
type normalizeOp struct {
	opBase
	z   *graph.Normalization
	out buffer
}

func (o *normalizeOp) Arity() int    { return 1 }
func (o *normalizeOp) Type() hm.Type { return fnType(f32T(2), f32T(2)) }
func (o *normalizeOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *normalizeOp) Do(vs ...G.Value) (G.Value, error) {
	y := o.out.Get(vs[0].Shape()...)
	o.z.Apply(y.Float32s(), data(vs[0]))
	return y, nil
}
func (o *normalizeOp) DiffWRT(int) []bool { return []bool{true} }
func (o *normalizeOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	d, err := G.ApplyOp(&normalizeGradOp{opBase: newBase(o.Name+".grad", o.Eng), z: o.z}, grad)
	return G.Nodes{d}, err
}

type normalizeGradOp struct {
	opBase
	z   *graph.Normalization
	out buffer
}

func (o *normalizeGradOp) Arity() int    { return 1 }
func (o *normalizeGradOp) Type() hm.Type { return fnType(f32T(2), f32T(2)) }
func (o *normalizeGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *normalizeGradOp) Do(vs ...G.Value) (G.Value, error) {
	d := o.out.Get(vs[0].Shape()...)
	dd, c := d.Float32s(), len(o.z.Std)
	for i, v := range data(vs[0]) {
		dd[i] = v / o.z.Std[i%c]
	}
	return d, nil
}
