package kernels

import (
	"math"
	"testing"
)

// TestExpAndNormalParts: Exp within 2e-7 (relative) of math.Exp, Φ and φ
// within 2e-7 (absolute) of their float64 definitions, over [−20, 20]
// and at the edges.
func TestExpAndNormalParts(t *testing.T) {
	for x := -20.0; x <= 20; x += 0.0137 {
		if got, want := float64(Exp(float32(x))), math.Exp(float64(float32(x))); math.Abs(got-want) > 2e-7*want {
			t.Fatalf("Exp(%v) = %v, want %v", x, got, want)
		}
		v := float64(float32(x))
		cdf, pdf := NormalParts(float32(x))
		if want := 0.5 * (1 + math.Erf(v/math.Sqrt2)); math.Abs(float64(cdf)-want) > 2e-7 {
			t.Fatalf("Φ(%v) = %v, want %v", x, cdf, want)
		}
		if want := math.Exp(-v*v/2) / math.Sqrt(2*math.Pi); math.Abs(float64(pdf)-want) > 2e-7 {
			t.Fatalf("φ(%v) = %v, want %v", x, pdf, want)
		}
	}
	if Exp(-100) != 0 || !math.IsInf(float64(Exp(100)), 1) || Exp(0) != 1 {
		t.Fatalf("Exp at the edges: %v %v %v", Exp(-100), Exp(100), Exp(0))
	}
}
