// Package infer runs model files (model.arrow) without the training graph:
// each linear layer as a dense GEMM (OpenBLAS) or a sparse CSR kernel,
// whichever measured faster on this machine when the model was loaded, at
// small batches and at large ones; quantized activations with the exact
// arithmetic training modelled. Convolutional models are not supported
// yet (Load says so).
package infer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute"
)

// Kernels a layer can run with.
const (
	Dense = "dense" // GEMM over the full (possibly thinned) weight
	CSR   = "csr"   // only the non-zero weights, row by row
)

// smallBatch is the largest batch the small-batch kernel choice serves.
const smallBatch = 8

// Layer is one linear layer of a loaded model.
type Layer struct {
	Name    string
	In, Out int
	ReLU    bool
	Nonzero int // non-zero weights
	// Small and Large are the kernels chosen for batches ≤ 8 and above.
	Small, Large string

	w, b    []float32
	rowPtr  []int32
	cols    []int32
	vals    []float32
	actQ    *quantizer // activation quantization after the layer, if any
	measure map[string][2]time.Duration
}

// Model is a loaded model file.
type Model struct {
	Layers   []*Layer
	Features int // inputs per sample
	Classes  int
	eng      compute.Engine
	a, b     []float32
}

// state is the part of a model file's state document the runtime reads.
type state struct {
	Input struct {
		Rows, Cols, Channels, Classes int
	} `json:"input"`
	Layers []struct {
		Name, Kind, Act string
		In, Out         int
	} `json:"layers"`
	Activations map[string]struct {
		Bits      int
		Symmetric bool
	} `json:"activations"`
}

// Load prepares a model file for inference on eng, measuring the kernels
// of each layer.
func Load(f *checkpoint.File, eng compute.Engine) (*Model, error) {
	if f.Kind != checkpoint.KindModel {
		return nil, fmt.Errorf("infer: a %s file, not a model file", f.Kind)
	}
	var st state
	if err := json.Unmarshal(f.State, &st); err != nil {
		return nil, fmt.Errorf("infer: model state: %w", err)
	}
	if len(st.Layers) == 0 {
		return nil, errors.New("infer: the model file lists no layers (written by an older lathe; export it again)")
	}
	m := &Model{Features: st.Input.Rows * st.Input.Cols * st.Input.Channels, Classes: st.Input.Classes, eng: eng}
	in := m.Features
	for _, ls := range st.Layers {
		if ls.Kind != "linear" {
			return nil, fmt.Errorf("infer: layer %s is a %s layer; the runtime runs linear layers only so far", ls.Name, ls.Kind)
		}
		w, b := f.Tensor(ls.Name), f.Tensor(ls.Name+".bias")
		if w == nil || b == nil || !slices.Equal(w.Shape, []int{ls.Out, ls.In}) || len(b.Data) != ls.Out || ls.In != in {
			return nil, fmt.Errorf("infer: layer %s: weight or bias missing, or shapes that do not chain", ls.Name)
		}
		l := &Layer{Name: ls.Name, In: ls.In, Out: ls.Out, ReLU: ls.Act == "relu", w: w.Data, b: b.Data}
		l.rowPtr = make([]int32, 1, ls.Out+1)
		for r := 0; r < ls.Out; r++ {
			for c, v := range w.Data[r*ls.In : (r+1)*ls.In] {
				if v != 0 {
					l.cols, l.vals = append(l.cols, int32(c)), append(l.vals, v)
				}
			}
			l.rowPtr = append(l.rowPtr, int32(len(l.vals)))
		}
		l.Nonzero = len(l.vals)
		if spec, ok := st.Activations[ls.Name]; ok {
			r := f.Tensor("act/" + ls.Name)
			if r == nil || len(r.Data) != 2 {
				return nil, fmt.Errorf("infer: layer %s: activation range missing", ls.Name)
			}
			l.actQ = newQuantizer(spec.Bits, spec.Symmetric, r.Data[0], r.Data[1])
		}
		m.Layers = append(m.Layers, l)
		in = ls.Out
	}
	if in != m.Classes {
		return nil, fmt.Errorf("infer: the last layer has %d outputs for %d classes", in, m.Classes)
	}
	for _, l := range m.Layers {
		m.choose(l)
	}
	return m, nil
}

// choose times both kernels at a small and a large batch and keeps the
// faster of each.
func (m *Model) choose(l *Layer) {
	l.measure = map[string][2]time.Duration{}
	for _, k := range []string{Dense, CSR} {
		var t [2]time.Duration
		for i, batch := range []int{1, 64} {
			x := make([]float32, batch*l.In)
			for j := range x {
				x[j] = float32(j%7) * 0.1
			}
			y := make([]float32, batch*l.Out)
			best := time.Duration(math.MaxInt64)
			reps := max(1, 2000/batch)
			for range 3 {
				start := time.Now()
				for range reps {
					m.run(l, k, y, x, batch)
				}
				best = min(best, time.Since(start)/time.Duration(reps))
			}
			t[i] = best
		}
		l.measure[k] = t
	}
	l.Small, l.Large = Dense, Dense
	if l.measure[CSR][0] < l.measure[Dense][0] {
		l.Small = CSR
	}
	if l.measure[CSR][1] < l.measure[Dense][1] {
		l.Large = CSR
	}
}

// Timing is the measured time of one kernel of a layer at batch 1 and 64.
func (l *Layer) Timing(kernel string) (batch1, batch64 time.Duration) {
	t := l.measure[kernel]
	return t[0], t[1]
}

// Forward computes the logits [batch, classes] of x [batch, features]
// (pixels scaled to [0, 1]). The returned slice is reused by the next call.
func (m *Model) Forward(x []float32, batch int) ([]float32, error) {
	if batch <= 0 || len(x) != batch*m.Features {
		return nil, fmt.Errorf("infer: %d inputs for a batch of %d samples of %d features", len(x), batch, m.Features)
	}
	src := x
	for i, l := range m.Layers {
		buf := &m.a
		if i%2 == 1 {
			buf = &m.b
		}
		if cap(*buf) < batch*l.Out {
			*buf = make([]float32, batch*l.Out)
		}
		dst := (*buf)[:batch*l.Out]
		k := l.Large
		if batch <= smallBatch {
			k = l.Small
		}
		m.run(l, k, dst, src, batch)
		src = dst
	}
	return src, nil
}

// run applies one layer with the given kernel: y = act(x·Wᵀ + b), then the
// activation quantization.
func (m *Model) run(l *Layer, kernel string, y, x []float32, batch int) {
	switch kernel {
	case Dense:
		m.eng.Sgemm(false, true, batch, l.Out, l.In, 1, x, l.In, l.w, l.In, 0, y, l.Out)
		for s := 0; s < batch; s++ {
			row := y[s*l.Out : (s+1)*l.Out]
			for j := range row {
				row[j] += l.b[j]
			}
		}
	case CSR:
		for s := 0; s < batch; s++ {
			xs, row := x[s*l.In:(s+1)*l.In], y[s*l.Out:(s+1)*l.Out]
			for r := range row {
				var acc float32
				for k := l.rowPtr[r]; k < l.rowPtr[r+1]; k++ {
					acc += l.vals[k] * xs[l.cols[k]]
				}
				row[r] = acc + l.b[r]
			}
		}
	}
	if l.ReLU {
		for i, v := range y {
			if v < 0 {
				y[i] = 0
			}
		}
	}
	if l.actQ != nil {
		l.actQ.apply(y)
	}
}
