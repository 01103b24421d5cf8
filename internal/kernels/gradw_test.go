package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lathe-ml/lathe/compute"
)

// gradWRef is the filter gradient through a patch matrix: dzᵀ · patches,
// summed in float64.
func gradWRef(win Window, f int, dz, x []float32, n int) []float64 {
	oh, ow := win.Out()
	k, c := win.K, win.C
	p := k * k * c
	col := make([]float32, oh*ow*p)
	out := make([]float64, f*p)
	for b := range n {
		win.Im2col(col, x[b*win.H*win.W*c:(b+1)*win.H*win.W*c], 0, c)
		for q := range oh * ow {
			for fi := range f {
				g := float64(dz[(b*oh*ow+q)*f+fi])
				for j, v := range col[q*p : (q+1)*p] {
					out[fi*p+j] += g * float64(v)
				}
			}
		}
	}
	return out
}

func serial(count, _ int, f func(lo, hi int)) { f(0, count) }

func threads(t int) func(count, grain int, f func(lo, hi int)) {
	return func(count, grain int, f func(lo, hi int)) { compute.ParallelFor(t, count, grain, f) }
}

// GradW equals the patch matrix's product (within float32 rounding), for
// strides, paddings and widths the SIMD tiles take and those they leave
// to Go; its bits do not depend on the thread count.
func TestGradWMatchesPatches(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		win Window
		f   int
	}{
		{Window{H: 8, W: 8, C: 16, K: 3, Stride: 1, Pad: 1}, 16},
		{Window{H: 9, W: 7, C: 32, K: 3, Stride: 2, Pad: 1}, 32},
		{Window{H: 6, W: 6, C: 16, K: 1, Stride: 2, Pad: 0}, 32},
		{Window{H: 5, W: 5, C: 1, K: 3, Stride: 1, Pad: 1}, 16},
		{Window{H: 7, W: 6, C: 24, K: 3, Stride: 1, Pad: 1}, 8},
		{Window{H: 4, W: 4, C: 16, K: 5, Stride: 1, Pad: 2}, 48},
	} {
		n := 37 // three chunks, the last short
		oh, ow := tc.win.Out()
		x := make([]float32, n*tc.win.H*tc.win.W*tc.win.C)
		dz := make([]float32, n*oh*ow*tc.f)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		for i := range dz {
			dz[i] = float32(r.NormFloat64())
		}
		want := gradWRef(tc.win, tc.f, dz, x, n)
		got := make([]float32, len(want))
		GradW(serial, tc.win, tc.f, dz, x, n, got, nil)
		for i := range want {
			if d := math.Abs(float64(got[i]) - want[i]); d > 1e-4*(1+math.Abs(want[i])) {
				t.Fatalf("%+v f=%d: dw[%d] = %v, want %v", tc.win, tc.f, i, got[i], want[i])
			}
		}
		two := make([]float32, len(want))
		GradW(threads(2), tc.win, tc.f, dz, x, n, two, nil)
		for i := range got {
			if math.Float32bits(two[i]) != math.Float32bits(got[i]) {
				t.Fatalf("%+v: 2 threads differ at %d: %v, %v", tc.win, i, two[i], got[i])
			}
		}
	}
}
