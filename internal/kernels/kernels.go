// Package kernels holds the arithmetic that the training graph's ops
// (model, compress) and the inference runtime (infer) must compute alike:
// quantization parameters, rounding, and the im2col patch layout. It
// depends on nothing, so the runtime stays free of the training side.
package kernels

import "math"

// Range is the integer range of a quantization: symmetric ones use the
// signed range without its most negative value (so that it is symmetric),
// others the unsigned range [0, 2^bits − 1] with an integer zero point.
func Range(bits int, symmetric bool) (qmin, qmax int32) {
	if symmetric {
		q := int32(1)<<(bits-1) - 1
		return -q, q
	}
	return 0, int32(1)<<bits - 1
}

// ScaleZero derives the scale and zero point that quantize [lo, hi],
// widened to contain 0, onto [qmin, qmax]. An empty range gets scale 1
// (any scale represents all zeros exactly).
func ScaleZero(symmetric bool, qmin, qmax int32, lo, hi float32) (scale float32, zero int32) {
	mn, mx := min(lo, 0), max(hi, 0)
	if symmetric {
		scale = max(-mn, mx) / float32(qmax)
	} else {
		scale = (mx - mn) / float32(qmax-qmin)
	}
	if !(scale > 0) || math.IsInf(float64(scale), 0) {
		scale = 1
	}
	if !symmetric {
		z := float64(qmin) - float64(mn)/float64(scale)
		zero = int32(min(max(math.RoundToEven(z), float64(qmin)), float64(qmax)))
	}
	return scale, zero
}

// RoundEven32 rounds to the nearest integer, halves to even. Adding and
// subtracting 1.5·2^23 makes the FPU round at the units digit for any sign
// of |x| < 2^22, without a branch on the sign (which mispredicts half the
// time on weights); larger values, already integers or beyond any integer
// range lathe quantizes to, come back unchanged.
func RoundEven32(x float32) float32 {
	const magic = 3 << 22 // 1.5·2^23
	if !(x > -(1<<22) && x < 1<<22) {
		return x
	}
	return (x + magic) - magic
}

// Im2col lays out the k×k patches of one NHWC image of h×w×c as rows of
// (ky, kx, c) — the layout of convolution weights [F, k, k, C] — for a
// valid, stride-1 convolution.
func Im2col(col, x []float32, h, w, c, k int) {
	Window{H: h, W: w, C: c, K: k, Stride: 1}.Im2col(col, x, 0, c)
}

// Window is a convolution's (or pooling's) geometry over one NHWC image:
// H×W×C in, a K×K kernel moved by Stride, Pad zeros on each side.
type Window struct {
	H, W, C, K, Stride, Pad int
}

// Out is the output's height and width.
func (g Window) Out() (oh, ow int) {
	return (g.H+2*g.Pad-g.K)/g.Stride + 1, (g.W+2*g.Pad-g.K)/g.Stride + 1
}

// Im2col writes the patches of channels c0 … c0+cn−1 of image x as rows of
// (ky, kx, c), one per output pixel; padding reads as zero. With every
// channel and no padding a kernel row is one contiguous copy.
func (g Window) Im2col(col, x []float32, c0, cn int) {
	oh, ow := g.Out()
	run := g.K * cn
	r := 0
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			ix0 := ox*g.Stride - g.Pad
			for ky := 0; ky < g.K; ky++ {
				dst := col[r : r+run]
				r += run
				iy := oy*g.Stride - g.Pad + ky
				if iy < 0 || iy >= g.H {
					clear(dst)
					continue
				}
				row := x[iy*g.W*g.C : (iy+1)*g.W*g.C]
				if cn == g.C && ix0 >= 0 && ix0+g.K <= g.W {
					copy(dst, row[ix0*g.C:(ix0+g.K)*g.C])
					continue
				}
				for kx := 0; kx < g.K; kx++ {
					d := dst[kx*cn : (kx+1)*cn]
					if ix := ix0 + kx; ix < 0 || ix >= g.W {
						clear(d)
					} else {
						copy(d, row[ix*g.C+c0:ix*g.C+c0+cn])
					}
				}
			}
		}
	}
}

// Col2im adds patch rows (Im2col's layout, channels c0 … c0+cn−1) back
// into an image gradient dx; what fell on padding is dropped.
func (g Window) Col2im(dx, col []float32, c0, cn int) {
	oh, ow := g.Out()
	run := g.K * cn
	r := 0
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			ix0 := ox*g.Stride - g.Pad
			for ky := 0; ky < g.K; ky++ {
				src := col[r : r+run]
				r += run
				iy := oy*g.Stride - g.Pad + ky
				if iy < 0 || iy >= g.H {
					continue
				}
				row := dx[iy*g.W*g.C : (iy+1)*g.W*g.C]
				if cn == g.C && ix0 >= 0 && ix0+g.K <= g.W {
					dst := row[ix0*g.C : (ix0+g.K)*g.C]
					for i, v := range src {
						dst[i] += v
					}
					continue
				}
				for kx := 0; kx < g.K; kx++ {
					if ix := ix0 + kx; ix >= 0 && ix < g.W {
						dst := row[ix*g.C+c0 : ix*g.C+c0+cn]
						for i, v := range src[kx*cn : (kx+1)*cn] {
							dst[i] += v
						}
					}
				}
			}
		}
	}
}

// ScaleRows sets dst to w with row k (of len(w)/len(s) values) times s[k]:
// a weight with a batch norm folded into it (graph.BNScale).
func ScaleRows(dst, w, s []float32) {
	n := len(w) / len(s)
	for k, f := range s {
		for i, v := range w[k*n : (k+1)*n] {
			dst[k*n+i] = v * f
		}
	}
}
