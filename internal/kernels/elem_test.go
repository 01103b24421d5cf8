package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// elemInputs are values that probe the passes' edge cases: signed zeros,
// halves (rounding to even), values beyond any clamp, and random ones.
func elemInputs(n int, r *rand.Rand) []float32 {
	x := make([]float32, n)
	special := []float32{0, float32(math.Copysign(0, -1)), 0.5, -0.5, 1.5, 2.5, -2.5, 6, 6.5, -1e9, 1e9, 3e-7, -3e-7}
	for i := range x {
		if i%3 == 0 {
			x[i] = special[r.IntN(len(special))]
		} else {
			x[i] = float32(r.NormFloat64() * 4)
		}
	}
	return x
}

// TestAddActMatchesGo: the SIMD addition with each activation gives the
// bits of the Go loop, for lengths with and without a tail, in place too.
func TestAddActMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 15, 16, 17, 100, 1024} {
		a, b := elemInputs(n, r), elemInputs(n, r)
		for _, act := range []int{ActNone, ActReLU, ActReLU6} {
			got := make([]float32, n)
			AddAct(got, a, b, act)
			inPlace := append([]float32(nil), a...)
			AddAct(inPlace, inPlace, b, act)
			for i := range n {
				v := a[i] + b[i]
				switch act {
				case ActReLU:
					if v < 0 {
						v = 0
					}
				case ActReLU6:
					v = min(max(v, 0), 6)
				}
				if math.Float32bits(got[i]) != math.Float32bits(v) || math.Float32bits(inPlace[i]) != math.Float32bits(v) {
					t.Fatalf("n %d, act %d, [%d]: %g + %g gave %g (in place %g), want %g", n, act, i, a[i], b[i], got[i], inPlace[i], v)
				}
			}
		}
	}
}

// TestFakeQuantMatchesGo: the SIMD fake quantization gives the bits of
// the scalar formula, for asymmetric 8-bit and symmetric 4-bit ranges.
func TestFakeQuantMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, q := range []FakeQuant{
		{Scale: 0.05, Inv: 1 / 0.05, Zero: 37, Qmin: 0, Qmax: 255},
		{Scale: 0.5, Inv: 2, Zero: 0, Qmin: -7, Qmax: 7},
		{Scale: 1, Inv: 1, Zero: 0, Qmin: -128, Qmax: 127},
	} {
		for _, n := range []int{3, 16, 33, 1000} {
			x := elemInputs(n, r)
			got := append([]float32(nil), x...)
			q.Apply(got)
			for i, v := range x {
				want := (q.Code(v) - q.Zero) * q.Scale
				if math.Float32bits(got[i]) != math.Float32bits(want) {
					t.Fatalf("%+v, n %d, [%d]: %g → %g, want %g", q, n, i, v, got[i], want)
				}
			}
		}
	}
}
