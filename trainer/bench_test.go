package trainer

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/compress"
	"github.com/lathe-ml/lathe/compute/cpu"
	"github.com/lathe-ml/lathe/data"
	"github.com/lathe-ml/lathe/model"
)

// benchmarkStep times one training step (forward, backward, SGD-momentum
// update) at a batch size, on random inputs like the PyTorch anchor's.
func benchmarkStep(b *testing.B, spec model.Spec, batch int) { benchmarkStepMasked(b, spec, batch, 0) }

// benchmarkStepMasked is benchmarkStep with every weight held under a
// magnitude mask of the given sparsity (0: no masks), as pruning leaves them.
func benchmarkStepMasked(b *testing.B, spec model.Spec, batch int, sparsity float64) {
	benchmarkStepCompressed(b, spec, batch, sparsity, 0)
}

// benchmarkStepCompressed adds 8-bit per-channel fake quantization of every
// weight when bits > 0.
func benchmarkStepCompressed(b *testing.B, spec model.Spec, batch int, sparsity float64, bits int) {
	benchmarkStepOn(b, spec, model.MNISTInput, batch, sparsity, bits, "sgd")
}

// benchmarkStepOn times a step of spec on input in with optimizer kind.
func benchmarkStepOn(b *testing.B, spec model.Spec, in model.Input, batch int, sparsity float64, bits int, kind string) {
	m, err := model.New(spec, in, 1)
	if err != nil {
		b.Fatal(err)
	}
	if bits > 0 {
		m.Quant = map[string]*model.QuantControl{}
		for _, w := range m.Weights() {
			m.Quant[w.Name] = &model.QuantControl{Spec: model.QuantSpec{Bits: bits, Symmetric: true, PerChannel: true}, Enabled: true}
		}
	}
	eng := cpu.New(cpu.Options{})
	o, _ := NewOptimizer(OptimConfig{Kind: kind, Momentum: 0.9, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Engine: eng}, sizes(m))
	train := synthetic(batch, 1)
	if in.PerPosition { // a language model's windows: the step reads the graph's buffers below
		train = &data.Set{Name: "synthetic", Rows: 1, Cols: in.Cols, Classes: in.Classes, Positions: in.Cols,
			Images: make([]byte, batch*in.Cols), Labels: make([]byte, batch*in.Cols)}
	}
	tr, err := New(Config{Model: m, Engine: eng, Train: train, Batch: batch, Epochs: 1, Seed: 1, Optimizer: o})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range tr.net.XValue.Float32s() {
		tr.net.XValue.Float32s()[i] = float32(r.NormFloat64())
		if in.PerPosition { // byte ids, as bytes arrive
			tr.net.XValue.Float32s()[i] = float32(r.IntN(256)) / 255
		}
	}
	for i := range tr.net.YValue.Float32s() {
		tr.net.YValue.Float32s()[i] = float32(r.IntN(in.Classes))
	}
	tr.state.LR = 0.01
	if sparsity > 0 {
		for i, p := range m.Params {
			if !p.Bias {
				tr.state.Masks[i] = compress.Magnitude(compress.Weight{Name: p.Name, Shape: p.Shape, Data: p.Data()}, sparsity)
				compress.Apply(tr.state.Masks[i], p.Data())
			}
		}
	}
	// One step before timing, as the PyTorch anchor warms up: buffers are
	// allocated and first touched there.
	if err := tr.step(context.Background(), nil, 0, 0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := tr.step(context.Background(), nil, 0, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "samples/s")
}

func BenchmarkStepLeNet300B256(b *testing.B) { benchmarkStep(b, model.Spec{Arch: "lenet300"}, 256) }
func BenchmarkStepLeNet300B256Masked90(b *testing.B) {
	benchmarkStepMasked(b, model.Spec{Arch: "lenet300"}, 256, 0.9)
}
func BenchmarkStepLeNet300B256Masked90QAT8(b *testing.B) {
	benchmarkStepCompressed(b, model.Spec{Arch: "lenet300"}, 256, 0.9, 8)
}
func BenchmarkStepLeNet300B64(b *testing.B) { benchmarkStep(b, model.Spec{Arch: "lenet300"}, 64) }
func BenchmarkStepLeNet5B256(b *testing.B)  { benchmarkStep(b, model.Spec{Arch: "lenet5"}, 256) }
func BenchmarkStepTeacherB256(b *testing.B) { benchmarkStep(b, model.Spec{Arch: "teacher"}, 256) }

// The PyTorch anchor's ResNet section trains at batch 128 (BN in training
// mode): resnet8_train_b128, resnet20_train_b128.
// The PyTorch anchor's charlm section trains CharLM (context 128, width 128,
// 4 heads, 2 blocks) at batch 32 with AdamW: charlm_train_b32x128, in
// tokens/s (here samples/s × 128).
func BenchmarkStepCharLMB32(b *testing.B) {
	in := model.Input{Rows: 1, Cols: 128, Channels: 1, Classes: 256, PerPosition: true}
	benchmarkStepOn(b, model.Spec{Arch: "transformer", Dim: 128, Heads: 4, Blocks: 2, MLP: 512}, in, 32, 0, 0, "adamw")
}

func BenchmarkStepResNet8B128(b *testing.B) {
	benchmarkStep(b, model.Spec{Arch: "resnet", Depth: 8}, 128)
}
func BenchmarkStepResNet20B128(b *testing.B) {
	benchmarkStep(b, model.Spec{Arch: "resnet", Depth: 20}, 128)
}
