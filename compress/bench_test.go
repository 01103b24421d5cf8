package compress

import (
	"github.com/lathe-ml/lathe/model"

	"math/rand/v2"
	"testing"
)

func fc1Weights() []float32 {
	r := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, 300*784)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.05)
	}
	return w
}

// BenchmarkMinMaxFC1 is the per-channel range pass of weight fake
// quantization over LeNet-300-100's fc1.
func BenchmarkMinMaxFC1(b *testing.B) {
	w := fc1Weights()
	b.SetBytes(int64(4 * len(w)))
	for b.Loop() {
		for c := 0; c < 300; c++ {
			MinMax(w[c*784 : (c+1)*784])
		}
	}
}

// BenchmarkFakeQuantFC1 is the quantize-dequantize pass over fc1.
func BenchmarkFakeQuantFC1(b *testing.B) {
	w := fc1Weights()
	p := ParamsFor(model.QuantSpec{Bits: 8, Symmetric: true, PerChannel: true}, w, 300)
	dst := make([]float32, len(w))
	inside := make([]bool, len(w))
	b.SetBytes(int64(4 * len(w)))
	for b.Loop() {
		p.FakeQuant(dst, w, inside)
	}
}

// BenchmarkFakeQuantFC1NoFlags is the pass the weight op runs first:
// without per-element flags (and without clamping where none is needed).
func BenchmarkFakeQuantFC1NoFlags(b *testing.B) {
	w := fc1Weights()
	p := ParamsFor(model.QuantSpec{Bits: 8, Symmetric: true, PerChannel: true}, w, 300)
	dst := make([]float32, len(w))
	b.SetBytes(int64(4 * len(w)))
	for b.Loop() {
		p.FakeQuant(dst, w, nil)
	}
}
