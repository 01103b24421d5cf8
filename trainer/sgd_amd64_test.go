package trainer

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestAVX2MomentumMatchesTheGoLoop: SGD with momentum, with and without
// masks and weight decay, gives the same bits with the AVX2 update as with
// the Go loop, over tensor lengths with and without a tail of fewer than
// eight, on values that include zeros of both signs and subnormals.
func TestAVX2MomentumMatchesTheGoLoop(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2 on this CPU: only the Go loop runs")
	}
	defer func() { hasAVX2 = true }()
	sizes := []int{1, 7, 8, 9, 300, 1003}
	awkward := func(r *rand.Rand) float32 {
		switch r.IntN(8) {
		case 0:
			return 0
		case 1:
			return float32(math.Copysign(0, -1))
		case 2:
			return float32(r.NormFloat64()) * 1e-39 // subnormal
		default:
			return float32(r.NormFloat64())
		}
	}
	for _, wd := range []float64{0, 1e-4} {
		for _, masked := range []bool{false, true} {
			run := func(avx bool) ([][]float32, [][]float32) {
				hasAVX2 = avx
				r := rand.New(rand.NewPCG(3, 4))
				o, err := NewOptimizer(OptimConfig{Kind: "sgd", Momentum: 0.9, WeightDecay: wd}, sizes)
				if err != nil {
					t.Fatal(err)
				}
				params, grads := make([][]float32, len(sizes)), make([][]float32, len(sizes))
				var masks [][]byte
				if masked {
					masks = make([][]byte, len(sizes))
				}
				for i, n := range sizes {
					params[i], grads[i] = make([]float32, n), make([]float32, n)
					for j := range params[i] {
						params[i][j] = awkward(r)
					}
					if masked {
						masks[i] = make([]byte, n)
						for j := range masks[i] {
							masks[i][j] = byte(r.IntN(2))
						}
					}
				}
				for range 5 {
					for i := range grads {
						for j := range grads[i] {
							grads[i][j] = awkward(r)
						}
					}
					o.Step(params, grads, masks, 0.05)
				}
				return params, o.State()
			}
			pa, va := run(true)
			pb, vb := run(false)
			same := func(a, b [][]float32) bool {
				return slices.EqualFunc(a, b, func(x, y []float32) bool {
					return slices.EqualFunc(x, y, func(p, q float32) bool { return math.Float32bits(p) == math.Float32bits(q) })
				})
			}
			if !same(pa, pb) || !same(va, vb) {
				t.Fatalf("weight decay %v, masked %v: the AVX2 update differs from the Go loop", wd, masked)
			}
		}
	}
}
