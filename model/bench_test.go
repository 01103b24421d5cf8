package model

import (
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/lathe-ml/lathe/compute/cpu"
)

// benchmarkForward times lathe's own evaluation forward pass.
func benchmarkForward(b *testing.B, m *Model, batch int) {
	eng := cpu.New(cpu.Options{})
	net, err := m.Build(eng, batch, false, 0, Hooks{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range net.XValue.Float32s() {
		net.XValue.Float32s()[i] = float32(i%255) / 255
	}
	vm := G.NewTapeMachine(net.Graph, G.WithEngine(eng))
	defer vm.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		vm.Reset()
		if err := vm.RunAll(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/forward")
}

// halfThinLeNet5 removes half of every hidden layer's filters or neurons
// (by zeroing them, then thinning), as structured pruning at 50 % leaves it.
func halfThinLeNet5(b *testing.B) *Model {
	m, _ := New(Spec{Arch: "lenet5"}, MNISTInput, 1)
	for _, name := range []string{"conv1", "conv2", "fc1"} {
		n := m.Param(name).Shape[0]
		var rows []int
		for r := 0; r < n; r += 2 {
			rows = append(rows, r)
		}
		kill(m, name, rows)
	}
	thin, _, err := m.Thin()
	if err != nil {
		b.Fatal(err)
	}
	return thin
}

func BenchmarkForwardLeNet5DenseB1(b *testing.B) {
	m, _ := New(Spec{Arch: "lenet5"}, MNISTInput, 1)
	benchmarkForward(b, m, 1)
}
func BenchmarkForwardLeNet5ThinHalfB1(b *testing.B) { benchmarkForward(b, halfThinLeNet5(b), 1) }
func BenchmarkForwardLeNet5DenseB256(b *testing.B) {
	m, _ := New(Spec{Arch: "lenet5"}, MNISTInput, 1)
	benchmarkForward(b, m, 256)
}
func BenchmarkForwardLeNet5ThinHalfB256(b *testing.B) { benchmarkForward(b, halfThinLeNet5(b), 256) }
