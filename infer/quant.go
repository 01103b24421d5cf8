package infer

import "github.com/lathe-ml/lathe/internal/kernels"

// quantizer is a frozen activation quantization, with the parameters and
// rounding of the training graph's (internal/kernels) and its element
// arithmetic (compress.QuantParams.FakeQuant).
type quantizer struct {
	scale, inv, zero, qmin, qmax float32
}

func newQuantizer(bits int, symmetric bool, lo, hi float32) *quantizer {
	qmin, qmax := kernels.Range(bits, symmetric)
	scale, zero := kernels.ScaleZero(symmetric, qmin, qmax, lo, hi)
	return &quantizer{scale: scale, inv: 1 / scale, zero: float32(zero), qmin: float32(qmin), qmax: float32(qmax)}
}

// code is v's integer code (as a float): rounded to nearest even,
// shifted by the zero point, clamped to the range.
func (q *quantizer) code(v float32) float32 {
	return min(max(kernels.RoundEven32(v*q.inv)+q.zero, q.qmin), q.qmax)
}

func (q *quantizer) apply(x []float32) {
	for i, v := range x {
		x[i] = (q.code(v) - q.zero) * q.scale
	}
}
