package ptq

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute"
	"github.com/lathe-ml/lathe/infer"
)

// CalibrationBatch is the samples of one calibration batch. A pass's
// statistics are computed batch by batch and added up in batch order,
// wherever each batch ran: the same sums on one process and on a
// cluster's workers, however many.
const CalibrationBatch = 128

// keep bounds the values of one layer's output a pass samples.
const keep = 1 << 20

// Want is what a calibration pass collects.
type Want struct {
	// Layer asks for a linear layer's or convolution's inputs: its
	// groups' Hessians XᵀX and the sums of its input columns.
	Layer string `json:"layer,omitempty"`
	// Observed asks for layers' outputs: their ranges and an evenly
	// strided sample of their values.
	Observed []string `json:"observed,omitempty"`
}

// BatchStats is one calibration batch's statistics.
type BatchStats struct {
	Rows    int         // input rows in H (each group's)
	H       [][]float64 // per group: [cols, cols], the upper triangle
	Sum     []float64   // per group and input column: the inputs' sum
	Lo, Hi  map[string]float32
	Samples map[string][]float32
}

// A Tracer runs calibration passes over every calibration batch, with f
// the model as compressed so far, and returns each batch's statistics in
// batch order. Local runs them in this process; a cluster hands ranges of
// batches to its workers (TraceBatches on each).
type Tracer interface {
	Trace(f *checkpoint.File, want Want) ([]BatchStats, error)
}

// Local traces the calibration samples X on Eng.
type Local struct {
	X   []float32
	Eng compute.Engine
}

// Trace runs every batch.
func (t Local) Trace(f *checkpoint.File, want Want) ([]BatchStats, error) {
	rt, err := traceModel(f, t.Eng)
	if err != nil {
		return nil, err
	}
	return traceBatches(rt, t.X, 0, Batches(len(t.X)/rt.Features), want)
}

// Batches is the number of calibration batches of n samples.
func Batches(n int) int { return (n + CalibrationBatch - 1) / CalibrationBatch }

// TraceBatches runs batches [lo, hi) of the calibration samples x through
// the model file f (a cluster worker's share of a pass).
func TraceBatches(f *checkpoint.File, x []float32, eng compute.Engine, lo, hi int, want Want) ([]BatchStats, error) {
	rt, err := traceModel(f, eng)
	if err != nil {
		return nil, err
	}
	return traceBatches(rt, x, lo, hi, want)
}

// traceModel loads f on its dense kernels: the runtime chooses kernels by
// timing, and the choice must not change a pass's bits.
func traceModel(f *checkpoint.File, eng compute.Engine) (*infer.Model, error) {
	rt, err := infer.Load(f, eng)
	if err != nil {
		return nil, err
	}
	if err := rt.Force(infer.Dense); err != nil {
		return nil, err
	}
	return rt, nil
}

