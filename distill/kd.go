package distill

import (
	"fmt"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/internal/graphop"
)

// Config is a distillation loss's settings.
type Config struct {
	Temperature float64 // T > 0
	Alpha       float64 // weight of the distillation term, in [0, 1]
	// ClassWeights, when set, weigh each sample's two terms by its label's
	// class weight: the batch mean becomes Σ w·term / Σ w, as the weighted
	// cross-entropy of plain training (model.Model.ClassWeights).
	ClassWeights []float32
	// LabelSmoothing ε, when positive, smooths the task term's target to
	// (1 − ε)·onehot(y) + ε/classes (model.Model.LabelSmoothing).
	LabelSmoothing float64
}

// Validate reports settings the loss cannot use.
func (c Config) Validate() error {
	if !(c.Temperature > 0) || math.IsInf(c.Temperature, 0) {
		return fmt.Errorf("distill: temperature %v must be positive", c.Temperature)
	}
	if !(c.Alpha >= 0 && c.Alpha <= 1) {
		return fmt.Errorf("distill: alpha %v outside [0, 1]", c.Alpha)
	}
	if !(c.LabelSmoothing >= 0 && c.LabelSmoothing < 1) {
		return fmt.Errorf("distill: label smoothing %v outside [0, 1)", c.LabelSmoothing)
	}
	return nil
}

// softmax writes softmax(x/T) of one row into p (float64 for the loss).
func softmax(p []float64, x []float32, T float64) {
	m := math.Inf(-1)
	for _, v := range x {
		m = max(m, float64(v)/T)
	}
	var z float64
	for j, v := range x {
		p[j] = math.Exp(float64(v)/T - m)
		z += p[j]
	}
	for j := range p {
		p[j] /= z
	}
}

// logSumExp returns log Σ exp(x) of one row.
func logSumExp(x []float32) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = max(m, float64(v))
	}
	var z float64
	for _, v := range x {
		z += math.Exp(float64(v) - m)
	}
	return m + math.Log(z)
}

// Loss computes the mean over the batch of
//
//	α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(softmax(s), y)
//
// for student logits s and teacher logits t ([n, c] row-major) and class
// labels y, and, when grad is not nil, writes its gradient with respect to
// the student logits: α·T·(softmax(s/T) − softmax(t/T))/n +
// (1 − α)·(softmax(s) − onehot(y))/n. With cfg.ClassWeights each sample's
// terms are weighed by w[y] and n becomes Σ w[y]; with cfg.LabelSmoothing ε
// onehot(y) becomes (1 − ε)·onehot(y) + ε/c.
func Loss(cfg Config, student, teacher, labels []float32, c int, grad []float32) float64 {
	kd, ce := Parts(cfg, student, teacher, labels, c, grad)
	return kd + ce
}

// Parts is Loss split into its two terms, the distillation term
// α·T²·KL and the task term (1 − α)·CE, each a batch mean.
func Parts(cfg Config, student, teacher, labels []float32, c int, grad []float32) (kdTerm, ceTerm float64) {
	n := len(labels)
	T, a, cw := cfg.Temperature, cfg.Alpha, cfg.ClassWeights
	weight := func(y int) float64 {
		if cw == nil {
			return 1
		}
		return float64(cw[y])
	}
	var wsum float64
	for _, y := range labels {
		wsum += weight(int(y))
	}
	ps, pt, p1 := make([]float64, c), make([]float64, c), make([]float64, c)
	var kdSum, ceSum float64
	for i := 0; i < n; i++ {
		s, t := student[i*c:(i+1)*c], teacher[i*c:(i+1)*c]
		softmax(ps, s, T)
		softmax(pt, t, T)
		softmax(p1, s, 1)
		var kl float64
		for j := range pt {
			if pt[j] > 0 {
				kl += pt[j] * (math.Log(pt[j]) - math.Log(ps[j]))
			}
		}
		y := int(labels[i])
		w := weight(y)
		kdSum += w * a * T * T * kl
		e := cfg.LabelSmoothing
		ce := -math.Log(p1[y])
		if e > 0 { // mean of −log p over the classes: log Σ exp(s) − mean(s)
			lse := logSumExp(s)
			var mean float64
			for _, v := range s {
				mean += lse - float64(v)
			}
			ce = (1-e)*ce + e*mean/float64(c)
		}
		ceSum += w * (1 - a) * ce
		if grad != nil {
			g := grad[i*c : (i+1)*c]
			for j := range g {
				oh := e / float64(c)
				if j == y {
					oh += 1 - e
				}
				g[j] = float32(w * (a*T*(ps[j]-pt[j]) + (1-a)*(p1[j]-oh)) / wsum)
			}
		}
	}
	return kdSum / wsum, ceSum / wsum
}

