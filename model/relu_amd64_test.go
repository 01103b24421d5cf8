package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/compute/cpu"
)

// TestAVX2ReluGradMatchesTheGoLoop: the fused ReLU-gradient and bias-sum
// pass gives the same bits with and without AVX2, for widths with and
// without a tail, on one and two threads, with zeros of both signs,
// subnormals and NaNs among the activations.
func TestAVX2ReluGradMatchesTheGoLoop(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2 on this CPU: only the Go loop runs")
	}
	defer func() { hasAVX2 = true }()
	r := rand.New(rand.NewPCG(5, 6))
	odd := func() float32 {
		switch r.IntN(7) {
		case 0:
			return 0
		case 1:
			return float32(math.Copysign(0, -1))
		case 2:
			return float32(r.NormFloat64()) * 1e-39
		case 3:
			return float32(math.NaN())
		default:
			return float32(r.NormFloat64())
		}
	}
	for _, threads := range []int{1, 2} {
		eng := cpu.New(cpu.Options{Threads: threads})
		for _, cols := range []int{5, 8, 100, 300, 301} {
			rows := 37
			y, dy := make([]float32, rows*cols), make([]float32, rows*cols)
			for i := range y {
				y[i], dy[i] = odd(), float32(r.NormFloat64())
			}
			run := func(avx bool) ([]float32, []float32) {
				hasAVX2 = avx
				op := &reluGradOp{opBase: newBase("t", eng)}
				v, err := op.Do(tensorFrom(y, rows, cols), tensorFrom(dy, rows, cols))
				if err != nil {
					t.Fatal(err)
				}
				return slices.Clone(v.Data().([]float32)), slices.Clone(op.db.T.Data().([]float32))
			}
			za, ba := run(true)
			zb, bb := run(false)
			same := func(a, b []float32) bool {
				return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
			}
			if !same(za, zb) || !same(ba, bb) {
				t.Fatalf("%d threads, %d columns: the AVX2 pass differs from the Go loop", threads, cols)
			}
		}
	}
}
