package infer

import "math"

// quantizer is a frozen activation quantization: the arithmetic of
// compress.ParamsFromRange and QuantParams.FakeQuant, repeated here so that
// the runtime needs nothing from the training side.
type quantizer struct {
	scale, inv, zero, qmin, qmax float32
}

func newQuantizer(bits int, symmetric bool, lo, hi float32) *quantizer {
	var qmin, qmax int32
	if symmetric {
		qmax = int32(1)<<(bits-1) - 1
		qmin = -qmax
	} else {
		qmax = int32(1)<<bits - 1
	}
	mn, mx := min(lo, 0), max(hi, 0)
	var scale float32
	if symmetric {
		scale = max(-mn, mx) / float32(qmax)
	} else {
		scale = (mx - mn) / float32(qmax-qmin)
	}
	if !(scale > 0) || math.IsInf(float64(scale), 0) {
		scale = 1
	}
	var zero int32
	if !symmetric {
		z := float64(qmin) - float64(mn)/float64(scale)
		zero = int32(min(max(math.RoundToEven(z), float64(qmin)), float64(qmax)))
	}
	return &quantizer{scale: scale, inv: 1 / scale, zero: float32(zero), qmin: float32(qmin), qmax: float32(qmax)}
}

func (q *quantizer) apply(x []float32) {
	for i, v := range x {
		r := roundEven32(v*q.inv) + q.zero
		r = min(max(r, q.qmin), q.qmax)
		x[i] = (r - q.zero) * q.scale
	}
}

// roundEven32 rounds to the nearest integer, halves to even (as compress).
func roundEven32(x float32) float32 {
	const magic = 3 << 22
	if !(x > -(1<<22) && x < 1<<22) {
		return x
	}
	return (x + magic) - magic
}
