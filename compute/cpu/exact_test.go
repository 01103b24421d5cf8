package cpu

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// fma32 is the correctly rounded x·y + z: checked against big.Float on
// random operands whose sums cancel, tie and round near the float32
// limits, subnormal results included.
func TestFma32IsRoundedOnce(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	f := func() float32 {
		switch r.IntN(6) {
		case 0: // any finite bits
			for {
				v := math.Float32frombits(r.Uint32())
				if !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) {
					return v
				}
			}
		case 1:
			return float32(r.NormFloat64() * 1e-20)
		case 2: // few mantissa bits: exact products, ties
			return float32(r.IntN(1<<12)-1<<11) * float32(math.Ldexp(1, r.IntN(20)-10))
		default:
			return float32(r.NormFloat64())
		}
	}
	for i := range 2_000_000 {
		x, y, z := f(), f(), f()
		if i%3 == 0 { // cancel: z near -x·y
			z = -float32(float64(x)*float64(y)) * (1 + float32(r.IntN(3)-1)*0x1p-24)
		}
		want := exactFMA(x, y, z)
		if got := fma32(x, y, z); math.Float32bits(got) != math.Float32bits(want) && !(isNaN32(got) && isNaN32(want)) {
			t.Fatalf("fma32(%g, %g, %g) = %g (%#x), want %g (%#x)", x, y, z, got, math.Float32bits(got), want, math.Float32bits(want))
		}
	}
}

func isNaN32(v float32) bool { return v != v }

// exactFMA rounds x·y + z computed exactly in big.Float.
func exactFMA(x, y, z float32) float32 {
	if math.IsInf(float64(x)*float64(y)+float64(z), 0) || isNaN32(x) || isNaN32(y) || isNaN32(z) {
		return float32(float64(x)*float64(y) + float64(z))
	}
	p := new(big.Float).SetPrec(600).Mul(big.NewFloat(float64(x)).SetPrec(600), big.NewFloat(float64(y)))
	s := p.Add(p, big.NewFloat(float64(z)))
	v, _ := s.Float32()
	if v == 0 && s.Sign() == 0 { // an exact zero sum is +0 unless both terms are −0
		if math.Signbit(float64(x)*float64(y)) && math.Signbit(float64(z)) {
			return float32(math.Copysign(0, -1))
		}
		return 0
	}
	return v
}

// The AVX-512 and AVX2 kernels give the Go loops' bits, in all four
// transpose forms, with alpha and beta, on shapes with and without row,
// column and k tails, and with zeros of both signs among the values.
func TestExactKernelsMatchTheGoLoops(t *testing.T) {
	if !hasExactAsm && !hasExactAVX2 {
		t.Skip("neither AVX-512 nor AVX2 here: the Go loops are the only form")
	}
	avx512, avx2 := hasExactAsm, hasExactAVX2
	defer func() { hasExactAsm, hasExactAVX2 = avx512, avx2 }()
	if avx512 {
		t.Run("AVX-512", exactKernelsMatch)
	}
	if avx2 {
		hasExactAsm = false
		t.Run("AVX2", exactKernelsMatch)
	}
}

func exactKernelsMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	vals := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			switch r.IntN(12) {
			case 0:
				v[i] = 0
			case 1:
				v[i] = float32(math.Copysign(0, -1))
			default:
				v[i] = float32(r.NormFloat64())
			}
		}
		return v
	}
	shapes := [][3]int{{1, 1, 1}, {4, 64, 16}, {16, 1200, 784}, {5, 70, 33}, {3, 17, 15}, {16, 10, 1200},
		{7, 129, 1}, {10, 300, 16}, {2, 3, 200}, {9, 48, 64}, {13, 100, 17}, {1, 65, 31}}
	for _, sh := range shapes {
		m, n, k := sh[0], sh[1], sh[2]
		for _, form := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			for _, ab := range [][2]float32{{1, 0}, {0.5, 0}, {1, 1}, {-0.25, -1}} {
				ta, tb := form[0], form[1]
				lda, ldb, ldc := k+r.IntN(3), n+r.IntN(3), n+r.IntN(3)
				if ta {
					lda = m + r.IntN(3)
				}
				if tb {
					ldb = k + r.IntN(3)
				}
				rowsA, rowsB := m, k
				if ta {
					rowsA = k
				}
				if tb {
					rowsB = n
				}
				a, b, c0 := vals(rowsA*lda), vals(rowsB*ldb), vals(m*ldc)
				got := append([]float32(nil), c0...)
				e := New(Options{Threads: 1 + r.IntN(2), Exact: true})
				e.Sgemm(ta, tb, m, n, k, ab[0], a, lda, b, ldb, ab[1], got, ldc)

				want := append([]float32(nil), c0...)
				raw := make([]float32, m*n)
				ars, aks := lda, 1
				if ta {
					ars, aks = 1, lda
				}
				if tb {
					dotRowsGo(0, m, n, k, a, ars, aks, b, ldb, raw, n)
				} else {
					chainRowsGo(0, m, n, k, a, ars, aks, b, ldb, raw, n)
				}
				for i := range m {
					for j := range n {
						if ab == [2]float32{1, 0} {
							want[i*ldc+j] = raw[i*n+j]
						} else {
							want[i*ldc+j] = combine(raw[i*n+j], ab[0], ab[1], want[i*ldc+j])
						}
					}
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%dx%dx%d trans %v alpha %g beta %g: c[%d] = %g, the Go loops give %g", m, n, k, form, ab[0], ab[1], i, got[i], want[i])
					}
				}
			}
		}
	}
}