func traceBatches(rt *infer.Model, x []float32, lo, hi int, want Want) ([]BatchStats, error) {
	feats := rt.Features
	n := len(x) / feats
	if len(x)%feats != 0 || lo < 0 || hi > Batches(n) || lo >= hi {
		return nil, fmt.Errorf("ptq: calibration batches [%d, %d) of %d samples of %d values (%d values given)", lo, hi, n, feats, len(x))
	}
	out := make([]BatchStats, 0, hi-lo)
	for b := lo; b < hi; b++ {
		s0, s1 := b*CalibrationBatch, min((b+1)*CalibrationBatch, n)
		st := BatchStats{}
		if _, err := rt.Trace(x[s0*feats:s1*feats], s1-s0, func(l *infer.Layer, in, o []float32) {
			if l.Name == want.Layer {
				st.addInputs(l, in, s1-s0)
			}
			if slices.Contains(want.Observed, l.Name) {
				st.observe(l.Name, o, s1-s0, n)
			}
		}); err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// addInputs takes a layer's calibration inputs: a linear layer's input
// vectors, a convolution's patches in its weight's column order ([ky][kx]
// [channel of the group]).
func (st *BatchStats) addInputs(l *infer.Layer, in []float32, batch int) {
	cols, groups := l.In, max(l.Groups, 1)
	if l.Kind != "linear" { // the file's K·K columns (the runtime keeps fewer of a one-row convolution's)
		cols = l.K * l.K * (l.C / groups)
	}
	st.Sum = make([]float64, groups*cols)
	add := func(g int, rows []float32) {
		h := compress.NewHessian(cols)
		h.Add(rows)
		st.H, st.Rows = append(st.H, h.H), h.N
		for i, v := range rows {
			st.Sum[g*cols+i%cols] += float64(v)
		}
	}
	if l.Kind == "linear" {
		add(0, in[:batch*cols])
		return
	}
	cg := l.C / groups
	isz := l.H * l.W * l.C
	rows := make([]float32, 0, batch*l.OH*l.OW*cols)
	for g := range groups {
		rows = rows[:0]
		for s := range batch {
			img := in[s*isz : (s+1)*isz]
			for oy := range l.OH {
				for ox := range l.OW {
					for ky := range l.K {
						for kx := range l.K {
							iy, ix := oy*l.Stride-l.Pad+ky, ox*l.Stride-l.Pad+kx
							if iy < 0 || iy >= l.H || ix < 0 || ix >= l.W {
								rows = append(rows, make([]float32, cg)...)
								continue
							}
							rows = append(rows, img[(iy*l.W+ix)*l.C+g*cg:(iy*l.W+ix)*l.C+(g+1)*cg]...)
						}
					}
				}
			}
		}
		add(g, rows)
	}
}

// observe takes a layer's output: its range, and every stride-th value,
// the stride set by the whole pass's n samples.
func (st *BatchStats) observe(name string, out []float32, batch, n int) {
	if st.Lo == nil {
		st.Lo, st.Hi, st.Samples = map[string]float32{}, map[string]float32{}, map[string][]float32{}
	}
	st.Lo[name], st.Hi[name] = compress.MinMax(out)
	stride := max(1, len(out)/batch*n/keep)
	s := make([]float32, 0, (len(out)+stride-1)/stride)
	for i := 0; i < len(out); i += stride {
		s = append(s, out[i])
	}
	st.Samples[name] = s
}

// inputs adds up a pass's Hessians and input sums in batch order.
func inputs(stats []BatchStats, groups, cols int) ([]*compress.Hessian, []float64, error) {
	hs := make([]*compress.Hessian, groups)
	for g := range hs {
		hs[g] = compress.NewHessian(cols)
	}
	sum := make([]float64, groups*cols)
	for b, st := range stats {
		if len(st.H) != groups || len(st.Sum) != groups*cols || st.Rows < 0 {
			return nil, nil, fmt.Errorf("ptq: calibration batch %d has %d Hessians and %d sums, not %d of %d columns", b, len(st.H), len(st.Sum), groups, cols)
		}
		for g, h := range st.H {
			if len(h) != cols*cols {
				return nil, nil, fmt.Errorf("ptq: calibration batch %d: a Hessian of %d values for %d columns", b, len(h), cols)
			}
			for i, v := range h {
				hs[g].H[i] += v
			}
			hs[g].N += st.Rows
		}
		for i, v := range st.Sum {
			sum[i] += v
		}
	}
	return hs, sum, nil
}

// outputs joins a pass's ranges and samples in batch order.
func outputs(stats []BatchStats) (lo, hi map[string]float32, samples map[string][]float32) {
	lo, hi, samples = map[string]float32{}, map[string]float32{}, map[string][]float32{}
	for _, st := range stats {
		for name, a := range st.Lo {
			b := st.Hi[name]
			if _, ok := lo[name]; !ok {
				lo[name], hi[name] = a, b
			}
			lo[name], hi[name] = min(lo[name], a), max(hi[name], b)
			samples[name] = append(samples[name], st.Samples[name]...)
		}
	}
	return lo, hi, samples
}

// Check refuses statistics that a pass asking want cannot have given (a
// worker's answer): another layer's outputs, Hessians where none were
// asked, values that are not finite. Shapes are checked where they are
// added up.
func (st *BatchStats) Check(want Want) error {
	if want.Layer == "" && (len(st.H) > 0 || len(st.Sum) > 0) {
		return errors.New("Hessians no pass asked for")
	}
	for _, h := range st.H {
		if !finite64(h) {
			return errors.New("a Hessian that is not finite")
		}
	}
	if !finite64(st.Sum) {
		return errors.New("input sums that are not finite")
	}
	for name, s := range st.Samples {
		if !slices.Contains(want.Observed, name) {
			return fmt.Errorf("the outputs of %q, which no pass asked for", name)
		}
		lo, hi := st.Lo[name], st.Hi[name]
		if !finite32(s) || !finite32([]float32{lo, hi}) || lo > hi {
			return fmt.Errorf("a range [%g, %g] or samples of %q that are not finite", lo, hi, name)
		}
	}
	if len(st.Lo) != len(st.Samples) || len(st.Hi) != len(st.Samples) {
		return errors.New("ranges without their samples")
	}
	return nil
}

func finite64(v []float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

func finite32(v []float32) bool {
	for _, x := range v {
		if x != x || math.IsInf(float64(x), 0) {
			return false
		}
	}
	return true
}
