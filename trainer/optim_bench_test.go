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

// BenchmarkChunkUpdate is a teacher worker's update of its chunk (half of
// the 784-1200-1200-10 teacher's 2.4 M parameters) with SGD and momentum:
// as updateChunk did before reading its sources in place (copy-first: the
// committed state into the pending buffers, the parameters into the
// gathered vector, then the update in place), and as it does now
// (from-sources). Both in one run.
func BenchmarkChunkUpdate(b *testing.B) {
	sizes := []int{1_196_000}
	c := OptimConfig{Kind: "sgd", Momentum: 0.9, WeightDecay: 1e-4}
	committed, _ := NewOptimizer(c, sizes)
	pending := committed.Like(sizes)
	params, grads, into := alloc(sizes), alloc(sizes), alloc(sizes)
	step := pending.(partStepper)
	b.Run("copy-first", func(b *testing.B) {
		for b.Loop() {
			copy(pending.State()[0], committed.State()[0])
			copy(into[0], params[0])
			step.stepPart(0, 0, into[0], into[0], grads[0], nil, 0.01, nil)
		}
	})
	b.Run("from-sources", func(b *testing.B) {
		for b.Loop() {
			step.stepPart(0, 0, into[0], params[0], grads[0], nil, 0.01, committed)
		}
	})
}
