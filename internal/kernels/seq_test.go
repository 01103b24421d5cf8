package kernels

import (
	"math"
	"math/rand/v2"
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

// TestGELUPassSIMDMatchesGo: the AVX-512 pass gives the Go loop's bits,
// forward and gradient, over values from −12 to 12 (zeros of both signs
// included), and the Go loop the definition.
func TestGELUPassSIMDMatchesGo(t *testing.T) {
	n := 16*64 + 5
	x, dy := make([]float32, n), make([]float32, n)
	for i := range x {
		x[i] = float32(i-n/2) * (24 / float32(n))
		dy[i] = float32(i%7) - 3.5
	}
	x[3], x[4] = 0, float32(math.Copysign(0, -1))
	for _, grad := range []bool{false, true} {
		var d []float32
		if grad {
			d = dy
		}
		want := make([]float32, n)
		saved := hasDirect
		hasDirect = false
		GELUPass(want, x, d)
		hasDirect = saved
		got := make([]float32, n)
		GELUPass(got, x, d)
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("grad %v, x %v: SIMD %v, Go %v", grad, x[i], got[i], want[i])
			}
			v := float64(x[i])
			def := v * 0.5 * (1 + math.Erf(v/math.Sqrt2))
			if grad {
				def = float64(dy[i]) * (0.5*(1+math.Erf(v/math.Sqrt2)) + v*math.Exp(-v*v/2)/math.Sqrt(2*math.Pi))
			}
			if math.Abs(float64(want[i])-def) > 4e-6*(1+math.Abs(def)) {
				t.Fatalf("grad %v, x %v: %v, definition %v", grad, x[i], want[i], def)
			}
		}
	}
	if !hasDirect {
		t.Log("no AVX-512: the Go loop only")
	}
}

// TestSoftmaxRowSIMDMatchesGo: a row's probabilities are the Go loop's
// bits with the AVX-512 exponentials, causal rows and a row of −∞ scores
// beyond the cut included, and sum to 1.
func TestSoftmaxRowSIMDMatchesGo(t *testing.T) {
	for _, n := range []int{5, 16, 128, 133} {
		for _, live := range []int{1, n / 2, n} {
			if live == 0 {
				continue
			}
			row := make([]float32, n)
			for i := range row {
				row[i] = float32(math.Sin(float64(i)*1.7)) * 40
			}
			row[live-1] = -200 // far below the maximum: its exponential is cut to 0
			if live == 1 {
				row[0] = 3
			}
			want := append([]float32(nil), row...)
			saved := hasDirect
			hasDirect = false
			SoftmaxRow(want, live)
			hasDirect = saved
			SoftmaxRow(row, live)
			var sum float64
			for i := range row {
				if math.Float32bits(row[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n %d, live %d, [%d]: SIMD %v, Go %v", n, live, i, row[i], want[i])
				}
				sum += float64(row[i])
			}
			if math.Abs(sum-1) > 1e-5 {
				t.Fatalf("n %d, live %d: probabilities sum to %v", n, live, sum)
			}
		}
	}
}

// TestLayerNormRows: four rows side by side give each row's bits as
// LayerNorm does — y, x̂ and inv —, for row counts around multiples of four
// and widths that are not.
func TestLayerNormRows(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	for _, c := range []int{128, 37} {
		for rows := 1; rows <= 9; rows++ {
			x, gamma, beta := make([]float32, rows*c), make([]float32, c), make([]float32, c)
			for i := range x {
				x[i] = float32(r.NormFloat64()*3 + 1)
			}
			for i := range gamma {
				gamma[i], beta[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
			}
			y, xh, inv := make([]float32, rows*c), make([]float32, rows*c), make([]float32, rows)
			LayerNormRows(y, xh, x, gamma, beta, c, 1e-5, inv)
			wy, wxh := make([]float32, c), make([]float32, c)
			for row := range rows {
				wi := LayerNorm(wy, wxh, x[row*c:(row+1)*c], gamma, beta, 1e-5)
				if inv[row] != wi {
					t.Fatalf("c %d, %d rows: inv[%d] %v, LayerNorm's %v", c, rows, row, inv[row], wi)
				}
				for j := range c {
					if y[row*c+j] != wy[j] || xh[row*c+j] != wxh[j] {
						t.Fatalf("c %d, %d rows: row %d [%d] y %v x̂ %v, LayerNorm's %v %v", c, rows, row, j, y[row*c+j], xh[row*c+j], wy[j], wxh[j])
					}
				}
			}
			LayerNormRows(y, nil, x, gamma, beta, c, 1e-5, nil) // neither x̂ nor inv asked for
		}
	}
}

// TestLayerNormFast: the inference LayerNorm within 2e-6 (relative to the
// row's spread, γ and β) of LayerNormRows, on rows far off zero and rows
// of a constant too, for widths of a multiple of 16 (the SIMD kernel,
// where it runs) and not (LayerNormRows itself).
func TestLayerNormFast(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 11))
	for _, c := range []int{16, 128, 48, 37} {
		for _, off := range []float64{0, 1000} {
			rows := 7
			x, gamma, beta := make([]float32, rows*c), make([]float32, c), make([]float32, c)
			for i := range x {
				x[i] = float32(r.NormFloat64()*3 + off)
			}
			for j := range c {
				x[3*c+j] = 2.5 // a constant row: σ = 0, ε alone
				gamma[j], beta[j] = float32(r.NormFloat64()), float32(r.NormFloat64())
			}
			got, want := make([]float32, rows*c), make([]float32, rows*c)
			LayerNormFast(got, x, gamma, beta, c, 1e-5)
			LayerNormRows(want, nil, x, gamma, beta, c, 1e-5, nil)
			for i := range want {
				j := i % c
				if d := math.Abs(float64(got[i] - want[i])); d > 2e-6*(1+math.Abs(float64(gamma[j]))*4+math.Abs(float64(beta[j]))) || math.IsNaN(float64(got[i])) {
					t.Fatalf("c %d, offset %v, value %d: %v, LayerNormRows' %v", c, off, i, got[i], want[i])
				}
			}
		}
	}
}

// TestSoftmaxFast: the inference softmax within 1e-6 (absolute) of
// SoftmaxRow for live lengths around multiples of 16 and scores spread
// wider than an exponential's range (a wrong maximum would overflow), the
// dead entries 0, the live ones summing to 1.
func TestSoftmaxFast(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 13))
	for _, n := range []int{64, 128, 40} {
		for i, live := range []int{1, 15, 16, 17, 31, 33, 40, n} {
			s := make([]float32, n)
			for j := range s {
				s[j] = float32(r.NormFloat64() * []float64{4, 60}[i%2])
			}
			want := append([]float32(nil), s...)
			SoftmaxFast(s, live)
			SoftmaxRow(want, live)
			var z float64
			for j := range s {
				if d := math.Abs(float64(s[j] - want[j])); !(d <= 1e-6) || (j >= live && s[j] != 0) {
					t.Fatalf("n %d, live %d, entry %d: %v, SoftmaxRow's %v", n, live, j, s[j], want[j])
				}
				z += float64(s[j])
			}
			if math.Abs(z-1) > 1e-5 {
				t.Fatalf("n %d, live %d: sums to %v", n, live, z)
			}
		}
	}
}
