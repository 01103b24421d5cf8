package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The batch norm's AVX-512 passes give the Go loops' bits: sums in
// position order, normalization with each activation, the input gradient;
// on widths that are and are not multiples of 8 or 16, with zeros of both
// signs among the values.
func TestBNAsmMatchesTheGoLoops(t *testing.T) {
	if !hasBNAsm {
		t.Skip("no AVX-512 here: the Go loops are the only form")
	}
	defer func() { hasBNAsm = true }()
	r := rand.New(rand.NewPCG(1, 2))
	vals := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			switch r.IntN(10) {
			case 0:
				v[i] = 0
			case 1:
				v[i] = float32(math.Copysign(0, -1))
			default:
				v[i] = float32(r.NormFloat64() * 3)
			}
		}
		return v
	}
	same32 := func(what string, a, b []float32) {
		t.Helper()
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("%s[%d]: asm %v, Go %v", what, i, a[i], b[i])
			}
		}
	}
	same64 := func(what string, a, b []float64) {
		t.Helper()
		for i := range a {
			if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
				t.Fatalf("%s[%d]: asm %v, Go %v", what, i, a[i], b[i])
			}
		}
	}
	for _, c := range []int{8, 12, 16, 24, 32, 40, 64, 72, 96} {
		for _, rows := range []int{1, 3, 50} {
			x, x2 := vals(rows*c), vals(rows*c)
			mu, inv, g, b := vals(c), vals(c), vals(c), vals(c)
			for _, rng := range [][2]int{{0, c}, {0, c / 2}, {c / 2, c}, {1, c}} {
				var sums [2][2][]float64
				for i, asm := range []bool{true, false} {
					hasBNAsm = asm
					sums[i] = [2][]float64{make([]float64, rng[1]-rng[0]), make([]float64, rng[1]-rng[0])}
					sums[i][0][0] = 0.5 // they add to what is there
					channelSums(x, c, rng[0], rng[1], sums[i][0], sums[i][1])
				}
				same64("sum", sums[0][0], sums[1][0])
				same64("ss", sums[0][1], sums[1][1])
			}
			for _, act := range []Activation{Identity, ReLU, ReLU6} {
				var ys, hs [2][]float32
				for i, asm := range []bool{true, false} {
					hasBNAsm = asm
					ys[i], hs[i] = make([]float32, rows*c), make([]float32, rows*c)
					normRows(x, hs[i], ys[i], c, mu, inv, g, b, act)
				}
				same32("y", ys[0], ys[1])
				same32("xhat", hs[0], hs[1])
			}
			kk, sb, sg := make([]float64, c), make([]float64, c), make([]float64, c)
			for k := range kk {
				kk[k], sb[k], sg[k] = r.NormFloat64(), r.NormFloat64()*100, r.NormFloat64()*10
			}
			var dx [2][]float32
			for i, asm := range []bool{true, false} {
				hasBNAsm = asm
				dx[i] = make([]float32, rows*c)
				gradRows(x, x2, dx[i], c, float64(rows*7), kk, sb, sg, mu, inv)
			}
			same32("dx", dx[0], dx[1])
			for _, rng := range [][2]int{{0, c}, {c / 2, c}, {1, c}} {
				var sums [2][2][]float64
				for i, asm := range []bool{true, false} {
					hasBNAsm = asm
					sums[i] = [2][]float64{make([]float64, rng[1]-rng[0]), make([]float64, rng[1]-rng[0])}
					gradSums(x, x2, c, rng[0], rng[1], mu, inv, sums[i][0], sums[i][1])
				}
				same64("sb", sums[0][0], sums[1][0])
				same64("sg", sums[0][1], sums[1][1])
			}
		}
	}
}
