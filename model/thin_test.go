package model

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/lathe-ml/lathe/compute/cpu"
)

// logits runs an evaluation forward pass on fixed inputs.
func logits(t *testing.T, m *Model, x []float32, batch int) []float32 {
	t.Helper()
	eng := cpu.New(cpu.Options{Threads: 2})
	net, err := m.Build(eng, batch, false, 0, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	copy(net.XValue.Float32s(), x)
	vm := G.NewTapeMachine(net.Graph, G.WithEngine(eng))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), data(net.Logits.Value())...)
}

// kill zeroes the weights of some rows/filters of a layer, leaving biases
// (positive and negative) in place, as structured pruning does.
func kill(m *Model, name string, rows []int) {
	p := m.Param(name)
	cols := p.Size() / p.Shape[0]
	for _, r := range rows {
		clear(p.Data()[r*cols : (r+1)*cols])
	}
}

func TestThinningKeepsTheFunction(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  Spec
		kill  map[string][]int
		after map[string][]int
	}{
		{"mlp", Spec{Arch: "lenet300"}, map[string][]int{"fc1": {0, 5, 299}, "fc2": {1, 2, 3, 50}},
			map[string][]int{"fc1": {297, 784}, "fc2": {96, 297}, "fc3": {10, 96}}},
		{"lenet5", Spec{Arch: "lenet5"}, map[string][]int{"conv1": {0, 7, 19}, "conv2": {3, 4, 49}, "fc1": {10, 499}},
			map[string][]int{"conv1": {17, 5, 5, 1}, "conv2": {47, 5, 5, 17}, "fc1": {498, 16 * 47}, "fc2": {10, 498}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.spec, MNISTInput, 5)
			if err != nil {
				t.Fatal(err)
			}
			// Biases big enough that folded constants matter.
			r := rand.New(rand.NewPCG(1, 2))
			for _, p := range m.Params {
				if p.Bias {
					for i := range p.Data() {
						p.Data()[i] = float32(r.NormFloat64() * 0.5)
					}
				}
			}
			for name, rows := range tc.kill {
				kill(m, name, rows)
			}
			x := make([]float32, 4*784)
			for i := range x {
				x[i] = r.Float32()
			}
			want := logits(t, m, x, 4)
			thin, rep, err := m.Thin()
			if err != nil {
				t.Fatal(err)
			}
			for name, shape := range tc.after {
				got := thin.Param(name).Shape
				if len(got) != len(shape) {
					t.Fatalf("%s: shape %v, want %v", name, got, shape)
				}
				for i := range got {
					if got[i] != shape[i] {
						t.Fatalf("%s: shape %v, want %v (report %+v)", name, got, shape, rep)
					}
				}
			}
			if thin.NumParams() >= m.NumParams() {
				t.Fatalf("thinned model has %d parameters, dense %d", thin.NumParams(), m.NumParams())
			}
			got := logits(t, thin, x, 4)
			for i := range want {
				// Same sums minus exact zeros, folded constants reassociated:
				// float32 rounding, ≈ 1e-6 relative of the logits' scale.
				if math.Abs(float64(got[i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("logit %d: thinned %v, masked %v", i, got[i], want[i])
				}
			}
		})
	}
}

func TestThinningAllDeadLayer(t *testing.T) {
	m, _ := New(Spec{Arch: "mlp", Hidden: []int{8, 6}}, MNISTInput, 1)
	kill(m, "fc2", []int{0, 1, 2, 3, 4, 5})
	x := make([]float32, 2*784)
	for i := range x {
		x[i] = float32(i%7) / 7
	}
	want := logits(t, m, x, 2)
	thin, _, err := m.Thin()
	if err != nil {
		t.Fatal(err)
	}
	if thin.Param("fc2").Shape[0] != 1 {
		t.Fatalf("fc2 %v", thin.Param("fc2").Shape)
	}
	got := logits(t, thin, x, 2)
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-5 {
			t.Fatalf("logit %d: %v vs %v", i, got[i], want[i])
		}
	}
}
