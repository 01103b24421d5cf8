package trainer

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/lathe-ml/lathe/compute/cpu"
)

// fixedProducts gives the integers of the slots path it replaces: each
// run's dzᵀ·x through the exact GEMM, then SetFixedSum / AddFixedSum —
// for 1 to 5 runs of different sample counts (none included), panels of
// 64 and 16 columns, and a refused value (NaN, or beyond FixedLimit) in
// any run reported, as the slots path reports it, by a false; summed in
// two ranges of rows, the later first.
func TestFixedProductsMatchTheExactGEMM(t *testing.T) {
	if !hasAVX512DQ {
		t.Skip("no AVX-512 here: the slots path is the only form")
	}
	r := rand.New(rand.NewPCG(9, 10))
	eng := cpu.New(cpu.Options{Threads: 1, Exact: true})
	for _, sh := range [][2]int{{4, 16}, {8, 64}, {12, 80}, {4, 144}, {20, 784}, {8, 1200}} {
		out, in := sh[0], sh[1]
		for runs := 1; runs <= 5; runs++ {
			for _, add := range []bool{false, true} {
				ns := []int{16, 16, 7, 0, 1}[:runs]
				dzs, xs := randomRuns(r, ns, out, in, 4)
				prods := make([][]float32, runs)
				for k := range runs {
					prods[k] = make([]float32, out*in)
					if ns[k] > 0 {
						eng.Sgemm(true, false, out, in, ns[k], 1, dzs[k], out, xs[k], in, 0, prods[k], in)
					}
				}
				start := make([]int64, out*in)
				for i := range start {
					start[i] = r.Int64N(1<<50) - 1<<49
				}
				want, got := slices.Clone(start), slices.Clone(start)
				put := SetFixedSum
				if add {
					put = AddFixedSum
				}
				if err := put(want, prods); err != nil {
					t.Fatal(err)
				}
				// In two row ranges, the later first (as a replica sums the
				// others' chunks before its own): the first leaves the
				// rows before it as they were.
				cut := out / 8 * 4
				if !fixedProducts(got, dzs, xs, ns, out, in, cut, out, add) {
					t.Fatalf("%dx%d, %d runs: refused values the slots path takes", out, in, runs)
				}
				if i := firstDiff(got[:cut*in], start[:cut*in]); i >= 0 {
					t.Fatalf("%dx%d, rows [%d, %d) wrote into[%d]", out, in, cut, out, i)
				}
				if !fixedProducts(got, dzs, xs, ns, out, in, 0, cut, add) {
					t.Fatalf("%dx%d, %d runs: refused values the slots path takes", out, in, runs)
				}
				if i := firstDiff(got, want); i >= 0 {
					t.Fatalf("%dx%d, %d runs, add %v: into[%d] = %d, the slots path gives %d", out, in, runs, add, i, got[i], want[i])
				}
				// A refused value in the last run: both refuse.
				k := runs - 1
				if ns[k] == 0 {
					continue
				}
				for _, bad := range []float32{float32(math.NaN()), 2 * FixedLimit} {
					dz := slices.Clone(dzs[k])
					dz[r.IntN(len(dz))] = bad
					dzs[k] = dz
					eng.Sgemm(true, false, out, in, ns[k], 1, dzs[k], out, xs[k], in, 0, prods[k], in)
					if err := put(slices.Clone(start), prods); err == nil {
						continue // 2·FixedLimit times small x may stay in range
					}
					if fixedProducts(slices.Clone(start), dzs, xs, ns, out, in, 0, out, add) {
						t.Fatalf("%dx%d, %d runs: %g in a run's dz taken where the slots path refuses it", out, in, runs, bad)
					}
				}
			}
		}
	}
}

// TestFixedProductsRoundAsToFixed: products that land on a tie after
// scaling (odd multiples of 2^-41), subnormals, zeros of both signs and
// values next to FixedLimit — one sample a run, x a power of two, so each
// product is exact — convert to ToFixed's integers.
func TestFixedProductsRoundAsToFixed(t *testing.T) {
	if !hasAVX512DQ {
		t.Skip("no AVX-512 here: the slots path is the only form")
	}
	r := rand.New(rand.NewPCG(11, 12))
	const out, in = 8, 80
	awkward := func() float32 {
		switch r.IntN(6) {
		case 0:
			return float32(2*r.IntN(1000)+1-1000) * float32(math.Ldexp(1, -41)) // a tie
		case 1:
			return float32(r.NormFloat64()) * 1e-40 // subnormal
		case 2:
			return float32(math.Copysign(0, float64(r.IntN(2)*2-1)))
		case 3:
			return float32(2*r.IntN(2)-1) * math.Nextafter32(FixedLimit/4, 0)
		default:
			return float32(r.NormFloat64())
		}
	}
	for runs := 1; runs <= 3; runs++ {
		dzs, xs, ns := make([][]float32, runs), make([][]float32, runs), make([]int, runs)
		want := make([]int64, out*in)
		for k := range runs {
			ns[k], dzs[k], xs[k] = 1, make([]float32, out), make([]float32, in)
			for i := range dzs[k] {
				dzs[k][i] = awkward()
			}
			for i := range xs[k] {
				xs[k][i] = float32(math.Ldexp(float64(2*r.IntN(2)-1), r.IntN(3)-1)) // ±½, ±1, ±2
			}
			for o := range out {
				for i := range in {
					q, ok := ToFixed(dzs[k][o] * xs[k][i])
					if !ok {
						t.Fatalf("product %g refused", dzs[k][o]*xs[k][i])
					}
					want[o*in+i] += q
				}
			}
		}
		got := make([]int64, out*in)
		if !fixedProducts(got, dzs, xs, ns, out, in, 0, out, false) {
			t.Fatalf("%d runs: refused values ToFixed takes", runs)
		}
		if i := firstDiff(got, want); i >= 0 {
			t.Fatalf("%d runs: into[%d] = %d, ToFixed gives %d", runs, i, got[i], want[i])
		}
	}
}

// randomRuns draws runs' operands for fixedProducts: dz [ns[k], out] and
// x [ns[k], in] for each run k, normal values times scale.
func randomRuns(r *rand.Rand, ns []int, out, in int, scale float64) (dzs, xs [][]float32) {
	dzs, xs = make([][]float32, len(ns)), make([][]float32, len(ns))
	for k, n := range ns {
		dzs[k], xs[k] = make([]float32, n*out), make([]float32, n*in)
		for _, v := range [][]float32{dzs[k], xs[k]} {
			for i := range v {
				v[i] = float32(r.NormFloat64() * scale)
			}
		}
	}
	return dzs, xs
}

func firstDiff(a, b []int64) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
