package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func BenchmarkProbeRows(b *testing.B) {
	e := New(Options{Threads: 1})
	r := rand.New(rand.NewPCG(1, 2))
	for _, sh := range [][2]int{{784, 1200}, {1200, 1200}} {
		in, out := sh[0], sh[1]
		w := make([]float32, in*out)
		for i := range w {
			w[i] = float32(r.NormFloat64())
		}
		x := make([]float32, 64*in)
		dz := make([]float32, 64*out)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		for i := range dz {
			dz[i] = float32(r.NormFloat64())
		}
		y := make([]float32, 64*out)
		dx := make([]float32, 64*in)
		dw := make([]float32, in*out)
		for _, rows := range []int{16, 64} {
			b.Run(fmt.Sprintf("fwd-%dx%d-rows%d", in, out, rows), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					for s := 0; s < 64; s += rows {
						e.Sgemm(false, true, rows, out, in, 1, x[s*in:], in, w, in, 0, y[s*out:], out)
					}
				}
			})
			b.Run(fmt.Sprintf("dx-%dx%d-rows%d", in, out, rows), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					for s := 0; s < 64; s += rows {
						e.Sgemm(false, false, rows, in, out, 1, dz[s*out:], out, w, in, 0, dx[s*in:], in)
					}
				}
			})
			b.Run(fmt.Sprintf("dw-%dx%d-rows%d", in, out, rows), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					for s := 0; s < 64; s += rows {
						e.Sgemm(true, false, out, in, rows, 1, dz[s*out:], out, x[s*in:], in, 0, dw, in)
					}
				}
			})
		}
	}
}
