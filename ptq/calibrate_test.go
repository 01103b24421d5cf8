package ptq

import (
	"math"
	"reflect"
	"testing"

	"github.com/lathe-ml/lathe/checkpoint"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/onnx"
)

// splitTracer runs each pass as ranges of batches, the way a cluster's
// workers do, and counts the passes.
type splitTracer struct {
	x      []float32
	cuts   []int
	passes int
}

func (s *splitTracer) Trace(f *checkpoint.File, want Want) ([]BatchStats, error) {
	s.passes++
	var out []BatchStats
	for k := 0; k+1 < len(s.cuts); k++ {
		part, err := TraceBatches(f, s.x, cpu.New(cpu.Options{Threads: 1}), s.cuts[k], s.cuts[k+1], want)
		if err != nil {
			return nil, err
		}
		out = append(out, part...)
	}
	return out, nil
}

// TestPassesSplit: a calibration pass split into ranges of batches
// (any split) gives the statistics of the whole pass, so that GPTQ with
// bias correction and calibrated activations writes the same file; a
// range outside the samples is refused.
func TestPassesSplit(t *testing.T) {
	f, err := onnx.ReadModel("../onnx/testdata/mnist_cnn.op17.onnx", "mnist")
	if err != nil {
		t.Fatal(err)
	}
	train, _, err := data.Load("mnist", "")
	if err != nil {
		t.Fatal(err)
	}
	x := Calibration(train, 264, 1) // batches of 128, 128 and 8
	opt := Options{Bits: 4, GPTQ: true, BiasCorrection: true, Activations: 8}
	whole, _, err := Compress(f, x, cpu.New(cpu.Options{Threads: 1}), opt)
	if err != nil {
		t.Fatal(err)
	}
	want, err := checkpoint.Encode(whole)
	if err != nil {
		t.Fatal(err)
	}
	for _, cuts := range [][]int{{0, 1, 3}, {0, 2, 3}, {0, 1, 2, 3}} {
		s := &splitTracer{x: x, cuts: cuts}
		o := opt
		o.Tracer = s
		got, _, err := Compress(f, x, cpu.New(cpu.Options{Threads: 1}), o)
		if err != nil {
			t.Fatal(err)
		}
		b, err := checkpoint.Encode(got)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != string(want) {
			t.Errorf("batches split at %v: another file", cuts)
		}
		if s.passes < 2 {
			t.Errorf("batches split at %v: %d passes", cuts, s.passes)
		}
	}
	a, _ := TraceBatches(f, x, cpu.New(cpu.Options{Threads: 1}), 0, 3, Want{Observed: []string{"c1"}})
	b, _ := Local{X: x, Eng: cpu.New(cpu.Options{Threads: 1})}.Trace(f, Want{Observed: []string{"c1"}})
	if !reflect.DeepEqual(a, b) || len(a) != 3 || len(a[2].Samples["c1"]) == 0 {
		t.Errorf("a whole pass: %d and %d batches", len(a), len(b))
	}
	for _, r := range [][2]int{{0, 4}, {2, 2}, {-1, 1}} {
		if _, err := TraceBatches(f, x, cpu.New(cpu.Options{Threads: 1}), r[0], r[1], Want{}); err == nil {
			t.Errorf("batches %v of 3 traced", r)
		}
	}
	if _, _, err := inputs([]BatchStats{{Rows: 1, H: [][]float64{{1}}}}, 1, 2); err == nil {
		t.Error("a batch of the wrong shape added")
	}
	for i, bad := range []BatchStats{
		{H: [][]float64{{1}}},
		{Lo: map[string]float32{"c2": 0}, Hi: map[string]float32{"c2": 1}, Samples: map[string][]float32{"c2": {0}}},
		{Lo: map[string]float32{"c1": 0}, Hi: map[string]float32{"c1": float32(math.NaN())}, Samples: map[string][]float32{"c1": {0}}},
		{Lo: map[string]float32{"c1": 2}, Hi: map[string]float32{"c1": 1}, Samples: map[string][]float32{"c1": {0}}},
	} {
		if err := bad.Check(Want{Observed: []string{"c1"}}); err == nil {
			t.Errorf("statistics %d passed the check", i)
		}
	}
	if err := a[0].Check(Want{Observed: []string{"c1"}}); err != nil {
		t.Errorf("a pass's own statistics: %v", err)
	}
}
