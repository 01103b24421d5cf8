package trainer

import (
	"testing"

	"github.com/lathe-ml/lathe/compute/cpu"
)

func benchmarkOptimizer(b *testing.B, c OptimConfig) {
	sizes := []int{784 * 300, 300, 300 * 100, 100, 1000, 10}
	params, grads := alloc(sizes), alloc(sizes)
	o, err := NewOptimizer(c, sizes)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		o.Step(params, grads, nil, 0.01)
	}
}

func BenchmarkOptimizerSGDMomentum(b *testing.B) {
	benchmarkOptimizer(b, OptimConfig{Kind: "sgd", Momentum: 0.9, WeightDecay: 1e-4, Engine: cpu.New(cpu.Options{Threads: 2})})
}
func BenchmarkOptimizerSGDMomentum1(b *testing.B) {
	benchmarkOptimizer(b, OptimConfig{Kind: "sgd", Momentum: 0.9, WeightDecay: 1e-4})
}
func BenchmarkOptimizerAdamW(b *testing.B) {
	benchmarkOptimizer(b, OptimConfig{Kind: "adamw", WeightDecay: 1e-2, Engine: cpu.New(cpu.Options{Threads: 2})})
}

func BenchmarkOptimizerSGDMomentumMasked(b *testing.B) {
	sizes := []int{784 * 300, 300, 300 * 100, 100, 1000, 10}
	params, grads := alloc(sizes), alloc(sizes)
	masks := make([][]byte, len(sizes))
	for i, n := range sizes {
		masks[i] = make([]byte, n)
		for j := range masks[i] {
			if (j*7919)%10 == 0 {
				masks[i][j] = 1
			}
		}
	}
	o, err := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9, WeightDecay: 1e-4, Engine: cpu.New(cpu.Options{Threads: 2})}, sizes)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		o.Step(params, grads, masks, 0.01)
	}
}
