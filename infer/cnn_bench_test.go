package infer

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/graph"
	"github.com/lathe-ml/lathe/model"
)

// BenchmarkResNetForward times the runtime's forward pass of the ResNet
// presets (Kaiming-initialised, batch norms folded at load) at batches 1
// and 64 on one and two threads: the kernels behind bench/cnn-runtime.sh, for
// profiling (-cpuprofile). Speed claims come from that script, beside
// onnxruntime.
func BenchmarkResNetForward(b *testing.B) {
	for _, depth := range []int{8, 20} {
		net, err := graph.ResNet(graph.Shape{H: 28, W: 28, C: 1}, depth, 10)
		if err != nil {
			b.Fatal(err)
		}
		gm, err := model.FromNetwork(net, "kaiming", 1)
		if err != nil {
			b.Fatal(err)
		}
		for _, threads := range []int{1, 2} {
			m, err := Load(modelFile(b, gm, "resnet"), cpu.New(cpu.Options{Threads: threads, Spin: Spin}))
			if err != nil {
				b.Fatal(err)
			}
			for _, batch := range []int{1, 64} {
				x := make([]float32, batch*784)
				r := rand.New(rand.NewPCG(1, 1))
				for i := range x {
					x[i] = r.Float32()
				}
				b.Run(fmt.Sprintf("ResNet%d/T%d/B%d", depth, threads, batch), func(b *testing.B) {
					for b.Loop() {
						if _, err := m.Forward(x, batch); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "samples/s")
				})
			}
		}
	}
}

// BenchmarkTransformerForward times the runtime's forward pass of the
// transformers the text recipes train — the language identifier (64
// bytes, 9 classes) and the CharLM (128 bytes, 256 scores per position),
// width 128, 4 heads, 2 blocks, MLP 512 — at batches 1 and 64 on one
// thread, for profiling; speed claims come from bench/cnn-runtime.sh beside
// onnxruntime.
func BenchmarkTransformerForward(b *testing.B) {
	for _, tc := range []struct {
		name       string
		t, classes int
		lm         bool
	}{{"LangID", 64, 9, false}, {"CharLM", 128, 256, true}} {
		net, err := graph.Transformer(graph.Shape{H: 1, W: tc.t, C: 1}, graph.TransformerShape{Dim: 128, Heads: 4, Blocks: 2, MLP: 512}, tc.classes, tc.lm)
		if err != nil {
			b.Fatal(err)
		}
		gm, err := model.FromNetwork(net, "", 1)
		if err != nil {
			b.Fatal(err)
		}
		gm.Input.PerPosition = tc.lm
		m, err := Load(modelFile(b, gm, "text"), cpu.New(cpu.Options{Threads: 1}))
		if err != nil {
			b.Fatal(err)
		}
		for _, batch := range []int{1, 64} {
			x := make([]float32, batch*tc.t)
			r := rand.New(rand.NewPCG(1, 1))
			for i := range x {
				x[i] = float32(32+r.IntN(90)) / 255
			}
			b.Run(fmt.Sprintf("%s/B%d", tc.name, batch), func(b *testing.B) {
				for b.Loop() {
					if _, err := m.Forward(x, batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "samples/s")
			})
		}
	}
}