// MeanLogits writes the mean of several teachers' logits into dst: a
// teacher ensemble is distilled from as one teacher.
func MeanLogits(dst []float32, teachers ...[]float32) {
	clear(dst)
	for _, t := range teachers {
		for i, v := range t[:len(dst)] {
			dst[i] += v
		}
	}
	inv := 1 / float32(len(teachers))
	for i := range dst {
		dst[i] *= inv
	}
}

// LossOp is the distillation loss as a graph op: inputs student logits
// [n, c], teacher logits [n, c] (constants: no gradient), labels [n];
// output the scalar loss. Its gradient flows to the student logits only.
type LossOp struct {
	graphop.Base
	Cfg Config
	// KD and CE are the two terms of the last batch's loss.
	KD, CE float64
	grad   []float32
	loss   graphop.Buffer
}

// NewLossOp returns a distillation loss op.
func NewLossOp(eng compute.Engine, cfg Config) *LossOp {
	return &LossOp{Base: graphop.NewBase("kd", eng), Cfg: cfg}
}

func (o *LossOp) Arity() int { return 3 }
func (o *LossOp) Type() hm.Type {
	return graphop.FnType(graphop.F32T(0), graphop.F32T(2), graphop.F32T(2), graphop.F32T(1))
}
func (o *LossOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return tensor.ScalarShape(), nil }
func (o *LossOp) Do(vs ...G.Value) (G.Value, error) {
	s, t, y := graphop.Data(vs[0]), graphop.Data(vs[1]), graphop.Data(vs[2])
	if len(s) != len(t) || len(y) == 0 || len(s)%len(y) != 0 {
		return nil, o.ShapeErr("student %v, teacher %v, labels %v", vs[0].Shape(), vs[1].Shape(), vs[2].Shape())
	}
	if len(o.grad) != len(s) {
		o.grad = make([]float32, len(s))
	}
	l := o.loss.Scalar()
	o.KD, o.CE = Parts(o.Cfg, s, t, y, len(s)/len(y), o.grad)
	l.Float32s()[0] = float32(o.KD + o.CE)
	return l, nil
}
func (o *LossOp) DiffWRT(int) []bool { return []bool{true, false, false} }
func (o *LossOp) SymDiff(in G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	d, err := G.ApplyOp(&lossGradOp{Base: graphop.NewBase("kd.grad", o.Eng), fwd: o}, in[0], grad)
	return G.Nodes{d, nil, nil}, err
}

// lossGradOp scales the forward pass's gradient by the seed; inputs student
// logits (for the shape) and the seed.
type lossGradOp struct {
	graphop.Base
	fwd *LossOp
	out graphop.Buffer
}

func (o *lossGradOp) Arity() int { return 2 }
func (o *lossGradOp) Type() hm.Type {
	return graphop.FnType(graphop.F32T(2), graphop.F32T(2), graphop.F32T(0))
}
func (o *lossGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	return in[0].(tensor.Shape).Clone(), nil
}
func (o *lossGradOp) Do(vs ...G.Value) (G.Value, error) {
	d := o.out.Get(vs[0].Shape()...)
	seed := graphop.Scalar(vs[1])
	dd := d.Float32s()
	for i, g := range o.fwd.grad {
		dd[i] = g * seed
	}
	return d, nil
}
