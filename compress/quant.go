package compress

import (
	"fmt"
	"math"
)

// QuantSpec says how a tensor is quantized.
type QuantSpec struct {
	Bits       int  // 2 to 8
	Symmetric  bool // signed integers in [−(2^(b−1)−1), 2^(b−1)−1], zero point 0
	PerChannel bool // one scale (and zero point) per output channel: the first dimension
}

// Validate reports a spec lathe cannot quantize to.
func (s QuantSpec) Validate() error {
	if s.Bits < 2 || s.Bits > 8 {
		return fmt.Errorf("compress: %d-bit quantization; bits must be 2 to 8", s.Bits)
	}
	return nil
}

// Range is the integer range of the spec: symmetric specs use the signed
// range without its most negative value (so that it is symmetric); others
// the unsigned range [0, 2^b − 1] with an integer zero point.
func (s QuantSpec) Range() (qmin, qmax int32) {
	if s.Symmetric {
		q := int32(1)<<(s.Bits-1) - 1
		return -q, q
	}
	return 0, int32(1)<<s.Bits - 1
}

// QuantParams are the scales and zero points a tensor is quantized with:
// q = clamp(round(x/scale) + zero, qmin, qmax), x̂ = (q − zero)·scale.
// The zero point is an integer, so 0 is exactly representable and pruned
// weights stay exactly zero.
type QuantParams struct {
	Spec       QuantSpec
	Scale      []float32 // one, or one per channel
	Zero       []int32
	QMin, QMax int32
}

// ParamsFromRange derives parameters from per-channel (or one) minimum and
// maximum values. The range is widened to contain 0.
func ParamsFromRange(spec QuantSpec, lo, hi []float32) QuantParams {
	qmin, qmax := spec.Range()
	p := QuantParams{Spec: spec, QMin: qmin, QMax: qmax, Scale: make([]float32, len(lo)), Zero: make([]int32, len(lo))}
	for c := range lo {
		mn, mx := min(lo[c], 0), max(hi[c], 0)
		if spec.Symmetric {
			a := max(-mn, mx)
			p.Scale[c] = a / float32(qmax)
		} else {
			p.Scale[c] = (mx - mn) / float32(qmax-qmin)
		}
		if !(p.Scale[c] > 0) || math.IsInf(float64(p.Scale[c]), 0) {
			p.Scale[c] = 1 // an all-zero channel: any scale represents it exactly
		}
		if !spec.Symmetric {
			z := float64(qmin) - float64(mn)/float64(p.Scale[c])
			p.Zero[c] = int32(min(max(math.RoundToEven(z), float64(qmin)), float64(qmax)))
		}
	}
	return p
}

// ParamsFor derives parameters from a tensor's own minimum and maximum
// (per row of a [channels, …] tensor when per channel).
func ParamsFor(spec QuantSpec, data []float32, channels int) QuantParams {
	if !spec.PerChannel {
		channels = 1
	}
	per := len(data) / channels
	lo, hi := make([]float32, channels), make([]float32, channels)
	for c := 0; c < channels; c++ {
		for _, v := range data[c*per : (c+1)*per] {
			lo[c], hi[c] = min(lo[c], v), max(hi[c], v)
		}
	}
	return ParamsFromRange(spec, lo, hi)
}

// channel returns the parameters' index for element i of a tensor of n
// elements.
func (p QuantParams) channel(i, n int) int {
	if len(p.Scale) == 1 {
		return 0
	}
	return i / (n / len(p.Scale))
}

// Quantize returns the integers for src (rounded half to even, clamped).
func (p QuantParams) Quantize(src []float32) []int32 {
	out := make([]int32, len(src))
	for i, v := range src {
		c := p.channel(i, len(src))
		q := math.RoundToEven(float64(v/p.Scale[c])) + float64(p.Zero[c])
		out[i] = int32(min(max(q, float64(p.QMin)), float64(p.QMax)))
	}
	return out
}

// Dequantize maps integers back to values.
func (p QuantParams) Dequantize(dst []float32, q []int32) {
	for i, v := range q {
		c := p.channel(i, len(q))
		dst[i] = float32(v-p.Zero[c]) * p.Scale[c]
	}
}

// FakeQuant writes quantize-then-dequantize of src into dst, and, when
// inside is not nil, whether each element fell inside the clipping range
// (the straight-through estimator passes gradients only there).
func (p QuantParams) FakeQuant(dst, src []float32, inside []bool) {
	for i, v := range src {
		c := p.channel(i, len(src))
		q := math.RoundToEven(float64(v/p.Scale[c])) + float64(p.Zero[c])
		in := q >= float64(p.QMin) && q <= float64(p.QMax)
		q = min(max(q, float64(p.QMin)), float64(p.QMax))
		dst[i] = float32(int32(q)-p.Zero[c]) * p.Scale[c]
		if inside != nil {
			inside[i] = in
		}
	}
}
