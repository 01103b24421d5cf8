package compress

import (
	"github.com/lathe-ml/lathe/model"

	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// awkward holds what the AVX2 passes must treat as the Go loops do: zeros
// of both signs, values that round at exactly .5 (to even), values past
// 2^22 where the rounding trick is skipped, values that quantize out of
// range, and, for the range pass, NaNs.
func awkward(n int, seed uint64, nans bool) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, n)
	for i := range x {
		switch r.IntN(9) {
		case 0:
			x[i] = 0
		case 1:
			x[i] = float32(math.Copysign(0, -1))
		case 2:
			x[i] = float32(r.IntN(41)-20) + 0.5 // ties
		case 3:
			x[i] = float32(r.IntN(3)-1) * (1<<22 + float32(r.IntN(4)) + 0.5)
		case 4:
			if nans {
				x[i] = float32(math.NaN())
				continue
			}
			x[i] = float32(r.NormFloat64() * 1e3)
		default:
			x[i] = float32(r.NormFloat64())
		}
	}
	return x
}

func bitsEqual(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

// TestAVX2PassesMatchTheGoLoops: the range pass and the quantize-dequantize
// pass give the same bits with and without AVX2, over lengths with and
// without a tail of fewer than eight.
func TestAVX2PassesMatchTheGoLoops(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2 on this CPU: only the Go loops run")
	}
	defer func() { hasAVX2 = true }()
	for _, n := range []int{1, 7, 8, 9, 100, 300, 784, 1001} {
		for seed := range uint64(20) {
			x := awkward(n, seed, true)
			hasAVX2 = true
			l1, h1 := MinMax(x)
			hasAVX2 = false
			l2, h2 := MinMax(x)
			if math.Float32bits(l1) != math.Float32bits(l2) || math.Float32bits(h1) != math.Float32bits(h2) {
				t.Fatalf("n %d seed %d: MinMax %v %v with AVX2, %v %v without", n, seed, l1, h1, l2, h2)
			}
			w := awkward(3*n, seed, false)
			for _, spec := range []model.QuantSpec{{Bits: 8, Symmetric: true, PerChannel: true}, {Bits: 4, PerChannel: true}, {Bits: 2, Symmetric: true}} {
				p := ParamsFor(spec, w, 3)
				if seed%2 == 1 { // a range too narrow: elements land outside it
					for c := range p.Scale {
						p.Scale[c] /= 64
					}
				}
				a, b := make([]float32, len(w)), make([]float32, len(w))
				ia, ib := make([]bool, len(w)), make([]bool, len(w))
				hasAVX2 = true
				oka := p.FakeQuantChannels(a, w, nil, 0, len(p.Scale))
				okfa := p.FakeQuantChannels(a, w, ia, 0, len(p.Scale))
				hasAVX2 = false
				okb := p.FakeQuantChannels(b, w, nil, 0, len(p.Scale))
				okfb := p.FakeQuantChannels(b, w, ib, 0, len(p.Scale))
				if !bitsEqual(a, b) || oka != okb || okfa != okfb || !slices.Equal(ia, ib) {
					t.Fatalf("n %d seed %d %+v: fake quantization differs with and without AVX2", n, seed, spec)
				}
				hasAVX2 = true
				c := make([]float32, len(w))
				p.FakeQuantChannels(c, w, nil, 0, len(p.Scale))
				hasAVX2 = false
				d := make([]float32, len(w))
				p.FakeQuantChannels(d, w, nil, 0, len(p.Scale))
				if !bitsEqual(c, d) {
					t.Fatalf("n %d seed %d %+v: the pass without flags differs with and without AVX2", n, seed, spec)
				}
			}
		}
	}
}
