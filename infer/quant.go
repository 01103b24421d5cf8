package infer

import "github.com/lathe-ml/lathe/internal/kernels"

// quantizer is a frozen activation quantization, with the parameters and
// rounding of the training graph's (internal/kernels) and its element
// arithmetic (compress.QuantParams.FakeQuant).
type quantizer = kernels.FakeQuant

func newQuantizer(bits int, symmetric bool, lo, hi float32) *quantizer {
	qmin, qmax := kernels.Range(bits, symmetric)
	scale, zero := kernels.ScaleZero(symmetric, qmin, qmax, lo, hi)
	return &quantizer{Scale: scale, Inv: 1 / scale, Zero: float32(zero), Qmin: float32(qmin), Qmax: float32(qmax)}
}
