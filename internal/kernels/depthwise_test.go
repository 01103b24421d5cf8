package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestDepthwiseMatchesDefinition: forward, input and filter gradients of
// the direct depthwise kernel against loops over the definition (strided,
// padded, 3×3 and 5×5).
func TestDepthwiseMatchesDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, g := range []Window{
		{H: 7, W: 6, C: 5, K: 3, Stride: 1, Pad: 1},
		{H: 9, W: 9, C: 8, K: 3, Stride: 2, Pad: 1},
		{H: 8, W: 7, C: 3, K: 5, Stride: 2, Pad: 2},
	} {
		oh, ow := g.Out()
		x, w := rnd(r, g.H*g.W*g.C), rnd(r, g.C*g.K*g.K)
		dy := rnd(r, oh*ow*g.C)
		at := func(iy, ix, c int) (int, bool) {
			if iy < 0 || iy >= g.H || ix < 0 || ix >= g.W {
				return 0, false
			}
			return (iy*g.W+ix)*g.C + c, true
		}
		y := make([]float64, oh*ow*g.C)
		dx := make([]float64, len(x))
		dw := make([]float64, len(w))
		for oy := range oh {
			for ox := range ow {
				for c := range g.C {
					o := (oy*ow+ox)*g.C + c
					for ky := range g.K {
						for kx := range g.K {
							if i, ok := at(oy*g.Stride+ky-g.Pad, ox*g.Stride+kx-g.Pad, c); ok {
								wi := c*g.K*g.K + ky*g.K + kx
								y[o] += float64(x[i]) * float64(w[wi])
								dx[i] += float64(dy[o]) * float64(w[wi])
								dw[wi] += float64(dy[o]) * float64(x[i])
							}
						}
					}
				}
			}
		}
		d := Depthwise{Win: g}
		taps := make([]float32, len(w))
		Taps(taps, w, g.C, g.K)
		gotY, gotDX, gotDT, gotDW := make([]float32, len(y)), make([]float32, len(x)), make([]float32, len(w)), make([]float32, len(w))
		d.Forward(gotY, x, taps)
		d.GradX(gotDX, dy, taps)
		d.GradW(gotDT, dy, x, 0, 2)
		d.GradW(gotDT, dy, x, 2, g.C)
		Untaps(gotDW, gotDT, g.C, g.K)
		for name, pair := range map[string][2]any{"y": {gotY, y}, "dx": {gotDX, dx}, "dw": {gotDW, dw}} {
			got, want := pair[0].([]float32), pair[1].([]float64)
			for i := range want {
				if math.Abs(float64(got[i])-want[i]) > 1e-4 {
					t.Fatalf("%+v: %s[%d] is %v, want %v", g, name, i, got[i], want[i])
				}
			}
		}
	}
}

func rnd(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = r.Float32()*2 - 1
	}
	return v
}