// What Exact is for: a row's outputs are the same bits whether the row is
// computed in a product of 16 rows, of 64, of 5, or split across threads
// (OpenBLAS's are not: docs/cluster.md).
func TestExactRowsDoNotDependOnTheProduct(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const M, in, out = 64, 784, 300
	x, w, dz := make([]float32, M*in), make([]float32, out*in), make([]float32, M*out)
	for _, v := range [][]float32{x, w, dz} {
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
	}
	run := func(rows, threads int) (y, dx []float32) {
		e := New(Options{Threads: threads, Exact: true})
		y, dx = make([]float32, M*out), make([]float32, M*in)
		for s := 0; s < M; s += rows {
			h := min(rows, M-s)
			e.Sgemm(false, true, h, out, in, 1, x[s*in:], in, w, in, 0, y[s*out:], out)
			e.Sgemm(false, false, h, in, out, 1, dz[s*out:], out, w, in, 0, dx[s*in:], in)
		}
		return y, dx
	}
	y0, dx0 := run(16, 1)
	for _, c := range [][2]int{{64, 1}, {64, 2}, {5, 1}, {16, 2}, {1, 1}} {
		y, dx := run(c[0], c[1])
		for name, p := range map[string][2][]float32{"forward": {y, y0}, "input gradient": {dx, dx0}} {
			for i := range p[0] {
				if math.Float32bits(p[0][i]) != math.Float32bits(p[1][i]) {
					t.Fatalf("%s in products of %d rows on %d threads: output %d is %g, in products of 16 rows %g", name, c[0], c[1], i, p[0][i], p[1][i])
				}
			}
		}
	}
}

func BenchmarkExactAgainstOpenBLAS(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, sh := range [][2]int{{784, 1200}, {1200, 1200}} {
		in, out := sh[0], sh[1]
		w, x, dz := make([]float32, in*out), make([]float32, 64*in), make([]float32, 64*out)
		for _, v := range [][]float32{w, x, dz} {
			for i := range v {
				v[i] = float32(r.NormFloat64())
			}
		}
		y, dx, dw := make([]float32, 64*out), make([]float32, 64*in), make([]float32, in*out)
		for _, form := range []string{"openblas", "exact", "exact-avx2"} {
			e := New(Options{Threads: 1, Exact: form != "openblas"})
			name := form
			avx512 := hasExactAsm
			if form == "exact-avx2" {
				if !hasExactAVX2 {
					continue
				}
				hasExactAsm = false
			}
			for _, rows := range []int{16, 64} {
				b.Run(fmt.Sprintf("%s/fwd-%dx%d-rows%d", name, in, out, rows), func(b *testing.B) {
					for range b.N {
						for s := 0; s < 64; s += rows {
							e.Sgemm(false, true, rows, out, in, 1, x[s*in:], in, w, in, 0, y[s*out:], out)
						}
					}
				})
				b.Run(fmt.Sprintf("%s/dx-%dx%d-rows%d", name, in, out, rows), func(b *testing.B) {
					for range b.N {
						for s := 0; s < 64; s += rows {
							e.Sgemm(false, false, rows, in, out, 1, dz[s*out:], out, w, in, 0, dx[s*in:], in)
						}
					}
				})
				b.Run(fmt.Sprintf("%s/dw-%dx%d-rows%d", name, in, out, rows), func(b *testing.B) {
					for range b.N {
						for s := 0; s < 64; s += rows {
							e.Sgemm(true, false, out, in, rows, 1, dz[s*out:], out, x[s*in:], in, 0, dw, in)
						}
					}
				})
			}
			hasExactAsm = avx512
		}
	}
}
