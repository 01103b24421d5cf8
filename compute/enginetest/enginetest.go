// Package enginetest is the test suite every compute.Engine runs, in the
// manner of gonum's testblas: each engine's own _test.go calls these
// functions with an instance.
//
// It imports testing and is meant to be imported by tests only.
package enginetest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/lathe-ml/lathe/compute"
)

// refGemm computes the product in float64.
func refGemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) []float64 {
	out := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			out[i*n+j] = float64(alpha)*s + float64(beta)*float64(c[i*ldc+j])
		}
	}
	return out
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// TestSgemm checks Sgemm against a float64 reference over transposes,
// shapes (including the layer shapes lathe trains), padded leading
// dimensions and alpha/beta.
func TestSgemm(t *testing.T, e compute.Engine) {
	r := rand.New(rand.NewPCG(1, 2))
	shapes := [][3]int{{1, 1, 1}, {3, 5, 7}, {17, 1, 33}, {64, 300, 784}, {256, 10, 100}, {300, 784, 64}, {2, 50, 500}}
	for _, sh := range shapes {
		m, n, k := sh[0], sh[1], sh[2]
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, ab := range [][2]float32{{1, 0}, {0.5, 1}, {-2, 0.25}} {
					name := fmt.Sprintf("m%d_n%d_k%d_ta%v_tb%v_a%g_b%g", m, n, k, ta, tb, ab[0], ab[1])
					t.Run(name, func(t *testing.T) {
						pad := 3
						ar, ac := m, k
						if ta {
							ar, ac = k, m
						}
						br, bc := k, n
						if tb {
							br, bc = n, k
						}
						lda, ldb, ldc := ac+pad, bc+pad, n+pad
						a := randSlice(r, ar*lda)
						b := randSlice(r, br*ldb)
						c := randSlice(r, m*ldc)
						if ab[1] == 0 {
							for i := range c {
								c[i] = float32(math.NaN()) // beta 0 must ignore C
							}
						}
						want := refGemm(ta, tb, m, n, k, ab[0], a, lda, b, ldb, ab[1], c, ldc)
						if ab[1] == 0 {
							want = refGemm(ta, tb, m, n, k, ab[0], a, lda, b, ldb, 0, make([]float32, m*ldc), ldc)
						}
						e.Sgemm(ta, tb, m, n, k, ab[0], a, lda, b, ldb, ab[1], c, ldc)
						// float32 accumulation over k terms of unit-variance products:
						// error grows like sqrt(k)·eps32·|terms|; 1e-4·sqrt(k) relative is generous.
						tol := 1e-4 * math.Sqrt(float64(k)+1) * (math.Abs(float64(ab[0])) + math.Abs(float64(ab[1])) + 1)
						for i := 0; i < m; i++ {
							for j := 0; j < n; j++ {
								got := float64(c[i*ldc+j])
								if d := math.Abs(got - want[i*n+j]); !(d <= tol*(1+math.Abs(want[i*n+j]))) {
									t.Fatalf("c[%d,%d] = %v, want %v (tol %g)", i, j, got, want[i*n+j], tol)
								}
							}
							for j := n; j < ldc; j++ {
								if ab[1] != 0 && c[i*ldc+j] != c[i*ldc+j] {
									t.Fatalf("padding c[%d,%d] clobbered", i, j)
								}
							}
						}
					})
				}
			}
		}
	}
}

// TestSgemmDeterministic checks that repeating a product gives the same bits.
func TestSgemmDeterministic(t *testing.T, e compute.Engine) {
	r := rand.New(rand.NewPCG(3, 4))
	m, n, k := 256, 300, 784
	a, b := randSlice(r, m*k), randSlice(r, n*k)
	c1, c2 := make([]float32, m*n), make([]float32, m*n)
	e.Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, c1, n)
	for rep := 0; rep < 5; rep++ {
		e.Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, c2, n)
		for i := range c1 {
			if math.Float32bits(c1[i]) != math.Float32bits(c2[i]) {
				t.Fatalf("repeat %d: element %d differs: %v vs %v", rep, i, c1[i], c2[i])
			}
		}
	}
}

// TestSgemmPanicsOnShortSlice checks the documented panic on shape bugs.
func TestSgemmPanicsOnShortSlice(t *testing.T, e compute.Engine) {
	defer func() {
		if recover() == nil {
			t.Fatal("Sgemm with a too-short A did not panic")
		}
	}()
	e.Sgemm(false, false, 4, 4, 4, 1, make([]float32, 15), 4, make([]float32, 16), 4, 0, make([]float32, 16), 4)
}

// TestParallel checks that Parallel covers [0,n) exactly once.
func TestParallel(t *testing.T, e compute.Engine) {
	for _, n := range []int{0, 1, 7, 1000} {
		hits := make([]int32, n)
		e.Parallel(n, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				atomic.AddInt32(&hits[i], 1)
			}
		})
		for i, h := range hits {
			if h != 1 {
				t.Fatalf("n=%d: index %d visited %d times", n, i, h)
			}
		}
	}
}

// Run runs the whole suite against e.
func Run(t *testing.T, e compute.Engine) {
	t.Run("Sgemm", func(t *testing.T) { TestSgemm(t, e) })
	t.Run("SgemmDeterministic", func(t *testing.T) { TestSgemmDeterministic(t, e) })
	t.Run("SgemmPanicsOnShortSlice", func(t *testing.T) { TestSgemmPanicsOnShortSlice(t, e) })
	t.Run("Parallel", func(t *testing.T) { TestParallel(t, e) })
}
