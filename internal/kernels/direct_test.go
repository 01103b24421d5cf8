package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestDirectConvMatchesIm2col: the direct kernel (AVX-512 where present,
// and its Go form) computes what the patch matrix times the filters does
// — then the bias and ReLU or ReLU6 —, for strides, paddings, kernels,
// channel counts and filter counts that leave partial tiles and blocks.
func TestDirectConvMatchesIm2col(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		win Window
		out int
	}{
		{Window{H: 28, W: 28, C: 1, K: 3, Stride: 1, Pad: 1}, 16},
		{Window{H: 14, W: 14, C: 16, K: 3, Stride: 2, Pad: 1}, 32},
		{Window{H: 7, W: 7, C: 32, K: 3, Stride: 1, Pad: 1}, 64},
		{Window{H: 9, W: 11, C: 3, K: 5, Stride: 1, Pad: 0}, 10},
		{Window{H: 8, W: 8, C: 16, K: 1, Stride: 2, Pad: 0}, 40},
		{Window{H: 28, W: 28, C: 16, K: 3, Stride: 1, Pad: 1}, 16},
		{Window{H: 13, W: 13, C: 5, K: 3, Stride: 2, Pad: 1}, 12},
	} {
		t.Run(fmt.Sprintf("%+v→%d", tc.win, tc.out), func(t *testing.T) {
			g := tc.win
			oh, ow := g.Out()
			x := make([]float32, g.H*g.W*g.C)
			w := make([]float32, tc.out*g.K*g.K*g.C)
			for i := range x {
				x[i] = r.Float32()*2 - 1
			}
			for i := range w {
				w[i] = r.Float32()*2 - 1
			}
			patch := g.K * g.K * g.C
			col := make([]float32, oh*ow*patch)
			g.Im2col(col, x, 0, g.C)
			want := make([]float64, oh*ow*tc.out)
			for p := range oh * ow {
				for o := range tc.out {
					var s float64
					for i := range patch {
						s += float64(col[p*patch+i]) * float64(w[o*patch+i])
					}
					want[p*tc.out+o] = s
				}
			}
			bias := make([]float32, tc.out)
			for i := range bias {
				bias[i] = r.Float32()*4 - 2
			}
			for _, act := range []int{ActNone, ActReLU, ActReLU6} {
				var b []float32
				if act != ActNone {
					b = bias
				}
				d := NewDirectConv(g, tc.out, w, b, act)
				padded := make([]float32, d.PaddedLen())
				for i := range padded { // a buffer used before: Pad must set every value
					padded[i] = float32(math.NaN())
				}
				d.Pad(padded, x)
				for _, simd := range []bool{true, false} {
					if simd && !hasDirect {
						continue
					}
					saved := hasDirect
					hasDirect = simd
					got := make([]float32, oh*ow*tc.out)
					var tile DirectTile
					for oy := range oh {
						d.Row(got[oy*ow*tc.out:(oy+1)*ow*tc.out], padded, oy, &tile)
					}
					hasDirect = saved
					for i, v := range got {
						wi := want[i]
						if b != nil {
							wi += float64(b[i%tc.out])
						}
						switch act {
						case ActReLU:
							wi = max(wi, 0)
						case ActReLU6:
							wi = min(max(wi, 0), 6)
						}
						if math.Abs(float64(v)-wi) > 1e-4*float64(patch) {
							t.Fatalf("simd %v, act %d: output %d is %v, want %v", simd, act, i, v, wi)
						}
					}
				}
			}
		})
	}
}

// TestDirectConvUnpadded: a convolution without padding whose rows the
// tiles cover exactly (1×1 over sequences of 64 and 128 positions, over
// 16×16 images) reads its images in place and gives the bits it gives
// through a padded copy, at batches above and below the per-image split.
func TestDirectConvUnpadded(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		win Window
		out int
	}{
		{Window{H: 1, W: 128, C: 32, K: 1, Stride: 1}, 64},
		{Window{H: 1, W: 64, C: 48, K: 1, Stride: 1}, 16},
		{Window{H: 16, W: 16, C: 8, K: 1, Stride: 1}, 40},
	} {
		for _, n := range []int{2, 5} {
			g := tc.win
			x := make([]float32, n*g.H*g.W*g.C)
			w := make([]float32, tc.out*g.C)
			for i := range x {
				x[i] = r.Float32()*2 - 1
			}
			for i := range w {
				w[i] = r.Float32()*2 - 1
			}
			d := NewDirectConv(g, tc.out, w, nil, ActReLU)
			if d.PaddedLen() != g.H*g.W*g.C {
				t.Fatalf("%+v: padded length %d, want the image's %d", g, d.PaddedLen(), g.H*g.W*g.C)
			}
			oh, ow := g.Out()
			want, got := make([]float32, n*oh*ow*tc.out), make([]float32, n*oh*ow*tc.out)
			Batch[float32](d, serial, want, x, make([]float32, n*d.PaddedLen()), n, nil)
			before := append([]float32(nil), x...)
			d.Batch(serial, got, x, nil, n, nil)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%+v, batch %d: output %d = %v in place, %v through a padded copy", g, n, i, got[i], want[i])
				}
			}
			for i := range x {
				if x[i] != before[i] {
					t.Fatalf("%+v: the input changed at %d", g, i)
				}
			}
		}
	}
}
