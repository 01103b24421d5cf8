package model

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lathe-ml/lathe/graph"
)

// ThinReport says what thinning removed, per layer, in Model.Weights order.
type ThinReport struct {
	Layers  []string
	Before  [][]int // weight shapes before
	After   [][]int // and after
	Removed []int   // rows (neurons) or filters removed
}

// Thin returns a physically smaller model that computes the same function
// in evaluation mode: every neuron or filter whose incoming weights are all
// zero is removed, its constant output act(bias) is folded into the next
// layer's bias (through the next layer's weights, summed over the kernel or
// the flattened positions it fed), and the next layer's matching inputs are
// removed. The output layer keeps all its classes. m is not changed.
func (m *Model) Thin() (*Model, ThinReport, error) {
	if m.Spec.Arch == "" {
		return nil, ThinReport{}, errors.New("model: thinning rebuilds a preset architecture; this model was built from a network description (FromNetwork)")
	}
	if err := m.Net.Basic(); err != nil {
		return nil, ThinReport{}, fmt.Errorf("model: thinning rebuilds chains of layers only so far: %w", err)
	}
	type pl struct {
		def  graph.Layer
		w, b []float32
		rows int // neurons or filters
		// inner is a conv weight's channel count or a linear weight's inputs.
		inner int
		k     int
	}
	var layers []*pl
	positions := map[int]int{} // param-layer index → spatial positions of its (pooled) output
	for _, d := range m.Net.Layers {
		switch d.Kind {
		case graph.Linear, graph.Conv:
			w, b := m.Param(d.Name), m.Param(d.Name+".bias")
			l := &pl{def: d, w: slices.Clone(w.Data()), b: slices.Clone(b.Data()), rows: w.Shape[0], k: d.Kernel}
			l.inner = len(l.w) / l.rows
			if d.Kind == graph.Conv {
				l.inner = w.Shape[3]
				og := d.Output()
				positions[len(layers)] = og.H * og.W
			}
			layers = append(layers, l)
		case graph.MaxPool:
			n := len(layers) - 1
			positions[n] = positions[n] / 4
		}
	}
	rep := ThinReport{}
	for i, l := range layers {
		rep.Layers = append(rep.Layers, l.def.Name)
		rep.Before = append(rep.Before, slices.Clone(m.Param(l.def.Name).Shape))
		removed := 0
		if i < len(layers)-1 {
			next := layers[i+1]
			rowLen := len(l.w) / l.rows
			var keep []int
			for r := 0; r < l.rows; r++ {
				if slices.ContainsFunc(l.w[r*rowLen:(r+1)*rowLen], func(v float32) bool { return v != 0 }) {
					keep = append(keep, r)
					continue
				}
				c := l.b[r]
				if l.def.Act == graph.ReLU {
					c = max(c, 0)
				}
				foldInput(next.w, next.b, next.rows, next.def.Kind == graph.Conv, l.def.Kind == graph.Conv, l.rows, r, c)
			}
			if len(keep) == 0 {
				// Every unit is dead: keep one, with its bias zeroed since its
				// constant was folded already, so that shapes stay non-empty.
				keep = []int{0}
				l.b[0] = 0
			}
			removed = l.rows - len(keep)
			l.w, l.b = keepRows(l.w, rowLen, keep), keepIdx(l.b, keep)
			next.w = keepInputs(next.w, next.rows, next.def.Kind == graph.Conv, l.def.Kind == graph.Conv, l.rows, keep)
			l.rows = len(keep)
			if next.def.Kind == graph.Conv {
				next.inner = len(keep)
			}
		}
		rep.Removed = append(rep.Removed, removed)
	}
	spec := m.Spec
	spec.Factors = nil
	var widths []int // outputs of every layer but a factor's first half
	for _, l := range layers[:len(layers)-1] {
		if base, ok := strings.CutSuffix(l.def.Name, ".v"); ok {
			spec.Factors = append(spec.Factors, Factor{Layer: base, Rank: l.rows})
			continue
		}
		widths = append(widths, l.rows)
	}
	switch spec.Arch {
	case "lenet5":
		spec.Conv = widths[:2]
		spec.Hidden = widths[2:]
	default:
		spec.Arch = "mlp"
		spec.Hidden = widths
	}
	out, err := New(spec, m.Input, 0)
	if err != nil {
		return nil, rep, fmt.Errorf("model: thin: %w", err)
	}
	out.Quant = m.Quant
	out.ActQuant = m.ActQuant
	out.ClassWeights, out.LabelSmoothing = m.ClassWeights, m.LabelSmoothing
	for _, l := range layers {
		copy(out.Param(l.def.Name).Data(), l.w)
		copy(out.Param(l.def.Name+".bias").Data(), l.b)
		rep.After = append(rep.After, slices.Clone(out.Param(l.def.Name).Shape))
	}
	return out, rep, nil
}

// foldInput adds the contribution of a constant input unit r (value c) of
// the previous layer to the next layer's bias. next is [rows, …]; a conv
// next layer sees r as input channel r of prevUnits; a linear layer after a
// convolution sees it at every flattened position (HWC); after a linear
// layer, as column r.
func foldInput(w, b []float32, rows int, nextConv, prevConv bool, prevUnits, r int, c float32) {
	if c == 0 {
		return
	}
	cols := len(w) / rows
	for o := 0; o < rows; o++ {
		row := w[o*cols : (o+1)*cols]
		var s float32
		switch {
		case nextConv || prevConv:
			for j := r; j < cols; j += prevUnits {
				s += row[j]
			}
		default:
			s = row[r]
		}
		b[o] += s * c
	}
}

// keepInputs removes the next layer's inputs that fed from removed units.
func keepInputs(w []float32, rows int, nextConv, prevConv bool, prevUnits int, keep []int) []float32 {
	cols := len(w) / rows
	kept := make([]bool, prevUnits)
	for _, k := range keep {
		kept[k] = true
	}
	var out []float32
	for o := 0; o < rows; o++ {
		for j, v := range w[o*cols : (o+1)*cols] {
			unit := j
			if nextConv || prevConv {
				unit = j % prevUnits
			}
			if kept[unit] {
				out = append(out, v)
			}
		}
	}
	return out
}

func keepRows(w []float32, rowLen int, keep []int) []float32 {
	out := make([]float32, 0, len(keep)*rowLen)
	for _, r := range keep {
		out = append(out, w[r*rowLen:(r+1)*rowLen]...)
	}
	return out
}

func keepIdx(x []float32, keep []int) []float32 {
	out := make([]float32, len(keep))
	for i, k := range keep {
		out[i] = x[k]
	}
	return out
}
