package distill

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/model"
)

// Hint asks a distillation loss for a hint (feature) term: the student's
// hidden layer Layer, projected by Projection [its width, TeacherDim], is
// pulled towards the teacher layer's activations with the given weight.
// Positions is the vectors the layer outputs per sample (1 for a fully
// connected layer, T for a transformer's), each projected alike; the
// teacher's layer has as many.
type Hint struct {
	Layer      string
	Positions  int
	TeacherDim int
	Weight     float64
	Projection *tensor.Dense
}

// KDLoss makes a training graph's loss knowledge distillation (Build is the
// model.Hooks Loss): the teacher's logits for each batch are fed through
// the net's TValue (and a hint's teacher activations through HValue).
type KDLoss struct {
	eng  compute.Engine
	cfg  Config
	hint *Hint
	kd   *LossOp
	hop  *HintOp
}

// NewKDLoss returns a distillation loss for graphs run on eng; hint may be
// nil.
func NewKDLoss(eng compute.Engine, cfg Config, hint *Hint) *KDLoss {
	return &KDLoss{eng: eng, cfg: cfg, hint: hint}
}

// Build adds the loss to net's graph (a model.Hooks Loss).
func (l *KDLoss) Build(net *model.Net) (*G.Node, error) {
	g, classes := net.Graph, net.Logits.Shape()[1]
	net.TValue = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(net.Batch, classes))
	t := G.NewMatrix(g, tensor.Float32, G.WithShape(net.Batch, classes), G.WithName("teacher_logits"), G.WithValue(net.TValue))
	l.kd, l.hop = NewLossOp(l.eng, l.cfg), nil
	loss, err := G.ApplyOp(l.kd, net.Logits, t, net.Y)
	if err != nil || l.hint == nil {
		return loss, err
	}
	return l.addHint(net, loss)
}

// addHint adds the hint term to the loss.
func (l *KDLoss) addHint(net *model.Net, loss *G.Node) (*G.Node, error) {
	hint := l.hint
	hs := net.Hidden[hint.Layer]
	if hs == nil {
		return nil, fmt.Errorf("distill: hint: no hidden layer %q", hint.Layer)
	}
	pos := max(hint.Positions, 1)
	rows, ds := net.Batch*pos, hs.Shape().TotalSize()/(net.Batch*pos)
	if !hint.Projection.Shape().Eq(tensor.Shape{ds, hint.TeacherDim}) {
		return nil, fmt.Errorf("distill: hint: projection %v for a layer of width %d and a teacher layer of width %d", hint.Projection.Shape(), ds, hint.TeacherDim)
	}
	g := net.Graph
	net.HValue = tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(rows, hint.TeacherDim))
	ht := G.NewMatrix(g, tensor.Float32, G.WithShape(rows, hint.TeacherDim), G.WithName("teacher_hint"), G.WithValue(net.HValue))
	net.HintProjection = G.NewMatrix(g, tensor.Float32, G.WithShape(ds, hint.TeacherDim), G.WithName("hint.projection"), G.WithValue(hint.Projection))
	l.hop = NewHintOp(l.eng, hint.Weight, rows, ds, hint.TeacherDim)
	out, err := G.ApplyOp(l.hop, loss, hs, net.HintProjection, ht)
	if err != nil {
		return nil, fmt.Errorf("distill: hint: %w", err)
	}
	return out, nil
}

// Term is the distillation part of the last batch's loss of the graph
// built last (0 before one ran).
func (l *KDLoss) Term() float64 {
	if l.kd == nil {
		return 0
	}
	if l.hop != nil {
		return l.kd.KD + l.hop.Loss
	}
	return l.kd.KD
}
