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
	oh, ow := h-k+1, w-k+1
	run := k * c // contiguous inputs per kernel row
	r := 0
	for oy := 0; oy < oh; oy++ {
		for ox := 0; ox < ow; ox++ {
			for ky := 0; ky < k; ky++ {
				src := ((oy+ky)*w + ox) * c
				copy(col[r:r+run], x[src:src+run])
				r += run
			}
		}
	}
}
